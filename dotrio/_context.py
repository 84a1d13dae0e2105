"""The runtime's context variables: the object whose handler is running in
this task, and the deadline of the request being served. The runtime sets
them around every event; the user-facing API reads the first
(``WebSocket.accept()`` keeps that object in memory, ``send``/``close`` pass
its output gate) and storage the second. This module imports nothing of
dotrio, so all three can use it without importing each other."""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable
from typing import Protocol

__all__ = ["GatedActor", "current_actor", "request_deadline"]


class GatedActor(Protocol):
    """What the user-facing API needs of the object whose handler is running."""

    def pin(self) -> None: ...

    def unpin(self) -> None: ...

    def gated_send(self, send: Callable[[], None]) -> None: ...


current_actor: contextvars.ContextVar[GatedActor | None] = contextvars.ContextVar(
    "dotrio_current_actor", default=None
)

#: The Trio time by which the request being served must be answered (the
#: server's ``request_timeout``), inf when none. The server sets it around a
#: request; each event an object receives takes it from the task that sent
#: the event, and runs under it (the handler is cancelled, long SQL
#: interrupted, when it passes), so it follows a request from object to object.
request_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("dotrio_request_deadline", default=math.inf)
