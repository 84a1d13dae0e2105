"""Alarms (API.md § 5, issue 4 items 1-3): Cloudflare semantics, retries,
persistence and the alarm index, all in virtual time (MockClock)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import apsw
import pytest
import trio

import dotrio
import dotrio._clock
from dotrio import AlarmInfo, DurableObject, ObjectResetError
from dotrio._alarm_index import INDEX_FILE
from dotrio._schedule import MAX_RETRIES, retry_delay


class _ShiftedTime:
    """Stands in for the ``time`` module in dotrio._clock: the wall clock, later."""

    def __init__(self, offset_s: float) -> None:
        self.offset_s = offset_s

    def time(self) -> float:
        return time.time() + self.offset_s


def later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The next Runtime started believes ``seconds`` of wall time have passed."""
    monkeypatch.setattr(dotrio._clock, "time", _ShiftedTime(seconds))


def index_rows(data_dir: Path) -> list[tuple[str, bytes, int]]:
    """The alarm index as committed (read with the runtime closed: it holds an exclusive lock)."""
    conn = apsw.Connection(str(data_dir / INDEX_FILE))
    try:
        return [(ns, oid, when) for ns, oid, when in conn.execute("SELECT ns, oid, when_ms FROM alarms")]
    finally:
        conn.close()


def make_alarmer(log: list, fail_times: int = 0, sleep: float = 0.0):
    class Alarmer(DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            log.append(("construct", ctx.id.name))

        async def arm(self, when):
            await self.ctx.storage.set_alarm(when)

        async def disarm(self):
            await self.ctx.storage.delete_alarm()

        async def get_alarm(self):
            return await self.ctx.storage.get_alarm()

        async def arm_then_raise(self, when):
            await self.ctx.storage.set_alarm(when)
            raise ValueError("after set_alarm")

        async def arm_then_abort(self, when):
            await self.ctx.storage.set_alarm(when)
            self.ctx.abort("no")

        async def alarm(self, info: AlarmInfo):
            seen = await self.ctx.storage.get_alarm()
            log.append(("alarm", info, seen, trio.current_time()))
            if sleep:
                await trio.sleep(sleep)
            if sum(1 for e in log if e[0] == "alarm") <= fail_times:
                raise RuntimeError("alarm failed on purpose")
            log.append(("alarm-done", trio.current_time()))

    return Alarmer


def alarms(log: list) -> list:
    return [e for e in log if e[0] == "alarm"]


# ---- set / replace / delete ---------------------------------------------------------


async def test_set_replace_delete(make_runtime, autojump_clock):
    log: list = []
    Alarmer = make_alarmer(log)
    async with make_runtime({"A": Alarmer}) as rt:
        a = rt.env.A.get_by_name("a")
        now = rt.clock.now_ms()
        await a.arm(now + 10_000)
        assert await a.get_alarm() == now + 10_000
        await a.arm(now + 20_000)  # replaces: one alarm per object
        assert await a.get_alarm() == now + 20_000
        t0 = trio.current_time()
        await trio.sleep(30)
        assert len(alarms(log)) == 1
        fired_at = alarms(log)[0][3] - t0
        assert 19.99 <= fired_at <= 20.01
        assert await a.get_alarm() is None  # deleted after a successful alarm()

        b = rt.env.A.get_by_name("b")
        await b.arm(rt.clock.now_ms() + 5_000)
        await b.disarm()
        assert await b.get_alarm() is None
        await trio.sleep(10)
        assert len(alarms(log)) == 1
        assert rt.alarms.statistics().armed == 0


async def test_past_time_fires_at_once(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_alarmer(log)}) as rt:
        a = rt.env.A.get_by_name("past")
        t0 = trio.current_time()
        await a.arm(rt.clock.now_ms() - 3_600_000)
        with trio.fail_after(1):
            while not any(e[0] == "alarm-done" for e in log):
                await trio.sleep(0.001)
        assert alarms(log)[0][3] - t0 < 0.01
        await a.arm(0)  # the epoch itself is "the past" too
        await trio.sleep(0.1)
        assert len(alarms(log)) == 2


async def test_datetime_float_and_naive(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_alarmer(log)}) as rt:
        a = rt.env.A.get_by_name("dt")
        now = rt.clock.now_ms()
        target = dt.datetime.fromtimestamp((now + 7_000) / 1000, dt.timezone(dt.timedelta(hours=5)))
        await a.arm(target)
        assert await a.get_alarm() == now + 7_000  # same instant as epoch ms
        with pytest.raises(ValueError, match="naive"):
            await a.arm(dt.datetime(2030, 1, 1))
        assert await a.get_alarm() == now + 7_000  # a rejected set changes nothing
        await a.arm(now + 4_000.4)  # floats round to the nearest millisecond
        assert await a.get_alarm() == now + 4_000
        await a.arm(now + 4_000.6)
        assert await a.get_alarm() == now + 4_001
        t0 = trio.current_time()
        await trio.sleep(10)
        assert len(alarms(log)) == 1
        assert 4.0 <= alarms(log)[0][3] - t0 <= 4.01


# ---- get_alarm while alarm() runs ------------------------------------------------------


async def test_get_alarm_is_none_during_alarm_unless_set_again(make_runtime, autojump_clock):
    seen: list = []

    class Again(DurableObject):
        async def arm(self, when):
            await self.ctx.storage.set_alarm(when)

        async def peek(self):
            return await self.ctx.storage.get_alarm()

        async def alarm(self, info):
            seen.append(("start", await self.ctx.storage.get_alarm()))
            await trio.sleep(5)  # other events may look meanwhile
            n = await self.ctx.storage.get("n") or 0
            await self.ctx.storage.put("n", n + 1)
            if n == 0:
                nxt = dotrio_clock_now(self) + 60_000
                await self.ctx.storage.set_alarm(nxt)
                seen.append(("after-set", await self.ctx.storage.get_alarm(), nxt))

    async with make_runtime({"A": Again}) as rt:
        a = rt.env.A.get_by_name("again")
        await a.arm(rt.clock.now_ms() + 1_000)
        await trio.sleep(2)  # alarm() is sleeping now
        assert await a.peek() is None  # hidden from other events too
        await trio.sleep(10)
        assert seen[0] == ("start", None)
        assert seen[1][1] == seen[1][2]  # set during alarm(): visible
        assert await a.peek() == seen[1][2]  # and kept after alarm() returned
        await trio.sleep(70)
        assert [s[0] for s in seen] == ["start", "after-set", "start"]
        assert await a.peek() is None


def dotrio_clock_now(obj: DurableObject) -> int:
    return obj.ctx.now_ms()


async def test_one_alarm_at_a_time(make_runtime, autojump_clock):
    spans: list = []

    class Slow(DurableObject):
        async def arm(self, when):
            await self.ctx.storage.set_alarm(when)

        async def alarm(self, info):
            start = trio.current_time()
            await trio.sleep(10)
            spans.append((start, trio.current_time()))

    async with make_runtime({"A": Slow}) as rt:
        a = rt.env.A.get_by_name("slow")
        await a.arm(rt.clock.now_ms())
        await trio.sleep(1)  # the first alarm() is running
        await a.arm(rt.clock.now_ms())  # due at once, but must wait its turn
        await trio.sleep(1)
        await a.arm(rt.clock.now_ms())  # replaces the one above
        await trio.sleep(40)
        assert len(spans) == 2
        (s1, e1), (s2, e2) = spans
        assert s2 >= e1
        assert s2 - e1 < 0.01  # it was overdue, so it ran as soon as the first ended


# ---- retries ---------------------------------------------------------------------------------


async def test_retry_backoff_schedule_then_drop(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_alarmer(log, fail_times=100)}) as rt:
        a = rt.env.A.get_by_name("flaky")
        await a.arm(rt.clock.now_ms() + 1_000)
        await trio.sleep(400)
        calls = alarms(log)
        assert len(calls) == 1 + MAX_RETRIES == 7
        assert [c[1] for c in calls] == [AlarmInfo(0, False)] + [AlarmInfo(i, True) for i in range(1, 7)]
        times = [c[3] for c in calls]
        for i, (t1, t2) in enumerate(zip(times, times[1:], strict=False), start=1):
            base = 2.0 ** i  # 2, 4, 8, 16, 32, 64 s
            assert base - 0.002 <= t2 - t1 <= base * 1.25 + 0.002, (i, t2 - t1)
        # While a retry is pending get_alarm() answers the alarm; after the drop, None.
        assert await a.get_alarm() is None
        stats = rt.alarms.statistics()
        assert stats.retries_scheduled == 6 and stats.dropped == 1 and stats.alarm_failures == 7
        assert stats.armed == 0 and stats.pending_retries == 0


async def test_retry_then_success_and_jitter_bounds(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_alarmer(log, fail_times=2)}) as rt:
        a = rt.env.A.get_by_name("twice")
        await a.arm(rt.clock.now_ms())
        await trio.sleep(1)
        assert await a.get_alarm() is not None  # waiting for its retry: still set
        await trio.sleep(30)
        assert [c[1].retry_count for c in alarms(log)] == [0, 1, 2]
        assert await a.get_alarm() is None
    for retry in range(1, 7):
        base = 2.0 ** retry
        assert base <= retry_delay(retry) <= base * 1.25
    assert retry_delay(50) <= 64 * 1.25  # capped at the 6th


async def test_set_alarm_in_failing_alarm_wins_over_retry(make_runtime, autojump_clock):
    calls: list = []

    class Resetter(DurableObject):
        async def arm(self, when):
            await self.ctx.storage.set_alarm(when)

        async def alarm(self, info):
            calls.append((info, trio.current_time()))
            if len(calls) == 1:
                await self.ctx.storage.set_alarm(dotrio_clock_now(self) + 100_000)
                raise RuntimeError("but I set a new one")

    async with make_runtime({"A": Resetter}) as rt:
        a = rt.env.A.get_by_name("r")
        await a.arm(rt.clock.now_ms())
        await trio.sleep(200)
        assert [c[0] for c in calls] == [AlarmInfo(0, False), AlarmInfo(0, False)]
        assert 99.99 <= calls[1][1] - calls[0][1] <= 100.01


async def test_reset_during_alarm_counts_as_failure(make_runtime, autojump_clock):
    calls: list = []

    class Aborter(DurableObject):
        async def arm(self, when):
            await self.ctx.storage.set_alarm(when)

        async def alarm(self, info):
            calls.append(info)
            await self.ctx.storage.put("attempt", info.retry_count)
            if not info.is_retry:
                self.ctx.abort("first try resets")

        async def attempt(self):
            return await self.ctx.storage.get("attempt")

    async with make_runtime({"A": Aborter}) as rt:
        a = rt.env.A.get_by_name("ab")
        await a.arm(rt.clock.now_ms())
        await trio.sleep(5)
        assert calls == [AlarmInfo(0, False), AlarmInfo(1, True)]
        assert await a.attempt() == 1  # the aborted try's write was dropped, the retry's kept


# ---- writes and turns ----------------------------------------------------------------------


async def test_set_alarm_kept_when_turn_raises_dropped_when_aborted(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_alarmer(log)}) as rt:
        kept = rt.env.A.get_by_name("kept")
        with pytest.raises(ValueError):
            await kept.arm_then_raise(rt.clock.now_ms() + 1_000)
        assert await kept.get_alarm() is not None
        dropped = rt.env.A.get_by_name("dropped")
        with pytest.raises(ObjectResetError):
            await dropped.arm_then_abort(rt.clock.now_ms() + 1_000)
        assert await dropped.get_alarm() is None
        await trio.sleep(5)
        assert len(alarms(log)) == 1


async def test_alarm_survives_eviction_and_keeps_name(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_alarmer(log)}, idle_timeout=1.0) as rt:
        a = rt.env.A.get_by_name("sleepy")
        await a.arm(rt.clock.now_ms() + 60_000)
        await trio.sleep(30)
        assert rt.statistics().live_objects == 0  # evicted
        await trio.sleep(40)
        assert len(alarms(log)) == 1
        assert [e[1] for e in log if e[0] == "construct"] == ["sleepy", "sleepy"]


async def test_in_memory_runtime(autojump_clock):
    log: list = []
    async with dotrio.Runtime({"A": make_alarmer(log)}, data_dir=None, idle_timeout=1.0) as rt:
        a = rt.env.A.get_by_name("mem")
        await a.arm(rt.clock.now_ms() + 10_000)
        await trio.sleep(20)  # evicted in between: the in-memory index still knows it
        assert len(alarms(log)) == 1
        assert rt.alarms.statistics().index.path is None


# ---- persistence -----------------------------------------------------------------------------


async def test_alarm_survives_restart_and_overdue_fires_on_start(make_runtime, data_dir, monkeypatch, autojump_clock):
    log: list = []
    Alarmer = make_alarmer(log)
    async with make_runtime({"A": Alarmer}) as rt:
        now = rt.clock.now_ms()
        await rt.env.A.get_by_name("overdue").arm(now + 3_600_000)
        await rt.env.A.get_by_name("future").arm(now + 7_200_000 + 30_000)
    assert log == [("construct", "overdue"), ("construct", "future")]
    assert len(index_rows(data_dir)) == 2
    later(monkeypatch, 7_200)  # two hours pass while the server is down
    async with make_runtime({"A": Alarmer}) as rt:
        t0 = trio.current_time()
        assert rt.alarms.statistics().loaded_on_start == 2
        await trio.sleep(1)
        assert [e[0] for e in log[2:]] == ["construct", "alarm", "alarm-done"]
        assert log[2][1] == "overdue"  # the name came back from the index
        assert alarms(log)[0][3] - t0 < 0.05
        await trio.sleep(40)
        assert len(alarms(log)) == 2
        assert 29 <= alarms(log)[1][3] - t0 <= 31
    assert index_rows(data_dir) == []  # both settled: nothing left to wake


async def test_spurious_index_rows_are_ignored(make_runtime, data_dir, autojump_clock):
    log: list = []
    Alarmer = make_alarmer(log)
    async with make_runtime({"A": Alarmer}) as rt:
        truth = rt.env.A.get_by_name("truth")
        ghost = rt.env.A.get_by_name("ghost")
        now = rt.clock.now_ms()
        await truth.arm(now + 3_600_000)
        await ghost.arm(now + 3_600_000)
        await ghost.disarm()
        # Index rows hold the id's 16-byte base (its check half follows from it).
        truth_id, ghost_id = bytes.fromhex(str(truth.id))[:16], bytes.fromhex(str(ghost.id))[:16]
    # What a crash between the index write and the object's commit leaves behind:
    # rows that are early (truth) or have no alarm at all (ghost), plus a row of a
    # namespace this runtime does not host.
    conn = apsw.Connection(str(data_dir / INDEX_FILE))
    with conn:
        conn.execute("INSERT OR REPLACE INTO alarms VALUES('Alarmer', ?, 1000, NULL)", (truth_id,))
        conn.execute("INSERT OR REPLACE INTO alarms VALUES('Alarmer', ?, 1000, NULL)", (ghost_id,))
        conn.execute("INSERT OR REPLACE INTO alarms VALUES('Gone', ?, 1000, NULL)", (b"\x01" * 32,))
    conn.close()
    async with make_runtime({"A": Alarmer}) as rt:
        await trio.sleep(1)
        stats = rt.alarms.statistics()
        assert stats.spurious_wakes == 2 and stats.orphaned_rows == 1
        assert alarms(log) == []
        assert stats.armed == 1  # truth re-armed at its real time
        assert await rt.env.A.get_by_name("truth").get_alarm() == now + 3_600_000
    rows = {(ns, when) for ns, _, when in index_rows(data_dir)}
    assert rows == {("Alarmer", now + 3_600_000), ("Gone", 1000)}


async def test_index_is_written_before_commit_and_batched(make_runtime, data_dir, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_alarmer(log)}) as rt:
        now = rt.clock.now_ms()
        before = rt.alarms.statistics().index
        async with trio.open_nursery() as n:
            for i in range(200):
                n.start_soon(rt.env.A.get_by_name(f"o{i}").arm, now + 1_000_000 + i)
        stats = rt.alarms.statistics()
        assert stats.armed == 200
        assert stats.sync_covers == 0  # all covered ahead of their commits...
        assert stats.index.batches - before.batches <= 6  # ...in a handful of transactions
        assert stats.index.covers_written == 200
        # Re-arming later than the covered time needs no write before the commit.
        covers = stats.index.covers_written
        await rt.env.A.get_by_name("o0").arm(now + 2_000_000)
        assert rt.alarms.statistics().index.covers_written == covers
        # Arming earlier does.
        await rt.env.A.get_by_name("o1").arm(now + 500_000)
        assert rt.alarms.statistics().index.covers_written == covers + 1
    rows = {when for _, _, when in index_rows(data_dir)}
    assert len(rows) == 200 and now + 2_000_000 in rows and now + 500_000 in rows


async def test_alarm_without_handler_is_dropped(make_runtime, autojump_clock):
    class NoHandler(DurableObject):
        async def arm(self, when):
            await self.ctx.storage.set_alarm(when)

        async def peek(self):
            return await self.ctx.storage.get_alarm()

    async with make_runtime({"A": NoHandler}) as rt:
        a = rt.env.A.get_by_name("n")
        await a.arm(rt.clock.now_ms())
        await trio.sleep(1)
        assert await a.peek() is None
        assert rt.alarms.statistics().dropped == 1


async def test_statistics(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_alarmer(log)}) as rt:
        await rt.env.A.get_by_name("s").arm(rt.clock.now_ms() + 5_000)
        stats = rt.statistics().alarms
        assert stats.armed == 1 and stats.wheel.armed == 1 and stats.in_flight == 0
        assert stats.max_in_flight == rt.alarms.max_in_flight == 1024
        await trio.sleep(6)
        stats = rt.alarms.statistics()
        assert stats.dispatched == 1 and stats.alarms_run == 1 and stats.armed == 0
        assert stats.peak_in_flight == 1


async def test_wake_that_cannot_run_backs_off_then_stops(make_runtime, autojump_clock):
    attempts: list = []

    class Broken(DurableObject):
        broken = False

        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            if type(self).broken:
                attempts.append(trio.current_time())
                raise RuntimeError("constructor fails")

        async def arm(self, when):
            await self.ctx.storage.set_alarm(when)

        async def alarm(self, info):
            pass

    async with make_runtime({"A": Broken}, idle_timeout=1.0) as rt:
        await rt.env.A.get_by_name("b").arm(rt.clock.now_ms() + 10_000)
        await trio.sleep(5)
        assert rt.statistics().live_objects == 0
        Broken.broken = True
        await trio.sleep(600)
        # One try, then 7 backed-off ones (2, 4, ... 64 s, the last capped), then it stops.
        assert len(attempts) == MAX_RETRIES + 2
        gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
        assert all(2.0**min(i, 6) <= g <= 2.0**min(i, 6) * 1.25 + 0.01 for i, g in enumerate(gaps, start=1))
        stats = rt.alarms.statistics()
        assert stats.dropped == 1 and stats.armed == 0
        Broken.broken = False
        # Its row is still there: the object's next commit (or a restart) tries again.
        await rt.env.A.get_by_name("b").arm(rt.clock.now_ms())
        await trio.sleep(1)
        assert rt.alarms.statistics().alarms_run == 1
