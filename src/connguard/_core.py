"""Pick the core: the compiled one unless told otherwise or unavailable.

``CONNGUARD_NO_EXTENSIONS=1`` or a non-CPython interpreter selects the pure
Python twin. A compiled core that fails to import also falls back to it;
``connguard.COMPILED`` says which one runs, and the test suite fails when the
compiled core should have loaded and did not.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from types import ModuleType
from typing import TypeVar

from . import _core_py

NO_EXTENSIONS = bool(os.environ.get("CONNGUARD_NO_EXTENSIONS")) or (
    sys.implementation.name != "cpython"
)

core: ModuleType = _core_py
if not NO_EXTENSIONS:  # pragma: no branch
    try:
        # By name: the extension has no .py source, and static import analysis
        # (import-linter) would read "from . import _core_c" as importing the
        # package itself.
        core = importlib.import_module(f"{__package__}._core_c")
    except ImportError:  # pragma: no cover - the test suite turns this into a failure
        pass

COMPILED = core is not _core_py


T = TypeVar("T")


def on_core(cls: type[T], other: ModuleType) -> type[T]:
    """Return ``cls`` (a public class over a core base) rebuilt on another core.

    Public classes are ``class X(_XAPI, core.Base)``; the test suite uses this
    to run each one against both cores. The same arguments give the same class.
    """
    return _rebuilt(cls, other)  # type: ignore[arg-type]


@functools.cache
def _rebuilt(cls: type[T], other: ModuleType) -> type[T]:
    api, base = cls.__bases__
    other_base = getattr(other, base.__name__)
    if other_base is base:
        return cls
    return type(cls.__name__, (api, other_base), {
        "__doc__": cls.__doc__, "__module__": cls.__module__, "__qualname__": cls.__qualname__})
