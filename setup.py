"""Builds each kernel's Cython twin into ``dotrio._kernels.<kernel>._compiled``.

The kernels live in ``dotrio/_kernels/<kernel>/`` (``_pure.py``,
``_compiled.pyx``, ``.pxd``, ``.pyi``). Each has a pure-Python twin (selected
with DOTRIO_NO_EXTENSIONS=1), so a failed build is a loud error here rather
than a silent fallback: CI must exercise the compiled code, and ``dotrio
serve`` warns when a kernel runs on its twin without that variable.

* The constants of ``dotrio/_kernels/_constants.py`` reach Cython as
  compile-time names (``MAX_DEPTH`` as ``_MAX_DEPTH``), so that file is their
  one source for both twins.
* The shared objects are built without debug information and stripped
  (DOTRIO_BUILD_DEBUG=1 keeps both, for gdb or perf).
* Cython runs when the extensions are built, not for every setup.py command:
  the sdist ships the .pyx sources, never generated C.
* DOTRIO_BUILD_ONLY=codec,wheel limits a development build to some kernels.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
KERNELS = HERE / "dotrio" / "_kernels"


def compile_time_env() -> dict[str, int]:
    """``{"_NAME": value}`` for each ``NAME = <int expression>`` of _constants.py."""
    env: dict[str, int] = {}
    for node in ast.parse((KERNELS / "_constants.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, expr = node.target.id, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, expr = node.targets[0].id, node.value
        else:
            continue
        if name.startswith("_"):  # __all__
            continue
        # Integer arithmetic on literals and earlier names only (no builtins).
        value = eval(compile(ast.Expression(expr), "_constants.py", "eval"), {"__builtins__": {}}, dict(env))
        if type(value) is not int:
            raise SystemExit(f"dotrio/_kernels/_constants.py: {name} must be an int expression, got {value!r}")
        env[name] = value
    return {f"_{name}": value for name, value in env.items()}


_debug = os.environ.get("DOTRIO_BUILD_DEBUG", "") not in ("", "0")
if _debug:
    compile_args, link_args = ["-O3"], []
elif sys.platform.startswith("linux"):
    compile_args, link_args = ["-O3", "-g0"], ["-Wl,--strip-all"]
elif sys.platform == "darwin":
    compile_args, link_args = ["-O3", "-g0"], ["-Wl,-S,-x"]
else:  # Windows (MSVC) keeps its debug info in .pdb files, not in the .pyd
    compile_args, link_args = [], []

# Kernel names; "_codec" (the old module names) is accepted too.
_only = {n.strip().lstrip("_") for n in os.environ.get("DOTRIO_BUILD_ONLY", "").split(",") if n.strip()}
extensions = [
    Extension(
        f"dotrio._kernels.{pyx.parent.name}._compiled",
        [pyx.relative_to(HERE).as_posix()],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for pyx in sorted(KERNELS.glob("*/_compiled.pyx"))
    if not _only or pyx.parent.name in _only
]
if not extensions:
    raise SystemExit(f"no kernel sources found under {KERNELS} (DOTRIO_BUILD_ONLY={sorted(_only)})")
_known = {pyx.parent.name for pyx in KERNELS.glob("*/_compiled.pyx")}
if _only - _known:
    raise SystemExit(
        f"DOTRIO_BUILD_ONLY names unknown kernels {sorted(_only - _known)}; expected some of {sorted(_known)}"
    )



class cythonize_then_build_ext(build_ext):  # noqa: N801 - a setuptools command class
    """build_ext that turns the .pyx sources into C first, and compiles in parallel."""

    def finalize_options(self) -> None:
        from Cython.Build import cythonize

        # Cython regenerates a .c only when its .pyx (or a cimported .pxd)
        # changed; the constants reach it another way, so a change to them
        # must force it.
        constants_mtime = (KERNELS / "_constants.py").stat().st_mtime
        stale = any(
            Path(src).with_suffix(".c").exists() and Path(src).with_suffix(".c").stat().st_mtime < constants_mtime
            for ext in self.distribution.ext_modules
            for src in ext.sources
            if src.endswith(".pyx")
        )
        self.distribution.ext_modules[:] = cythonize(
            self.distribution.ext_modules,
            force=bool(self.force) or stale,
            language_level=3,
            compile_time_env=compile_time_env(),
            compiler_directives={
                "boundscheck": False,
                "wraparound": False,
                "cdivision": True,
                "embedsignature": True,
            },
        )
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1


setup(ext_modules=extensions, cmdclass={"build_ext": cythonize_then_build_ext})
