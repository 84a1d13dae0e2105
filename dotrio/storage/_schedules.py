"""The scheduler's table in an object's database: ``_dotrio_schedules``.

Every statement on the table lives here. Rows are ordinary writes of the
object: they join its open write transaction and commit with its turn (a turn
that is rolled back drops its ``schedule()`` too), and ``delete_all()`` drops
the table. The alarm manager reaches the table only through
``ObjectStorage.schedules``, an instance of :class:`ScheduleTable`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, cast

import apsw

from .._errors import StorageError

__all__ = [
    "ScheduleRow",
    "ScheduleTable",
    "TransactionHost",
    "SCHEDULES_TABLE",
    "HAS_TABLE_SQL",
    "NEXT_RUN_SQL",
    "DROP_TABLE_SQL",
]

SCHEDULES_TABLE = "_dotrio_schedules"

_DDL = (
    "CREATE TABLE IF NOT EXISTS _dotrio_schedules("
    "id TEXT PRIMARY KEY, seq INTEGER NOT NULL, method TEXT NOT NULL, payload BLOB NOT NULL, "
    "next_ms INTEGER NOT NULL, cron TEXT, tz TEXT, interval_ms INTEGER, missed TEXT NOT NULL, "
    "retries INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS _dotrio_schedules_next ON _dotrio_schedules(next_ms)"
)
_COLUMNS = "id, seq, method, payload, next_ms, cron, tz, interval_ms, missed, retries"
_HAS_TABLE = HAS_TABLE_SQL = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='_dotrio_schedules'"
_NEXT = NEXT_RUN_SQL = "SELECT min(next_ms) FROM _dotrio_schedules"
DROP_TABLE_SQL = "DROP TABLE IF EXISTS _dotrio_schedules"  # delete_all(): the rows are part of "everything"
_DUE = f"SELECT {_COLUMNS} FROM _dotrio_schedules WHERE next_ms <= ? ORDER BY next_ms, id LIMIT ?"
_CURRENT = "SELECT 1 FROM _dotrio_schedules WHERE id=? AND seq=?"
_INSERT = f"INSERT OR REPLACE INTO _dotrio_schedules({_COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,0)"
_ALL = f"SELECT {_COLUMNS} FROM _dotrio_schedules ORDER BY next_ms, id"
_MOVE = "UPDATE _dotrio_schedules SET next_ms=?, retries=0 WHERE id=? AND seq=?"
_RETRY = "UPDATE _dotrio_schedules SET next_ms=?, retries=retries+1 WHERE id=? AND seq=?"
_DELETE_RUN = "DELETE FROM _dotrio_schedules WHERE id=? AND seq=?"
_DELETE = "DELETE FROM _dotrio_schedules WHERE id=?"


class ScheduleRow(NamedTuple):
    """One row of ``_dotrio_schedules`` (``seq`` tells a replaced row from its successor)."""

    id: str
    seq: int
    method: str
    payload: bytes
    next_ms: int
    cron: str | None
    tz: str | None
    interval_ms: int | None
    missed: str
    retries: int


class TransactionHost(Protocol):
    """What the table needs of the object's storage engine: its connection and
    its write transaction."""

    def read_connection(self) -> apsw.Connection | None: ...

    def write_connection(self) -> tuple[apsw.Connection, bool]: ...

    def end_if_clean(self, conn: apsw.Connection, opened: bool) -> None: ...

    def mark_dirty(self) -> None: ...


class ScheduleTable:
    """The schedules of one object, in its database."""

    __slots__ = ("_host", "_exists")

    def __init__(self, host: TransactionHost) -> None:
        self._host = host
        # None: not looked up yet (one sqlite_master read per activation).
        self._exists: bool | None = None

    def exists(self) -> bool:
        """Whether the table exists (cached; a write creates it)."""
        if self._exists is None:
            conn = self._host.read_connection()
            self._exists = conn is not None and bool(conn.execute(_HAS_TABLE).fetchall())
        return self._exists

    def forget(self) -> None:
        """The table may have been dropped (``delete_all()``) or rolled back: look again."""
        self._exists = None

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]] | None:
        if not self.exists():
            return None
        conn = self._host.read_connection()
        if conn is None:
            return None
        try:
            return cast("list[tuple[Any, ...]]", conn.execute(sql, args).fetchall())
        except apsw.SQLError:
            self._exists = False  # dropped by delete_all()
            return None

    def next_run_ms(self) -> int | None:
        """The earliest ``next_ms`` of any schedule, or None."""
        rows = self._read(_NEXT)
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0])

    def due(self, now_ms: int, limit: int) -> list[ScheduleRow]:
        """At most ``limit`` rows due at ``now_ms``, soonest first."""
        rows = self._read(_DUE, (now_ms, limit))
        return [ScheduleRow(*row) for row in rows] if rows else []

    def is_current(self, sid: str, seq: int) -> bool:
        """The row still exists unchanged (not cancelled, not replaced)."""
        return bool(self._read(_CURRENT, (sid, seq)))

    def rows(self) -> list[ScheduleRow]:
        """Every row, soonest first."""
        rows = self._read(_ALL)
        return [ScheduleRow(*row) for row in rows] if rows else []

    def insert(
        self,
        sid: str,
        seq: int,
        method: str,
        payload: bytes,
        next_ms: int,
        cron: str | None,
        tz: str | None,
        interval_ms: int | None,
        missed: str,
    ) -> None:
        """Add (or replace) a schedule in the object's open write transaction."""
        conn, _ = self._host.write_connection()
        if not self._exists:
            try:
                conn.execute(_DDL)
            except apsw.Error as e:
                raise StorageError(f"could not create the schedules table: {e}") from e
            self._exists = True
        try:
            conn.execute(_INSERT, (sid, seq, method, payload, next_ms, cron, tz, interval_ms, missed))
        except apsw.Error as e:
            raise StorageError(f"schedule() failed: {e}") from e
        self._host.mark_dirty()

    def move(self, sid: str, seq: int, next_ms: int) -> int:
        """A repeating schedule ran: its next run is ``next_ms``, retries reset."""
        return self._write(_MOVE, (next_ms, sid, seq))

    def retry(self, sid: str, seq: int, next_ms: int) -> int:
        """A one-shot schedule failed: retry at ``next_ms``, one more retry counted."""
        return self._write(_RETRY, (next_ms, sid, seq))

    def delete_run(self, sid: str, seq: int) -> int:
        """Delete the row if it is still the one that ran."""
        return self._write(_DELETE_RUN, (sid, seq))

    def delete(self, sid: str) -> int:
        """Delete a schedule by id (``cancel_schedule``)."""
        return self._write(_DELETE, (sid,))

    def _write(self, sql: str, args: tuple[object, ...]) -> int:
        """Run a write in the object's open transaction; rows changed."""
        host = self._host
        conn, opened = host.write_connection()
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
            host.mark_dirty()
        else:
            # A transaction opened for nothing must not stay open (it pins the connection).
            host.end_if_clean(conn, opened)
        return changed
