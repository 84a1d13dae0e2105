"""The runtime's single notion of "now".

now = wall clock at start + Trio's clock since start. Under
``trio.testing.MockClock`` Trio's clock is virtual, so alarms, retries and
eviction all run in virtual time with no clock argument anywhere.
"""

from __future__ import annotations

import time

import trio

__all__ = ["RuntimeClock"]


class RuntimeClock:
    """Epoch time anchored at construction, advanced by Trio's clock."""

    __slots__ = ("_wall0", "_trio0")

    def __init__(self) -> None:
        self._wall0 = time.time()
        self._trio0 = trio.current_time()

    def now(self) -> float:
        """Epoch seconds."""
        return self._wall0 + (trio.current_time() - self._trio0)

    def now_ms(self) -> int:
        """Epoch milliseconds, as alarms use them."""
        return int(round(self.now() * 1000.0))

    def trio_time_for(self, epoch_s: float) -> float:
        """The Trio clock reading at which epoch time ``epoch_s`` is reached."""
        return self._trio0 + (epoch_s - self._wall0)
