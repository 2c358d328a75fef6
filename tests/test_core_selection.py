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


@pytest.mark.c_extension
def test_compiled_core_loaded_when_expected(compiled_core: types.ModuleType) -> None:
    assert connguard.COMPILED, "the compiled core did not load: connguard runs pure Python"
    for public, base in ((connguard.Tracker, "SourceTable"), (connguard.Guard, "GuardTable"),
                         (connguard.BanManager, "BanTable"), (connguard.RateLimiter, "BucketTable")):
        assert issubclass(public, getattr(compiled_core, base)), public


def test_no_extensions_env_selects_pure_core() -> None:
    env = dict(os.environ, CONNGUARD_NO_EXTENSIONS="1")
    code = ("import connguard, connguard._core_py as py; "
            "print(connguard.COMPILED, issubclass(connguard.Tracker, py.SourceTable))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]


def public_names(module: object) -> set[str]:
    return {n for n in vars(module) if not n.startswith("_")}


def interface(cls: type) -> set[str]:
    """Public methods and properties; __slots__ storage is not interface."""
    return {n for n in dir(cls) if not n.startswith("_")
            and not isinstance(inspect.getattr_static(cls, n), types.MemberDescriptorType)}


@pytest.mark.c_extension
def test_cores_mirror_each_other_name_for_name(compiled_core: types.ModuleType) -> None:
    compiled = public_names(compiled_core)
    assert compiled == set(_core_py.__all__)
    for name in compiled:
        c, py = getattr(compiled_core, name), getattr(_core_py, name)
        if isinstance(c, type):
            assert interface(c) == interface(py), name
        else:
            assert callable(c) and callable(py), name

def test_public_api_names() -> None:
    assert isinstance(connguard.__version__, str)
    for name in connguard.__all__:
        assert hasattr(connguard, name)
    assert connguard.PATTERNS == ("conn_flood", "conn_rate", "spam_relay", "port_scan",
                                  "credential_stuffing", "dns_tunnel")


@pytest.mark.c_extension
def test_type_stub_covers_the_compiled_core(compiled_core: types.ModuleType) -> None:
    import ast
    from pathlib import Path

    _core_c = compiled_core
    assert _core_c.__file__ is not None
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
