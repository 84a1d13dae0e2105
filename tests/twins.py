"""The twin-test harness: every kernel's pure and compiled twin, for any test.

A kernel (``dotrio/_kernels/<kernel>/``) has a pure-Python twin (``_pure``)
and a Cython one (``_compiled``). Twin tests take them from here:

* ``twin_fixture(kernel)`` makes a fixture that runs a test once per twin
  (ids ``pure`` and ``compiled``);
* ``both(kernel)`` gives ``[pure, compiled]`` for differential tests that
  drive the two side by side.

A compiled twin that is not built is a failure, never a skip (the build is
part of the install, so a missing extension is a bug), also under
``DOTRIO_NO_EXTENSIONS=1``: that variable chooses what dotrio runs on, and
the twin tests always test both.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

TWINS = ("pure", "compiled")


def twin(kernel: str, which: str) -> ModuleType:
    """The ``which`` ("pure" or "compiled") twin module of ``kernel``; fails the test if unbuilt."""
    if which not in TWINS:
        raise ValueError(f"which must be one of {TWINS}, got {which!r}")
    name = f"dotrio._kernels.{kernel}._{which}"
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.fail(f"{name} is not built ({exc}); `pip install -e .` builds it")


def both(kernel: str) -> list[ModuleType]:
    """``[pure, compiled]`` twins of ``kernel``, for differential tests."""
    return [twin(kernel, which) for which in TWINS]


def twin_fixture(kernel: str, scope: Any = "function") -> Callable[..., ModuleType]:
    """A fixture giving each twin module of ``kernel`` in turn (ids pure, compiled)."""

    @pytest.fixture(params=TWINS, scope=scope)
    def fixture(request: pytest.FixtureRequest) -> ModuleType:
        return twin(kernel, request.param)

    return fixture
