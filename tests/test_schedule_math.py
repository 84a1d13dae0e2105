"""The schedule arithmetic (dotrio._schedule) on its own: no runtime, no clock, no I/O."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from dotrio._schedule import (
    INT64_MAX,
    INT64_MIN,
    MAX_CATCH_UP,
    MAX_RETRIES,
    clamp_ms,
    cron_after,
    earliest,
    first_run,
    ms_of,
    plan_repeat,
    retry_delay,
    retry_delay_ms,
)

UTC = dt.UTC
T0 = ms_of(dt.datetime(2026, 1, 1, tzinfo=UTC))  # a Thursday, midnight UTC
MIN = 60_000
HOUR = 60 * MIN


class _Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_retry_delays_double_from_two_seconds_with_up_to_a_quarter_jitter_and_stop_growing_at_the_last() -> None:
    assert [retry_delay(n, _Fixed(0.0)) for n in range(1, MAX_RETRIES + 1)] == [2, 4, 8, 16, 32, 64]
    assert [retry_delay(n, _Fixed(1.0)) for n in range(1, MAX_RETRIES + 1)] == [2.5, 5, 10, 20, 40, 80]
    assert retry_delay(MAX_RETRIES + 5, _Fixed(0.0)) == 64  # capped
    assert retry_delay(0, _Fixed(0.0)) == 2  # below 1 counts as the first
    assert retry_delay_ms(3, _Fixed(0.5)) == 9000
    rng = random.Random(7)
    for n in range(1, MAX_RETRIES + 1):
        d = retry_delay(n, rng)
        assert 2.0 ** n <= d <= 1.25 * 2.0 ** n


def test_clamp_and_earliest() -> None:
    assert clamp_ms(INT64_MAX + 1) == INT64_MAX
    assert clamp_ms(INT64_MIN - 1) == INT64_MIN
    assert clamp_ms(5) == 5
    assert earliest(None, None) is None
    assert earliest(3, None) == 3 and earliest(None, 4) == 4
    assert earliest(3, 4) == 3 and earliest(4, 3) == 3


def test_cron_runs_strictly_after_and_in_the_named_zone() -> None:
    assert cron_after("0 * * * *", None, T0) == T0 + HOUR  # strictly after, not at
    assert cron_after("0 * * * *", None, T0 + 1) == T0 + HOUR
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    assert cron_after("0 9 * * *", "Europe/Paris", T0) == T0 + 8 * HOUR
    july = ms_of(dt.datetime(2026, 7, 1, tzinfo=UTC))
    assert cron_after("0 9 * * *", "Europe/Paris", july) == july + 7 * HOUR


@pytest.mark.parametrize(
    ("missed", "late_periods", "runs", "skipped"),
    [
        ("latest", 0, 1, 0),
        ("latest", 5, 1, 5),
        ("all", 5, 6, 0),
        ("all", 500, MAX_CATCH_UP, 501 - MAX_CATCH_UP),
        ("skip", 0, 1, 0),
        ("skip", 3, 0, 4),
    ],
)
def test_interval_missed_run_policies(missed: str, late_periods: int, runs: int, skipped: int) -> None:
    now = T0 + late_periods * MIN + MIN // 2  # half a period after the last due time
    got_runs, following, got_skipped = plan_repeat(None, None, MIN, missed, T0, now)
    assert (got_runs, got_skipped) == (runs, skipped)
    assert following == T0 + (late_periods + 1) * MIN  # the first time after now
    assert following > now


def test_cron_catch_up_is_bounded_and_lands_after_now() -> None:
    # Due at T0, every minute, the wake comes three minutes late: 4 due.
    assert plan_repeat("* * * * *", None, None, "all", T0, T0 + 3 * MIN + 1) == (4, T0 + 4 * MIN, 0)
    assert plan_repeat("* * * * *", None, None, "latest", T0, T0 + 3 * MIN + 1) == (1, T0 + 4 * MIN, 3)
    # 10,000 minutes behind: counting stops at MAX_CATCH_UP and jumps past now.
    now = T0 + 10_000 * MIN + 1
    runs, following, skipped = plan_repeat("* * * * *", None, None, "all", T0, now)
    assert runs == MAX_CATCH_UP
    assert following == T0 + 10_001 * MIN
    assert skipped == MAX_CATCH_UP + 1 - runs


def test_first_run_of_each_kind_of_when() -> None:
    assert first_run(1.5, T0) == (T0 + 1500, None, None)
    assert first_run(0, T0, repeat=0.0004) == (T0, None, 1)  # at least 1 ms
    assert first_run(dt.datetime(2026, 1, 2, tzinfo=UTC), T0) == (T0 + 24 * HOUR, None, None)
    assert first_run("*/5 * * * *", T0 + 1, tz="UTC") == (T0 + 5 * MIN, "*/5 * * * *", None)
    assert first_run(10 ** 30, T0)[0] == INT64_MAX


@pytest.mark.parametrize(
    ("when", "kwargs", "error", "words"),
    [
        (True, {}, TypeError, "got bool"),
        (object(), {}, TypeError, "cron string"),
        (-1, {}, ValueError, ">= 0"),
        (float("nan"), {}, ValueError, "finite"),
        (dt.datetime(2026, 1, 1), {}, ValueError, "naive"),
        ("not cron", {}, ValueError, "not a valid cron"),
        (5, {"tz": "Europe/Paris"}, ValueError, "cron schedules only"),
        ("* * * * *", {"tz": "Mars/Olympus"}, ValueError, "not a known time zone"),
        ("* * * * *", {"repeat": 5}, ValueError, "repeats by itself"),
        (5, {"repeat": 0}, ValueError, "positive number"),
        (5, {"repeat": True}, TypeError, "positive number of seconds, got bool"),  # a wrong type: API.md §9
        (5, {"repeat": "5"}, TypeError, "positive number of seconds, got str"),
        (5, {"repeat": 1e300}, ValueError, "at most"),
        (5, {"missed": "sometimes"}, ValueError, "missed must be one of"),
    ],
)
def test_first_run_says_what_was_wrong(when: object, kwargs: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        first_run(when, T0, **kwargs)
