"""The runtime's context variable: the object whose handler is running in
this task. The runtime sets it around every event; the user-facing API reads
it (``WebSocket.accept()`` keeps that object in memory, ``send``/``close``
pass its output gate). It lives below both so neither imports the other."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Protocol

__all__ = ["GatedActor", "current_actor"]


class GatedActor(Protocol):
    """What the user-facing API needs of the object whose handler is running."""

    def pin(self) -> None: ...

    def unpin(self) -> None: ...

    def gated_send(self, send: Callable[[], None]) -> None: ...


current_actor: contextvars.ContextVar[GatedActor | None] = contextvars.ContextVar(
    "dotrio_current_actor", default=None
)
