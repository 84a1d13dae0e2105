"""Alarms at scale: the per-object alarm, its retries, and a scheduler on top.

Truth, hint and clock
---------------------
* **Truth** is each object's own database: the user's alarm is the
  ``_dotrio_meta`` row ``'alarm'`` (written by ``ObjectStorage.commit()``), the
  schedules are rows of ``_dotrio_schedules``. An object's *wake time* is the
  earliest of its alarm (or, while a retry is pending, that retry's time) and
  its schedules' next runs.
* **Hint**: ``data_dir/alarms.sqlite`` (:mod:`dotrio._alarm_index`) holds, per
  object, a time no later than its wake time. It is lowered ("covered")
  *before* the object's commit makes an earlier wake time true, and set exactly
  ("settled") *after* it, in batches. A crash anywhere therefore leaves rows
  that are at worst early or stale: a spurious wake, which the object answers
  by re-reading its own rows and going back to sleep. An alarm is never lost.
  In-memory runtimes (``data_dir=None``) keep the same index in SQLite memory.
* **Clock**: a :class:`~dotrio._kernels.wheel.TimerWheel` holds every armed wake time
  (keyed by an int: namespace number << 128 | the object id's 128-bit base,
  so no Python tuple or string per alarm). One driver task sleeps until ``next_due()``
  (epoch ms mapped to Trio time by ``RuntimeClock``, so tests run under
  ``MockClock``), and is woken early by moving its cancel scope's deadline
  when an earlier time is armed.

Batching the index writes
-------------------------
A cover must be committed before the object's commit, and a commit is
synchronous, so the cheap way is to do covers *before* the commit is reached:
the actor's output gate awaits :meth:`AlarmManager.before_output_gate`, which
queues the cover and waits for the index writer task; every object arming in
the same scheduler pass shares one index transaction. The runtime's flusher
calls :meth:`AlarmManager.before_flush` with all the objects it is about to
commit, which covers them in one transaction (the actor calls it too, for
itself, before committing at a handler's non-storage await). Whatever is still uncovered when
``commit()`` runs (``storage.sync()``, eviction) is covered synchronously by
the storage hook ``before_alarm_commit``. Each live object remembers an upper
bound of its index row, so an object re-arming later than its current row
(the common agent loop) writes nothing before its commit.

Dispatch, concurrency, restart
------------------------------
Due wake-ups are delivered as events through the object's input gate
(``Runtime.post(..., force=True)``), activating evicted objects. Two bounds
keep a flood of due alarms (100,000 overdue ones at start) from stalling the
server, both settable on ``rt.alarms``:

* :attr:`AlarmManager.dispatch_batch` (default 32): the driver delivers at
  most this many per scheduler pass, then yields, so requests and running
  handlers get the CPU between batches. (Measured: 32 per pass fires ~25k
  trivial alarms/s in memory; 256 per pass ~15k/s, as bigger batches thrash
  the scheduler.)
* :attr:`AlarmManager.max_in_flight` (default 1024): wake events delivered
  and not finished, runtime-wide. At the bound the driver waits until the
  count drops to three quarters. It bounds memory, not speed: an ``alarm()``
  awaiting the network counts until it returns, so the bound is generous.

Overdue alarms go out oldest first. One wake per object at a time: a wake-up that
comes due while the object's previous one is still running is dropped, and
the running one re-arms from the object's rows when it finishes.

Cloudflare semantics
--------------------
* ``alarm(info)`` runs when the committed alarm is due. While it runs,
  ``get_alarm()`` returns None unless ``set_alarm`` was called (by any event)
  during it.
* After ``alarm()`` returns, the alarm row is deleted unless a set_alarm or
  delete_alarm was committed (or is pending) during it.
* If ``alarm()`` raises (or the object is reset while it runs), it is retried
  after 2, 4, 8, 16, 32, 64 s, each plus up to 25 % jitter
  (``AlarmInfo(retry_count, is_retry)``); after the 6th retry fails the alarm
  is dropped (its row deleted). A set_alarm during a failing ``alarm()`` wins:
  no retry. ``delete_alarm()`` inside ``alarm()`` is a no-op (the alarm is
  already hidden), so it does not prevent retries, which Cloudflare documents
  as best-effort too. Retry counts live in memory: after a restart an alarm
  whose ``alarm()`` never succeeded runs again with ``retry_count=0``.
* An object with an alarm set but no ``alarm`` method: the alarm is dropped
  (logged) when it fires.

The scheduler (beyond Cloudflare)
---------------------------------
``await self.schedule(when, "method", payload)`` stores a row in
``_dotrio_schedules`` (committed with the turn, like any write) and makes sure
the object wakes by then. ``when`` is a delay in seconds, an aware datetime,
or a cron string (``croniter``, 5 or 6 fields; ``tz`` names the zone, UTC by
default). ``repeat=seconds`` makes a delay/datetime schedule repeat at a fixed
interval. The user's ``set_alarm``/``get_alarm``/``alarm()`` are untouched by
schedules: the object's one wake-up serves both, at the earliest of the two.
When it fires, a due user alarm runs first (``alarm(info)``, with the retry
rules above), then due schedules in time order, at most
:data:`MAX_SCHEDULES_PER_WAKE` per wake (the rest are still due and are run by
the next wake, at once). A schedule runs as ``await self.<method>(payload)``
(a fresh copy of the payload each time).

* One-shot schedules are deleted after they succeed; a raising one is retried
  on the same backoff as alarms and dropped after 6 retries.
* Repeating schedules (cron, or ``repeat=``) never retry: a failure is logged
  and the schedule moves on. When a wake finds that runs were missed (the
  server was down, or the object busy), ``missed`` decides:

  - ``"latest"`` (default): run once for all of them, then continue at the
    next future time;
  - ``"all"``: run once per missed time, oldest first, at most
    :data:`MAX_CATCH_UP` (100) runs; older ones beyond that are skipped;
  - ``"skip"``: run only if exactly one time is due (the wake is late by less
    than one period); otherwise run nothing and continue at the next future
    time.

  Skipped runs are counted in :class:`AlarmStatistics`.
* Schedule rows are ordinary writes: a turn that is aborted drops its
  ``schedule()``/``cancel_schedule()`` too; ``delete_all()`` deletes them.
  Schedule methods are not reachable over RPC (they are defined on
  ``DurableObject``).
"""

from __future__ import annotations

import datetime as _dt
import inspect
import logging
import math
import random
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import apsw
import outcome
import trio
from croniter import croniter

from .._alarm_index import MISSING, AlarmIndex, IndexStatistics
from .._errors import DataDirError, DotrioError, ObjectResetError, StorageError
from .._ids import DurableObjectId
from .._kernels.codec import decode
from .._kernels.wheel import TimerWheel, WheelStatistics
from .._object import HANDLER_NAMES, AlarmInfo
from ..storage._datadir import WakeScan, has_object_files, scan_wake_times
from ..storage._object import _UNSET, encode_value

if TYPE_CHECKING:
    from .._clock import RuntimeClock
    from ..storage import ObjectStorage
    from ._actor import Actor
    from ._runtime import Runtime

__all__ = [
    "AlarmManager",
    "AlarmStatistics",
    "Schedule",
    "MAX_RETRIES",
    "DEFAULT_MAX_IN_FLIGHT",
    "DISPATCH_BATCH",
    "MAX_SCHEDULES_PER_WAKE",
    "MAX_CATCH_UP",
    "MISSED_POLICIES",
    "retry_delay",
]

log = logging.getLogger("dotrio.alarms")

MAX_RETRIES = 6
FIRST_RETRY_S = 2.0
RETRY_JITTER = 0.25
DEFAULT_MAX_IN_FLIGHT = 1024
DISPATCH_BATCH = 32
MAX_SCHEDULES_PER_WAKE = 100
MAX_CATCH_UP = 100
MISSED_POLICIES = ("latest", "all", "skip")

# An object id is a 16-byte base plus a 16-byte check that is a function of the
# base (dotrio._ids), so the base alone names the object: the wheel key and the
# index row hold only the base (smaller ints, smaller B-tree rows: ~40 % faster
# index writes at a million rows than with the full id).
_BASE_BYTES = 16
_OID_BITS = 8 * _BASE_BYTES
_OID_MASK = (1 << _OID_BITS) - 1
_INT64_MAX = (1 << 63) - 1
_INT64_MIN = -(1 << 63)
_UNKNOWN: Any = object()
_FIRST_TRY = AlarmInfo(retry_count=0, is_retry=False)  # frozen: one instance serves every first try
_UTC = _dt.timezone.utc

_SCHEDULES_DDL = (
    "CREATE TABLE IF NOT EXISTS _dotrio_schedules("
    "id TEXT PRIMARY KEY, seq INTEGER NOT NULL, method TEXT NOT NULL, payload BLOB NOT NULL, "
    "next_ms INTEGER NOT NULL, cron TEXT, tz TEXT, interval_ms INTEGER, missed TEXT NOT NULL, "
    "retries INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS _dotrio_schedules_next ON _dotrio_schedules(next_ms)"
)
_INDEX_CORRUPT = (apsw.NotADBError, apsw.CorruptError)
_SCHEDULE_COLUMNS = "id, seq, method, payload, next_ms, cron, tz, interval_ms, missed, retries"
_HAS_SCHEDULES = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='_dotrio_schedules'"


def retry_delay(retry: int, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``retry`` (1-based): 2, 4, ... 64 plus up to 25 %."""
    base = FIRST_RETRY_S * (2.0 ** (min(max(retry, 1), MAX_RETRIES) - 1))
    return base * (1.0 + RETRY_JITTER * (rng or random).random())


def _clamp(ms: int) -> int:
    # The wheel stores int64; a time beyond that is "never" for every practical purpose.
    return _INT64_MAX if ms > _INT64_MAX else _INT64_MIN if ms < _INT64_MIN else ms


def _earliest(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None or a <= b:
        return a
    return b


def _zone(tz: str | None) -> _dt.tzinfo:
    return _UTC if tz is None else ZoneInfo(tz)


def _ms_of(d: _dt.datetime) -> int:
    return int(round(d.timestamp() * 1000))


def _cron_after(expr: str, tz: str | None, after_ms: int) -> int:
    """The first run of ``expr`` strictly after ``after_ms``."""
    base = _dt.datetime.fromtimestamp(after_ms / 1000.0, _zone(tz))
    return _ms_of(croniter(expr, base).get_next(_dt.datetime))


def _plan_repeat(
    cron: str | None, tz: str | None, interval_ms: int | None, missed: str, next_ms: int, now_ms: int
) -> tuple[int, int, int]:
    """For a repeating schedule due at ``next_ms``: (runs now, next run, runs skipped)."""
    if interval_ms:
        due = (now_ms - next_ms) // interval_ms + 1
        following = next_ms + due * interval_ms
    else:
        assert cron is not None
        it = croniter(cron, _dt.datetime.fromtimestamp(next_ms / 1000.0, _zone(tz)))
        due = 1
        following = _ms_of(it.get_next(_dt.datetime))
        while following <= now_ms and due <= MAX_CATCH_UP:
            due += 1
            following = _ms_of(it.get_next(_dt.datetime))
        if following <= now_ms:
            # More than MAX_CATCH_UP behind: counting them all could take
            # unbounded time, so jump to the first run after now.
            following = _cron_after(cron, tz, now_ms)
    if missed == "all":
        runs = min(due, MAX_CATCH_UP)
    elif missed == "skip":
        runs = 1 if due == 1 else 0
    else:
        runs = 1
    return runs, following, due - runs


@dataclass(frozen=True)
class Schedule:
    """One entry of ``await self.get_schedules()``."""

    id: str
    method: str
    payload: Any
    next_run_ms: int
    """Epoch milliseconds of the next run (of the next retry, after a failure)."""
    cron: str | None
    tz: str | None
    repeat: float | None
    """Interval in seconds for ``repeat=`` schedules."""
    missed: str
    retries: int
    """Failed attempts of a one-shot schedule so far."""

    @property
    def next_run(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.next_run_ms / 1000.0, _UTC)

    @property
    def repeating(self) -> bool:
        return self.cron is not None or self.repeat is not None


@dataclass(frozen=True)
class AlarmStatistics:
    armed: int
    """Objects with a wake-up in the wheel."""
    in_flight: int
    """Wake events delivered to objects and not finished."""
    max_in_flight: int
    dispatch_batch: int
    peak_in_flight: int
    dispatched: int
    """Wake events delivered (including spurious ones)."""
    alarms_run: int
    """alarm() calls that returned."""
    alarm_failures: int
    """alarm() calls that raised, and wake events that failed (reset, constructor)."""
    retries_scheduled: int
    dropped: int
    """Alarms and one-shot schedules given up after their last retry."""
    spurious_wakes: int
    """Wakes that found nothing due (early or stale index rows, rolled-back writes)."""
    schedules_run: int
    schedule_failures: int
    schedule_runs_skipped: int
    pending_retries: int
    loaded_on_start: int
    orphaned_rows: int
    """Index rows of namespaces this runtime does not host (left in place)."""
    sync_covers: int
    """Covers written synchronously inside a commit (not batched)."""
    index: IndexStatistics | None
    wheel: WheelStatistics | None


class _Firing:
    __slots__ = ("key", "when", "touched", "hidden", "storage")

    def __init__(self, key: int, when: int) -> None:
        self.key = key
        self.when = when
        self.touched = False  # an alarm change was committed while the wake ran
        self.hidden = False  # get_alarm() currently answers None for the firing alarm
        self.storage: ObjectStorage | None = None


class _ObjectAlarms:
    """The storage's ``alarm_listener`` for one live object."""

    __slots__ = ("_mgr", "key", "ns", "oid", "hexid", "name", "storage", "hi", "has_sched")

    def __init__(self, mgr: AlarmManager, key: int, ns: str, hexid: str, name: str | None, storage: ObjectStorage):
        self._mgr = mgr
        self.key = key
        self.ns = ns
        self.hexid = hexid
        self.oid = bytes.fromhex(hexid[: 2 * _BASE_BYTES])  # the index row's key: the id's base
        self.name = name
        self.storage = storage
        # An upper bound of the object's committed index row: None when the row
        # may be absent, _UNKNOWN until looked up. hi <= T means T is covered.
        self.hi: Any = _UNKNOWN
        self.has_sched: bool | None = None

    def known_covered(self, when_ms: int) -> bool:
        hi = self.hi
        return hi is not _UNKNOWN and hi is not None and hi <= when_ms

    def covered(self, when_ms: int) -> bool:
        if self.hi is _UNKNOWN:
            self.hi = self._mgr._index_upper_bound(self)
        return self.known_covered(when_ms)

    def lowered_to(self, when_ms: int) -> None:
        hi = self.hi
        self.hi = when_ms if hi is _UNKNOWN or hi is None or when_ms < hi else hi

    def raised_to(self, when_ms: int | None) -> None:
        hi = self.hi
        if hi is _UNKNOWN:
            return
        self.hi = None if when_ms is None or hi is None else max(hi, when_ms)

    # ---- AlarmListener -----------------------------------------------------------

    def before_alarm_commit(self, when_ms: int | None) -> None:
        if when_ms is not None and self._mgr._durable and not self.covered(_clamp(when_ms)):
            self._mgr._cover_now([(self, _clamp(when_ms))], sync=True)

    def after_alarm_commit(self, when_ms: int | None) -> None:
        # Raising here would surface after a successful COMMIT: never.
        try:
            self._mgr._committed(self, when_ms)
        except Exception:
            log.exception("alarm bookkeeping failed for %s/%s", self.ns, self.hexid)


class AlarmManager:
    """``rt.alarms``: the wheel, the index, the driver and the scheduler."""

    def __init__(self, runtime: Runtime, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be a positive int, got {max_in_flight!r}")
        self._runtime = runtime
        self.max_in_flight = max_in_flight
        """At most this many wake events are in flight runtime-wide (settable)."""
        self.dispatch_batch = DISPATCH_BATCH
        """Wake events delivered per scheduler pass (settable)."""
        self.rng = random.Random()
        """Source of retry jitter (tests may seed it)."""
        self._clock: RuntimeClock | None = None
        self._index: AlarmIndex | None = None
        self._wheel: Any = None
        self._ns_names: list[str] = []
        self._ns_ids: dict[str, int] = {}
        self._firing: dict[int, _Firing] = {}
        # User alarm retries: key -> (retry count, not before ms).
        self._retry: dict[int, tuple[int, int]] = {}
        # Failed wake events in a row: key -> (count, not before ms).
        self._wake_failures: dict[int, tuple[int, int]] = {}
        self._running = False
        self._paused = False
        # In memory nothing outlives the process, so covers (which exist for
        # crashes) are skipped; settles still keep the index exact.
        self._durable = runtime.data_dir is not None
        self._sleep_scope: trio.CancelScope | None = None
        self._want_room = False
        self._writer_parked: trio.lowlevel.Task | None = None
        self._covers: list[tuple[_ObjectAlarms, int]] = []
        self._batch_done = trio.Event()
        self._in_flight = 0
        self._peak = 0
        self._dispatched = 0
        self._alarms_run = 0
        self._alarm_failures = 0
        self._retries = 0
        self._dropped = 0
        self._spurious = 0
        self._schedules_run = 0
        self._schedule_failures = 0
        self._skipped = 0
        self._loaded = 0
        self._orphaned = 0
        self._sync_covers = 0

    # ---- lifecycle ------------------------------------------------------------------

    def open(self) -> None:
        """Open the index (rebuilding it from the objects' databases if it is
        missing, empty or corrupt) and load it into the wheel. Called by the
        runtime once its clock and namespaces exist, before its nursery opens:
        an index that cannot be used raises DataDirError here."""
        rt = self._runtime
        assert rt.clock is not None
        self._clock = rt.clock
        for name in rt.namespaces:
            self._namespace_id(name)
        self._index = index = AlarmIndex(rt.data_dir, rt.backend.durability)
        try:
            try:
                self._load(index)
            except _INDEX_CORRUPT as exc:  # found corrupt only while reading its rows
                index.discard_corrupt(exc)
                self._load(index)
        except (apsw.Error, OSError) as exc:
            raise DataDirError(
                f"cannot use the alarm index {index.path} ({exc}): dotrio must be able to read and write it; "
                "fix its permissions or the disk, or move it away to have it rebuilt at the next start"
            ) from None

    def start(self, nursery: trio.Nursery) -> None:
        """Start the driver and the index writer (after :meth:`open`)."""
        assert self._wheel is not None and self._index is not None
        self._paused = False
        self._running = True
        nursery.start_soon(self._driver, name="dotrio.alarms.driver")
        nursery.start_soon(self._writer, name="dotrio.alarms.index-writer")

    def _load(self, index: AlarmIndex) -> None:
        """Fill a new wheel from the index, rebuilding the index first from the
        objects' databases when it is missing, empty or was corrupt."""
        assert self._clock is not None
        data_dir = self._runtime.data_dir
        reason = index.rebuild_reason
        if data_dir is not None and reason == MISSING and not has_object_files(data_dir):
            # A new data dir: the index is made now, empty (the truth: no
            # objects), so that a missing index later means a lost one.
            index.rebuild(())
        elif data_dir is not None and reason is not None:
            scan = WakeScan()
            rows = ((f.namespace, bytes.fromhex(f.object_id[: 2 * _BASE_BYTES]), w)
                    for f, w in scan_wake_times(data_dir, scan))
            index.rebuild(rows)
            log.warning(
                "alarm index %s was %s: rebuilt from %d object databases (%d with a wake-up)%s",
                index.path, reason, scan.objects, scan.wakes,
                f"; {len(scan.unreadable)} could not be read (run `dotrio fsck {data_dir}`)" if scan.unreadable else "",
            )
            for f, why in scan.unreadable:
                log.error("object %s: database %s cannot be read: %s", f.label, f.path, why)
        self._wheel = wheel = TimerWheel(max(0, self._clock.now_ms()))
        self._loaded = self._orphaned = 0
        ns_ids = self._ns_ids
        for ns, oid, when in index.load():
            i = ns_ids.get(ns)
            if i is None or len(oid) != _BASE_BYTES:
                self._orphaned += 1
                continue
            wheel.arm((i << _OID_BITS) | int.from_bytes(oid, "big"), _clamp(when))
            self._loaded += 1

    def pause(self) -> None:
        """Stop delivering wake-ups (the runtime is draining for shutdown): what
        is not delivered stays in the objects' rows and fires after a restart."""
        self._paused = True
        scope = self._sleep_scope
        if scope is not None:
            scope.cancel()

    def close(self) -> None:
        """Write the last queued settles and close the index (after objects flushed)."""
        self._running = False
        index = self._index
        if index is not None:
            try:
                index.close()
            except apsw.Error:
                # Unwritten settles only leave early rows behind: spurious wakes.
                log.exception("could not write the last alarm index batch")

    def _namespace_id(self, name: str) -> int:
        i = self._ns_ids.get(name)
        if i is None:
            i = len(self._ns_names)
            self._ns_names.append(name)
            self._ns_ids[name] = i
        return i

    def attach(self, actor: Actor) -> None:
        """Become ``actor.storage.alarm_listener`` (the actor calls this when built)."""
        ns = actor.namespace.name
        hexid = str(actor.id)
        key = (self._namespace_id(ns) << _OID_BITS) | int(hexid[: 2 * _BASE_BYTES], 16)
        actor.storage.alarm_listener = _ObjectAlarms(self, key, ns, hexid, actor.id.name, actor.storage)

    # ---- index bookkeeping ------------------------------------------------------------

    def _index_upper_bound(self, lis: _ObjectAlarms) -> int | None:
        index = self._index
        if index is None:
            return None
        durable = index.durable(lis.ns, lis.oid)
        queued, value = index.pending(lis.ns, lis.oid)
        if not queued:
            return durable
        if durable is None or value is None:
            return None
        return max(durable, value)

    def _cover_now(self, covers: Iterable[tuple[_ObjectAlarms, int]], sync: bool = False) -> None:
        """One index transaction lowering each object's row to its time (with the
        queued settles, which it must not be overtaken by)."""
        if sync:
            self._sync_covers += 1
        index = self._index
        if index is None:
            raise StorageError("the alarm index is not open (runtime not running)")
        lowest: dict[_ObjectAlarms, int] = {}
        for lis, ms in covers:
            cur = lowest.get(lis)
            if cur is None or ms < cur:
                lowest[lis] = ms
        index.write([(lis.ns, lis.oid, ms, lis.name) for lis, ms in lowest.items()])
        for lis, ms in lowest.items():
            lis.lowered_to(ms)

    def _settle(self, lis: _ObjectAlarms, when_ms: int | None) -> None:
        """The object's committed wake time is ``when_ms``: arm the wheel, queue the index."""
        wheel = self._wheel
        index = self._index
        if wheel is None or index is None:
            return
        key = lis.key
        if when_ms is None:
            wheel.cancel(key)
        else:
            when_ms = _clamp(when_ms)
            wheel.arm(key, when_ms)
            self._poke(when_ms)
        index.settle(lis.ns, lis.oid, when_ms, lis.name)
        lis.raised_to(when_ms)
        self._wake_writer()

    def _committed(self, lis: _ObjectAlarms, when_ms: int | None) -> None:
        firing = self._firing.get(lis.key)
        if firing is not None:
            # The wake that is running re-reads the object when it finishes.
            firing.touched = True
            return
        self._retry.pop(lis.key, None)
        self._settle(lis, _earliest(when_ms, self._schedule_next(lis)))

    def _wake_time(self, lis: _ObjectAlarms) -> int | None:
        key = lis.key
        row = lis.storage.committed_alarm()
        if row is None:
            self._retry.pop(key, None)
            user = None
        else:
            retry = self._retry.get(key)
            user = row if retry is None or retry[1] <= row else retry[1]
        return _earliest(user, self._schedule_next(lis))

    # ---- the hooks that batch covers ------------------------------------------------

    async def before_output_gate(self, actor: Actor) -> None:
        """Awaited by the output gate before it commits: a new alarm time that the
        index does not cover yet joins the next batch instead of costing its own
        index transaction inside the commit."""
        storage = actor.storage
        ms = storage._alarm_pending
        if ms is _UNSET or ms is None or not self._running or not self._durable:
            return
        lis = storage.alarm_listener
        if not isinstance(lis, _ObjectAlarms) or lis.known_covered(_clamp(ms)):
            return
        self._covers.append((lis, _clamp(ms)))
        done = self._batch_done
        self._wake_writer()
        await done.wait()

    def before_flush(self, actors: Iterable[Actor]) -> None:
        """Called by the flusher with the objects it is about to commit: one index
        transaction covers all of them."""
        if not self._running or not self._durable:
            return
        covers = []
        for actor in actors:
            storage = actor.storage
            ms = storage._alarm_pending
            if ms is _UNSET or ms is None or storage.in_transaction:
                continue
            lis = storage.alarm_listener
            if isinstance(lis, _ObjectAlarms) and not lis.known_covered(_clamp(ms)):
                covers.append((lis, _clamp(ms)))
        if covers:
            try:
                self._cover_now(covers)
            except apsw.Error:
                # The commits will try again synchronously and fail the object there.
                log.exception("alarm index batch failed")

    def _wake_writer(self) -> None:
        parked = self._writer_parked
        if parked is not None:
            self._writer_parked = None
            trio.lowlevel.reschedule(parked)

    async def _writer(self) -> None:
        """Writes queued covers and settles, one transaction per scheduler pass."""

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._writer_parked = None
            return trio.lowlevel.Abort.SUCCEEDED

        index = self._index
        assert index is not None
        while True:
            if not self._covers and not index.has_pending:
                self._writer_parked = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(abort)
                continue
            # The flusher may have covered some of these meanwhile.
            covers = [(lis, ms) for lis, ms in self._covers if not lis.known_covered(ms)]
            self._covers = []
            done = self._batch_done
            self._batch_done = trio.Event()
            failed = False
            try:
                self._cover_now(covers)
            except apsw.Error:
                # Waiters go on to commit; their commit covers synchronously, and
                # if the index is still failing their commit fails, not silently.
                log.exception("alarm index batch failed")
                failed = True
            finally:
                done.set()
            if failed:
                await trio.sleep(0.1)
            else:
                await trio.lowlevel.checkpoint()

    # ---- driver ---------------------------------------------------------------------

    def _poke(self, when_ms: int) -> None:
        scope = self._sleep_scope
        if scope is None or self._want_room or self._clock is None:
            return
        t = self._clock.trio_time_for(when_ms / 1000.0)
        if t < scope.deadline:
            scope.deadline = t

    async def _driver(self) -> None:
        wheel = self._wheel
        clock = self._clock
        assert wheel is not None and clock is not None
        while True:
            room = self.max_in_flight - self._in_flight
            deadline = math.inf
            if self._paused:
                await trio.sleep_forever()
            if room > 0:
                due = wheel.pop_due(_clamp(clock.now_ms()), min(room, max(1, self.dispatch_batch)))
                if due:
                    for i, (key, when) in enumerate(due):
                        if not self._dispatch(key, when):
                            for key2, when2 in due[i + 1 :]:
                                wheel.arm(key2, when2)
                            return
                    # Let handlers, RPCs and the flusher run between batches.
                    await trio.lowlevel.checkpoint()
                    continue
                nxt = wheel.next_due()
                if nxt is not None:
                    deadline = clock.trio_time_for(nxt / 1000.0)
                    now = trio.current_time()
                    if deadline <= now:
                        # Rounding between epoch ms and Trio time: never spin.
                        deadline = now + 0.0005
            else:
                self._want_room = True
            with trio.CancelScope(deadline=deadline) as scope:
                self._sleep_scope = scope
                try:
                    await trio.sleep_forever()
                finally:
                    self._sleep_scope = None
                    self._want_room = False

    def _dispatch(self, key: int, when: int) -> bool:
        """Deliver one wake event. False when the runtime no longer accepts events."""
        if key in self._firing:
            return True
        rt = self._runtime
        ns_name = self._ns_names[key >> _OID_BITS]
        ns = rt._namespaces.get(ns_name)
        if ns is None:
            self._orphaned += 1
            return True
        base = (key & _OID_MASK).to_bytes(_BASE_BYTES, "big")
        hexid = (base + ns._ids._check(base)).hex()
        actor = rt.live_actor((ns_name, hexid))
        firing = _Firing(key, when)
        if actor is not None:
            oid = actor.id
            firing.storage = actor.storage
        else:
            assert self._index is not None
            oid = DurableObjectId(hexid, ns_name, self._index.name(ns_name, base))
        self._firing[key] = firing
        self._in_flight += 1
        try:
            rt.post(ns, oid, partial(self._wake, firing), partial(self._woken, firing), force=True)
        except DotrioError:
            del self._firing[key]
            self._in_flight -= 1
            assert self._wheel is not None
            self._wheel.arm(key, when)
            return False
        self._dispatched += 1
        if self._in_flight > self._peak:
            self._peak = self._in_flight
        return True

    def _actor_key(self, key: int) -> tuple[str, str]:
        ns_name = self._ns_names[key >> _OID_BITS]
        base = (key & _OID_MASK).to_bytes(_BASE_BYTES, "big")
        return ns_name, (base + self._runtime._namespaces[ns_name]._ids._check(base)).hex()

    # ---- one wake, inside the object ---------------------------------------------------

    async def _wake(self, firing: _Firing, instance: Any) -> None:
        storage = firing.storage
        if storage is None:
            actor = self._runtime.live_actor(self._actor_key(firing.key))
            assert actor is not None, "a wake event runs inside its live actor"
            storage = firing.storage = actor.storage
        lis = storage.alarm_listener
        assert isinstance(lis, _ObjectAlarms)
        clock = self._clock
        assert clock is not None
        now = clock.now_ms()
        row = storage.committed_alarm()
        retry = self._retry.get(firing.key)
        ran = False
        if row is not None and row <= now and (retry is None or retry[1] <= now):
            await self._run_alarm(instance, storage, firing, row, retry[0] if retry else 0)
            ran = True
        if self._has_schedules(lis):
            ran = await self._run_schedules(instance, storage, lis) or ran
        if not ran:
            self._spurious += 1

    async def _run_alarm(self, instance: Any, storage: ObjectStorage, firing: _Firing, row: int, n: int) -> None:
        key = firing.key
        handler = getattr(instance, "alarm", None)
        if handler is None or n > MAX_RETRIES:
            if handler is None:
                log.warning("%s has an alarm set but no alarm() method; dropping it", type(instance).__name__)
            await storage.delete_alarm()
            self._retry.pop(key, None)
            self._dropped += 1
            return
        storage._set_alarm_view(None)
        firing.hidden = True
        firing.touched = False
        error: Exception | None = None
        try:
            result = handler(_FIRST_TRY if n == 0 else AlarmInfo(retry_count=n, is_retry=True))
            if inspect.isawaitable(result):
                await result
        except ObjectResetError:
            raise  # the object is being reset: the callback sees the failure
        except Exception as exc:
            error = exc
        firing.hidden = False
        touched = firing.touched or storage._alarm_pending is not _UNSET
        if not firing.touched:
            # Nothing committed meanwhile: the row is still the one that fired.
            storage._set_alarm_view(row)
        if error is None:
            self._alarms_run += 1
        else:
            self._alarm_failures += 1
            log.warning("%s.alarm() raised (retry %d)", type(instance).__name__, n, exc_info=error)
        if touched:
            # set_alarm/delete_alarm during alarm(): the user's choice stands.
            self._retry.pop(key, None)
        elif error is None or n >= MAX_RETRIES:
            await storage.delete_alarm()
            self._retry.pop(key, None)
            if error is not None:
                self._dropped += 1
        else:
            assert self._clock is not None
            delay_ms = int(round(retry_delay(n + 1, self.rng) * 1000))
            self._retry[key] = (n + 1, self._clock.now_ms() + delay_ms)
            self._retries += 1

    def _woken(self, firing: _Firing, result: outcome.Outcome) -> None:
        """The wake event finished (its writes are committed, or the object was reset)."""
        if self._firing.get(firing.key) is firing:
            del self._firing[firing.key]
        self._in_flight -= 1
        if self._want_room and self._in_flight <= self.max_in_flight * 3 // 4:
            scope = self._sleep_scope
            if scope is not None:
                scope.cancel()
        if not self._running or getattr(self._runtime, "_closing", False):
            return
        try:
            self._after_wake(firing, result)
        except Exception:
            log.exception("alarm bookkeeping failed after a wake")

    def _after_wake(self, firing: _Firing, result: outcome.Outcome) -> None:
        key = firing.key
        storage = firing.storage
        if storage is None:
            actor = self._runtime.live_actor(self._actor_key(key))
            storage = actor.storage if actor is not None else None
        if isinstance(result, outcome.Error):
            self._alarm_failures += 1
            log.warning("alarm wake of %s/%s failed", *self._actor_key(key), exc_info=result.error)
            if storage is not None and firing.hidden:
                storage._set_alarm_view(_UNSET)  # forget the hidden view: re-read the row
            # Whatever failed (alarm(), a schedule that reset the object, the
            # constructor), what it left due is still due: back off before the
            # next wake, or a reset-looping object would spin.
            fails = self._wake_failures.get(key, (0, 0))[0] + 1
            if fails > MAX_RETRIES + 1:
                # The object cannot even finish a wake: stop trying in this
                # process; its rows stay, so a restart or its next commit tries again.
                self._wake_failures.pop(key, None)
                self._retry.pop(key, None)
                self._dropped += 1
                assert self._wheel is not None
                self._wheel.cancel(key)
                return
            assert self._clock is not None
            not_before = self._clock.now_ms() + int(round(retry_delay(fails, self.rng) * 1000))
            self._wake_failures[key] = (fails, not_before)
            if not firing.touched:
                n = self._retry.get(key, (0, 0))[0] + 1
                self._retry[key] = (n, not_before)
                self._retries += 1
        else:
            self._wake_failures.pop(key, None)
        lis = storage.alarm_listener if storage is not None else None
        if not isinstance(lis, _ObjectAlarms):
            return
        try:
            when = self._wake_time(lis)
        except StorageError as exc:
            # The object's database cannot be read now (a failing disk): what
            # was due stays due. Look again after a back-off, never forget it.
            log.warning("could not read the alarm of %s/%s after a wake (%s); trying again later",
                        *self._actor_key(key), exc)
            if key not in self._wake_failures:
                assert self._clock is not None
                not_before = self._clock.now_ms() + int(round(retry_delay(1, self.rng) * 1000))
                self._wake_failures[key] = (1, not_before)
            when = self._wake_failures[key][1]
        backoff = self._wake_failures.get(key)
        if when is not None and backoff is not None and when < backoff[1]:
            when = backoff[1]
        self._settle(lis, when)

    # ---- schedules ----------------------------------------------------------------------

    def _has_schedules(self, lis: _ObjectAlarms) -> bool:
        if lis.has_sched is None:
            conn = lis.storage._connection(False)
            lis.has_sched = conn is not None and bool(conn.execute(_HAS_SCHEDULES).fetchall())
        return lis.has_sched

    def _schedule_next(self, lis: _ObjectAlarms) -> int | None:
        if not self._has_schedules(lis):
            return None
        conn = lis.storage._connection(False)
        if conn is None:
            return None
        try:
            rows = conn.execute("SELECT min(next_ms) FROM _dotrio_schedules").fetchall()
        except apsw.SQLError:
            lis.has_sched = False  # dropped by delete_all()
            return None
        value = rows[0][0]
        return None if value is None else int(value)

    async def _run_schedules(self, instance: Any, storage: ObjectStorage, lis: _ObjectAlarms) -> bool:
        conn = storage._connection(False)
        if conn is None:
            return False
        assert self._clock is not None
        now = self._clock.now_ms()
        try:
            rows = conn.execute(
                f"SELECT {_SCHEDULE_COLUMNS} FROM _dotrio_schedules WHERE next_ms <= ? "
                "ORDER BY next_ms, id LIMIT ?",
                (now, MAX_SCHEDULES_PER_WAKE),
            ).fetchall()
        except apsw.SQLError:
            lis.has_sched = False
            return False
        for row in rows:
            conn = storage._connection(False)
            if conn is None or not conn.execute(
                "SELECT 1 FROM _dotrio_schedules WHERE id=? AND seq=?", (row[0], row[1])
            ).fetchall():
                continue  # cancelled or replaced by an earlier run of this wake
            await self._run_schedule(instance, storage, row, now)
        return bool(rows)

    async def _run_schedule(self, instance: Any, storage: ObjectStorage, row: tuple, now: int) -> None:
        sid, seq, method, payload, next_ms, cron, tz, interval_ms, missed, retries = row
        fn = getattr(instance, method, None)
        if not callable(fn):
            log.warning("schedule %r: %s has no method %r; dropping it", sid, type(instance).__name__, method)
            self._schedule_failures += 1
            _schedule_write(storage, "DELETE FROM _dotrio_schedules WHERE id=? AND seq=?", (sid, seq))
            return
        repeating = cron is not None or interval_ms is not None
        if repeating:
            runs, following, skipped = _plan_repeat(cron, tz, interval_ms, missed, next_ms, now)
            self._skipped += skipped
        else:
            runs, following = 1, 0
        failed = False
        for _ in range(runs):
            try:
                result = fn(decode(payload))
                if inspect.isawaitable(result):
                    await result
                self._schedules_run += 1
            except ObjectResetError:
                raise
            except Exception:
                failed = True
                self._schedule_failures += 1
                log.warning("schedule %r (%s.%s) raised", sid, type(instance).__name__, method, exc_info=True)
        if repeating:
            _schedule_write(
                storage, "UPDATE _dotrio_schedules SET next_ms=?, retries=0 WHERE id=? AND seq=?", (following, sid, seq)
            )
        elif failed and retries < MAX_RETRIES:
            assert self._clock is not None
            at = self._clock.now_ms() + int(round(retry_delay(retries + 1, self.rng) * 1000))
            _schedule_write(
                storage,
                "UPDATE _dotrio_schedules SET next_ms=?, retries=retries+1 WHERE id=? AND seq=?",
                (at, sid, seq),
            )
            self._retries += 1
        else:
            if failed:
                self._dropped += 1
            _schedule_write(storage, "DELETE FROM _dotrio_schedules WHERE id=? AND seq=?", (sid, seq))

    def add_schedule(
        self,
        actor: Actor,
        when: int | float | _dt.datetime | str,
        method: str,
        payload: Any = None,
        *,
        repeat: float | None = None,
        missed: str = "latest",
        tz: str | None = None,
        id: str | None = None,
    ) -> str:
        """``DurableObject.schedule``: validate, store the row, make sure the object wakes."""
        if not isinstance(method, str):
            raise TypeError(f"schedule() method must be a method name (str), got {type(method).__name__}")
        if method in HANDLER_NAMES or method in _SCHEDULER_NAMES or not callable(
            getattr(actor.namespace.cls, method, None)
        ):
            raise ValueError(f"schedule(): {actor.namespace.cls.__name__} has no schedulable method {method!r}")
        if missed not in MISSED_POLICIES:
            raise ValueError(f"schedule() missed must be one of {MISSED_POLICIES}, got {missed!r}")
        if id is not None and (not isinstance(id, str) or not id or len(id) > 256):
            raise ValueError("schedule() id must be a non-empty str of at most 256 characters")
        if tz is not None:
            if not isinstance(when, str):
                raise ValueError("schedule() tz applies to cron schedules only")
            try:
                _zone(tz)
            except (ZoneInfoNotFoundError, ValueError, TypeError):
                raise ValueError(f"schedule() tz {tz!r} is not a known time zone") from None
        clock = self._clock
        if clock is None:
            raise DotrioError("the runtime is not running")
        now = clock.now_ms()
        cron: str | None = None
        if isinstance(when, bool):
            raise TypeError("schedule() when must be seconds, an aware datetime or a cron string, got bool")
        if isinstance(when, str):
            if not croniter.is_valid(when):
                raise ValueError(f"schedule(): {when!r} is not a valid cron expression")
            cron = when
            first = _cron_after(cron, tz, now)
        elif isinstance(when, (int, float)):
            if not math.isfinite(when) or when < 0:
                raise ValueError(f"schedule() delay must be a finite number of seconds >= 0, got {when!r}")
            first = now + int(round(when * 1000))
        elif isinstance(when, _dt.datetime):
            if when.tzinfo is None or when.utcoffset() is None:
                raise ValueError("schedule() got a naive datetime; pass an aware one (e.g. tzinfo=timezone.utc)")
            first = _ms_of(when)
        else:
            raise TypeError(
                f"schedule() when must be seconds, an aware datetime or a cron string, got {type(when).__name__}"
            )
        interval_ms: int | None = None
        if repeat is not None:
            if cron is not None:
                raise ValueError("schedule(): a cron schedule repeats by itself; repeat= is for delays and datetimes")
            if isinstance(repeat, bool) or not isinstance(repeat, (int, float)) or not math.isfinite(repeat):
                raise ValueError(f"schedule() repeat must be a positive number of seconds, got {repeat!r}")
            if repeat <= 0:
                raise ValueError(f"schedule() repeat must be a positive number of seconds, got {repeat!r}")
            interval_ms = max(1, int(round(repeat * 1000)))
        data = encode_value(payload)
        sid = id if id is not None else secrets.token_hex(8)
        first = _clamp(first)
        storage = actor.storage
        lis = storage.alarm_listener
        assert isinstance(lis, _ObjectAlarms)
        conn = _schedule_conn(storage, lis)
        try:
            conn.execute(
                f"INSERT OR REPLACE INTO _dotrio_schedules({_SCHEDULE_COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,0)",
                (sid, secrets.randbits(62), method, data, first, cron, tz, interval_ms, missed),
            )
        except apsw.Error as e:
            raise StorageError(f"schedule() failed: {e}") from e
        storage._mark_dirty()
        # The row commits with the turn; the index must cover it before that,
        # and a turn that is then dropped only leaves an early (spurious) wake.
        if self._durable and not lis.covered(first):
            self._cover_now([(lis, first)], sync=True)
        if lis.key not in self._firing and self._wheel is not None:
            current = self._wheel.when(lis.key)
            if current is None or first < current:
                self._wheel.arm(lis.key, first)
                self._poke(first)
        return sid

    def list_schedules(self, actor: Actor) -> list[Schedule]:
        storage = actor.storage
        conn = storage._connection(False)
        if conn is None:
            return []
        try:
            rows = conn.execute(f"SELECT {_SCHEDULE_COLUMNS} FROM _dotrio_schedules ORDER BY next_ms, id").fetchall()
        except apsw.SQLError:
            return []
        return [
            Schedule(
                id=sid,
                method=method,
                payload=decode(payload),
                next_run_ms=int(next_ms),
                cron=cron,
                tz=tz,
                repeat=None if interval_ms is None else interval_ms / 1000.0,
                missed=missed,
                retries=int(retries),
            )
            for sid, _seq, method, payload, next_ms, cron, tz, interval_ms, missed, retries in rows
        ]

    def remove_schedule(self, actor: Actor, sid: str) -> bool:
        if not isinstance(sid, str):
            raise TypeError(f"cancel_schedule() takes a schedule id (str), got {type(sid).__name__}")
        storage = actor.storage
        if storage._connection(False) is None:
            return False
        lis = storage.alarm_listener
        if isinstance(lis, _ObjectAlarms) and not self._has_schedules(lis):
            return False
        # The wheel keeps the cancelled time: a spurious wake later, which
        # re-reads the rows. Cheaper than recomputing here, and always safe.
        return _schedule_write(storage, "DELETE FROM _dotrio_schedules WHERE id=?", (sid,)) > 0

    # ---- statistics -------------------------------------------------------------------

    def statistics(self) -> AlarmStatistics:
        wheel = self._wheel
        index = self._index
        return AlarmStatistics(
            armed=len(wheel) if wheel is not None else 0,
            in_flight=self._in_flight,
            max_in_flight=self.max_in_flight,
            dispatch_batch=self.dispatch_batch,
            peak_in_flight=self._peak,
            dispatched=self._dispatched,
            alarms_run=self._alarms_run,
            alarm_failures=self._alarm_failures,
            retries_scheduled=self._retries,
            dropped=self._dropped,
            spurious_wakes=self._spurious,
            schedules_run=self._schedules_run,
            schedule_failures=self._schedule_failures,
            schedule_runs_skipped=self._skipped,
            pending_retries=len(self._retry),
            loaded_on_start=self._loaded,
            orphaned_rows=self._orphaned,
            sync_covers=self._sync_covers,
            index=index.statistics() if index is not None and not index._closed else None,
            wheel=wheel.statistics() if wheel is not None else None,
        )


_SCHEDULER_NAMES = frozenset({"schedule", "get_schedules", "cancel_schedule"})


def _schedule_conn(storage: ObjectStorage, lis: _ObjectAlarms) -> apsw.Connection:
    """The object's connection inside its open write transaction, with the table."""
    conn = storage._connection(True)
    assert conn is not None
    storage._begin(conn)
    if not lis.has_sched:
        try:
            conn.execute(_SCHEDULES_DDL)
        except apsw.Error as e:
            raise StorageError(f"could not create the schedules table: {e}") from e
        lis.has_sched = True
    return conn


def _schedule_write(storage: ObjectStorage, sql: str, args: tuple) -> int:
    """Run a write on the object's schedules in its open transaction; rows changed."""
    conn = storage._connection(True)
    assert conn is not None
    opened = not storage._txn_open
    storage._begin(conn)
    before = conn.total_changes()
    try:
        conn.execute(sql, args)
    except apsw.SQLError:
        changed = 0  # no table: nothing to change
    except apsw.Error as e:
        raise StorageError(f"schedule write failed: {e}") from e
    else:
        changed = conn.total_changes() - before
    if changed:
        storage._mark_dirty()
    else:
        # A transaction opened for nothing must not stay open (it pins the connection).
        storage._end_if_clean(conn, opened)
    return changed
