from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dotrio


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_runtime(data_dir: Path) -> Callable[..., dotrio.Runtime]:
    """A Runtime on a real data dir (files under tmp); keyword overrides allowed."""

    def make(bindings: dict[str, type], **kw: Any) -> dotrio.Runtime:
        kw.setdefault("data_dir", data_dir)
        return dotrio.Runtime(bindings=bindings, **kw)

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
