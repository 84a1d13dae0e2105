"""The runtime's context variable: the object whose handler is running in
this task. The runtime sets it around every event; the user-facing API reads
it (``WebSocket.accept()`` keeps that object in memory, ``send``/``close``
pass its output gate). It lives below both so neither imports the other."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runtime._actor import Actor

__all__ = ["current_actor"]

current_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("dotrio_current_actor", default=None)
