"""WebSocket through both front ends: trio-websocket as the client, and raw
wsproto / raw bytes for what a polite client never sends."""

from __future__ import annotations

import os
import struct

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.events import (
    Request as WSRequest,
)
from wsproto.frame_protocol import CloseReason

from .conftest import App, EchoClient, connect, read_until_eof, start_server


def ws_url(control: object, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{control.port}{path}"  # type: ignore[attr-defined]


class RawWS:
    """A WebSocket client on wsproto over a raw socket, for fragments and bad frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[object] = []

    @classmethod
    async def open(cls, control: object, path: str = "/ws") -> RawWS:
        raw = cls(await connect(control))  # type: ignore[arg-type]
        await raw.send(WSRequest(host="h", target=path))
        event = await raw.next_event()
        assert isinstance(event, AcceptConnection), event
        return raw

    async def send(self, event: object) -> None:
        await self.stream.send_all(self.ws.send(event))  # type: ignore[arg-type]

    async def next_event(self, deadline: float = 10.0) -> object:
        with trio.fail_after(deadline):
            while not self.pending:
                self.pending.extend(self.ws.events())
                if self.pending:
                    break
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                self.ws.receive_data(data or None)
            return self.pending.pop(0)

    async def close_event(self) -> CloseConnection:
        while True:
            event = await self.next_event()
            if isinstance(event, CloseConnection):
                return event


def masked_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One client frame built by hand (wsproto would refuse to build bad ones)."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def wait_closed(client: EchoClient) -> tuple[int, str, bool]:
    with trio.fail_after(10):
        await client.closed.wait()
    assert len(client.closes) == 1, client.closes
    return client.closes[0]


async def test_echo_text_bytes_and_subprotocol(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    async with open_websocket_url(ws_url(control, "/ws/proto?room=1"), subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        await ws.send_message("héllo")
        assert await ws.get_message() == "héllo"
        await ws.send_message(b"\x00\x01bin")
        assert await ws.get_message() == b"\x00\x01bin"
    (request,) = app.requests
    assert request._ws_upgrade is True
    assert request.url == f"http://127.0.0.1:{control.port}/ws/proto?room=1"
    client = app.sockets[0]
    assert client.messages == ["héllo", b"\x00\x01bin"]
    assert await wait_closed(client) == (1000, "", True)


async def test_fragmented_messages_are_reassembled(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    raw = await RawWS.open(control)
    await raw.send(TextMessage(data="hel", message_finished=False))
    # A ping between fragments is answered and does not split the message.
    await raw.send(Ping(payload=b"p1"))
    await raw.send(TextMessage(data="lo wörld", message_finished=True))
    await raw.send(BytesMessage(data=b"ab", message_finished=False))
    await raw.send(BytesMessage(data=b"cd", message_finished=False))
    await raw.send(BytesMessage(data=b"ef", message_finished=True))
    seen: list[object] = []
    while len(seen) < 3:
        event = await raw.next_event()
        if isinstance(event, Pong):
            seen.append(("pong", bytes(event.payload)))
        elif isinstance(event, (TextMessage, BytesMessage)):
            assert event.message_finished
            seen.append(event.data)
    assert ("pong", b"p1") in seen
    assert [m for m in seen if not isinstance(m, tuple)] == ["hello wörld", b"abcdef"]
    assert app.sockets[0].messages == ["hello wörld", b"abcdef"]


async def test_ping_is_answered(nursery: trio.Nursery, kind: str) -> None:
    control = await start_server(nursery, App(), kind)
    async with open_websocket_url(ws_url(control)) as ws:
        with trio.fail_after(5):
            await ws.ping(b"are you there")
        await ws.send_message("still open")
        assert await ws.get_message() == "still open"


async def test_client_close_code_and_reason_reach_the_endpoint(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    async with open_websocket_url(ws_url(control)) as ws:
        await ws.send_message("x")
        await ws.get_message()
        await ws.aclose(code=4321, reason="bye now ✓")
    assert await wait_closed(app.sockets[0]) == (4321, "bye now ✓", True)
    assert app.sockets[0].errors == []


async def test_close_frame_without_code_is_1005(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    raw = await RawWS.open(control)
    await raw.send(CloseConnection(code=CloseReason.NO_STATUS_RCVD))
    reply = await raw.close_event()
    assert reply.code == CloseReason.NO_STATUS_RCVD
    assert await wait_closed(app.sockets[0]) == (1005, "", True)


async def test_server_side_close(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    async with open_websocket_url(ws_url(control)) as ws:
        await ws.send_message("close:4001:done here")
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
        assert (info.value.reason.code, info.value.reason.reason) == (4001, "done here")
    client = app.sockets[0]
    # The endpoint hears the peer's answer to its close (trio-websocket echoes it).
    assert await wait_closed(client) == (4001, "done here", True)
    assert client.transport.closed
    # Bad close arguments are refused before anything is sent.
    with pytest.raises(ValueError):
        client.transport.close(1005)
    with pytest.raises(ValueError):
        client.transport.close(1000, "x" * 124)


async def test_peer_that_never_answers_our_close_is_dropped(
    nursery: trio.Nursery, kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    app = App()
    control = await start_server(nursery, app, kind, ws_close_timeout=5.0)
    raw = await RawWS.open(control)
    await raw.send(TextMessage(data="close:4002:closing"))
    close = await raw.close_event()
    assert (close.code, close.reason) == (4002, "closing")
    start = trio.current_time()
    # We never answer: after ws_close_timeout the server gives up on us.
    assert await wait_closed(app.sockets[0]) == (1006, "", False)
    assert 5.0 <= trio.current_time() - start <= 7.0
    assert await read_until_eof(raw.stream) == b""


async def test_abrupt_disconnect_is_1006(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    raw = await RawWS.open(control)
    await raw.send(TextMessage(data="hi"))
    assert isinstance(await raw.next_event(), TextMessage)
    await raw.stream.aclose()
    assert await wait_closed(app.sockets[0]) == (1006, "", False)


async def test_oversized_message_is_1009(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind, ws_max_message_size=1000)
    async with open_websocket_url(ws_url(control)) as ws:
        await ws.send_message("a" * 1000)
        assert await ws.get_message() == "a" * 1000
        await ws.send_message(b"b" * 1001)
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason.code == 1009
    client = app.sockets[0]
    code, _, clean = await wait_closed(client)
    assert (code, clean) == (1009, False)
    assert [getattr(e, "code", None) for e in client.errors] == [1009]
    assert client.messages == ["a" * 1000]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x81\x02hi", 1002),  # unmasked client frame
        (masked_frame(0x3, b"x"), 1002),  # reserved opcode
        (masked_frame(0x1, b"\xff\xfe"), 1007),  # text that is not UTF-8
        (masked_frame(0x0, b"orphan"), 1002),  # continuation with nothing to continue
    ],
    ids=["unmasked", "reserved-opcode", "bad-utf8", "orphan-continuation"],
)
async def test_bad_frames_get_the_rfc_close_code(nursery: trio.Nursery, kind: str, frame: bytes, code: int) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    async with open_websocket_url(ws_url(control)) as bystander:
        raw = await RawWS.open(control)
        await raw.stream.send_all(frame)
        close = await raw.close_event()
        assert close.code == code
        client = app.sockets[1]
        got, _, clean = await wait_closed(client)
        assert (got, clean) == (code, False)
        assert [getattr(e, "code", None) for e in client.errors] == [code]
        # The server goes on serving the others.
        await bystander.send_message("still here")
        assert await bystander.get_message() == "still here"


async def test_send_buffer_overflow_closes_with_1008(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind, ws_send_buffer=64 * 1024)
    async with open_websocket_url(ws_url(control)) as ws:
        # The endpoint queues 64 x 4 KiB at once (send_message never waits).
        await ws.send_message("flood:4096")
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await ws.get_message()
        assert (info.value.reason.code, info.value.reason.reason) == (1008, "send buffer full")


async def test_upgrade_declined_by_handler(nursery: trio.Nursery, kind: str) -> None:
    control = await start_server(nursery, App(), kind)
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(ws_url(control, "/ws/deny")):
            pass
    assert info.value.status_code == 403
    assert info.value.body == b"go away"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([("Sec-WebSocket-Version", "13")], 400),  # no key
        ([("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "c2hvcnQ=")], 400),  # key not 16 bytes
        ([("Sec-WebSocket-Version", "8"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")], 426),
    ],
    ids=["no-key", "short-key", "version-8"],
)
async def test_invalid_upgrade_attempts_skip_the_handler(
    nursery: trio.Nursery, kind: str, headers: list[tuple[str, str]], status: int
) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    stream = await connect(control)
    head = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    head += "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    await stream.send_all(head.encode())
    answer = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in answer:
            answer += await stream.receive_some(65536)
    if kind == "hypercorn" and status == 426:
        status = 400  # hypercorn does not say which version it wants
    if kind == "hypercorn" and "c2hvcnQ=" in head:
        # hypercorn does not check the key's length; it accepts the handshake.
        assert answer.startswith(b"HTTP/1.1 101 ")
        return
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:80]
    if status == 426:
        assert b"sec-websocket-version: 13\r\n" in answer.lower()
    assert app.requests == []


async def test_upgrade_with_post_is_refused_on_fast(nursery: trio.Nursery) -> None:
    app = App()
    control = await start_server(nursery, app, "fast")
    stream = await connect(control)
    await stream.send_all(
        b"POST /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 0\r\n\r\n"
    )
    assert (await read_until_eof(stream)).startswith(b"HTTP/1.1 400 ")
    assert app.requests == []


async def test_frames_in_the_same_packet_as_the_handshake(nursery: trio.Nursery) -> None:
    # The bytes after the upgrade request belong to the WebSocket, not to HTTP.
    app = App()
    control = await start_server(nursery, app, "fast")
    stream = await connect(control)
    client = WSConnection(ConnectionType.CLIENT)
    data = client.send(WSRequest(host="h", target="/ws")) + masked_frame(0x1, b"early")
    await stream.send_all(data)
    got: list[object] = []
    with trio.fail_after(5):
        while not any(isinstance(e, TextMessage) for e in got):
            client.receive_data(await stream.receive_some(65536))
            got.extend(client.events())
    assert isinstance(got[0], AcceptConnection)
    assert [e.data for e in got if isinstance(e, TextMessage)] == ["early"]


async def test_shutdown_closes_websockets_with_1001(
    nursery: trio.Nursery, kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    async with open_websocket_url(ws_url(control)) as ws:
        await ws.send_message("x")
        await ws.get_message()
        control.shutdown(grace=10)
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason.code == 1001
    assert (await wait_closed(app.sockets[0]))[0] == 1001
    with trio.fail_after(30):
        await control.wait_stopped()


async def test_statistics_count_websockets_on_fast(nursery: trio.Nursery) -> None:
    app = App()
    control = await start_server(nursery, app, "fast")
    async with open_websocket_url(ws_url(control)) as ws:
        await ws.send_message("x")
        await ws.get_message()
        stats = control.statistics()
        assert (stats.open_websockets, stats.websockets_total) == (1, 1)
        (conn,) = control.connections()
        assert conn.websocket and conn.state == "websocket"
    await wait_closed(app.sockets[0])
    await trio.testing.wait_all_tasks_blocked()
    assert control.statistics().open_websockets == 0

