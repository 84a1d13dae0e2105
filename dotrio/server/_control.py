"""What the caller of a front end holds: the handler type, shutdown and statistics."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from .._http import Request, Response

Handler = Callable[[Request], Awaitable[Response]]

# Connection states, shared by the HTTP and WebSocket layers of the fast front
# end and read by its timeout sweep. Plain ints: they are set on the hot path.
IDLE = 0        # keep-alive, waiting for the first byte of a request
HEADERS = 1     # a request has begun, its headers are not complete
BODY = 2        # reading a request body
HANDLING = 3    # the handler is running: no timeout applies
WRITING = 4     # sending a response
WS_OPEN = 5     # WebSocket, open: no timeout applies
WS_CLOSING = 6  # WebSocket, close frame sent or being flushed

STATE_NAMES = {
    IDLE: "idle", HEADERS: "headers", BODY: "body", HANDLING: "handling",
    WRITING: "writing", WS_OPEN: "websocket", WS_CLOSING: "websocket-closing",
}


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """A snapshot of one connection (fast front end only)."""

    peer: tuple[str, int] | None
    state: str
    requests: int
    bytes_received: int
    bytes_sent: int
    websocket: bool
    age: float


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """A snapshot of one server."""

    front_end: str
    addresses: list[tuple[str, int]]
    accepting: bool
    shutting_down: bool
    open_connections: int
    connections_total: int
    requests_total: int
    requests_in_flight: int
    open_websockets: int
    websockets_total: int
    handler_errors: int
    protocol_errors: int


class _Backend(Protocol):
    def statistics(self) -> ServerStatistics: ...
    def connections(self) -> list[ConnectionStatistics]: ...
    def begin_shutdown(self) -> None: ...


class ServerControl:
    """The handle a caller keeps on a running server.

    ``await nursery.start(serve_fast, handler)`` (or ``serve_hypercorn``) returns
    one; pass your own with ``control=`` to hold it before the server starts.
    ``shutdown()`` stops accepting, closes idle keep-alive connections, closes
    WebSockets with 1001, and lets in-flight requests finish for ``grace``
    seconds before cancelling them; the ``serve_*`` call then returns.
    """

    def __init__(self) -> None:
        self._backend: _Backend | None = None
        self._addresses: list[tuple[str, int]] = []
        self._shutdown_requested = trio.Event()
        self._stopped = trio.Event()
        self.grace: float | None = None

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs the server listens on."""
        return list(self._addresses)

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful with ``port=0``)."""
        if not self._addresses:
            raise RuntimeError("the server has not started yet")
        return self._addresses[0][1]

    @property
    def url(self) -> str:
        """``http://host:port`` of the first listening socket."""
        host, port = self._addresses[0][:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    @property
    def shutting_down(self) -> bool:
        """True once ``shutdown()`` was called."""
        return self._shutdown_requested.is_set()

    def shutdown(self, grace: float | None = None) -> None:
        """Start a graceful shutdown (non-blocking, idempotent).

        ``grace`` overrides ``ServerLimits.shutdown_grace`` for this shutdown.
        """
        if grace is not None:
            if not isinstance(grace, (int, float)) or grace < 0 or math.isnan(grace):
                raise ValueError(f"grace must be a number >= 0, got {grace!r}")
            self.grace = float(grace)
        if self._shutdown_requested.is_set():
            return
        self._shutdown_requested.set()
        if self._backend is not None:
            self._backend.begin_shutdown()

    async def wait_shutdown_requested(self) -> None:
        """Return once ``shutdown()`` is called."""
        await self._shutdown_requested.wait()

    async def wait_stopped(self) -> None:
        """Return once the ``serve_*`` call that owns this control has returned."""
        await self._stopped.wait()

    def statistics(self) -> ServerStatistics:
        """Counters of the running server (connections, requests, WebSockets)."""
        if self._backend is None:
            raise RuntimeError("the server has not started yet")
        return self._backend.statistics()

    def connections(self) -> list[ConnectionStatistics]:
        """Per-connection snapshots (empty for hypercorn, which keeps its own)."""
        if self._backend is None:
            return []
        return self._backend.connections()

    # -- used by the front ends ------------------------------------------------

    def _bind(self, backend: Any, addresses: list[tuple[str, int]]) -> None:
        if self._backend is not None:
            raise RuntimeError("a ServerControl can drive only one server")
        self._backend = backend
        self._addresses = addresses
        if self._shutdown_requested.is_set():
            backend.begin_shutdown()


def bind_control(control: ServerControl, backend: Any, addresses: list[tuple[str, int]]) -> None:
    """A front end has started: ``control`` drives ``backend`` from now on."""
    control._bind(backend, addresses)


def mark_stopped(control: ServerControl) -> None:
    """The ``serve_*`` call owning ``control`` is returning."""
    control._stopped.set()
