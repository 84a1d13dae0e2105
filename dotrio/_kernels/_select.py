"""The one place that chooses between a kernel's compiled and pure twin.

``DOTRIO_NO_EXTENSIONS`` set to anything but ``""`` or ``"0"`` selects the
pure-Python twins. Otherwise each kernel uses its compiled twin, falling back
to the pure one only when the extension cannot be imported (an unbuilt
checkout). The fallback is recorded with its reason: ``dotrio serve`` warns
about it, and the test suite fails on it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["KernelStatus", "extensions_disabled", "load", "status"]

_ENV = "DOTRIO_NO_EXTENSIONS"


@dataclass(frozen=True, slots=True)
class KernelStatus:
    """Which twin of one kernel is in use, and why."""

    name: str
    """The kernel: ``"codec"``, ``"wheel"`` or ``"coalesce"``."""
    compiled: bool
    """True when the Cython extension is in use."""
    disabled: bool
    """True when the pure twin was asked for with ``DOTRIO_NO_EXTENSIONS``."""
    error: str | None
    """Why the extension could not be imported, when it was wanted but is not in use."""


_status: dict[str, KernelStatus] = {}


def extensions_disabled() -> bool:
    """True when ``DOTRIO_NO_EXTENSIONS`` asks for the pure-Python twins."""
    return os.environ.get(_ENV, "") not in ("", "0")


def load(package: str) -> tuple[ModuleType, bool]:
    """Import the twin of the kernel package ``package`` to use.

    Returns the module (``<package>._compiled`` or ``<package>._pure``) and
    whether it is the compiled one. The environment is read at each call, so
    ``importlib.reload`` of a kernel package re-selects.
    """
    name = package.rpartition(".")[2]
    if extensions_disabled():
        _status[name] = KernelStatus(name, compiled=False, disabled=True, error=None)
        return importlib.import_module(f"{package}._pure"), False
    try:
        module = importlib.import_module(f"{package}._compiled")
    except ImportError as exc:
        _status[name] = KernelStatus(name, compiled=False, disabled=False, error=f"{type(exc).__name__}: {exc}")
        return importlib.import_module(f"{package}._pure"), False
    _status[name] = KernelStatus(name, compiled=True, disabled=False, error=None)
    return module, True


def status(name: str) -> KernelStatus:
    """The selection ``load`` last made for the kernel ``name``."""
    return _status[name]
