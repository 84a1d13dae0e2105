"""The scheduler on the one alarm (issue 4 item 5), in virtual time."""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest
import trio
from croniter import croniter

import dotrio._clock
from dotrio import DurableObject, ObjectResetError, Schedule
from dotrio._schedule import MAX_CATCH_UP


class _ShiftedTime:
    def __init__(self, offset_s: float) -> None:
        self.offset_s = offset_s

    def time(self) -> float:
        return time.time() + self.offset_s


def make_agent(log: list, fail: set | None = None):
    fail = fail if fail is not None else set()

    class Agent(DurableObject):
        def _now(self) -> int:
            return self.ctx.now_ms()

        async def plan(self, when, method="tick", payload=None, **kw):
            return await self.schedule(when, method, payload, **kw)

        async def plan_then_abort(self, when):
            await self.schedule(when, "tick", "aborted")
            self.ctx.abort("drop it")

        async def plans(self):
            return [
                (s.id, s.method, s.payload, s.next_run_ms, s.cron, s.repeat, s.missed, s.retries)
                for s in await self.get_schedules()
            ]

        async def unplan(self, sid):
            return await self.cancel_schedule(sid)

        async def arm(self, when):
            await self.ctx.storage.set_alarm(when)

        async def get_alarm(self):
            return await self.ctx.storage.get_alarm()

        async def wipe(self):
            await self.ctx.storage.delete_all()

        async def tick(self, payload):
            log.append(("tick", payload, self._now(), trio.current_time()))
            if isinstance(payload, str) and payload in fail:
                raise RuntimeError(f"tick {payload} fails")

        async def again(self, payload):
            # The agent pattern: a one-shot that re-schedules itself under the same id.
            log.append(("again", payload, self._now(), trio.current_time()))
            if payload < 3:
                await self.schedule(10, "again", payload + 1, id="loop")

        async def alarm(self, info):
            log.append(("alarm", await self.ctx.storage.get_alarm(), self._now(), trio.current_time()))

        def sync_method(self, payload):
            log.append(("sync", payload, self._now(), trio.current_time()))

    return Agent


def ticks(log: list, kind: str = "tick") -> list:
    return [e for e in log if e[0] == kind]


async def test_delay_schedule_runs_once_with_payload(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_agent(log)}) as rt:
        a = rt.env.A.get_by_name("a")
        now = rt.clock.now_ms()
        sid = await a.plan(5, payload={"k": [1, 2]})
        assert isinstance(sid, str) and sid
        plans = await a.plans()
        assert plans == [(sid, "tick", {"k": [1, 2]}, now + 5_000, None, None, "latest", 0)]
        assert await a.get_alarm() is None  # schedules are not the user's alarm
        await trio.sleep(20)
        assert [(e[1], e[2]) for e in ticks(log)] == [({"k": [1, 2]}, now + 5_000)]
        assert await a.plans() == []
        assert rt.alarms.statistics().schedules_run == 1


async def test_datetime_and_sync_methods(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_agent(log)}) as rt:
        a = rt.env.A.get_by_name("dt")
        now = rt.clock.now_ms()
        at = dt.datetime.fromtimestamp((now + 3_000) / 1000, dt.UTC)
        await a.plan(at, "sync_method", "s")
        await trio.sleep(5)
        assert [(e[0], e[1], e[2]) for e in log] == [("sync", "s", now + 3_000)]


async def test_validation(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_agent(log)}) as rt:
        a = rt.env.A.get_by_name("v")
        with pytest.raises(ValueError, match="naive"):
            await a.plan(dt.datetime(2030, 1, 1))
        with pytest.raises(ValueError, match="cron"):
            await a.plan("every tuesday")
        with pytest.raises(ValueError, match="schedulable"):
            await a.plan(1, "no_such_method")
        with pytest.raises(ValueError, match="schedulable"):
            await a.plan(1, "alarm")
        with pytest.raises(ValueError, match="schedulable"):
            await a.plan(1, "schedule")
        with pytest.raises(ValueError, match=">= 0"):
            await a.plan(-1)
        with pytest.raises(ValueError, match="finite"):
            await a.plan(float("nan"))
        with pytest.raises(TypeError):
            await a.plan(True)
        with pytest.raises(TypeError):
            await a.plan(1, payload=object())
        with pytest.raises(ValueError, match="missed"):
            await a.plan(1, missed="sometimes")
        with pytest.raises(ValueError, match="tz"):
            await a.plan(1, tz="UTC")
        with pytest.raises(ValueError, match="time zone"):
            await a.plan("* * * * *", tz="Mars/Olympus")
        with pytest.raises(ValueError, match="repeat"):
            await a.plan("* * * * *", repeat=5)
        with pytest.raises(ValueError, match="repeat"):
            await a.plan(1, repeat=0)
        assert await a.plans() == []  # nothing half-written


async def test_scheduler_methods_are_not_rpc(make_runtime):
    async with make_runtime({"A": make_agent([])}) as rt:
        stub = rt.env.A.get_by_name("rpc")
        for name in ("schedule", "get_schedules", "cancel_schedule"):
            with pytest.raises(AttributeError):
                getattr(stub, name)


async def test_cancel_and_replace_by_id(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_agent(log)}) as rt:
        a = rt.env.A.get_by_name("c")
        s1 = await a.plan(5, payload=1)
        await a.plan(6, payload=2, id="mine")
        assert await a.plan(7, payload=3, id="mine") == "mine"  # replaces
        assert [p[2] for p in await a.plans()] == [1, 3]
        assert await a.unplan(s1) is True
        assert await a.unplan(s1) is False
        assert await a.unplan("never") is False
        await trio.sleep(10)
        assert [e[1] for e in ticks(log)] == [3]
        # The cancelled one's wake came and found nothing due (at 5 s).
        assert rt.alarms.statistics().spurious_wakes >= 1


async def test_cron_schedule_repeats_on_croniter_times(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_agent(log)}) as rt:
        a = rt.env.A.get_by_name("cron")
        now = rt.clock.now_ms()
        await a.plan("*/5 * * * *", payload="c")
        it = croniter("*/5 * * * *", dt.datetime.fromtimestamp(now / 1000, dt.UTC))
        expected = [round(it.get_next(dt.datetime).timestamp() * 1000) for _ in range(3)]
        assert (await a.plans())[0][3] == expected[0]
        await trio.sleep((expected[2] - now) / 1000 + 1)
        assert [e[2] for e in ticks(log)] == expected
        nxt = (await a.plans())[0]
        assert nxt[4] == "*/5 * * * *" and nxt[3] == expected[2] + 300_000


async def test_cron_time_zone(make_runtime, autojump_clock):
    async with make_runtime({"A": make_agent([])}) as rt:
        a = rt.env.A.get_by_name("tz")
        now = rt.clock.now_ms()
        await a.plan("0 9 * * *", tz="Asia/Tokyo")
        zone = ZoneInfo("Asia/Tokyo")
        nine = croniter("0 9 * * *", dt.datetime.fromtimestamp(now / 1000, zone)).get_next(dt.datetime)
        next_ms = (await a.plans())[0][3]
        assert next_ms == round(nine.timestamp() * 1000)
        assert dt.datetime.fromtimestamp(next_ms / 1000, zone).hour == 9


async def test_repeat_interval(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_agent(log)}) as rt:
        a = rt.env.A.get_by_name("every")
        now = rt.clock.now_ms()
        await a.plan(2, payload="r", repeat=3)
        await trio.sleep(12)
        assert [e[2] - now for e in ticks(log)] == [2_000, 5_000, 8_000, 11_000]
        assert (await a.plans())[0][5] == 3.0


async def test_user_alarm_and_schedules_share_the_one_wake(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_agent(log)}) as rt:
        a = rt.env.A.get_by_name("both")
        now = rt.clock.now_ms()
        await a.arm(now + 10_000)
        await a.plan(5, payload="early")
        await a.plan(15, payload="late")
        assert await a.get_alarm() == now + 10_000  # the user's alarm, not the earliest wake
        await trio.sleep(20)
        assert [(e[0], e[2] - now) for e in log] == [("tick", 5_000), ("alarm", 10_000), ("tick", 15_000)]
        assert log[1][1] is None  # get_alarm() inside alarm(): hidden as usual
        assert await a.get_alarm() is None
        # Same instant: the user's alarm runs first, then the schedule.
        now = rt.clock.now_ms()
        await a.plan(3, payload="tie")
        await a.arm(now + 3_000)
        await trio.sleep(5)
        assert [e[0] for e in log[3:]] == ["alarm", "tick"]


async def test_one_shot_failure_retries_then_drops(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_agent(log, fail={"bad"})}) as rt:
        a = rt.env.A.get_by_name("f")
        await a.plan(1, payload="bad")
        await trio.sleep(400)
        times = [e[3] for e in ticks(log)]
        assert len(times) == 7
        for i, (t1, t2) in enumerate(zip(times, times[1:], strict=False), start=1):
            assert 2.0**i - 0.002 <= t2 - t1 <= 2.0**i * 1.25 + 0.002
        assert await a.plans() == []
        stats = rt.alarms.statistics()
        assert stats.schedule_failures == 7 and stats.dropped == 1


async def test_repeating_failure_moves_on(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_agent(log, fail={"bad"})}) as rt:
        a = rt.env.A.get_by_name("rf")
        now = rt.clock.now_ms()
        await a.plan(10, payload="bad", repeat=10)
        await trio.sleep(35)
        assert [e[2] - now for e in ticks(log)] == [10_000, 20_000, 30_000]  # no retries in between


async def test_self_rescheduling_under_the_same_id(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_agent(log)}) as rt:
        a = rt.env.A.get_by_name("loop")
        now = rt.clock.now_ms()
        await a.plan(10, "again", 0, id="loop")
        await trio.sleep(60)
        assert [(e[1], e[2] - now) for e in ticks(log, "again")] == [(0, 10_000), (1, 20_000), (2, 30_000), (3, 40_000)]
        assert await a.plans() == []


async def test_schedule_in_aborted_turn_is_dropped(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_agent(log)}) as rt:
        a = rt.env.A.get_by_name("abort")
        with pytest.raises(ObjectResetError):
            await a.plan_then_abort(2)
        assert await a.plans() == []
        await trio.sleep(5)
        assert ticks(log) == []
        assert rt.alarms.statistics().spurious_wakes == 1  # the early wake it left


async def test_delete_all_removes_schedules(make_runtime, autojump_clock):
    log: list = []
    async with make_runtime({"A": make_agent(log)}) as rt:
        a = rt.env.A.get_by_name("wipe")
        await a.plan(5)
        await a.wipe()
        assert await a.plans() == []
        await trio.sleep(10)
        assert ticks(log) == []
        await a.plan(1, payload="after")  # the table comes back on demand
        await trio.sleep(2)
        assert [e[1] for e in ticks(log)] == ["after"]


async def test_schedules_survive_eviction_and_restart(make_runtime, monkeypatch, autojump_clock):
    log: list = []
    Agent = make_agent(log)
    async with make_runtime({"A": Agent}, idle_timeout=1.0) as rt:
        a = rt.env.A.get_by_name("persist")
        now = rt.clock.now_ms()
        await a.plan(30, payload="evicted")
        await a.plan(3_600, payload="restarted")
        await trio.sleep(40)
        assert rt.statistics().evictions >= 1
        assert [e[1] for e in ticks(log)] == ["evicted"]
    monkeypatch.setattr(dotrio._clock, "time", _ShiftedTime(7_200))
    async with make_runtime({"A": Agent}) as rt:
        await trio.sleep(1)
        assert [e[1] for e in ticks(log)] == ["evicted", "restarted"]
        assert ticks(log)[1][2] - now >= 7_200_000  # ran on start, late


@pytest.mark.parametrize(
    ("missed", "runs", "skipped"),
    [("latest", 1, 9), ("all", 10, 0), ("skip", 0, 10)],
)
async def test_missed_run_policies(make_runtime, monkeypatch, autojump_clock, missed, runs, skipped):
    log: list = []
    Agent = make_agent(log)
    async with make_runtime({"A": Agent}) as rt:
        a = rt.env.A.get_by_name("m")
        now = rt.clock.now_ms()
        await a.plan(60, payload=missed, repeat=60, missed=missed)
    # Down for 630 s: the runs at 60, 120, ... 600 s were all missed.
    monkeypatch.setattr(dotrio._clock, "time", _ShiftedTime(630))
    async with make_runtime({"A": Agent}) as rt:
        await trio.sleep(1)
        assert len(ticks(log)) == runs
        assert rt.alarms.statistics().schedule_runs_skipped == skipped
        plan = (await rt.env.A.get_by_name("m").plans())[0]
        assert plan[3] == now + 660_000  # back on the grid, at the next future time
        await trio.sleep(30)
        assert len(ticks(log)) == runs + 1  # and on time from then on


async def test_catch_up_is_bounded(make_runtime, monkeypatch, autojump_clock):
    log: list = []
    Agent = make_agent(log)
    async with make_runtime({"A": Agent}) as rt:
        await rt.env.A.get_by_name("b").plan(1, payload="x", repeat=1, missed="all")
    monkeypatch.setattr(dotrio._clock, "time", _ShiftedTime(10_000))  # 10,000 runs missed
    async with make_runtime({"A": Agent}) as rt:
        await trio.sleep(0.5)
        assert len(ticks(log)) == MAX_CATCH_UP
        assert rt.alarms.statistics().schedule_runs_skipped == 10_000 - MAX_CATCH_UP


def test_schedule_dataclass():
    s = Schedule("i", "m", None, 1_000, "* * * * *", None, None, "latest", 0)
    assert s.repeating and s.next_run == dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC)
    assert not Schedule("i", "m", None, 0, None, None, None, "latest", 0).repeating


async def test_schedule_that_resets_the_object_backs_off(make_runtime, autojump_clock):
    calls: list = []

    class Resetting(DurableObject):
        async def plan(self):
            return await self.schedule(1, "boom")

        async def boom(self, payload):
            calls.append(trio.current_time())
            if len(calls) < 50:  # a hot loop would get here at once and stop failing
                self.ctx.abort("schedule resets the object")

    async with make_runtime({"A": Resetting}) as rt:
        await rt.env.A.get_by_name("r").plan()
        await trio.sleep(100)
        # Each reset rolls the schedule's row back, so it stays due; the wakes back off
        # (1 s, then +2, +4, +8, +16, +32, +64 s): 6 tries in the first 100 s.
        assert len(calls) == 6
        assert calls[1] - calls[0] >= 2.0
