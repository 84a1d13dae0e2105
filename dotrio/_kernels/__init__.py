"""dotrio's kernels: the hot loops, each as a Cython extension with a pure-Python twin.

The bottom layer: nothing here imports the rest of dotrio. One folder per
kernel, in the style of frozenlist and msgpack::

    dotrio/_kernels/
        _constants.py     the constants both twins share (setup.py feeds them to Cython)
        _select.py        the one DOTRIO_NO_EXTENSIONS switch
        codec/            the value codec           (encode, decode, copy)
        wheel/            the alarm timer wheel     (TimerWheel)
        coalesce/         the storage write coalescer (Coalescer, check_key)

and in each kernel folder::

    __init__.py           what the rest of dotrio imports: the selected twin's names
    _pure.py              the pure-Python twin, the reference (design: docs/design/kernels.md)
    _compiled.pyx         the Cython twin (built by setup.py as <kernel>._compiled)
    _compiled.pyi         its type stub (installed with the package)
    _compiled.pxd         its C-level interface (what other Cython code may cimport)

The twins give the same results and raise the same errors; the tests run
each twin test over both (``tests/twins.py``). ``kernels_status()`` says which
twin each kernel runs on: ``dotrio serve`` logs it.
"""

from __future__ import annotations

import importlib

from ._select import KernelStatus, extensions_disabled, status

__all__ = ["KERNELS", "KernelStatus", "extensions_disabled", "kernels_status"]

KERNELS: tuple[str, ...] = ("codec", "wheel", "coalesce")
"""Every kernel, by its folder name."""


def kernels_status() -> list[KernelStatus]:
    """Which twin every kernel runs on (importing the kernels not imported yet)."""
    for name in KERNELS:
        importlib.import_module(f"{__name__}.{name}")
    return [status(name) for name in KERNELS]
