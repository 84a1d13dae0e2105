"""Durability levels: "power" commits run in worker threads, overlap across
objects, never race the Trio thread on a connection, and fail cleanly; the
output gate waits for them. Plus the connection pool's reopen path."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import apsw
import pytest
import trio

import dotrio
from dotrio.storage import StorageBackend, StorageEngine
from dotrio.storage._pool import PAGE_SIZE, SCHEMA_VERSION
from tests.test_crash import Batch, FlakyVFS


class SlowSyncVFS(apsw.VFS):
    """The default VFS, except that every fsync takes ``delay`` seconds more
    and records which thread did it."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sync_threads: list[int] = []
        super().__init__("dotrio-slowsync", "")

    def xOpen(self, name, flags):  # noqa: N802 - apsw's name
        return SlowSyncFile(self, name, flags)


class SlowSyncFile(apsw.VFSFile):
    def __init__(self, vfs: SlowSyncVFS, name, flags) -> None:
        self.vfs = vfs
        super().__init__("", name, flags)

    def xSync(self, flags):  # noqa: N802
        self.vfs.sync_threads.append(threading.get_ident())
        time.sleep(self.vfs.delay)
        super().xSync(flags)


@pytest.fixture
def slow_vfs():
    vfs = SlowSyncVFS(0.1)
    yield vfs
    vfs.unregister()


class Writer(dotrio.DurableObject):
    async def write(self, n: int) -> int:
        await self.ctx.storage.put({"n": n, "mirror": n})
        return n

    async def read(self) -> tuple:
        s = self.ctx.storage
        return await s.get("n"), await s.get("mirror"), await s.list()

    async def slow_then_write(self, delay: float) -> dict:
        # Started before another event's commit and resumed while it is in flight.
        await trio.sleep(delay)
        s = self.ctx.storage
        seen = await s.get("n")  # the batch in flight is visible
        await s.put("late", seen)
        rows = s.sql.exec("SELECT 1 AS one").to_array()  # sync: waits out the commit thread
        return {"seen": seen, "rows": rows, "listed": await s.list()}


async def test_power_commits_overlap_across_objects(make_runtime, slow_vfs):
    async with make_runtime({"W": Writer}, durability="power", sqlite_vfs="dotrio-slowsync") as rt:
        stubs = [rt.env.W.get_by_name(f"o{i}") for i in range(8)]
        async with trio.open_nursery() as nursery:  # create the files (and their schema) first
            for stub in stubs:
                nursery.start_soon(stub.write, 0)
        slow_vfs.sync_threads.clear()
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i, stub in enumerate(stubs):
                nursery.start_soon(stub.write, i + 1)
        elapsed = trio.current_time() - start
        # eight 100 ms fsyncs one after the other would take 0.8 s
        assert elapsed < 0.45, elapsed
        assert len(slow_vfs.sync_threads) >= 8
        assert threading.get_ident() not in slow_vfs.sync_threads  # never on the Trio thread
        for i, stub in enumerate(stubs):
            n, mirror, _ = await stub.read()
            assert n == mirror == i + 1


async def test_power_writes_during_a_commit_in_flight(make_runtime, slow_vfs):
    async with make_runtime({"W": Writer}, durability="power", sqlite_vfs="dotrio-slowsync") as rt:
        stub = rt.env.W.get_by_name("x")
        await stub.write(1)
        async with trio.open_nursery() as nursery:
            result: dict = {}

            async def late() -> None:
                result.update(await stub.slow_then_write(0.03))

            nursery.start_soon(late)
            await trio.sleep(0.01)
            assert await stub.write(2) == 2  # its commit takes 100 ms; `late` resumes meanwhile
        assert result["seen"] == 2
        assert result["rows"] == [{"one": 1}]
        assert result["listed"] == {"late": 2, "mirror": 2, "n": 2}
    async with make_runtime({"W": Writer}) as rt:
        n, mirror, listed = await rt.env.W.get_by_name("x").read()
        assert (n, mirror, listed["late"]) == (2, 2, 2)


async def test_power_output_gate_waits_for_the_thread(make_runtime, slow_vfs):
    async with make_runtime({"W": Writer}, durability="power", sqlite_vfs="dotrio-slowsync") as rt:
        stub = rt.env.W.get_by_name("g")
        await stub.write(1)
        before = len(slow_vfs.sync_threads)
        start = trio.current_time()
        await stub.write(2)
        # the answer came after the fsync (100 ms), done in a worker thread
        assert trio.current_time() - start >= 0.1
        assert len(slow_vfs.sync_threads) > before


@pytest.mark.parametrize("durability", ["process", "power"])
async def test_commit_failing_half_way_in_either_mode(tmp_path, durability):
    vfs = FlakyVFS()
    data_dir = tmp_path / "data"
    try:
        async with dotrio.Runtime(
            bindings={"B": Batch}, data_dir=data_dir, sqlite_vfs="dotrio-flaky", durability=durability
        ) as rt:
            stub = rt.env.B.get_by_name("x")
            await stub.seed()
            vfs.budget = 5
            vfs.armed = True
            with pytest.raises(dotrio.ObjectResetError, match="commit failed"):
                await stub.big_batch()
            assert vfs.failures >= 1
            vfs.armed = False
            snap = await stub.snapshot()
            assert set(snap.values()) == {"old"} and len(snap) == 300
    finally:
        vfs.unregister()
    async with dotrio.Runtime(bindings={"B": Batch}, data_dir=data_dir) as rt:
        snap = await rt.env.B.get_by_name("x").snapshot()
        assert set(snap.values()) == {"old"} and len(snap) == 300


# ---- the pool ---------------------------------------------------------------------------------


async def test_pool_evicts_least_recently_used_and_reopens(tmp_path: Path) -> None:
    backend = StorageBackend(tmp_path / "d", pool_size=3)
    try:
        stores = [StorageEngine(backend, "NS", f"{i:02d}" * 32) for i in range(6)]
        for i, s in enumerate(stores):
            await s.put("i", i)
            s.commit()
        stats = backend.statistics().pool
        assert stats is not None and stats.open == 3 and stats.closes == 3
        assert stores[0]._conn is None and stores[5]._conn is not None
        # an evicted object's data is still there, and its cache answered without a reopen
        assert await stores[0].get("i") == 0
        assert backend.statistics().pool.opens == 6
        stores[0]._co.clear_cache()
        assert await stores[0].get("i") == 0
        assert backend.statistics().pool.opens == 7
        # a pinned connection (open transaction) is never closed
        stores[1].sql.exec("CREATE TABLE t(x)")
        for s in stores[2:]:
            s._co.clear_cache()
            assert await s.get("i") is not None
        assert stores[1]._conn is not None
        stores[1].commit()
        for s in stores:
            s.close()
    finally:
        backend.close()


async def test_reopen_skips_the_schema_and_keeps_the_wal(tmp_path: Path) -> None:
    backend = StorageBackend(tmp_path / "d", pool_size=1)
    try:
        a = StorageEngine(backend, "NS", "aa" * 32)
        b = StorageEngine(backend, "NS", "bb" * 32)
        await a.put("k", "v")
        a.commit()
        path = Path(a._path)
        assert a._conn is not None
        assert a._conn.execute("PRAGMA user_version").fetchall() == [(SCHEMA_VERSION,)]
        assert a._conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
        assert a._conn.execute("PRAGMA page_size").fetchall() == [(PAGE_SIZE,)]
        await b.put("k", "v")
        b.commit()  # closes a's connection (pool of one)
        assert a._conn is None
        # closed without a checkpoint: the WAL file stays, with a's commit in it
        assert Path(str(path) + "-wal").exists() and Path(str(path) + "-wal").stat().st_size > 0
        assert not Path(str(path) + "-shm").exists()
        # the reopen: what does it run?
        statements: list[str] = []

        def trace(conn: apsw.Connection) -> None:
            conn.exec_trace = lambda _c, sql, _b: statements.append(sql) or True

        apsw.connection_hooks.append(trace)
        try:
            a._co.clear_cache()
            assert await a.get("k") == "v"
        finally:
            apsw.connection_hooks.remove(trace)
        assert not any("CREATE" in sql or "journal_mode" in sql for sql in statements), statements
        assert statements[-1] == "SELECT value FROM _dotrio_kv WHERE key=?"
        a.close()
        b.close()
    finally:
        backend.close()
