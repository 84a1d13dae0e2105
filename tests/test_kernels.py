"""The kernels as one unit: the selector, the shared constants, the layer rule.

Each kernel's twins are tested against each other in its own file
(test_codec.py, test_wheel.py, test_coalesce.py) through ``tests/twins.py``;
this file checks what all kernels share.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dotrio
from dotrio import _kernels
from dotrio._kernels import _constants
from dotrio._kernels._select import extensions_disabled
from tests.twins import both, twin

KERNELS_DIR = Path(_kernels.__file__).parent

# What each kernel package exports, and which of it comes from the selected twin.
SELECTED = {
    "codec": ["encode", "decode", "copy"],
    "wheel": ["TimerWheel"],
    "coalesce": ["Coalescer", "MISSING", "READY", "check_key"],
}
# The constants of _constants.py each twin exposes.
CONSTANTS = {
    "codec": ["MAX_DEPTH", "FORMAT_VERSION"],
    "wheel": ["SLOT_BITS", "LEVELS"],
    "coalesce": ["MAX_KEY_BYTES", "MAX_VALUE_BYTES", "DEFAULT_CACHE_BUDGET", "ENTRY_OVERHEAD"],
}


def test_every_kernel_folder_is_listed_and_complete() -> None:
    folders = sorted(p.name for p in KERNELS_DIR.iterdir() if p.is_dir() and not p.name.startswith("__"))
    assert folders == sorted(_kernels.KERNELS) == sorted(SELECTED)
    for name in _kernels.KERNELS:
        for part in ("__init__.py", "_pure.py", "_compiled.pyx", "_compiled.pxd", "_compiled.pyi"):
            assert (KERNELS_DIR / name / part).is_file(), f"{name}/{part} is missing"


@pytest.mark.parametrize("kernel", sorted(SELECTED))
def test_selector_uses_the_compiled_twin_unless_disabled(kernel: str) -> None:
    package = importlib.import_module(f"dotrio._kernels.{kernel}")
    expected = twin(kernel, "pure" if extensions_disabled() else "compiled")
    assert package.USING_EXTENSION is (not extensions_disabled())
    for name in SELECTED[kernel]:
        assert getattr(package, name) is getattr(expected, name), name
    assert set(SELECTED[kernel]) | set(CONSTANTS[kernel]) | {"USING_EXTENSION"} <= set(package.__all__)


@pytest.mark.parametrize("kernel", sorted(SELECTED))
def test_selector_reads_the_environment(kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    package = importlib.import_module(f"dotrio._kernels.{kernel}")
    pure, compiled = both(kernel)
    try:
        for value, chosen in (("1", pure), ("yes", pure), ("0", compiled), ("", compiled)):
            monkeypatch.setenv("DOTRIO_NO_EXTENSIONS", value)
            importlib.reload(package)
            assert package.USING_EXTENSION is (chosen is compiled), value
            name = SELECTED[kernel][0]
            assert getattr(package, name) is getattr(chosen, name), value
    finally:
        monkeypatch.undo()
        importlib.reload(package)
    # The modules that imported the kernel at start keep the selection of the start.
    assert package.USING_EXTENSION is (not extensions_disabled())


@pytest.mark.parametrize("kernel", sorted(SELECTED))
def test_twins_share_the_constants(kernel: str) -> None:
    package = importlib.import_module(f"dotrio._kernels.{kernel}")
    for mod in [package, *both(kernel)]:
        for name in CONSTANTS[kernel]:
            assert getattr(mod, name) == getattr(_constants, name), f"{mod.__name__}.{name}"


def test_constants_are_what_the_docs_and_storage_say() -> None:
    from dotrio import storage

    assert storage.MAX_KEY_BYTES == _constants.MAX_KEY_BYTES == 2048
    assert storage.MAX_VALUE_BYTES == _constants.MAX_VALUE_BYTES == 2 * 1024 * 1024
    assert _constants.MAX_DEPTH == 256


def test_constants_are_defined_once() -> None:
    # Each shared constant is assigned in _constants.py and nowhere else under dotrio/.
    names = "|".join(_constants.__all__)
    assign = re.compile(rf"^\s*(?:cdef\s+\w+\s+)?_?({names})\s*(?::[^=]*)?=\s*\d", re.M)
    found = {}
    for path in Path(dotrio.__file__).parent.rglob("*"):
        if path.suffix in (".py", ".pyx", ".pxd") and path.name != "_constants.py":
            for m in assign.finditer(path.read_text(encoding="utf-8")):
                found.setdefault(m.group(1), []).append(str(path.relative_to(KERNELS_DIR.parent)))
    assert found == {}


def _imports_of(path: Path) -> list[tuple[str, int]]:
    """(module, relative level) of every import in a .py, or the Python-level ones of a .pyx."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        tree = ast.parse(text)
    else:  # Cython: keep the plain Python import lines, which is where dotrio modules come in
        lines = [ln for ln in text.splitlines() if re.match(r"(from\s+[\w.]+\s+import\s|import\s)", ln) and "cimport" not in ln]
        tree = ast.parse("\n".join(ln.split("#")[0] for ln in lines))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level))
    return out


def test_kernels_import_nothing_else_of_dotrio() -> None:
    # The bottom layer: dotrio._kernels may import itself and the standard library only.
    bad = []
    for path in KERNELS_DIR.rglob("*"):
        if path.suffix not in (".py", ".pyx"):
            continue
        depth = len(path.relative_to(KERNELS_DIR).parts) - 1  # 0 for _kernels/x.py, 1 for _kernels/codec/x.py
        for module, level in _imports_of(path):
            if level:  # level 1 is the module's own package; depth + 1 is dotrio._kernels
                ok = level <= depth + 1
            else:
                ok = module.split(".")[0] != "dotrio" or module == "dotrio._kernels" or module.startswith("dotrio._kernels.")
            if not ok:
                bad.append(f"{path.relative_to(KERNELS_DIR)}: {'.' * level}{module}")
    assert bad == []


def test_kernels_status_names_every_kernel() -> None:
    status = _kernels.kernels_status()
    assert [s.name for s in status] == list(_kernels.KERNELS)
    for s in status:
        assert s.compiled is (not extensions_disabled())
        assert s.disabled is extensions_disabled()
        assert s.error is None


def test_kernels_status_reports_a_missing_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    # A kernel whose extension cannot be imported runs on its twin, and says why.
    import dotrio._kernels.wheel as package

    monkeypatch.delenv("DOTRIO_NO_EXTENSIONS", raising=False)
    monkeypatch.setitem(sys.modules, "dotrio._kernels.wheel._compiled", None)
    try:
        importlib.reload(package)
        (status,) = [s for s in _kernels.kernels_status() if s.name == "wheel"]
        assert (status.compiled, status.disabled) == (False, False)
        assert status.error is not None and "dotrio._kernels.wheel._compiled" in status.error
        assert package.TimerWheel is twin("wheel", "pure").TimerWheel
    finally:
        monkeypatch.undo()
        importlib.reload(package)


def test_the_stubs_match_the_compiled_kernels(tmp_path: Path) -> None:
    # The installed .pyi stubs are what type checkers see of the extensions:
    # mypy's stubtest compares them with the compiled modules themselves.
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nignore_errors = True\nignore_missing_imports = True\nfollow_imports = skip\n")
    allowlist = Path(__file__).parent / "stubtest_allowlist.txt"
    done = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(config), "--allowlist", str(allowlist),
         "--ignore-unused-allowlist", *[f"dotrio._kernels.{name}._compiled" for name in _kernels.KERNELS]],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_one_version() -> None:
    from importlib.metadata import version

    from dotrio._version import __version__

    assert dotrio.__version__ is __version__
    assert version("dotrio") == __version__, "the installed metadata is stale: pip install -e ."
