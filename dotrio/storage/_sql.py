"""The SQL API: ``ctx.storage.sql.exec`` and its cursor.

User SQL runs inside the object's open write transaction, so KV and SQL writes
commit together. An authorizer fences off what would break the runtime's
guarantees: transaction control (the runtime owns commits), ATTACH, the
runtime's own ``_dotrio_*`` tables, and PRAGMAs that change durability.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Protocol, final

import apsw
import trio

from .._errors import StorageError
from .._util import NoPublicConstructor

__all__ = ["SqlStorage", "SqlCursor", "SqlInterrupted", "DEFAULT_MAX_SQL_RESULT_ROWS"]

# How many SQLite VM instructions run between two deadline checks: one check
# (a clock read) costs about as much as a few hundred instructions, so this
# keeps the overhead under 1% and the reaction time around 100 µs.
PROGRESS_STEPS = 4000

#: The most rows one ``sql.exec`` result may have (``[runtime] max_sql_result_rows``).
DEFAULT_MAX_SQL_RESULT_ROWS = 100_000

_BINDABLE = (type(None), int, float, str, bytes)
# SQLite integers are signed 64-bit.
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1

# The PRAGMAs sql.exec allows (docs/concepts/storage.md lists them); every
# other PRAGMA, and any of these given a value to set, is refused.
# Read without an argument:
_READ_PRAGMAS = frozenset(
    {
        "collation_list",
        "function_list",
        "pragma_list",
        "page_count",
        "page_size",
        "freelist_count",
        "data_version",
        "user_version",
        "application_id",
        "encoding",
        "compile_options",
        "foreign_keys",
        "defer_foreign_keys",
        "optimize",
    }
)
# Read, optionally with a table or index name (or a row limit) as argument:
_NAMED_READ_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_info",
        "index_xinfo",
        "index_list",
        "foreign_key_list",
        "foreign_key_check",
        "quick_check",
        "integrity_check",
    }
)
# Set as well as read: ``defer_foreign_keys`` (migration tools set it inside a
# transaction; SQLite turns it off again at the commit).
_WRITE_PRAGMAS = frozenset({"defer_foreign_keys"})


class SqlInterrupted(StorageError):
    """Internal: the statement was interrupted because the deadline passed."""


class _DeadlineCheck:
    """apsw progress handler: interrupt once Trio's clock reaches the deadline."""

    __slots__ = ("deadline", "fired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False

    def __call__(self) -> bool:
        if trio.current_time() >= self.deadline:
            self.fired = True
            return True
        return False


@final
class SqlCursor(metaclass=NoPublicConstructor):
    """The rows of the last statement of one ``exec`` call, read in full.

    Iterating yields each row as a dict; ``raw()`` yields lists. Rows are
    consumed as they are read, as with Cloudflare's cursor.
    """

    __slots__ = ("column_names", "rows_read", "rows_written", "_rows", "_pos")

    def __init__(self, column_names: list[str], rows: list[tuple], rows_read: int, rows_written: int) -> None:
        self.column_names = column_names
        self.rows_read = rows_read
        self.rows_written = rows_written
        self._rows = rows
        self._pos = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._pos >= len(self._rows):
            raise StopIteration
        row = self._rows[self._pos]
        self._pos += 1
        return dict(zip(self.column_names, row, strict=False))

    def next(self) -> dict[str, Any] | None:
        """The next row, or None when there are no more."""
        return next(self, None)

    def to_array(self) -> list[dict[str, Any]]:
        """The remaining rows, as a list of dicts."""
        names = self.column_names
        rest = self._rows[self._pos :]
        self._pos = len(self._rows)
        return [dict(zip(names, row, strict=False)) for row in rest]

    def raw(self) -> Iterator[list[Any]]:
        """The remaining rows as lists of values (no column names)."""
        rest = self._rows[self._pos :]
        self._pos = len(self._rows)
        return iter([list(row) for row in rest])

    def one(self) -> dict[str, Any]:
        """The only row; StorageError unless exactly one row remains."""
        remaining = len(self._rows) - self._pos
        if remaining != 1:
            raise StorageError(f"one() expected exactly one row, the query returned {remaining}")
        return next(self)


class _Authorizer:
    """Records why a statement was refused, so the error can say it."""

    __slots__ = ("reason", "optimizing")

    def __init__(self) -> None:
        self.reason: str | None = None
        # PRAGMA optimize runs ANALYZE on the tables that need it, the
        # runtime's own included: reading their statistics is harmless.
        self.optimizing = False

    def __call__(self, action: int, p1: str | None, p2: str | None, dbname: str | None, trigger: str | None) -> int:
        if action == apsw.SQLITE_TRANSACTION:
            self.reason = (
                f"{p1 or 'transaction control'} is not allowed in sql.exec: the runtime commits for you; "
                "use storage.transaction_sync(fn) for an atomic group of statements"
            )
            return apsw.SQLITE_DENY
        if action == apsw.SQLITE_SAVEPOINT:
            self.reason = "SAVEPOINT/RELEASE are not allowed in sql.exec: use storage.transaction_sync(fn)"
            return apsw.SQLITE_DENY
        if action in (apsw.SQLITE_ATTACH, apsw.SQLITE_DETACH):
            self.reason = "ATTACH/DETACH are not allowed: each object has exactly one database"
            return apsw.SQLITE_DENY
        if action == apsw.SQLITE_PRAGMA:
            name = (p1 or "").lower()
            if name in _NAMED_READ_PRAGMAS or name in _WRITE_PRAGMAS or (name in _READ_PRAGMAS and p2 is None):
                if name == "optimize":
                    self.optimizing = True
                return apsw.SQLITE_OK
            if name in _READ_PRAGMAS:
                self.reason = f"PRAGMA {name} may be read in sql.exec but not set (got {name}={p2})"
            else:
                self.reason = (
                    f"PRAGMA {name} is not allowed in sql.exec (allowed: schema-reading PRAGMAs, "
                    "foreign_keys, quick_check, optimize, defer_foreign_keys; see docs/concepts/storage.md)"
                )
            return apsw.SQLITE_DENY
        if action == apsw.SQLITE_ANALYZE and self.optimizing:
            return apsw.SQLITE_OK
        for name in (p1, p2):
            if name is not None and name[:8].lower() == "_dotrio_":
                self.reason = f"{name!r}: tables whose names start with _dotrio_ belong to the runtime"
                return apsw.SQLITE_DENY
        return apsw.SQLITE_OK


class SqlHost(Protocol):
    """What ``ctx.storage.sql`` needs of the object's storage engine."""

    def database_size(self) -> int: ...

    def exec_user_sql(self, query: str, bindings: tuple[Any, ...]) -> SqlCursor: ...


class SqlStorage:
    """``ctx.storage.sql``: SQL on the object's own SQLite database, in the
    same transaction as its KV writes."""

    __slots__ = ("_storage",)

    def __init__(self, storage: SqlHost) -> None:
        self._storage = storage

    @property
    def database_size(self) -> int:
        """Bytes used by the object's database (0 before its first write)."""
        return self._storage.database_size()

    def exec(self, query: str, *bindings: Any) -> SqlCursor:
        """Run ``query`` (one or more ``;``-separated statements) with ``bindings``.

        Raises StorageError for SQL errors and forbidden statements, TypeError
        for a binding of an unsupported type.
        """
        if not isinstance(query, str):
            raise TypeError(f"sql.exec() query must be str, got {type(query).__name__}")
        for i, b in enumerate(bindings):
            if type(b) not in _BINDABLE and not isinstance(b, bool):
                raise TypeError(
                    f"sql.exec() binding {i + 1} has unsupported type {type(b).__name__}; "
                    "expected None, int, float, str or bytes"
                )
            if type(b) is int and not _INT_MIN <= b <= _INT_MAX:
                raise TypeError(
                    f"sql.exec() binding {i + 1} is an int outside SQLite's 64-bit integer range "
                    f"(-2**63 .. 2**63-1): {b}; bind it as str or bytes (or a float, losing precision)"
                )
        return self._storage.exec_user_sql(query, bindings)


def run_user_sql(
    conn: apsw.Connection, query: str, bindings: tuple, deadline: float = math.inf,
    max_rows: int = DEFAULT_MAX_SQL_RESULT_ROWS,
) -> SqlCursor:
    """Execute user SQL under the authorizer; the caller owns the transaction.

    With a finite ``deadline`` (Trio time) the statement is interrupted when it
    passes, and SqlInterrupted is raised; SQLite has rolled the statement back.
    A result of more than ``max_rows`` rows is a StorageError, raised as soon
    as the row after the limit is read (the statement is reset, so a write
    with RETURNING takes nothing with it): reading every row of a huge result
    would hold every object of the process for seconds.
    """
    auth = _Authorizer()
    check = None
    if deadline != math.inf:
        check = _DeadlineCheck(deadline)
        conn.set_progress_handler(check, PROGRESS_STEPS)
    cursor = conn.cursor()
    rows: list[tuple] = []
    names: list[str] = []

    def on_statement(cur: apsw.Cursor, _sql: str, _b: Any) -> bool:
        # The cursor of exec() is the last statement's: forget earlier rows.
        rows.clear()
        names[:] = [d[0] for d in cur.get_description()]
        return True

    before = conn.total_changes()
    conn.authorizer = auth
    cursor.exec_trace = on_statement
    try:
        cursor.execute(query, bindings)
        append = rows.append
        for row in cursor:
            append(row)
            if len(rows) > max_rows:
                cursor.close(True)
                raise StorageError(
                    f"sql.exec() result has more than {max_rows} rows (the max_sql_result_rows limit): "
                    "read it in pages (LIMIT ... with WHERE key > last_key) or raise [runtime] max_sql_result_rows"
                )
    except apsw.InterruptError as e:
        if check is not None and check.fired:
            raise SqlInterrupted("sql.exec() was interrupted: the deadline passed") from e
        raise StorageError(f"SQL error: {e}") from e
    except apsw.AuthError as e:
        raise StorageError(auth.reason or str(e)) from e
    except apsw.BindingsError as e:
        raise StorageError(f"wrong number of bindings: {e}") from e
    except apsw.Error as e:
        raise StorageError(f"SQL error: {e}") from e
    finally:
        conn.authorizer = None
        if check is not None:
            conn.set_progress_handler(None)
    written = conn.total_changes() - before
    return SqlCursor._create(names, rows, len(rows), written)
