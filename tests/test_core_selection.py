"""Which core runs, and that both cores offer the same names."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import types

import pytest

import connguard
from connguard import _core_py

from .conftest import compiled_expected


def test_compiled_core_loaded_when_expected(pytestconfig: pytest.Config) -> None:
    if not compiled_expected(pytestconfig):
        pytest.skip("the pure core was asked for")
    assert connguard.COMPILED, "the compiled core did not load: connguard runs pure Python"
    assert connguard.Tracker.__mro__[2].__module__ == "connguard._core_c"


def test_no_extensions_env_selects_pure_core() -> None:
    env = dict(os.environ, CONNGUARD_NO_EXTENSIONS="1")
    code = "import connguard; print(connguard.COMPILED, connguard.Tracker.__mro__[2].__module__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "connguard._core_py"]


def public_names(module: object) -> set[str]:
    return {n for n in vars(module) if not n.startswith("_")}


def interface(cls: type) -> set[str]:
    """Public methods and properties; __slots__ storage is not interface."""
    return {n for n in dir(cls) if not n.startswith("_")
            and not isinstance(inspect.getattr_static(cls, n), types.MemberDescriptorType)}


def test_cores_mirror_each_other_name_for_name(pytestconfig: pytest.Config) -> None:
    if not compiled_expected(pytestconfig):
        pytest.skip("the compiled core was not built")
    from connguard import _core_c

    compiled = public_names(_core_c)
    assert {"SourceTable", "BanTable", "BucketTable", "Shard", "parse_source"} <= compiled
    assert compiled <= public_names(_core_py)   # the twin's extras are its cdef helpers
    for name in compiled:
        c, py = getattr(_core_c, name), getattr(_core_py, name)
        if isinstance(c, type):
            assert interface(c) == interface(py), name
        elif not callable(c):
            assert c == py, name

def test_public_api_names() -> None:
    assert isinstance(connguard.__version__, str)
    for name in connguard.__all__:
        assert hasattr(connguard, name)
    assert connguard.PATTERNS == ("conn_flood", "conn_rate", "spam_relay", "port_scan",
                                  "credential_stuffing", "dns_tunnel")


def test_type_stub_covers_the_compiled_core(pytestconfig: pytest.Config) -> None:
    import ast
    from pathlib import Path

    if not compiled_expected(pytestconfig):
        pytest.skip("the compiled core was not built")
    from connguard import _core_c

    stub = Path(_core_c.__file__).with_name("_core_c.pyi")
    if not stub.exists():
        pytest.skip("no stub beside the installed module")
    tree = ast.parse(stub.read_text())
    declared = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    declared |= {t.id for n in tree.body if isinstance(n, ast.AnnAssign) for t in [n.target]
                 if isinstance(t, ast.Name)}
    assert public_names(_core_c) <= declared
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            methods = {m.name for m in node.body if isinstance(m, ast.FunctionDef)
                       and not m.name.startswith("_")}
            assert methods <= interface(getattr(_core_c, node.name)), node.name
