"""Event delivery (runners running handlers inline) and when writes commit:
at the first non-storage await of a handler, at the output gate, never in
between two storage calls."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel

import dotrio
from dotrio.storage import StorageEngine


class Probe(dotrio.DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.events: dict[str, trio.Event] = {}
        self.started: list[int] = []

    def _event(self, name: str) -> trio.Event:
        return self.events.setdefault(name, trio.Event())

    async def write_then_sleep(self) -> tuple[bool, bool, bool]:
        engine = self.ctx._host.storage  # the runtime's side of ctx.storage
        await self.ctx.storage.put("a", 1)
        dirty_before = engine.dirty
        await trio.lowlevel.checkpoint()  # a non-storage await: the write commits before it suspends
        # ("power": the commit has been handed to a task, which may not have run yet)
        return dirty_before, engine.dirty, engine.committing or self.ctx._host._commit_started

    async def storage_only(self) -> int:
        s = self.ctx.storage
        await s.put("x", 1)
        await s.get("missing")
        await s.put({"y": 2, "z": 3})
        await s.delete("z")
        await s.list(prefix="x")
        s.sql.exec("CREATE TABLE IF NOT EXISTS t(v)")
        s.sql.exec("INSERT INTO t VALUES (1)")
        return len(await s.list())

    async def wait_for(self, name: str) -> str:
        await self._event(name).wait()
        return name

    async def set_event(self, name: str) -> None:
        self._event(name).set()

    async def record(self, i: int) -> None:
        self.started.append(i)
        await trio.sleep(0.001 * (i % 3))

    async def order(self) -> list[int]:
        return self.started


@pytest.mark.parametrize("durability", ["process", "power"])
async def test_write_commits_at_the_first_non_storage_await(make_runtime, durability):
    async with make_runtime({"P": Probe}, durability=durability) as rt:
        dirty_before, dirty_after, committing = await rt.env.P.get_by_name("w").write_then_sleep()
        assert dirty_before is True
        if durability == "process":
            assert dirty_after is False  # committed on the spot
        else:
            assert dirty_after is False or committing is True  # its commit is under way


async def test_storage_calls_without_other_awaits_commit_once(make_runtime, monkeypatch):
    commits: list[int] = []
    original = StorageEngine._write_batch

    def counting(self, conn, puts, dels, alarm):
        commits.append(len(puts) + len(dels))
        return original(self, conn, puts, dels, alarm)

    monkeypatch.setattr(StorageEngine, "_write_batch", counting)
    async with make_runtime({"P": Probe}) as rt:
        assert await rt.env.P.get_by_name("once").storage_only() == 2
    assert commits == [3]  # x, y and the delete of z: one batch, with the SQL rows


async def test_a_suspended_handler_lets_the_next_event_in(make_runtime):
    async with make_runtime({"P": Probe}) as rt:
        stub = rt.env.P.get_by_name("inter")
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                results: list[str] = []

                async def waiter() -> None:
                    results.append(await stub.wait_for("go"))

                nursery.start_soon(waiter)
                await trio.sleep(0.01)
                # the first handler is suspended; this one must still be delivered
                await stub.set_event("go")
        assert results == ["go"]


async def test_events_start_in_arrival_order(make_runtime):
    async with make_runtime({"P": Probe}) as rt:
        ns = rt.env.P
        oid = ns.id_from_name("order")
        done = trio.Semaphore(0)
        for i in range(60):
            # handlers suspend for different times, so several runners are busy at once
            rt.post(ns, oid, lambda inst, i=i: inst.record(i), callback=lambda _o: done.release())
            if i % 7 == 0:
                await trio.sleep(0.001)
        for _ in range(60):
            await done.acquire()
        assert await ns.get(oid).order() == list(range(60))


async def test_reset_while_helpers_wait(make_runtime):
    class Resetter(Probe):
        async def boom(self) -> None:
            self.ctx.abort("test")

    async with make_runtime({"R": Resetter}) as rt:
        stub = rt.env.R.get_by_name("r")
        outcomes: list[str] = []

        async def waiter() -> None:
            try:
                await stub.wait_for("never")
            except dotrio.ObjectResetError:
                outcomes.append("reset")

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(waiter)
            await trio.sleep(0.01)
            with pytest.raises(dotrio.ObjectResetError):
                await stub.boom()
        assert outcomes == ["reset"] * 3
        # the object comes back with a new instance
        assert await stub.order() == []
