"""What user code subclasses and receives: DurableObject, its ctx, AlarmInfo,
and the worker entry point."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, final

from ._util import NoPublicConstructor

if TYPE_CHECKING:
    from ._http import Request, Response
    from ._ids import DurableObjectId
    from ._schedule import Schedule
    from ._websocket import WebSocket, WebSocketRequestResponsePair
    from .storage import ObjectStorage

__all__ = [
    "DurableObject",
    "DurableObjectState",
    "AlarmInfo",
    "WorkerEntrypoint",
    "Env",
    "HANDLER_NAMES",
    "SCHEDULER_NAMES",
    "ObjectHost",
    "new_state",
]

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
        """The names of the bindings and vars."""
        return list(self._values)

    def get(self, name: str, default: Any = None) -> Any:
        """The binding or var ``name``, or ``default``."""
        return self._values.get(name, default)

    def __repr__(self) -> str:
        return f"Env({', '.join(self._values)})"


class ObjectHost(Protocol):
    """What ``ctx`` and the scheduler methods need of the runtime: the live
    object's side of each call (the runtime's actor implements it)."""

    @property
    def id(self) -> DurableObjectId: ...

    @property
    def user_storage(self) -> ObjectStorage: ...

    def abort(self, reason: str | None) -> None: ...

    async def block_concurrency_while(self, fn: Callable[[], Awaitable[T]]) -> T: ...

    def now_ms(self) -> int: ...

    def wait_until(self, awaitable: Awaitable[Any]) -> None: ...

    def accept_websocket(self, ws: WebSocket, tags: Iterable[str] | None) -> None: ...

    def get_websockets(self, tag: str | None) -> list[WebSocket]: ...

    def get_tags(self, ws: WebSocket) -> list[str]: ...

    def set_websocket_auto_response(self, pair: WebSocketRequestResponsePair | None) -> None: ...

    def get_websocket_auto_response(self) -> WebSocketRequestResponsePair | None: ...

    def get_websocket_auto_response_timestamp(self, ws: WebSocket) -> datetime | None: ...

    def add_schedule(
        self,
        when: int | float | datetime | str,
        method: str,
        payload: Any,
        *,
        repeat: float | None,
        missed: str,
        tz: str | None,
        id: str | None,
    ) -> str: ...

    def list_schedules(self) -> list[Schedule]: ...

    def remove_schedule(self, id: str) -> bool: ...


@final
class DurableObjectState(metaclass=NoPublicConstructor):
    """``self.ctx``: the object's id, storage and runtime controls."""

    __slots__ = ("_host", "id", "storage")

    def __init__(self, host: ObjectHost) -> None:
        self._host = host
        self.id: DurableObjectId = host.id
        """The object's id."""
        self.storage: ObjectStorage = host.user_storage
        """The object's storage (KV, SQL and the alarm)."""

    def abort(self, reason: str | None = None) -> None:
        """Reset the object now: uncommitted writes are dropped, the instance is
        discarded, and every caller whose event had started gets ObjectResetError.
        Raises ObjectResetError in the calling handler so nothing after it runs."""
        self._host.abort(reason)

    async def block_concurrency_while(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` with no other event delivered until it returns. An
        exception propagates to the caller and then resets the object."""
        return await self._host.block_concurrency_while(fn)

    def now_ms(self) -> int:
        """The runtime's clock in epoch milliseconds (virtual under
        trio.testing.MockClock): use it to compute alarm times."""
        return self._host.now_ms()

    def wait_until(self, awaitable: Awaitable[Any]) -> None:
        """Keep the object alive until ``awaitable`` finishes (in the background)."""
        self._host.wait_until(awaitable)

    # ---- WebSockets (hibernation API) -----------------------------------------

    def accept_websocket(self, ws: WebSocket, tags: Iterable[str] | None = None) -> None:
        """Accept the server end ``ws`` of a WebSocketPair as hibernatable: the
        runtime holds it, so this object may be evicted while it stays open,
        and its messages arrive at ``websocket_message``. At most 10 tags (str)
        label it for :meth:`get_websockets`."""
        self._host.accept_websocket(ws, tags)

    def get_websockets(self, tag: str | None = None) -> list[WebSocket]:
        """The open sockets this object accepted (all of them, or those with
        ``tag``); they survive hibernation."""
        return self._host.get_websockets(tag)

    def get_tags(self, ws: WebSocket) -> list[str]:
        """The tags ``ws`` was accepted with. ValueError if this object did not accept it."""
        return self._host.get_tags(ws)

    def set_websocket_auto_response(self, pair: WebSocketRequestResponsePair | None = None) -> None:
        """Answer a message equal to ``pair.request`` with ``pair.response``
        without waking the object (None removes it)."""
        self._host.set_websocket_auto_response(pair)

    def get_websocket_auto_response(self) -> WebSocketRequestResponsePair | None:
        """The auto-response set with :meth:`set_websocket_auto_response`, or None."""
        return self._host.get_websocket_auto_response()

    def get_websocket_auto_response_timestamp(self, ws: WebSocket) -> datetime | None:
        """When the runtime last auto-answered a message on ``ws`` (UTC), or None."""
        return self._host.get_websocket_auto_response_timestamp(ws)

    def set_hibernatable_websocket_event_timeout(self, timeout_ms: int | None = None) -> None:
        """Accepted for compatibility with Cloudflare; dotrio does not time out
        websocket events."""


def new_state(host: ObjectHost) -> DurableObjectState:
    """The ``ctx`` of one instance (the runtime builds one per activation)."""
    return DurableObjectState._create(host)


class DurableObject:
    """Base class of user objects. Subclass it and define handlers and RPC methods."""

    def __init__(self, ctx: DurableObjectState, env: Env) -> None:
        self.ctx = ctx
        self.env = env

    async def fetch(self, request: Request) -> Response:
        """Handle an HTTP request sent to this object (``stub.fetch``) and
        return a Response. Subclasses override it; the default raises TypeError."""
        raise TypeError(f"{type(self).__name__} does not define fetch(request)")

    # ---- scheduler (defined here so RPC cannot reach them) ------------------------

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
        datetime, or cron string); returns the schedule id. See the Alarms concept page."""
        return self.ctx._host.add_schedule(when, method, payload, repeat=repeat, missed=missed, tz=tz, id=id)

    async def get_schedules(self) -> list[Schedule]:
        """Every schedule of this object, soonest first."""
        return self.ctx._host.list_schedules()

    async def cancel_schedule(self, id: str) -> bool:
        """Delete a schedule; returns whether it existed."""
        return self.ctx._host.remove_schedule(id)


class WorkerEntrypoint:
    """The worker entry: receives every HTTP request the server gets."""

    def __init__(self, ctx: Any, env: Env) -> None:
        self.ctx = ctx
        self.env = env

    async def fetch(self, request: Request) -> Response:
        """Handle an HTTP request the server received and return a Response.
        Subclasses override it; the default raises TypeError."""
        raise TypeError(f"{type(self).__name__} does not define fetch(request)")
