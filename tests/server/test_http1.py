"""HTTP/1.1 through both front ends (fast, hypercorn), real sockets, real clients."""

from __future__ import annotations

import httpx
import orjson
import pytest
import trio
import trio.testing

from .conftest import App, H11Reader, connect, read_until_eof, start_server


async def test_get_post_head_over_httpx(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    async with httpx.AsyncClient(base_url=control.url) as client:
        r = await client.get("/hi?x=1&y=%20")
        assert r.status_code == 200
        assert r.text == f"hello GET {control.url}/hi?x=1&y=%20"
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.headers["content-length"] == str(len(r.content))
        assert "date" in r.headers

        r = await client.post("/echo", content=b"payload \xff", headers={"X-Thing": "v"})
        seen = r.json()
        assert seen["method"] == "POST"
        assert seen["url"] == f"{control.url}/echo"
        assert seen["body"] == "payload \xff"
        assert ["x-thing", "v"] in seen["headers"]
        assert seen["ws"] is None

        r = await client.head("/hi")
        assert r.status_code == 200
        assert r.content == b""
        # HEAD answers with the length the GET body would have.
        assert r.headers["content-length"] == str(len(f"hello HEAD {control.url}/hi"))


async def test_keep_alive_and_pipelining_answered_in_order(nursery: trio.Nursery, kind: str) -> None:
    control = await start_server(nursery, App(), kind)
    stream = await connect(control)
    reader = H11Reader(stream)
    # Three requests in one write, the middle one HEAD: answers come in order,
    # and h11 (told which was HEAD) must parse each one exactly.
    await stream.send_all(
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
        b"HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz"
    )
    first = await reader.read("GET")
    assert first.body == b"hello GET http://h/a"
    second = await reader.read("HEAD")
    assert second.status == 200 and second.body == b""
    assert second.header("content-length") == str(len(b"hello HEAD http://h/b"))
    third = await reader.read("POST")
    assert orjson.loads(third.body)["body"] == "xyz"
    # Still open: a fourth request on the same connection.
    await stream.send_all(b"GET /d HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (await reader.read()).body == b"hello GET http://h/d"
    await stream.aclose()


async def test_chunked_request_body(nursery: trio.Nursery, kind: str) -> None:
    control = await start_server(nursery, App(), kind)
    stream = await connect(control)
    reader = H11Reader(stream)
    await stream.send_all(
        b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n"
    )
    await trio.sleep(0.01)
    await stream.send_all(b"6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    reply = await reader.read("POST")
    assert reply.status == 200
    assert orjson.loads(reply.body)["body"] == "hello world"
    await stream.aclose()


async def test_expect_100_continue(nursery: trio.Nursery, kind: str) -> None:
    control = await start_server(nursery, App(), kind)
    stream = await connect(control)
    await stream.send_all(
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    with trio.fail_after(5):
        got = b""
        while b"\r\n\r\n" not in got:
            got += await stream.receive_some(1024)
    assert got.startswith(b"HTTP/1.1 100 ")
    await stream.send_all(b"body")
    reader = H11Reader(stream)
    rest = got.split(b"\r\n\r\n", 1)[1]
    if rest:  # (h11 takes b"" as end of file)
        reader.conn.receive_data(rest)
    reply = await reader.read("POST")
    assert orjson.loads(reply.body)["body"] == "body"
    await stream.aclose()


async def test_body_over_limit_is_413_before_the_body(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind, max_request_body=1000)
    # Declared too large, with 100-continue: answered at once, no 100 sent.
    stream = await connect(control)
    await stream.send_all(
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
    )
    reader = H11Reader(stream)
    reply = await reader.read("POST")
    assert reply.status == 413
    if kind == "fast":
        # hypercorn sends 100 Continue as soon as it sees the headers, before
        # the app can look at them; the fast front end does not.
        assert reader.informational == []
    await stream.aclose()
    # Chunked, growing past the limit.
    stream = await connect(control)
    await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    await stream.send_all(b"400\r\n" + b"a" * 0x400 + b"\r\n")
    reply = await H11Reader(stream).read("POST")
    assert reply.status == 413
    await stream.aclose()
    assert app.requests == []
    # At the limit is fine, and over httpx a too-large body still gets its 413.
    async with httpx.AsyncClient(base_url=control.url) as client:
        assert (await client.post("/echo", content=b"a" * 1000)).status_code == 200
        assert (await client.post("/echo", content=b"a" * 200_000)).status_code == 413


async def test_http10_and_connection_close(nursery: trio.Nursery, kind: str) -> None:
    control = await start_server(nursery, App(), kind)
    # HTTP/1.0 without Host: answered, then closed.
    stream = await connect(control)
    await stream.send_all(b"GET /old HTTP/1.0\r\n\r\n")
    raw = await read_until_eof(stream)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.endswith(b"/old")
    # Connection: close from the client.
    stream = await connect(control)
    reader = H11Reader(stream)
    await stream.send_all(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    reply = await reader.read()
    assert reply.status == 200
    assert reply.header("connection") == "close"
    assert await reader.at_eof()
    # Connection: close from the handler.
    stream = await connect(control)
    reader = H11Reader(stream)
    await stream.send_all(b"GET /close HTTP/1.1\r\nHost: h\r\n\r\n")
    reply = await reader.read()
    assert reply.body == b"bye"
    assert "close" in (reply.header("connection") or "")
    assert await reader.at_eof()


async def test_http10_keep_alive_on_fast(nursery: trio.Nursery) -> None:
    control = await start_server(nursery, App(), "fast")
    stream = await connect(control)
    await stream.send_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    got = b""
    with trio.fail_after(5):
        while not got.endswith(b"/a"):
            got += await stream.receive_some(4096)
    assert b"connection: keep-alive\r\n" in got
    await stream.send_all(b"GET /b HTTP/1.0\r\n\r\n")
    raw = await read_until_eof(stream)
    assert raw.endswith(b"/b") and b"connection: close\r\n" in raw


async def test_handler_error_is_500_and_connection_survives(
    nursery: trio.Nursery, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    control = await start_server(nursery, App(), kind)
    stream = await connect(control)
    reader = H11Reader(stream)
    await stream.send_all(b"GET /boom HTTP/1.1\r\nHost: h\r\n\r\nGET /ws101 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (await reader.read()).status == 500
    # A 101 for a request that is not an upgrade is a handler bug: 500 too.
    assert (await reader.read()).status == 500
    await stream.send_all(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (await reader.read()).body == b"hello GET http://h/ok"
    await stream.aclose()
    failures = [r for r in caplog.records if r.name == "dotrio.server"]
    assert any("boom" in (r.exc_text or "") for r in failures)
    assert control.statistics().handler_errors == 2


@pytest.mark.parametrize("status", [200, 201, 204, 304, 404, 418, 503, 599])
async def test_responses_are_well_formed_for_h11(nursery: trio.Nursery, kind: str, status: int) -> None:
    control = await start_server(nursery, App(), kind)
    stream = await connect(control)
    reader = H11Reader(stream)
    for method in ("GET", "HEAD"):
        await stream.send_all(f"{method} /status?code={status} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        reply = await reader.read(method)
        assert reply.status == status
        assert reply.header("x-a") == "1"
        assert [v for n, v in reply.headers if n == b"set-cookie"] == [b"a=1", b"b=2"]
        if status in (204, 304):
            assert reply.header("content-length") in (None, "0")
            assert reply.body == b""
        else:
            assert reply.header("content-length") == str(len(b"status body"))
            assert reply.body == (b"" if method == "HEAD" else b"status body")
    await stream.aclose()


_MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",  # would forge the URL
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
]
# hypercorn (h11) waits forever on an unknown HTTP version and takes any Host.
_HYPERCORN_DIFFERS = {_MALFORMED[1], _MALFORMED[5]}


@pytest.mark.parametrize(
    ("kind", "raw"),
    [(k, raw) for raw in _MALFORMED for k in ("fast", "hypercorn") if k == "fast" or raw not in _HYPERCORN_DIFFERS],
)
async def test_malformed_requests_get_400_and_the_server_goes_on(nursery: trio.Nursery, kind: str, raw: bytes) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    stream = await connect(control)
    await stream.send_all(raw)
    answer = await read_until_eof(stream)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert app.requests == []
    async with httpx.AsyncClient(base_url=control.url) as client:
        assert (await client.get("/after")).status_code == 200


async def test_malformed_reason_is_short_and_says_what(nursery: trio.Nursery) -> None:
    control = await start_server(nursery, App(), "fast")
    stream = await connect(control)
    await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
    answer = await read_until_eof(stream)
    head, body = answer.split(b"\r\n\r\n", 1)
    assert body == b"missing Host header\n"
    assert b"connection: close" in head
    assert control.statistics().protocol_errors == 1


async def test_truncated_chunked_body(nursery: trio.Nursery, kind: str) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    stream = await connect(control)
    await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly-part")
    await stream.send_eof()
    answer = await read_until_eof(stream)
    # The fast front end says why; hypercorn just closes. Neither calls the handler.
    if kind == "fast":
        assert answer.startswith(b"HTTP/1.1 400 ") and answer.endswith(b"incomplete request\n")
    assert app.requests == []
    async with httpx.AsyncClient(base_url=control.url) as client:
        assert (await client.get("/after")).status_code == 200


async def test_header_limits_on_fast(nursery: trio.Nursery) -> None:
    control = await start_server(nursery, App(), "fast", max_header_bytes=2048, max_header_count=20)
    cases = [
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(25)) + b"\r\n", 431),
        (b"GET /" + b"p" * 3000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    ]
    for raw, status in cases:
        stream = await connect(control)
        await stream.send_all(raw)
        answer = await read_until_eof(stream)
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:60]
    # One endless header line, sent in pieces, is cut off too (bounded memory):
    # the 431 comes while the line is still unfinished.
    stream = await connect(control)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: h\r\nX-Endless: ")
    for _ in range(6):
        await stream.send_all(b"a" * 16384)
    reply = await H11Reader(stream).read()
    assert reply.status == 431


async def test_non_websocket_upgrade_is_plain_http_on_fast(nursery: trio.Nursery) -> None:
    app = App()
    control = await start_server(nursery, app, "fast")
    stream = await connect(control)
    reader = H11Reader(stream)
    await stream.send_all(
        b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert (await reader.read()).body == b"hello GET http://h/a"
    assert (await reader.read()).body == b"hello GET http://h/b"
    await stream.aclose()


async def test_statistics_on_fast(nursery: trio.Nursery) -> None:
    control = await start_server(nursery, App(), "fast")
    stream = await connect(control)
    reader = H11Reader(stream)
    for _ in range(3):
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await reader.read()
    await trio.testing.wait_all_tasks_blocked()  # the server is past its send
    stats = control.statistics()
    assert stats.front_end == "fast"
    assert stats.connections_total == 1 and stats.open_connections == 1
    assert stats.requests_total == 3 and stats.requests_in_flight == 0
    assert stats.addresses == [("127.0.0.1", control.port)]
    (conn,) = control.connections()
    assert conn.requests == 3 and conn.state == "idle" and not conn.websocket
    assert conn.bytes_received == 3 * len(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert conn.bytes_sent > 3 * len(b"hello GET http://h/")
    await stream.aclose()


# -- time: slowloris, keep-alive, back-pressure, shutdown (virtual clock) -----


async def test_slowloris_gets_408_then_close(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    app = App()
    control = await start_server(nursery, app, "fast", header_timeout=10.0)
    stream = await connect(control)
    start = trio.current_time()
    # A byte every 2 s keeps the connection busy but never finishes the headers.
    async with trio.open_nursery() as inner:
        async def drip() -> None:
            for ch in b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa":
                await trio.sleep(2)
                try:
                    await stream.send_all(bytes([ch]))
                except trio.BrokenResourceError:
                    return
        inner.start_soon(drip)
        answer = await read_until_eof(stream, deadline=60)
        inner.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 10.0 <= trio.current_time() - start <= 14.0
    assert app.requests == []


async def test_keep_alive_idle_timeout(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    control = await start_server(nursery, App(), "fast", keep_alive_timeout=30.0)
    stream = await connect(control)
    reader = H11Reader(stream)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await reader.read()
    done = trio.current_time()
    assert await reader.at_eof(deadline=60)
    assert 30.0 <= trio.current_time() - done <= 32.0
    assert control.statistics().open_connections == 0


async def test_slow_body_gets_408(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    control = await start_server(nursery, App(), "fast", body_timeout=5.0)
    stream = await connect(control)
    await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab")
    answer = await read_until_eof(stream, deadline=60)
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_max_connections_is_back_pressure(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    control = await start_server(nursery, App(), "fast", max_connections=2)
    first, second = await connect(control), await connect(control)
    for stream in (first, second):
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await H11Reader(stream).read()
    # The third connects (into the health reserve, see test_abuse.py) but is
    # not served...
    third = await connect(control)
    await third.send_all(b"GET /third HTTP/1.1\r\nHost: h\r\n\r\n")
    with trio.move_on_after(20):
        await third.receive_some(1)
        raise AssertionError("served over max_connections")
    assert control.statistics().open_connections == 3
    # ...until a slot frees: then it is, not rejected.
    await first.aclose()
    reply = await H11Reader(third).read()
    assert reply.body == b"hello GET http://h/third"


async def test_graceful_shutdown(nursery: trio.Nursery, kind: str, autojump_clock: trio.testing.MockClock) -> None:
    app = App()
    control = await start_server(nursery, app, kind)
    idle = await connect(control)
    idle_reader = H11Reader(idle)
    await idle.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await idle_reader.read()
    busy = await connect(control)
    await busy.send_all(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
    await app.started.wait()

    control.shutdown(grace=30)
    # Idle keep-alive connections close, no new connections are accepted.
    assert await idle_reader.at_eof(deadline=10)
    await trio.sleep(1)
    with pytest.raises(OSError):
        await connect(control)
    # The in-flight request still finishes, and closes its connection.
    await trio.sleep(5)
    app.release.set()
    busy_reader = H11Reader(busy)
    reply = await busy_reader.read()
    assert reply.body == b"slow done"
    assert await busy_reader.at_eof()
    with trio.fail_after(40):
        await control.wait_stopped()


async def test_shutdown_grace_cancels_stuck_requests(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    app = App()
    control = await start_server(nursery, app, "fast")
    busy = await connect(control)
    await busy.send_all(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
    await app.started.wait()
    start = trio.current_time()
    control.shutdown(grace=3)
    await control.wait_stopped()
    assert 3.0 <= trio.current_time() - start < 4.0
    assert await read_until_eof(busy) == b""
    stats = control.statistics()
    assert stats.shutting_down and not stats.accepting and stats.open_connections == 0
