"""Packaging keeps the compiled kernels: sdist, then a wheel built from that sdist.

``python -m build`` (without build isolation, so it needs no network and
reuses this environment's setuptools and Cython) builds the sdist from a copy
of the checkout, then the wheel from the sdist, as a user's ``pip install``
of the sdist would. The wheel must hold the three compiled extensions,
stripped, with their stubs and ``py.typed``, and run on them once unpacked.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import dotrio
from dotrio._kernels import KERNELS

REPO = Path(dotrio.__file__).resolve().parent.parent

# What the copy of the checkout leaves out: environments, build products, caches.
_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so", "*.c", ".dotrio", ".hypothesis",
    "benchmarks", "docs", "examples", "tests",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel) built from a clean copy of the checkout."""
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=_IGNORE)
    out = root / "dist"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOTRIO_")}
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def test_sdist_ships_the_kernel_sources_not_generated_c(built: tuple[Path, Path]) -> None:
    sdist, _ = built
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for kernel in KERNELS:
        for part in ("_pure.py", "_compiled.pyx", "_compiled.pxd", "_compiled.pyi"):
            assert f"dotrio/_kernels/{kernel}/{part}" in names
    assert {"dotrio/py.typed", "dotrio/_kernels/_constants.py", "setup.py", "pyproject.toml"} <= names
    assert not [n for n in names if n.endswith((".c", ".so"))]


def test_wheel_from_the_sdist_holds_the_three_stripped_extensions(built: tuple[Path, Path]) -> None:
    sdist, wheel = built
    assert not wheel.name.endswith("-none-any.whl"), wheel.name  # a platform wheel, not a pure one
    assert wheel.name.startswith(f"dotrio-{dotrio.__version__}-"), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for kernel in KERNELS:
            folder = f"dotrio/_kernels/{kernel}/"
            ext = [n for n in names if n.startswith(folder + "_compiled.") and n.endswith((".so", ".pyd"))]
            assert len(ext) == 1, (kernel, sorted(n for n in names if n.startswith(folder)))
            assert {folder + "_compiled.pyi", folder + "_compiled.pxd", folder + "_pure.py"} <= names
            if ext[0].endswith(".so") and sys.platform.startswith("linux"):
                sections = elf_sections(zf.read(ext[0]))
                assert ".symtab" not in sections and not [s for s in sections if s.startswith(".debug")], (ext[0], sections)
        assert "dotrio/py.typed" in names
        assert not [n for n in names if n.endswith((".pyx", ".c"))]
        metadata = zf.read(f"dotrio-{dotrio.__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {dotrio.__version__}\n" in metadata


def test_unpacked_wheel_runs_on_the_compiled_kernels(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, wheel = built
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOTRIO_")}
    env["PYTHONPATH"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c",
         "import dotrio, dotrio._kernels as k; print(dotrio.__file__); "
         "print(*[(s.name, s.compiled) for s in k.kernels_status()])"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    where, status = done.stdout.splitlines()
    assert Path(where).is_relative_to(tmp_path)
    assert status == " ".join(str((name, True)) for name in KERNELS)


def elf_sections(data: bytes) -> set[str]:
    """The section names of a 64-bit little-endian ELF file."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit little-endian ELF"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_offset = headers[shstrndx][4]
    names = set()
    for name_offset, *_ in headers:
        start = strtab_offset + name_offset
        names.add(data[start:data.index(b"\0", start)].decode())
    return names


def test_a_source_tree_without_the_kernels_refuses_to_build(tmp_path: Path) -> None:
    # What an sdist without the .pyx files used to become: a pure py3-none-any wheel.
    shutil.copy(REPO / "setup.py", tmp_path)
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    (tmp_path / "dotrio" / "_kernels").mkdir(parents=True)
    shutil.copy(REPO / "dotrio" / "_kernels" / "_constants.py", tmp_path / "dotrio" / "_kernels")
    done = subprocess.run([sys.executable, "setup.py", "--name"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no kernel sources found under" in done.stderr
