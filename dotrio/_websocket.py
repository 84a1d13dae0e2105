"""WebSockets: pairs, the hibernation API, and the bridge to the front end.

A ``WebSocketPair()`` is two linked ends. The object keeps the *server* end
and returns the *client* end in a 101 response; the front end attaches its
network transport to the client end (``client._attach(transport)``), after
which whatever the object sends on the server end goes to the network and
every network message arrives at the server end.

The server end accepted with ``ctx.accept_websocket`` is *hibernatable*: it is
held by the runtime's registry, not by the object instance, so the instance can
be evicted while the socket stays open; the next message activates a new
instance and calls ``websocket_message``. Auto-responses are answered here,
without waking the object. The standard mode (``ws.accept()`` then
``async for message in ws``) keeps the object in memory while open.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, final

import trio

from ._context import GatedActor, current_actor
from ._kernels.codec import decode, encode
from ._util import NoPublicConstructor

ActorKey = tuple[str, str]

__all__ = [
    "WebSocket",
    "WebSocketPair",
    "WebSocketRequestResponsePair",
    "WebSocketTransport",
    "WebSocketEndpoint",
    "MAX_TAGS",
    "MAX_ATTACHMENT_BYTES",
    "MAX_SOCKETS_PER_OBJECT",
    "SocketHost",
    "ActorKey",
    "is_accepted",
    "bind_hibernatable",
    "socket_key",
    "socket_tags",
    "auto_answer",
    "auto_response_timestamp",
    "attach_transport",
    "CONNECTING",
    "OPEN",
    "CLOSING",
    "CLOSED",
]

MAX_TAGS = 10
MAX_TAG_LENGTH = 256
MAX_ATTACHMENT_BYTES = 16_384
MAX_SOCKETS_PER_OBJECT = 32_768
_INBOUND_BUFFER = 256

CONNECTING, OPEN, CLOSING, CLOSED = 0, 1, 2, 3



class WebSocketTransport(Protocol):
    """What a front end gives the client end: a way to send to the network."""

    def send_message(self, data: str | bytes) -> None:
        """Send a message to the network (non-blocking, queued)."""

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake with ``code`` and ``reason``."""

    @property
    def closed(self) -> bool:
        """True once the connection is closed."""


class SocketHost(Protocol):
    """The runtime's registry of hibernatable sockets, as a socket sees it."""

    def live_actor(self, key: ActorKey) -> GatedActor | None: ...

    def deliver_message_nowait(self, ws: WebSocket, data: str | bytes) -> None: ...

    async def deliver_message(self, ws: WebSocket, data: str | bytes) -> None: ...

    def deliver_close(self, ws: WebSocket, code: int, reason: str, was_clean: bool) -> None: ...

    def deliver_error(self, ws: WebSocket, exc: BaseException) -> None: ...


class WebSocketEndpoint(Protocol):
    """What the front end calls with what arrives from the network."""

    async def on_message(self, data: str | bytes) -> None:
        """A message arrived from the network."""

    async def on_close(self, code: int, reason: str, was_clean: bool) -> None:
        """The connection closed (``was_clean``: with a closing handshake)."""

    async def on_error(self, exc: BaseException) -> None:
        """The connection failed with ``exc``."""


@dataclass(frozen=True)
class WebSocketRequestResponsePair:
    """An auto-response: a message equal to ``request`` is answered with
    ``response`` by the runtime, without waking the object."""

    request: str
    response: str

    def __post_init__(self) -> None:
        if not isinstance(self.request, str) or not isinstance(self.response, str):
            raise TypeError("WebSocketRequestResponsePair takes two str values")
        if len(self.request) > 2048 or len(self.response) > 2048:
            raise ValueError("auto-response request and response are limited to 2048 characters each")


def _check_message(data: object) -> str | bytes:
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"WebSocket messages are str or bytes, got {type(data).__name__}")


@final
class WebSocket(metaclass=NoPublicConstructor):
    """One end of a WebSocket."""

    __slots__ = (
        "_peer",
        "_transport",
        "_state",
        "_registry",
        "_actor_key",
        "_hibernatable",
        "_tags",
        "_attachment",
        "_auto_ts",
        "_inbound_send",
        "_inbound_recv",
        "_pinned_actor",
        "close_code",
        "close_reason",
        "__weakref__",
    )

    def __init__(self) -> None:
        self._peer: WebSocket | None = None
        self._transport: WebSocketTransport | None = None
        self._state = CONNECTING
        self._registry: SocketHost | None = None
        self._actor_key: ActorKey | None = None
        self._hibernatable = False
        self._tags: tuple[str, ...] = ()
        self._attachment: bytes | None = None
        self._auto_ts: _dt.datetime | None = None
        self._inbound_send: trio.MemorySendChannel[str | bytes] | None = None
        self._inbound_recv: trio.MemoryReceiveChannel[str | bytes] | None = None
        self._pinned_actor: GatedActor | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None

    # ---- user API --------------------------------------------------------------------

    @property
    def ready_state(self) -> int:
        """0 connecting, 1 open, 2 closing, 3 closed (as in the WebSocket API)."""
        return self._state

    def accept(self) -> None:
        """Standard mode: receive messages with ``async for message in ws``. The
        object stays in memory while this socket is open."""
        if self._hibernatable or self._inbound_recv is not None:
            raise RuntimeError("this WebSocket was already accepted")
        self._inbound_send, self._inbound_recv = trio.open_memory_channel(_INBOUND_BUFFER)
        self._state = OPEN
        actor = current_actor.get()
        if actor is not None:
            actor.pin()
            self._pinned_actor = actor

    def send(self, message: str | bytes) -> None:
        """Queue a message to the peer; it leaves after the object's earlier
        writes are committed (the output gate)."""
        data = _check_message(message)
        if self._state in (CLOSING, CLOSED):
            raise RuntimeError("cannot send on a closed WebSocket")
        actor = self._live_actor()
        if actor is not None:
            actor.gated_send(lambda: self._send_now(data))
        else:
            self._send_now(data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake."""
        if not isinstance(code, int) or not (code == 1000 or 3000 <= code <= 4999):
            raise ValueError(f"close code must be 1000 or 3000-4999, got {code!r}")
        if len(reason.encode("utf-8")) > 123:
            raise ValueError("close reason must be at most 123 bytes of UTF-8")
        if self._state == CLOSED:
            return
        actor = self._live_actor()
        if actor is not None:
            actor.gated_send(lambda: self._close_now(code, reason))
        else:
            self._close_now(code, reason)

    def serialize_attachment(self, value: Any) -> None:
        """Keep ``value`` with this socket (it survives hibernation)."""
        data = encode(value)
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise ValueError(
                f"attachment encodes to {len(data)} bytes; the limit is {MAX_ATTACHMENT_BYTES}"
            )
        self._attachment = data

    def deserialize_attachment(self) -> Any:
        """The value kept with ``serialize_attachment`` (a fresh copy), or None."""
        return None if self._attachment is None else decode(self._attachment)

    async def receive(self) -> str | bytes:
        """The next message (standard mode). Raises trio.EndOfChannel once closed."""
        if self._inbound_recv is None:
            raise RuntimeError("call accept() before receiving (or use the hibernation API)")
        return await self._inbound_recv.receive()

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        if self._inbound_recv is None:
            raise RuntimeError("call accept() before iterating")
        return self._inbound_recv.__aiter__()

    # ---- plumbing ------------------------------------------------------------------------

    def _live_actor(self) -> GatedActor | None:
        if self._registry is None or self._actor_key is None:
            return current_actor.get()
        return self._registry.live_actor(self._actor_key)

    def _send_now(self, data: str | bytes) -> None:
        peer = self._peer
        if peer is None:
            return
        transport = peer._transport
        if transport is not None:
            if not transport.closed:
                transport.send_message(data)
            return
        peer._inbound(data)

    def _close_now(self, code: int, reason: str) -> None:
        if self._state == CLOSED:
            return
        self._state = CLOSING
        peer = self._peer
        if peer is not None:
            transport = peer._transport
            if transport is not None:
                transport.close(code, reason)
            else:
                peer._peer_closed(code, reason, True)

    def _inbound(self, data: str | bytes) -> None:
        """A message for this end from its peer (in-process pairs)."""
        if self._hibernatable and self._registry is not None:
            self._registry.deliver_message_nowait(self, data)
            return
        send = self._inbound_send
        if send is None:
            return
        try:
            send.send_nowait(data)
        except trio.WouldBlock:
            self._close_now(1011, "receive buffer full")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def _peer_closed(self, code: int, reason: str, was_clean: bool) -> None:
        """The other side closed: finish our side and tell whoever listens."""
        if self._state == CLOSED:
            return
        self._state = CLOSED
        self.close_code = code
        self.close_reason = reason
        if self._inbound_send is not None:
            self._inbound_send.close()
        if self._pinned_actor is not None:
            self._pinned_actor.unpin()
            self._pinned_actor = None
        if self._hibernatable and self._registry is not None:
            self._registry.deliver_close(self, code, reason, was_clean)

    def _attach(self, transport: WebSocketTransport) -> WebSocketEndpoint:
        """The front end binds its network transport to this (client) end."""
        if self._peer is None:
            raise RuntimeError("only an end of a WebSocketPair can be attached to a transport")
        if self._transport is not None:
            raise RuntimeError("this WebSocket is already attached to a connection")
        self._transport = transport
        self._state = OPEN
        return _Endpoint(self)

    def __repr__(self) -> str:
        return f"<WebSocket state={self._state} tags={list(self._tags)}>"


class _Endpoint:
    """Network events for the client end, forwarded to its peer (the object's end)."""

    __slots__ = ("_client",)

    def __init__(self, client: WebSocket) -> None:
        self._client = client

    async def on_message(self, data: str | bytes) -> None:
        server = self._client._peer
        if server is None or server._state == CLOSED:
            return
        if server._hibernatable and server._registry is not None:
            await server._registry.deliver_message(server, data)
            return
        send = server._inbound_send
        if send is not None:
            try:
                await send.send(data)  # back-pressure: a slow reader slows the socket
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass

    async def on_close(self, code: int, reason: str, was_clean: bool) -> None:
        client = self._client
        client._state = CLOSED
        server = client._peer
        if server is not None:
            server._peer_closed(code, reason, was_clean)

    async def on_error(self, exc: BaseException) -> None:
        server = self._client._peer
        if server is not None and server._hibernatable and server._registry is not None:
            server._registry.deliver_error(server, exc)


def WebSocketPair() -> tuple[WebSocket, WebSocket]:  # noqa: N802 - Cloudflare's name
    """Two linked ends: return ``client`` in a 101 response, keep ``server``."""
    client, server = WebSocket._create(), WebSocket._create()
    client._peer = server
    server._peer = client
    return client, server


# ---- the runtime's side of a socket (used by the hibernation registry) -----------------


def is_accepted(ws: WebSocket) -> bool:
    """``ws`` was accepted already (hibernatable or standard mode)."""
    return ws._hibernatable or ws._inbound_recv is not None


def bind_hibernatable(ws: WebSocket, host: SocketHost, key: ActorKey, tags: tuple[str, ...]) -> None:
    """Make ``ws`` a hibernatable socket of the object ``key``, held by ``host``."""
    ws._registry = host
    ws._actor_key = key
    ws._hibernatable = True
    ws._tags = tags
    if ws._state == CONNECTING:
        ws._state = OPEN


def socket_key(ws: WebSocket) -> ActorKey | None:
    """The object that accepted ``ws`` as hibernatable, or None."""
    return ws._actor_key


def socket_tags(ws: WebSocket) -> tuple[str, ...]:
    """The tags ``ws`` was accepted with."""
    return ws._tags


def auto_answer(ws: WebSocket, response: str) -> None:
    """Send an auto-response on ``ws`` now (it bypasses the object and its
    output gate) and remember when."""
    ws._auto_ts = _dt.datetime.now(_dt.UTC)
    ws._send_now(response)


def auto_response_timestamp(ws: WebSocket) -> _dt.datetime | None:
    """When the runtime last auto-answered a message on ``ws``."""
    return ws._auto_ts


def attach_transport(ws: WebSocket, transport: WebSocketTransport) -> WebSocketEndpoint:
    """A front end binds its network transport to the client end ``ws`` of a
    pair, and gets the endpoint it reports network events to."""
    return ws._attach(transport)
