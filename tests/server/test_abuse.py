"""Bounded memory and time per connection under abuse (issue 16 items 5-6):
WebSocket ping floods, silent connections, trickled bodies, chunk extensions,
the global body budget, the health reserve, and the hypercorn front end held
to the fast one's strictness. Real sockets; virtual time where it is time."""

from __future__ import annotations

import socket

import trio
import trio.lowlevel
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping
from wsproto.events import Request as WSRequest

from .conftest import App, H11Reader, connect, read_until_eof, start_server, track


async def test_ping_flood_from_a_peer_that_never_reads_is_closed_1008(nursery: trio.Nursery) -> None:
    app = App()
    control = await start_server(nursery, app, "fast", ws_send_buffer=16 * 1024, ws_close_timeout=0.5)
    sock = trio.socket.socket()
    # A small receive window, so the server's kernel buffers fill soon.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", control.port))
    stream = track(trio.SocketStream(sock))
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(WSRequest(host="h", target="/ws")))
    while True:
        ws.receive_data(await stream.receive_some(65536))
        if any(isinstance(e, AcceptConnection) for e in ws.events()):
            break
    ping = ws.send(Ping(payload=b"p" * 125))
    burst = ping * 64
    closing = False
    # Enough pongs to fill every kernel buffer many times over (~30 MB);
    # the server must give up on this peer long before.
    for _ in range(4000):
        try:
            await stream.send_all(burst)
        except trio.BrokenResourceError:
            closing = True
            break
        states = [c.state for c in control.connections()]
        if states != ["websocket"]:
            closing = True
            break
    assert closing, "the server kept queueing pongs for a peer that does not read"
    # Reading now: the pongs that were on their way, then close 1008 (or the
    # connection dropped by the close timeout, if the close frame never fit).
    data = await read_until_eof(stream, deadline=30)
    ws.receive_data(data)
    closes = [e for e in ws.events() if isinstance(e, CloseConnection)]
    if closes:
        assert closes[0].code == 1008
    with trio.fail_after(30):
        while control.statistics().open_connections:
            await trio.sleep(0.05)


async def test_first_request_must_come_within_the_header_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    control = await start_server(nursery, App(), "fast", header_timeout=10.0, keep_alive_timeout=75.0)
    stream = await connect(control)
    start = trio.current_time()
    assert await read_until_eof(stream, deadline=200) == b""
    assert 10.0 <= trio.current_time() - start <= 12.0
    assert control.statistics().open_connections == 0
    # After a request, the idle time allowed is the keep-alive one again.
    stream = await connect(control)
    reader = H11Reader(stream)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await reader.read()
    done = trio.current_time()
    assert await reader.at_eof(deadline=200)
    assert 75.0 <= trio.current_time() - done <= 77.0


# -- the hypercorn front end as strict as the fast one ------------------------


async def test_content_length_with_chunked_is_400_and_close(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    stream = await connect(control)
    # A front proxy going by Content-Length sees one request; a server going by
    # chunked would see a second one hidden in the body (request smuggling).
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    await stream.send_all(
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body)
        + body
    )
    answer = await read_until_eof(stream)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert [r.path for r in app.requests] == []


async def test_bad_host_header_is_400(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    for host in (b"x/COUNTER/other", b"a b", b"h?q", b"h#f", b"h\\x"):
        stream = await connect(control)
        await stream.send_all(b"GET /echo HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        reply = await H11Reader(stream).read()
        assert reply.status == 400, (host, reply)
        assert b"bad Host header" in reply.body
        await stream.aclose()
    assert app.requests == []
    # A valid one still builds the URL from it, with the path and query as sent.
    stream = await connect(control)
    await stream.send_all(b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
    assert (await H11Reader(stream).read()).body == b"hello GET http://example.com:8080/a/b?x=1"
    await stream.aclose()


async def test_absolute_form_target_is_routed_by_its_path(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    stream = await connect(control)
    reader = H11Reader(stream)
    await stream.send_all(b"GET http://example.com/a/b?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    reply = await reader.read()
    assert reply.status == 200
    assert reply.body == b"hello GET http://example.com/a/b?x=1"
    assert app.requests[-1].path == "/a/b"
    # The authority of the target is held to the Host rules too.
    await stream.aclose()
    stream = await connect(control)
    await stream.send_all(b"GET http://x/C/a@evil/b HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = await H11Reader(stream).read()
    assert reply.status == 200 and app.requests[-1].path == "/C/a@evil/b"


# -- bodies: a minimum rate, chunk extensions, a global budget -----------------


async def test_body_trickled_a_byte_at_a_time_is_cut_off_with_408(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    app = App()
    control = await start_server(nursery, app, "fast", body_timeout=5.0, min_body_rate=100)
    stream = await connect(control)
    await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n")
    start = trio.current_time()
    async with trio.open_nursery() as inner:
        async def drip() -> None:
            # Progress every 2 s (under body_timeout), 0.5 byte/s on average.
            for _ in range(1000):
                await trio.sleep(2)
                try:
                    await stream.send_all(b"x")
                except trio.BrokenResourceError:
                    return
        inner.start_soon(drip)
        answer = await read_until_eof(stream, deadline=3000)
        inner.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    # body_timeout plus a second per 100 bytes received, plus the sweep's lag.
    assert 5.0 <= trio.current_time() - start <= 8.0
    assert app.requests == []


async def test_slow_but_steady_body_is_not_cut_off(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    control = await start_server(nursery, App(), "fast", body_timeout=5.0, min_body_rate=100)
    stream = await connect(control)
    await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n")
    for _ in range(20):  # 200 bytes/s for 10 s: over the minimum rate
        await trio.sleep(0.5)
        await stream.send_all(b"y" * 100)
    assert (await H11Reader(stream).read("POST")).status == 200


async def test_endless_chunk_extension_is_refused(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind, max_header_bytes=4096)
    stream = await connect(control)
    await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=")
    refused = False
    with trio.fail_after(30):
        for _ in range(2000):  # up to 16 MB of extension
            try:
                await stream.send_all(b"a" * 8192)
            except trio.BrokenResourceError:
                refused = True
                break
            if control.statistics().protocol_errors:
                refused = True
                break
            await trio.lowlevel.checkpoint()
    assert refused, "an endless chunk extension was read without limit"
    answer = await read_until_eof(stream)
    if answer:  # (the answer may be lost to a reset while we were still sending)
        assert answer[:13] in (b"HTTP/1.1 413 ", b"HTTP/1.1 431 "), answer  # (h11 counts it as a header line)
    assert app.requests == []


async def test_bodies_in_memory_are_capped_server_wide_with_503(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind, max_buffered_bodies=10_000)
    first = await connect(control)
    await first.send_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    await first.send_all(b"1f40\r\n" + b"a" * 8000 + b"\r\n")  # 8000 bytes held, body not finished
    with trio.fail_after(10):
        while True:  # until the server has taken them in
            await trio.sleep(0.01)
            if kind == "hypercorn" or control.connections()[0].bytes_received >= 8000:
                break
    if kind == "hypercorn":
        await trio.sleep(0.2)
    second = await connect(control)
    await second.send_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    await second.send_all(b"bb8\r\n" + b"b" * 3000 + b"\r\n0\r\n\r\n")
    reply = await H11Reader(second).read("POST")
    assert reply.status == 503, reply
    assert reply.header("retry-after") == "1"
    # The first finishes and is served; what it held is given back.
    await first.send_all(b"0\r\n\r\n")
    assert (await H11Reader(first).read("POST")).status == 200
    third = await connect(control)
    await third.send_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 9000\r\n\r\n" + b"c" * 9000)
    assert (await H11Reader(third).read("POST")).status == 200


# -- the health endpoint at max_connections -----------------------------------


async def test_health_answers_when_max_connections_are_taken(nursery: trio.Nursery) -> None:
    from dotrio.server._fast import HEALTH_RESERVE

    app = App()
    control = await start_server(nursery, app, "fast", max_connections=2)
    held = []
    for _ in range(2):  # every slot taken by an idle keep-alive connection
        stream = await connect(control)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await H11Reader(stream).read()
        held.append(stream)
    waiting = []
    for i in range(HEALTH_RESERVE - 1):  # ordinary requests wait for a slot
        stream = await connect(control)
        await stream.send_all(b"GET /waiting%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
        waiting.append(stream)
    with trio.fail_after(10):
        while control.statistics().open_connections < 2 + HEALTH_RESERVE - 1:
            await trio.sleep(0.01)
    # The last reserve slot: health is answered (and the connection closed)...
    for _ in range(3):
        stream = await connect(control)
        await stream.send_all(b"GET /_dotrio/health HTTP/1.1\r\nHost: h\r\n\r\n")
        reader = H11Reader(stream)
        reply = await reader.read()
        assert reply.status == 200 and reply.body.startswith(b"hello GET http://h/_dotrio/health")
        assert await reader.at_eof()
    # ...an ordinary request there gets 503 rather than a wait.
    stream = await connect(control)
    await stream.send_all(b"GET /more HTTP/1.1\r\nHost: h\r\n\r\n")
    reply = await H11Reader(stream).read()
    assert reply.status == 503 and reply.header("retry-after") == "1"
    assert all(r.path != "/more" for r in app.requests)
    # A slot frees: a waiting request is served.
    await held[0].aclose()
    served = 0
    with trio.fail_after(10):
        while served == 0:
            await trio.sleep(0.01)
            served = sum(1 for r in app.requests if r.path.startswith("/waiting"))
    assert served == 1
