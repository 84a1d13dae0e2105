"""Where objects' databases live: files under the data dir, or memory.

``data_dir/<namespace>/<id[:2]>/<id>.sqlite``. Files are created on an
object's first write, never on a read: creating a database costs ~2 ms and a
million read-only visitors must not leave a million files behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import apsw
import trio

from .._kernels.coalesce import DEFAULT_CACHE_BUDGET
from ._pool import ConnectionPool, PoolStatistics, configure_connection
from ._sql import DEFAULT_MAX_SQL_RESULT_ROWS

if TYPE_CHECKING:
    from ._failure import FaultHook

__all__ = ["StorageBackend", "BackendStatistics", "DURABILITY_LEVELS", "DEFAULT_POOL_SIZE", "COMMIT_THREADS"]

# "process": WAL with synchronous=NORMAL; a commit is a write() into the WAL,
#   durable once the process has made it (survives kill -9, not power loss).
# "power": synchronous=FULL; every commit fsyncs the WAL, in a worker thread.
DURABILITY_LEVELS = ("process", "power")
DEFAULT_POOL_SIZE = 2048
# Worker threads that may be inside a "power" commit at once: each mostly waits
# in fsync, so more than there are cores pays off, up to what the disk overlaps.
COMMIT_THREADS = 16


@dataclass(frozen=True)
class BackendStatistics:
    data_dir: str | None
    durability: str
    pool: PoolStatistics | None
    memory_databases: int
    cache_budget: int
    corrupt_objects: int = 0
    """Object databases found corrupt since start: each fails only its own object."""


class StorageBackend:
    """Opens, pools and locates every object database of one Runtime."""

    def __init__(
        self,
        data_dir: Path | None,
        durability: str = "process",
        pool_size: int = DEFAULT_POOL_SIZE,
        vfs: str | None = None,
        cache_budget: int = DEFAULT_CACHE_BUDGET,
        commit_threads: int = COMMIT_THREADS,
        max_sql_result_rows: int = DEFAULT_MAX_SQL_RESULT_ROWS,
    ) -> None:
        if isinstance(max_sql_result_rows, bool) or not isinstance(max_sql_result_rows, int) or max_sql_result_rows < 1:
            raise ValueError(f"max_sql_result_rows must be a positive int, got {max_sql_result_rows!r}")
        #: the most rows one sql.exec result may have; more is a StorageError
        self.max_sql_result_rows = max_sql_result_rows
        if durability not in DURABILITY_LEVELS:
            raise ValueError(f"durability must be one of {DURABILITY_LEVELS}, got {durability!r}")
        if isinstance(cache_budget, bool) or not isinstance(cache_budget, int) or cache_budget < 0:
            raise ValueError(f"cache_budget must be an int >= 0 (bytes per object), got {cache_budget!r}")
        if isinstance(commit_threads, bool) or not isinstance(commit_threads, int) or commit_threads < 1:
            raise ValueError(f"commit_threads must be a positive int, got {commit_threads!r}")
        self.data_dir = data_dir
        # Paths are built per activation: from a str, not through pathlib.
        self._root = os.fspath(data_dir) if data_dir is not None else None
        self.durability = durability
        self.cache_budget = cache_budget
        self._commit_threads = commit_threads
        self._limiter: trio.CapacityLimiter | None = None
        self._pool = ConnectionPool(pool_size, durability, vfs) if data_dir is not None else None
        # In-memory databases live as long as the backend: eviction must not lose them.
        self._memory: dict[str, apsw.Connection] = {}
        self._made_dirs: set[str] = set()
        self._fault_hook: FaultHook | None = None

    @property
    def fault_hook(self) -> FaultHook | None:
        """Test-facing fault injection: ``hook(step, path)`` is called before each
        storage step (open, mkdir, commit, checkpoint, close) and whatever it
        raises is raised where that step's real failure would be. See
        ``dotrio.storage._failure`` for the steps. None (the default) disables it."""
        return self._fault_hook

    @fault_hook.setter
    def fault_hook(self, hook: FaultHook | None) -> None:
        if hook is not None and not callable(hook):
            raise TypeError(f"fault_hook must be callable(step, path) or None, got {type(hook).__name__}")
        self._fault_hook = hook
        if self._pool is not None:
            self._pool.fault_hook = hook

    def path_for(self, namespace: str, object_id: str) -> str:
        if self._root is None:
            return f"{namespace}/{object_id}"
        return f"{self._root}{os.sep}{namespace}{os.sep}{object_id[:2]}{os.sep}{object_id}.sqlite"

    def connect(self, path: str, create: bool, on_close: Callable[[], None]) -> apsw.Connection | None:
        if self._pool is None:
            conn = self._memory.get(path)
            if conn is None and create:
                if self._fault_hook is not None:
                    self._fault_hook("open", path)
                conn = apsw.Connection(":memory:")
                configure_connection(conn, self.durability, in_memory=True)
                self._memory[path] = conn
            return conn
        if create:
            self.prepare_create(path)
        return self._pool.get(path, create, on_close)

    def prepare_create(self, path: str) -> None:
        """Make ``path``'s directory (before a worker thread creates the file)."""
        parent = os.path.dirname(path)
        if parent not in self._made_dirs:
            if self._fault_hook is not None:
                self._fault_hook("mkdir", path)
            os.makedirs(parent, exist_ok=True)
            self._made_dirs.add(parent)

    def open_unpooled(self, path: str) -> apsw.Connection:
        """A new, configured connection that creates the file if needed; safe in
        a worker thread. Hand it to ``adopt`` on the Trio thread."""
        assert self._pool is not None
        conn = self._pool.open(path, True)
        assert conn is not None
        return conn

    def adopt(self, path: str, conn: apsw.Connection, on_close: Callable[[], None]) -> None:
        assert self._pool is not None
        self._pool.adopt(path, conn, on_close)

    def object_ids(self, namespace: str) -> list[str]:
        """Hex ids of every object of ``namespace`` that has a database (files on
        disk, or in-memory databases), sorted."""
        if self.data_dir is None:
            prefix = namespace + "/"
            return sorted(p[len(prefix):] for p in self._memory if p.startswith(prefix))
        root = os.path.join(self.data_dir, namespace)
        ids: list[str] = []
        try:
            shards = os.listdir(root)
        except FileNotFoundError:
            return []
        for shard in shards:
            try:
                names = os.listdir(os.path.join(root, shard))
            except (NotADirectoryError, FileNotFoundError):
                continue
            ids.extend(n[: -len(".sqlite")] for n in names if n.endswith(".sqlite") and len(n) == 64 + 7)
        return sorted(ids)

    def exists(self, path: str) -> bool:
        if self._pool is None:
            return path in self._memory
        return os.path.exists(path)

    def touch(self, path: str) -> None:
        pool = self._pool
        if pool is not None:
            pool.touch(path)

    def commit_limiter(self) -> trio.CapacityLimiter:
        """The worker threads "power" commits share (created in the first commit's Trio run)."""
        limiter = self._limiter
        if limiter is None:
            limiter = self._limiter = trio.CapacityLimiter(self._commit_threads)
        return limiter

    def pin(self, path: str) -> None:
        if self._pool is not None:
            self._pool.pin(path)

    def unpin(self, path: str) -> None:
        if self._pool is not None:
            self._pool.unpin(path)

    def release(self, path: str) -> None:
        if self._pool is not None:
            self._pool.release(path)

    def discard(self, path: str) -> None:
        if self._pool is not None:
            self._pool.discard(path)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close_all()
        for conn in self._memory.values():
            conn.close()
        self._memory.clear()

    def statistics(self) -> BackendStatistics:
        pool = self._pool.statistics() if self._pool is not None else None
        return BackendStatistics(
            data_dir=str(self.data_dir) if self.data_dir is not None else None,
            durability=self.durability,
            pool=pool,
            memory_databases=len(self._memory),
            cache_budget=self.cache_budget,
            corrupt_objects=pool.corrupt_objects if pool is not None else 0,
        )
