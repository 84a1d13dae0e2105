"""Builds every ext/*.pyx into dotrio._ext.<name>.

Each extension has a pure-Python twin in dotrio/ (selected with
DOTRIO_NO_EXTENSIONS=1), so a failed build is a loud error here rather than a
silent fallback: CI must exercise the compiled code.
"""

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
# DOTRIO_BUILD_ONLY=_codec,_wheel limits a development build to some extensions.
_only = {n for n in os.environ.get("DOTRIO_BUILD_ONLY", "").split(",") if n}
extensions = [
    Extension(
        f"dotrio._ext.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        extra_compile_args=["-O3"],
    )
    for pyx in sorted((HERE / "ext").glob("*.pyx"))
    if not _only or pyx.stem in _only
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    ),
)
