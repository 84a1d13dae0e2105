"""The same ``Handler`` as an ASGI app, served by hypercorn's trio worker.

This is the ``--server hypercorn`` path: HTTP/2 (h2c and over TLS with ALPN)
and TLS, at hypercorn's speed.

Close codes: hypercorn alone tells an ASGI app only 1000 or 1006 when the
client closes. ``serve_hypercorn`` enables ``_hypercorn_shim`` for its own
``Config``, which reports the peer's real code and reason in
``websocket.disconnect`` (``code``, ``reason``, plus ``dotrio.clean`` and
``dotrio.error``); that shim is the one place dotrio touches hypercorn's
internals.
"""

from __future__ import annotations

import logging
from collections import deque
from functools import partial
from typing import Any

import trio

from .._http import Request, Response, headers_from_raw, trusted_request
from .._websocket import attach_transport
from ._control import ConnectionStatistics, Handler, ServerControl, ServerStatistics, bind_control, mark_stopped
from ._http1 import HOST_CHARS, ProtocolFailure, smuggling
from ._hypercorn_shim import enable_close_codes, enable_strict_http1
from ._limits import BodyBudget, ServerLimits
from ._ws import HANDSHAKE_MANAGED, WebSocketProtocolError, check_close_args

log = logging.getLogger("dotrio.server")

ASGIScope = dict[str, Any]
ASGIMessage = dict[str, Any]

# Response headers the server (or HTTP/2) manages; a handler's are dropped.
_ASGI_MANAGED = frozenset({"content-length", "transfer-encoding", "keep-alive", "date"})


class _ASGITransport:
    """``WebSocketTransport`` over ASGI ``send``: a bounded queue and a sender task."""

    __slots__ = ("_queue", "_pending", "_limit", "_lot", "_closing", "_gone")

    def __init__(self, limit: int) -> None:
        self._queue: deque[tuple[str, Any, Any]] = deque()
        self._pending = 0
        self._limit = limit
        self._lot = trio.lowlevel.ParkingLot()
        self._closing = False
        self._gone = False

    @property
    def closed(self) -> bool:
        return self._closing or self._gone

    def send_message(self, data: str | bytes) -> None:
        if isinstance(data, str):
            kind = "text"
        elif isinstance(data, (bytes, bytearray, memoryview)):
            kind = "bytes"
            data = bytes(data)
        else:
            raise TypeError(f"a WebSocket message is str or bytes, not {type(data).__name__}")
        if self.closed:
            return
        self._queue.append((kind, data, None))
        self._pending += len(data)
        self._lot.unpark_all()
        if self._pending > self._limit:
            # Drop what has not been handed to hypercorn yet and say why.
            self._queue.clear()
            self._pending = 0
            log.warning("WebSocket send buffer over %d bytes; closing with 1008", self._limit)
            self._send_close(1008, "send buffer full")

    def close(self, code: int = 1000, reason: str = "") -> None:
        check_close_args(code, reason)
        self._send_close(code, reason)

    def _send_close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self._closing = True
        self._queue.append(("close", code, reason))
        self._lot.unpark_all()

    async def sender(self, send: Any, close_timeout: float, scope: trio.CancelScope) -> None:
        queue = self._queue
        while True:
            if not queue:
                await self._lot.park()
                continue
            kind, a, b = queue.popleft()
            if kind == "close":
                await send({"type": "websocket.close", "code": a, "reason": b})
                # Wait for the peer's answer, then give up: returning from the
                # app makes hypercorn drop the socket.
                await trio.sleep(close_timeout)
                scope.cancel()
                return
            await send({"type": "websocket.send", kind: a})
            self._pending -= len(a)


class ASGIApp:
    """An ASGI 3 app (HTTP, WebSocket, lifespan) around a dotrio ``Handler``."""

    def __init__(self, handler: Handler, limits: ServerLimits | None = None) -> None:
        self.handler = handler
        self.limits = limits if limits is not None else ServerLimits()
        self.body_budget = BodyBudget(self.limits.max_buffered_bodies)
        self.draining = False
        self.live: set[_ASGITransport] = set()
        self.requests_total = 0
        self.in_flight = 0
        self.ws_total = 0
        self.handler_errors = 0
        self.protocol_errors = 0

    async def __call__(self, scope: ASGIScope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    def begin_shutdown(self) -> None:
        self.draining = True
        for transport in list(self.live):
            transport._send_close(1001, "server shutting down")

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def _url(scope: ASGIScope) -> str | ProtocolFailure:
        """The request's URL from a validated Host and the path + query, or
        the failure to answer (the same rules as the fast front end)."""
        scheme = scope.get("scheme", "http")
        if scheme == "ws":
            scheme = "http"
        elif scheme == "wss":
            scheme = "https"
        host: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"host" or name == b":authority":
                if host is not None and value != host:
                    return ProtocolFailure(400, "more than one Host header")
                host = value
        path = scope.get("raw_path") or scope["path"].encode("utf-8")
        if path[:1] != b"/":
            # Absolute form (``GET http://host/path``): the target's authority
            # stands in for Host (RFC 9112 section 3.2.2), routed by its path.
            lower = path[:8].lower()
            if lower.startswith(b"http://") or lower.startswith(b"https://"):
                rest = path.split(b"://", 1)[1]
                cut = rest.find(b"/")
                host, path = (rest, b"/") if cut < 0 else (rest[:cut], rest[cut:])
            else:
                return ProtocolFailure(400, "unsupported request target")
        if host and host.translate(None, HOST_CHARS):
            return ProtocolFailure(400, "bad Host header")
        if not host:
            if scope.get("server"):
                server_host, server_port = scope["server"][:2]
                host = f"{server_host}:{server_port}".encode("latin-1")
            else:
                host = b"localhost"
        query = scope.get("query_string", b"")
        url: bytes = scheme.encode("ascii") + b"://" + host + path
        if query:
            url += b"?" + query
        return url.decode("latin-1")

    async def _call(self, request: Request) -> Response | None:
        self.requests_total += 1
        self.in_flight += 1
        try:
            response = await self.handler(request)
        except Exception:
            self.handler_errors += 1
            log.exception("handler failed for %s %s", request.method, request.url)
            return None
        finally:
            self.in_flight -= 1
        if not isinstance(response, Response):
            self.handler_errors += 1
            log.error("handler returned %r, not a Response, for %s", type(response).__name__, request.url)
            return None
        return response

    @staticmethod
    def _headers(response: Response, http2: bool) -> list[tuple[bytes, bytes]]:
        out = []
        for name, value in response.headers.items():
            if name in _ASGI_MANAGED or (http2 and name == "connection"):
                continue
            try:
                out.append((name.encode("latin-1"), value.encode("latin-1")))
            except UnicodeEncodeError:
                out.append((name.encode("latin-1"), value.encode("utf-8")))
        return out

    async def _simple(self, send: Any, status: int, text: str, *, close: bool = False,
                      retry_after: bool = False) -> None:
        body = text.encode("utf-8") + b"\n"
        headers = [(b"content-type", b"text/plain; charset=utf-8"),
                   (b"content-length", str(len(body)).encode("ascii"))]
        if close:
            headers.append((b"connection", b"close"))
        if retry_after:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- HTTP --------------------------------------------------------------

    async def _http(self, scope: ASGIScope, receive: Any, send: Any) -> None:
        if scope.get("http_version", "1.1") in ("1.0", "1.1") and smuggling(scope["headers"]):
            # Answered without reading the body, and the connection closed:
            # whatever follows in it is never taken for a request. (Reached
            # only when _hypercorn_shim.enable_strict_http1 could not install
            # its check, which runs before the app without hypercorn's close race.)
            self.protocol_errors += 1
            await self._simple(send, 400, "Content-Length with Transfer-Encoding", close=True)
            return
        url = self._url(scope)
        if isinstance(url, ProtocolFailure):
            self.protocol_errors += 1
            await self._simple(send, url.status, url.reason, close=True)
            return
        limit = self.limits.max_request_body
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    # Before reading it (no 100 Continue is sent either).
                    self.protocol_errors += 1
                    await self._simple(send, 413, "request body too large")
                    return
        budget = self.body_budget
        held = 0
        try:
            parts = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                if chunk:
                    n = len(chunk)
                    size += n
                    if size > limit:
                        self.protocol_errors += 1
                        await self._simple(send, 413, "request body too large")
                        return
                    held += n
                    if not budget.charge(n):
                        self.protocol_errors += 1
                        await self._simple(send, 503, "server busy: too many request bodies in memory",
                                           close=True, retry_after=True)
                        return
                    parts.append(chunk)
                if not message.get("more_body", False):
                    break
            request = trusted_request(url, scope["method"], headers_from_raw(scope["headers"]), b"".join(parts))
            del parts
            await self._answer(scope, send, request)
        finally:
            budget.release(held)

    async def _answer(self, scope: ASGIScope, send: Any, request: Request) -> None:
        response = await self._call(request)
        if response is None:
            await self._simple(send, 500, "internal server error")
            return
        if response.status < 200:
            self.handler_errors += 1
            log.error("handler answered %d to %s (101 only answers a WebSocket upgrade; "
                      "other 1xx are not final)", response.status, request.url)
            await self._simple(send, 500, "internal server error")
            return
        headers = self._headers(response, scope.get("http_version") == "2")
        body = response.body
        if response.status >= 200 and response.status not in (204, 304):
            headers.append((b"content-length", str(len(body)).encode("ascii")))
        else:
            body = b""
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- WebSocket ---------------------------------------------------------

    async def _websocket(self, scope: ASGIScope, receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        url = self._url(scope)
        if isinstance(url, ProtocolFailure):
            self.protocol_errors += 1
            await send({"type": "websocket.http.response.start", "status": url.status,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "websocket.http.response.body", "body": url.reason.encode("utf-8") + b"\n"})
            return
        request = trusted_request(url, "GET", headers_from_raw(scope["headers"]), b"", ws_upgrade=True)
        response = await self._call(request)
        if response is None or response.status != 101 or response.web_socket is None:
            if response is None or response.status == 101:
                status, body = 500, b"internal server error\n"
                headers = [(b"content-type", b"text/plain; charset=utf-8")]
            else:
                status, headers, body = response.status, self._headers(response, False), response.body
            # ASGI's websocket.http.response extension: a plain HTTP answer.
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
            return
        subprotocol = response.headers.get("sec-websocket-protocol")
        if subprotocol is not None and subprotocol not in scope.get("subprotocols", []):
            log.warning("handler chose WebSocket subprotocol %r the client did not offer; not sent", subprotocol)
            subprotocol = None
        extra = [
            (n.encode("latin-1"), v.encode("latin-1"))
            for n, v in response.headers.items()
            if n not in HANDSHAKE_MANAGED
        ]
        await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": extra})
        transport = _ASGITransport(self.limits.ws_send_buffer)
        endpoint = attach_transport(response.web_socket, transport)
        self.live.add(transport)
        self.ws_total += 1
        if self.draining:
            transport._send_close(1001, "server shutting down")
        notified = False
        # What the endpoint hears if we give up on a peer that never answers our close.
        code, reason, clean, error = 1006, "", False, None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(transport.sender, send, self.limits.ws_close_timeout, nursery.cancel_scope)
                code, reason, clean, error = await self._ws_read(receive, endpoint, transport)
                transport._gone = True
                nursery.cancel_scope.cancel()
            notified = True
            if error is not None:
                self.protocol_errors += 1
                try:
                    await endpoint.on_error(WebSocketProtocolError(code, error))
                finally:
                    await endpoint.on_close(code, reason, False)
            else:
                await endpoint.on_close(code, reason, clean)
        finally:
            transport._gone = True
            self.live.discard(transport)
            if not notified:
                with trio.CancelScope(shield=True) as cs:
                    cs.deadline = trio.current_time() + 1.0
                    try:
                        await endpoint.on_close(1006, "", False)
                    except Exception:
                        log.exception("WebSocket endpoint on_close failed")

    async def _ws_read(
        self, receive: Any, endpoint: Any, transport: _ASGITransport
    ) -> tuple[int, str, bool, str | None]:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                if transport._closing:
                    continue
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                try:
                    await endpoint.on_message(data)
                except Exception:
                    log.exception("WebSocket endpoint on_message failed")
                    transport._send_close(1011, "internal error")
            elif kind == "websocket.disconnect":
                code = int(message.get("code", 1005))
                reason = message.get("reason") or ""
                clean = bool(message.get("dotrio.clean", code != 1006))
                return code, reason, clean, message.get("dotrio.error")


def asgi_app(handler: Handler, limits: ServerLimits | None = None) -> ASGIApp:
    """Wrap ``handler`` as an ASGI 3 application (HTTP, WebSocket, lifespan).

    Under a hypercorn you run yourself, client close codes arrive as
    hypercorn reports them (1000/1006); ``serve_hypercorn`` gets exact ones.
    """
    return ASGIApp(handler, limits)


class _HypercornBackend:
    def __init__(self, app: ASGIApp, control: ServerControl) -> None:
        self.app = app
        self.control = control
        self.stopping = False

    def begin_shutdown(self) -> None:
        self.app.begin_shutdown()

    def statistics(self) -> ServerStatistics:
        app = self.app
        return ServerStatistics(
            front_end="hypercorn",
            addresses=self.control.addresses,
            accepting=not app.draining,
            shutting_down=app.draining,
            open_connections=-1,  # hypercorn does not expose it
            connections_total=-1,
            requests_total=app.requests_total,
            requests_in_flight=app.in_flight,
            open_websockets=len(app.live),
            websockets_total=app.ws_total,
            handler_errors=app.handler_errors,
            protocol_errors=app.protocol_errors,
        )

    def connections(self) -> list[ConnectionStatistics]:
        return []


async def serve_hypercorn(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    limits: ServerLimits | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    control: ServerControl | None = None,
    task_status: trio.TaskStatus[ServerControl] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` with hypercorn's trio worker: HTTP/1.1, HTTP/2 (h2c,
    and h2 over TLS when ``certfile``/``keyfile`` are given), WebSocket.

    Same contract as ``serve_fast``: ``nursery.start`` returns a ``ServerControl``.
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    limits = limits if limits is not None else ServerLimits()
    control = control if control is not None else ServerControl()
    app = ASGIApp(handler, limits)
    config = Config()
    enable_close_codes(config)
    enable_strict_http1(config)
    bind_host = f"[{host}]" if ":" in host else host
    config.bind = [f"{bind_host}:{port}"]
    if certfile is not None:
        config.certfile = certfile
        config.keyfile = keyfile
    config.backlog = limits.backlog
    config.h11_max_incomplete_size = limits.max_header_bytes
    config.websocket_max_message_size = limits.ws_max_message_size
    config.keep_alive_timeout = limits.keep_alive_timeout
    config.graceful_timeout = limits.shutdown_grace
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = logging.getLogger("dotrio.server.hypercorn")

    async def shutdown_trigger() -> None:
        await control.wait_shutdown_requested()
        if control.grace is not None:
            config.graceful_timeout = control.grace

    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown_trigger))  # type: ignore[arg-type]
            addresses = []
            for bind in binds:
                hostport = bind.split("://", 1)[1]
                h, _, p = hostport.rpartition(":")
                addresses.append((h.strip("[]"), int(p)))
            bind_control(control, _HypercornBackend(app, control), addresses)
            task_status.started(control)
    finally:
        mark_stopped(control)

