# cython: language_level=3
"""The write coalescer, compiled: the twin of ``dotrio/_kernels/coalesce/_pure.py``.

Same classes, functions, results and errors; the pure module's docstring is
the specification. What is different here is only how: dict and list access
through the C API (borrowed references, no method dispatch), code-point
comparison with ``PyUnicode_Compare``, the ASCII fast path of key checks read
from the string's header, and pending writes kept as the very row tuples that
``executemany`` gets (``(key, data)`` for a put, ``(key,)`` for a delete), so a
commit allocates nothing per row.
"""

from cpython.dict cimport PyDict_Copy, PyDict_GetItem, PyDict_SetItem, PyDict_Size, PyDict_Values
from cpython.list cimport PyList_Append, PyList_GET_SIZE, PyList_GetSlice
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object u)
    Py_ssize_t PyUnicode_GET_LENGTH(object u)
    int PyUnicode_Compare(object a, object b) except? -1
    int PyList_Sort(object lst) except -1

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

# _MAX_KEY_BYTES, _MAX_DEPTH, ... (each NAME of dotrio/_kernels/_constants.py, as _NAME)
# are compile-time constants: setup.py passes them to Cython, so that file is their one source.
MAX_KEY_BYTES = _MAX_KEY_BYTES
MAX_VALUE_BYTES = _MAX_VALUE_BYTES
DEFAULT_CACHE_BUDGET = _DEFAULT_CACHE_BUDGET
ENTRY_OVERHEAD = _ENTRY_OVERHEAD


cdef class _Missing:
    """The answer "this layer does not know the key": look further down."""

    def __repr__(self):
        return "MISSING"

    def __reduce__(self):
        return "MISSING"


MISSING = _Missing()
cdef object _MISSING = MISSING

# The value codec in use (compiled or pure, as dotrio._kernels.codec selected).
from dotrio._kernels.codec import decode as _decode, encode as _encode


cdef class _Ready:
    """An awaitable that is already done and gives None: what storage calls
    that never wait (put) return, at a third of the cost of a coroutine."""

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        raise StopIteration

    def send(self, value):
        raise StopIteration

    def throw(self, typ, val=None, tb=None):
        raise typ if val is None else val

    def close(self):
        pass

    def __repr__(self):
        return "READY"


READY = _Ready()


cpdef str check_key(object key, str what="key"):
    """``key`` if it is a valid storage key, else TypeError / ValueError."""
    cdef Py_ssize_t n
    if type(key) is not str:
        raise TypeError(f"storage {what} must be str, got {type(key).__name__}")
    # Each code point is at most 4 UTF-8 bytes, so short ASCII keys need no encoding.
    if PyUnicode_GET_LENGTH(key) > _MAX_KEY_BYTES // 4 or not PyUnicode_IS_ASCII(key):
        try:
            n = len((<str>key).encode("utf-8"))
        except UnicodeEncodeError as e:
            raise ValueError(f"storage {what} is not valid Unicode (lone surrogate at index {e.start})") from None
        if n > _MAX_KEY_BYTES:
            raise ValueError(f"storage {what} is {n} bytes of UTF-8; the limit is {_MAX_KEY_BYTES}")
    return <str>key


cdef inline bint _valid_ascii_key(object key):
    """The common case, decided from the string header: a short ASCII str."""
    return type(key) is str and PyUnicode_IS_ASCII(key) and PyUnicode_GET_LENGTH(key) <= _MAX_KEY_BYTES


cdef bytes _encode_value(object value):
    cdef object data = _encode(value)
    if len(<bytes>data) > _MAX_VALUE_BYTES:
        raise ValueError(f"value encodes to {len(<bytes>data)} bytes; the limit is {_MAX_VALUE_BYTES} (2 MiB)")
    return <bytes>data


cdef inline Py_ssize_t _cost(str key, object data):
    # A value counts twice: its bytes, and the decoded copy get_value may keep.
    if data is None:
        return _ENTRY_OVERHEAD + PyUnicode_GET_LENGTH(key)
    return _ENTRY_OVERHEAD + PyUnicode_GET_LENGTH(key) + 2 * len(<bytes>data)


import datetime as _dt
cdef tuple _SCALARS = (type(None), bool, int, float, str, bytes, _dt.datetime, _dt.date)

cdef enum:
    _KEEP_NOT = 0       # decode at every get
    _KEEP_SAME = 1      # immutable: every get may return the same object
    _KEEP_DICT = 2      # a dict of immutables: a shallow copy is a full copy
    _KEEP_LIST = 3      # a list of immutables: likewise


cdef bint _immutable(object value, int depth):
    cdef object t = type(value)
    cdef object item
    if t in _SCALARS:
        return True
    if (t is tuple or t is frozenset) and depth < 4:
        for item in value:
            if not _immutable(item, depth + 1):
                return False
        return True
    return False


cdef int _keep_kind(object value):
    cdef object t = type(value)
    cdef object k, v
    if _immutable(value, 0):
        return _KEEP_SAME
    if t is dict:
        for k, v in (<dict>value).items():
            if not _immutable(v, 1):
                return _KEEP_NOT
        return _KEEP_DICT
    if t is list:
        for v in <list>value:
            if not _immutable(v, 1):
                return _KEEP_NOT
        return _KEEP_LIST
    return _KEEP_NOT


cdef inline tuple _pair(object a, object b):
    cdef tuple t = PyTuple_New(2)
    Py_INCREF(a)
    PyTuple_SET_ITEM(t, 0, a)
    Py_INCREF(b)
    PyTuple_SET_ITEM(t, 1, b)
    return t


cdef inline object _row_data(tuple row):
    """The bytes of a put row, None for a delete row."""
    if PyTuple_GET_SIZE(row) == 1:
        return None
    return <object>PyTuple_GET_ITEM(row, 1)


cdef inline tuple _single(object a):
    cdef tuple t = PyTuple_New(1)
    Py_INCREF(a)
    PyTuple_SET_ITEM(t, 0, a)
    return t


cdef Py_ssize_t _bisect(list keys, str x, bint right) except -1:
    """bisect_left (right=False) or bisect_right (right=True) on sorted str keys."""
    cdef Py_ssize_t lo = 0, hi = len(keys), mid
    cdef int c
    while lo < hi:
        mid = (lo + hi) >> 1
        c = PyUnicode_Compare(<object>keys[mid], x)
        if c < 0 or (right and c == 0):
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef class Coalescer:
    """Pending writes, the batch in flight, and a read cache of one object."""

    def __init__(self, cache_budget=DEFAULT_CACHE_BUDGET):
        if type(cache_budget) is not int or cache_budget < 0:
            raise ValueError(f"cache_budget must be an int >= 0, got {cache_budget!r}")
        self._pending = {}
        self._keys = []
        self._unsorted = False
        self._shuffled = False
        self._ndels = 0
        self._inflight = None
        self._cache = {}
        self._kept = {}
        self._cache_bytes = 0
        self._budget = cache_budget

    # ---- writes ----------------------------------------------------------------------

    cdef inline void _note_key(self, str key):
        # Appending a key larger than the last keeps the list sorted: the common
        # case of increasing keys never needs a sort.
        cdef list keys = self._keys
        cdef Py_ssize_t n = len(keys)
        if n and not self._unsorted and PyUnicode_Compare(key, <object>keys[n - 1]) < 0:
            self._unsorted = True
            self._shuffled = True
        PyList_Append(keys, key)

    cdef inline void _put_row(self, str key, tuple row):
        cdef PyObject* old = PyDict_GetItem(self._pending, key)
        if old == NULL:
            self._note_key(key)
        elif PyTuple_GET_SIZE(<tuple>old) == 1:
            self._ndels -= 1
        if PyTuple_GET_SIZE(row) == 1:
            self._ndels += 1
        PyDict_SetItem(self._pending, key, row)

    cpdef put(self, str key, bytes data):
        if key is None or data is None:
            raise TypeError("put() takes a str key and bytes data")
        self._put_row(key, _pair(key, data))

    cpdef delete(self, str key):
        if key is None:
            raise TypeError("delete() takes a str key")
        self._put_row(key, _single(key))

    def put_many(self, items):
        cdef object key, data
        for key, data in items:
            self.put(key, data)

    def put_value(self, key, value):
        """Check ``key``, encode ``value`` (at most 2 MiB) and put it: one call
        for what ``storage.put(key, value)`` does. Nothing is written on error."""
        if not _valid_ascii_key(key):
            check_key(key)
        self._put_row(<str>key, _pair(key, _encode_value(value)))

    def put_values(self, entries):
        """``put_value`` for every pair of the dict ``entries``, all or nothing.
        Returns how many were put."""
        cdef list checked = []
        cdef object key, value
        cdef tuple row
        for key, value in (<dict?>entries).items():
            if not _valid_ascii_key(key):
                check_key(key)
            PyList_Append(checked, _pair(key, _encode_value(value)))
        for row in checked:
            self._put_row(<str>row[0], row)
        return len(checked)

    @property
    def pending(self):
        """How many keys have an uncommitted put or delete."""
        return PyDict_Size(self._pending)

    @property
    def in_flight(self):
        return self._inflight is not None

    # ---- reads -----------------------------------------------------------------------

    cpdef object lookup(self, str key):
        """The newest known state of ``key``: bytes, None (absent) or MISSING
        (unknown here: read the database, then ``remember`` the answer)."""
        cdef PyObject* found
        if key is None:
            raise TypeError("lookup() takes a str key")
        found = PyDict_GetItem(self._pending, key)
        if found == NULL and self._inflight is not None:
            found = PyDict_GetItem(<dict>self._inflight, key)
        if found != NULL:
            return _row_data(<tuple>found)
        found = PyDict_GetItem(self._cache, key)
        if found != NULL:
            return <object>found
        return _MISSING

    def get_value(self, key):
        """The decoded newest value of ``key`` (None if known absent), or
        MISSING if the database must be read (also for keys that are not
        valid: the caller checks those)."""
        cdef PyObject* found
        if type(key) is not str:
            return _MISSING
        cdef object data
        found = PyDict_GetItem(self._pending, key)
        if found == NULL and self._inflight is not None:
            found = PyDict_GetItem(<dict>self._inflight, key)
        if found != NULL:
            data = _row_data(<tuple>found)
            return None if data is None else _decode(data)
        found = PyDict_GetItem(self._cache, key)
        if found == NULL:
            return _MISSING
        if <object>found is None:
            return None
        return self._from_cache(<str>key, <bytes>found)

    cdef object _from_cache(self, str key, bytes data):
        """A fresh copy of a cached value: decoded once, then copied cheaply
        when its shape allows (values must never be shared mutably)."""
        cdef PyObject* kept = PyDict_GetItem(self._kept, key)
        cdef object value
        cdef int kind
        if kept != NULL:
            kind = <int>(<tuple>kept)[0]
            value = (<tuple>kept)[1]
            if kind == _KEEP_SAME:
                return value
            if kind == _KEEP_DICT:
                return PyDict_Copy(value)
            if kind == _KEEP_LIST:
                return PyList_GetSlice(value, 0, PyList_GET_SIZE(value))
            return _decode(data)
        value = _decode(data)
        kind = _keep_kind(value)
        PyDict_SetItem(self._kept, key, (kind, value if kind != _KEEP_NOT else None))
        if kind == _KEEP_DICT:
            return PyDict_Copy(value)
        if kind == _KEEP_LIST:
            return PyList_GetSlice(value, 0, PyList_GET_SIZE(value))
        return value

    def remember(self, str key not None, object data):
        """Cache what the database holds for ``key`` (None: absent)."""
        if data is not None and type(data) is not bytes:
            raise TypeError("remember() takes bytes or None")
        self._cache_set(key, data)

    # ---- commits ---------------------------------------------------------------------

    def take(self):
        """Move the pending writes in flight and return them as rows, in key
        order: ``(puts, deletes)`` for ``executemany``. One batch at a time."""
        cdef dict pending = self._pending
        cdef list keys = self._keys
        cdef list puts
        cdef list dels = []
        cdef object key
        cdef PyObject* row
        if self._inflight is not None:
            raise RuntimeError("a batch is already in flight; settle() or discard() it first")
        if not self._shuffled and not self._ndels:
            # Keys arrived in order and none is deleted: the dict's values, in
            # insertion order, are the rows in key order already.
            puts = PyDict_Values(pending)
        else:
            puts = []
            if self._unsorted:
                PyList_Sort(keys)
            for key in keys:
                row = PyDict_GetItem(pending, key)
                if PyTuple_GET_SIZE(<tuple>row) == 1:
                    PyList_Append(dels, <object>row)
                else:
                    PyList_Append(puts, <object>row)
        self._inflight = pending
        self._pending = {}
        self._keys = []
        self._unsorted = False
        self._shuffled = False
        self._ndels = 0
        return puts, dels

    def settle(self):
        """The batch in flight is committed: it becomes what the cache knows."""
        cdef dict inflight
        cdef object key, row
        if self._inflight is None:
            return
        inflight = <dict>self._inflight
        self._inflight = None
        if PyDict_Size(inflight) <= _SETTLE_COPY_MAX:
            for key, row in inflight.items():
                self._cache_set(<str>key, _row_data(<tuple>row))
            return
        for key in [k for k in self._cache if k in inflight]:
            self._cache_drop(<str>key)

    def discard(self):
        """Drop every uncommitted write: pending and in flight."""
        self._pending = {}
        self._keys = []
        self._unsorted = False
        self._shuffled = False
        self._ndels = 0
        self._inflight = None

    def snapshot(self):
        """The pending writes as they are now, for ``restore`` (a transaction)."""
        return (dict(self._pending), list(self._keys), self._unsorted, self._shuffled, self._ndels)

    def restore(self, snapshot):
        pending, keys, unsorted, shuffled, ndels = snapshot
        self._pending = dict(pending)
        self._keys = list(keys)
        self._unsorted = unsorted
        self._shuffled = shuffled
        self._ndels = ndels

    # ---- list() ----------------------------------------------------------------------

    def merge(self, rows, lo, bint lo_inclusive, hi, bint reverse, Py_ssize_t limit):
        """Merge the database rows of a range scan with the pending writes.

        ``rows`` yields ``(key, value)`` in the scan's direction, restricted to
        the range (``lo`` inclusive or not, ``hi`` exclusive; None = unbounded).
        Pending puts replace or add rows, pending deletes hide them. At most
        ``limit`` rows (``limit < 0``: no limit); ``rows`` is read lazily, so a
        small limit reads little. Nothing may be in flight (the caller waits).
        """
        cdef dict pending = self._pending
        cdef list keys = self._keys
        cdef list order
        cdef list out = []
        cdef Py_ssize_t i, j, n, p = 0
        cdef object it, row, data
        cdef str pk
        cdef int c
        cdef bint take_pending, same
        if self._inflight is not None:
            raise RuntimeError("merge() while a batch is in flight")
        if self._unsorted:
            PyList_Sort(keys)
            self._unsorted = False
        i = 0 if lo is None else _bisect(keys, <str?>lo, not lo_inclusive)
        j = len(keys) if hi is None else _bisect(keys, <str?>hi, False)
        order = keys[i:j] if j > i else []
        if reverse:
            order.reverse()
        if limit == 0:
            return out
        it = iter(rows) if rows is not None else iter(())
        row = next(it, None)
        n = len(order)
        while p < n or row is not None:
            if p < n:
                pk = <str>order[p]
                if row is None:
                    take_pending = True
                    same = False
                else:
                    c = PyUnicode_Compare(pk, (<tuple?>row)[0])
                    same = c == 0
                    take_pending = same or ((c > 0) if reverse else (c < 0))
            else:
                take_pending = False
                same = False
            if take_pending:
                data = <object>PyDict_GetItem(pending, pk)  # the stored row
                p += 1
                if same:
                    row = next(it, None)
                if PyTuple_GET_SIZE(<tuple>data) == 1:
                    continue
                PyList_Append(out, data)
            else:
                PyList_Append(out, _pair((<tuple>row)[0], (<tuple>row)[1]))
                row = next(it, None)
            if len(out) == limit:
                break
        return out

    # ---- cache -----------------------------------------------------------------------

    cdef int _cache_set(self, str key, object data) except -1:
        cdef dict cache = self._cache
        cdef PyObject* old = PyDict_GetItem(cache, key)
        cdef Py_ssize_t cost, budget
        cdef object victim
        if old != NULL:
            self._cache_bytes -= _cost(key, <object>old)
            del cache[key]
            self._kept.pop(key, None)
        cost = _cost(key, data)
        # One value may use at most a quarter of the budget: a big value read
        # once must not flush everything else.
        if cost * 4 > self._budget:
            return 0
        budget = self._budget - cost
        while self._cache_bytes > budget:
            victim = next(iter(cache))
            self._cache_bytes -= _cost(<str>victim, cache.pop(victim))
            self._kept.pop(victim, None)
        PyDict_SetItem(cache, key, data)
        self._cache_bytes += cost
        return 0

    cdef int _cache_drop(self, str key) except -1:
        cdef PyObject* old = PyDict_GetItem(self._cache, key)
        if old != NULL:
            self._cache_bytes -= _cost(key, <object>old)
            del self._cache[key]
            self._kept.pop(key, None)
        return 0

    def clear_cache(self):
        self._cache.clear()
        self._kept.clear()
        self._cache_bytes = 0

    @property
    def cache_bytes(self):
        """Bytes the cache accounts for (keys, values and per-entry overhead)."""
        return self._cache_bytes

    @property
    def cache_entries(self):
        return PyDict_Size(self._cache)

    @property
    def cache_budget(self):
        return self._budget
