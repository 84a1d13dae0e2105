"""A directory made read-only for a test, as an operator's mistake would."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["read_only"]


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[str]:
    """``path`` made read-only: a read-only bind mount as root (permissions do
    not stop root), else its mode."""
    if os.geteuid() == 0:
        bound = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True, check=False)
        if bound.returncode != 0:
            pytest.skip(f"root without mount permission (no CAP_SYS_ADMIN?): {bound.stderr.strip()}")
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
            yield "Read-only file system"
        finally:
            subprocess.run(["umount", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield "Permission denied"
        finally:
            path.chmod(mode)
