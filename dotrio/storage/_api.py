"""``ctx.storage``: the user-facing storage API of one object.

A thin front on the object's :class:`~dotrio.storage.StorageEngine`, which
does the work (the write buffer, the SQLite transaction, the commit pipeline).
The runtime talks to the engine; user code gets only this, so the commit
machinery is neither reachable from a handler nor part of the API reference.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, final

from .._util import NoPublicConstructor

if TYPE_CHECKING:
    from ._object import StorageEngine, Transaction
    from ._sql import SqlStorage

__all__ = ["ObjectStorage", "new_user_storage"]

T = TypeVar("T")
_NO_VALUE: Any = object()


@final
class ObjectStorage(metaclass=NoPublicConstructor):
    """``self.ctx.storage``: the KV API, the SQL API and the alarm of one object.

    KV and SQL live in the object's own SQLite database and commit together.
    Every method completes without letting another event of the object in (the
    input gate), and writes made without an intervening non-storage await
    commit atomically together.
    """

    __slots__ = ("_engine", "sql")

    def __init__(self, engine: StorageEngine) -> None:
        # Built by the runtime for each object; user code receives it as ctx.storage.
        self._engine = engine
        self.sql: SqlStorage = engine.sql
        """The SQL API (``sql.exec(query, *bindings)`` and ``sql.database_size``)."""

    # ---- KV ------------------------------------------------------------------

    async def get(self, key: str | list[str]) -> Any:
        """The value of ``key`` (None if absent), or for a list of keys a dict of
        those that exist, in key order. Reads see this object's own writes at
        once, before they are committed."""
        return await self._engine.get(key)

    def put(self, key: str | dict[str, Any], value: Any = _NO_VALUE) -> Awaitable[None]:
        """Store ``value`` under ``key``, or every pair of a dict, atomically.

        Await it like every storage call. Values are copied (the storage codec):
        a value of an unsupported type raises TypeError before anything is
        written; one over 2 MiB encoded raises ValueError."""
        if value is _NO_VALUE:
            return self._engine.put(key)
        return self._engine.put(key, value)

    async def delete(self, key: str | list[str]) -> bool | int:
        """Delete ``key`` (returns whether it existed) or a list of keys (returns
        how many existed)."""
        return await self._engine.delete(key)

    async def list(
        self,
        prefix: str | None = None,
        start: str | None = None,
        start_after: str | None = None,
        end: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """Entries in key order (``end`` exclusive), optionally reversed and
        limited: a dict. ``start`` and ``start_after`` exclude each other."""
        return await self._engine.list(
            prefix=prefix, start=start, start_after=start_after, end=end, reverse=reverse, limit=limit
        )

    async def delete_all(self) -> None:
        """Remove everything: KV pairs, SQL tables and the alarm."""
        await self._engine.delete_all()

    async def sync(self) -> None:
        """Return once every earlier write is committed (and durable as configured)."""
        await self._engine.sync()

    # ---- transactions ------------------------------------------------------------

    async def transaction(self, fn: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``fn(txn)`` atomically and return its result: an exception (or
        ``txn.rollback()``) undoes its writes. No other event is delivered while
        it runs."""
        return await self._engine.transaction(fn)

    def transaction_sync(self, fn: Callable[[], T]) -> T:
        """Run the sync ``fn()`` (SQL work) atomically and return its result:
        raising rolls it back."""
        return self._engine.transaction_sync(fn)

    # ---- alarm ---------------------------------------------------------------

    async def get_alarm(self) -> int | None:
        """The alarm's time in epoch milliseconds, or None. While ``alarm()``
        runs it is None unless ``set_alarm`` was called during it."""
        return await self._engine.get_alarm()

    async def set_alarm(self, scheduled_time: int | float | _dt.datetime) -> None:
        """Set the object's one alarm (replacing any), at epoch ms or an aware
        datetime; a time in the past fires at once."""
        await self._engine.set_alarm(scheduled_time)

    async def delete_alarm(self) -> None:
        """Remove the alarm, if any."""
        await self._engine.delete_alarm()

    def __repr__(self) -> str:
        return f"<ObjectStorage {self._engine.label}>"


def new_user_storage(engine: StorageEngine) -> ObjectStorage:
    """The ``ctx.storage`` of an object whose storage engine is ``engine``."""
    return ObjectStorage._create(engine)
