"""Schedule arithmetic, with no I/O: retry delays, cron times, the missed-run
policy, and the validation of ``DurableObject.schedule()`` arguments.

The alarm manager (``dotrio.runtime._alarms``) decides *when* to do things
with these; the rows live in each object's database
(``dotrio.storage._schedules``). Everything here is a pure function of its
arguments (the retry jitter takes its random source as an argument), so it is
unit-tested without a runtime or a clock.
"""

from __future__ import annotations

import datetime as _dt
import math
import random
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

__all__ = [
    "FIRST_RETRY_S",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_CATCH_UP",
    "MAX_RETRIES",
    "MISSED_POLICIES",
    "RETRY_JITTER",
    "Schedule",
    "clamp_ms",
    "cron_after",
    "earliest",
    "first_run",
    "ms_of",
    "plan_repeat",
    "retry_delay",
    "retry_delay_ms",
    "zone",
]

MAX_RETRIES = 6
FIRST_RETRY_S = 2.0
RETRY_JITTER = 0.25
MAX_CATCH_UP = 100
MISSED_POLICIES = ("latest", "all", "skip")
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
UTC = _dt.UTC


def retry_delay(retry: int, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``retry`` (1-based): 2, 4, ... 64 plus up to 25 %."""
    base = FIRST_RETRY_S * (2.0 ** (min(max(retry, 1), MAX_RETRIES) - 1))
    return base * (1.0 + RETRY_JITTER * (rng or random).random())


def retry_delay_ms(retry: int, rng: random.Random | None = None) -> int:
    """:func:`retry_delay` in whole milliseconds."""
    return int(round(retry_delay(retry, rng) * 1000))


def clamp_ms(ms: int) -> int:
    """``ms`` clamped to int64: the wheel and the index store int64, and a time
    beyond that is "never" for every practical purpose."""
    return INT64_MAX if ms > INT64_MAX else INT64_MIN if ms < INT64_MIN else ms


def earliest(a: int | None, b: int | None) -> int | None:
    """The earlier of two optional times (None is "no time")."""
    if a is None:
        return b
    if b is None or a <= b:
        return a
    return b


def zone(tz: str | None) -> _dt.tzinfo:
    """The time zone named ``tz`` (UTC for None)."""
    return UTC if tz is None else ZoneInfo(tz)


def ms_of(d: _dt.datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return int(round(d.timestamp() * 1000))


def cron_after(expr: str, tz: str | None, after_ms: int) -> int:
    """The first run of ``expr`` strictly after ``after_ms``."""
    base = _dt.datetime.fromtimestamp(after_ms / 1000.0, zone(tz))
    return ms_of(croniter(expr, base).get_next(_dt.datetime))


def plan_repeat(
    cron: str | None, tz: str | None, interval_ms: int | None, missed: str, next_ms: int, now_ms: int
) -> tuple[int, int, int]:
    """For a repeating schedule due at ``next_ms``: (runs now, next run, runs skipped).

    ``missed`` decides what a late wake does with the runs it missed:
    ``"latest"`` runs once, ``"all"`` once per missed time (at most
    :data:`MAX_CATCH_UP`), ``"skip"`` only if exactly one time is due."""
    if interval_ms:
        due = (now_ms - next_ms) // interval_ms + 1
        following = next_ms + due * interval_ms
    else:
        assert cron is not None
        it = croniter(cron, _dt.datetime.fromtimestamp(next_ms / 1000.0, zone(tz)))
        due = 1
        following = ms_of(it.get_next(_dt.datetime))
        while following <= now_ms and due <= MAX_CATCH_UP:
            due += 1
            following = ms_of(it.get_next(_dt.datetime))
        if following <= now_ms:
            # More than MAX_CATCH_UP behind: counting them all could take
            # unbounded time, so jump to the first run after now.
            following = cron_after(cron, tz, now_ms)
    if missed == "all":
        runs = min(due, MAX_CATCH_UP)
    elif missed == "skip":
        runs = 1 if due == 1 else 0
    else:
        runs = 1
    return runs, following, due - runs


def first_run(
    when: object, now_ms: int, *, repeat: object = None, missed: object = "latest", tz: object = None
) -> tuple[int, str | None, int | None]:
    """Validate ``schedule()``'s timing arguments: (first run in epoch ms,
    cron expression or None, repeat interval in ms or None). Raises TypeError
    or ValueError saying what was wrong and what was expected."""
    if missed not in MISSED_POLICIES:
        raise ValueError(f"schedule() missed must be one of {MISSED_POLICIES}, got {missed!r}")
    if tz is not None:
        if not isinstance(when, str):
            raise ValueError("schedule() tz applies to cron schedules only")
        try:
            zone(tz)  # type: ignore[arg-type]
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"schedule() tz {tz!r} is not a known time zone") from None
    cron: str | None = None
    if isinstance(when, bool):
        raise TypeError("schedule() when must be seconds, an aware datetime or a cron string, got bool")
    if isinstance(when, str):
        if not croniter.is_valid(when):
            raise ValueError(f"schedule(): {when!r} is not a valid cron expression")
        cron = when
        first = cron_after(cron, tz, now_ms)  # type: ignore[arg-type]
    elif isinstance(when, (int, float)):
        if not math.isfinite(when) or when < 0:
            raise ValueError(f"schedule() delay must be a finite number of seconds >= 0, got {when!r}")
        first = now_ms + int(round(when * 1000))
    elif isinstance(when, _dt.datetime):
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError("schedule() got a naive datetime; pass an aware one (e.g. tzinfo=timezone.utc)")
        first = ms_of(when)
    else:
        raise TypeError(
            f"schedule() when must be seconds, an aware datetime or a cron string, got {type(when).__name__}"
        )
    interval_ms: int | None = None
    if repeat is not None:
        if cron is not None:
            raise ValueError("schedule(): a cron schedule repeats by itself; repeat= is for delays and datetimes")
        if isinstance(repeat, bool) or not isinstance(repeat, (int, float)):
            raise TypeError(f"schedule() repeat must be a positive number of seconds, got {type(repeat).__name__}")
        if not math.isfinite(repeat) or repeat <= 0:
            raise ValueError(f"schedule() repeat must be a positive number of seconds, got {repeat!r}")
        interval_ms = max(1, int(round(repeat * 1000)))
        if interval_ms > INT64_MAX:
            # Stored as an SQLite integer (signed 64-bit milliseconds).
            raise ValueError(f"schedule() repeat must be at most {INT64_MAX // 1000} seconds, got {repeat!r}")
    return clamp_ms(first), cron, interval_ms


@dataclass(frozen=True)
class Schedule:
    """One entry of ``await self.get_schedules()``."""

    id: str
    """The schedule's id (the one ``schedule()`` returned)."""
    method: str
    """The name of the method it runs."""
    payload: Any
    """The payload the method receives (a fresh copy each run)."""
    next_run_ms: int
    """Epoch milliseconds of the next run (of the next retry, after a failure)."""
    cron: str | None
    """The cron expression of a cron schedule, else None."""
    tz: str | None
    """The time zone of a cron schedule (None means UTC)."""
    repeat: float | None
    """Interval in seconds for ``repeat=`` schedules."""
    missed: str
    """The missed-run policy, one of ``"latest"``, ``"all"`` or ``"skip"``."""
    retries: int
    """Failed attempts of a one-shot schedule so far."""

    @property
    def next_run(self) -> _dt.datetime:
        """``next_run_ms`` as an aware UTC datetime."""
        return _dt.datetime.fromtimestamp(self.next_run_ms / 1000.0, UTC)

    @property
    def repeating(self) -> bool:
        """True for cron and ``repeat=`` schedules."""
        return self.cron is not None or self.repeat is not None
