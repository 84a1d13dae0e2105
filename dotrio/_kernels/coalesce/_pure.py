"""The write coalescer, pure Python: the reference twin of ``_compiled.pyx``.

One ``Coalescer`` per live object holds three things, all keyed by storage key:

* **pending**: puts (encoded bytes) and deletes (``None``) made since the last
  commit, last write per key wins. Reads see them first (read-your-writes).
  ``take()`` hands them over, in key order, as the rows of one transaction.
* **in flight**: the batch a commit is writing right now (a ``"power"`` commit
  runs off the Trio thread). Reads still see it, and new writes go to a fresh
  pending buffer, so a slow fsync never blocks writes; ``settle()`` (committed)
  or ``discard()`` (failed) ends it.
* **cache**: committed values (and known-absent keys) recently read or
  written, in encoded form, bounded by a byte budget, so that a repeated
  ``get`` never reaches SQLite. It mirrors the database as our own connection
  sees it; whoever rolls the database back must ``clear_cache()``.

Keys order by code point, which for valid strings (lone surrogates are
rejected by ``check_key``) is UTF-8 byte order, i.e. SQLite's BINARY collation:
Python's ``str`` comparison and the database agree on every range.

Both twins give the same results for the same calls; tests/test_coalesce.py
checks them against each other and against a dict model.
"""

from __future__ import annotations

import datetime as _dt
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from typing import Any, cast

from .._constants import (
    DEFAULT_CACHE_BUDGET,
    ENTRY_OVERHEAD,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    SETTLE_COPY_MAX,
)
from ..codec import decode, encode

__all__ = [
    "Coalescer",
    "READY",
    "MISSING",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "DEFAULT_CACHE_BUDGET",
    "ENTRY_OVERHEAD",
    "check_key",
]

_SETTLE_COPY_MAX = SETTLE_COPY_MAX


class _Missing:
    """The answer "this layer does not know the key": look further down."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class _Ready:
    """An awaitable that is already done and gives None: what storage calls
    that never wait (put) return, cheaper than a coroutine."""

    __slots__ = ()

    def __await__(self) -> Iterator[None]:
        return iter(())

    def __repr__(self) -> str:
        return "READY"


READY: Any = _Ready()


def check_key(key: object, what: str = "key") -> str:
    """``key`` if it is a valid storage key, else TypeError / ValueError."""
    if type(key) is not str:
        raise TypeError(f"storage {what} must be str, got {type(key).__name__}")
    # Each code point is at most 4 UTF-8 bytes, so short ASCII keys need no encoding.
    if len(key) > MAX_KEY_BYTES // 4 or not key.isascii():
        try:
            n = len(key.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise ValueError(f"storage {what} is not valid Unicode (lone surrogate at index {e.start})") from None
        if n > MAX_KEY_BYTES:
            raise ValueError(f"storage {what} is {n} bytes of UTF-8; the limit is {MAX_KEY_BYTES}")
    return key


def _encode_value(value: object) -> bytes:
    data = encode(value)
    if len(data) > MAX_VALUE_BYTES:
        raise ValueError(f"value encodes to {len(data)} bytes; the limit is {MAX_VALUE_BYTES} (2 MiB)")
    return data


def _cost(key: str, data: bytes | None) -> int:
    # A value counts twice: its bytes, and the decoded copy get_value may keep.
    return ENTRY_OVERHEAD + len(key) + (2 * len(data) if data is not None else 0)


_SCALARS = (type(None), bool, int, float, str, bytes, _dt.datetime, _dt.date)
_KEEP_NOT, _KEEP_SAME, _KEEP_DICT, _KEEP_LIST = range(4)


def _immutable(value: object, depth: int) -> bool:
    t = type(value)
    if t in _SCALARS:
        return True
    if (t is tuple or t is frozenset) and depth < 4:
        return all(_immutable(item, depth + 1) for item in value)  # type: ignore[attr-defined]
    return False


def _keep_kind(value: object) -> int:
    """How a decoded value may be handed out again: as is (immutable), as a
    shallow copy (a dict or list of immutables), or not at all (decode again)."""
    if _immutable(value, 0):
        return _KEEP_SAME
    if type(value) is dict:
        return _KEEP_DICT if all(_immutable(v, 1) for v in value.values()) else _KEEP_NOT
    if type(value) is list:
        return _KEEP_LIST if all(_immutable(v, 1) for v in value) else _KEEP_NOT
    return _KEEP_NOT


class Coalescer:
    """Pending writes, the batch in flight, and a read cache of one object."""

    __slots__ = ("_pending", "_keys", "_unsorted", "_inflight", "_cache", "_kept", "_cache_bytes", "_budget")

    def __init__(self, cache_budget: int = DEFAULT_CACHE_BUDGET) -> None:
        if type(cache_budget) is not int or cache_budget < 0:
            raise ValueError(f"cache_budget must be an int >= 0, got {cache_budget!r}")
        self._pending: dict[str, bytes | None] = {}
        # The pending keys, sorted lazily: appending a key larger than the last
        # keeps them sorted (the common case of increasing keys costs nothing).
        self._keys: list[str] = []
        self._unsorted = False
        self._inflight: dict[str, bytes | None] | None = None
        self._cache: dict[str, bytes | None] = {}
        # Decoded values of cached entries read once, and how to copy them.
        self._kept: dict[str, tuple[int, Any]] = {}
        self._cache_bytes = 0
        self._budget = cache_budget

    # ---- writes ----------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        if not isinstance(key, str) or not isinstance(data, bytes):
            raise TypeError("put() takes a str key and bytes data")
        pending = self._pending
        if key not in pending:
            keys = self._keys
            if keys and not self._unsorted and key < keys[-1]:
                self._unsorted = True
            keys.append(key)
        pending[key] = data

    def delete(self, key: str) -> None:
        if not isinstance(key, str):
            raise TypeError("delete() takes a str key")
        pending = self._pending
        if key not in pending:
            keys = self._keys
            if keys and not self._unsorted and key < keys[-1]:
                self._unsorted = True
            keys.append(key)
        pending[key] = None

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        for key, data in items:
            self.put(key, data)

    def put_value(self, key: object, value: object) -> None:
        """Check ``key``, encode ``value`` (at most 2 MiB) and put it: one call
        for what ``storage.put(key, value)`` does. Nothing is written on error."""
        self.put(check_key(key), _encode_value(value))

    def put_values(self, entries: dict[str, object]) -> int:
        """``put_value`` for every pair of the dict ``entries``, all or nothing.
        Returns how many were put."""
        if not isinstance(entries, dict):
            raise TypeError(f"put_values() takes a dict, got {type(entries).__name__}")
        checked = [(check_key(k), _encode_value(v)) for k, v in entries.items()]
        for key, data in checked:
            self.put(key, data)
        return len(checked)

    @property
    def pending(self) -> int:
        """How many keys have an uncommitted put or delete."""
        return len(self._pending)

    @property
    def in_flight(self) -> bool:
        return self._inflight is not None

    # ---- reads -----------------------------------------------------------------------

    def lookup(self, key: str) -> Any:
        """The newest known state of ``key``: bytes, None (absent) or MISSING
        (unknown here: read the database, then ``remember`` the answer)."""
        if not isinstance(key, str):
            raise TypeError("lookup() takes a str key")
        value = self._pending.get(key, MISSING)
        if value is not MISSING:
            return value
        inflight = self._inflight
        if inflight is not None:
            value = inflight.get(key, MISSING)
            if value is not MISSING:
                return value
        return self._cache.get(key, MISSING)

    def get_value(self, key: object) -> Any:
        """The decoded newest value of ``key`` (None if known absent), or
        MISSING if the database must be read (also for keys that are not
        valid: the caller checks those)."""
        if type(key) is not str:
            return MISSING
        raw = self._pending.get(key, MISSING)
        if raw is MISSING and self._inflight is not None:
            raw = self._inflight.get(key, MISSING)
        if raw is not MISSING:
            return None if raw is None else decode(raw)
        raw = self._cache.get(key, MISSING)
        if raw is MISSING or raw is None:
            return raw
        return self._from_cache(key, raw)

    def _from_cache(self, key: str, data: bytes) -> Any:
        """A fresh copy of a cached value: decoded once, then copied cheaply
        when its shape allows (values must never be shared mutably)."""
        kept = self._kept.get(key)
        if kept is None:
            value = decode(data)
            kind = _keep_kind(value)
            self._kept[key] = (kind, value if kind != _KEEP_NOT else None)
        else:
            kind, value = kept
            if kind == _KEEP_NOT:
                return decode(data)
        if kind == _KEEP_DICT:
            return dict(value)  # type: ignore[call-overload]
        if kind == _KEEP_LIST:
            return list(value)  # type: ignore[call-overload]
        return value

    def remember(self, key: str, data: bytes | None) -> None:
        """Cache what the database holds for ``key`` (None: absent)."""
        if not isinstance(key, str):
            raise TypeError("remember() takes a str key")
        if data is not None and type(data) is not bytes:
            raise TypeError("remember() takes bytes or None")
        self._cache_set(key, data)

    # ---- commits ---------------------------------------------------------------------

    def take(self) -> tuple[list[tuple[str, bytes]], list[tuple[str]]]:
        """Move the pending writes in flight and return them as rows, in key
        order: ``(puts, deletes)`` for ``executemany``. One batch at a time."""
        if self._inflight is not None:
            raise RuntimeError("a batch is already in flight; settle() or discard() it first")
        pending = self._pending
        keys = self._keys
        if self._unsorted:
            keys.sort()
        puts: list[tuple[str, bytes]] = []
        dels: list[tuple[str]] = []
        for key in keys:
            data = pending[key]
            if data is None:
                dels.append((key,))
            else:
                puts.append((key, data))
        self._inflight = pending
        self._pending = {}
        self._keys = []
        self._unsorted = False
        return puts, dels

    def settle(self) -> None:
        """The batch in flight is committed: it becomes what the cache knows."""
        inflight = self._inflight
        if inflight is None:
            return
        self._inflight = None
        if len(inflight) <= _SETTLE_COPY_MAX:
            for key, data in inflight.items():
                self._cache_set(key, data)
            return
        cache = self._cache
        for key in [k for k in cache if k in inflight]:
            self._cache_drop(key)

    def discard(self) -> None:
        """Drop every uncommitted write: pending and in flight."""
        self._pending = {}
        self._keys = []
        self._unsorted = False
        self._inflight = None

    def snapshot(self) -> object:
        """The pending writes as they are now, for ``restore`` (a transaction)."""
        return (dict(self._pending), list(self._keys), self._unsorted)

    def restore(self, snapshot: object) -> None:
        pending, keys, unsorted = cast("tuple[dict[str, bytes | None], list[str], bool]", snapshot)
        self._pending = dict(pending)
        self._keys = list(keys)
        self._unsorted = unsorted

    # ---- list() ----------------------------------------------------------------------

    def merge(
        self,
        rows: Iterator[tuple[str, bytes]] | None,
        lo: str | None,
        lo_inclusive: bool,
        hi: str | None,
        reverse: bool,
        limit: int,
    ) -> list[tuple[str, bytes]]:
        """Merge the database rows of a range scan with the pending writes.

        ``rows`` yields ``(key, value)`` in the scan's direction, restricted to
        the range (``lo`` inclusive or not, ``hi`` exclusive; None = unbounded).
        Pending puts replace or add rows, pending deletes hide them. At most
        ``limit`` rows (``limit < 0``: no limit); ``rows`` is read lazily, so a
        small limit reads little. Nothing may be in flight (the caller waits).
        """
        if self._inflight is not None:
            raise RuntimeError("merge() while a batch is in flight")
        pending = self._pending
        keys = self._keys
        if self._unsorted:
            keys.sort()
            self._unsorted = False
        i = 0 if lo is None else (bisect_left(keys, lo) if lo_inclusive else bisect_right(keys, lo))
        j = len(keys) if hi is None else bisect_left(keys, hi)
        order = keys[i:j]
        if reverse:
            order.reverse()
        out: list[tuple[str, bytes]] = []
        if limit == 0:
            return out
        it = iter(rows) if rows is not None else iter(())
        row = next(it, None)
        n = len(order)
        p = 0
        while p < n or row is not None:
            if p < n:
                pk = order[p]
                if row is None:
                    take_pending = True
                    same = False
                else:
                    rk = row[0]
                    same = rk == pk
                    take_pending = same or ((pk > rk) if reverse else (pk < rk))
            else:
                take_pending = False
                same = False
            if take_pending:
                data = pending[pk]
                p += 1
                if same:
                    row = next(it, None)
                if data is None:
                    continue
                out.append((pk, data))
            else:
                assert row is not None
                out.append((row[0], row[1]))
                row = next(it, None)
            if len(out) == limit:
                break
        return out

    # ---- cache -----------------------------------------------------------------------

    def _cache_set(self, key: str, data: bytes | None) -> None:
        cache = self._cache
        old = cache.pop(key, MISSING)
        if old is not MISSING:
            self._cache_bytes -= _cost(key, old)
            self._kept.pop(key, None)
        cost = _cost(key, data)
        # One value may use at most a quarter of the budget: a big value read
        # once must not flush everything else.
        if cost * 4 > self._budget:
            return
        budget = self._budget - cost
        while self._cache_bytes > budget:
            victim = next(iter(cache))
            self._cache_bytes -= _cost(victim, cache.pop(victim))
            self._kept.pop(victim, None)
        cache[key] = data
        self._cache_bytes += cost

    def _cache_drop(self, key: str) -> None:
        old = self._cache.pop(key, MISSING)
        if old is not MISSING:
            self._cache_bytes -= _cost(key, old)
            self._kept.pop(key, None)

    def clear_cache(self) -> None:
        self._cache.clear()
        self._kept.clear()
        self._cache_bytes = 0

    @property
    def cache_bytes(self) -> int:
        """Bytes the cache accounts for (keys, values and per-entry overhead)."""
        return self._cache_bytes

    @property
    def cache_entries(self) -> int:
        return len(self._cache)

    @property
    def cache_budget(self) -> int:
        return self._budget
