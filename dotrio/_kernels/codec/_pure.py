"""dotrio's value codec, pure-Python reference implementation.

``_compiled.pyx`` beside this file is the compiled twin: both produce the
same bytes for the same value and accept and reject the same inputs with the
same messages; ``dotrio._kernels.codec`` picks one of them. Stored values are
exactly ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``list``,
``tuple``, ``dict``, ``set``, ``frozenset``, ``datetime`` and ``date`` (never a
subclass), encoded as one format-version byte and a tag per value. The value
rules and the byte format (version 1, tag by tag) are specified in
docs/design/kernels.md; a change to either changes both twins and that page.
"""

from __future__ import annotations

import datetime as _dt
import re
import struct
from typing import Any

from .._constants import FORMAT_VERSION, MAX_DEPTH

__all__ = ["MAX_DEPTH", "FORMAT_VERSION", "encode", "decode", "copy"]

# Tags (see the module docstring).
_NONE, _FALSE, _TRUE = 0x00, 0x01, 0x02
_INT_POS, _INT_NEG, _BIGINT, _FLOAT = 0x03, 0x04, 0x05, 0x06
_STR, _BYTES, _LIST, _TUPLE, _DICT = 0x07, 0x08, 0x09, 0x0A, 0x0B
_SET, _FROZENSET, _DATE, _DATETIME, _REF = 0x0C, 0x0D, 0x0E, 0x0F, 0x10
_FIXSTR, _FIXREF, _FIXLIST, _FIXDICT, _FIXINT = 0x20, 0x40, 0x60, 0x70, 0x80

# Strings of this many code points go into the string table.
_MEMO_MIN, _MEMO_MAX = 2, 64

_U64 = 1 << 64
_MAX_ORDINAL = 3652059  # date.max.toordinal()
_DAY_US = 86_400_000_000
_UNIT_US = (60_000_000, 1_000_000, 1)  # offset units: minutes, seconds, µs

_SUPPORTED = (
    "None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset, "
    "datetime, date"
)
# Checked in this order so that the nearest supported base is named.
_BASES = (
    (_dt.datetime, "datetime"), (_dt.date, "date"), (bool, "bool"),
    (int, "int"), (float, "float"), (str, "str"), (bytes, "bytes"),
    (list, "list"), (tuple, "tuple"), (dict, "dict"), (set, "set"),
    (frozenset, "frozenset"),
)
_MAX_PATH_STEPS = 16
_MAX_KEY_REPR = 40

_pack_double = struct.Struct("<d").pack
_unpack_double = struct.Struct("<d").unpack_from
_SURROGATE = re.compile("[\ud800-\udfff]")
_date_fromordinal = _dt.date.fromordinal
_datetime = _dt.datetime
_date = _dt.date
_UTC = _dt.UTC


# ---------------------------------------------------------------- errors


class _Fail(Exception):
    """Internal: an encode/copy failure on its way up to the top level.

    Each container it passes prepends its step to the path, which is why the
    leaf does not need to know where it is; ``keep`` limits the path to the
    first ``keep`` levels (a cycle is reported where the value repeats, not
    where the depth ran out).
    """

    def __init__(self, kind: str, detail: Any = None, keep: int = MAX_DEPTH + 1):
        self.kind = kind
        self.detail = detail
        self.keep = keep
        self.steps: list[tuple[str, Any]] = []  # innermost first

    def add(self, level: int, step: tuple[str, Any]) -> None:
        if level < self.keep:
            self.steps.append(step)

    def public(self) -> Exception:
        return _error(self.kind, self.detail, self.steps[::-1])


def _short_repr(key: object) -> str:
    r = repr(key)
    return r if len(r) <= _MAX_KEY_REPR else r[: _MAX_KEY_REPR - 3] + "..."


def _format_step(step: tuple[str, Any]) -> str:
    kind, x = step
    if kind == "i":
        return f"[{x}]"
    if kind == "v":
        return f"[{_short_repr(x)}]"
    if kind == "k":
        return f"<key #{x}>"
    return f"<item #{x}>"


def _format_path(steps: list[tuple[str, Any]]) -> str:
    if len(steps) > _MAX_PATH_STEPS:
        half = _MAX_PATH_STEPS // 2
        return (
            "value"
            + "".join(map(_format_step, steps[:half]))
            + "..."
            + "".join(map(_format_step, steps[-half:]))
        )
    return "value" + "".join(map(_format_step, steps))


def _error(kind: str, detail: Any, steps: list[tuple[str, Any]]) -> Exception:
    """The public exception; _compiled.pyx builds the same messages."""
    path = _format_path(steps)
    if kind == "type":
        t: type = detail
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
    return ValueError(f"value nests deeper than MAX_DEPTH={MAX_DEPTH} at {path}")


def _no_stack_left() -> ValueError:
    # One Python frame per nesting level keeps MAX_DEPTH levels well within
    # the default recursion limit, unless the caller is itself very deep.
    return ValueError(
        "value nests too deep for the Python stack left to the pure-Python codec"
    )


def _too_deep(stack: list[object], value: object) -> _Fail:
    """A container would sit at depth MAX_DEPTH: a cycle, or just deep.

    Cycles are only looked for here, once the depth has run out: any cycle
    gets here, and acyclic values pay nothing for the check.
    """
    seen: set[int] = set()
    for level, container in enumerate([*stack, value]):
        if id(container) in seen:
            return _Fail("cycle", keep=level)
        seen.add(id(container))
    return _Fail("deep")


# ---------------------------------------------------------------- encode


def _write_varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


class _Encoder:
    __slots__ = ("out", "memo", "stack")

    def __init__(self) -> None:
        self.out = bytearray((FORMAT_VERSION,))
        self.memo: dict[str, int] = {}
        self.stack: list[object] = []  # the containers enclosing the current value

    def value(self, v: object, depth: int) -> None:
        out = self.out
        t = type(v)
        if t is str:
            n = len(v)  # type: ignore[arg-type]
            if _MEMO_MIN <= n <= _MEMO_MAX:
                memo = self.memo
                i = memo.get(v)  # type: ignore[call-overload]
                if i is not None:
                    if i < 32:
                        out.append(_FIXREF + i)
                    else:
                        out.append(_REF)
                        _write_varint(out, i)
                    return
                memo[v] = len(memo)  # type: ignore[index]
            try:
                b = v.encode()  # type: ignore[attr-defined]
            except UnicodeEncodeError as e:
                raise _Fail("str", (e.reason, e.start)) from None
            k = len(b)
            if k < 32:
                out.append(_FIXSTR + k)
            else:
                out.append(_STR)
                _write_varint(out, k)
            out += b
        elif t is int:
            if 0 <= v < 128:  # type: ignore[operator]
                out.append(_FIXINT + v)  # type: ignore[operator]
            elif 0 <= v < _U64:  # type: ignore[operator]
                out.append(_INT_POS)
                _write_varint(out, v)  # type: ignore[arg-type]
            elif -_U64 <= v < 0:  # type: ignore[operator]
                out.append(_INT_NEG)
                _write_varint(out, -1 - v)  # type: ignore[operator]
            else:
                mag = v if v >= 0 else ~v  # type: ignore[operator]
                k = (mag.bit_length() + 8) // 8  # type: ignore[union-attr]
                out.append(_BIGINT)
                _write_varint(out, k)
                out += v.to_bytes(k, "little", signed=True)  # type: ignore[attr-defined]
        elif t is dict:
            if depth >= MAX_DEPTH:
                raise _too_deep(self.stack, v)
            self.stack.append(v)
            n = len(v)  # type: ignore[arg-type]
            if n < 16:
                out.append(_FIXDICT + n)
            else:
                out.append(_DICT)
                _write_varint(out, n)
            depth += 1
            for i, (key, item) in enumerate(v.items()):  # type: ignore[attr-defined]
                try:
                    self.value(key, depth)
                except _Fail as f:
                    f.add(depth - 1, ("k", i))
                    raise
                try:
                    self.value(item, depth)
                except _Fail as f:
                    f.add(depth - 1, ("v", key))
                    raise
            self.stack.pop()
        elif t is list or t is tuple or t is set or t is frozenset:
            if depth >= MAX_DEPTH:
                raise _too_deep(self.stack, v)
            self.stack.append(v)
            n = len(v)  # type: ignore[arg-type]
            if t is list:
                if n < 16:
                    out.append(_FIXLIST + n)
                else:
                    out.append(_LIST)
                    _write_varint(out, n)
                step = "i"
            else:
                out.append(_TUPLE if t is tuple else _SET if t is set else _FROZENSET)
                _write_varint(out, n)
                step = "i" if t is tuple else "s"
            depth += 1
            for i, item in enumerate(v):  # type: ignore[arg-type]
                try:
                    self.value(item, depth)
                except _Fail as f:
                    f.add(depth - 1, (step, i))
                    raise
            self.stack.pop()
        elif t is float:
            out.append(_FLOAT)
            out += _pack_double(v)
        elif v is None:
            out.append(_NONE)
        elif t is bool:
            out.append(_TRUE if v else _FALSE)
        elif t is bytes:
            out.append(_BYTES)
            _write_varint(out, len(v))  # type: ignore[arg-type]
            out += v  # type: ignore[arg-type]
        elif t is _datetime:
            _write_datetime(out, v)  # type: ignore[arg-type]
        elif t is _date:
            out.append(_DATE)
            _write_varint(out, v.toordinal())  # type: ignore[attr-defined]
        else:
            raise _Fail("type", t)


def _write_datetime(out: bytearray, v: _dt.datetime) -> None:
    flags = v.fold
    offset = v.utcoffset()
    if offset is not None:
        flags |= 2
        us = (offset.days * 86400 + offset.seconds) * 1_000_000 + offset.microseconds
        for unit, size in enumerate(_UNIT_US):  # noqa: B007 - `unit` is read after the break
            if us % size == 0:
                break
        flags |= unit << 2
        us //= size
        zigzag = us * 2 if us >= 0 else -2 * us - 1
    out.append(_DATETIME)
    out.append(flags)
    _write_varint(out, v.toordinal())
    _write_varint(
        out, ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond
    )
    if offset is not None:
        _write_varint(out, zigzag)


def encode(value: object) -> bytes:
    """Encode a supported value (see the module docstring) to bytes.

    Raises TypeError for an unsupported type and ValueError for a str that is
    not valid UTF-8, a value that contains itself, or nesting deeper than
    MAX_DEPTH; each message names where in the value the problem is.
    """
    enc = _Encoder()
    try:
        enc.value(value, 0)
    except _Fail as f:
        raise f.public() from None
    except RecursionError:
        raise _no_stack_left() from None
    return bytes(enc.out)


# ---------------------------------------------------------------- copy


class _Copier:
    __slots__ = ("passthrough", "stack")

    def __init__(self, passthrough: tuple[type, ...]) -> None:
        self.passthrough = passthrough
        self.stack: list[object] = []

    def value(self, v: Any, depth: int) -> Any:
        t = type(v)
        if t is str:
            if not v.isascii():
                m = _SURROGATE.search(v)
                if m is not None:
                    raise _Fail("str", ("surrogates not allowed", m.start()))
            return v
        if t is int or t is float or v is None or t is bool or t is bytes:
            return v
        if t is dict:
            if depth >= MAX_DEPTH:
                raise _too_deep(self.stack, v)
            self.stack.append(v)
            new = {}
            depth += 1
            for i, (key, item) in enumerate(v.items()):
                try:
                    key = self.value(key, depth)
                except _Fail as f:
                    f.add(depth - 1, ("k", i))
                    raise
                try:
                    new[key] = self.value(item, depth)
                except _Fail as f:
                    f.add(depth - 1, ("v", key))
                    raise
            self.stack.pop()
            return new
        if t is list or t is tuple or t is set or t is frozenset:
            if depth >= MAX_DEPTH:
                raise _too_deep(self.stack, v)
            self.stack.append(v)
            step = "s" if t is set or t is frozenset else "i"
            items = []
            same = True  # every item came back as itself
            depth += 1
            for i, item in enumerate(v):
                try:
                    new_item = self.value(item, depth)
                except _Fail as f:
                    f.add(depth - 1, (step, i))
                    raise
                items.append(new_item)
                same = same and new_item is item
            self.stack.pop()
            if t is list:
                return items
            if same and t is not set:
                # Only immutable things inside: sharing is safe and saves memory.
                return v
            return t(items)
        if t is _datetime or t is _date:
            return v
        if t in self.passthrough:
            return v
        raise _Fail("type", t)


def copy(value: object, passthrough: tuple[type, ...] = ()) -> object:
    """A deep copy of a supported value, validated exactly as encode does.

    Used for RPC arguments and results: nothing mutable is shared with the
    original, immutable leaves (and tuples/frozensets holding only immutable
    things) are shared rather than copied. A value whose type is exactly one
    of ``passthrough`` is returned as it is (ids, stubs); ``passthrough`` is
    only consulted for types that are not supported values.
    """
    if type(passthrough) is not tuple:
        raise TypeError(
            f"passthrough must be a tuple of types, not {type(passthrough).__name__!r}"
        )
    try:
        return _Copier(passthrough).value(value, 0)
    except _Fail as f:
        raise f.public() from None
    except RecursionError:
        raise _no_stack_left() from None


# ---------------------------------------------------------------- decode


def _corrupt(what: str) -> ValueError:
    return ValueError(f"corrupt stored value: {what}")


_TRUNCATED = "truncated"
_tz_cache: dict[int, _dt.timezone] = {0: _UTC}


def _timezone(us: int) -> _dt.timezone:
    tz = _tz_cache.get(us)
    if tz is None:
        tz = _dt.timezone(_dt.timedelta(microseconds=us))
        if len(_tz_cache) < 256:  # bounded: corrupt input could try every offset
            _tz_cache[us] = tz
    return tz


class _Decoder:
    __slots__ = ("data", "pos", "end", "memo")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 1
        self.end = len(data)
        self.memo: list[str] = []

    def varint(self) -> int:
        data = self.data
        pos = self.pos
        b = data[pos]
        if b < 0x80:
            self.pos = pos + 1
            return b
        start = pos
        result = b & 0x7F
        shift = 7
        while True:
            pos += 1
            b = data[pos]
            if shift == 63 and b > 1:
                raise _corrupt(f"varint too long at offset {start}")
            result |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos + 1
                return result
            shift += 7

    def string(self, k: int, start: int) -> str:
        pos = self.pos
        if k > self.end - pos:
            raise _corrupt(_TRUNCATED)
        try:
            s = self.data[pos : pos + k].decode()
        except UnicodeDecodeError:
            raise _corrupt(f"invalid UTF-8 at offset {start}") from None
        self.pos = pos + k
        if _MEMO_MIN <= len(s) <= _MEMO_MAX:
            self.memo.append(s)
        return s

    def ref(self, i: int, start: int) -> str:
        if i >= len(self.memo):
            raise _corrupt(f"string reference {i} out of range at offset {start}")
        return self.memo[i]

    def count(self, pairs: bool) -> int:
        n = self.varint()
        # Every value takes at least a byte: a count beyond the bytes left is
        # corrupt, and checking it first means never preallocating for it.
        if (2 * n if pairs else n) > self.end - self.pos:
            raise _corrupt(_TRUNCATED)
        return n

    def value(self, depth: int) -> Any:
        start = self.pos
        tag = self.data[start]
        self.pos = start + 1
        if tag >= _FIXINT:
            return tag - _FIXINT
        if tag >= _FIXSTR:
            if tag < _FIXREF:
                return self.string(tag - _FIXSTR, start)
            if tag < _FIXLIST:
                return self.ref(tag - _FIXREF, start)
            if depth >= MAX_DEPTH:
                raise _corrupt(f"nesting deeper than MAX_DEPTH at offset {start}")
            if tag < _FIXDICT:
                n = tag - _FIXLIST
                if n > self.end - self.pos:
                    raise _corrupt(_TRUNCATED)
                tag = _LIST
            else:
                n = tag - _FIXDICT
                if 2 * n > self.end - self.pos:
                    raise _corrupt(_TRUNCATED)
                tag = _DICT
        elif _LIST <= tag <= _FROZENSET:
            if depth >= MAX_DEPTH:
                raise _corrupt(f"nesting deeper than MAX_DEPTH at offset {start}")
            n = self.count(tag == _DICT)
        else:
            return self.scalar(tag, start)
        # A container of n items. Plain loops, not comprehensions or helpers:
        # one Python frame per nesting level keeps MAX_DEPTH well away from
        # the recursion limit.
        depth += 1
        if tag == _DICT:
            d = {}
            for _ in range(n):
                key_start = self.pos
                key = self.value(depth)
                item = self.value(depth)
                try:
                    d[key] = item
                except TypeError:
                    raise _corrupt(f"unhashable dict key at offset {key_start}") from None
            return d
        if tag == _LIST or tag == _TUPLE:
            lst = []
            for _ in range(n):
                lst.append(self.value(depth))
            return lst if tag == _LIST else tuple(lst)
        s: set[Any] = set()
        for _ in range(n):
            item_start = self.pos
            item = self.value(depth)
            try:
                s.add(item)
            except TypeError:
                raise _corrupt(f"unhashable set item at offset {item_start}") from None
        return s if tag == _SET else frozenset(s)

    def scalar(self, tag: int, start: int) -> Any:
        """Any value but a container, FIXSTR, FIXREF or FIXINT."""
        if tag == _NONE:
            return None
        if tag == _FALSE:
            return False
        if tag == _TRUE:
            return True
        if tag == _INT_POS:
            return self.varint()
        if tag == _INT_NEG:
            return -1 - self.varint()
        if tag == _FLOAT:
            pos = self.pos
            if 8 > self.end - pos:
                raise _corrupt(_TRUNCATED)
            self.pos = pos + 8
            return _unpack_double(self.data, pos)[0]
        if tag == _STR:
            return self.string(self.varint(), start)
        if tag == _REF:
            return self.ref(self.varint(), start)
        if tag == _BYTES or tag == _BIGINT:
            k = self.varint()
            pos = self.pos
            if k > self.end - pos:
                raise _corrupt(_TRUNCATED)
            self.pos = pos + k
            if tag == _BYTES:
                return self.data[pos : pos + k]
            return int.from_bytes(self.data[pos : pos + k], "little", signed=True)
        if tag == _DATE:
            ordinal = self.varint()
            if not 1 <= ordinal <= _MAX_ORDINAL:
                raise _corrupt(f"date out of range at offset {start}")
            return _date_fromordinal(ordinal)
        if tag == _DATETIME:
            return self.datetime(start)
        raise _corrupt(f"unknown tag 0x{tag:02x} at offset {start}")

    def datetime(self, start: int) -> _dt.datetime:
        pos = self.pos
        flags = self.data[pos]
        self.pos = pos + 1
        unit = flags >> 2
        if flags > 0x0F or unit == 3 or (unit and not flags & 2):
            raise _corrupt(f"bad datetime flags 0x{flags:02x} at offset {start}")
        ordinal = self.varint()
        if not 1 <= ordinal <= _MAX_ORDINAL:
            raise _corrupt(f"date out of range at offset {start}")
        tod = self.varint()
        if tod >= _DAY_US:
            raise _corrupt(f"time of day out of range at offset {start}")
        tz = None
        if flags & 2:
            z = self.varint()
            offset = (z >> 1 if not z & 1 else -(z >> 1) - 1) * _UNIT_US[unit]
            if not -_DAY_US < offset < _DAY_US:
                raise _corrupt(f"UTC offset out of range at offset {start}")
            tz = _timezone(offset)
        d = _date_fromordinal(ordinal)
        seconds, us = divmod(tod, 1_000_000)
        minutes, second = divmod(seconds, 60)
        hour, minute = divmod(minutes, 60)
        return _datetime(
            d.year, d.month, d.day, hour, minute, second, us, tz, fold=flags & 1
        )


def decode(data: bytes | memoryview) -> object:
    """Decode what encode produced; anything else raises ValueError.

    Accepts bytes or any other bytes-like object (memoryview, bytearray).
    """
    if type(data) is not bytes:
        try:
            data = memoryview(data).tobytes()
        except TypeError:
            raise TypeError(
                f"decode() needs bytes or memoryview, not {type(data).__name__!r}"
            ) from None
    if not data:
        raise _corrupt("empty input")
    if data[0] != FORMAT_VERSION:
        raise _corrupt(f"unknown format version {data[0]}")
    dec = _Decoder(data)
    try:
        value = dec.value(0)
    except IndexError:  # a read past the end: every other read checks first
        raise _corrupt(_TRUNCATED) from None
    except RecursionError:
        raise _no_stack_left() from None
    if dec.pos != dec.end:
        raise _corrupt(f"{dec.end - dec.pos} trailing bytes at offset {dec.pos}")
    return value
