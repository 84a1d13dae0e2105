"""The runtime's context variable: the object whose handler is running in
this task. The runtime sets it around every event; the user-facing API reads
it (``WebSocket.accept()`` keeps that object in memory, ``send``/``close``
pass its output gate). It lives below both so neither imports the other."""

from __future__ import annotations

import contextvars
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runtime._actor import Actor

__all__ = ["current_actor", "request_deadline"]

current_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("dotrio_current_actor", default=None)

#: The Trio time by which the request being served must be answered (the
#: server's ``request_timeout``), inf when none. The server sets it around a
#: request; each event an object receives takes it from the task that sent
#: the event, and runs under it (the handler is cancelled, long SQL
#: interrupted, when it passes), so it follows a request from object to object.
request_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("dotrio_request_deadline", default=math.inf)
