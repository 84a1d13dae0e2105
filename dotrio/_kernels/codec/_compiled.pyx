# cython: language_level=3
"""dotrio's value codec, compiled twin of ``dotrio._kernels.codec._pure``.

The pure module documents the format and the rules; this one must produce the
same bytes, accept and reject the same inputs and raise the same messages
(tests/test_codec.py checks both against each other).

Where this differs in *how*, it is for speed:

* encode writes into a growable PyMem buffer and encodes str to UTF-8 itself
  (ASCII strs are copied as they are; no temporary bytes, no UTF-8 cache left
  on the caller's strs);
* the path of a failure is rebuilt from a C stack of (container, index) kept
  during the walk, instead of exceptions unwinding through every level;
* one encoder state (buffer, string table, stack) is reused between calls; a
  nested call (a tzinfo or a finalizer calling encode) gets a fresh one;
* decode shares short strs (up to 32 UTF-8 bytes) between calls through a
  bounded, direct-mapped cache of 1,024 entries: the same dict keys come back
  on every get, and reusing them saves allocating, decoding and hashing them
  (the cache keeps those few strs alive for the life of the process).
"""

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_Copy, PyDict_GetItem, PyDict_Next, PyDict_Size
from cpython.exc cimport PyErr_Clear, PyErr_ExceptionMatches
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_GetSlice, PyList_New, PyList_SET_ITEM
from cpython.long cimport (PyLong_AsLongLongAndOverflow, PyLong_AsSsize_t,
                           PyLong_AsUnsignedLongLong, PyLong_FromLongLong,
                           PyLong_FromSsize_t, PyLong_FromUnsignedLongLong)
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.set cimport PyFrozenSet_New, PySet_New
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from cpython cimport datetime as cdt
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, memset

import datetime as _dt

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    /* Whether str s is ready to read (always, since 3.12). */
    static int dotrio_ready(PyObject *s) {
    #if PY_VERSION_HEX < 0x030C0000
        return PyUnicode_READY(s);
    #else
        (void)s; return 0;
    #endif
    }

    /* Index of the first surrogate code point in s, or -1. s is ready. */
    static Py_ssize_t dotrio_first_surrogate(PyObject *s) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(s), i;
        int kind = PyUnicode_KIND(s);
        if (kind == PyUnicode_2BYTE_KIND) {
            const Py_UCS2 *d = PyUnicode_2BYTE_DATA(s);
            for (i = 0; i < n; i++) if (d[i] >= 0xD800 && d[i] <= 0xDFFF) return i;
        } else if (kind == PyUnicode_4BYTE_KIND) {
            const Py_UCS4 *d = PyUnicode_4BYTE_DATA(s);
            for (i = 0; i < n; i++) if (d[i] >= 0xD800 && d[i] <= 0xDFFF) return i;
        }
        return -1;
    }

    /* UTF-8 size of a non-ASCII, surrogate-free, ready str. */
    static Py_ssize_t dotrio_utf8_size(PyObject *s) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(s), i, size = n;
        int kind = PyUnicode_KIND(s);
        if (kind == PyUnicode_1BYTE_KIND) {
            const Py_UCS1 *d = PyUnicode_1BYTE_DATA(s);
            for (i = 0; i < n; i++) size += d[i] >> 7;
        } else if (kind == PyUnicode_2BYTE_KIND) {
            const Py_UCS2 *d = PyUnicode_2BYTE_DATA(s);
            for (i = 0; i < n; i++) size += (d[i] >= 0x80) + (d[i] >= 0x800);
        } else {
            const Py_UCS4 *d = PyUnicode_4BYTE_DATA(s);
            for (i = 0; i < n; i++)
                size += (d[i] >= 0x80) + (d[i] >= 0x800) + (d[i] >= 0x10000);
        }
        return size;
    }

    /* Writes the UTF-8 of a non-ASCII, surrogate-free, ready str. */
    static void dotrio_utf8_write(PyObject *s, unsigned char *out) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(s), i;
        int kind = PyUnicode_KIND(s);
        const void *data = PyUnicode_DATA(s);
        for (i = 0; i < n; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c < 0x80) {
                *out++ = (unsigned char)c;
            } else if (c < 0x800) {
                *out++ = (unsigned char)(0xC0 | (c >> 6));
                *out++ = (unsigned char)(0x80 | (c & 0x3F));
            } else if (c < 0x10000) {
                *out++ = (unsigned char)(0xE0 | (c >> 12));
                *out++ = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
                *out++ = (unsigned char)(0x80 | (c & 0x3F));
            } else {
                *out++ = (unsigned char)(0xF0 | (c >> 18));
                *out++ = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
                *out++ = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
                *out++ = (unsigned char)(0x80 | (c & 0x3F));
            }
        }
    }

    /* Proleptic Gregorian ordinals, as date.toordinal()/fromordinal(). */
    static const int dotrio_days_before_month[13] =
        {0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    static const int dotrio_days_in_month[13] =
        {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    static long dotrio_ymd_to_ord(int y, int m, int d) {
        long y1 = y - 1;
        int leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        return y1 * 365 + y1 / 4 - y1 / 100 + y1 / 400
            + dotrio_days_before_month[m] + (m > 2 && leap) + d;
    }

    /* A port of CPython's ord_to_ymd; ordinal is 1..3652059. */
    static void dotrio_ord_to_ymd(long ordinal, int *year, int *month, int *day) {
        long n, n1, n4, n100, n400;
        int leap, preceding;
        --ordinal;
        n400 = ordinal / 146097; n = ordinal % 146097;
        *year = (int)(n400 * 400 + 1);
        n100 = n / 36524; n = n % 36524;
        n4 = n / 1461; n = n % 1461;
        n1 = n / 365; n = n % 365;
        *year += (int)(n100 * 100 + n4 * 4 + n1);
        if (n1 == 4 || n100 == 4) {
            *year -= 1; *month = 12; *day = 31;
            return;
        }
        leap = n1 == 3 && (n4 != 24 || n100 == 3);
        *month = (int)((n + 50) >> 5);
        preceding = dotrio_days_before_month[*month] + (*month > 2 && leap);
        if (preceding > n) {
            *month -= 1;
            preceding -= dotrio_days_in_month[*month] + (*month == 2 && leap);
        }
        *day = (int)(n - preceding + 1);
    }

    /* Equality of two ready strs (their representation is canonical). */
    static int dotrio_str_eq(PyObject *a, PyObject *b) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(a);
        int kind = PyUnicode_KIND(a);
        return n == PyUnicode_GET_LENGTH(b) && kind == PyUnicode_KIND(b)
            && memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)n * kind) == 0;
    }

    /* A dict with room for n items: building one by insertion resizes it
       log2(n) times. The presizing call is private API, gone from 3.13. */
    static PyObject *dotrio_dict_presized(Py_ssize_t n) {
    #if PY_VERSION_HEX < 0x030D0000
        return _PyDict_NewPresized(n);
    #else
        (void)n; return PyDict_New();
    #endif
    }

    /* Decoded short strs, shared between decodes (a str is immutable): the
       same dict keys come back on every call, and reusing them saves their
       allocation, UTF-8 decoding, hashing (the hash stays cached in the str)
       and freeing. Direct-mapped and bounded: a collision just replaces. */
    #define DOTRIO_SCACHE_SIZE 1024
    #define DOTRIO_SCACHE_MAXLEN 32
    typedef struct {
        PyObject *s;
        Py_ssize_t len;
        unsigned char bytes[DOTRIO_SCACHE_MAXLEN];
    } dotrio_scache_entry;
    static dotrio_scache_entry dotrio_scache[DOTRIO_SCACHE_SIZE];

    /* A new reference to the str of UTF-8 p[0:k] (1 <= k <= MAXLEN), or NULL
       with an exception set (UnicodeDecodeError for invalid UTF-8). */
    static PyObject *dotrio_short_str(const unsigned char *p, Py_ssize_t k) {
        uint64_t h = (uint64_t)k * 0x9E3779B97F4A7C15ULL, w;
        Py_ssize_t i = 0;
        dotrio_scache_entry *e;
        PyObject *s, *old;
        for (; i + 8 <= k; i += 8) {
            memcpy(&w, p + i, 8);
            h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
            h ^= h >> 32;
        }
        if (i < k) {
            w = 0;
            memcpy(&w, p + i, (size_t)(k - i));
            h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
        }
        h ^= h >> 29;
        e = &dotrio_scache[h & (DOTRIO_SCACHE_SIZE - 1)];
        if (e->s != NULL && e->len == k && memcmp(e->bytes, p, (size_t)k) == 0) {
            Py_INCREF(e->s);
            return e->s;
        }
        s = PyUnicode_DecodeUTF8((const char *)p, k, NULL);
        if (s == NULL) return NULL;
        old = e->s;
        Py_INCREF(s);
        e->s = s;
        e->len = k;
        memcpy(e->bytes, p, (size_t)k);
        Py_XDECREF(old);  /* a str: freeing it runs no Python code */
        return s;
    }

    /* Returns -1 so that Cython, calling it as `except -1`, propagates the
       exception already set (after a C-API call that is not checked). */
    static int dotrio_propagate(void) { return -1; }
    """
    int dotrio_ready(object s) except -1
    Py_ssize_t dotrio_first_surrogate(object s)
    Py_ssize_t dotrio_utf8_size(object s)
    void dotrio_utf8_write(object s, unsigned char *out)
    long dotrio_ymd_to_ord(int y, int m, int d)
    void dotrio_ord_to_ymd(long ordinal, int *year, int *month, int *day)
    int dotrio_propagate() except -1
    bint dotrio_str_eq(PyObject *a, PyObject *b)
    dict dotrio_dict_presized(Py_ssize_t n)
    PyObject *dotrio_short_str(const unsigned char *p, Py_ssize_t k)
    enum: DOTRIO_SCACHE_MAXLEN

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)
    void *PyUnicode_DATA(object s)
    int PyFloat_Pack8(double x, char *p, int le) except -1
    double PyFloat_Unpack8(const char *p, int le) except? -1.0
    double PyFloat_AS_DOUBLE(object f)
    object PyFloat_FromDouble(double v)
    char *PyBytes_AS_STRING(object b)
    Py_ssize_t PyBytes_GET_SIZE(object b)
    # Unchecked on purpose: a failure is inspected (corrupt input) first.
    PyObject *PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)
    int PyDict_SetItem_unchecked "PyDict_SetItem"(object d, object k, object v)
    int PySet_Add_unchecked "PySet_Add"(object s, object k)

cdt.import_datetime()

__all__ = ["MAX_DEPTH", "FORMAT_VERSION", "encode", "decode", "copy"]

# _MAX_KEY_BYTES, _MAX_DEPTH, ... (each NAME of dotrio/_kernels/_constants.py, as _NAME)
# are compile-time constants: setup.py passes them to Cython, so that file is their one source.
cdef enum:
    # Tags (see dotrio/_kernels/codec/_pure.py).
    T_NONE = 0x00
    T_FALSE = 0x01
    T_TRUE = 0x02
    T_INT_POS = 0x03
    T_INT_NEG = 0x04
    T_BIGINT = 0x05
    T_FLOAT = 0x06
    T_STR = 0x07
    T_BYTES = 0x08
    T_LIST = 0x09
    T_TUPLE = 0x0A
    T_DICT = 0x0B
    T_SET = 0x0C
    T_FROZENSET = 0x0D
    T_DATE = 0x0E
    T_DATETIME = 0x0F
    T_REF = 0x10
    T_FIXSTR = 0x20
    T_FIXREF = 0x40
    T_FIXLIST = 0x60
    T_FIXDICT = 0x70
    T_FIXINT = 0x80
    MEMO_MIN = 2
    MEMO_MAX = 64
    MAX_ORDINAL = 3652059
    # Step kinds of the walk's path (see _Fail in the pure twin).
    S_ITEM = 0   # list or tuple item: [i]
    S_VALUE = 1  # dict value: [key]
    S_KEY = 2    # dict key: <key #i>
    S_SET = 3    # set or frozenset item: <item #i>
    # The encoder's string table: slots (a power of two) and entries.
    MEMO_SLOTS = 256
    MEMO_ENTRIES = 128

MAX_DEPTH = _MAX_DEPTH
FORMAT_VERSION = _FORMAT_VERSION

cdef int64_t DAY_US = 86400000000LL
cdef object _U64 = 1 << 64
cdef object _NEG_U64 = -(1 << 64)
cdef object _datetime = _dt.datetime
cdef object _date = _dt.date
cdef object _UTC = _dt.timezone.utc
cdef object _timezone_type = _dt.timezone
cdef object _timedelta = _dt.timedelta


# ---------------------------------------------------------------- errors
# The same messages as dotrio._kernels.codec._pure builds; keep the two in step.

_SUPPORTED = (
    "None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset, "
    "datetime, date"
)
_BASES = (
    (_dt.datetime, "datetime"), (_dt.date, "date"), (bool, "bool"),
    (int, "int"), (float, "float"), (str, "str"), (bytes, "bytes"),
    (list, "list"), (tuple, "tuple"), (dict, "dict"), (set, "set"),
    (frozenset, "frozenset"),
)
_MAX_PATH_STEPS = 16
_MAX_KEY_REPR = 40


def _short_repr(key):
    r = repr(key)
    return r if len(r) <= _MAX_KEY_REPR else r[: _MAX_KEY_REPR - 3] + "..."


def _format_step(step):
    kind, x = step
    if kind == "i":
        return f"[{x}]"
    if kind == "v":
        return f"[{_short_repr(x)}]"
    if kind == "k":
        return f"<key #{x}>"
    return f"<item #{x}>"


def _format_path(steps):
    if len(steps) > _MAX_PATH_STEPS:
        half = _MAX_PATH_STEPS // 2
        return (
            "value"
            + "".join(map(_format_step, steps[:half]))
            + "..."
            + "".join(map(_format_step, steps[-half:]))
        )
    return "value" + "".join(map(_format_step, steps))


def _error(kind, detail, steps):
    path = _format_path(steps)
    if kind == "type":
        t = detail
        msg = f"cannot store value of type {t.__name__!r} at {path}; "
        if t is bytearray or t is memoryview:
            return TypeError(msg + "use bytes")
        for base, name in _BASES:
            if issubclass(t, base):
                return TypeError(
                    msg + f"only exact types are stored, not subclasses: "
                    f"convert it to {name}"
                )
        return TypeError(msg + "supported: " + _SUPPORTED)
    if kind == "str":
        reason, index = detail
        return ValueError(
            f"cannot store str at {path}: not valid UTF-8 ({reason} at index {index})"
        )
    if kind == "cycle":
        return ValueError(f"value contains itself at {path}")
    return ValueError(f"value nests deeper than MAX_DEPTH={_MAX_DEPTH} at {path}")


cdef inline object _corrupt(str what):
    return ValueError("corrupt stored value: " + what)


# ---------------------------------------------------------------- walk state


@cython.final
cdef class _State:
    """What encode and copy keep while they walk a value."""

    cdef unsigned char *buf
    cdef Py_ssize_t len
    cdef Py_ssize_t cap
    # The string table, in C because a dict (cleared per call) and a PyLong
    # per entry cost more than the rest of encode: entries in order (owned
    # references, with their hashes) and an open-addressing index of them.
    cdef PyObject **mstr
    cdef Py_hash_t *mhash
    cdef Py_ssize_t nmemo
    cdef Py_ssize_t mentries
    cdef Py_ssize_t *mslots
    cdef Py_ssize_t mmask
    cdef tuple passthrough
    cdef bint busy
    # The containers enclosing the current value, level by level, and where
    # in each the walk is: enough to name the path of a failure, and to tell
    # a cycle from mere depth once MAX_DEPTH is reached.
    cdef PyObject *stk_obj[_MAX_DEPTH]
    cdef Py_ssize_t stk_idx[_MAX_DEPTH]
    cdef unsigned char stk_kind[_MAX_DEPTH]

    def __cinit__(self):
        self.cap = 4096
        self.buf = <unsigned char *>PyMem_Malloc(self.cap)
        if self.buf == NULL:
            raise MemoryError()
        self.memo_alloc()

    def __dealloc__(self):
        self.memo_clear()
        PyMem_Free(self.buf)
        PyMem_Free(self.mstr)
        PyMem_Free(self.mhash)
        PyMem_Free(self.mslots)

    cdef int memo_alloc(self) except -1:
        self.mentries = MEMO_ENTRIES
        self.mmask = MEMO_SLOTS - 1
        self.mstr = <PyObject **>PyMem_Malloc(MEMO_ENTRIES * sizeof(PyObject *))
        self.mhash = <Py_hash_t *>PyMem_Malloc(MEMO_ENTRIES * sizeof(Py_hash_t))
        self.mslots = <Py_ssize_t *>PyMem_Malloc(MEMO_SLOTS * sizeof(Py_ssize_t))
        if self.mstr == NULL or self.mhash == NULL or self.mslots == NULL:
            raise MemoryError()
        memset(self.mslots, 0xFF, MEMO_SLOTS * sizeof(Py_ssize_t))  # all -1
        return 0

    cdef void memo_clear(self) noexcept:
        cdef Py_ssize_t i
        if self.nmemo == 0:
            return
        for i in range(self.nmemo):
            Py_DECREF(<object>self.mstr[i])
        self.nmemo = 0
        cdef Py_ssize_t *slots
        cdef void *p
        if self.mmask + 1 > 8 * MEMO_SLOTS:
            # Do not keep a big table between calls; if memory is short, keep
            # the big one (entries must stay at most half the slots).
            slots = <Py_ssize_t *>PyMem_Malloc(MEMO_SLOTS * sizeof(Py_ssize_t))
            if slots != NULL:
                PyMem_Free(self.mslots)
                self.mslots = slots
                self.mmask = MEMO_SLOTS - 1
                p = PyMem_Realloc(self.mstr, MEMO_ENTRIES * sizeof(PyObject *))
                if p != NULL:
                    self.mstr = <PyObject **>p
                p = PyMem_Realloc(self.mhash, MEMO_ENTRIES * sizeof(Py_hash_t))
                if p != NULL:
                    self.mhash = <Py_hash_t *>p
                self.mentries = MEMO_ENTRIES
        memset(self.mslots, 0xFF, (self.mmask + 1) * sizeof(Py_ssize_t))

    cdef int memo_grow(self) except -1:
        """Doubles entries and slots (at most half the slots are used)."""
        cdef Py_ssize_t n = self.mentries * 2 if self.mentries else MEMO_ENTRIES
        cdef Py_ssize_t nslots = 2 * n, i, j
        cdef PyObject **mstr = <PyObject **>PyMem_Realloc(self.mstr, n * sizeof(PyObject *))
        if mstr == NULL:
            raise MemoryError()
        self.mstr = mstr
        cdef Py_hash_t *mhash = <Py_hash_t *>PyMem_Realloc(self.mhash, n * sizeof(Py_hash_t))
        if mhash == NULL:
            raise MemoryError()
        self.mhash = mhash
        cdef Py_ssize_t *slots = <Py_ssize_t *>PyMem_Malloc(nslots * sizeof(Py_ssize_t))
        if slots == NULL:
            raise MemoryError()
        memset(slots, 0xFF, nslots * sizeof(Py_ssize_t))
        for i in range(self.nmemo):
            j = <size_t>self.mhash[i] & (nslots - 1)
            while slots[j] >= 0:
                j = (j + 1) & (nslots - 1)
            slots[j] = i
        PyMem_Free(self.mslots)
        self.mslots = slots
        self.mmask = nslots - 1
        self.mentries = n
        return 0

    cdef void reset(self):
        self.len = 0
        self.memo_clear()
        self.passthrough = None
        if self.cap > (1 << 20):
            # Do not keep a big value's buffer alive between calls.
            PyMem_Free(self.buf)
            self.cap = 4096
            self.buf = <unsigned char *>PyMem_Malloc(self.cap)
            if self.buf == NULL:
                self.cap = 0
        self.busy = False

    # -- failures (cold)

    cdef list _steps(self, Py_ssize_t levels):
        cdef list steps = []
        cdef Py_ssize_t level, idx, j
        for level in range(levels):
            idx = self.stk_idx[level]
            kind = self.stk_kind[level]
            if kind == S_ITEM:
                steps.append(("i", idx))
            elif kind == S_KEY:
                steps.append(("k", idx))
            elif kind == S_SET:
                steps.append(("s", idx))
            else:
                for j, key in enumerate(<dict>self.stk_obj[level]):
                    if j == idx:
                        steps.append(("v", key))
                        break
        return steps

    cdef int fail(self, str kind, object detail, Py_ssize_t levels) except -1:
        raise _error(kind, detail, self._steps(levels))

    cdef int too_deep(self, object v) except -1:
        # Cycles are only looked for here, once MAX_DEPTH is reached: every
        # cycle gets here, and acyclic values pay nothing for the check.
        cdef Py_ssize_t j, i
        cdef PyObject *cur
        for j in range(1, _MAX_DEPTH + 1):
            cur = <PyObject *>v if j == _MAX_DEPTH else self.stk_obj[j]
            for i in range(j):
                if self.stk_obj[i] == cur:
                    return self.fail("cycle", None, j)
        return self.fail("deep", None, _MAX_DEPTH)

    # -- buffer

    cdef int grow(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap = self.cap * 2
        if cap < self.len + n:
            cap = self.len + n
        cdef unsigned char *buf = <unsigned char *>PyMem_Realloc(self.buf, cap)
        if buf == NULL:
            raise MemoryError()
        self.buf = buf
        self.cap = cap
        return 0

    cdef inline int reserve(self, Py_ssize_t n) except -1:
        if self.len + n > self.cap:
            return self.grow(n)
        return 0

    cdef inline int put1(self, unsigned char b) except -1:
        if self.len + 1 > self.cap:
            self.grow(1)
        self.buf[self.len] = b
        self.len += 1
        return 0

    cdef inline int put_varint(self, uint64_t n) except -1:
        if self.len + 10 > self.cap:
            self.grow(10)
        cdef unsigned char *p = self.buf + self.len
        while n >= 0x80:
            p[0] = <unsigned char>((n & 0x7F) | 0x80)
            p += 1
            n >>= 7
        p[0] = <unsigned char>n
        self.len = (p + 1) - self.buf
        return 0

    cdef inline int put_tag_varint(self, unsigned char tag, uint64_t n) except -1:
        if self.len + 11 > self.cap:
            self.grow(11)
        self.buf[self.len] = tag
        self.len += 1
        return self.put_varint(n)

    # -- encode

    cdef int enc(self, object v, Py_ssize_t depth) except -1:
        cdef type t = type(v)
        cdef Py_ssize_t n
        if t is str:
            return self.enc_str(v, depth)
        if t is int:
            return self.enc_int(v)
        if t is dict:
            return self.enc_dict(<dict>v, depth)
        if t is list:
            return self.enc_list(<list>v, depth)
        if t is float:
            self.reserve(9)
            self.buf[self.len] = T_FLOAT
            PyFloat_Pack8(PyFloat_AS_DOUBLE(v), <char *>self.buf + self.len + 1, 1)
            self.len += 9
            return 0
        if v is None:
            return self.put1(T_NONE)
        if t is bool:
            return self.put1(T_TRUE if v is True else T_FALSE)
        if t is tuple or t is set or t is frozenset:
            return self.enc_items(v, t, depth)
        if t is bytes:
            n = PyBytes_GET_SIZE(v)
            self.put_tag_varint(T_BYTES, n)
            self.reserve(n)
            memcpy(self.buf + self.len, PyBytes_AS_STRING(v), n)
            self.len += n
            return 0
        if t is _datetime:
            return self.enc_datetime(v)
        if t is _date:
            return self.put_tag_varint(
                T_DATE,
                dotrio_ymd_to_ord(cdt.date_year(v), cdt.date_month(v), cdt.date_day(v)),
            )
        return self.fail("type", t, depth)

    cdef int enc_str(self, object s, Py_ssize_t depth) except -1:
        dotrio_ready(s)
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s), size, bad, i, j
        cdef Py_hash_t h
        if MEMO_MIN <= n <= MEMO_MAX:
            h = hash(s)  # cached in the str after the first time
            i = <size_t>h & self.mmask
            while True:
                j = self.mslots[i]
                if j < 0:
                    break
                if self.mstr[j] == <PyObject *>s or (
                        self.mhash[j] == h and dotrio_str_eq(self.mstr[j], <PyObject *>s)):
                    if j < 32:
                        return self.put1(T_FIXREF + j)
                    return self.put_tag_varint(T_REF, j)
                i = (i + 1) & self.mmask
            if self.nmemo == self.mentries:
                self.memo_grow()
                i = <size_t>h & self.mmask
                while self.mslots[i] >= 0:
                    i = (i + 1) & self.mmask
            self.mslots[i] = self.nmemo
            Py_INCREF(s)  # owned: nothing may free it while the table holds it
            self.mstr[self.nmemo] = <PyObject *>s
            self.mhash[self.nmemo] = h
            self.nmemo += 1
        if PyUnicode_IS_ASCII(s):
            size = n
        else:
            bad = dotrio_first_surrogate(s)
            if bad >= 0:
                return self.fail("str", ("surrogates not allowed", bad), depth)
            size = dotrio_utf8_size(s)
        if size < 32:
            self.reserve(1 + size)
            self.buf[self.len] = T_FIXSTR + size
            self.len += 1
        else:
            self.put_tag_varint(T_STR, size)
            self.reserve(size)
        if size == n:
            memcpy(self.buf + self.len, PyUnicode_DATA(s), size)
        else:
            dotrio_utf8_write(s, self.buf + self.len)
        self.len += size
        return 0

    cdef int enc_int(self, object v) except -1:
        cdef int overflow = 0
        cdef long long x = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow == 0:
            if x >= 0:
                if x < 128:
                    return self.put1(T_FIXINT + <unsigned char>x)
                return self.put_tag_varint(T_INT_POS, <uint64_t>x)
            return self.put_tag_varint(T_INT_NEG, <uint64_t>(-1 - x))
        if overflow > 0:
            if v < _U64:
                return self.put_tag_varint(T_INT_POS, PyLong_AsUnsignedLongLong(v))
        elif v >= _NEG_U64:
            return self.put_tag_varint(T_INT_NEG, PyLong_AsUnsignedLongLong(~v))
        cdef Py_ssize_t k = ((v if v >= 0 else ~v).bit_length() + 8) // 8
        data = v.to_bytes(k, "little", signed=True)
        self.put_tag_varint(T_BIGINT, k)
        self.reserve(k)
        memcpy(self.buf + self.len, PyBytes_AS_STRING(data), k)
        self.len += k
        return 0

    cdef int enc_datetime(self, object v) except -1:
        cdef int flags = cdt.datetime_fold(v)
        cdef int unit = 0
        cdef int64_t us = 0
        cdef uint64_t zigzag = 0
        cdef bint aware = False
        if cdt.datetime_tzinfo(v) is not None:
            off = v.utcoffset()
            if off is not None:
                aware = True
                us = ((<int64_t>cdt.timedelta_days(off) * 86400
                       + cdt.timedelta_seconds(off)) * 1000000
                      + cdt.timedelta_microseconds(off))
                if us % 60000000 == 0:
                    us //= 60000000
                elif us % 1000000 == 0:
                    unit = 1
                    us //= 1000000
                else:
                    unit = 2
                flags |= 2 | (unit << 2)
                zigzag = <uint64_t>(us * 2) if us >= 0 else <uint64_t>(-2 * us - 1)
        self.reserve(2)
        self.buf[self.len] = T_DATETIME
        self.buf[self.len + 1] = <unsigned char>flags
        self.len += 2
        self.put_varint(dotrio_ymd_to_ord(
            cdt.datetime_year(v), cdt.datetime_month(v), cdt.datetime_day(v)))
        self.put_varint(
            ((<uint64_t>cdt.datetime_hour(v) * 60 + cdt.datetime_minute(v)) * 60
             + cdt.datetime_second(v)) * 1000000 + cdt.datetime_microsecond(v))
        if aware:
            self.put_varint(zigzag)
        return 0

    cdef int enc_list(self, list v, Py_ssize_t depth) except -1:
        cdef Py_ssize_t n = PyList_GET_SIZE(v), i
        if depth >= _MAX_DEPTH:
            return self.too_deep(v)
        self.stk_obj[depth] = <PyObject *>v
        self.stk_kind[depth] = S_ITEM
        if n < 16:
            self.put1(T_FIXLIST + n)
        else:
            self.put_tag_varint(T_LIST, n)
        for i in range(n):
            if i >= PyList_GET_SIZE(v):
                raise RuntimeError("list changed size during encode")
            # An owned reference, as for dicts below.
            item = <object>PyList_GET_ITEM(v, i)
            self.stk_idx[depth] = i
            self.enc(item, depth + 1)
        return 0

    cdef int enc_dict(self, dict v, Py_ssize_t depth) except -1:
        cdef Py_ssize_t n = PyDict_Size(v), i = 0, pos = 0
        cdef PyObject *pk
        cdef PyObject *pv
        if depth >= _MAX_DEPTH:
            return self.too_deep(v)
        self.stk_obj[depth] = <PyObject *>v
        if n < 16:
            self.put1(T_FIXDICT + n)
        else:
            self.put_tag_varint(T_DICT, n)
        while PyDict_Next(v, &pos, &pk, &pv):
            # Owned references: only a tzinfo could run code meanwhile, but
            # then a borrowed one could be freed under us.
            key = <object>pk
            item = <object>pv
            self.stk_idx[depth] = i
            self.stk_kind[depth] = S_KEY
            self.enc(key, depth + 1)
            self.stk_kind[depth] = S_VALUE
            self.enc(item, depth + 1)
            i += 1
            if PyDict_Size(v) != n:
                raise RuntimeError("dict changed size during encode")
        if i != n:
            raise RuntimeError("dict changed size during encode")
        return 0

    cdef int enc_items(self, object v, type t, Py_ssize_t depth) except -1:
        """A tuple, set or frozenset."""
        cdef Py_ssize_t n = len(v), i
        if depth >= _MAX_DEPTH:
            return self.too_deep(v)
        self.stk_obj[depth] = <PyObject *>v
        if t is tuple:
            self.stk_kind[depth] = S_ITEM
            self.put_tag_varint(T_TUPLE, n)
            for i in range(n):
                self.stk_idx[depth] = i
                self.enc(<object>PyTuple_GET_ITEM(v, i), depth + 1)
            return 0
        self.stk_kind[depth] = S_SET
        self.put_tag_varint(T_SET if t is set else T_FROZENSET, n)
        i = 0
        for item in v:
            if i == n:
                raise RuntimeError("set changed size during encode")
            self.stk_idx[depth] = i
            self.enc(item, depth + 1)
            i += 1
        if i != n:
            raise RuntimeError("set changed size during encode")
        return 0

    # -- copy

    cdef object cp(self, object v, Py_ssize_t depth):
        cdef type t = type(v)
        cdef Py_ssize_t bad
        if t is str:
            dotrio_ready(v)
            if not PyUnicode_IS_ASCII(v):
                bad = dotrio_first_surrogate(v)
                if bad >= 0:
                    self.fail("str", ("surrogates not allowed", bad), depth)
            return v
        if t is int or t is float or v is None or t is bool or t is bytes:
            return v
        if t is dict:
            return self.cp_dict(<dict>v, depth)
        if t is list:
            return self.cp_list(<list>v, depth)
        if t is tuple:
            return self.cp_tuple(<tuple>v, depth)
        if t is set or t is frozenset:
            return self.cp_set(v, t, depth)
        if t is _datetime or t is _date:
            return v
        if self.passthrough and t in self.passthrough:
            return v
        self.fail("type", t, depth)

    cdef list cp_list(self, list v, Py_ssize_t depth):
        cdef Py_ssize_t n = PyList_GET_SIZE(v), i
        if depth >= _MAX_DEPTH:
            self.too_deep(v)
        self.stk_obj[depth] = <PyObject *>v
        self.stk_kind[depth] = S_ITEM
        # Start from a shallow copy and replace only what must be copied:
        # most items are immutable leaves.
        cdef list new = PyList_GetSlice(v, 0, n)
        for i in range(n):
            item = <object>PyList_GET_ITEM(new, i)
            self.stk_idx[depth] = i
            copied = self.cp(item, depth + 1)
            if copied is not item:
                new[i] = copied
        return new

    cdef dict cp_dict(self, dict v, Py_ssize_t depth):
        cdef Py_ssize_t n = PyDict_Size(v), i = 0, pos = 0
        cdef PyObject *pk
        cdef PyObject *pv
        if depth >= _MAX_DEPTH:
            self.too_deep(v)
        self.stk_obj[depth] = <PyObject *>v
        # As for lists: a shallow copy, then replace the values that must be
        # copied (same keys, so the order does not change).
        cdef dict new = PyDict_Copy(v)
        while PyDict_Next(new, &pos, &pk, &pv):
            key = <object>pk
            item = <object>pv
            self.stk_idx[depth] = i
            self.stk_kind[depth] = S_KEY
            # A key is hashable, so it holds nothing mutable and comes back
            # as itself: checking it is enough.
            self.cp(key, depth + 1)
            self.stk_kind[depth] = S_VALUE
            copied = self.cp(item, depth + 1)
            if copied is not item:
                new[key] = copied
            i += 1
        return new

    cdef tuple cp_tuple(self, tuple v, Py_ssize_t depth):
        cdef Py_ssize_t n = PyTuple_GET_SIZE(v), i, j
        cdef tuple new = None
        if depth >= _MAX_DEPTH:
            self.too_deep(v)
        self.stk_obj[depth] = <PyObject *>v
        self.stk_kind[depth] = S_ITEM
        for i in range(n):
            item = <object>PyTuple_GET_ITEM(v, i)
            self.stk_idx[depth] = i
            copied = self.cp(item, depth + 1)
            if new is None and copied is not item:
                new = PyTuple_New(n)
                for j in range(i):
                    other = <object>PyTuple_GET_ITEM(v, j)
                    Py_INCREF(other)
                    PyTuple_SET_ITEM(new, j, other)
            if new is not None:
                Py_INCREF(copied)
                PyTuple_SET_ITEM(new, i, copied)
        # A tuple of immutable things is shared: that is safe and saves memory.
        return v if new is None else new

    cdef object cp_set(self, object v, type t, Py_ssize_t depth):
        cdef Py_ssize_t i = 0
        if depth >= _MAX_DEPTH:
            self.too_deep(v)
        self.stk_obj[depth] = <PyObject *>v
        self.stk_kind[depth] = S_SET
        # Set items are hashable, hence immutable all the way down: they come
        # back as themselves, so only the set itself needs copying.
        for item in v:
            self.stk_idx[depth] = i
            self.cp(item, depth + 1)
            i += 1
        return PySet_New(v) if t is set else v


cdef _State _shared = _State()


cdef inline _State _take_state():
    cdef _State st = _shared
    if st.busy:
        # A nested call (from a tzinfo, a finalizer, another thread while
        # this one runs Python code): do not clobber the outer call's state.
        st = _State()
    st.busy = True
    return st


cpdef bytes encode(object value):
    """Encode a supported value to bytes (see dotrio._kernels.codec._pure)."""
    cdef _State st = _take_state()
    try:
        st.put1(_FORMAT_VERSION)
        st.enc(value, 0)
        return PyBytes_FromStringAndSize(<char *>st.buf, st.len)
    finally:
        st.reset()


cpdef object copy(object value, object passthrough=()):
    """A validated deep copy of a supported value (see dotrio._kernels.codec._pure)."""
    if type(passthrough) is not tuple:
        raise TypeError(
            f"passthrough must be a tuple of types, not {type(passthrough).__name__!r}"
        )
    cdef _State st = _take_state()
    try:
        st.passthrough = passthrough
        return st.cp(value, 0)
    finally:
        st.reset()


# ---------------------------------------------------------------- decode

_tz_cache = {0: _UTC}


cdef object _timezone(int64_t us):
    tz = _tz_cache.get(us)
    if tz is None:
        tz = _timezone_type(_timedelta(microseconds=us))
        if len(_tz_cache) < 256:  # bounded: corrupt input could try every offset
            _tz_cache[us] = tz
    return tz


@cython.final
cdef class _Decoder:
    cdef const unsigned char *p
    cdef Py_ssize_t pos
    cdef Py_ssize_t end
    cdef list memo

    cdef int varint(self, uint64_t *out) except -1:
        cdef Py_ssize_t pos = self.pos, start = self.pos
        cdef uint64_t result = 0, b
        cdef int shift = 0
        while True:
            if pos >= self.end:
                raise _corrupt("truncated")
            b = self.p[pos]
            pos += 1
            if shift == 63 and b > 1:
                raise _corrupt(f"varint too long at offset {start}")
            result |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        self.pos = pos
        out[0] = result
        return 0

    cdef object string(self, uint64_t k, Py_ssize_t start):
        cdef Py_ssize_t pos = self.pos
        if k > <uint64_t>(self.end - pos):
            raise _corrupt("truncated")
        cdef PyObject *r
        if 0 < k <= DOTRIO_SCACHE_MAXLEN:
            r = dotrio_short_str(self.p + pos, <Py_ssize_t>k)
        else:
            r = PyUnicode_DecodeUTF8(<const char *>self.p + pos, <Py_ssize_t>k, NULL)
        if r == NULL:
            if PyErr_ExceptionMatches(UnicodeDecodeError):
                PyErr_Clear()
                raise _corrupt(f"invalid UTF-8 at offset {start}")
            dotrio_propagate()
        s = <object>r
        Py_DECREF(s)  # <object> took a reference of its own
        self.pos = pos + <Py_ssize_t>k
        if MEMO_MIN <= PyUnicode_GET_LENGTH(s) <= MEMO_MAX:
            if self.memo is None:
                self.memo = [s]
            else:
                self.memo.append(s)
        return s

    cdef object ref(self, uint64_t i, Py_ssize_t start):
        if self.memo is None or i >= <uint64_t>PyList_GET_SIZE(self.memo):
            raise _corrupt(f"string reference {i} out of range at offset {start}")
        return <object>PyList_GET_ITEM(self.memo, <Py_ssize_t>i)

    cdef object value(self, Py_ssize_t depth):
        cdef Py_ssize_t start = self.pos, i, item_start
        cdef unsigned int tag
        cdef uint64_t n
        if start >= self.end:
            raise _corrupt("truncated")
        tag = self.p[start]
        self.pos = start + 1
        if tag >= T_FIXINT:
            return PyLong_FromLongLong(tag - T_FIXINT)
        if tag >= T_FIXSTR:
            if tag < T_FIXREF:
                return self.string(tag - T_FIXSTR, start)
            if tag < T_FIXLIST:
                return self.ref(tag - T_FIXREF, start)
            if depth >= _MAX_DEPTH:
                raise _corrupt(f"nesting deeper than MAX_DEPTH at offset {start}")
            if tag < T_FIXDICT:
                n = tag - T_FIXLIST
                if n > <uint64_t>(self.end - self.pos):
                    raise _corrupt("truncated")
                tag = T_LIST
            else:
                n = tag - T_FIXDICT
                if n > <uint64_t>((self.end - self.pos) // 2):
                    raise _corrupt("truncated")
                tag = T_DICT
        elif T_LIST <= tag <= T_FROZENSET:
            if depth >= _MAX_DEPTH:
                raise _corrupt(f"nesting deeper than MAX_DEPTH at offset {start}")
            self.varint(&n)
            # Every value takes at least a byte: a count beyond the bytes
            # left is corrupt, and checking it first means never
            # preallocating for it.
            if n > <uint64_t>((self.end - self.pos) // 2 if tag == T_DICT
                              else self.end - self.pos):
                raise _corrupt("truncated")
        else:
            return self.scalar(tag, start)
        depth += 1
        if tag == T_DICT:
            d = dotrio_dict_presized(<Py_ssize_t>n)
            for i in range(<Py_ssize_t>n):
                item_start = self.pos
                key = self.value(depth)
                item = self.value(depth)
                if PyDict_SetItem_unchecked(d, key, item) < 0:
                    if PyErr_ExceptionMatches(TypeError):
                        PyErr_Clear()
                        raise _corrupt(f"unhashable dict key at offset {item_start}")
                    dotrio_propagate()
            return d
        if tag == T_LIST:
            lst = PyList_New(<Py_ssize_t>n)
            for i in range(<Py_ssize_t>n):
                item = self.value(depth)
                Py_INCREF(item)
                PyList_SET_ITEM(lst, i, item)
            return lst
        if tag == T_TUPLE:
            tup = PyTuple_New(<Py_ssize_t>n)
            for i in range(<Py_ssize_t>n):
                item = self.value(depth)
                Py_INCREF(item)
                PyTuple_SET_ITEM(tup, i, item)
            return tup
        s = set()
        for i in range(<Py_ssize_t>n):
            item_start = self.pos
            item = self.value(depth)
            if PySet_Add_unchecked(s, item) < 0:
                if PyErr_ExceptionMatches(TypeError):
                    PyErr_Clear()
                    raise _corrupt(f"unhashable set item at offset {item_start}")
                dotrio_propagate()
        return s if tag == T_SET else PyFrozenSet_New(s)

    cdef object scalar(self, unsigned int tag, Py_ssize_t start):
        """Any value but a container, FIXSTR, FIXREF or FIXINT."""
        cdef uint64_t n
        cdef Py_ssize_t pos
        cdef int year, month, day
        if tag == T_NONE:
            return None
        if tag == T_FALSE:
            return False
        if tag == T_TRUE:
            return True
        if tag == T_INT_POS:
            self.varint(&n)
            return PyLong_FromUnsignedLongLong(n)
        if tag == T_INT_NEG:
            self.varint(&n)
            if n <= <uint64_t>0x7FFFFFFFFFFFFFFF:
                return PyLong_FromLongLong(-1 - <long long>n)
            return -1 - PyLong_FromUnsignedLongLong(n)
        if tag == T_FLOAT:
            pos = self.pos
            if 8 > self.end - pos:
                raise _corrupt("truncated")
            self.pos = pos + 8
            return PyFloat_FromDouble(PyFloat_Unpack8(<const char *>self.p + pos, 1))
        if tag == T_STR:
            self.varint(&n)
            return self.string(n, start)
        if tag == T_REF:
            self.varint(&n)
            return self.ref(n, start)
        if tag == T_BYTES or tag == T_BIGINT:
            self.varint(&n)
            pos = self.pos
            if n > <uint64_t>(self.end - pos):
                raise _corrupt("truncated")
            self.pos = pos + <Py_ssize_t>n
            b = PyBytes_FromStringAndSize(<const char *>self.p + pos, <Py_ssize_t>n)
            if tag == T_BYTES:
                return b
            return int.from_bytes(b, "little", signed=True)
        if tag == T_DATE:
            self.varint(&n)
            if not 1 <= n <= MAX_ORDINAL:
                raise _corrupt(f"date out of range at offset {start}")
            dotrio_ord_to_ymd(<long>n, &year, &month, &day)
            return cdt.date_new(year, month, day)
        if tag == T_DATETIME:
            return self.datetime(start)
        raise _corrupt(f"unknown tag 0x{tag:02x} at offset {start}")

    cdef object datetime(self, Py_ssize_t start):
        cdef uint64_t ordinal, tod, z
        cdef unsigned int flags, unit
        cdef int64_t val, limit
        cdef int year, month, day
        if self.pos >= self.end:
            raise _corrupt("truncated")
        flags = self.p[self.pos]
        self.pos += 1
        unit = flags >> 2
        if flags > 0x0F or unit == 3 or (unit and not flags & 2):
            raise _corrupt(f"bad datetime flags 0x{flags:02x} at offset {start}")
        self.varint(&ordinal)
        if not 1 <= ordinal <= MAX_ORDINAL:
            raise _corrupt(f"date out of range at offset {start}")
        self.varint(&tod)
        if tod >= <uint64_t>DAY_US:
            raise _corrupt(f"time of day out of range at offset {start}")
        tz = None
        if flags & 2:
            self.varint(&z)
            limit = 1440 if unit == 0 else 86400 if unit == 1 else DAY_US
            # Compare before multiplying: z may be anything up to 2**64 - 1.
            if (z >> 1) >= <uint64_t>limit:
                raise _corrupt(f"UTC offset out of range at offset {start}")
            val = <int64_t>(z >> 1)
            if z & 1:
                val = -val - 1
                if val <= -limit:
                    raise _corrupt(f"UTC offset out of range at offset {start}")
            tz = _timezone(val * (60000000 if unit == 0 else 1000000 if unit == 1 else 1))
        dotrio_ord_to_ymd(<long>ordinal, &year, &month, &day)
        cdef int64_t secs = <int64_t>(tod // 1000000)
        return cdt.datetime_new(
            year, month, day, <int>(secs // 3600), <int>((secs // 60) % 60),
            <int>(secs % 60), <int>(tod % 1000000), tz, flags & 1,
        )


cpdef object decode(object data):
    """Decode what encode produced; anything else raises ValueError."""
    if type(data) is not bytes:
        try:
            data = memoryview(data).tobytes()
        except TypeError:
            raise TypeError(
                f"decode() needs bytes or memoryview, not {type(data).__name__!r}"
            ) from None
    cdef Py_ssize_t end = PyBytes_GET_SIZE(data)
    if end == 0:
        raise _corrupt("empty input")
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    if p[0] != _FORMAT_VERSION:
        raise _corrupt(f"unknown format version {p[0]}")
    cdef _Decoder dec = _Decoder.__new__(_Decoder)
    dec.p = p
    dec.pos = 1
    dec.end = end
    value = dec.value(0)
    if dec.pos != end:
        raise _corrupt(f"{end - dec.pos} trailing bytes at offset {dec.pos}")
    return value
