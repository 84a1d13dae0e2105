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

import apsw

from ._pool import ConnectionPool, PoolStatistics, configure_connection

__all__ = ["StorageBackend", "BackendStatistics"]

DURABILITY_LEVELS = ("process", "power")


@dataclass(frozen=True)
class BackendStatistics:
    data_dir: str | None
    durability: str
    pool: PoolStatistics | None
    memory_databases: int


class StorageBackend:
    """Opens, pools and locates every object database of one Runtime."""

    def __init__(
        self,
        data_dir: Path | None,
        durability: str = "process",
        pool_size: int = 2048,
        vfs: str | None = None,
    ) -> None:
        if durability not in DURABILITY_LEVELS:
            raise ValueError(f"durability must be one of {DURABILITY_LEVELS}, got {durability!r}")
        self.data_dir = data_dir
        self.durability = durability
        self._pool = ConnectionPool(pool_size, durability, vfs) if data_dir is not None else None
        # In-memory databases live as long as the backend: eviction must not lose them.
        self._memory: dict[str, apsw.Connection] = {}
        self._made_dirs: set[str] = set()

    def path_for(self, namespace: str, object_id: str) -> str:
        if self.data_dir is None:
            return f"{namespace}/{object_id}"
        return os.path.join(self.data_dir, namespace, object_id[:2], object_id + ".sqlite")

    def connect(self, path: str, create: bool, on_close: Callable[[], None]) -> apsw.Connection | None:
        if self._pool is None:
            conn = self._memory.get(path)
            if conn is None and create:
                conn = apsw.Connection(":memory:")
                configure_connection(conn, self.durability, in_memory=True)
                self._memory[path] = conn
            return conn
        if create:
            parent = os.path.dirname(path)
            if parent not in self._made_dirs:
                os.makedirs(parent, exist_ok=True)
                self._made_dirs.add(parent)
        return self._pool.get(path, create, on_close)

    def exists(self, path: str) -> bool:
        if self._pool is None:
            return path in self._memory
        return os.path.exists(path)

    def touch(self, path: str) -> None:
        pool = self._pool
        if pool is not None:
            od = pool._open
            if path in od:
                od.move_to_end(path)

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
        return BackendStatistics(
            data_dir=str(self.data_dir) if self.data_dir is not None else None,
            durability=self.durability,
            pool=self._pool.statistics() if self._pool is not None else None,
            memory_databases=len(self._memory),
        )
