"""The timer wheel the alarm system uses: the compiled twin unless ``DOTRIO_NO_EXTENSIONS`` is set.

Both twins behave identically, down to the order of ties, so the choice is
about speed and memory only. The design is described in
``dotrio._kernels.wheel._pure``; ``USING_EXTENSION`` says which one is in use
(see ``dotrio._kernels._select``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._constants import LEVELS, SLOT_BITS
from .._select import load
from ._pure import WheelStatistics

__all__ = ["LEVELS", "SLOT_BITS", "USING_EXTENSION", "TimerWheel", "WheelStatistics"]

_impl, USING_EXTENSION = load(__name__)

if TYPE_CHECKING:
    from ._pure import TimerWheel
else:
    TimerWheel = _impl.TimerWheel
