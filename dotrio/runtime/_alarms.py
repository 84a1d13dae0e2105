"""Alarms at scale: the per-object alarm, its retries, and a scheduler on top.

Truth, hint and clock
---------------------
* **Truth** is each object's own database: the user's alarm is the
  ``_dotrio_meta`` row ``'alarm'`` (written by ``StorageEngine.commit()``), the
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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import apsw
import outcome
import trio

from .._alarm_index import MISSING, AlarmIndex, IndexStatistics
from .._errors import DataDirError, DotrioError, ObjectResetError, StorageError
from .._ids import DurableObjectId
from .._kernels.codec import decode
from .._kernels.wheel import TimerWheel, WheelStatistics
from .._object import HANDLER_NAMES, SCHEDULER_NAMES, AlarmInfo
from .._schedule import (
    MAX_CATCH_UP,
    MAX_RETRIES,
    MISSED_POLICIES,
    Schedule,
    clamp_ms,
    earliest,
    first_run,
    plan_repeat,
    retry_delay,
    retry_delay_ms,
)
from ..storage import ScheduleRow, encode_value
from ..storage._datadir import WakeScan, has_object_files, scan_wake_times

if TYPE_CHECKING:
    from .._clock import RuntimeClock
    from .._namespace import DurableObjectNamespace
    from ..storage import StorageBackend, StorageEngine
    from ._actor import Actor


class AlarmRuntime(Protocol):
    """What the alarm manager needs of the Runtime."""

    data_dir: Path | None
    clock: RuntimeClock | None
    backend: StorageBackend

    @property
    def namespaces(self) -> dict[str, DurableObjectNamespace]: ...

    @property
    def closing(self) -> bool: ...

    def find_namespace(self, name: str) -> DurableObjectNamespace | None: ...

    def object_hex_id(self, namespace: str, base: bytes) -> str: ...

    def live_actor(self, key: tuple[str, str]) -> Actor | None: ...

    def post(
        self,
        ns: DurableObjectNamespace,
        oid: DurableObjectId,
        fn: Callable[[Any], Awaitable[Any]],
        callback: Callable[[outcome.Outcome[Any]], None] | None = None,
        force: bool = False,
    ) -> None: ...

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

DEFAULT_MAX_IN_FLIGHT = 1024
DISPATCH_BATCH = 32
MAX_SCHEDULES_PER_WAKE = 100

# An object id is a 16-byte base plus a 16-byte check that is a function of the
# base (dotrio._ids), so the base alone names the object: the wheel key and the
# index row hold only the base (smaller ints, smaller B-tree rows: ~40 % faster
# index writes at a million rows than with the full id).
_BASE_BYTES = 16
_OID_BITS = 8 * _BASE_BYTES
_OID_MASK = (1 << _OID_BITS) - 1
_UNKNOWN: Any = object()
_FIRST_TRY = AlarmInfo(retry_count=0, is_retry=False)  # frozen: one instance serves every first try
_INDEX_CORRUPT = (apsw.NotADBError, apsw.CorruptError)


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
        self.storage: StorageEngine | None = None


class _ObjectAlarms:
    """The storage's ``alarm_listener`` for one live object."""

    __slots__ = ("_mgr", "key", "ns", "oid", "hexid", "name", "storage", "hi")

    def __init__(self, mgr: AlarmManager, key: int, ns: str, hexid: str, name: str | None, storage: StorageEngine):
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
        if when_ms is not None and self._mgr._durable and not self.covered(clamp_ms(when_ms)):
            self._mgr._cover_now([(self, clamp_ms(when_ms))], sync=True)

    def after_alarm_commit(self, when_ms: int | None) -> None:
        # Raising here would surface after a successful COMMIT: never.
        try:
            self._mgr._committed(self, when_ms)
        except Exception:
            log.exception("alarm bookkeeping failed for %s/%s", self.ns, self.hexid)


class AlarmManager:
    """``rt.alarms``: the wheel, the index, the driver and the scheduler."""

    def __init__(self, runtime: AlarmRuntime, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
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
            wheel.arm((i << _OID_BITS) | int.from_bytes(oid, "big"), clamp_ms(when))
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
            when_ms = clamp_ms(when_ms)
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
        self._settle(lis, earliest(when_ms, self._schedule_next(lis)))

    def _wake_time(self, lis: _ObjectAlarms) -> int | None:
        key = lis.key
        row = lis.storage.committed_alarm()
        if row is None:
            self._retry.pop(key, None)
            user = None
        else:
            retry = self._retry.get(key)
            user = row if retry is None or retry[1] <= row else retry[1]
        return earliest(user, self._schedule_next(lis))

    # ---- the hooks that batch covers ------------------------------------------------

    async def before_output_gate(self, actor: Actor) -> None:
        """Awaited by the output gate before it commits: a new alarm time that the
        index does not cover yet joins the next batch instead of costing its own
        index transaction inside the commit."""
        storage = actor.storage
        ms = storage.pending_alarm_ms()
        if ms is None or not self._running or not self._durable:
            return
        lis = storage.alarm_listener
        if not isinstance(lis, _ObjectAlarms) or lis.known_covered(clamp_ms(ms)):
            return
        self._covers.append((lis, clamp_ms(ms)))
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
            ms = storage.pending_alarm_ms()
            if ms is None or storage.in_transaction:
                continue
            lis = storage.alarm_listener
            if isinstance(lis, _ObjectAlarms) and not lis.known_covered(clamp_ms(ms)):
                covers.append((lis, clamp_ms(ms)))
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
                due = wheel.pop_due(clamp_ms(clock.now_ms()), min(room, max(1, self.dispatch_batch)))
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
        ns = rt.find_namespace(ns_name)
        if ns is None:
            self._orphaned += 1
            return True
        base = (key & _OID_MASK).to_bytes(_BASE_BYTES, "big")
        hexid = rt.object_hex_id(ns_name, base)
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
        return ns_name, self._runtime.object_hex_id(ns_name, base)

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
        if storage.schedules.exists():
            ran = await self._run_schedules(instance, storage) or ran
        if not ran:
            self._spurious += 1

    async def _run_alarm(self, instance: Any, storage: StorageEngine, firing: _Firing, row: int, n: int) -> None:
        key = firing.key
        handler = getattr(instance, "alarm", None)
        if handler is None or n > MAX_RETRIES:
            if handler is None:
                log.warning("%s has an alarm set but no alarm() method; dropping it", type(instance).__name__)
            await storage.delete_alarm()
            self._retry.pop(key, None)
            self._dropped += 1
            return
        storage.set_alarm_view(None)
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
        touched = firing.touched or storage.alarm_pending
        if not firing.touched:
            # Nothing committed meanwhile: the row is still the one that fired.
            storage.set_alarm_view(row)
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
            delay_ms = retry_delay_ms(n + 1, self.rng)
            self._retry[key] = (n + 1, self._clock.now_ms() + delay_ms)
            self._retries += 1

    def _woken(self, firing: _Firing, result: outcome.Outcome[Any]) -> None:
        """The wake event finished (its writes are committed, or the object was reset)."""
        if self._firing.get(firing.key) is firing:
            del self._firing[firing.key]
        self._in_flight -= 1
        if self._want_room and self._in_flight <= self.max_in_flight * 3 // 4:
            scope = self._sleep_scope
            if scope is not None:
                scope.cancel()
        if not self._running or self._runtime.closing:
            return
        try:
            self._after_wake(firing, result)
        except Exception:
            log.exception("alarm bookkeeping failed after a wake")

    def _after_wake(self, firing: _Firing, result: outcome.Outcome[Any]) -> None:
        key = firing.key
        storage = firing.storage
        if storage is None:
            actor = self._runtime.live_actor(self._actor_key(key))
            storage = actor.storage if actor is not None else None
        if isinstance(result, outcome.Error):
            self._alarm_failures += 1
            log.warning("alarm wake of %s/%s failed", *self._actor_key(key), exc_info=result.error)
            if storage is not None and firing.hidden:
                storage.reload_alarm()  # forget the hidden view: re-read the row
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
            not_before = self._clock.now_ms() + retry_delay_ms(fails, self.rng)
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

    def _schedule_next(self, lis: _ObjectAlarms) -> int | None:
        return lis.storage.schedules.next_run_ms()

    async def _run_schedules(self, instance: Any, storage: StorageEngine) -> bool:
        if storage.read_connection() is None:
            return False
        assert self._clock is not None
        now = self._clock.now_ms()
        table = storage.schedules
        rows = table.due(now, MAX_SCHEDULES_PER_WAKE)
        for row in rows:
            if not table.is_current(row.id, row.seq):
                continue  # cancelled or replaced by an earlier run of this wake
            await self._run_schedule(instance, storage, row, now)
        return bool(rows)

    async def _run_schedule(self, instance: Any, storage: StorageEngine, row: ScheduleRow, now: int) -> None:
        sid, seq, method, payload, next_ms, cron, tz, interval_ms, missed, retries = row
        table = storage.schedules
        fn = getattr(instance, method, None)
        if not callable(fn):
            log.warning("schedule %r: %s has no method %r; dropping it", sid, type(instance).__name__, method)
            self._schedule_failures += 1
            table.delete_run(sid, seq)
            return
        repeating = cron is not None or interval_ms is not None
        if repeating:
            runs, following, skipped = plan_repeat(cron, tz, interval_ms, missed, next_ms, now)
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
            table.move(sid, seq, following)
        elif failed and retries < MAX_RETRIES:
            assert self._clock is not None
            table.retry(sid, seq, self._clock.now_ms() + retry_delay_ms(retries + 1, self.rng))
            self._retries += 1
        else:
            if failed:
                self._dropped += 1
            table.delete_run(sid, seq)

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
        if method in HANDLER_NAMES or method in SCHEDULER_NAMES or not callable(
            getattr(actor.namespace.cls, method, None)
        ):
            raise ValueError(f"schedule(): {actor.namespace.cls.__name__} has no schedulable method {method!r}")
        if missed not in MISSED_POLICIES:
            raise ValueError(f"schedule() missed must be one of {MISSED_POLICIES}, got {missed!r}")
        if id is not None and (not isinstance(id, str) or not id or len(id) > 256):
            raise ValueError("schedule() id must be a non-empty str of at most 256 characters")
        clock = self._clock
        if clock is None:
            raise DotrioError("the runtime is not running")
        first, cron, interval_ms = first_run(when, clock.now_ms(), repeat=repeat, missed=missed, tz=tz)
        data = encode_value(payload)
        sid = id if id is not None else secrets.token_hex(8)
        storage = actor.storage
        lis = storage.alarm_listener
        assert isinstance(lis, _ObjectAlarms)
        storage.schedules.insert(sid, secrets.randbits(62), method, data, first, cron, tz, interval_ms, missed)
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
        """``DurableObject.get_schedules``: every schedule of the object, soonest first."""
        return [
            Schedule(
                id=row.id,
                method=row.method,
                payload=decode(row.payload),
                next_run_ms=int(row.next_ms),
                cron=row.cron,
                tz=row.tz,
                repeat=None if row.interval_ms is None else row.interval_ms / 1000.0,
                missed=row.missed,
                retries=int(row.retries),
            )
            for row in actor.storage.schedules.rows()
        ]

    def remove_schedule(self, actor: Actor, sid: str) -> bool:
        """``DurableObject.cancel_schedule``: delete a schedule; whether it existed."""
        if not isinstance(sid, str):
            raise TypeError(f"cancel_schedule() takes a schedule id (str), got {type(sid).__name__}")
        storage = actor.storage
        if storage.read_connection() is None or not storage.schedules.exists():
            return False
        # The wheel keeps the cancelled time: a spurious wake later, which
        # re-reads the rows. Cheaper than recomputing here, and always safe.
        return storage.schedules.delete(sid) > 0

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
            index=index.statistics() if index is not None and not index.closed else None,
            wheel=wheel.statistics() if wheel is not None else None,
        )
