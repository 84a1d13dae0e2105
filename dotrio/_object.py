"""What user code subclasses and receives: DurableObject, its ctx, AlarmInfo,
and the worker entry point."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ._ids import DurableObjectId
from .storage import ObjectStorage

if TYPE_CHECKING:
    from .runtime._alarms import Schedule
    from ._http import Request, Response
    from .runtime._actor import Actor
    from ._websocket import WebSocket, WebSocketRequestResponsePair

__all__ = ["DurableObject", "DurableObjectState", "AlarmInfo", "WorkerEntrypoint", "Env", "HANDLER_NAMES", "SCHEDULER_NAMES"]

T = TypeVar("T")

# Names the runtime calls itself; never reachable through RPC.
HANDLER_NAMES = frozenset(
    {
        "fetch",
        "alarm",
        "on_start",
        "websocket_message",
        "websocket_close",
        "websocket_error",
    }
)

# The scheduler's methods on DurableObject: neither RPC methods nor schedulable.
SCHEDULER_NAMES = frozenset({"schedule", "get_schedules", "cancel_schedule"})


@dataclass(frozen=True)
class AlarmInfo:
    """Passed to ``alarm()``: how many times this alarm has been retried."""

    retry_count: int = 0
    is_retry: bool = False


class Env:
    """``env``: the bindings (namespaces) and vars, by attribute or by key."""

    def __init__(self, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"env has no binding or var named {name!r}") from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("env is read-only")

    def keys(self) -> list[str]:
        return list(self._values)

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def __repr__(self) -> str:
        return f"Env({', '.join(self._values)})"


class DurableObjectState:
    """``self.ctx``: the object's id, storage and runtime controls."""

    __slots__ = ("_actor", "id", "storage")

    def __init__(self, actor: Actor) -> None:
        self._actor = actor
        self.id: DurableObjectId = actor.id
        self.storage: ObjectStorage = actor.storage

    def abort(self, reason: str | None = None) -> None:
        """Reset the object now: uncommitted writes are dropped, the instance is
        discarded, and every caller whose event had started gets ObjectResetError.
        Raises ObjectResetError in the calling handler so nothing after it runs."""
        self._actor.abort(reason)

    async def block_concurrency_while(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` with no other event delivered until it returns. An
        exception propagates to the caller and then resets the object."""
        return await self._actor.block_concurrency_while(fn)

    def now_ms(self) -> int:
        """The runtime's clock in epoch milliseconds (virtual under
        trio.testing.MockClock): use it to compute alarm times."""
        clock = self._actor.runtime.clock
        assert clock is not None
        return clock.now_ms()

    def wait_until(self, awaitable: Awaitable[Any]) -> None:
        """Keep the object alive until ``awaitable`` finishes (in the background)."""
        self._actor.wait_until(awaitable)

    # ---- WebSockets (hibernation API) -----------------------------------------

    def accept_websocket(self, ws: WebSocket, tags: Iterable[str] | None = None) -> None:
        self._actor.runtime.websockets.accept(self._actor, ws, tags)

    def get_websockets(self, tag: str | None = None) -> list[WebSocket]:
        return self._actor.runtime.websockets.get_websockets(self._actor.key, tag)

    def get_tags(self, ws: WebSocket) -> list[str]:
        return self._actor.runtime.websockets.get_tags(self._actor.key, ws)

    def set_websocket_auto_response(self, pair: WebSocketRequestResponsePair | None = None) -> None:
        self._actor.runtime.websockets.set_auto_response(self._actor.key, pair)

    def get_websocket_auto_response(self) -> WebSocketRequestResponsePair | None:
        return self._actor.runtime.websockets.get_auto_response(self._actor.key)

    def get_websocket_auto_response_timestamp(self, ws: WebSocket) -> datetime | None:
        return self._actor.runtime.websockets.get_auto_response_timestamp(ws)

    def set_hibernatable_websocket_event_timeout(self, timeout_ms: int | None = None) -> None:
        """Accepted for compatibility with Cloudflare; dotrio does not time out
        websocket events."""


class DurableObject:
    """Base class of user objects. Subclass it and define handlers and RPC methods."""

    def __init__(self, ctx: DurableObjectState, env: Env) -> None:
        self.ctx = ctx
        self.env = env

    async def fetch(self, request: Request) -> Response:
        raise TypeError(f"{type(self).__name__} does not define fetch(request)")

    # ---- scheduler (dotrio.alarms; defined here so RPC cannot reach them) ------

    async def schedule(
        self,
        when: int | float | datetime | str,
        method: str,
        payload: Any = None,
        *,
        repeat: float | None = None,
        missed: str = "latest",
        tz: str | None = None,
        id: str | None = None,
    ) -> str:
        """Run ``await self.<method>(payload)`` at ``when`` (delay in seconds, aware
        datetime, or cron string); returns the schedule id. See dotrio.alarms."""
        return self.ctx._actor.runtime.alarms.add_schedule(
            self.ctx._actor, when, method, payload, repeat=repeat, missed=missed, tz=tz, id=id
        )

    async def get_schedules(self) -> list[Schedule]:
        """Every schedule of this object, soonest first."""
        return self.ctx._actor.runtime.alarms.list_schedules(self.ctx._actor)

    async def cancel_schedule(self, id: str) -> bool:
        """Delete a schedule; returns whether it existed."""
        return self.ctx._actor.runtime.alarms.remove_schedule(self.ctx._actor, id)


class WorkerEntrypoint:
    """The worker entry: receives every HTTP request the server gets."""

    def __init__(self, ctx: Any, env: Env) -> None:
        self.ctx = ctx
        self.env = env

    async def fetch(self, request: Request) -> Response:
        raise TypeError(f"{type(self).__name__} does not define fetch(request)")
