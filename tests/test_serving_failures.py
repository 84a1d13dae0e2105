"""One object's failure never takes the runtime down (issue 16, item 1).

A failure at any storage step (mkdir, open, commit, checkpoint, close),
injected through ``StorageBackend.fault_hook`` on real SQLite files, resets
that object only: its caller gets ``ObjectResetError`` naming the cause, the
reset is logged once with the object's id, other objects keep working,
nothing acknowledged is lost, and the runtime exits cleanly. The same holds
for exceptions from user code that nobody awaits (``ctx.wait_until``), and
out-of-range values are refused at the call instead of failing the commit.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import pytest
import trio

import dotrio
from dotrio import ObjectResetError, StorageError
from dotrio.storage._failure import FAULT_STEPS


class Store(dotrio.DurableObject):
    async def bump(self) -> int:
        n = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", n)
        return n

    async def sql_bump(self) -> int:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS t(x INTEGER)")
        sql.exec("INSERT INTO t VALUES (1)")
        return int(sql.exec("SELECT count(*) AS n FROM t").one()["n"])

    async def alarm_bump(self) -> int:
        n = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", n)
        await self.ctx.storage.set_alarm(10**15)  # far future: never fires here
        return n

    async def state(self) -> tuple[Any, int, Any]:
        s = self.ctx.storage
        rows = s.sql.exec("SELECT count(*) AS n FROM sqlite_master WHERE name = 't'").one()["n"]
        count = s.sql.exec("SELECT count(*) AS n FROM t").one()["n"] if rows else 0
        return await s.get("n"), int(count), await s.get_alarm()

    async def background(self) -> str:
        async def fail() -> None:
            await trio.lowlevel.checkpoint()
            raise KeyError("from a wait_until task")

        self.ctx.wait_until(fail())
        return "started"

    async def set_alarm_at(self, when: Any) -> None:
        await self.ctx.storage.set_alarm(when)

    async def bind(self, value: Any) -> Any:
        return self.ctx.storage.sql.exec("SELECT ? AS v", value).one()["v"]


class Injected(Exception):
    """An arbitrary exception, of no kind the runtime knows."""


def _enospc() -> BaseException:
    return OSError(errno.ENOSPC, "No space left on device (injected)")


def _arbitrary() -> BaseException:
    return Injected("injected failure")


class Faults:
    """The fault hook: raises ``make()`` at ``step`` for databases whose path
    contains ``target``, while armed; records every call."""

    def __init__(self, step: str, target: str, make: Any) -> None:
        self.step = step
        self.target = target
        self.make = make
        self.armed = False
        self.raised: list[BaseException] = []
        self.seen: set[str] = set()

    def __call__(self, step: str, path: str) -> None:
        self.seen.add(step)
        if self.armed and step == self.step and self.target in path:
            exc = self.make()
            self.raised.append(exc)
            raise exc


def _shard_differs(ns: dotrio.DurableObjectNamespace, taken: set[str], prefix: str) -> str:
    """A name whose object's id shard (``id[:2]``, its directory) is none of ``taken``."""
    for i in range(1000):
        name = f"{prefix}{i}"
        if str(ns.id_from_name(name))[:2] not in taken:
            return name
    raise AssertionError("no free shard found")


def _chain(exc: BaseException | None) -> list[BaseException]:
    out = []
    while exc is not None and len(out) < 10:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


VIAS = ["put", "sql", "alarm"]
CASES = [(step, via) for step in FAULT_STEPS if step != "close" for via in VIAS] + [("close", "put")]


@pytest.mark.parametrize("make", [_enospc, _arbitrary], ids=["ENOSPC", "arbitrary"])
@pytest.mark.parametrize("durability", ["process", "power"])
@pytest.mark.parametrize("step, via", CASES)
async def test_failure_at_every_storage_step_resets_only_that_object(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, step: str, via: str, durability: str, make: Any
) -> None:
    data_dir = tmp_path / "data"
    # pool_size=1: every switch between objects closes the other's connection,
    # so "open" and "close" happen at each switch, as under a busy pool.
    async with dotrio.Runtime(bindings={"S": Store}, data_dir=data_dir, pool_size=1, durability=durability) as rt:
        ns = rt.env.S
        old = ns.get_by_name("old")
        assert await old.bump() == 1
        shards = {str(ns.id_from_name("old"))[:2]}
        name = _shard_differs(ns, shards, "victim")
        victim = ns.get_by_name(name)
        vid = str(ns.id_from_name(name))
        faults = Faults(step, vid, make)
        rt.backend.fault_hook = faults
        acked = None
        old_n = 1
        if step != "mkdir":
            # Acknowledged before the failure: must survive it.
            acked = await victim.bump()
            assert acked == 1
            old_n += 1
            assert await old.bump() == old_n  # the victim's connection is closed now
        faults.armed = True
        call = {"put": victim.bump, "sql": victim.sql_bump, "alarm": victim.alarm_bump}[via]
        with caplog.at_level(logging.WARNING):
            if step == "close":
                # Closing the victim's connection fails as another object takes
                # the pool's one slot; that object is served, the victim's
                # connection is dropped and nothing acknowledged is lost.
                acked = await call()
                assert acked == 2
                old_n += 1
                assert await old.bump() == old_n
                assert faults.raised, "the close step was never reached"
                faults.armed = False
            else:
                with pytest.raises(ObjectResetError) as info:
                    await call()
                assert faults.raised, f"the {step} step was never reached through {via}"
                faults.armed = False
                message = str(info.value)
                assert vid in message, f"the reset must name the object: {message}"
                expected = "storage full" if make is _enospc else "Injected: injected failure"
                assert expected in message, f"the reset must name the cause ({expected!r}): {message}"
                assert faults.raised[0] in _chain(info.value), "the injected exception must be the cause"
                # Other objects, old and new, keep working.
                old_n += 1
                assert await old.bump() == old_n
                assert await ns.get_by_name("newcomer").bump() == 1
        reports = [r for r in caplog.records if r.levelno >= logging.ERROR and vid in r.getMessage()]
        assert len(reports) == len(faults.raised) == 1, (
            f"the failure must be logged once naming the object, got {[r.getMessage() for r in reports]}"
        )
        # The victim comes back (a fresh instance) with everything acknowledged.
        n, rows, alarm = await victim.state()
        if step == "checkpoint":
            # The commit itself landed before the checkpoint step failed: its
            # (unacknowledged) writes may be there; nothing acknowledged is gone.
            assert n in (acked, acked + 1) and alarm in (None, 10**15)
        else:
            assert (n, rows, alarm) == (acked, 0, None), "the failed batch must be rolled back, acked kept"
        assert await victim.bump() == (n or 0) + 1
    # On disk, in a fresh runtime without faults: what was acknowledged is there.
    async with dotrio.Runtime(bindings={"S": Store}, data_dir=data_dir) as rt:
        assert (await rt.env.S.get_by_name("old").state())[0] == old_n
        n2, _, _ = await rt.env.S.get_by_name(name).state()
        assert n2 == (n or 0) + 1


async def test_storage_full_through_sql_exec_in_a_new_namespace_dir(tmp_path: Path) -> None:
    """The namespace's directory itself cannot be made: sql.exec resets the object."""
    data_dir = tmp_path / "data"
    async with dotrio.Runtime(bindings={"S": Store}, data_dir=data_dir) as rt:
        faults = Faults("mkdir", str(data_dir), _enospc)
        faults.armed = True
        rt.backend.fault_hook = faults
        with pytest.raises(ObjectResetError, match="storage full") as info:
            await rt.env.S.get_by_name("a").sql_bump()
        assert isinstance(info.value.__cause__, StorageError)
        assert not (data_dir / "Store").exists()
        faults.armed = False
        assert await rt.env.S.get_by_name("a").sql_bump() == 1


async def test_a_real_makedirs_failure_resets_only_that_object(tmp_path: Path) -> None:
    """No hook: the namespace directory's place is taken by a file, so the
    real ``os.makedirs`` fails (as on ENOSPC or EROFS) through put, sql.exec
    and set_alarm; the runtime goes on and exits cleanly."""
    data_dir = tmp_path / "data"
    async with dotrio.Runtime(bindings={"S": Store}, data_dir=data_dir) as rt:
        data_dir.mkdir(exist_ok=True)
        (data_dir / "Store").write_text("not a directory")
        for call in ("bump", "sql_bump", "alarm_bump"):
            with pytest.raises(ObjectResetError, match="storage failed.*could not open"):
                await getattr(rt.env.S.get_by_name(call), call)()
        (data_dir / "Store").unlink()
        assert await rt.env.S.get_by_name("later").bump() == 1


async def test_a_failing_wait_until_task_resets_its_object_not_the_runtime(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with dotrio.Runtime(bindings={"S": Store}, data_dir=tmp_path / "d") as rt:
        stub = rt.env.S.get_by_name("bg")
        assert await stub.bump() == 1
        with caplog.at_level(logging.WARNING):
            assert await stub.background() == "started"
            await trio.sleep(0.05)
        oid = str(rt.env.S.id_from_name("bg"))
        reports = [r for r in caplog.records if oid in r.getMessage()]
        assert len(reports) == 1 and "KeyError" in reports[0].getMessage(), [r.getMessage() for r in reports]
        assert await stub.bump() == 2
        assert await rt.env.S.get_by_name("other").bump() == 1


@pytest.mark.parametrize("when", [10**30, -(10**30), 2**63, -(2**63) - 1, 1e30, -1e300])
async def test_set_alarm_outside_int64_ms_is_a_value_error_at_the_call(tmp_path: Path, when: Any) -> None:
    async with dotrio.Runtime(bindings={"S": Store}, data_dir=tmp_path / "d") as rt:
        stub = rt.env.S.get_by_name("a")
        with pytest.raises(ValueError, match="outside the range"):
            await stub.set_alarm_at(when)
        assert await stub.bump() == 1  # the object was not reset, the runtime is up
        await stub.set_alarm_at(2**63 - 1)  # the largest storable time is accepted


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**40])
async def test_sql_binding_outside_int64_is_a_type_error(tmp_path: Path, value: int) -> None:
    async with dotrio.Runtime(bindings={"S": Store}, data_dir=tmp_path / "d") as rt:
        stub = rt.env.S.get_by_name("a")
        with pytest.raises(TypeError, match="binding 1 is an int outside SQLite's 64-bit integer range"):
            await stub.bind(value)
        assert await stub.bind(2**63 - 1) == 2**63 - 1
        assert await stub.bind(-(2**63)) == -(2**63)


class Alarmed(dotrio.DurableObject):
    async def arm(self, when: int) -> None:
        await self.ctx.storage.set_alarm(when)

    async def alarm(self, info: dotrio.AlarmInfo) -> None:
        await self.ctx.storage.put("fired", (await self.ctx.storage.get("fired") or 0) + 1)

    async def fired(self) -> Any:
        return await self.ctx.storage.get("fired")

    async def ping(self) -> str:
        return "pong"


async def test_an_alarm_due_while_its_database_cannot_be_opened_fires_later(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The wake fails to open the database (and so does reading the alarm
    back): the acknowledged alarm is not forgotten, it fires once the disk
    recovers, and the runtime and other objects are unaffected meanwhile."""
    async with dotrio.Runtime(
        bindings={"A": Alarmed}, data_dir=tmp_path / "d", pool_size=1, idle_timeout=1, hibernation_timeout=1
    ) as rt:
        ns = rt.env.A
        victim = ns.get_by_name("victim")
        assert rt.clock is not None
        await victim.arm(rt.clock.now_ms() + 30_000)
        await ns.get_by_name("other").arm(10**15)  # takes the pool's one slot: victim's connection closes
        await trio.sleep(5)  # both evicted: the wake builds the victim anew, from its file
        faults = Faults("open", str(ns.id_from_name("victim")), _enospc)
        faults.armed = True
        rt.backend.fault_hook = faults
        await trio.sleep(60)
        assert faults.raised, "the wake never tried to open the database"
        assert await ns.get_by_name("other").ping() == "pong"
        faults.armed = False
        await trio.sleep(200)  # the back-off of the failed wakes
        assert await victim.fired() == 1


class Planner(dotrio.DurableObject):
    async def plan(self, repeat: Any) -> str:
        return await self.schedule(5, "tick", repeat=repeat)

    async def tick(self, payload: Any) -> None:
        pass


@pytest.mark.parametrize(
    "repeat, error, match",
    [(1e300, ValueError, "at most"), (10**30, ValueError, "at most"), ("5", TypeError, "got str"),
     ([5], TypeError, "got list")],
)
async def test_schedule_repeat_out_of_range_or_of_the_wrong_type_is_refused_at_the_call(
    tmp_path: Path, repeat: Any, error: type[Exception], match: str
) -> None:
    async with dotrio.Runtime(bindings={"P": Planner}, data_dir=tmp_path / "d") as rt:
        stub = rt.env.P.get_by_name("p")
        with pytest.raises(error, match=match):
            await stub.plan(repeat)
        assert await stub.plan(60) != ""  # the object was not reset
