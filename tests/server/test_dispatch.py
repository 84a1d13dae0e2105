"""The dispatcher in-process (no sockets): routing, worker entry, error
statuses, health, access log. The same object serves both front ends, which
the subprocess tests drive over the network."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
import trio
import trio.lowlevel

import dotrio
from dotrio.server import Dispatcher

BASE = "http://example.test:8787"


class Counter(dotrio.DurableObject):
    async def fetch(self, request: dotrio.Request) -> dotrio.Response:
        path = request.path
        if path.endswith("/boom"):
            raise RuntimeError("secret detail")
        if path.endswith("/abort"):
            self.ctx.abort("testing")
        if path.endswith("/hold"):
            await self.ctx.block_concurrency_while(lambda: trio.sleep(0.2))  # noqa: ASYNC105 - awaited inside
        n = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", n)
        return dotrio.Response.json({"url": request.url, "name": self.ctx.id.name, "n": n})


class Worker(dotrio.WorkerEntrypoint):
    done: list[str] = []

    async def fetch(self, request: dotrio.Request) -> dotrio.Response:
        if request.path == "/overloaded":
            raise dotrio.OverloadedError("full", retry_after=2.5)
        if request.path == "/later":
            async def later() -> None:
                await trio.lowlevel.checkpoint()
                Worker.done.append("later")

            self.ctx.wait_until(later())
            return dotrio.Response("queued")
        n = await self.env.C.get_by_name("w").fetch(request)
        return dotrio.Response(f"{self.env.GREETING} {n.json()['n']}")


def request(path: str, method: str = "GET") -> dotrio.Request:
    return dotrio.Request(BASE + path, method=method)


async def test_default_routing_sends_the_full_url_to_the_named_object() -> None:
    async with dotrio.Runtime(bindings={"C": Counter}) as rt:
        d = Dispatcher(rt)
        r = await d(request("/C/alice/some/rest?x=1&y=/z"))
        assert r.status == 200
        assert r.json() == {"url": BASE + "/C/alice/some/rest?x=1&y=/z", "name": "alice", "n": 1}
        assert (await d(request("/C/alice"))).json()["n"] == 2
        assert (await d(request("/C/bob/"))).json()["n"] == 1
        # Percent-encoded names are decoded; the object still sees the raw URL.
        r = await d(request("/C/room%2042/"))
        assert r.json()["name"] == "room 42"
        assert (await d(request("/C/room%2042/x"))).json()["n"] == 2


async def test_get_root_lists_the_bindings_under_default_routing() -> None:
    async with dotrio.Runtime(bindings={"C": Counter}) as rt:
        d = Dispatcher(rt, name="demo")
        r = await d(request("/"))
        assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
        text = r.text()
        assert text.startswith("dotrio: demo\n")
        assert f"  /C/<name>/...  ->  {__name__}.Counter\n" in text
        assert "/_dotrio/health" in text
        assert (await d(request("/", method="POST"))).status == 404
        assert rt.statistics().activations == 0


@pytest.mark.parametrize("path", ["//", "/C", "/C/", "/C//x", "/D/alice/", "/_dotrio/nope", "/_dotrio/", "/c/alice/"])
async def test_unknown_binding_or_missing_name_is_404(path: str) -> None:
    async with dotrio.Runtime(bindings={"C": Counter}) as rt:
        r = await Dispatcher(rt)(request(path))
        assert (r.status, r.body) == (404, b"not found\n")
        assert rt.statistics().activations == 0


async def test_worker_entry_gets_every_request_with_env_and_wait_until() -> None:
    Worker.done.clear()
    async with dotrio.Runtime(bindings={"C": Counter}, vars={"GREETING": "hi"}) as rt:
        async with trio.open_nursery() as nursery:
            d = Dispatcher(rt, Worker, spawn=lambda aw: nursery.start_soon(lambda: aw))
            assert (await d(request("/C/alice/"))).text() == "hi 1"
            assert (await d(request("/anything"))).text() == "hi 2"
            assert (await d(request("/later"))).text() == "queued"
        assert Worker.done == ["later"]
        # The reserved prefix stays the server's even with a worker entry.
        assert (await d(request("/_dotrio/health"))).status == 200


async def test_overloaded_is_503_with_retry_after() -> None:
    async with dotrio.Runtime(bindings={"C": Counter}, max_queue=1) as rt:
        d = Dispatcher(rt, Worker)
        r = await d(request("/overloaded"))
        assert (r.status, r.headers.get("retry-after")) == (503, "3")

        d = Dispatcher(rt)
        statuses: list[int] = []
        retry: list[str | None] = []

        async def one() -> None:
            resp = await d(request("/C/hot/hold"))
            statuses.append(resp.status)
            retry.append(resp.headers.get("retry-after"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            await trio.sleep(0.05)  # the first now runs, holding the input gate
            for _ in range(3):
                nursery.start_soon(one)
        # One runs, one waits in the inbox (max_queue=1), the rest are refused.
        assert sorted(statuses) == [200, 200, 503, 503]
        assert sorted(r for r in retry if r is not None) == ["1", "1"]


async def test_object_reset_is_503() -> None:
    async with dotrio.Runtime(bindings={"C": Counter}) as rt:
        r = await Dispatcher(rt)(request("/C/a/abort"))
        assert r.status == 503 and r.headers.get("retry-after") == "1"


async def test_exception_is_500_with_a_short_body_and_a_logged_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async with dotrio.Runtime(bindings={"C": Counter}) as rt:
        d = Dispatcher(rt)
        with caplog.at_level(logging.ERROR, logger="dotrio.server"):
            r = await d(request("/C/a/boom"))
        assert (r.status, r.body) == (500, b"internal server error\n")
        record = next(rec for rec in caplog.records if rec.name == "dotrio.server")
        assert "GET /C/a/boom failed" in record.getMessage()
        assert record.exc_info is not None and "secret detail" in str(record.exc_info[1])
        # The object stays alive and the server keeps serving.
        assert (await d(request("/C/a/"))).status == 200


async def test_health_reports_statistics_and_draining(tmp_path: Path) -> None:
    draining = False
    async with dotrio.Runtime(bindings={"C": Counter}, data_dir=tmp_path) as rt:
        d = Dispatcher(rt, draining=lambda: draining, name="demo", statistics=lambda: {"front_end": "x"})
        await d(request("/C/a/"))
        r = await d(request("/_dotrio/health"))
        assert r.status == 200 and r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["status"] == "ok" and body["name"] == "demo"
        assert body["runtime"]["live_objects"] == 1 and body["runtime"]["events"] == 1
        assert body["server"] == {"front_end": "x"}
        assert "data_dir" not in body["runtime"]["storage"]
        assert body["dispatcher"]["requests"] == 2
        draining = True
        r = await d(request("/_dotrio/health"))
        assert r.status == 503 and orjson.loads(r.body)["status"] == "draining"
        assert (await d(request("/_dotrio/health", "POST"))).status == 404


async def test_access_log_one_structured_line_per_request(caplog: pytest.LogCaptureFixture) -> None:
    async with dotrio.Runtime(bindings={"C": Counter}) as rt:
        quiet = Dispatcher(rt)
        with caplog.at_level(logging.INFO, logger="dotrio.access"):
            await quiet(request("/C/a/"))
            assert [r for r in caplog.records if r.name == "dotrio.access"] == []
            loud = Dispatcher(rt, access_log=True)
            await loud(request("/C/a/x?secret=1", "POST"))
            await loud(request("/nope"))
        lines = [r for r in caplog.records if r.name == "dotrio.access"]
        assert len(lines) == 2
        first = lines[0]
        assert first.getMessage().startswith("method=POST path=/C/a/x status=200 bytes=")
        assert "secret" not in first.getMessage()
        assert (first.method, first.path, first.status) == ("POST", "/C/a/x", 200)  # type: ignore[attr-defined]
        assert first.bytes > 0 and first.duration_ms >= 0  # type: ignore[attr-defined]
        assert lines[1].status == 404  # type: ignore[attr-defined]
