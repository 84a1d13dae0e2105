"""What only the hypercorn front end does: HTTP/2 (h2c and over TLS), TLS, and
the ASGI adapter itself."""

from __future__ import annotations

import ssl
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from dotrio import Request, Response
from dotrio.server import ServerLimits, asgi_app, serve_hypercorn

from .conftest import App, start_server


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (openssl CLI)."""
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(keyfile), "-out", str(certfile), "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return certfile, keyfile


async def test_h2c_prior_knowledge(nursery: trio.Nursery) -> None:
    app = App()
    control = await start_server(nursery, app, "hypercorn")
    async with httpx.AsyncClient(base_url=control.url, http1=False, http2=True) as client:
        r = await client.get("/hi?q=1")
        assert r.http_version == "HTTP/2"
        assert r.text == f"hello GET {control.url}/hi?q=1"
        r = await client.post("/echo", content=b"over h2")
        assert r.json()["body"] == "over h2"
        # Several streams at once on the one connection.
        results: list[int] = []
        async with trio.open_nursery() as inner:
            for i in range(5):
                async def one(i: int = i) -> None:
                    results.append((await client.get(f"/n{i}")).status_code)
                inner.start_soon(one)
        assert results == [200] * 5
        # HEAD: no body, the GET length.
        r = await client.head("/hi")
        assert r.content == b"" and int(r.headers["content-length"]) > 0
    stats = control.statistics()
    assert stats.front_end == "hypercorn"
    assert stats.requests_total == 8


async def test_tls_with_http2_and_http11(nursery: trio.Nursery, cert: tuple[Path, Path]) -> None:
    certfile, keyfile = cert
    app = App()
    control = await nursery.start(partial(
        serve_hypercorn, app, port=0, certfile=str(certfile), keyfile=str(keyfile)))
    context = ssl.create_default_context(cafile=str(certfile))
    base = f"https://127.0.0.1:{control.port}"
    async with httpx.AsyncClient(base_url=base, verify=context, http2=True) as client:
        r = await client.get("/secure")
        assert r.http_version == "HTTP/2"  # chosen by ALPN
        assert r.text == f"hello GET {base}/secure"
    async with httpx.AsyncClient(base_url=base, verify=context) as client:
        r = await client.post("/echo", content=b"tls body")
        assert r.http_version == "HTTP/1.1"
        assert r.json() == {
            "method": "POST", "url": f"{base}/echo", "body": "tls body",
            "headers": r.json()["headers"], "ws": None,
        }
    # WebSocket over TLS, with the client's close code and reason delivered.
    async with open_websocket_url(f"wss://127.0.0.1:{control.port}/ws", ssl_context=context) as ws:
        await ws.send_message("secure hello")
        assert await ws.get_message() == "secure hello"
        await ws.aclose(code=4100, reason="tls bye")
    client_side = app.sockets[0]
    with trio.fail_after(10):
        await client_side.closed.wait()
    assert client_side.closes == [(4100, "tls bye", True)]
    assert app.requests[-1].url == f"https://127.0.0.1:{control.port}/ws"


async def test_plain_http_to_tls_port_is_refused(nursery: trio.Nursery, cert: tuple[Path, Path]) -> None:
    certfile, keyfile = cert
    control = await nursery.start(partial(
        serve_hypercorn, App(), port=0, certfile=str(certfile), keyfile=str(keyfile)))
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.TransportError):
            await client.get(f"http://127.0.0.1:{control.port}/", timeout=5)


class _ASGIDriver:
    """Feeds an ASGI app by hand: no server, so each message is checked exactly."""

    def __init__(self, incoming: list[dict[str, Any]]) -> None:
        self.incoming = list(incoming)
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.incoming:
            return self.incoming.pop(0)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def _http_scope(headers: list[tuple[bytes, bytes]], method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": "/echo", "raw_path": b"/echo", "query_string": b"a=b",
        "headers": headers, "server": ("127.0.0.1", 9), "client": ("127.0.0.1", 10),
    }


async def test_asgi_app_by_hand() -> None:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        return Response(request.body[::-1], status=201, headers={"x-out": "1", "connection": "close"})

    app = asgi_app(handler, ServerLimits(max_request_body=10))
    # Lifespan: startup and shutdown are acknowledged.
    driver = _ASGIDriver([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, driver.receive, driver.send)
    assert [m["type"] for m in driver.sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    # A body in two chunks becomes one Request with the full URL.
    driver = _ASGIDriver([
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.request", "body": b"def", "more_body": False},
    ])
    await app(_http_scope([(b"host", b"example.org")]), driver.receive, driver.send)
    (request,) = seen
    assert (request.method, request.url, request.body) == ("POST", "http://example.org/echo?a=b", b"abcdef")
    start, body = driver.sent
    assert start["status"] == 201
    assert (b"x-out", b"1") in start["headers"] and (b"content-length", b"6") in start["headers"]
    assert body["body"] == b"fedcba"

    # Over the body limit, in chunks or declared: 413, the handler not called.
    for incoming, headers in (
        ([{"type": "http.request", "body": b"x" * 8, "more_body": True},
          {"type": "http.request", "body": b"x" * 8, "more_body": False}], [(b"host", b"h")]),
        ([], [(b"host", b"h"), (b"content-length", b"11")]),
    ):
        driver = _ASGIDriver(incoming)
        await app(_http_scope(headers), driver.receive, driver.send)
        assert driver.sent[0]["status"] == 413
    assert len(seen) == 1

    # HTTP/2 forbids connection-specific headers: the handler's is dropped.
    driver = _ASGIDriver([{"type": "http.request", "body": b"", "more_body": False}])
    scope = _http_scope([(b"host", b"h")], method="GET") | {"http_version": "2"}
    await app(scope, driver.receive, driver.send)
    assert all(name != b"connection" for name, _ in driver.sent[0]["headers"])
