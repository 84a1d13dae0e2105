# cython: language_level=3, annotation_typing=False
"""Hierarchical timer wheel: the compiled twin of ``dotrio._kernels.wheel._pure``.

The design (11 radix levels of 64 slots, cursor-relative XOR placement, ready
heap ordered by ``(when_ms, handle)``, per-slot cached minimum, slots opened early by ``next_due``) is documented in
``dotrio/_kernels/wheel/_pure.py``; this file follows the same algorithm step for step so
that both twins return identical results, including the order of ties.

What differs is the memory layout. Per armed alarm there is no Python object
besides the caller's key:

* parallel C arrays indexed by an int32 handle: ``when`` int64, ``next`` and
  ``prev`` int32 (slot list links; ``prev`` doubles as the heap position of a
  ready entry), ``loc`` uint16 (slot number, READY or FREE) and the key's hash
  (so probing and resizing never call ``__hash__``/``__eq__`` again);
* a Python list handle -> key (the only place the key is referenced, which
  keeps the cycle collector able to see it);
* instead of a dict (whose values would be one int object per alarm), an
  open-addressing table of int32 handles, linear probing, load <= 1/2,
  Fibonacci-hashed home slot, backward-shift deletion (no tombstones).

That is 8+4+4+2+8+8 bytes of rows plus 4-8 bytes of table per alarm. Arrays
grow by doubling with ``PyMem_Realloc``; pages past the high-water mark are
never touched, so they cost address space, not RSS. Nothing shrinks: memory is
a high-water mark, which suits a long-lived runtime.
"""

cimport cython
from cpython.list cimport PyList_GET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport Py_EQ, PyObject, PyObject_Hash, PyObject_RichCompareBool
from libc.stdint cimport int32_t, int64_t, uint16_t, uint64_t
from libc.string cimport memset

from dotrio._kernels.wheel._pure import WheelStatistics

cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil
    int __builtin_ctzll(unsigned long long) nogil
    bint PyLong_Check(object)
    bint PyBool_Check(object)

__all__ = ["LEVELS", "SLOTS_PER_LEVEL", "SLOT_BITS", "TimerWheel", "WheelStatistics"]

# _MAX_KEY_BYTES, _MAX_DEPTH, ... (each NAME of dotrio/_kernels/_constants.py, as _NAME)
# are compile-time constants: setup.py passes them to Cython, so that file is their one source.
# The wheel's C constants (_NSLOTS, _READY, ...) are in _compiled.pxd.

SLOT_BITS = _SLOT_BITS
SLOTS_PER_LEVEL = 1 << _SLOT_BITS
LEVELS = _LEVELS


cdef inline int64_t _as_ms(str name, object value) except? -1:
    # bool is an int subclass but arming "True" is always a bug upstream.
    if not PyLong_Check(value) or PyBool_Check(value):
        raise TypeError(f"{name} must be an int (epoch milliseconds), got {type(value).__name__}")
    if value < -0x8000000000000000 or value > 0x7FFFFFFFFFFFFFFF:
        raise OverflowError(f"{name}={value} does not fit in a signed 64-bit integer")
    return <int64_t>value


cdef inline int _bit_length(uint64_t x) noexcept nogil:
    return 64 - __builtin_clzll(x) if x else 0


@cython.final
@cython.no_gc_clear
cdef class TimerWheel:
    """Millions of armed alarms keyed by any hashable, popped in time order.

    ``arm``/``cancel``/``when``/``__contains__`` are O(1) (arming at or before
    the cursor is O(log ready)); ``next_due`` is O(1) amortized; ``pop_due``
    is O(returned + levels descended + log ready).
    """

    # Attributes and C methods are declared in _compiled.pxd.

    def __init__(self, now_ms: int, tick_ms: int = 1) -> None:
        cdef int64_t now = _as_ms("now_ms", now_ms)
        cdef int64_t tick = _as_ms("tick_ms", tick_ms)
        if tick < 1:
            raise ValueError(f"tick_ms must be >= 1, got {tick}")
        # Non-negative cursor keeps every wheel tick non-negative, so the XOR
        # placement never sees a sign bit.
        if now < 0:
            raise ValueError(f"now_ms must be >= 0, got {now}")
        self._free_storage()
        self._tick = tick
        self._cursor = now // tick
        self._keys = []
        self._hwm = 0
        self._cap = 0
        self._free = -1
        self._count = 0
        self._heap_len = 0
        self._heap_cap = 0
        self._levels = 0
        memset(self._heads, 0xFF, sizeof(self._heads))
        memset(self._smin, 0, sizeof(self._smin))
        memset(self._occ, 0, sizeof(self._occ))
        memset(self._svalid, 0, sizeof(self._svalid))
        memset(self._lcount, 0, sizeof(self._lcount))
        self._table_alloc(_MIN_TBITS)

    def __dealloc__(self):
        self._free_storage()

    cdef void _free_storage(self) noexcept:
        PyMem_Free(self._when)
        PyMem_Free(self._next)
        PyMem_Free(self._prev)
        PyMem_Free(self._loc)
        PyMem_Free(self._hashes)
        PyMem_Free(self._table)
        PyMem_Free(self._heap)
        self._when = NULL
        self._next = NULL
        self._prev = NULL
        self._loc = NULL
        self._hashes = NULL
        self._table = NULL
        self._heap = NULL

    cdef inline int _ready(self) except -1:
        if self._table == NULL:
            raise RuntimeError("TimerWheel.__init__ was not called")
        return 0

    # -- rows ------------------------------------------------------------------

    cdef int _grow_rows(self) except -1:
        cdef Py_ssize_t cap = self._cap * 2 if self._cap else _MIN_CAP
        cdef void* p
        if cap > _MAX_HANDLES:
            cap = _MAX_HANDLES
            if cap <= self._cap:
                raise MemoryError("timer wheel is full (2**31 - 1 handles)")
        # Assign each pointer as soon as it is reallocated so a later failure
        # leaves every array at least as large as the old _cap.
        p = PyMem_Realloc(self._when, cap * sizeof(int64_t))
        if p == NULL:
            raise MemoryError()
        self._when = <int64_t*>p
        p = PyMem_Realloc(self._next, cap * sizeof(int32_t))
        if p == NULL:
            raise MemoryError()
        self._next = <int32_t*>p
        p = PyMem_Realloc(self._prev, cap * sizeof(int32_t))
        if p == NULL:
            raise MemoryError()
        self._prev = <int32_t*>p
        p = PyMem_Realloc(self._loc, cap * sizeof(uint16_t))
        if p == NULL:
            raise MemoryError()
        self._loc = <uint16_t*>p
        p = PyMem_Realloc(self._hashes, cap * sizeof(Py_hash_t))
        if p == NULL:
            raise MemoryError()
        self._hashes = <Py_hash_t*>p
        self._cap = cap
        return 0

    cdef int32_t _alloc(self) except -1:
        # LIFO reuse through next[], then the high-water mark: same order as
        # the pure twin, which makes tie order identical.
        cdef int32_t h = self._free
        if h >= 0:
            self._free = self._next[h]
            return h
        if self._hwm == self._cap:
            self._grow_rows()
        h = <int32_t>self._hwm
        self._keys.append(None)
        self._hwm += 1
        self._loc[h] = _FREE
        return h

    cdef int _release(self, int32_t h, Py_ssize_t pos) except -1:
        if pos < 0:
            pos = self._table_pos_of(h)
        self._table_delete_at(pos)
        self._count -= 1
        self._loc[h] = _FREE
        self._next[h] = self._free
        self._free = h
        # Last: dropping the key may run arbitrary __del__ code, and the wheel
        # is consistent by now.
        self._keys[h] = None
        return 0

    # -- key table ---------------------------------------------------------------

    cdef int _table_alloc(self, int bits) except -1:
        cdef Py_ssize_t size = (<Py_ssize_t>1) << bits
        cdef int32_t* t = <int32_t*>PyMem_Malloc(size * sizeof(int32_t))
        cdef Py_ssize_t i, mask = size - 1
        cdef int32_t h
        if t == NULL:
            raise MemoryError()
        memset(t, 0xFF, size * sizeof(int32_t))
        PyMem_Free(self._table)
        self._table = t
        self._tbits = bits
        self._tmask = mask
        for h in range(<int32_t>self._hwm):
            if self._loc[h] != _FREE:
                i = self._home(self._hashes[h])
                while t[i] >= 0:
                    i = (i + 1) & mask
                t[i] = h
        return 0

    cdef inline Py_ssize_t _home(self, Py_hash_t hv) noexcept nogil:
        # Fibonacci hashing: int keys hash to themselves, and taking the top
        # bits of the product spreads consecutive ids over the whole table.
        return <Py_ssize_t>((<uint64_t>hv * <uint64_t>0x9E3779B97F4A7C15) >> (64 - self._tbits))

    cdef int32_t _find(self, object key, Py_hash_t hv, Py_ssize_t* pos) except -2:
        """Handle of ``key`` or -1; ``pos`` gets its table index or the free index to use."""
        cdef int32_t* table
        cdef Py_ssize_t i
        cdef int32_t h
        cdef PyObject* k
        cdef bint eq
        while True:
            table = self._table
            i = self._home(hv)
            while True:
                h = table[i]
                if h < 0:
                    pos[0] = i
                    return -1
                if self._hashes[h] == hv:
                    k = PyList_GET_ITEM(self._keys, h)
                    if k == <PyObject*>key:
                        pos[0] = i
                        return h
                    eq = PyObject_RichCompareBool(<object>k, key, Py_EQ)
                    if self._table != table or table[i] != h:
                        break  # __eq__ mutated the wheel: probe again, like dict does
                    if eq:
                        pos[0] = i
                        return h
                i = (i + 1) & self._tmask

    cdef Py_ssize_t _table_pos_of(self, int32_t h) noexcept:
        # Deleting by handle needs no key comparison at all.
        cdef Py_ssize_t i = self._home(self._hashes[h])
        while self._table[i] != h:
            i = (i + 1) & self._tmask
        return i

    cdef void _table_delete_at(self, Py_ssize_t i) noexcept:
        # Backward-shift deletion keeps linear probing tombstone-free.
        cdef int32_t* table = self._table
        cdef Py_ssize_t mask = self._tmask
        cdef Py_ssize_t j = i, k
        cdef int32_t h
        while True:
            j = (j + 1) & mask
            h = table[j]
            if h < 0:
                break
            k = self._home(self._hashes[h])
            # Move h back to i unless its home lies cyclically in (i, j].
            if (j > i and (k <= i or k > j)) or (j < i and k <= i and k > j):
                table[i] = h
                i = j
        table[i] = -1

    # -- placement ---------------------------------------------------------------

    cdef inline int _place(self, int32_t h, int64_t w) except -1:
        cdef uint64_t t, c
        cdef int lvl
        if w >= 0:
            t = <uint64_t>(w // self._tick)
            c = <uint64_t>self._cursor
            if t > c:
                lvl = (_bit_length(t ^ c) - 1) // _SLOT_BITS
                self._link(h, lvl, <int>((t >> (_SLOT_BITS * lvl)) & 63), w)
                return 0
        return self._heap_push(h)

    cdef inline void _link(self, int32_t h, int lvl, int digit, int64_t w) noexcept:
        cdef int s = (lvl << _SLOT_BITS) | digit
        cdef uint64_t bit = (<uint64_t>1) << digit
        cdef int32_t head = self._heads[s]
        self._next[h] = head
        self._prev[h] = -1
        if head >= 0:
            self._prev[head] = h
            if (self._svalid[lvl] & bit) and w < self._smin[s]:
                self._smin[s] = w
        else:
            self._occ[lvl] |= bit
            self._levels |= (<uint64_t>1) << lvl
            self._smin[s] = w
            self._svalid[lvl] |= bit
        self._heads[s] = h
        self._loc[h] = <uint16_t>s
        self._lcount[lvl] += 1

    cdef inline void _unlink(self, int32_t h) noexcept:
        cdef int s = self._loc[h]
        cdef int32_t p, n
        cdef int lvl
        cdef uint64_t bit
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
        lvl = s >> _SLOT_BITS
        bit = (<uint64_t>1) << (s & 63)
        self._lcount[lvl] -= 1
        if self._heads[s] < 0:
            self._occ[lvl] &= ~bit
            if not self._occ[lvl]:
                self._levels &= ~((<uint64_t>1) << lvl)
            self._svalid[lvl] &= ~bit
        elif self._when[h] == self._smin[s]:
            # Only losing the minimum makes the cache stale; next_due then opens the slot.
            self._svalid[lvl] &= ~bit

    cdef int _cascade(self, int lvl, int digit, int64_t start) except -1:
        cdef int s = (lvl << _SLOT_BITS) | digit
        cdef int32_t h = self._heads[s], n
        cdef uint64_t bit = (<uint64_t>1) << digit
        cdef Py_ssize_t moved = 0
        self._heads[s] = -1
        self._occ[lvl] &= ~bit
        if not self._occ[lvl]:
            self._levels &= ~((<uint64_t>1) << lvl)
        self._svalid[lvl] &= ~bit
        self._cursor = start
        while h >= 0:
            n = self._next[h]
            self._place(h, self._when[h])
            moved += 1
            h = n
        self._lcount[lvl] -= moved
        return 0

    # -- ready heap, ordered by (when_ms, handle); prev[h] = heap position -------

    cdef inline bint _before(self, int32_t a, int32_t b) noexcept:
        cdef int64_t wa = self._when[a], wb = self._when[b]
        return wa < wb or (wa == wb and a < b)

    cdef int _heap_push(self, int32_t h) except -1:
        cdef Py_ssize_t cap
        cdef void* p
        if self._heap_len == self._heap_cap:
            cap = self._heap_cap * 2 if self._heap_cap else _MIN_CAP
            p = PyMem_Realloc(self._heap, cap * sizeof(int32_t))
            if p == NULL:
                raise MemoryError()
            self._heap = <int32_t*>p
            self._heap_cap = cap
        self._loc[h] = _READY
        self._heap_len += 1
        self._sift_up(self._heap_len - 1, h)
        return 0

    cdef void _sift_up(self, Py_ssize_t i, int32_t h) noexcept:
        cdef int32_t* heap = self._heap
        cdef Py_ssize_t pi
        cdef int32_t p
        while i > 0:
            pi = (i - 1) >> 1
            p = heap[pi]
            if self._before(p, h):
                break
            heap[i] = p
            self._prev[p] = <int32_t>i
            i = pi
        heap[i] = h
        self._prev[h] = <int32_t>i

    cdef void _sift_down(self, Py_ssize_t i, int32_t h) noexcept:
        cdef int32_t* heap = self._heap
        cdef Py_ssize_t n = self._heap_len, c
        cdef int32_t ch
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            ch = heap[c]
            if c + 1 < n and self._before(heap[c + 1], ch):
                c += 1
                ch = heap[c]
            if self._before(h, ch):
                break
            heap[i] = ch
            self._prev[ch] = <int32_t>i
            i = c
        heap[i] = h
        self._prev[h] = <int32_t>i

    cdef void _heap_remove(self, int32_t h) noexcept:
        cdef Py_ssize_t i = self._prev[h]
        cdef int32_t last
        self._heap_len -= 1
        last = self._heap[self._heap_len]
        if last == h:
            return
        self._heap[i] = last
        self._prev[last] = <int32_t>i
        if i > 0 and self._before(last, self._heap[(i - 1) >> 1]):
            self._sift_up(i, last)
        else:
            self._sift_down(i, last)

    # -- public API -----------------------------------------------------------------

    def arm(self, key: object, when_ms: int) -> None:
        """Arm ``key`` to fire at ``when_ms``, replacing any earlier arming."""
        cdef int64_t w = _as_ms("when_ms", when_ms)
        cdef Py_hash_t hv
        cdef Py_ssize_t pos
        cdef int32_t h
        self._ready()
        hv = PyObject_Hash(key)
        h = self._find(key, hv, &pos)
        if h >= 0:
            self._unlink(h)
            self._when[h] = w
            self._place(h, w)
            return
        if (self._count + 1) * 2 > self._tmask + 1:
            self._table_alloc(self._tbits + 1)
            self._find(key, hv, &pos)
        h = self._alloc()
        self._keys[h] = key
        self._hashes[h] = hv
        self._when[h] = w
        self._table[pos] = h
        self._count += 1
        self._place(h, w)

    def cancel(self, key: object) -> bool:
        """Disarm ``key``; True if it was armed."""
        cdef Py_ssize_t pos
        cdef int32_t h
        self._ready()
        h = self._find(key, PyObject_Hash(key), &pos)
        if h < 0:
            return False
        self._unlink(h)
        self._release(h, pos)
        return True

    def when(self, key: object) -> int | None:
        """The time ``key`` is armed for, or None."""
        cdef Py_ssize_t pos
        cdef int32_t h
        self._ready()
        h = self._find(key, PyObject_Hash(key), &pos)
        if h < 0:
            return None
        return self._when[h]

    def pop_due(self, now_ms: int, limit: int | None = None) -> list:
        """Remove and return every ``(key, when_ms)`` with ``when_ms <= now_ms``.

        Sorted by ``when_ms`` (ties by internal handle). With ``limit`` at most
        that many are returned; the rest stay armed (and due).
        """
        cdef int64_t now = _as_ms("now_ms", now_ms)
        cdef int64_t now_tick, w
        cdef Py_ssize_t lim = -1, n = 0
        cdef list out
        cdef tuple item
        cdef int32_t h
        cdef int lvl, digit, shift
        cdef uint64_t start
        self._ready()
        if limit is not None:
            if not PyLong_Check(limit) or PyBool_Check(limit):
                raise TypeError(f"limit must be an int or None, got {type(limit).__name__}")
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
            if limit == 0:
                return []
            if limit < 0x7FFFFFFFFFFF:
                lim = limit
        out = []
        # Only compared against non-negative ticks, so any negative stands in
        # for the floor of a negative now.
        now_tick = now // self._tick if now >= 0 else -1
        while True:
            while self._heap_len:
                h = self._heap[0]
                w = self._when[h]
                if w > now:
                    break
                # Allocating the tuple can run the cycle collector, hence any
                # __del__, hence re-enter this wheel: allocate while h is still
                # consistently in the heap, and re-check before unlinking it.
                item = (self._keys[h], w)
                if not self._heap_len or self._heap[0] != h or self._when[h] != w:
                    continue
                self._heap_remove(h)
                self._release(h, -1)  # the key survives: item holds it
                out.append(item)
                n += 1
                if n == lim:
                    # Stop mid-way: the cursor stays where the last slot was
                    # opened, which is still <= now.
                    return out
            if self._heap_len or not self._levels:
                break
            lvl = __builtin_ctzll(self._levels)
            digit = __builtin_ctzll(self._occ[lvl])
            shift = _SLOT_BITS * (lvl + 1)
            start = ((<uint64_t>self._cursor >> shift) << shift) if shift < 64 else 0
            start |= (<uint64_t>digit) << (_SLOT_BITS * lvl)
            if <int64_t>start > now_tick:
                break
            self._cascade(lvl, digit, <int64_t>start)
        if now_tick > self._cursor:
            # Everything left starts after now_tick, so their placement holds.
            self._cursor = now_tick
        return out

    def next_due(self) -> int | None:
        """The earliest armed ``when_ms`` (exact), or None if nothing is armed."""
        cdef int lvl, digit, shift
        cdef uint64_t start
        while not self._heap_len:
            if not self._levels:
                return None
            lvl = __builtin_ctzll(self._levels)
            digit = __builtin_ctzll(self._occ[lvl])
            if (self._svalid[lvl] >> digit) & 1:
                return self._smin[(lvl << _SLOT_BITS) | digit]
            # The slot lost its minimum: open it early instead of rescanning
            # (see the pure twin); each entry descends a level.
            shift = _SLOT_BITS * (lvl + 1)
            start = ((<uint64_t>self._cursor >> shift) << shift) if shift < 64 else 0
            start |= (<uint64_t>digit) << (_SLOT_BITS * lvl)
            self._cascade(lvl, digit, <int64_t>start)
        return self._when[self._heap[0]]

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: object) -> bool:
        cdef Py_ssize_t pos
        self._ready()
        return self._find(key, PyObject_Hash(key), &pos) >= 0

    def statistics(self) -> WheelStatistics:
        """Counts and shape, for metrics and tests."""
        return WheelStatistics(
            armed=self._count,
            ready=self._heap_len,
            levels=_LEVELS,
            slots_per_level=1 << _SLOT_BITS,
            tick_ms=self._tick,
            cursor_ms=self._cursor * self._tick,
            per_level=tuple([self._lcount[i] for i in range(_LEVELS)]),
            handles=self._hwm,
        )

    def __repr__(self) -> str:
        return f"<TimerWheel armed={self._count} cursor_ms={self._cursor * self._tick} tick_ms={self._tick}>"
