"""Build the Cython core unless CONNGUARD_NO_EXTENSIONS asks for pure Python.

A failed Cython build fails the install: a wheel without its compiled core
would be slower than users were promised, and nobody would notice.
"""

import os
import sys
from pathlib import Path

from setuptools import Extension, setup

NO_EXTENSIONS = bool(os.environ.get("CONNGUARD_NO_EXTENSIONS"))
if sys.implementation.name != "cpython":
    NO_EXTENSIONS = True

ext_modules = []
if not NO_EXTENSIONS:
    from Cython.Build import cythonize

    if sys.platform == "win32":
        extra_compile_args = ["/O2"]
    else:
        # The cores must agree bit for bit on windowed estimates; contracting
        # a*b+c into one fused multiply-add (aarch64 does by default) rounds
        # differently from CPython's float arithmetic.
        extra_compile_args = ["-O3", "-ffp-contract=off"]
    ext_modules = cythonize(
        [
            Extension(
                "connguard._core_c",
                ["src/connguard/_core_c.pyx"],
                depends=sorted(str(p) for p in Path("src/connguard/_pxi").glob("*.pxi")),
                extra_compile_args=extra_compile_args,
            )
        ],
        compiler_directives={
            "language_level": 3,
            "freethreading_compatible": True,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    )

setup(ext_modules=ext_modules)
