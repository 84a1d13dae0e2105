"""Helpers for the front-end tests: real servers on 127.0.0.1:0 in the test's
nursery, raw sockets, h11 as an independent response parser, and a test
double of the runtime's side of a WebSocket."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from functools import partial
from typing import Any

import h11
import pytest
import trio

from dotrio import Request, Response
from dotrio.server import ServerControl, ServerLimits, serve_fast, serve_hypercorn

KINDS = ["fast", "hypercorn"]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def start_server(nursery: trio.Nursery, handler: Any, kind: str = "fast", **limits: Any) -> ServerControl:
    serve = serve_fast if kind == "fast" else serve_hypercorn
    return await nursery.start(partial(serve, handler, port=0, limits=ServerLimits(**limits)))


# Raw client sockets opened by ``connect``; closed when the test ends, so a test
# that stops reading half-way leaks no socket (warnings are errors in this suite).
_OPEN_STREAMS: list[trio.SocketStream] = []


@pytest.fixture(autouse=True)
def _close_raw_streams() -> Iterator[None]:
    yield
    # A socket leaked in a reference cycle warns when it is garbage-collected:
    # collect now, so the warning fails the test that leaked it (or is ignored
    # under its filter below) rather than whichever test runs next.
    gc.collect()
    while _OPEN_STREAMS:
        # Outside Trio here, so not ``close()`` (it notifies Trio's I/O manager).
        fd = _OPEN_STREAMS.pop().socket.detach()
        if fd != -1:
            os.close(fd)


def track(stream: trio.SocketStream) -> trio.SocketStream:
    """Close ``stream`` when the test ends (if the test has not)."""
    _OPEN_STREAMS.append(stream)
    return stream


async def connect(control: ServerControl) -> trio.SocketStream:
    return track(await trio.open_tcp_stream("127.0.0.1", control.port))


class Reply:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        values = [v.decode("latin-1") for n, v in self.headers if n == key]
        return ", ".join(values) if values else None

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.headers} {self.body[:80]!r}>"


class H11Reader:
    """Reads responses off a raw socket with h11, an independent parser.

    Each ``read(method)`` tells h11 which request the response answers (so a
    HEAD response is parsed without a body) and fails the test if the bytes
    are not a well-formed HTTP/1.1 response.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.informational: list[int] = []

    async def read(self, method: str = "GET", *, deadline: float = 10.0) -> Reply:
        conn = self.conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        if conn.our_state is h11.IDLE:
            conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
            conn.send(h11.EndOfMessage())
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        body = bytearray()
        with trio.fail_after(deadline):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await self.stream.receive_some(65536)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.InformationalResponse):
                    self.informational.append(event.status_code)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    headers = list(event.headers)
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return Reply(status, headers, bytes(body))
                elif isinstance(event, h11.ConnectionClosed):
                    raise AssertionError("connection closed before a response")

    async def at_eof(self, deadline: float = 10.0) -> bool:
        """True if the server closed the connection (after what was read)."""
        with trio.fail_after(deadline):
            try:
                while True:
                    data = await self.stream.receive_some(65536)
                    if not data:
                        return True
                    if self.conn.their_state not in (h11.MUST_CLOSE, h11.CLOSED):
                        return False
            except trio.BrokenResourceError:
                return True


async def read_until_eof(stream: trio.SocketStream, deadline: float = 10.0) -> bytes:
    out = bytearray()
    with trio.fail_after(deadline):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not data:
                break
            out += data
    return bytes(out)


class EchoClient:
    """Test double of the runtime's client WebSocket (``dotrio._websocket``).

    ``_attach`` takes the front end's transport and returns the endpoint (itself).
    It echoes messages, and obeys a few commands sent as text.
    """

    def __init__(self, flood: int = 0) -> None:
        self.transport: Any = None
        self.messages: list[str | bytes] = []
        self.closes: list[tuple[int, str, bool]] = []
        self.errors: list[BaseException] = []
        self.closed = trio.Event()
        self.attached = trio.Event()

    def _attach(self, transport: Any) -> EchoClient:
        self.transport = transport
        self.attached.set()
        return self

    async def on_message(self, data: str | bytes) -> None:
        self.messages.append(data)
        if isinstance(data, str) and data.startswith("close:"):
            _, code, reason = data.split(":", 2)
            self.transport.close(int(code), reason)
        elif isinstance(data, str) and data.startswith("flood:"):
            size = int(data.split(":", 1)[1])
            for _ in range(64):
                self.transport.send_message(b"x" * size)
        else:
            self.transport.send_message(data)

    async def on_close(self, code: int, reason: str, was_clean: bool) -> None:
        self.closes.append((code, reason, was_clean))
        self.closed.set()

    async def on_error(self, exc: BaseException) -> None:
        self.errors.append(exc)


class App:
    """The handler the tests serve: a few routes, and a record of what it saw."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.sockets: list[EchoClient] = []
        self.release = trio.Event()
        self.started = trio.Event()

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        path = request.path
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/echo":
            return Response.json({
                "method": request.method,
                "url": request.url,
                "body": request.body.decode("latin-1"),
                "headers": request.headers.items(),
                "ws": request._ws_upgrade,
            })
        if path == "/status":
            code = int(request.query["code"])
            return Response(b"" if code in (204, 304) else b"status body", status=code,
                            headers=[("x-a", "1"), ("set-cookie", "a=1"), ("set-cookie", "b=2")])
        if path == "/close":
            return Response("bye", headers={"connection": "close"})
        if path == "/slow":
            self.started.set()
            await self.release.wait()
            return Response("slow done")
        if path == "/ws101":
            return Response(status=101, web_socket=EchoClient())  # type: ignore[arg-type]
        if path.startswith("/ws"):
            if not request._ws_upgrade:
                return Response("not an upgrade", status=400)
            if path == "/ws/deny":
                return Response("go away", status=403)
            client = EchoClient()
            self.sockets.append(client)
            headers = {}
            if path == "/ws/proto":
                headers["sec-websocket-protocol"] = "chat.v2"
            return Response(status=101, web_socket=client, headers=headers)  # type: ignore[arg-type]
        return Response(f"hello {request.method} {request.url}")


# Tests where trio-websocket's *client* (0.12) leaks its socket: after a
# server-initiated close (or a rejected handshake) its reader task ends on EOF
# without closing the stream, and ``aclose()`` returns early because the close
# reason is already set. The leaked socket is the client's (its local port is the
# ephemeral one), so the warning is ignored for these cases only (the leaked
# socket is garbage-collected in each test's teardown, see _close_raw_streams).
_TRIO_WEBSOCKET_CLIENT_LEAKS = {  # test functions, every parametrization
    "test_server_side_close",
    "test_oversized_message_is_1009",
    "test_send_buffer_overflow_closes_with_1008",
    "test_upgrade_declined_by_handler",
    "test_shutdown_closes_websockets_with_1001",
    "test_sigterm_closes_websockets_with_1001_and_commits_their_close_handlers",
    "test_dev_reloads_on_code_and_config_changes",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if getattr(item, "originalname", item.name) in _TRIO_WEBSOCKET_CLIENT_LEAKS:
            item.add_marker(pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"))
