"""A bounded LRU of open per-object SQLite connections.

Objects come and go far more often than their databases should be opened:
opening costs 100-200 µs and each open connection ~100+ KiB, so the pool is
sized by a memory budget, not by the number of live objects. A connection with
an open write transaction is pinned: closing it would lose uncommitted work.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import apsw

__all__ = ["ConnectionPool", "PoolStatistics", "configure_connection"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS _dotrio_kv(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS _dotrio_meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
)


def configure_connection(conn: apsw.Connection, durability: str, in_memory: bool) -> None:
    """Every PRAGMA a dotrio connection gets, in one place."""
    cur = conn.cursor()
    if not in_memory:
        # EXCLUSIVE before the first WAL access keeps the wal-index in heap memory:
        # no -shm file to create and delete on every open/close (one process owns the data dir).
        cur.execute("PRAGMA locking_mode=EXCLUSIVE")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA journal_size_limit=1048576")
    sync = "FULL" if durability == "power" else "NORMAL"
    cur.execute(f"PRAGMA synchronous={sync}")
    # Small page cache: thousands of these may be open, and the OS caches pages anyway.
    cur.execute("PRAGMA cache_size=-256")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(_SCHEMA)


@dataclass(frozen=True)
class PoolStatistics:
    open: int
    pinned: int
    capacity: int
    opens: int
    closes: int
    hits: int


class ConnectionPool:
    """Open connections by file path, least recently used closed first."""

    def __init__(self, capacity: int, durability: str, vfs: str | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"connection pool capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.durability = durability
        self._vfs = vfs
        self._open: OrderedDict[str, apsw.Connection] = OrderedDict()
        # path -> callback that tells the owner its connection was closed
        self._owners: dict[str, Callable[[], None]] = {}
        self._pinned: set[str] = set()
        self._opens = 0
        self._closes = 0
        self._hits = 0

    def get(self, path: str, create: bool, on_close: Callable[[], None]) -> apsw.Connection | None:
        """The open connection for ``path``, opening it if needed. None when the
        file does not exist and ``create`` is false (reads never create files)."""
        conn = self._open.get(path)
        if conn is not None:
            self._open.move_to_end(path)
            self._owners[path] = on_close
            self._hits += 1
            return conn
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_NOMUTEX
        if create:
            flags |= apsw.SQLITE_OPEN_CREATE
        try:
            conn = apsw.Connection(path, flags=flags, vfs=self._vfs, statementcachesize=32)
        except apsw.CantOpenError:
            if create:
                raise
            return None
        try:
            configure_connection(conn, self.durability, in_memory=False)
        except BaseException:
            conn.close()
            raise
        self._opens += 1
        self._open[path] = conn
        self._owners[path] = on_close
        self._shrink()
        return conn

    def pin(self, path: str) -> None:
        self._pinned.add(path)

    def unpin(self, path: str) -> None:
        self._pinned.discard(path)
        self._shrink()

    def release(self, path: str) -> None:
        """The owner is going away; keep the connection warm but forget the owner."""
        self._owners.pop(path, None)
        self._pinned.discard(path)

    def discard(self, path: str) -> None:
        """Close ``path``'s connection now (after delete_all removed the file's data, or on error)."""
        conn = self._open.pop(path, None)
        self._pinned.discard(path)
        owner = self._owners.pop(path, None)
        if conn is not None:
            self._close(conn)
        if owner is not None:
            owner()

    def _shrink(self) -> None:
        if len(self._open) <= self.capacity:
            return
        for path in list(self._open):
            if len(self._open) <= self.capacity:
                break
            if path in self._pinned:
                continue
            conn = self._open.pop(path)
            owner = self._owners.pop(path, None)
            self._close(conn)
            if owner is not None:
                owner()

    def _close(self, conn: apsw.Connection) -> None:
        self._closes += 1
        try:
            conn.close()
        except apsw.Error:
            # A connection that fails to close cleanly has nothing uncommitted (pinned
            # ones are never closed here); SQLite recovers the WAL on the next open.
            pass

    def close_all(self) -> None:
        for path in list(self._open):
            conn = self._open.pop(path)
            owner = self._owners.pop(path, None)
            self._close(conn)
            if owner is not None:
                owner()
        self._pinned.clear()

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            open=len(self._open),
            pinned=len(self._pinned),
            capacity=self.capacity,
            opens=self._opens,
            closes=self._closes,
            hits=self._hits,
        )
