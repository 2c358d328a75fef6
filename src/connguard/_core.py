"""Pick the core: the compiled one unless told otherwise or unavailable.

``CONNGUARD_NO_EXTENSIONS=1`` or a non-CPython interpreter selects the pure
Python twin. A compiled core that fails to import also falls back to it;
``connguard.COMPILED`` says which one runs, and the test suite fails when the
compiled core should have loaded and did not.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

from . import _core_py

NO_EXTENSIONS = bool(os.environ.get("CONNGUARD_NO_EXTENSIONS")) or (
    sys.implementation.name != "cpython"
)

core: ModuleType = _core_py
if not NO_EXTENSIONS:  # pragma: no branch
    try:
        from . import _core_c
    except ImportError:  # pragma: no cover - the test suite turns this into a failure
        pass
    else:
        core = _core_c

COMPILED = core is not _core_py
