"""WebSocket on an upgraded HTTP/1.1 connection of the fast front end (wsproto).

One reader (the connection's own task) feeds wsproto and awaits the endpoint's
callbacks, so a slow endpoint slows the reader and TCP pushes back on the peer.
One writer task owns every write after the handshake, so ``send_message`` and
``close`` only append to a bounded buffer and wake it: they never await.

The runtime side (``dotrio/_websocket.py``) sees this through the
``WebSocketTransport`` protocol (defined there) and answers with an endpoint that has
``on_message``, ``on_close`` and ``on_error``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, generate_accept_token

from .._websocket import WebSocketEndpoint, WebSocketTransport, attach_transport
from ._control import WS_CLOSING, WS_OPEN
from ._http1 import status_line

log = logging.getLogger("dotrio.server")

__all__ = ["WebSocketTransport", "WebSocketEndpoint", "WebSocketProtocolError", "check_close_args"]


class WebSocketProtocolError(Exception):
    """The peer broke RFC 6455 (or a limit); ``code`` is the close code we sent."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}" if reason else str(code))
        self.code = code
        self.reason = reason


def check_close_args(code: int, reason: str) -> None:
    """Reject close codes and reasons a peer would treat as a protocol error."""
    if not isinstance(code, int) or isinstance(code, bool):
        raise TypeError(f"close code must be an int, got {type(code).__name__}")
    if not (code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise ValueError(f"invalid WebSocket close code {code}")
    if not isinstance(reason, str):
        raise TypeError(f"close reason must be str, got {type(reason).__name__}")
    if len(reason.encode("utf-8")) > 123:
        raise ValueError("close reason longer than 123 UTF-8 bytes")


def handshake_response(key: bytes, subprotocol: str | None, extra: list[tuple[str, str]], date_line: bytes) -> bytes:
    """The 101 answer to a valid upgrade request (RFC 6455 section 4.2.2)."""
    parts = [
        status_line(101),
        b"upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ",
        generate_accept_token(key),
        b"\r\n",
    ]
    if subprotocol:
        parts.append(b"sec-websocket-protocol: " + subprotocol.encode("latin-1") + b"\r\n")
    for name, value in extra:
        parts.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
    parts.append(date_line)
    parts.append(b"\r\n")
    return b"".join(parts)


# Response headers a handler may not pass through on a 101: we write them.
HANDSHAKE_MANAGED = frozenset({
    "upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol",
    "sec-websocket-extensions", "content-length", "transfer-encoding", "date",
})


class _Owner(Protocol):
    """The parts of the fast front end's connection the WebSocket layer uses."""

    state: int
    bytes_received: int
    bytes_sent: int

    async def recv(self) -> bytes: ...

    async def send_all(self, data: bytes | bytearray) -> None: ...


class FastWebSocket:
    """One server-side WebSocket; implements ``WebSocketTransport``."""

    __slots__ = (
        "_owner", "_ws", "_out", "_pending", "_lot",
        "_finished", "_closing", "_notified", "_endpoint", "_max_message", "_send_limit",
        "_scope",
    )

    def __init__(self, owner: _Owner, max_message: int, send_limit: int) -> None:
        self._owner = owner
        self._ws = Connection(ConnectionType.SERVER)
        self._out: list[bytes | bytearray] = []
        self._pending = 0  # bytes queued or being written
        self._lot = trio.lowlevel.ParkingLot()
        self._finished = False  # writer: exit once the buffer is empty
        self._closing = False  # we sent (or queued) a close frame
        self._notified = False  # on_close was delivered
        self._endpoint: Any = None
        self._max_message = max_message
        self._send_limit = send_limit
        self._scope: trio.CancelScope | None = None

    # -- WebSocketTransport ----------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closing or self._ws.state is not ConnectionState.OPEN

    def send_message(self, data: str | bytes) -> None:
        if isinstance(data, str):
            event: Message[Any] = TextMessage(data=data)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            event = BytesMessage(data=bytes(data))
        else:
            raise TypeError(f"a WebSocket message is str or bytes, not {type(data).__name__}")
        if self.closed:
            return  # the socket is going away; messages after close are dropped
        self._queue(self._ws.send(event))
        if self._pending > self._send_limit:
            self._overflow()

    def close(self, code: int = 1000, reason: str = "") -> None:
        check_close_args(code, reason)
        self._send_close(code, reason)

    # -- internals ---------------------------------------------------------

    def _queue(self, frame: bytes | bytearray) -> None:
        self._out.append(frame)
        self._pending += len(frame)
        self._lot.unpark_all()

    def _send_close(self, code: int, reason: str) -> bool:
        if self._closing or self._ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return False
        self._closing = True
        self._owner.state = WS_CLOSING
        try:
            frame = self._ws.send(CloseConnection(code=code, reason=reason or None))
        except LocalProtocolError:  # pragma: no cover - guarded by the state check
            return False
        self._queue(frame)
        return True

    def _overflow(self) -> None:
        # The peer is not reading: drop what it has not been sent yet (whole
        # frames: the writer takes the buffer as a whole) and tell it why.
        dropped = sum(len(f) for f in self._out)
        self._out.clear()
        self._pending -= dropped
        log.warning("WebSocket send buffer over %d bytes; closing with 1008", self._send_limit)
        self._send_close(1008, "send buffer full")

    async def _writer(self) -> None:
        owner = self._owner
        while True:
            out = self._out
            if not out:
                if self._finished:
                    return
                await self._lot.park()
                continue
            self._out = []
            data = out[0] if len(out) == 1 else b"".join(out)
            try:
                await owner.send_all(data)
            except OSError:
                # The peer is gone. The reader will see it too, but it may be
                # parked in a receive that never ends (half-open): stop it.
                self._out.clear()
                self._finished = True
                self._closing = True
                assert self._scope is not None
                self._scope.cancel()
                return
            self._pending -= len(data)

    async def _notify_close(self, code: int, reason: str, was_clean: bool) -> None:
        if self._notified:
            return
        self._notified = True
        await self._endpoint.on_close(code, reason, was_clean)

    async def _fail(self, exc: WebSocketProtocolError) -> None:
        """_Fail the WebSocket Connection_: send our close, tell the endpoint."""
        self._send_close(exc.code, exc.reason)
        if self._notified:
            return
        try:
            await self._endpoint.on_error(exc)
        finally:
            await self._notify_close(exc.code, exc.reason, False)

    async def run(self, client: Any, initial: bytes, close_now: bool = False) -> None:
        """Attach the runtime's endpoint and serve until the socket is done.

        ``close_now``: the server is shutting down, start closing with 1001 at once.
        """
        self._owner.state = WS_OPEN
        self._endpoint = attach_transport(client, self)
        if close_now:
            self._send_close(1001, "server shutting down")
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._writer)
                try:
                    await self._read(initial)
                finally:
                    self._finished = True
                    self._lot.unpark_all()
        finally:
            if not self._notified:
                # Cancelled (shutdown deadline, close timeout), peer gone, or
                # crashed: the endpoint still hears that the socket is gone,
                # briefly shielded from the cancellation that brought us here.
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + 1.0
                    try:
                        await self._notify_close(1006, "", False)
                    except Exception:
                        log.exception("WebSocket endpoint on_close failed")

    async def _deliver(self, message: str | bytes) -> None:
        try:
            await self._endpoint.on_message(message)
        except Exception:
            # The runtime handles its objects' errors; this is a bug on its
            # side. Close the socket with 1011 rather than kill the server.
            log.exception("WebSocket endpoint on_message failed")
            self._send_close(1011, "internal error")
            await self._notify_close(1011, "internal error", False)

    async def _read(self, initial: bytes) -> None:
        ws = self._ws
        owner = self._owner
        max_message = self._max_message
        parts: list[Any] = []
        size = 0
        data = initial
        while True:
            if data:
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Message):
                        if self._closing:
                            continue  # after our close frame, messages are dropped
                        piece = event.data
                        if isinstance(piece, str):
                            size += len(piece) if piece.isascii() else len(piece.encode("utf-8"))
                        else:
                            size += len(piece)
                        if size > max_message:
                            parts = []
                            size = 0
                            await self._fail(WebSocketProtocolError(1009, "message too big"))
                            continue
                        parts.append(piece)
                        if event.message_finished:
                            if len(parts) == 1:
                                message = parts[0]
                                if isinstance(message, bytearray):
                                    message = bytes(message)
                            elif isinstance(piece, str):
                                message = "".join(parts)
                            else:
                                message = b"".join(parts)
                            parts = []
                            size = 0
                            await self._deliver(message)
                    elif isinstance(event, Ping):
                        if ws.state is ConnectionState.OPEN:
                            # Pongs count against the send buffer like messages:
                            # a peer that floods pings and never reads is closed
                            # with 1008 instead of growing the buffer without end.
                            self._queue(ws.send(event.response()))
                            if self._pending > self._send_limit:
                                self._overflow()
                    elif isinstance(event, CloseConnection):
                        if ws.state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
                            # wsproto reports a frame it could not parse as a
                            # CloseConnection without changing state.
                            await self._fail(WebSocketProtocolError(int(event.code), event.reason or ""))
                            return
                        code = int(event.code)
                        reason = event.reason or ""
                        if ws.state is ConnectionState.REMOTE_CLOSING:
                            # The peer started the closing handshake: echo it
                            # before telling the endpoint, as browsers expect.
                            self._closing = True
                            owner.state = WS_CLOSING
                            if code == 1005:
                                # wsproto sends an empty close only for the enum member.
                                reply = CloseConnection(code=CloseReason.NO_STATUS_RCVD)
                            else:
                                reply = event.response()
                            self._queue(ws.send(reply))
                        await self._notify_close(code, reason, True)
                        return
                    # Pong: nothing to do.
            data = await owner.recv()
            if not data:
                await self._notify_close(1006, "", False)
                return


def close_on_shutdown(transport: FastWebSocket) -> None:
    """Start the closing handshake with 1001 (going away) for a graceful shutdown."""
    transport._send_close(1001, "server shutting down")

