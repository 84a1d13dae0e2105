"""Timer wheel: both twins against a dict model, against each other, and edge cases.

Every test taking the ``impl`` fixture runs once per twin (pure and compiled).
"""

from __future__ import annotations

import dataclasses
import gc
import random
import weakref
from types import ModuleType

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from dotrio._kernels.wheel import _pure as _wheel_py
from tests.twins import both, twin_fixture

INT64_MAX = (1 << 63) - 1
DAY = 86_400_000
YEAR = 365 * DAY
EPOCH_NOW = 1_700_000_000_000  # a realistic epoch-ms "now"

impl = twin_fixture("wheel")


# -- model-based differential test ------------------------------------------------------


def _check_pop(got: list[tuple[object, int]], model: dict[object, int], now: int, limit: int | None) -> None:
    """``got`` is a valid answer of pop_due(now, limit) on ``model``; updates the model."""
    due = sorted(t for t in model.values() if t <= now)
    expect = len(due) if limit is None else min(limit, len(due))
    assert len(got) == expect
    whens = [t for _, t in got]
    assert whens == due[:expect]  # nondecreasing, and the earliest ones
    assert len({k for k, _ in got}) == len(got)
    for key, t in got:
        assert model.pop(key) == t


keys_st = st.one_of(
    st.integers(0, 40),
    st.tuples(st.just("ns"), st.sampled_from(["a", "b", "c", "d", "e", "f"])),
)
delta_st = st.one_of(
    st.just(0),
    st.integers(-50, 50),
    st.integers(-5_000, 100_000),
    st.integers(-DAY, 40 * DAY),
    st.integers(-3 * YEAR, 80 * YEAR),
)
jump_st = st.one_of(
    st.just(0),
    st.integers(1, 100),
    st.integers(1, 300_000),
    st.integers(DAY, 30 * DAY),
    st.integers(YEAR, 50 * YEAR),
)
limit_st = st.one_of(st.none(), st.integers(1, 4))


class WheelMachine(RuleBasedStateMachine):
    """One twin (``impl``) against a dict key -> when_ms."""

    impl: ModuleType = _wheel_py

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[object, int] = {}

    @initialize(
        now=st.one_of(st.integers(0, 1000), st.just(EPOCH_NOW), st.integers(0, 1 << 45)),
        tick=st.sampled_from([1, 1, 1, 7, 1000]),
    )
    def start(self, now: int, tick: int) -> None:
        self.now = now
        self.wheel = self.impl.TimerWheel(now, tick)

    @rule(key=keys_st, delta=delta_st)
    def arm(self, key: object, delta: int) -> None:
        when = max(-(1 << 63), min(INT64_MAX, self.now + delta))
        self.wheel.arm(key, when)
        self.model[key] = when

    @rule(key=keys_st)
    def cancel(self, key: object) -> None:
        assert self.wheel.cancel(key) is (self.model.pop(key, None) is not None)

    @rule(jump=jump_st, limit=limit_st)
    def pop_due(self, jump: int, limit: int | None) -> None:
        self.now = min(INT64_MAX, self.now + jump)
        _check_pop(self.wheel.pop_due(self.now, limit), self.model, self.now, limit)

    @rule(back=st.integers(1, 10_000))
    def pop_due_behind_cursor(self, back: int) -> None:
        # An earlier "now" than before is legal; it must still be exact.
        then = self.now - back
        _check_pop(self.wheel.pop_due(then), self.model, then, None)

    @rule()
    def pop_to_next_due(self) -> None:
        # What the runtime's driver does: sleep until next_due, then pop.
        nd = self.wheel.next_due()
        if nd is not None and nd > self.now:
            self.now = nd
            got = self.wheel.pop_due(nd)
            assert got
            _check_pop(got, self.model, nd, None)

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "wheel"):
            return
        w = self.wheel
        assert w.next_due() == (min(self.model.values()) if self.model else None)
        assert len(w) == len(self.model)
        stats = w.statistics()
        assert stats.armed == len(self.model)
        assert stats.ready + sum(stats.per_level) == len(self.model)
        for key in (0, 1, ("ns", "a")):
            assert (key in w) is (key in self.model)
            assert w.when(key) == self.model.get(key)


_MACHINE_SETTINGS = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_differential_against_model(impl: ModuleType) -> None:
    machine = type("Machine", (WheelMachine,), {"impl": impl})
    run_state_machine_as_test(machine, settings=_MACHINE_SETTINGS)


class TwinsMachine(RuleBasedStateMachine):
    """Both twins in lockstep: identical answers, including the order of ties."""

    @initialize(now=st.integers(0, 1 << 42), tick=st.sampled_from([1, 3, 1000]))
    def start(self, now: int, tick: int) -> None:
        pure, compiled = both("wheel")
        self.now = now
        self.a = pure.TimerWheel(now, tick)
        self.b = compiled.TimerWheel(now, tick)

    @rule(key=keys_st, delta=st.one_of(st.integers(-3, 3), delta_st))
    def arm(self, key: object, delta: int) -> None:
        self.a.arm(key, self.now + delta)
        self.b.arm(key, self.now + delta)

    @rule(key=keys_st)
    def cancel(self, key: object) -> None:
        assert self.a.cancel(key) == self.b.cancel(key)

    @rule(jump=st.one_of(st.integers(0, 5), jump_st), limit=limit_st)
    def pop_due(self, jump: int, limit: int | None) -> None:
        self.now += jump
        assert self.a.pop_due(self.now, limit) == self.b.pop_due(self.now, limit)

    @invariant()
    def same(self) -> None:
        if hasattr(self, "a"):
            assert self.a.next_due() == self.b.next_due()
            assert self.a.statistics() == self.b.statistics()


def test_twins_identical() -> None:
    both("wheel")  # fails here, not inside hypothesis, when the extension is not built
    run_state_machine_as_test(TwinsMachine, settings=_MACHINE_SETTINGS)


def test_randomized_bulk(impl: ModuleType) -> None:
    # Many more keys than the machine uses, so slots hold several entries and
    # the key table resizes and deletes under load.
    rng = random.Random(7)
    now = EPOCH_NOW
    w = impl.TimerWheel(now)
    model: dict[object, int] = {}
    for _ in range(40):
        for _ in range(300):
            k = rng.randrange(3000)
            if rng.random() < 0.8:
                t = now + rng.choice([rng.randrange(-100, 1000), rng.randrange(30 * DAY)])
                w.arm(k, t)
                model[k] = t
            else:
                assert w.cancel(k) is (model.pop(k, None) is not None)
        now += rng.choice([0, 10, 5000, DAY, 5 * DAY])
        _check_pop(w.pop_due(now), model, now, None)
        assert w.next_due() == (min(model.values()) if model else None)
        assert len(w) == len(model)
    _check_pop(w.pop_due(INT64_MAX), model, INT64_MAX, None)
    assert not model and len(w) == 0


# -- edge cases ------------------------------------------------------------------------


def test_arm_at_cursor_and_in_past(impl: ModuleType) -> None:
    w = impl.TimerWheel(EPOCH_NOW)
    w.arm("at", EPOCH_NOW)
    w.arm("past", EPOCH_NOW - 5 * DAY)
    w.arm("ancient", -12345)
    assert w.next_due() == -12345
    assert w.pop_due(EPOCH_NOW) == [("ancient", -12345), ("past", EPOCH_NOW - 5 * DAY), ("at", EPOCH_NOW)]
    assert w.next_due() is None and len(w) == 0


def test_past_arm_due_at_next_pop_even_with_older_now(impl: ModuleType) -> None:
    w = impl.TimerWheel(1000)
    w.pop_due(5000)
    w.arm("k", 4000)  # behind the cursor
    assert w.next_due() == 4000
    assert w.pop_due(3999) == []
    assert w.pop_due(4000) == [("k", 4000)]


def test_never_early_with_coarse_ticks(impl: ModuleType) -> None:
    w = impl.TimerWheel(0, tick_ms=1000)
    w.arm("a", 1500)
    w.arm("b", 1200)
    w.arm("c", 2999)
    assert w.next_due() == 1200
    assert w.pop_due(1199) == []
    assert w.pop_due(1499) == [("b", 1200)]
    assert w.next_due() == 1500
    w.arm("d", 1300)  # inside the cursor's tick: ready, exact
    assert w.pop_due(1500) == [("d", 1300), ("a", 1500)]
    assert w.pop_due(2998) == []
    assert w.pop_due(2999) == [("c", 2999)]


def test_huge_jumps(impl: ModuleType) -> None:
    w = impl.TimerWheel(EPOCH_NOW)
    times = {
        "ms": EPOCH_NOW + 1,
        "day": EPOCH_NOW + DAY,
        "year": EPOCH_NOW + YEAR,
        "decade": EPOCH_NOW + 10 * YEAR,
        "millennium": EPOCH_NOW + 1000 * YEAR,
        "end": INT64_MAX,
    }
    for k, t in times.items():
        w.arm(k, t)
    assert w.next_due() == EPOCH_NOW + 1
    assert w.pop_due(EPOCH_NOW + 2 * YEAR) == [("ms", times["ms"]), ("day", times["day"]), ("year", times["year"])]
    assert w.next_due() == times["decade"]
    assert w.pop_due(EPOCH_NOW + 10 * YEAR - 1) == []
    assert w.pop_due(EPOCH_NOW + 10 * YEAR) == [("decade", times["decade"])]
    assert w.next_due() == times["millennium"]
    w.arm("soon", EPOCH_NOW + 10 * YEAR + 5)
    assert w.next_due() == EPOCH_NOW + 10 * YEAR + 5
    assert w.pop_due(INT64_MAX) == [
        ("soon", EPOCH_NOW + 10 * YEAR + 5),
        ("millennium", times["millennium"]),
        ("end", INT64_MAX),
    ]
    # The cursor is now at the end of time: everything arms as ready.
    w.arm("late", 5)
    assert w.pop_due(INT64_MAX) == [("late", 5)]


def test_limit(impl: ModuleType) -> None:
    w = impl.TimerWheel(0)
    for i in range(10):
        w.arm(i, 100 + i // 3)  # ties in groups of three
    w.arm("later", 10_000)
    first = w.pop_due(5000, limit=4)
    assert [t for _, t in first] == [100, 100, 100, 101]
    assert w.next_due() == 101  # the rest stay armed and due
    assert w.pop_due(5000, limit=0) == []
    w.arm("late-arm", 50)  # armed in the past while others are still due
    second = w.pop_due(5000, limit=2)
    assert second[0] == ("late-arm", 50)
    rest = w.pop_due(5000)
    assert [t for _, t in second[1:] + rest] == [101, 101, 102, 102, 102, 103]
    assert {k for k, _ in first + second + rest} == set(range(10)) | {"late-arm"}
    assert w.next_due() == 10_000
    with pytest.raises(ValueError):
        w.pop_due(5000, limit=-1)
    with pytest.raises(TypeError):
        w.pop_due(5000, limit=1.0)  # type: ignore[arg-type]


def test_rearm(impl: ModuleType) -> None:
    w = impl.TimerWheel(1000)
    w.arm("k", 900)  # ready
    w.arm("k", 5000)  # re-armed from the ready heap into the wheel
    assert len(w) == 1 and w.when("k") == 5000
    assert w.pop_due(4999) == []
    w.arm("k", 4000)  # re-armed while due
    assert w.next_due() == 4000
    assert w.pop_due(4999) == [("k", 4000)]
    w.arm("j", 10 * DAY)
    w.arm("j", 20)
    assert w.pop_due(5000) == [("j", 20)]


def test_cancel(impl: ModuleType) -> None:
    w = impl.TimerWheel(0)
    assert w.cancel("nobody") is False
    w.arm("a", 10)
    w.arm("b", 10 * DAY)
    assert w.cancel("a") is True
    assert w.cancel("a") is False
    assert "a" not in w and "b" in w
    assert w.next_due() == 10 * DAY
    assert w.cancel("b") is True
    assert w.next_due() is None
    assert w.pop_due(INT64_MAX) == []


def test_cancel_slot_minimum(impl: ModuleType) -> None:
    # All in one far slot; cancelling its earliest entry invalidates the cached
    # minimum, and next_due must still be exact every time.
    w = impl.TimerWheel(0)
    base = 3 * DAY
    for i in range(50):
        w.arm(i, base + 1000 * ((i * 17) % 50))
    order = sorted(range(50), key=lambda i: (i * 17) % 50)
    for n, i in enumerate(order[:-1]):
        assert w.next_due() == base + 1000 * n
        assert w.cancel(i)
    assert w.next_due() == base + 1000 * 49


def test_slot_opened_early_by_next_due(impl: ModuleType) -> None:
    w = impl.TimerWheel(0)
    w.arm("a", 3 * DAY)
    w.arm("b", 3 * DAY + 1000)
    w.arm("c", 9 * DAY)
    w.cancel("a")
    assert w.next_due() == 3 * DAY + 1000
    # The cursor may now be ahead of "now" (0); arming behind it stays exact.
    assert w.statistics().cursor_ms <= 3 * DAY + 1000
    w.arm("d", DAY)
    w.arm("e", 2 * DAY)
    assert w.next_due() == DAY
    assert w.pop_due(DAY - 1) == []
    assert w.pop_due(DAY) == [("d", DAY)]
    assert w.pop_due(3 * DAY) == [("e", 2 * DAY)]
    assert w.pop_due(3 * DAY + 1000) == [("b", 3 * DAY + 1000)]
    assert w.next_due() == 9 * DAY


def test_rearming_the_earliest_of_a_crowd(impl: ModuleType) -> None:
    # 20,000 alarms in one far slot; the earliest is re-armed later again and
    # again (an object pushing its alarm back). Each next_due must stay cheap:
    # the slot is opened once instead of rescanned per call.
    w = impl.TimerWheel(0)
    base = 5 * DAY
    n = 20_000
    for i in range(n):
        w.arm(i, base + i)
    for j in range(2000):
        assert w.next_due() == base + j
        w.arm(j, base + n + j)
    assert w.next_due() == base + 2000
    got = w.pop_due(base + n + 1999)
    assert [t for _, t in got] == list(range(base + 2000, base + n + 2000))


def test_ready_heap_cancel_and_rearm(impl: ModuleType) -> None:
    # Everything behind the cursor lives in the ready heap; removing from its
    # middle must sift the moved element up as well as down.
    rng = random.Random(3)
    w = impl.TimerWheel(EPOCH_NOW)
    model: dict[object, int] = {}
    for i in range(400):
        t = EPOCH_NOW - rng.randrange(10**6)
        w.arm(i, t)
        model[i] = t
    for _ in range(300):
        k = rng.randrange(400)
        if rng.random() < 0.5:
            assert w.cancel(k) is (model.pop(k, None) is not None)
        else:
            t = EPOCH_NOW - rng.randrange(10**6)
            w.arm(k, t)
            model[k] = t
        assert w.next_due() == min(model.values())
    assert w.statistics().ready == len(model)
    while model:
        _check_pop(w.pop_due(EPOCH_NOW, limit=7), model, EPOCH_NOW, 7)


def test_many_keys_same_ms(impl: ModuleType) -> None:
    w = impl.TimerWheel(EPOCH_NOW)
    t = EPOCH_NOW + 12_345
    keys = [("ns", f"obj{i}") for i in range(2000)]
    for k in keys:
        w.arm(k, t)
    assert w.pop_due(t - 1) == []
    got = w.pop_due(t)
    assert [x for _, x in got] == [t] * 2000
    assert sorted(k for k, _ in got) == sorted(keys)
    # Ties are ordered by handle, i.e. arming order for fresh handles.
    assert [k for k, _ in got] == keys


def test_tie_order_is_deterministic(impl: ModuleType) -> None:
    def run() -> list[tuple[object, int]]:
        w = impl.TimerWheel(0)
        for i in range(100):
            w.arm(i, 500)
        for i in range(0, 100, 3):
            w.cancel(i)
        for i in range(100, 120):
            w.arm(i, 500)
        return w.pop_due(500)

    assert run() == run()


def test_key_semantics_follow_dict(impl: ModuleType) -> None:
    w = impl.TimerWheel(0)
    w.arm(1, 10)
    w.arm(1.0, 20)  # equal and same hash: the same key, as in a dict
    assert len(w) == 1 and w.when(1) == 20
    w.arm(("ns", "x" * 3), 30)
    assert ("ns", "".join(["x", "x", "x"])) in w
    with pytest.raises(TypeError):
        w.arm(["unhashable"], 5)
    with pytest.raises(TypeError):
        w.cancel({})


class _Collide:
    """Distinct keys with one hash: exercises probing and deletion in the key table."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return 42

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Collide) and other.n == self.n


def test_hash_collisions(impl: ModuleType) -> None:
    w = impl.TimerWheel(0)
    ks = [_Collide(i) for i in range(200)]
    for i, k in enumerate(ks):
        w.arm(k, 1000 + i)
    for k in ks[::2]:
        assert w.cancel(_Collide(k.n))
    for i, k in enumerate(ks):
        assert (k in w) is (i % 2 == 1)
        assert w.when(_Collide(i)) == (1000 + i if i % 2 else None)
    got = w.pop_due(10_000)
    assert [k.n for k, _ in got] == list(range(1, 200, 2))
    assert len(w) == 0


def test_eq_that_mutates_the_wheel(impl: ModuleType) -> None:
    # A key whose __eq__ arms more keys (growing the key table mid-probe):
    # the lookup must start over, as dict's does, and stay correct.
    w = impl.TimerWheel(0)

    class Meddler:
        def __init__(self, n: int) -> None:
            self.n = n

        def __hash__(self) -> int:
            return 7

        def __eq__(self, other: object) -> bool:
            if isinstance(other, Meddler) and len(w) < 500:
                for i in range(200):
                    w.arm(("filler", len(w), i), 10**6)
            return isinstance(other, Meddler) and other.n == self.n

    w.arm(Meddler(1), 10)
    w.arm(Meddler(2), 20)
    w.arm(Meddler(1), 30)
    assert w.when(Meddler(1)) == 30 and w.when(Meddler(2)) == 20
    got = w.pop_due(100)
    assert [(k.n, t) for k, t in got] == [(2, 20), (1, 30)]
    assert len(w) == len(w.pop_due(10**6)) and len(w) == 0


def test_keys_are_released(impl: ModuleType) -> None:
    class Key:
        pass

    w = impl.TimerWheel(0)
    a, b = Key(), Key()
    ra, rb = weakref.ref(a), weakref.ref(b)
    w.arm(a, 5)
    w.arm(b, 10 * DAY)
    assert w.pop_due(5)[0][0] is a
    assert w.cancel(b)
    del a, b
    gc.collect()
    assert ra() is None and rb() is None


def test_validation(impl: ModuleType) -> None:
    with pytest.raises(ValueError):
        impl.TimerWheel(-1)
    with pytest.raises(ValueError):
        impl.TimerWheel(0, tick_ms=0)
    with pytest.raises(TypeError):
        impl.TimerWheel(1.5)
    w = impl.TimerWheel(0)
    for bad in (1.0, "5", True, None):
        with pytest.raises(TypeError):
            w.arm("k", bad)
        with pytest.raises(TypeError):
            w.pop_due(bad)
    with pytest.raises(OverflowError):
        w.arm("k", 1 << 63)
    with pytest.raises(OverflowError):
        w.arm("k", -(1 << 63) - 1)
    assert len(w) == 0


def test_statistics(impl: ModuleType) -> None:
    w = impl.TimerWheel(10_000, tick_ms=10)
    w.arm("ready", 5)
    w.arm("l0", 10_100)
    w.arm("far", 10_000 + 40 * DAY)
    s = w.statistics()
    assert isinstance(s, _wheel_py.WheelStatistics)
    assert (s.armed, s.ready, s.levels, s.slots_per_level, s.tick_ms, s.cursor_ms) == (3, 1, 11, 64, 10, 10_000)
    assert s.per_level[0] == 1 and sum(s.per_level) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.armed = 0  # type: ignore[misc]
    w.pop_due(10_055)
    assert w.statistics().cursor_ms == 10_050
