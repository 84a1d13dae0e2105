"""One object's storage: KV and SQL in one SQLite database, one transaction.

KV writes go to the object's coalescer (``dotrio._kernels.coalesce``): pending puts and
deletes in key order, last write per key wins, read first by every read, and
merged with the database's range scan by ``list()``. Nothing reaches SQLite
until the commit, which writes the whole batch with prepared statements in one
transaction together with whatever the SQL API wrote (user SQL runs inside an
open SQLite transaction). The runtime commits at the output gate or when the
handler yields at a non-storage await, so writes made without an intervening
await commit atomically together, and a half-applied batch is never visible: a
failed commit rolls everything back.

Every storage call completes without yielding to Trio, except to wait for a
``"power"`` commit in flight (see ``commit_async``) while the object's input
gate is held. That *is* the input gate for storage: no other event can run
while a handler is inside one.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, Protocol, TypeVar, final

import apsw
import trio

from .._context import request_deadline
from .._errors import StorageError
from .._kernels.coalesce import MAX_KEY_BYTES, MAX_VALUE_BYTES, MISSING, READY, Coalescer, check_key
from .._kernels.codec import decode, encode
from .._util import NoPublicConstructor
from ._failure import is_environment_failure, storage_failure
from ._schedules import DROP_TABLE_SQL, ScheduleTable
from ._sql import SqlCursor, SqlInterrupted, SqlStorage, run_user_sql
from ._trio_shim import cancel_for_passed_deadline

if TYPE_CHECKING:
    from ._backend import StorageBackend

__all__ = ["StorageEngine", "Transaction", "MAX_KEY_BYTES", "MAX_VALUE_BYTES", "AlarmListener", "check_key"]

T = TypeVar("T")
_UNSET: Any = object()

_GET = "SELECT value FROM _dotrio_kv WHERE key=?"
_PUT = "INSERT OR REPLACE INTO _dotrio_kv(key, value) VALUES(?, ?)"
_DEL = "DELETE FROM _dotrio_kv WHERE key=?"
_ALARM_GET = "SELECT v FROM _dotrio_meta WHERE k='alarm'"
_ALARM_PUT = "INSERT OR REPLACE INTO _dotrio_meta(k, v) VALUES('alarm', ?)"
_ALARM_DEL = "DELETE FROM _dotrio_meta WHERE k='alarm'"

# list(): one statement per shape of range, so the statement cache holds them all.
_LIST_SQL: dict[tuple[int, bool, bool], str] = {}
for _lo in (0, 1, 2):  # no lower bound, >=, >
    for _hi in (False, True):
        for _rev in (False, True):
            _conds = []
            if _lo:
                _conds.append("key >= ?" if _lo == 1 else "key > ?")
            if _hi:
                _conds.append("key < ?")
            _LIST_SQL[(_lo, _hi, _rev)] = (
                "SELECT key, value FROM _dotrio_kv"
                + (" WHERE " + " AND ".join(_conds) if _conds else "")
                + (" ORDER BY key DESC" if _rev else " ORDER BY key")
            )


class AlarmListener(Protocol):
    """What the alarm system hears of an object's committed alarm changes."""

    def before_alarm_commit(self, when_ms: int | None) -> None: ...

    def after_alarm_commit(self, when_ms: int | None) -> None: ...


class GateHolder(Protocol):
    """The actor side: how storage holds the input gate and asks for a flush."""

    def hold_gate(self) -> None: ...

    def release_gate(self) -> None: ...

    def storage_dirty(self) -> None: ...

    def reset(self, reason: str, cause: BaseException | None = None) -> None: ...


def encode_value(value: object) -> bytes:
    data = encode(value)
    if len(data) > MAX_VALUE_BYTES:
        raise ValueError(f"value encodes to {len(data)} bytes; the limit is {MAX_VALUE_BYTES} (2 MiB)")
    return data


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``."""
    chars = list(prefix)
    while chars:
        c = ord(chars[-1])
        if c < 0x10FFFF:
            c += 1
            if 0xD800 <= c <= 0xDFFF:  # surrogates are not keys
                c = 0xE000
            chars[-1] = chr(c)
            return "".join(chars)
        chars.pop()
    return None


# Alarm times are stored as SQLite integers: signed 64-bit milliseconds.
_MS_MIN = -(2**63)
_MS_MAX = 2**63 - 1


def alarm_ms(when: object) -> int:
    """Epoch milliseconds from an int/float or an aware datetime."""
    if isinstance(when, bool):
        raise TypeError("set_alarm() takes epoch milliseconds (int or float) or an aware datetime, got bool")
    if isinstance(when, int):
        ms = when
    elif isinstance(when, float):
        if when != when or when in (float("inf"), float("-inf")):
            raise ValueError(f"set_alarm() time must be finite, got {when!r}")
        ms = int(round(when))
    else:
        ms = _datetime_ms(when)
    if not _MS_MIN <= ms <= _MS_MAX:
        raise ValueError(
            f"set_alarm() time {when!r} is outside the range of epoch milliseconds that can be stored "
            "(a signed 64-bit integer, -2**63 .. 2**63-1)"
        )
    return ms


def _datetime_ms(when: object) -> int:
    if isinstance(when, _dt.datetime):
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError("set_alarm() got a naive datetime; pass an aware one (e.g. tzinfo=timezone.utc)")
        return int(round(when.timestamp() * 1000))
    raise TypeError(
        f"set_alarm() takes epoch milliseconds (int or float) or an aware datetime, got {type(when).__name__}"
    )


def _deadline_cancelled() -> BaseException:
    """What a sync call interrupted by its task's deadline raises: the
    ``trio.Cancelled`` Trio itself would raise at the next checkpoint (so
    ``fail_after`` turns it into TooSlowError and ``move_on_after`` swallows
    it), made by the Trio shim; a StorageError saying so if the shim cannot."""
    return cancel_for_passed_deadline() or StorageError(
        "sql.exec() was interrupted because its deadline passed; the statement was rolled back"
    )


class _Batch(NamedTuple):
    """One commit's writes, taken out of the write buffer."""

    conn: apsw.Connection | None  # None: the commit thread opens the database
    puts: list[tuple[str, bytes]]
    dels: list[tuple[str]]
    alarm: Any  # _UNSET, None (delete) or epoch ms


class StorageEngine:
    """One object's storage engine: the KV, SQL and alarm operations behind
    ``ctx.storage`` (:class:`~dotrio.storage.ObjectStorage`, the user-facing
    API), the object's SQLite transaction and its commit pipeline, which the
    runtime drives."""

    def __init__(self, backend: StorageBackend, namespace: str, object_id: str) -> None:
        self._backend = backend
        self._namespace = namespace
        self._object_id = object_id
        self._path = backend.path_for(namespace, object_id)
        self._conn: apsw.Connection | None = None
        # The database file is known not to exist (reads never create it): no
        # open attempt per read of a never-written object.
        self._absent = False
        self._co = Coalescer(backend.cache_budget)
        # An SQLite transaction is open on _conn (SQL API, delete_all, schedules).
        self._txn_open = False
        # The pool must not close our connection (a transaction or commit is open).
        self._pinned = False
        self._dirty = False
        self._alarm_pending: Any = _UNSET
        self._alarm_cached: Any = _UNSET
        self._txn_lock: trio.Lock | None = None
        self._in_transaction = 0
        self._txn_done: trio.Event | None = None
        self._gate: GateHolder | None = None
        self.alarm_listener: AlarmListener | None = None
        self.sql = SqlStorage(self)
        self.schedules = ScheduleTable(self)
        """The scheduler's rows in this object's database (the alarm manager's)."""
        # "power" commits run in a worker thread (in-memory databases have no
        # fsync to overlap: they commit inline).
        self._power = backend.durability == "power" and backend.data_dir is not None
        self._inflight: trio.Event | None = None
        # Handlers inside a storage call that waits (a "power" commit in flight,
        # the transaction lock): no flush may split their batch meanwhile.
        self._waits = 0
        # Held from the dispatch of a "power" commit until its thread is done
        # with the connection: sync code on the Trio thread that needs the
        # connection meanwhile (sql.exec) waits on it.
        self._conn_lock = threading.Lock() if self._power else None

    # ---- connection and transaction plumbing -------------------------------------

    def _on_pool_close(self) -> None:
        self._conn = None

    def _wait_thread(self) -> None:
        """Block until a commit thread is done with the connection (sync callers
        only; async ones await ``_wait_inflight`` instead)."""
        lock = self._conn_lock
        if lock is not None and self._inflight is not None:
            with lock:
                pass

    async def _wait_inflight(self) -> None:
        self._waits += 1
        try:
            while self._inflight is not None:
                await self._inflight.wait()
        finally:
            self._waits -= 1

    @property
    def label(self) -> str:
        """``namespace/object id``, for messages."""
        return f"{self._namespace}/{self._object_id}"

    @property
    def waiting(self) -> bool:
        """True while a handler is inside a storage call that waits (no time to commit)."""
        return self._waits > 0

    @property
    def alarm_pending(self) -> bool:
        """set_alarm/delete_alarm was called since the last commit."""
        return self._alarm_pending is not _UNSET

    def _connection(self, create: bool) -> apsw.Connection | None:
        if self._inflight is not None:
            self._wait_thread()
        conn = self._conn
        if conn is not None:
            self._backend.touch(self._path)
            return conn
        if self._absent and not create:
            return None
        try:
            conn = self._backend.connect(self._path, create, self._on_pool_close)
        except Exception as exc:
            if not create:
                # A failed read changes nothing: the caller gets the
                # StorageError (a handler that lets it escape answers 500, or
                # 503 "storage full"); the object need not reset.
                err = storage_failure(
                    f"object {self._namespace}/{self._object_id}: could not open its database", exc, self._path
                )
            else:
                err = self._failed("could not open (or create) its database", exc)
            if err is exc:
                raise
            raise err from exc
        self._conn = conn
        self._absent = conn is None
        return conn

    # ---- the engine interface of the storage subsystem (schedules, alarms) ------

    def attach_gate(self, gate: GateHolder) -> None:
        """The actor that holds this object's input gate and asks for flushes."""
        self._gate = gate

    @property
    def pending_writes(self) -> bool:
        """Writes were made since the last commit started (a commit in flight
        does not count, unlike ``dirty``)."""
        return self._dirty

    def read_connection(self) -> apsw.Connection | None:
        """The object's connection, or None while its database does not exist."""
        return self._connection(False)

    def write_connection(self) -> tuple[apsw.Connection, bool]:
        """The object's connection inside its open write transaction (creating
        the database if needed), and whether this call opened the transaction."""
        conn = self._connection(True)
        assert conn is not None
        opened = not self._txn_open
        self._begin(conn)
        return conn, opened

    def end_if_clean(self, conn: apsw.Connection, opened: bool) -> None:
        """Close a transaction opened only to read (see ``write_connection``)."""
        self._end_if_clean(conn, opened)

    def mark_dirty(self) -> None:
        """Writes were made on the connection: commit them with the turn."""
        self._mark_dirty()

    def database_size(self) -> int:
        """The database's size in bytes (``sql.database_size``)."""
        return self._database_size()

    def exec_user_sql(self, query: str, bindings: tuple[Any, ...]) -> SqlCursor:
        """Run user SQL in the object's write transaction (``sql.exec``)."""
        return self._exec_user_sql(query, bindings)

    def pending_alarm_ms(self) -> int | None:
        """The alarm time a pending ``set_alarm`` will commit (None if no
        set_alarm is pending, or a delete is)."""
        ms = self._alarm_pending
        return None if ms is _UNSET else ms

    def set_alarm_view(self, value: int | None) -> None:
        """What ``get_alarm()`` answers until the next commit: the alarm system
        hides the firing alarm (None) while ``alarm()`` runs."""
        self._alarm_cached = value

    def reload_alarm(self) -> None:
        """Forget the alarm view: the next read goes to the database."""
        self._alarm_cached = _UNSET

    def _failed(self, what: str, exc: BaseException) -> StorageError:
        """A storage step failed through no fault of the caller (disk full, I/O
        error, anything the OS or SQLite raised): roll back, reset the object
        (which logs it once) and return the StorageError to raise."""
        err = storage_failure(f"object {self._namespace}/{self._object_id}: {what}", exc, self._path)
        gate = self._gate
        if gate is not None:
            gate.reset(str(err), err)
        else:
            self.rollback()
        return err

    def _pin(self) -> None:
        if not self._pinned:
            self._pinned = True
            self._backend.pin(self._path)

    def _unpin(self) -> None:
        if self._pinned:
            self._pinned = False
            self._backend.unpin(self._path)

    def _begin(self, conn: apsw.Connection) -> None:
        if not self._txn_open:
            # Deferred: a transaction that only reads is ended at once (_end_if_clean).
            # The pool's connections hold the file's lock exclusively, so a deferred
            # transaction never meets SQLITE_BUSY when it starts writing.
            conn.execute("BEGIN")
            self._txn_open = True
            self._pin()

    def _mark_dirty(self) -> None:
        if not self._dirty:
            self._dirty = True
            if self._gate is not None:
                self._gate.storage_dirty()

    @property
    def dirty(self) -> bool:
        """True while there are writes not yet committed (or being committed)."""
        return self._dirty or self._inflight is not None

    @property
    def commits_off_thread(self) -> bool:
        """Commits go through ``commit_async`` (``"power"`` durability on files)."""
        return self._power

    @property
    def committing(self) -> bool:
        """A ``"power"`` commit is in flight."""
        return self._inflight is not None

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction > 0

    def _write_batch(
        self, conn: apsw.Connection, puts: list[tuple[str, bytes]], dels: list[tuple[str]], alarm: Any
    ) -> None:
        """Write one batch and commit. Runs on the Trio thread ("process") or in
        a worker thread ("power"); touches nothing but the connection and
        ``_txn_open``."""
        hook = self._backend.fault_hook
        if hook is not None:
            hook("commit", self._path)  # tests inject storage failures here
        if not self._txn_open:
            if alarm is _UNSET and not dels and len(puts) == 1:
                # A lone statement is its own transaction: no BEGIN/COMMIT round trips.
                conn.execute(_PUT, puts[0])
                return
            conn.execute("BEGIN")
            self._txn_open = True
        if puts:
            if len(puts) == 1:
                conn.execute(_PUT, puts[0])
            else:
                conn.executemany(_PUT, puts)
        if dels:
            if len(dels) == 1:
                conn.execute(_DEL, dels[0])
            else:
                conn.executemany(_DEL, dels)
        if alarm is not _UNSET:
            if alarm is None:
                conn.execute(_ALARM_DEL)
            else:
                conn.execute(_ALARM_PUT, (alarm,))
        conn.execute("COMMIT")
        self._txn_open = False

    def _take_batch(self, what: str, threaded: bool) -> _Batch | None:
        """Step one of a commit, either kind: take every uncommitted write as one
        batch (None if there is nothing to commit) and cover a new alarm time in
        the alarm index before the batch can land."""
        if not self._dirty:
            return None
        if self._in_transaction:
            raise RuntimeError(f"{what}() inside a storage transaction")  # the runtime waits instead
        co = self._co
        alarm = self._alarm_pending
        if not co.pending and alarm is _UNSET and not self._txn_open:
            self._dirty = False
            return None
        try:
            if alarm is not _UNSET and self.alarm_listener is not None:
                self.alarm_listener.before_alarm_commit(alarm)
            conn = self._conn
            if conn is None:
                if threaded:
                    # The commit thread opens (or creates) the file.
                    self._backend.prepare_create(self._path)
                else:
                    conn = self._connection(True)
                    assert conn is not None
        except BaseException as e:
            self._commit_failed(e, lost=False)
        puts, dels = co.take()
        self._alarm_pending = _UNSET
        self._dirty = False
        return _Batch(conn, puts, dels, alarm)

    def _commit_failed(self, failure: BaseException, lost: bool) -> NoReturn:
        """A commit failed, either kind: everything uncommitted goes (the
        runtime then resets the object). ``lost``: the connection's state is
        unknown (the commit thread failed)."""
        self._rollback_failed(failure, lost=lost)
        if isinstance(failure, StorageError) or not isinstance(failure, Exception):
            raise failure
        raise self._commit_error(failure) from failure

    def _rollback_failed(self, failure: BaseException, lost: bool = False) -> None:
        """Roll back after a failed commit; a failure of the rollback itself
        (the connection is then discarded) must not hide the first one."""
        try:
            self.rollback(lost)
        except Exception:
            try:
                self._backend.discard(self._path)
            except Exception:
                pass
            self._conn = None
            self._txn_open = False
            self._unpin()

    def _commit_error(self, exc: Exception) -> StorageError:
        """The StorageError a failed commit raises: it names the cause first
        (``storage full: ...``) when the OS or SQLite's files failed."""
        what = f"object {self._namespace}/{self._object_id}: commit failed, the batch was rolled back"
        if isinstance(exc, apsw.Error) and not is_environment_failure(exc):
            return StorageError(f"{what}: {exc}")
        return storage_failure(what, exc, self._path)

    def _batch_committed(self, batch: _Batch) -> None:
        """The last step of a commit, either kind: the batch is in the database."""
        self._co.settle()
        if not self._txn_open:
            self._unpin()
        alarm = batch.alarm
        if alarm is not _UNSET:
            self._alarm_cached = alarm
            if self.alarm_listener is not None:
                self.alarm_listener.after_alarm_commit(alarm)
        gate = self._gate
        if self._dirty and gate is not None:
            # Writes made while a "power" batch was in flight: their flush was skipped.
            gate.storage_dirty()

    def commit(self) -> None:
        """Commit every write made so far as one SQLite transaction, here, on
        the calling thread.

        On failure everything uncommitted is rolled back and StorageError is
        raised; the runtime then resets the object.
        """
        if not self._dirty:
            return
        if self._in_transaction:
            raise RuntimeError("commit() inside a storage transaction")  # the runtime waits instead
        if self._inflight is not None:
            raise RuntimeError("commit() while a commit is in flight; await commit_async()")
        batch = self._take_batch("commit", threaded=False)
        if batch is None:
            return
        assert batch.conn is not None
        try:
            self._write_batch(batch.conn, batch.puts, batch.dels, batch.alarm)
        except BaseException as e:
            self._commit_failed(e, lost=False)
        self._batch_committed(batch)

    async def commit_async(self) -> None:
        """The output gate's commit: returns once every write made so far is
        committed. Same steps as :meth:`commit`, except that in ``"power"``
        mode the batch is written and fsynced in a worker thread (a bounded
        pool shared by all objects, so commits of different objects overlap
        their fsyncs), with the object's input gate held so that no event of
        this object runs meanwhile; writes made in the meantime go to a fresh
        buffer and commit next."""
        while self._inflight is not None:
            await self._inflight.wait()
        if not self._power:
            self.commit()
            return
        batch = self._take_batch("commit_async", threaded=True)
        if batch is None:
            return
        conn = batch.conn
        done = self._inflight = trio.Event()
        lock = self._conn_lock
        assert lock is not None
        lock.acquire()
        self._thread_started = False
        self._pin()
        gate = self._gate
        if gate is not None:
            gate.hold_gate()
        failure: BaseException | None = None
        try:
            # Shielded: a batch is never abandoned half-way; a cancelled caller
            # waits at most one commit.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(
                    self._commit_in_thread, conn, batch.puts, batch.dels, batch.alarm, lock,
                    limiter=self._backend.commit_limiter(),
                )
        except BaseException as e:
            failure = e
        finally:
            if not self._thread_started:
                lock.release()
            if conn is None and self._conn is not None:
                # The thread opened (or created) the file: the pool owns the connection now.
                self._backend.adopt(self._path, self._conn, self._on_pool_close)
            self._inflight = None
            if gate is not None:
                gate.release_gate()
            done.set()
        if failure is not None:
            # The thread rolled the database back.
            self._commit_failed(failure, lost=True)
        self._batch_committed(batch)

    # Set by the commit thread once it runs: from then on the thread releases the lock.
    _thread_started = False

    def _commit_in_thread(
        self,
        conn: apsw.Connection | None,
        puts: list[tuple[str, bytes]],
        dels: list[tuple[str]],
        alarm: Any,
        lock: threading.Lock,
    ) -> None:
        self._thread_started = True
        try:
            if conn is None:
                # First commit of this object (or its connection was evicted): open
                # here, so that creating the file and its schema fsyncs off the Trio
                # thread too. Sync callers waiting on the lock find it in _conn.
                conn = self._backend.open_unpooled(self._path)
                self._conn = conn
                self._absent = False
            self._write_batch(conn, puts, dels, alarm)
        except BaseException:
            try:
                if conn is not None and conn.in_transaction:
                    conn.execute("ROLLBACK")
            except apsw.Error:
                pass  # the Trio side discards the connection
            self._txn_open = False
            raise
        finally:
            lock.release()

    def rollback(self, lost: bool = False) -> None:
        """Drop every uncommitted write. ``lost``: a failed commit left the
        connection in an unknown state."""
        if self._inflight is not None:
            self._wait_thread()
        co = self._co
        if co.in_flight:
            co.clear_cache()  # the batch in flight may or may not land: forget what we knew
        co.discard()
        self._alarm_pending = _UNSET
        self._dirty = False
        conn = self._conn
        in_txn = self._txn_open
        if conn is not None:
            try:
                in_txn = in_txn or conn.in_transaction
            except apsw.Error:
                in_txn = True
        if in_txn or lost:
            self._txn_open = False
            co.clear_cache()  # the database goes back to what was committed
            self.schedules.forget()  # a rolled-back turn may have created the table
            if conn is not None:
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                except apsw.Error:
                    # The connection is in an unknown state: close it; SQLite
                    # discards the uncommitted transaction on close.
                    self._backend.discard(self._path)
            self._unpin()

    async def wait_transaction_done(self) -> None:
        """Output gates wait here while a ``transaction()`` is open."""
        while self._in_transaction:
            if self._txn_done is None:
                self._txn_done = trio.Event()
            await self._txn_done.wait()

    def close(self) -> None:
        """The object is evicted: hand the connection back to the pool."""
        if self._dirty or self._txn_open:
            self.rollback()
        self._backend.release(self._path)
        self._pinned = False
        self._conn = None

    def _database_size(self) -> int:
        conn = self._connection(False)
        if conn is None:
            return 0
        count = conn.execute("PRAGMA page_count").fetchall()[0][0]
        size = conn.execute("PRAGMA page_size").fetchall()[0][0]
        return int(count) * int(size)

    # ---- KV ------------------------------------------------------------------

    def _read_db(self, key: str) -> bytes | None:
        """``key``'s newest value when the coalescer did not know it."""
        raw = self._co.lookup(key)
        if raw is not MISSING:
            return raw
        conn = self._connection(False)
        value = None
        if conn is not None:
            for (value,) in conn.execute(_GET, (key,)):
                break
        self._co.remember(key, value)
        return value

    async def get(self, key: str | list[str]) -> Any:
        """The value of ``key`` (None if absent), or for a list of keys a dict of
        those that exist, in key order."""
        value = self._co.get_value(key)
        if value is not MISSING:
            return value
        if type(key) is str:
            # Only valid keys are ever known to the coalescer: check the rest.
            check_key(key)
            if self._inflight is not None:
                await self._wait_inflight()
            raw = self._read_db(key)
            return None if raw is None else decode(raw)
        if isinstance(key, list):
            keys = sorted({check_key(k) for k in key})
            if self._inflight is not None:
                await self._wait_inflight()
            out: dict[str, Any] = {}
            for k in keys:
                raw = self._read_db(k)
                if raw is not None:
                    out[k] = decode(raw)
            return out
        check_key(key)  # raises TypeError
        raise AssertionError("unreachable")

    def put(self, key: str | dict[str, Any], value: Any = _UNSET) -> Awaitable[None]:
        """Store ``value`` under ``key``, or every pair of a dict, atomically.

        Awaitable like every storage call; a put never waits (it only buffers),
        so it does its work at once and returns an awaitable that is already
        done, which costs a third of a coroutine.
        """
        if value is _UNSET:
            if not isinstance(key, dict):
                raise TypeError("put(key, value) needs a value (or pass a dict of entries)")
            # The coalescer checks and encodes everything before it buffers
            # anything: a rejected put writes nothing.
            if self._co.put_values(key) and not self._dirty:
                self._mark_dirty()
            return READY
        if isinstance(key, dict):
            raise TypeError("put(dict) takes no second argument")
        self._co.put_value(key, value)  # checks the key, encodes, limits the size
        if not self._dirty:
            self._mark_dirty()
        return READY

    async def delete(self, key: str | list[str]) -> bool | int:
        """Delete ``key`` (returns whether it existed) or a list of keys (returns
        how many existed)."""
        co = self._co
        if isinstance(key, list):
            keys = [check_key(k) for k in key]
            count = 0
            for k in dict.fromkeys(keys):
                raw = co.lookup(k)
                if raw is MISSING:
                    if self._inflight is not None:
                        await self._wait_inflight()
                    raw = self._read_db(k)
                if raw is not None:
                    count += 1
                    co.delete(k)
            if count:
                self._mark_dirty()
            return count
        k = check_key(key)
        raw = co.lookup(k)
        if raw is MISSING:
            if self._inflight is not None:
                await self._wait_inflight()
            raw = self._read_db(k)
        if raw is None:
            return False
        co.delete(k)
        self._mark_dirty()
        return True

    async def list(
        self,
        prefix: str | None = None,
        start: str | None = None,
        start_after: str | None = None,
        end: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """Entries in key order (``end`` exclusive), optionally reversed and limited."""
        if start is not None and start_after is not None:
            raise ValueError("list() takes start or start_after, not both")
        if limit is not None:
            if type(limit) is not int:
                raise TypeError(f"list() limit must be a positive int or None, got {type(limit).__name__} {limit!r}")
            if limit <= 0:
                raise ValueError(f"list() limit must be a positive int or None, got {limit!r}")
        if type(reverse) is not bool:
            raise TypeError(f"list() reverse must be bool, got {type(reverse).__name__}")
        # The range as one lower bound (inclusive or not) and one exclusive upper bound.
        lo: str | None = None
        lo_inclusive = True
        hi: str | None = None
        if prefix is not None:
            check_key(prefix, "prefix")
            if prefix:
                lo = prefix
                hi = _successor(prefix)
        if start is not None:
            check_key(start, "start")
            if lo is None or start > lo:
                lo = start
        if start_after is not None:
            check_key(start_after, "start_after")
            if lo is None or start_after >= lo:
                lo, lo_inclusive = start_after, False
        if end is not None:
            check_key(end, "end")
            if hi is None or end < hi:
                hi = end
        if lo is not None and hi is not None and lo >= hi:
            return {}
        if self._inflight is not None:
            await self._wait_inflight()
        conn = self._connection(False)
        co = self._co
        if conn is None:
            rows = co.merge(None, lo, lo_inclusive, hi, reverse, -1 if limit is None else limit)
        else:
            args: list[str] = []
            if lo is not None:
                args.append(lo)
            if hi is not None:
                args.append(hi)
            sql = _LIST_SQL[(0 if lo is None else (1 if lo_inclusive else 2), hi is not None, reverse)]
            cursor = conn.execute(sql, args)
            try:
                rows = co.merge(cursor, lo, lo_inclusive, hi, reverse, -1 if limit is None else limit)
            finally:
                # A limit may stop the scan early: end the statement now, not at GC.
                cursor.close()
        return {k: decode(v) for k, v in rows}

    async def delete_all(self) -> None:
        """Remove everything: KV pairs, SQL tables and the alarm."""
        if self._inflight is not None:
            await self._wait_inflight()
        co = self._co
        co.discard()
        co.clear_cache()
        conn = self._connection(False)
        self._alarm_pending = None
        self._mark_dirty()
        if conn is None:
            return
        self._begin(conn)
        try:
            conn.execute("PRAGMA defer_foreign_keys=ON")
            conn.execute("DELETE FROM _dotrio_kv")
            objects = conn.execute(
                "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                "AND lower(substr(name, 1, 8)) != '_dotrio_' AND type IN ('table', 'view', 'trigger')"
            ).fetchall()
            for kind, name in objects:
                quoted = '"' + name.replace('"', '""') + '"'
                conn.execute(f"DROP {kind.upper()} IF EXISTS {quoted}")
            conn.execute(DROP_TABLE_SQL)  # the scheduler's rows are part of "everything"
        except apsw.Error as e:
            raise StorageError(f"delete_all failed: {e}") from e

    async def sync(self) -> None:
        """Return once every earlier write is committed (and durable as configured)."""
        if self._in_transaction:
            return
        await self.commit_async()
        await trio.lowlevel.checkpoint()

    # ---- transactions ------------------------------------------------------------

    async def transaction(self, fn: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``fn(txn)`` atomically: an exception (or ``txn.rollback()``) undoes
        its writes. No other event is delivered while it runs."""
        if not callable(fn):
            raise TypeError(f"transaction() takes an async function fn(txn), got {type(fn).__name__}")
        lock = self._txn_lock
        if lock is None:
            lock = self._txn_lock = trio.Lock()
        elif lock.locked() and lock.statistics().owner is trio.lowlevel.current_task():
            raise StorageError("transaction() cannot be nested; use the txn object you were given")
        gate = self._gate
        self._waits += 1
        try:
            await lock.acquire()
        finally:
            self._waits -= 1
        try:
            if gate is not None:
                gate.hold_gate()
            try:
                if self._inflight is not None:
                    await self._wait_inflight()
                # KV writes are undone by restoring the coalescer; SQL writes (made
                # inside fn through sql.exec) by a savepoint, or by rolling back the
                # whole SQLite transaction if fn opened it.
                conn = self._conn if self._txn_open else None
                if conn is not None:
                    conn.execute("SAVEPOINT _dotrio_txn")
                txn = Transaction._create(self, self._co.snapshot(), self._alarm_pending, conn)
                self._in_transaction += 1
                try:
                    result = await fn(txn)
                except BaseException:
                    if not txn._rolled_back:
                        txn._undo()
                    raise
                finally:
                    txn._done = True
                    self._in_transaction -= 1
                    if conn is not None and self._conn is conn and conn.in_transaction:
                        conn.execute("RELEASE _dotrio_txn")
                    if self._txn_done is not None and not self._in_transaction:
                        self._txn_done.set()
                        self._txn_done = None
                if self._co.pending or self._txn_open or self._alarm_pending is not _UNSET:
                    self._mark_dirty()
                return result
            finally:
                if gate is not None:
                    gate.release_gate()
        finally:
            lock.release()

    def transaction_sync(self, fn: Callable[[], T]) -> T:
        """Run the sync ``fn()`` (SQL work) atomically: raising rolls it back."""
        if not callable(fn):
            raise TypeError(f"transaction_sync() takes a sync function fn(), got {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            raise TypeError("transaction_sync() takes a sync function; use transaction() for async code")
        conn = self._connection(True)
        assert conn is not None
        opened = not self._txn_open
        self._begin(conn)
        conn.execute("SAVEPOINT _dotrio_sync")
        try:
            result = fn()
            if inspect.isawaitable(result):
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                raise TypeError("transaction_sync() fn returned an awaitable; it must be a sync function")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK TO _dotrio_sync")
                conn.execute("RELEASE _dotrio_sync")
            self._end_if_clean(conn, opened)
            raise
        conn.execute("RELEASE _dotrio_sync")
        if conn.txn_state("main") == apsw.SQLITE_TXN_WRITE:
            self._mark_dirty()
        else:
            self._end_if_clean(conn, opened)
        return result

    def _end_if_clean(self, conn: apsw.Connection, opened: bool) -> None:
        """Close a transaction we opened only to read, so it holds no snapshot."""
        if not conn.in_transaction:
            # SQLite itself ended it (an interrupted write rolls the whole transaction back).
            if self._txn_open:
                self._txn_open = False
                self._co.clear_cache()
                self._unpin()
            return
        if opened and not self._dirty and not self._co.pending and conn.txn_state("main") != apsw.SQLITE_TXN_WRITE:
            conn.execute("COMMIT")
            self._txn_open = False
            self._unpin()

    def _exec_user_sql(self, query: str, bindings: tuple) -> SqlCursor:
        conn = self._connection(True)
        assert conn is not None
        # A deadline of the calling task interrupts the statement (apsw's progress
        # handler), rolling it back. A cancel can only come from a deadline
        # here: nothing else runs while this sync call does.
        # So does the deadline of the request the handler serves, which reaches
        # here without a cancel scope (see the runtime's _drive_until).
        deadline = min(trio.current_effective_deadline(), request_deadline.get())
        opened = not self._txn_open
        self._begin(conn)
        wrote_before = not opened and conn.txn_state("main") == apsw.SQLITE_TXN_WRITE
        body = query.rstrip().rstrip(";")
        # A multi-statement exec is all-or-nothing, like a single statement. So
        # is a write with RETURNING, whose changes are all made at its first
        # step: one whose rows go over max_sql_result_rows must be undone.
        multi = ";" in body or "returning" in body.lower()
        if multi:
            conn.execute("SAVEPOINT _dotrio_exec")
        try:
            cursor = run_user_sql(conn, query, bindings, deadline, self._backend.max_sql_result_rows)
        except BaseException as exc:
            if conn.in_transaction and multi:
                conn.execute("ROLLBACK TO _dotrio_exec")
                conn.execute("RELEASE _dotrio_exec")
            self._end_if_clean(conn, opened)
            if isinstance(exc, SqlInterrupted):
                if wrote_before and not self._txn_open:
                    # An interrupted write makes SQLite roll back the whole
                    # transaction, taking this turn's earlier SQL writes with it:
                    # like a failed commit, the object resets.
                    if self._gate is not None:
                        self._gate.reset("sql.exec() interrupted by a deadline rolled back this turn's SQL writes")
                raise _deadline_cancelled() from None
            cause = exc.__cause__ if isinstance(exc, StorageError) else exc
            if isinstance(exc, Exception) and cause is not None and is_environment_failure(cause):
                # The disk or SQLite's files failed (SQLite may have rolled the
                # whole transaction back): the object resets.
                raise self._failed("sql.exec() failed", cause) from cause
            if wrote_before and not self._txn_open and self._gate is not None:
                # SQLite rolled back the whole transaction, this turn's earlier
                # SQL writes with it: like a failed commit, the object resets.
                self._gate.reset(f"sql.exec() failed and SQLite rolled back this turn's SQL writes: {exc}", exc)
            raise
        if multi:
            conn.execute("RELEASE _dotrio_exec")
        if conn.txn_state("main") == apsw.SQLITE_TXN_WRITE:
            self._mark_dirty()
        else:
            self._end_if_clean(conn, opened)
        return cursor

    # ---- alarm ---------------------------------------------------------------

    def committed_alarm(self) -> int | None:
        """The alarm as last committed (reads the database once, then cached)."""
        if self._alarm_cached is _UNSET:
            conn = self._connection(False)
            value = None
            if conn is not None:
                for (v,) in conn.execute(_ALARM_GET):
                    value = v
            self._alarm_cached = value
        return self._alarm_cached

    async def get_alarm(self) -> int | None:
        if self._alarm_pending is not _UNSET:
            return self._alarm_pending
        if self._alarm_cached is _UNSET and self._inflight is not None:
            await self._wait_inflight()
        return self.committed_alarm()

    async def set_alarm(self, scheduled_time: int | float | _dt.datetime) -> None:
        """Set the object's one alarm (replacing any), at epoch ms or an aware datetime."""
        self._alarm_pending = alarm_ms(scheduled_time)
        self._mark_dirty()

    async def delete_alarm(self) -> None:
        if self._alarm_pending is _UNSET and self._alarm_cached is _UNSET and self._inflight is not None:
            await self._wait_inflight()
        if self._alarm_pending is None or (self._alarm_pending is _UNSET and self.committed_alarm() is None):
            return
        self._alarm_pending = None
        self._mark_dirty()



@final
class Transaction(metaclass=NoPublicConstructor):
    """The ``txn`` given to ``storage.transaction(fn)``."""

    __slots__ = ("_storage", "_snapshot", "_alarm_before", "_conn", "_rolled_back", "_done")

    def __init__(
        self, storage: StorageEngine, snapshot: object, alarm_before: Any, conn: apsw.Connection | None
    ) -> None:
        self._storage = storage
        self._snapshot = snapshot
        self._alarm_before = alarm_before
        # The connection holding the savepoint, or None: the SQLite transaction
        # (if any) was opened inside fn and is rolled back whole.
        self._conn = conn
        self._rolled_back = False
        self._done = False

    def _check(self) -> StorageEngine:
        if self._done:
            raise StorageError("this transaction has finished; use storage directly")
        if self._rolled_back:
            raise StorageError("this transaction was rolled back; no further operations are allowed")
        return self._storage

    def _undo(self) -> None:
        storage = self._storage
        storage._co.restore(self._snapshot)
        storage._alarm_pending = self._alarm_before
        conn = self._conn
        if conn is not None:
            if storage._conn is conn and conn.in_transaction:
                conn.execute("ROLLBACK TO _dotrio_txn")
                storage._co.clear_cache()
        elif storage._txn_open:
            storage._txn_open = False
            storage._co.clear_cache()
            current = storage._conn
            if current is not None and current.in_transaction:
                current.execute("ROLLBACK")
            storage._unpin()

    async def get(self, key: str | list[str]) -> Any:
        """As ``storage.get``, inside the transaction."""
        return await self._check().get(key)

    async def put(self, key: str | dict[str, Any], value: Any = _UNSET) -> None:
        """As ``storage.put``, inside the transaction."""
        await self._check().put(key, value)

    async def delete(self, key: str | list[str]) -> bool | int:
        """As ``storage.delete``, inside the transaction."""
        return await self._check().delete(key)

    async def list(self, **options: Any) -> dict[str, Any]:
        """As ``storage.list``, inside the transaction."""
        return await self._check().list(**options)

    async def get_alarm(self) -> int | None:
        """As ``storage.get_alarm``, inside the transaction."""
        return await self._check().get_alarm()

    async def set_alarm(self, scheduled_time: int | float | _dt.datetime) -> None:
        """As ``storage.set_alarm``, inside the transaction (undone if it rolls back)."""
        await self._check().set_alarm(scheduled_time)

    async def delete_alarm(self) -> None:
        """As ``storage.delete_alarm``, inside the transaction (undone if it rolls back)."""
        await self._check().delete_alarm()

    def rollback(self) -> None:
        """Undo this transaction's writes; the transaction ends without an error."""
        self._check()
        self._undo()
        self._rolled_back = True
