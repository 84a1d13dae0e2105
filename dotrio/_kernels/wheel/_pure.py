"""Hierarchical timer wheel: the pure-Python reference twin of ``_compiled.pyx``.

The runtime keeps every armed alarm (up to millions) in one of these and a single
Trio task sleeps until :meth:`TimerWheel.next_due`. The wheel itself is a plain
data structure: no Trio, no clock; the caller passes "now" in. Entries are int
handles into parallel arrays, placed in 11 levels of 64 slots by the highest
6-bit digit in which their tick differs from the cursor, so the earliest entry
is found in O(1) and each entry descends at most 10 times in its life. The
design (ticks, radix placement, cascading, exact answers, memory layout) is
in docs/design/kernels.md.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._constants import LEVELS, SLOT_BITS

if TYPE_CHECKING:
    from collections.abc import Hashable

__all__ = [
    "LEVELS",
    "SLOTS_PER_LEVEL",
    "SLOT_BITS",
    "TimerWheel",
    "WheelStatistics",
]

SLOTS_PER_LEVEL = 1 << SLOT_BITS

_NSLOTS = LEVELS * SLOTS_PER_LEVEL
_READY = 0xFFFE
_FREE = 0xFFFF
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
# Handles are int32 in the compiled twin; keep the same ceiling here.
_MAX_HANDLES = (1 << 31) - 1


@dataclass(frozen=True, slots=True)
class WheelStatistics:
    """A snapshot of a wheel's shape (identical across both twins)."""

    armed: int
    """Number of armed alarms (``len(wheel)``)."""
    ready: int
    """Armed alarms behind the cursor (already due or due within the current tick)."""
    levels: int
    slots_per_level: int
    tick_ms: int
    cursor_ms: int
    """Start of the cursor's tick: alarms earlier than ``cursor_ms + tick_ms`` are ready.

    Usually the last ``now_ms`` given to ``pop_due`` (rounded down to a tick);
    ahead of it when ``next_due`` opened a slot early, behind it when
    ``pop_due`` stopped at ``limit``."""
    per_level: tuple[int, ...]
    """Alarms held in each level of the wheel (excluding ready ones)."""
    handles: int
    """High-water mark of entry handles, i.e. rows in the per-entry arrays."""


def _check_time(name: str, value: object) -> int:
    # bool is an int subclass but arming "True" is always a bug upstream.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int (epoch milliseconds), got {type(value).__name__}")
    if value < _INT64_MIN or value > _INT64_MAX:
        raise OverflowError(f"{name}={value} does not fit in a signed 64-bit integer")
    return value


class TimerWheel:
    """Millions of armed alarms keyed by any hashable, popped in time order.

    ``arm``/``cancel``/``when``/``__contains__`` are O(1) (arming at or before
    the cursor is O(log ready)); ``next_due`` is O(1) amortized; ``pop_due``
    is O(returned + levels descended + log ready).
    """

    __slots__ = (
        "_tick",
        "_cursor",
        "_index",
        "_keys",
        "_when",
        "_next",
        "_prev",
        "_loc",
        "_free",
        "_heads",
        "_occ",
        "_levels",
        "_smin",
        "_svalid",
        "_lcount",
        "_heap",
    )

    def __init__(self, now_ms: int, tick_ms: int = 1) -> None:
        _check_time("now_ms", now_ms)
        _check_time("tick_ms", tick_ms)
        if tick_ms < 1:
            raise ValueError(f"tick_ms must be >= 1, got {tick_ms}")
        # Non-negative cursor keeps every wheel tick non-negative, so the XOR
        # placement never sees a sign bit.
        if now_ms < 0:
            raise ValueError(f"now_ms must be >= 0, got {now_ms}")
        self._tick = tick_ms
        self._cursor = now_ms // tick_ms
        self._index: dict[Hashable, int] = {}
        self._keys: list[Hashable | None] = []
        self._when = array("q")
        self._next = array("i")
        self._prev = array("i")
        self._loc = array("H")
        self._free = -1
        self._heads = [-1] * _NSLOTS
        self._occ = [0] * LEVELS  # per-level slot occupancy bitmap
        self._levels = 0  # bitmask of non-empty levels
        self._smin = [0] * _NSLOTS  # per-slot min when_ms, valid where _svalid bit set
        self._svalid = [0] * LEVELS
        self._lcount = [0] * LEVELS
        self._heap: list[int] = []

    # -- handles ---------------------------------------------------------------

    def _alloc(self, key: Hashable, when_ms: int) -> int:
        h = self._free
        if h >= 0:
            self._free = self._next[h]
            self._keys[h] = key
            self._when[h] = when_ms
        else:
            h = len(self._keys)
            if h >= _MAX_HANDLES:
                raise MemoryError("timer wheel is full (2**31 - 1 handles)")
            self._keys.append(key)
            self._when.append(when_ms)
            self._next.append(-1)
            self._prev.append(-1)
            self._loc.append(_FREE)
        self._index[key] = h
        return h

    def _release(self, h: int) -> None:
        del self._index[self._keys[h]]
        self._keys[h] = None  # drop the reference now, not at reuse
        self._loc[h] = _FREE
        self._next[h] = self._free
        self._free = h

    # -- placement -------------------------------------------------------------

    def _place(self, h: int, when_ms: int) -> None:
        if when_ms >= 0:
            t = when_ms // self._tick
            c = self._cursor
            if t > c:
                lvl = ((t ^ c).bit_length() - 1) // SLOT_BITS
                self._link(h, lvl, (t >> (SLOT_BITS * lvl)) & 63, when_ms)
                return
        self._heap_push(h)

    def _link(self, h: int, lvl: int, digit: int, when_ms: int) -> None:
        s = (lvl << SLOT_BITS) | digit
        bit = 1 << digit
        head = self._heads[s]
        self._next[h] = head
        self._prev[h] = -1
        if head >= 0:
            self._prev[head] = h
            if self._svalid[lvl] & bit and when_ms < self._smin[s]:
                self._smin[s] = when_ms
        else:
            self._occ[lvl] |= bit
            self._levels |= 1 << lvl
            self._smin[s] = when_ms
            self._svalid[lvl] |= bit
        self._heads[s] = h
        self._loc[h] = s
        self._lcount[lvl] += 1

    def _unlink(self, h: int) -> None:
        s = self._loc[h]
        if s == _READY:
            self._heap_remove(h)
            return
        p = self._prev[h]
        n = self._next[h]
        if p >= 0:
            self._next[p] = n
        else:
            self._heads[s] = n
        if n >= 0:
            self._prev[n] = p
        lvl = s >> SLOT_BITS
        bit = 1 << (s & 63)
        self._lcount[lvl] -= 1
        if self._heads[s] < 0:
            occ = self._occ[lvl] & ~bit
            self._occ[lvl] = occ
            if not occ:
                self._levels &= ~(1 << lvl)
            self._svalid[lvl] &= ~bit
        elif self._when[h] == self._smin[s]:
            # Only losing the minimum makes the cache stale; next_due then opens the slot.
            self._svalid[lvl] &= ~bit

    # -- ready heap, ordered by (when_ms, handle); prev[h] = heap position ------

    def _heap_push(self, h: int) -> None:
        heap = self._heap
        heap.append(h)
        self._loc[h] = _READY
        self._sift_up(len(heap) - 1, h)

    def _sift_up(self, i: int, h: int) -> None:
        heap = self._heap
        when = self._when
        pos = self._prev
        w = when[h]
        while i > 0:
            pi = (i - 1) >> 1
            p = heap[pi]
            pw = when[p]
            if pw < w or (pw == w and p < h):
                break
            heap[i] = p
            pos[p] = i
            i = pi
        heap[i] = h
        pos[h] = i

    def _sift_down(self, i: int, h: int) -> None:
        heap = self._heap
        when = self._when
        pos = self._prev
        n = len(heap)
        w = when[h]
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            ch = heap[c]
            cw = when[ch]
            if c + 1 < n:
                r = heap[c + 1]
                rw = when[r]
                if rw < cw or (rw == cw and r < ch):
                    c += 1
                    ch = r
                    cw = rw
            if w < cw or (w == cw and h < ch):
                break
            heap[i] = ch
            pos[ch] = i
            i = c
        heap[i] = h
        pos[h] = i

    def _heap_remove(self, h: int) -> None:
        heap = self._heap
        i = self._prev[h]
        last = heap.pop()
        if last == h:
            return
        heap[i] = last
        self._prev[last] = i
        if i > 0:
            p = heap[(i - 1) >> 1]
            lw = self._when[last]
            pw = self._when[p]
            if lw < pw or (lw == pw and last < p):
                self._sift_up(i, last)
                return
        self._sift_down(i, last)

    # -- public API -------------------------------------------------------------

    def arm(self, key: Hashable, when_ms: int) -> None:
        """Arm ``key`` to fire at ``when_ms``, replacing any earlier arming."""
        _check_time("when_ms", when_ms)
        h = self._index.get(key)
        if h is None:
            h = self._alloc(key, when_ms)
        else:
            self._unlink(h)
            self._when[h] = when_ms
        self._place(h, when_ms)

    def cancel(self, key: Hashable) -> bool:
        """Disarm ``key``; True if it was armed."""
        h = self._index.get(key)
        if h is None:
            return False
        self._unlink(h)
        self._release(h)
        return True

    def when(self, key: Hashable) -> int | None:
        """The time ``key`` is armed for, or None."""
        h = self._index.get(key)
        return None if h is None else self._when[h]

    def pop_due(self, now_ms: int, limit: int | None = None) -> list[tuple[Hashable, int]]:
        """Remove and return every ``(key, when_ms)`` with ``when_ms <= now_ms``.

        Sorted by ``when_ms`` (ties by internal handle). With ``limit`` at most
        that many are returned; the rest stay armed (and due).
        """
        _check_time("now_ms", now_ms)
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool):
                raise TypeError(f"limit must be an int or None, got {type(limit).__name__}")
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
            if limit == 0:
                return []
        out: list[tuple[Hashable, int]] = []
        heap = self._heap
        when = self._when
        keys = self._keys
        now_tick = now_ms // self._tick
        while True:
            while heap:
                h = heap[0]
                w = when[h]
                if w > now_ms:
                    break
                self._heap_remove(h)
                out.append((keys[h], w))
                self._release(h)
                if len(out) == limit:
                    # Stop mid-way: the cursor stays where the last slot was
                    # opened, which is still <= now.
                    return out
            if heap or not self._levels:
                break
            lv = self._levels
            lvl = (lv & -lv).bit_length() - 1
            occ = self._occ[lvl]
            digit = (occ & -occ).bit_length() - 1
            shift = SLOT_BITS * (lvl + 1)
            start = ((self._cursor >> shift) << shift) | (digit << (SLOT_BITS * lvl))
            if start > now_tick:
                break
            self._cascade(lvl, digit, start)
        if now_tick > self._cursor:
            # Everything left starts after now_tick, so their placement holds.
            self._cursor = now_tick
        return out

    def _cascade(self, lvl: int, digit: int, start: int) -> None:
        s = (lvl << SLOT_BITS) | digit
        h = self._heads[s]
        self._heads[s] = -1
        bit = 1 << digit
        occ = self._occ[lvl] & ~bit
        self._occ[lvl] = occ
        if not occ:
            self._levels &= ~(1 << lvl)
        self._svalid[lvl] &= ~bit
        self._cursor = start
        nxt = self._next
        when = self._when
        moved = 0
        while h >= 0:
            n = nxt[h]
            self._place(h, when[h])
            moved += 1
            h = n
        self._lcount[lvl] -= moved

    def next_due(self) -> int | None:
        """The earliest armed ``when_ms`` (exact), or None if nothing is armed."""
        heap = self._heap
        while not heap:
            lv = self._levels
            if not lv:
                return None
            lvl = (lv & -lv).bit_length() - 1
            occ = self._occ[lvl]
            digit = (occ & -occ).bit_length() - 1
            if self._svalid[lvl] >> digit & 1:
                return self._smin[(lvl << SLOT_BITS) | digit]
            # The slot lost its minimum. Rescanning would cost O(slot) on every
            # call while its earliest alarms keep being re-armed; opening it
            # early costs the same once and moves every entry down a level.
            shift = SLOT_BITS * (lvl + 1)
            self._cascade(lvl, digit, ((self._cursor >> shift) << shift) | (digit << (SLOT_BITS * lvl)))
        return self._when[heap[0]]

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def statistics(self) -> WheelStatistics:
        """Counts and shape, for metrics and tests."""
        return WheelStatistics(
            armed=len(self._index),
            ready=len(self._heap),
            levels=LEVELS,
            slots_per_level=SLOTS_PER_LEVEL,
            tick_ms=self._tick,
            cursor_ms=self._cursor * self._tick,
            per_level=tuple(self._lcount),
            handles=len(self._keys),
        )

    def __repr__(self) -> str:
        return f"<TimerWheel armed={len(self._index)} cursor_ms={self._cursor * self._tick} tick_ms={self._tick}>"
