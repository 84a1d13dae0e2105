"""One object's storage: KV and SQL in one SQLite database, one transaction.

Writes go to a pending buffer (last write per key wins) and are folded into an
open SQLite write transaction when something needs the database to reflect
them (a ``list``, a commit). The transaction is committed by the runtime at
the output gate or when the handler yields at a non-storage await, so writes
made without an intervening await commit atomically together, and a
half-applied batch is never visible: a failed commit rolls everything back.

Every storage call completes without yielding to Trio. That *is* the input
gate for storage: no other event can run while a handler is inside one.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import apsw
import trio

from .._codec import decode, encode
from .._errors import StorageError
from ._sql import SqlCursor, SqlStorage, run_user_sql

if TYPE_CHECKING:
    from ._backend import StorageBackend

__all__ = ["ObjectStorage", "Transaction", "MAX_KEY_BYTES", "MAX_VALUE_BYTES", "AlarmListener"]

MAX_KEY_BYTES = 2048
MAX_VALUE_BYTES = 2 * 1024 * 1024

T = TypeVar("T")
_UNSET: Any = object()

_GET = "SELECT value FROM _dotrio_kv WHERE key=?"
_PUT = "INSERT OR REPLACE INTO _dotrio_kv(key, value) VALUES(?, ?)"
_DEL = "DELETE FROM _dotrio_kv WHERE key=?"
_ALARM_GET = "SELECT v FROM _dotrio_meta WHERE k='alarm'"
_ALARM_PUT = "INSERT OR REPLACE INTO _dotrio_meta(k, v) VALUES('alarm', ?)"
_ALARM_DEL = "DELETE FROM _dotrio_meta WHERE k='alarm'"


class AlarmListener(Protocol):
    """What the alarm system hears of an object's committed alarm changes."""

    def before_alarm_commit(self, when_ms: int | None) -> None: ...

    def after_alarm_commit(self, when_ms: int | None) -> None: ...


class GateHolder(Protocol):
    """The actor side: how storage holds the input gate and asks for a flush."""

    def hold_gate(self) -> None: ...

    def release_gate(self) -> None: ...

    def storage_dirty(self) -> None: ...


def check_key(key: object, what: str = "key") -> str:
    if type(key) is not str:
        raise TypeError(f"storage {what} must be str, got {type(key).__name__}")
    if len(key) > MAX_KEY_BYTES // 4 or not key.isascii():
        try:
            n = len(key.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise ValueError(f"storage {what} is not valid Unicode (lone surrogate at index {e.start})") from None
        if n > MAX_KEY_BYTES:
            raise ValueError(f"storage {what} is {n} bytes of UTF-8; the limit is {MAX_KEY_BYTES}")
    return key


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


def alarm_ms(when: object) -> int:
    """Epoch milliseconds from an int/float or an aware datetime."""
    if isinstance(when, bool):
        raise TypeError("set_alarm() takes epoch milliseconds (int or float) or an aware datetime, got bool")
    if isinstance(when, int):
        return when
    if isinstance(when, float):
        if when != when or when in (float("inf"), float("-inf")):
            raise ValueError(f"set_alarm() time must be finite, got {when!r}")
        return int(round(when))
    if isinstance(when, _dt.datetime):
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError("set_alarm() got a naive datetime; pass an aware one (e.g. tzinfo=timezone.utc)")
        return int(round(when.timestamp() * 1000))
    raise TypeError(
        f"set_alarm() takes epoch milliseconds (int or float) or an aware datetime, got {type(when).__name__}"
    )


class ObjectStorage:
    """``ctx.storage``: the KV API, the SQL API and the alarm of one object."""

    def __init__(self, backend: StorageBackend, namespace: str, object_id: str) -> None:
        self._backend = backend
        self._namespace = namespace
        self._object_id = object_id
        self._path = backend.path_for(namespace, object_id)
        self._conn: apsw.Connection | None = None
        self._pending: dict[str, bytes | None] = {}
        self._txn_open = False
        self._dirty = False
        self._alarm_pending: Any = _UNSET
        self._alarm_cached: Any = _UNSET
        self._txn_lock = trio.Lock()
        self._in_transaction = 0
        self._txn_done: trio.Event | None = None
        self._gate: GateHolder | None = None
        self.alarm_listener: AlarmListener | None = None
        self.sql = SqlStorage(self)

    # ---- connection and transaction plumbing -------------------------------------

    def _on_pool_close(self) -> None:
        self._conn = None

    def _connection(self, create: bool) -> apsw.Connection | None:
        conn = self._conn
        if conn is not None:
            self._backend.touch(self._path)
            return conn
        conn = self._backend.connect(self._path, create, self._on_pool_close)
        self._conn = conn
        return conn

    def _begin(self, conn: apsw.Connection) -> None:
        if not self._txn_open:
            conn.execute("BEGIN IMMEDIATE")
            self._txn_open = True
            self._backend.pin(self._path)

    def _mark_dirty(self) -> None:
        if not self._dirty:
            self._dirty = True
            if self._gate is not None:
                self._gate.storage_dirty()

    def _materialize(self) -> None:
        """Fold pending writes into the open transaction (not a commit)."""
        pending = self._pending
        if not pending:
            return
        conn = self._connection(True)
        assert conn is not None
        self._begin(conn)
        puts = [(k, v) for k, v in pending.items() if v is not None]
        dels = [(k,) for k, v in pending.items() if v is None]
        try:
            if puts:
                conn.executemany(_PUT, puts)
            if dels:
                conn.executemany(_DEL, dels)
        except apsw.Error as e:
            raise StorageError(f"storage write failed: {e}") from e
        pending.clear()

    @property
    def dirty(self) -> bool:
        """True while there are writes not yet committed."""
        return self._dirty

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction > 0

    def commit(self) -> None:
        """Commit every write made so far as one SQLite transaction.

        On failure everything uncommitted is rolled back and StorageError is
        raised; the runtime then resets the object.
        """
        if not self._dirty:
            return
        if self._in_transaction:
            raise RuntimeError("commit() inside a storage transaction")  # the runtime waits instead
        alarm = self._alarm_pending
        try:
            self._materialize()
            if alarm is not _UNSET:
                conn = self._connection(True)
                assert conn is not None
                self._begin(conn)
                if self.alarm_listener is not None:
                    self.alarm_listener.before_alarm_commit(alarm)
                if alarm is None:
                    conn.execute(_ALARM_DEL)
                else:
                    conn.execute(_ALARM_PUT, (alarm,))
            if self._txn_open:
                assert self._conn is not None
                self._conn.execute("COMMIT")
        except BaseException as e:
            self.rollback()
            if isinstance(e, apsw.Error):
                raise StorageError(f"commit failed, the batch was rolled back: {e}") from e
            raise
        self._txn_open = False
        self._dirty = False
        self._backend.unpin(self._path)
        if alarm is not _UNSET:
            self._alarm_pending = _UNSET
            self._alarm_cached = alarm
            if self.alarm_listener is not None:
                self.alarm_listener.after_alarm_commit(alarm)

    def rollback(self) -> None:
        """Drop every uncommitted write."""
        self._pending.clear()
        self._alarm_pending = _UNSET
        self._dirty = False
        if self._txn_open:
            self._txn_open = False
            conn = self._conn
            if conn is not None:
                try:
                    conn.execute("ROLLBACK")
                except apsw.Error:
                    # The connection is in an unknown state: close it; SQLite
                    # discards the uncommitted transaction on close.
                    self._backend.discard(self._path)
            self._backend.unpin(self._path)

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
        self._conn = None

    def _database_size(self) -> int:
        conn = self._connection(False)
        if conn is None:
            return 0
        count = conn.execute("PRAGMA page_count").fetchall()[0][0]
        size = conn.execute("PRAGMA page_size").fetchall()[0][0]
        return int(count) * int(size)

    # ---- KV ------------------------------------------------------------------

    def _read(self, key: str) -> bytes | None:
        pending = self._pending
        if key in pending:
            return pending[key]
        conn = self._connection(False)
        if conn is None:
            return None
        for (value,) in conn.execute(_GET, (key,)):
            return value
        return None

    async def get(self, key: str | list[str]) -> Any:
        """The value of ``key`` (None if absent), or for a list of keys a dict of
        those that exist, in key order."""
        if isinstance(key, list):
            keys = sorted({check_key(k) for k in key})
            out: dict[str, Any] = {}
            for k in keys:
                raw = self._read(k)
                if raw is not None:
                    out[k] = decode(raw)
            return out
        raw = self._read(check_key(key))
        return None if raw is None else decode(raw)

    async def put(self, key: str | dict[str, Any], value: Any = _UNSET) -> None:
        """Store ``value`` under ``key``, or every pair of a dict, atomically."""
        if isinstance(key, dict):
            if value is not _UNSET:
                raise TypeError("put(dict) takes no second argument")
            # Validate and encode everything before touching the buffer: a rejected
            # put writes nothing.
            entries = [(check_key(k), encode_value(v)) for k, v in key.items()]
            pending = self._pending
            for k, data in entries:
                pending[k] = data
            if entries:
                self._mark_dirty()
            return
        if value is _UNSET:
            raise TypeError("put(key, value) needs a value (or pass a dict of entries)")
        k = check_key(key)
        data = encode_value(value)
        self._pending[k] = data
        self._mark_dirty()

    async def delete(self, key: str | list[str]) -> bool | int:
        """Delete ``key`` (returns whether it existed) or a list of keys (returns
        how many existed)."""
        if isinstance(key, list):
            keys = [check_key(k) for k in key]
            count = 0
            for k in dict.fromkeys(keys):
                if self._read(k) is not None:
                    count += 1
                    self._pending[k] = None
            if count:
                self._mark_dirty()
            return count
        k = check_key(key)
        if self._read(k) is None:
            return False
        self._pending[k] = None
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
        if limit is not None and (type(limit) is not int or limit <= 0):
            raise ValueError(f"list() limit must be a positive int, got {limit!r}")
        if type(reverse) is not bool:
            raise TypeError(f"list() reverse must be bool, got {type(reverse).__name__}")
        conds: list[str] = []
        args: list[Any] = []
        if prefix is not None:
            check_key(prefix, "prefix")
            if prefix:
                conds.append("key >= ?")
                args.append(prefix)
                succ = _successor(prefix)
                if succ is not None:
                    conds.append("key < ?")
                    args.append(succ)
        if start is not None:
            conds.append("key >= ?")
            args.append(check_key(start, "start"))
        if start_after is not None:
            conds.append("key > ?")
            args.append(check_key(start_after, "start_after"))
        if end is not None:
            conds.append("key < ?")
            args.append(check_key(end, "end"))
        self._materialize()
        conn = self._connection(False)
        if conn is None:
            return {}
        sql = "SELECT key, value FROM _dotrio_kv"
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        sql += " ORDER BY key DESC" if reverse else " ORDER BY key"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return {k: decode(v) for k, v in conn.execute(sql, args)}

    async def delete_all(self) -> None:
        """Remove everything: KV pairs, SQL tables and the alarm."""
        self._pending.clear()
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
            # The scheduler's rows (dotrio.alarms) are part of "everything".
            conn.execute("DROP TABLE IF EXISTS _dotrio_schedules")
        except apsw.Error as e:
            raise StorageError(f"delete_all failed: {e}") from e

    async def sync(self) -> None:
        """Return once every earlier write is committed (and durable as configured)."""
        if self._in_transaction:
            return
        self.commit()
        await trio.lowlevel.checkpoint()

    # ---- transactions ------------------------------------------------------------

    async def transaction(self, fn: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``fn(txn)`` atomically: an exception (or ``txn.rollback()``) undoes
        its writes. No other event is delivered while it runs."""
        if self._txn_lock.locked() and self._txn_lock.statistics().owner is trio.lowlevel.current_task():
            raise StorageError("transaction() cannot be nested; use the txn object you were given")
        gate = self._gate
        async with self._txn_lock:
            if gate is not None:
                gate.hold_gate()
            try:
                self._materialize()
                conn = self._connection(True)
                assert conn is not None
                self._begin(conn)
                conn.execute("SAVEPOINT _dotrio_txn")
                self._in_transaction += 1
                txn = Transaction(self)
                alarm_before = self._alarm_pending
                try:
                    result = await fn(txn)
                    if txn._rolled_back:
                        self._alarm_pending = alarm_before
                    else:
                        self._materialize()
                except BaseException:
                    self._pending.clear()
                    self._alarm_pending = alarm_before
                    if not txn._rolled_back:
                        conn.execute("ROLLBACK TO _dotrio_txn")
                    raise
                finally:
                    txn._done = True
                    self._in_transaction -= 1
                    if self._conn is conn:
                        conn.execute("RELEASE _dotrio_txn")
                    if self._txn_done is not None and not self._in_transaction:
                        self._txn_done.set()
                        self._txn_done = None
                if conn.txn_state("main") == apsw.SQLITE_TXN_WRITE or self._alarm_pending is not _UNSET:
                    self._mark_dirty()
                return result
            finally:
                if gate is not None:
                    gate.release_gate()

    def transaction_sync(self, fn: Callable[[], T]) -> T:
        """Run the sync ``fn()`` (SQL work) atomically: raising rolls it back."""
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
        if opened and not self._dirty and not self._pending and conn.txn_state("main") != apsw.SQLITE_TXN_WRITE:
            conn.execute("COMMIT")
            self._txn_open = False
            self._backend.unpin(self._path)

    def _exec_user_sql(self, query: str, bindings: tuple) -> SqlCursor:
        conn = self._connection(True)
        assert conn is not None
        opened = not self._txn_open
        self._begin(conn)
        body = query.rstrip().rstrip(";")
        multi = ";" in body
        if multi:
            # A multi-statement exec is all-or-nothing, like a single statement.
            conn.execute("SAVEPOINT _dotrio_exec")
        try:
            cursor = run_user_sql(conn, query, bindings)
        except BaseException:
            if multi:
                conn.execute("ROLLBACK TO _dotrio_exec")
                conn.execute("RELEASE _dotrio_exec")
            self._end_if_clean(conn, opened)
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
        return self.committed_alarm()

    async def set_alarm(self, scheduled_time: int | float | _dt.datetime) -> None:
        """Set the object's one alarm (replacing any), at epoch ms or an aware datetime."""
        self._alarm_pending = alarm_ms(scheduled_time)
        self._mark_dirty()

    async def delete_alarm(self) -> None:
        if self._alarm_pending is None or (self._alarm_pending is _UNSET and self.committed_alarm() is None):
            return
        self._alarm_pending = None
        self._mark_dirty()

    def _set_alarm_view(self, value: Any) -> None:
        """The alarm system hides the firing alarm from get_alarm() while alarm() runs."""
        self._alarm_cached = value


class Transaction:
    """The ``txn`` given to ``storage.transaction(fn)``."""

    __slots__ = ("_storage", "_rolled_back", "_done")

    def __init__(self, storage: ObjectStorage) -> None:
        self._storage = storage
        self._rolled_back = False
        self._done = False

    def _check(self) -> ObjectStorage:
        if self._done:
            raise StorageError("this transaction has finished; use storage directly")
        if self._rolled_back:
            raise StorageError("this transaction was rolled back; no further operations are allowed")
        return self._storage

    async def get(self, key: str | list[str]) -> Any:
        return await self._check().get(key)

    async def put(self, key: str | dict[str, Any], value: Any = _UNSET) -> None:
        await self._check().put(key, value)

    async def delete(self, key: str | list[str]) -> bool | int:
        return await self._check().delete(key)

    async def list(self, **options: Any) -> dict[str, Any]:
        return await self._check().list(**options)

    async def get_alarm(self) -> int | None:
        return await self._check().get_alarm()

    async def set_alarm(self, scheduled_time: int | float | _dt.datetime) -> None:
        await self._check().set_alarm(scheduled_time)

    async def delete_alarm(self) -> None:
        await self._check().delete_alarm()

    def rollback(self) -> None:
        """Undo this transaction's writes; the transaction ends without an error."""
        storage = self._check()
        storage._pending.clear()
        conn = storage._conn
        if conn is not None:
            conn.execute("ROLLBACK TO _dotrio_txn")
        self._rolled_back = True


def ensure_dir(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
