"""A bounded LRU of open per-object SQLite connections.

Objects come and go far more often than their databases should be opened, so
connections outlive the objects that use them, least recently used closed
first. A connection with an open write transaction (or a commit in flight) is
pinned: closing it would lose uncommitted work. Every connection is opened
with ``locking_mode=EXCLUSIVE`` (set before the first access of the file), a
persistent WAL and no checkpoint on close, and gets its schema only when
``PRAGMA user_version`` says it lacks it: an open + small read + close costs
~90 µs instead of ~320 µs. Why each setting, with the measurements:
docs/design/storage-layout.md.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import apsw

from .._errors import StorageError

if TYPE_CHECKING:
    from ._failure import FaultHook

__all__ = [
    "CACHE_PAGES",
    "CORRUPTION_ERRORS",
    "PAGE_SIZE",
    "SCHEMA_VERSION",
    "STATEMENT_CACHE_SIZE",
    "ConnectionPool",
    "PoolStatistics",
    "configure_connection",
    "corrupt_database_error",
    "object_label",
    "open_existing",
]

SCHEMA_VERSION = 1
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS _dotrio_kv(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS _dotrio_meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
    f"PRAGMA user_version={SCHEMA_VERSION};"
)
# Prepared statements kept per connection: the KV statements, BEGIN/COMMIT, the
# list() shapes in use and a few of the user's. Each costs a few KB.
STATEMENT_CACHE_SIZE = 16
# Page cache per connection, in pages: thousands of connections may be open and
# the OS caches file pages anyway, so SQLite's own cache stays small.
CACHE_PAGES = 16

# Pages of new files. Smaller than SQLite's 4096: a small commit appends one
# page to the WAL (5.5 µs instead of 6.6 µs measured, 2 KB values 14.8 instead
# of 17.8), and each connection's page cache starts with a 20-page block, so a
# pooled connection is ~40 KiB smaller. Reads of 2 KB values cost the same.
PAGE_SIZE = 2048

# Memory-mapped I/O maps each file into the address space (RSS per connection);
# apsw's SQLite is built with it off, so the PRAGMA is only sent if not.
_MMAP_OFF = "" if "DEFAULT_MMAP_SIZE=0" in apsw.compile_options else "PRAGMA mmap_size=0; "

log = logging.getLogger("dotrio.storage")

_ONE = ctypes.c_int(1)
_PERSIST_WAL_ARG = ctypes.addressof(_ONE)


def configure_connection(conn: apsw.Connection, durability: str, in_memory: bool) -> None:
    """Every PRAGMA a dotrio connection gets, in one place; runs once per open."""
    if not in_memory:
        # Must precede the first access of the file (see the module docstring).
        conn.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()
        conn.file_control("main", apsw.SQLITE_FCNTL_PERSIST_WAL, _PERSIST_WAL_ARG)
        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
    sync = "FULL" if durability == "power" else "NORMAL"
    # No journal_size_limit: a WAL truncated after each checkpoint must be grown
    # again by the next commits, and growing a file costs the kernel ~2 µs per
    # commit (25% of a small commit, measured) more than overwriting it. A WAL
    # keeps its high-water size instead: at most wal_autocheckpoint (1000) pages.
    # One statement string: each separate execute costs a few µs of an open that
    # is ~90 µs in all.
    version = conn.execute(
        f"PRAGMA synchronous={sync}; PRAGMA cache_size={CACHE_PAGES}; PRAGMA foreign_keys=ON; "
        f"{_MMAP_OFF}PRAGMA user_version"
    ).fetchall()[-1][0]
    if version != SCHEMA_VERSION:
        if not in_memory:
            # Page size and WAL are properties of the file: set once, when it gets
            # its schema (page_size only takes on a file that has no pages yet).
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}").fetchall()
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
        with conn:
            conn.execute(_SCHEMA).fetchall()


# What SQLite raises for a file that is not (or no longer) a sound database.
CORRUPTION_ERRORS: tuple[type[apsw.Error], ...] = (apsw.NotADBError, apsw.CorruptError)


def open_existing(path: str, vfs: str | None = None) -> apsw.Connection:
    """An existing database file opened as the runtime opens it (exclusive
    locking, WAL kept, no checkpoint at close), without adding the schema:
    for tools that inspect a data dir (the alarm index rebuild, ``dotrio
    fsck``) while holding its lock. Raises apsw.CantOpenError if it is absent."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE, vfs=vfs, statementcachesize=4)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()
        conn.file_control("main", apsw.SQLITE_FCNTL_PERSIST_WAL, _PERSIST_WAL_ARG)
        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
    except BaseException:
        conn.close()
        raise
    return conn


def object_label(path: str) -> str:
    """``namespace/id`` of an object database path (``.../<ns>/<id[:2]>/<id>.sqlite``)."""
    name = os.path.basename(path).removesuffix(".sqlite")
    return f"{os.path.basename(os.path.dirname(os.path.dirname(path)))}/{name}"


def corrupt_database_error(path: str, exc: BaseException) -> StorageError:
    """The one error a corrupt object database raises: names the object and
    the file, says that only this object is affected and what to do."""
    return StorageError(
        f"object {object_label(path)} cannot be used: its database {path} is corrupt ({exc}); "
        "other objects are not affected. Restore the file from a backup, or move it away to "
        "start the object empty; `dotrio fsck DATA_DIR` lists every damaged object"
    )


@dataclass(frozen=True)
class PoolStatistics:
    open: int
    pinned: int
    capacity: int
    opens: int
    closes: int
    hits: int
    corrupt_objects: int = 0
    """Object databases found corrupt since start (each fails only its object)."""


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
        # The test-facing fault hook (see ``_failure``); the backend sets it.
        self.fault_hook: FaultHook | None = None
        self._opens = 0
        self._closes = 0
        self._hits = 0
        self._corrupt: set[str] = set()

    def get(self, path: str, create: bool, on_close: Callable[[], None]) -> apsw.Connection | None:
        """The open connection for ``path``, opening it if needed. None when the
        file does not exist and ``create`` is false (reads never create files)."""
        conn = self._open.get(path)
        if conn is not None:
            self._open.move_to_end(path)
            self._owners[path] = on_close
            self._hits += 1
            return conn
        conn = self.open(path, create)
        if conn is not None:
            self.adopt(path, conn, on_close)
        return conn

    def open(self, path: str, create: bool) -> apsw.Connection | None:
        """Open and configure a connection outside the pool. Touches no pool
        state, so a worker thread may call it (a "power" commit creating its
        file: the schema commit fsyncs there, not on the Trio thread)."""
        # NOMUTEX: a connection is used by one thread at a time (the Trio thread,
        # or a "power" commit thread while the object's gate is held).
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_NOMUTEX
        hook = self.fault_hook
        if hook is not None:
            hook("open", path)
        if create:
            flags |= apsw.SQLITE_OPEN_CREATE
        try:
            conn = apsw.Connection(path, flags=flags, vfs=self._vfs, statementcachesize=STATEMENT_CACHE_SIZE)
        except apsw.CantOpenError:
            if create:
                raise
            return None
        try:
            configure_connection(conn, self.durability, in_memory=False)
        except CORRUPTION_ERRORS as exc:
            conn.close()
            raise self.corrupt(path, exc) from exc
        except BaseException:
            conn.close()
            raise
        if hook is not None:
            conn.set_wal_hook(_CheckpointFault(hook, path))
        return conn

    def corrupt(self, path: str, exc: BaseException) -> StorageError:
        """Count ``path`` as a corrupt object database; the error to raise for it."""
        self._corrupt.add(path)
        return corrupt_database_error(path, exc)

    def adopt(self, path: str, conn: apsw.Connection, on_close: Callable[[], None]) -> None:
        """Take ``conn`` (from ``open``) into the pool as the most recently used."""
        self._opens += 1
        self._open[path] = conn
        self._owners[path] = on_close
        self._shrink()

    def touch(self, path: str) -> None:
        """``path`` was just used: it is the most recently used."""
        od = self._open
        if path in od:
            od.move_to_end(path)

    def pin(self, path: str) -> None:
        self._pinned.add(path)

    def unpin(self, path: str) -> None:
        pinned = self._pinned
        if path in pinned:
            pinned.discard(path)
            if len(self._open) > self.capacity:
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
            self._close(path, conn)
        if owner is not None:
            owner()

    def _shrink(self) -> None:
        od = self._open
        pinned = self._pinned
        skipped = 0
        while len(od) > self.capacity and skipped < len(od):
            path = next(iter(od))
            if path in pinned:
                # In use right now: as good as most recently used.
                od.move_to_end(path)
                skipped += 1
                continue
            conn = od.pop(path)
            owner = self._owners.pop(path, None)
            self._close(path, conn)
            if owner is not None:
                owner()

    def _close(self, path: str, conn: apsw.Connection) -> None:
        """Close ``conn``; never raises. A connection that fails to close cleanly
        has nothing uncommitted (pinned ones are never closed here, and the
        caller's connection is dropped either way); SQLite recovers the WAL on
        the next open. The failure is logged once, naming the object."""
        self._closes += 1
        try:
            hook = self.fault_hook
            if hook is not None:
                hook("close", path)
            conn.close()
        except Exception as exc:
            log.error("closing the database of object %s failed (nothing uncommitted was in it): %s: %s",
                      object_label(path), type(exc).__name__, exc)
            try:
                conn.close()  # after a hook's failure: still close it
            except Exception:
                pass

    def close_all(self) -> None:
        for path in list(self._open):
            conn = self._open.pop(path)
            owner = self._owners.pop(path, None)
            self._close(path, conn)
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
            corrupt_objects=len(self._corrupt),
        )



class _CheckpointFault:
    """A WAL hook (installed only while a fault hook is set): the fault hook's
    ``"checkpoint"`` step after each commit, then SQLite's own automatic
    checkpoint, which a WAL hook replaces."""

    __slots__ = ("hook", "path")

    def __init__(self, hook: FaultHook, path: str) -> None:
        self.hook = hook
        self.path = path

    def __call__(self, conn: apsw.Connection, dbname: str, pages: int) -> int:
        self.hook("checkpoint", self.path)
        if pages >= 1000:  # SQLite's default wal_autocheckpoint
            conn.wal_checkpoint(dbname)
        return apsw.SQLITE_OK
