# The compiled write coalescer's C-level interface, so that other Cython code
# (a future compiled storage front end) can call it without Python dispatch.

cdef class Coalescer:
    cdef dict _pending          # key -> row: (key, encoded bytes) put, (key,) delete
    cdef list _keys             # the pending keys; sorted unless _unsorted
    cdef bint _unsorted
    cdef bint _shuffled         # the pending dict's insertion order is not key order
    cdef Py_ssize_t _ndels      # how many pending rows are deletes
    cdef object _inflight       # dict like _pending (the batch being committed), or None
    cdef dict _cache            # key -> committed bytes, or None (known absent)
    cdef dict _kept             # key -> (kind, decoded value) of a cached value read once
    cdef Py_ssize_t _cache_bytes
    cdef Py_ssize_t _budget

    cdef inline void _note_key(self, str key)
    cdef inline void _put_row(self, str key, tuple row)
    cdef int _cache_set(self, str key, object data) except -1
    cdef int _cache_drop(self, str key) except -1
    cdef object _from_cache(self, str key, bytes data)
    cpdef object lookup(self, str key)
    cpdef put(self, str key, bytes data)
    cpdef delete(self, str key)
