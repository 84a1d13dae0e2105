"""The central alarm index: ``data_dir/alarms.sqlite`` (or an in-memory twin).

One row per object that may have a wake-up due: ``(ns, oid, when_ms, name)``,
``oid`` being the 16-byte base of the object's id (the id's other half is a
check computed from it, see ``dotrio._ids``).
It is a *hint*, never the truth: each object's own database is. The only
invariant the index keeps is "covering": for every object whose database
says it must wake at time ``T``, the index holds a row with ``when_ms <= T``.
Two kinds of write keep it:

* **cover** (before the object's commit): lowers a row to ``min(row, T)``
  and creates it if absent. It never raises a row, so a cover whose object
  commit then fails leaves a row that is merely early (a spurious wake).
* **settle** (after the object's commit): sets the row to the object's
  now-committed wake time exactly (or deletes it). Settles are queued and
  written in batches: losing one in a crash only leaves an early or stale
  row behind, which the object ignores when it is woken.

A batch applies queued settles first, then covers, in one SQLite
transaction, so a cover is never undone by an older settle.

The index file uses WAL with ``synchronous=NORMAL`` (``FULL`` for
``durability="power"``): a committed cover survives the process being
killed, which is what the crash guarantee needs.

Damage: being a hint, the index can always be rebuilt from the objects'
databases (:meth:`AlarmIndex.rebuild`). Opening it sets
:attr:`AlarmIndex.rebuild_reason` when it must be: the file is missing, has
no ``alarms`` table (an empty file), or is corrupt (then it is first moved
aside to ``alarms.sqlite.corrupt-<time>``). A file that cannot be used at
all (locked by another program, unreadable, a directory) raises
:class:`~dotrio.DataDirError` saying which and what to do.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import apsw

from ._errors import DataDirError

__all__ = ["AlarmIndex", "IndexStatistics", "INDEX_FILE"]

INDEX_FILE = "alarms.sqlite"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS alarms("
    "ns TEXT NOT NULL, oid BLOB NOT NULL, when_ms INTEGER NOT NULL, name TEXT, "
    "PRIMARY KEY(ns, oid)) WITHOUT ROWID"
)
_SETTLE = (
    "INSERT INTO alarms(ns, oid, when_ms, name) VALUES(?, ?, ?, ?) "
    "ON CONFLICT(ns, oid) DO UPDATE SET when_ms=excluded.when_ms, name=coalesce(excluded.name, alarms.name)"
)
_COVER = (
    "INSERT INTO alarms(ns, oid, when_ms, name) VALUES(?, ?, ?, ?) "
    "ON CONFLICT(ns, oid) DO UPDATE SET when_ms=min(alarms.when_ms, excluded.when_ms), "
    "name=coalesce(excluded.name, alarms.name)"
)
_DELETE = "DELETE FROM alarms WHERE ns=? AND oid=?"
_HAS_TABLE = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='alarms'"
# SQLite's answers for a file that is not (or no longer) a sound database.
_CORRUPT = (apsw.NotADBError, apsw.CorruptError)
# Missing, no table, corrupt: what rebuild_reason says.
MISSING = "missing"
EMPTY = "empty"
_GET = "SELECT when_ms FROM alarms WHERE ns=? AND oid=?"
_NAME = "SELECT name FROM alarms WHERE ns=? AND oid=?"

IndexKey = tuple[str, bytes]
# A cover request: (ns, oid, when_ms, name).
Cover = tuple[str, bytes, int, "str | None"]


@dataclass(frozen=True)
class IndexStatistics:
    path: str | None
    loaded_rows: int
    """Rows read when the runtime started."""
    pending_settles: int
    """Settles queued for the next batch."""
    batches: int
    """Transactions written (each holds any number of settles and covers)."""
    settles_written: int
    covers_written: int
    size_bytes: int


class AlarmIndex:
    """The index file (or memory) plus the queue of settles not yet written."""

    def __init__(self, data_dir: Path | None, durability: str = "process") -> None:
        self._durability = durability
        self._conn: apsw.Connection | None = None
        self._closed = False
        # (ns, oid) -> the row as the upsert binds it: (ns, oid, when_ms, name).
        self._pending: dict[IndexKey, tuple[str, bytes, int | None, str | None]] = {}
        self._loaded = 0
        self._batches = 0
        self._settles = 0
        self._covers = 0
        self.rebuild_reason: str | None = None
        """Why the index must be rebuilt from the objects (None: it is sound as far
        as opening it can tell): ``"missing"``, ``"empty"`` or ``"corrupt ..."``."""
        self.moved_to: str | None = None
        """Where a corrupt index file was moved aside to."""
        self._had_table = True
        if data_dir is None:
            self.path: str | None = None
            self._open()
        else:
            self.path = os.path.join(data_dir, INDEX_FILE)
            # Opened if it exists; the caller rebuilds it if it must (and makes
            # it in a new data dir), see rebuild_reason.
            self._open_existing()

    def _open(self) -> apsw.Connection:
        if self.path is None:
            conn = apsw.Connection(":memory:")
        else:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            conn = apsw.Connection(self.path, statementcachesize=16)
        try:
            if self.path is not None:
                # One process owns the data dir (as for object databases): the
                # wal-index stays in heap memory, no -shm file.
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={'FULL' if self._durability == 'power' else 'NORMAL'}")
            # Rows are keyed by random ids, so a batch of 1,000 settles touches ~1,000
            # B-tree pages: 16 MiB of cache (16 B per alarm at a million) keeps the
            # interior and hot pages in memory (4 MiB: ~25% slower arming at 1M), and
            # checkpointing every ~40 MB of WAL instead of every 4 MB halves the
            # page writes of a burst of arming.
            conn.execute("PRAGMA cache_size=-16384")
            if self.path is not None:
                conn.execute("PRAGMA wal_autocheckpoint=10000")
                conn.execute("PRAGMA journal_size_limit=67108864")
            self._had_table = bool(conn.execute(_HAS_TABLE).fetchall())
            conn.execute(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _open_existing(self) -> None:
        path = self.path
        assert path is not None
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            self.rebuild_reason = MISSING
            return
        except OSError as exc:
            raise DataDirError(f"cannot read the alarm index {path}: {exc.strerror or exc}") from None
        if stat.S_ISDIR(mode):
            raise DataDirError(
                f"the alarm index {path} is a directory; move it away (dotrio rebuilds the index "
                "from the objects' databases at start)"
            )
        try:
            self._open()
            if not self._had_table:
                self.rebuild_reason = EMPTY
        except _CORRUPT as exc:
            self.discard_corrupt(exc)
        except apsw.BusyError:
            self._close_quietly()
            raise DataDirError(
                f"the alarm index {path} is locked by another program: close it (while dotrio runs, "
                "no other program may open the data dir's databases)"
            ) from None
        except (apsw.ReadOnlyError, apsw.PermissionsError, apsw.CantOpenError, apsw.IOError) as exc:
            self._close_quietly()
            raise DataDirError(
                f"cannot open the alarm index {path} ({exc}): dotrio must be able to read and write it; "
                "fix its permissions, or move it away to have it rebuilt from the objects' databases"
            ) from None

    def _close_quietly(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except apsw.Error:
                pass

    def discard_corrupt(self, exc: BaseException) -> None:
        """The index file is corrupt: close it, move it (and its WAL) aside to
        ``alarms.sqlite.corrupt-<UTC time>`` and start an empty one, to be
        rebuilt (:attr:`rebuild_reason` says so)."""
        path = self.path
        assert path is not None
        self._close_quietly()
        self._pending.clear()
        self._loaded = 0
        target = f"{path}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(path + suffix, target + suffix)
            except FileNotFoundError:
                pass
            except OSError as err:
                raise DataDirError(
                    f"the alarm index {path} is corrupt ({exc}) and cannot be moved aside "
                    f"({err.strerror or err}); move or delete it to have it rebuilt"
                ) from None
        self.moved_to = target
        self.rebuild_reason = f"corrupt ({exc}); moved to {target}"

    def rebuild(self, rows: Iterable[tuple[str, bytes, int]]) -> int:
        """Replace every row by ``rows`` ``(ns, oid, when_ms)``, the objects'
        own wake times, in one transaction (creating the file if needed).
        Returns the number of rows written."""
        conn = self._db(True)
        assert conn is not None
        n = 0
        with conn:
            conn.execute("DELETE FROM alarms")
            for ns, oid, when in rows:
                conn.execute(_SETTLE, (ns, oid, when, None))
                n += 1
        self._pending.clear()
        self.rebuild_reason = None
        return n

    def _db(self, create: bool) -> apsw.Connection | None:
        if self._closed:
            raise RuntimeError("the alarm index is closed")
        conn = self._conn
        if conn is None and create:
            conn = self._open()
        return conn

    # ---- reads ------------------------------------------------------------------

    def load(self) -> Iterator[tuple[str, bytes, int]]:
        """Every row as ``(ns, oid, when_ms)`` (used once, at start)."""
        conn = self._db(False)
        if conn is None:
            return
        for ns, oid, when in conn.execute("SELECT ns, oid, when_ms FROM alarms"):
            self._loaded += 1
            yield ns, oid, when

    def durable(self, ns: str, oid: bytes) -> int | None:
        """The row as committed to the index (queued settles not included)."""
        conn = self._db(False)
        if conn is None:
            return None
        for (when,) in conn.execute(_GET, (ns, oid)):
            return int(when)
        return None

    def pending(self, ns: str, oid: bytes) -> tuple[bool, int | None]:
        """Whether a settle is queued for the object, and its value."""
        entry = self._pending.get((ns, oid))
        if entry is None:
            return False, None
        return True, entry[2]

    def name(self, ns: str, oid: bytes) -> str | None:
        """The name the object was addressed by when its alarm was set, if known."""
        entry = self._pending.get((ns, oid))
        if entry is not None and entry[3] is not None:
            return entry[3]
        conn = self._db(False)
        if conn is None:
            return None
        for (name,) in conn.execute(_NAME, (ns, oid)):
            return str(name) if name is not None else None
        return None

    # ---- writes -----------------------------------------------------------------

    def settle(self, ns: str, oid: bytes, when_ms: int | None, name: str | None) -> None:
        """Queue the exact committed wake time (None: no wake) for the next batch."""
        self._pending[(ns, oid)] = (ns, oid, when_ms, name)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def write(self, covers: Iterable[Cover] = ()) -> None:
        """One transaction: every queued settle, then ``covers``."""
        covers = list(covers)
        pending = self._pending
        if not pending and not covers:
            return
        rows = pending.values()
        sets = [row for row in rows if row[2] is not None]
        dels = [row[:2] for row in rows if row[2] is None] if len(sets) < len(pending) else []
        conn = self._db(bool(sets or covers))
        if conn is None:
            pending.clear()  # only deletions, and no file: nothing to delete
            return
        with conn:  # BEGIN ... COMMIT, ROLLBACK on error
            if sets:
                conn.executemany(_SETTLE, sets)
            if dels:
                conn.executemany(_DELETE, dels)
            if covers:
                conn.executemany(_COVER, covers)
        # Only once committed: a failed batch leaves the queue to be retried.
        self._settles += len(pending)
        self._covers += len(covers)
        self._batches += 1
        pending.clear()

    @property
    def closed(self) -> bool:
        """close() was called."""
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.write()
        finally:
            self._closed = True
            conn = self._conn
            self._conn = None
            if conn is not None:
                conn.close()

    def statistics(self) -> IndexStatistics:
        size = 0
        conn = self._conn
        if conn is not None:
            count = conn.execute("PRAGMA page_count").fetchall()[0][0]
            page = conn.execute("PRAGMA page_size").fetchall()[0][0]
            size = int(count) * int(page)  # type: ignore[arg-type]
        return IndexStatistics(
            path=self.path,
            loaded_rows=self._loaded,
            pending_settles=len(self._pending),
            batches=self._batches,
            settles_written=self._settles,
            covers_written=self._covers,
            size_bytes=size,
        )
