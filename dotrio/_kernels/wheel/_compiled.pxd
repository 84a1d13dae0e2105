# The compiled timer wheel's C-level interface, so that other Cython code (a
# future compiled alarm loop) can cimport TimerWheel and call it without
# Python dispatch. Cython reads this file first when compiling _compiled.pyx.
#
# _LEVELS and _SLOT_BITS are compile-time constants from
# dotrio/_kernels/_constants.py (setup.py passes them to Cython).

cimport cython
from libc.stdint cimport int32_t, int64_t, uint16_t, uint64_t

cdef enum:
    _NSLOTS = _LEVELS << _SLOT_BITS
    _READY = 0xFFFE
    _FREE = 0xFFFF
    _MIN_CAP = 64
    _MIN_TBITS = 6
    _MAX_HANDLES = 0x7FFFFFFF


@cython.final
@cython.no_gc_clear
cdef class TimerWheel:
    cdef int64_t _tick
    cdef int64_t _cursor
    cdef list _keys
    # Per-handle rows.
    cdef int64_t* _when
    cdef int32_t* _next
    cdef int32_t* _prev
    cdef uint16_t* _loc
    cdef Py_hash_t* _hashes
    cdef Py_ssize_t _hwm
    cdef Py_ssize_t _cap
    cdef int32_t _free
    cdef Py_ssize_t _count
    # key -> handle table.
    cdef int32_t* _table
    cdef int _tbits
    cdef Py_ssize_t _tmask
    # Ready heap of handles.
    cdef int32_t* _heap
    cdef Py_ssize_t _heap_len
    cdef Py_ssize_t _heap_cap
    # Wheel.
    cdef uint64_t _levels
    cdef int32_t _heads[_NSLOTS]
    cdef int64_t _smin[_NSLOTS]
    cdef uint64_t _occ[_LEVELS]
    cdef uint64_t _svalid[_LEVELS]
    cdef Py_ssize_t _lcount[_LEVELS]

    cdef void _free_storage(self) noexcept
    cdef inline int _ready(self) except -1
    cdef int _grow_rows(self) except -1
    cdef int32_t _alloc(self) except -1
    cdef int _release(self, int32_t h, Py_ssize_t pos) except -1
    cdef int _table_alloc(self, int bits) except -1
    cdef inline Py_ssize_t _home(self, Py_hash_t hv) noexcept nogil
    cdef int32_t _find(self, object key, Py_hash_t hv, Py_ssize_t* pos) except -2
    cdef Py_ssize_t _table_pos_of(self, int32_t h) noexcept
    cdef void _table_delete_at(self, Py_ssize_t i) noexcept
    cdef inline int _place(self, int32_t h, int64_t w) except -1
    cdef inline void _link(self, int32_t h, int lvl, int digit, int64_t w) noexcept
    cdef inline void _unlink(self, int32_t h) noexcept
    cdef int _cascade(self, int lvl, int digit, int64_t start) except -1
    cdef inline bint _before(self, int32_t a, int32_t b) noexcept
    cdef int _heap_push(self, int32_t h) except -1
    cdef void _sift_up(self, Py_ssize_t i, int32_t h) noexcept
    cdef void _sift_down(self, Py_ssize_t i, int32_t h) noexcept
    cdef void _heap_remove(self, int32_t h) noexcept
