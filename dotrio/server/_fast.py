"""dotrio's own Trio HTTP/1.1 + WebSocket front end.

Rules, each chosen by measurement: one task per connection
with the handler awaited directly in it (no task, channel or event per
request); one writer per connection; one ``send_all`` per response; timeouts
enforced by a sweep about once a second instead of a cancel scope per request;
the Date header cached once a second. The only cancel scope is the one per
connection, which the sweep and shutdown cancel.

Connections use plain non-blocking sockets with ``trio.lowlevel.wait_readable``
/ ``wait_writable`` rather than ``trio.socket``: a receive waits once for
readiness, and a response that fits in the kernel buffer is sent without a
scheduler pass. That is one pass per request instead of two, ~4 µs of the
~25 µs a request costs here. The wait in every receive is the checkpoint that
keeps a busy connection from starving the others.
"""

from __future__ import annotations

import errno
import logging
import socket as _stdsocket
from email.utils import formatdate
from typing import Any

import trio
from trio.lowlevel import notify_closing, wait_readable, wait_writable

from .._http import Response
from ._dispatch import HEALTH_PATH
from ._control import (
    BODY,
    HANDLING,
    HEADERS,
    IDLE,
    STATE_NAMES,
    WRITING,
    WS_CLOSING,
    WS_OPEN,
    ConnectionStatistics,
    Handler,
    ServerControl,
    ServerStatistics,
    bind_control,
    mark_stopped,
)
from ._http1 import (
    CONTINUE,
    RECV_SIZE,
    HTTP1Parser,
    ProtocolFailure,
    WSOffer,
    render_failure,
    render_response,
    render_simple,
)
from ._limits import BodyBudget, ServerLimits
from ._ws import HANDSHAKE_MANAGED, FastWebSocket, close_on_shutdown, handshake_response

log = logging.getLogger("dotrio.server")

# Connections accepted beyond max_connections so that the health endpoint
# answers when every slot is taken. On them GET /_dotrio/health is answered
# (then closed); any other request waits for a regular slot, as it would have
# in the kernel backlog, except that the last reserve slot is never given to a
# waiter: a request arriving there is answered 503 with Retry-After.
HEALTH_RESERVE = 16
_TOO_MANY = ProtocolFailure(503, "too many connections", (("retry-after", "1"),))
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
# After an error response, read and drop what the client still sends for this
# long before closing: closing a socket with unread input sends RST, which can
# destroy the response before the client reads it.
_LINGER = 2.0


def _date_line() -> bytes:
    return b"date: " + formatdate(usegmt=True).encode("ascii") + b"\r\n"


class _Conn:
    __slots__ = (
        "server", "sock", "peer", "parser", "state", "requests", "bytes_received",
        "bytes_sent", "cancel_scope", "expired", "created", "ws", "mark", "mark_time",
        "body_of", "body_start", "body_base", "reserved",
    )

    def __init__(self, server: _Server, sock: _stdsocket.socket, peer: Any) -> None:
        self.server = server
        self.sock = sock
        self.peer = (peer[0], peer[1]) if isinstance(peer, tuple) and len(peer) >= 2 else None
        self.parser = HTTP1Parser(server.limits, server.default_host, budget=server.body_budget)
        self.state = IDLE
        self.requests = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.cancel_scope = trio.CancelScope()
        self.expired = -1
        self.created = trio.current_time()
        self.ws: FastWebSocket | None = None
        self.mark: Any = None
        self.mark_time = 0.0
        # The body being received: which request, since when, from which byte count.
        self.body_of = -1
        self.body_start = 0.0
        self.body_base = 0
        # Accepted over max_connections, into the health reserve (see _Server).
        self.reserved = server.regular >= server.limits.max_connections
        if not self.reserved:
            server.regular += 1

    # -- I/O used by the WebSocket layer too -------------------------------

    async def recv(self) -> bytes:
        """Wait for and return the next bytes; b"" at end of stream or reset."""
        sock = self.sock
        while True:
            await wait_readable(sock)
            try:
                data = sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            except (ConnectionResetError, ConnectionAbortedError):
                return b""
            break
        if self.cancel_scope.cancel_called:
            # The sweep timed us out while this receive was completing: honour
            # it (raises Cancelled) rather than act on the data.
            await trio.lowlevel.checkpoint()
        self.bytes_received += len(data)
        return data

    async def send_all(self, data: bytes | bytearray) -> None:
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        self.bytes_sent += sent
        total = len(data)
        if sent < total:
            view = memoryview(data)
            while sent < total:
                await wait_writable(sock)
                try:
                    n = sock.send(view[sent:])
                except BlockingIOError:
                    continue
                sent += n
                # Counted as it goes: the sweep's write timeout watches progress.
                self.bytes_sent += n

    # -- timeouts ----------------------------------------------------------

    def check(self, now: float, limits: ServerLimits) -> None:
        """Called by the sweep: expire the connection if it is stuck too long."""
        state = self.state
        if state == HANDLING or state == WS_OPEN:
            self.mark = None
            return
        if state == BODY and limits.min_body_rate:
            # A minimum rate, not just progress: a body trickled a byte at a
            # time makes progress forever. Allowed: body_timeout, plus one
            # second per min_body_rate bytes received.
            if self.body_of != self.requests:
                self.body_of = self.requests
                self.body_start = now
                self.body_base = self.bytes_received
            elif now - self.body_start > limits.body_timeout + (self.bytes_received - self.body_base) / limits.min_body_rate:
                self.expire()
                return
        if state == IDLE or state == HEADERS or state == WS_CLOSING:
            # Measured from when the state began, whatever trickles in (slowloris).
            key: Any = (state, self.requests)
        else:
            # Measured from the last progress.
            key = (state, self.requests, self.bytes_received, self.bytes_sent)
        if key != self.mark:
            self.mark = key
            self.mark_time = now
            return
        if state == IDLE:
            # A new connection's first request must start within the header
            # timeout: a socket that never sends a byte must not hold a
            # max_connections slot for the whole keep-alive time.
            timeout = limits.keep_alive_timeout if self.requests else limits.header_timeout
        elif state == HEADERS:
            timeout = limits.header_timeout
        elif state == BODY:
            timeout = limits.body_timeout
        elif state == WRITING:
            timeout = limits.write_timeout
        else:
            timeout = limits.ws_close_timeout
        if now - self.mark_time >= timeout:
            self.expire()

    def expire(self) -> None:
        if self.expired < 0:
            self.expired = self.state
        self.cancel_scope.cancel()

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            peer=self.peer,
            state=STATE_NAMES.get(self.state, str(self.state)),
            requests=self.requests,
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
            websocket=self.ws is not None,
            age=trio.current_time() - self.created,
        )

    # -- serving -----------------------------------------------------------

    async def main(self) -> None:
        server = self.server
        try:
            with self.cancel_scope:
                upgraded = await self._serve()
                if upgraded is not None:
                    # Run the WebSocket outside _serve's frame, with the HTTP
                    # parser dropped: an idle socket should cost little memory.
                    client, tail = upgraded
                    self.parser.release_all()
                    self.parser = None  # type: ignore[assignment]
                    transport = self.ws
                    assert transport is not None
                    server.ws_open += 1
                    server.ws_total += 1
                    try:
                        await transport.run(client, tail, close_now=server.draining)
                    finally:
                        server.ws_open -= 1
            if self.expired in (HEADERS, BODY):
                server.protocol_errors += 1
                with trio.move_on_after(1.0):
                    await self.send_all(render_failure(ProtocolFailure(408, "request timeout"), server.date_line))
        except OSError as exc:
            # The peer went away mid-write or mid-read: nothing to answer.
            log.debug("connection %s: %r", self.peer, exc)
        except Exception:
            log.exception("connection %s failed", self.peer)
        finally:
            if self.parser is not None:
                self.parser.release_all()
            notify_closing(self.sock)
            self.sock.close()
            server.conns.discard(self)
            if not self.reserved:
                server.regular -= 1
            server.slot_lot.unpark_all()

    async def _serve(self) -> tuple[Any, bytes] | None:
        """Serve HTTP; returns (client, bytes after the handshake) on a WebSocket upgrade."""
        server = self.server
        parser = self.parser
        events = parser.events
        sock = self.sock
        cs = self.cancel_scope
        while True:
            while events:
                item = events.popleft()
                if type(item) is not tuple:
                    await self._fail(item)  # type: ignore[arg-type]
                    return None
                request, keep_alive, head, ws = item
                if self.reserved:
                    if request.path == HEALTH_PATH:
                        keep_alive = 0  # the reserve is for probes: one request
                    elif not await self._wait_for_slot():
                        await self._fail(_TOO_MANY)
                        return None
                if ws is not None:
                    return await self._answer_upgrade(request, head, ws)
                self.state = HANDLING
                server.requests_total += 1
                server.in_flight += 1
                try:
                    response = await server.handler(request)
                except Exception:
                    server.handler_errors += 1
                    log.exception("handler failed for %s %s", request.method, request.url)
                    response = None
                finally:
                    server.in_flight -= 1
                if server.draining:
                    keep_alive = 0
                if isinstance(response, Response) and response.status >= 200:
                    data, keep = render_response(
                        response, head=head, keep_alive=keep_alive != 0,
                        date_line=server.date_line, http10_keep_alive=keep_alive == 2,
                    )
                else:
                    if response is not None:
                        server.handler_errors += 1
                        if isinstance(response, Response):
                            log.error("handler answered %d to %s (101 only answers a WebSocket upgrade; "
                                      "other 1xx are not final)", response.status, request.url)
                        else:
                            log.error("handler returned %r, not a Response, for %s",
                                      type(response).__name__, request.url)
                    keep = keep_alive != 0
                    data = render_simple(500, "internal server error", server.date_line, keep_alive=keep, head=head)
                self.state = WRITING
                await self.send_all(data)
                parser.release(len(request.body))
                self.requests += 1
                if not keep:
                    return None
                if parser.upgraded:
                    # An upgrade to something other than WebSocket (h2c, ...),
                    # answered as plain HTTP: go on parsing what followed it.
                    parser.feed(parser.restart_after_upgrade())
            if server.draining and not parser.in_message:
                return None
            if parser.need_continue:
                parser.need_continue = False
                await self.send_all(CONTINUE)
            if parser.in_message:
                self.state = BODY if parser.headers_done else HEADERS
            else:
                self.state = IDLE
            await wait_readable(sock)
            try:
                data = sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            except (ConnectionResetError, ConnectionAbortedError):
                data = b""
            if cs.cancel_called:
                return None
            if not data:
                parser.eof()
                if events:
                    continue
                return None
            self.bytes_received += len(data)
            parser.feed(data)

    async def _wait_for_slot(self) -> bool:
        """A reserve connection with an ordinary request: wait for a regular
        slot (back-pressure, as the kernel backlog would). False when the
        reserve is nearly all waiters: its last slot stays for health probes."""
        server = self.server
        if server.reserve_waiting >= HEALTH_RESERVE - 1:
            return False
        self.state = HANDLING  # bounded by the connections ahead, not the sweep
        server.reserve_waiting += 1
        try:
            while server.regular >= server.limits.max_connections and not server.draining:
                await server.slot_lot.park()
        finally:
            server.reserve_waiting -= 1
        self.reserved = False
        server.regular += 1
        return True

    async def _fail(self, failure: ProtocolFailure) -> None:
        server = self.server
        server.protocol_errors += 1
        self.parser.release_all()  # nothing more is parsed: no body is kept
        self.state = WRITING
        await self.send_all(render_failure(failure, server.date_line))
        await self._linger()

    async def _linger(self) -> None:
        self.state = HANDLING  # bounded below, not by the sweep
        try:
            self.sock.shutdown(_stdsocket.SHUT_WR)
        except OSError:
            return
        with trio.move_on_after(_LINGER):
            while True:
                try:
                    data = await self.recv()
                except OSError:
                    return
                if not data:
                    return

    async def _answer_upgrade(
        self, request: Any, head: bool, ws: WSOffer | ProtocolFailure
    ) -> tuple[Any, bytes] | None:
        server = self.server
        if isinstance(ws, ProtocolFailure):
            await self._fail(ws)
            return None
        self.state = HANDLING
        server.requests_total += 1
        server.in_flight += 1
        try:
            response = await server.handler(request)
        except Exception:
            server.handler_errors += 1
            log.exception("handler failed for WebSocket upgrade %s", request.url)
            response = None
        finally:
            server.in_flight -= 1
        self.state = WRITING
        if not isinstance(response, Response):
            if response is not None:
                server.handler_errors += 1
                log.error("handler returned %r, not a Response, for %s", type(response).__name__, request.url)
            await self.send_all(render_simple(500, "internal server error", server.date_line, keep_alive=False))
            return None
        if response.status != 101 or response.web_socket is None:
            # Declined: answer as HTTP and close, the client expected a switch.
            data, _ = render_response(response, head=head, keep_alive=False, date_line=server.date_line)
            await self.send_all(data)
            return None
        subprotocol = response.headers.get("sec-websocket-protocol")
        if subprotocol is not None and subprotocol not in ws.protocols:
            log.warning("handler chose WebSocket subprotocol %r the client did not offer; not sent", subprotocol)
            subprotocol = None
        extra = [(n, v) for n, v in response.headers.items() if n not in HANDSHAKE_MANAGED]
        await self.send_all(handshake_response(ws.key, subprotocol, extra, server.date_line))
        self.requests += 1
        self.ws = FastWebSocket(self, server.limits.ws_max_message_size, server.limits.ws_send_buffer)
        return response.web_socket, self.parser.upgrade_tail


class _Server:
    def __init__(
        self,
        handler: Handler,
        limits: ServerLimits,
        control: ServerControl,
        listeners: list[trio.SocketListener],
        default_host: str,
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.control = control
        self.listeners = listeners
        self.default_host = default_host
        self.conns: set[_Conn] = set()
        self.body_budget = BodyBudget(limits.max_buffered_bodies)
        self.slot_lot = trio.lowlevel.ParkingLot()
        # Connections counted against max_connections; up to HEALTH_RESERVE
        # more are accepted so /_dotrio/health answers at the limit.
        self.regular = 0
        self.reserve_waiting = 0
        self.accept_scope = trio.CancelScope()
        self.date_line = _date_line()
        self.draining = False
        self.connections_total = 0
        self.requests_total = 0
        self.in_flight = 0
        self.ws_open = 0
        self.ws_total = 0
        self.handler_errors = 0
        self.protocol_errors = 0

    def addresses(self) -> list[tuple[str, int]]:
        out = []
        for listener in self.listeners:
            name = listener.socket.getsockname()
            out.append((name[0], name[1]))
        return out

    async def serve(self, task_status: trio.TaskStatus[ServerControl]) -> None:
        limits = self.limits
        control = self.control
        try:
            async with trio.open_nursery() as root:
                root.start_soon(self._sweep)
                async with trio.open_nursery() as conns:
                    with self.accept_scope:
                        bind_control(control, self, self.addresses())
                        async with trio.open_nursery() as acceptors:
                            for listener in self.listeners:
                                acceptors.start_soon(self._accept_loop, listener.socket, conns)
                            task_status.started(control)
                    # Accepting stopped: shutdown was requested (or cancelled).
                    for listener in self.listeners:
                        listener.socket.close()
                    grace = control.grace if control.grace is not None else limits.shutdown_grace
                    conns.cancel_scope.deadline = trio.current_time() + grace
                root.cancel_scope.cancel()
        finally:
            for listener in self.listeners:
                listener.socket.close()
            mark_stopped(control)

    async def _accept_loop(self, lsock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        # Accepting goes through trio.socket (once per connection); the
        # connection itself is then a plain non-blocking socket (see top).
        limit = self.limits.max_connections
        conns = self.conns
        while True:
            while len(conns) >= limit + HEALTH_RESERVE:
                # Back-pressure: leave new connections in the kernel backlog.
                await self.slot_lot.park()
            try:
                sock, addr = await lsock.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_RETRY_ERRNOS:
                    log.error("accept failed (%s); retrying in 0.1 s", errno.errorcode.get(exc.errno, exc.errno))
                    await trio.sleep(0.1)
                    continue
                raise
            raw = _stdsocket.socket(fileno=sock.detach())
            raw.setblocking(False)
            try:
                raw.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - not TCP (never here)
                pass
            conn = _Conn(self, raw, addr)
            conns.add(conn)
            self.connections_total += 1
            nursery.start_soon(conn.main)

    async def _sweep(self) -> None:
        limits = self.limits
        interval = limits.sweep_interval
        while True:
            await trio.sleep(interval)
            self.date_line = _date_line()
            now = trio.current_time()
            for conn in list(self.conns):
                conn.check(now, limits)

    def begin_shutdown(self) -> None:
        if self.draining:
            return
        self.draining = True
        self.accept_scope.cancel()
        self.slot_lot.unpark_all()
        for conn in list(self.conns):
            if conn.ws is not None:
                close_on_shutdown(conn.ws)
            elif conn.state == IDLE:
                conn.expire()

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            front_end="fast",
            addresses=self.addresses() if not self.draining else self.control.addresses,
            accepting=not self.draining,
            shutting_down=self.draining,
            open_connections=len(self.conns),
            connections_total=self.connections_total,
            requests_total=self.requests_total,
            requests_in_flight=self.in_flight,
            open_websockets=self.ws_open,
            websockets_total=self.ws_total,
            handler_errors=self.handler_errors,
            protocol_errors=self.protocol_errors,
        )

    def connections(self) -> list[ConnectionStatistics]:
        return [conn.statistics() for conn in list(self.conns)]


async def serve_fast(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    limits: ServerLimits | None = None,
    control: ServerControl | None = None,
    task_status: trio.TaskStatus[ServerControl] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` over HTTP/1.1 and WebSocket until shut down.

    Use ``control = await nursery.start(serve_fast, handler, port=0)``: the
    returned ``ServerControl`` has the bound ``port``, ``statistics()`` and
    ``shutdown()``. Cancelling the call closes everything at once.
    """
    limits = limits if limits is not None else ServerLimits()
    control = control if control is not None else ServerControl()
    listeners = await trio.open_tcp_listeners(port, host=host, backlog=limits.backlog)
    name = listeners[0].socket.getsockname()
    bound_host = f"[{name[0]}]" if ":" in name[0] else name[0]
    server = _Server(handler, limits, control, listeners, f"{bound_host}:{name[1]}")
    await server.serve(task_status)
