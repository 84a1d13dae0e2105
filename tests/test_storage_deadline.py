"""A Trio deadline reaches SQLite: a long sql.exec is interrupted (apsw
progress handler), the statement is rolled back, and the caller's cancel scope
sees an ordinary Trio cancellation (TooSlowError from fail_after, nothing from
move_on_after). Real time, small deadlines, deliberately slow recursive CTEs
that would run for many seconds."""

from __future__ import annotations

import pytest
import trio

import dotrio
from dotrio.storage import StorageBackend, StorageEngine

# Each takes several seconds to finish (tens of millions of CTE rows).
SLOW_SELECT = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 80000000) SELECT max(i) AS n FROM r"
SLOW_INSERT = (
    "INSERT INTO t(x) WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 80000000) SELECT i FROM r"
)


class Sql(dotrio.DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t(x)")

    async def count(self) -> int:
        return self.ctx.storage.sql.exec("SELECT count(*) AS n FROM t").one()["n"]

    async def seed(self) -> None:
        self.ctx.storage.sql.exec("INSERT INTO t VALUES (1), (2)")

    async def slow_select_fail_after(self) -> tuple[str, float]:
        start = trio.current_time()
        try:
            with trio.fail_after(0.05):
                self.ctx.storage.sql.exec(SLOW_SELECT)
        except trio.TooSlowError:
            return "TooSlowError", trio.current_time() - start
        return "finished", trio.current_time() - start

    async def slow_insert_move_on(self) -> tuple[bool, float]:
        start = trio.current_time()
        await self.ctx.storage.put("kv", "kept")  # pending KV writes are not touched
        with trio.move_on_after(0.05) as scope:
            self.ctx.storage.sql.exec(SLOW_INSERT)
        return scope.cancelled_caught, trio.current_time() - start

    async def write_then_slow_select(self) -> bool:
        self.ctx.storage.sql.exec("INSERT INTO t VALUES (3)")
        with trio.move_on_after(0.05) as scope:
            self.ctx.storage.sql.exec(SLOW_SELECT)
        return scope.cancelled_caught

    async def write_then_slow_insert(self) -> str:
        self.ctx.storage.sql.exec("INSERT INTO t VALUES (4)")
        with trio.move_on_after(0.05):
            self.ctx.storage.sql.exec(SLOW_INSERT)
        await trio.sleep(0)  # the reset cancels this turn here
        return "not reached"

    async def kv(self) -> str | None:
        return await self.ctx.storage.get("kv")


async def test_deadline_interrupts_sql_exec_and_rolls_it_back(make_runtime):
    async with make_runtime({"S": Sql}) as rt:
        stub = rt.env.S.get_by_name("a")
        await stub.seed()
        outcome, elapsed = await stub.slow_select_fail_after()
        assert outcome == "TooSlowError"
        assert elapsed < 1.0, elapsed  # the query alone runs for seconds
        caught, elapsed = await stub.slow_insert_move_on()
        assert caught and elapsed < 1.0
        assert await stub.count() == 2  # the interrupted INSERT left nothing
        assert await stub.kv() == "kept"
        # an interrupted read keeps the turn's earlier writes
        assert await stub.write_then_slow_select() is True
        assert await stub.count() == 3
        # an interrupted write takes the whole SQLite transaction with it, so a
        # turn that had written before is reset, as if its commit had failed
        with pytest.raises(dotrio.ObjectResetError, match="interrupted"):
            await stub.write_then_slow_insert()
        assert await stub.count() == 3
    async with make_runtime({"S": Sql}) as rt:
        assert await rt.env.S.get_by_name("a").count() == 3


async def test_deadline_at_the_storage_layer(tmp_path):
    backend = StorageBackend(tmp_path / "d")
    try:
        s = StorageEngine(backend, "NS", "ab" * 32)
        s.sql.exec("CREATE TABLE t(x)")
        s.commit()
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(0.03):
                s.sql.exec(SLOW_INSERT)
        assert trio.current_time() - start < 1.0
        assert s.sql.exec("SELECT count(*) AS n FROM t").one() == {"n": 0}
        # no deadline: no progress handler, the statement runs to the end
        assert s.sql.exec("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM r WHERE i < 1000) "
                          "SELECT max(i) AS n FROM r").one() == {"n": 1000}
        assert s._conn is not None
        s.commit()
        s.close()
    finally:
        backend.close()
