"""The timer wheel the runtime uses: compiled twin unless told otherwise.

``DOTRIO_NO_EXTENSIONS`` set to anything but ``""``/``"0"`` selects the
pure-Python twin (``dotrio._wheel_py``); otherwise the compiled
``dotrio._ext._wheel`` is used, falling back to the pure twin only when the
extension is not built (ImportError). Both behave identically, down to the
order of ties, so the choice is about speed and memory only. The design is
described in ``dotrio/_wheel_py.py``.
"""

from __future__ import annotations

import os

from dotrio._wheel_py import WheelStatistics

__all__ = ["USING_EXTENSION", "TimerWheel", "WheelStatistics"]

USING_EXTENSION: bool

if os.environ.get("DOTRIO_NO_EXTENSIONS", "") not in ("", "0"):
    from dotrio._wheel_py import TimerWheel

    USING_EXTENSION = False
else:
    try:
        from dotrio._ext._wheel import TimerWheel
    except ImportError:
        # An unbuilt checkout still works; tests assert USING_EXTENSION so CI
        # cannot silently run on the fallback.
        from dotrio._wheel_py import TimerWheel

        USING_EXTENSION = False
    else:
        USING_EXTENSION = True
