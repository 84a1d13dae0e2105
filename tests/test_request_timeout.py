"""Long synchronous work does not stall everyone (issue 16 item 7): a
per-request deadline (``[server] request_timeout``) reaches the handler in
its object, the apsw progress handler interrupts its SQL, and big results are
capped (``max_sql_result_rows``). Through the dispatcher with a real Runtime
on real files; MockClock where only awaits are involved, a small real
deadline where SQL must be interrupted (SQLite does not see a MockClock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import dotrio
from dotrio.server import Dispatcher
from dotrio.storage import StorageBackend, StorageEngine

# Runs for many seconds unless interrupted.
SLOW_INSERT = (
    "INSERT INTO t(x) WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 80000000) SELECT i FROM r"
)
BASE = "http://h"


class Slow(dotrio.DurableObject):
    def __init__(self, ctx: dotrio.DurableObjectState, env: object) -> None:
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t(x)")

    async def fetch(self, request: dotrio.Request) -> dotrio.Response:
        path = request.path
        sql = self.ctx.storage.sql
        if path.endswith("/slow-sql"):
            sql.exec("INSERT INTO t VALUES (-1)")
            sql.exec(SLOW_INSERT)
            return dotrio.Response("finished")
        if path.endswith("/sleep"):
            await self.ctx.storage.put("before-sleep", 1)
            await trio.sleep(1000)
            return dotrio.Response("woke")
        if path.endswith("/rpc-sleep"):
            return dotrio.Response(await self.env.S.get_by_name("other").nap())
        if path.endswith("/yield"):
            await trio.lowlevel.checkpoint()  # suspends: watched until it finishes
            return dotrio.Response("yielded")
        if path.endswith("/later"):
            async def later() -> None:
                await trio.sleep(100)
                await self.env.S.get_by_name("later").mark()

            self.ctx.wait_until(later())
            return dotrio.Response("queued")
        count = sql.exec("SELECT count(*) AS n FROM t").one()["n"]
        return dotrio.Response(str(count))

    async def nap(self) -> str:
        await trio.sleep(1000)
        return "rested"

    async def hold(self, seconds: float) -> None:
        await self.ctx.block_concurrency_while(lambda: trio.sleep(seconds))

    async def mark(self) -> None:
        await self.ctx.storage.put("marked", True)

    async def marked(self) -> bool:
        return bool(await self.ctx.storage.get("marked"))


def get(path: str) -> dotrio.Request:
    return dotrio.Request(BASE + path)


async def test_sql_past_the_request_deadline_is_interrupted_504(make_runtime) -> None:
    async with make_runtime({"S": Slow}) as rt:
        d = Dispatcher(rt, request_timeout=0.2)
        reply = await d(get("/S/a/slow-sql"))
        assert reply.status == 504, reply.body
        assert reply.body == b"request timed out\n"
        # The object was reset: its SQL of that request is gone, and it serves again.
        reply = await d(get("/S/a/count"))
        assert (reply.status, reply.body) == (200, b"0")


async def test_a_handler_awaiting_past_the_deadline_is_cancelled_and_its_object_reset(
    make_runtime, autojump_clock: trio.testing.MockClock
) -> None:
    async with make_runtime({"S": Slow}) as rt:
        d = Dispatcher(rt, request_timeout=30)
        start = trio.current_time()
        reply = await d(get("/S/a/sleep"))
        assert reply.status == 504
        assert 30 <= trio.current_time() - start < 31
        # The deadline follows the request into the objects it calls.
        start = trio.current_time()
        reply = await d(get("/S/b/rpc-sleep"))
        assert reply.status == 504
        assert 30 <= trio.current_time() - start < 31
        assert (await d(get("/S/a/count"))).status == 200


async def test_a_request_that_waited_past_its_deadline_is_not_run(
    make_runtime, autojump_clock: trio.testing.MockClock
) -> None:
    async with make_runtime({"S": Slow}) as rt:
        d = Dispatcher(rt, request_timeout=30)
        replies: list[dotrio.Response] = []
        async with trio.open_nursery() as nursery:
            # Not a request: no deadline. It holds the object's input gate for 40 s.
            nursery.start_soon(rt.env.S.get_by_name("a").hold, 40)
            await trio.sleep(1)

            async def call() -> None:
                replies.append(await d(get("/S/a/count")))

            nursery.start_soon(call)
        (reply,) = replies
        assert reply.status == 503 and reply.body == b"overloaded\n"
        assert reply.headers.get("retry-after") == "1"
        # The object itself was not reset: the next request runs.
        assert (await d(get("/S/a/count"))).status == 200


async def test_wait_until_work_is_not_bound_by_the_request_deadline(
    make_runtime, autojump_clock: trio.testing.MockClock
) -> None:
    async with make_runtime({"S": Slow}) as rt:
        d = Dispatcher(rt, request_timeout=30)
        assert (await d(get("/S/a/later"))).status == 200
        await trio.sleep(200)
        assert await rt.env.S.get_by_name("later").marked() is True


async def test_no_request_timeout_means_no_deadline(make_runtime, autojump_clock: trio.testing.MockClock) -> None:
    async with make_runtime({"S": Slow}) as rt:
        d = Dispatcher(rt, request_timeout=None)
        with trio.move_on_after(500) as scope:
            await d(get("/S/a/sleep"))
        assert scope.cancelled_caught
    with pytest.raises(ValueError, match="request_timeout"):
        Dispatcher(rt, request_timeout=0)


async def test_sql_results_are_capped_by_max_sql_result_rows(tmp_path) -> None:
    backend = StorageBackend(tmp_path / "d", max_sql_result_rows=1000)
    try:
        s = StorageEngine(backend, "NS", "ab" * 32)
        s.sql.exec("CREATE TABLE t(x)")
        s.sql.exec("INSERT INTO t WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 1000) "
                   "SELECT i FROM r")
        assert len(s.sql.exec("SELECT x FROM t").to_array()) == 1000
        with pytest.raises(dotrio.StorageError, match=r"more than 1000 rows \(the max_sql_result_rows limit\)"):
            s.sql.exec("SELECT a.x FROM t a, t b")  # a million rows
        # A write whose RETURNING goes over the limit takes nothing with it.
        with pytest.raises(dotrio.StorageError, match="max_sql_result_rows"):
            s.sql.exec("INSERT INTO t SELECT x + 1000 FROM t UNION ALL SELECT -1 RETURNING x")
        assert s.sql.exec("SELECT count(*) AS n FROM t").one() == {"n": 1000}
        s.commit()
        s.close()
    finally:
        backend.close()
    with pytest.raises(ValueError, match="max_sql_result_rows"):
        StorageBackend(None, max_sql_result_rows=0)


async def test_runtime_passes_max_sql_result_rows_to_storage(make_runtime) -> None:
    async with make_runtime({"S": Slow}, max_sql_result_rows=5) as rt:
        assert rt.backend.max_sql_result_rows == 5


class Entry(dotrio.WorkerEntrypoint):
    async def fetch(self, request: dotrio.Request) -> dotrio.Response:
        if request.path == "/nap":
            await trio.sleep(1000)
        # Its calls to objects carry the request's deadline.
        return await self.env.S.get_by_name("w").fetch(BASE + "/S/w/sleep")


async def test_a_worker_entry_is_bound_by_the_deadline_too(
    make_runtime, autojump_clock: trio.testing.MockClock
) -> None:
    async with make_runtime({"S": Slow}) as rt:
        d = Dispatcher(rt, Entry, request_timeout=10)
        for path in ("/nap", "/object"):
            start = trio.current_time()
            reply = await d(get(path))
            assert reply.status == 504, (path, reply.body)
            assert 10 <= trio.current_time() - start < 11


async def test_watched_deadlines_of_finished_handlers_do_not_pile_up(
    make_runtime, autojump_clock: trio.testing.MockClock
) -> None:
    async with make_runtime({"S": Slow}) as rt:
        d = Dispatcher(rt, request_timeout=30)
        for _ in range(10_000):
            assert (await d(get("/S/a/yield"))).status == 200
        assert len(rt._deadlines) <= 8192
        await trio.sleep(31)  # what is left is dropped as it comes due, nothing reset
        assert rt._deadlines == []
        assert (await d(get("/S/a/count"))).status == 200
