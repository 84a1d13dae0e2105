"""The value codec: both twins, against the same tests and against each other."""

from __future__ import annotations

import collections
import datetime as dt
import enum
import math
import struct
import zoneinfo
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dotrio._kernels.codec import _pure as _codec_py
from tests.twins import both, twin, twin_fixture

# The machine is shared and slow at times: no per-example deadline.
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

codec = twin_fixture("codec", scope="module")


# ---------------------------------------------------------------- comparing


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down, floats by bit pattern."""
    if type(a) is not type(b):
        return False
    t = type(a)
    if t is float:
        return struct.pack("<d", a) == struct.pack("<d", b)
    if t is list or t is tuple:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if t is dict:
        return len(a) == len(b) and all(
            same(k1, k2) and same(v1, v2)
            for (k1, v1), (k2, v2) in zip(a.items(), b.items(), strict=True)
        )
    if t is set or t is frozenset:
        if len(a) != len(b):
            return False
        rest = list(b)  # iteration orders may differ: match item by item
        for x in a:
            for i, y in enumerate(rest):
                if same(x, y):
                    del rest[i]
                    break
            else:
                return False
        return True
    if t is dt.datetime:
        # Not ==: aware datetimes in a repeated hour never equal another zone's.
        return (
            a.replace(tzinfo=None) == b.replace(tzinfo=None)
            and a.fold == b.fold
            and (a.tzinfo is None) == (b.tzinfo is None)
            and a.utcoffset() == b.utcoffset()
        )
    return bool(a == b)


def mutable_ids(v: Any, out: set[int] | None = None) -> set[int]:
    """ids of every list, dict and set inside v."""
    out = set() if out is None else out
    t = type(v)
    if t in (list, dict, set):
        out.add(id(v))
    if t is dict:
        for k, x in v.items():
            mutable_ids(k, out)
            mutable_ids(x, out)
    elif t in (list, tuple, set, frozenset):
        for x in v:
            mutable_ids(x, out)
    return out


# ---------------------------------------------------------------- strategies

offsets = st.timedeltas(
    min_value=-dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
    max_value=dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
)
whole_minutes = st.integers(-1439, 1439).map(lambda m: dt.timedelta(minutes=m))
tzinfos = st.one_of(
    st.none(),
    st.just(dt.UTC),
    st.builds(dt.timezone, whole_minutes | offsets),
    st.timezones(),
)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
short_texts = st.sampled_from(["ab", "role", "content", "é" * 3, "日本", "x", ""])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([127, 128, -1, -128, 2**63, 2**64 - 1, 2**64, -(2**64), -(2**64) - 1]),
    st.floats(),
    st.binary(max_size=40),
    texts,
    short_texts,
    st.dates(),
    st.datetimes(timezones=tzinfos),
)
hashables = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.frozensets(inner, max_size=4),
    max_leaves=8,
)
hashables_without_sets = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=8
)


def containers(inner: st.SearchStrategy[Any], with_sets: bool = True) -> st.SearchStrategy[Any]:
    keys = hashables if with_sets else hashables_without_sets
    options = [
        st.lists(inner, max_size=6),
        st.lists(inner, min_size=15, max_size=20),  # FIXLIST/LIST boundary
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(keys, inner, max_size=6),
        st.dictionaries(short_texts | texts, inner, min_size=15, max_size=18),
    ]
    if with_sets:
        options += [st.sets(hashables, max_size=5), st.frozensets(hashables, max_size=5)]
    return st.one_of(options)


values = st.recursive(scalars, containers, max_leaves=25)
values_without_sets = st.recursive(
    scalars,
    lambda inner: containers(inner, with_sets=False),
    max_leaves=30,
)


# ---------------------------------------------------------------- round trips


@FAST
@given(v=values)
def test_round_trip(codec: ModuleType, v: Any) -> None:
    data = codec.encode(v)
    assert type(data) is bytes
    assert data[0] == codec.FORMAT_VERSION
    assert same(codec.decode(data), v)
    assert same(codec.decode(memoryview(data)), v)
    assert same(codec.decode(bytearray(data)), v)


@FAST
@given(v=values)
def test_twins_agree(v: Any) -> None:
    _ext = twin("codec", "compiled")
    data = _codec_py.encode(v)
    assert _ext.encode(v) == data
    assert same(_ext.decode(data), v)
    assert same(_codec_py.decode(data), v)


@FAST
@given(v=values_without_sets)
def test_deterministic(codec: ModuleType, v: Any) -> None:
    # Equal values (without sets, whose order is their own) give equal bytes.
    data = codec.encode(v)
    assert codec.encode(codec.decode(data)) == data
    assert codec.encode(v) == data


@pytest.mark.parametrize(
    "value, payload",
    [
        (None, b"\x00"),
        (False, b"\x01"),
        (True, b"\x02"),
        (0, b"\x80"),
        (127, b"\xff"),
        (128, b"\x03\x80\x01"),
        (2**64 - 1, b"\x03" + b"\xff" * 9 + b"\x01"),
        (-1, b"\x04\x00"),
        (-(2**64), b"\x04" + b"\xff" * 9 + b"\x01"),
        (2**64, b"\x05\x09" + b"\x00" * 8 + b"\x01"),
        (-(2**64) - 1, b"\x05\x09" + b"\xff" * 8 + b"\xfe"),
        (1.5, b"\x06" + struct.pack("<d", 1.5)),
        ("", b"\x20"),
        ("ab", b"\x22ab"),
        ("é", b"\x22\xc3\xa9"),
        ("x" * 32, b"\x07\x20" + b"x" * 32),
        (b"", b"\x08\x00"),
        ([], b"\x60"),
        ([1] * 16, b"\x09\x10" + b"\x81" * 16),
        ((), b"\x0a\x00"),
        ({}, b"\x70"),
        ({"ab": "ab"}, b"\x71\x22ab\x40"),
        (["ab", "cd", "ab", "cd"], b"\x64\x22ab\x22cd\x40\x41"),
        ({1}, b"\x0c\x01\x81"),
        (frozenset(), b"\x0d\x00"),
        (dt.date(1, 1, 1), b"\x0e\x01"),
        (dt.date(2024, 2, 29), b"\x0e\x81\x8d\x2d"),  # ordinal 738945
        (dt.datetime(1, 1, 1), b"\x0f\x00\x01\x00"),
        (dt.datetime(1, 1, 1, 0, 0, 0, 1, fold=1), b"\x0f\x01\x01\x01"),
        (dt.datetime(1, 1, 1, tzinfo=dt.UTC), b"\x0f\x02\x01\x00\x00"),
        (dt.datetime(1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=-1))), b"\x0f\x02\x02\x00\x77"),
        (dt.datetime(1, 1, 2, tzinfo=dt.timezone(dt.timedelta(seconds=1))), b"\x0f\x06\x02\x00\x02"),
        (
            dt.datetime(1, 1, 2, tzinfo=dt.timezone(dt.timedelta(microseconds=1))),
            b"\x0f\x0a\x02\x00\x02",
        ),
    ],
)
def test_format_is_pinned(codec: ModuleType, value: Any, payload: bytes) -> None:
    # Stored data outlives code: changing any of these needs a new FORMAT_VERSION.
    assert codec.encode(value) == b"\x01" + payload
    assert same(codec.decode(b"\x01" + payload), value)


def test_string_table(codec: ModuleType) -> None:
    # 2..64 code points are in the table, counted in code points, not bytes.
    # version, FIXLIST, STR + 2-byte varint + 128 bytes, then two FIXREFs
    assert len(codec.encode(["é" * 64] * 3)) == 1 + 1 + 3 + 128 + 2
    assert len(codec.encode(["é" * 65] * 3)) == 1 + 1 + 3 * (3 + 130)
    assert codec.encode(["a", "a"]) == b"\x01\x62\x21a\x21a"
    # More than 32 strings: REF with a varint index.
    words = [f"w{i:03}" for i in range(40)]
    data = codec.encode(words + words)
    assert data.endswith(b"\x10\x27")
    assert codec.decode(data) == words + words
    # Thousands of entries grow (and then shrink) the table.
    many = [f"k{i}" for i in range(5000)]
    v = {"a": many, "b": many[::-1]}
    assert codec.decode(codec.encode(v)) == v
    assert codec.encode(["ab", "ab"]) == b"\x01\x62\x22ab\x40"


def test_special_floats(codec: ModuleType) -> None:
    for bits in (
        b"\x00\x00\x00\x00\x00\x00\xf8\x7f",  # quiet NaN
        b"\x01\x00\x00\x00\x00\x00\xf8\xff",  # negative NaN with a payload
        b"\x01\x00\x00\x00\x00\x00\xf0\x7f",  # signalling NaN
        b"\x00\x00\x00\x00\x00\x00\x00\x80",  # -0.0
        b"\x00\x00\x00\x00\x00\x00\xf0\x7f",  # inf
        b"\x00\x00\x00\x00\x00\x00\xf0\xff",  # -inf
        b"\x01\x00\x00\x00\x00\x00\x00\x00",  # smallest subnormal
    ):
        (x,) = struct.unpack("<d", bits)
        back = codec.decode(codec.encode(x))
        assert struct.pack("<d", back) == bits
    assert math.copysign(1.0, codec.decode(codec.encode(-0.0))) == -1.0


def test_ints(codec: ModuleType) -> None:
    for n in [0, 1, 127, 128, 255, 256, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1,
              2**64, 2**100, 2**1000 + 7, -1, -127, -128, -129, -(2**63), -(2**63) - 1,
              -(2**64) + 1, -(2**64), -(2**64) - 1, -(2**1000)]:
        back = codec.decode(codec.encode(n))
        assert back == n and type(back) is int
    assert codec.decode(codec.encode(True)) is True


def test_datetimes(codec: ModuleType) -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    for d in [dt.date.min, dt.date.max, dt.date(2000, 2, 29), dt.date(1900, 3, 1)]:
        assert codec.decode(codec.encode(d)) == d
    naive = dt.datetime(2024, 3, 31, 2, 30, 0, 123456)
    back = codec.decode(codec.encode(naive))
    assert back == naive and back.tzinfo is None
    assert codec.decode(codec.encode(dt.datetime.max)) == dt.datetime.max
    assert codec.decode(codec.encode(dt.datetime.min)) == dt.datetime.min
    utc = codec.decode(codec.encode(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)))
    assert utc.tzinfo is dt.UTC
    odd = dt.timezone(-dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999))
    back = codec.decode(codec.encode(dt.datetime(2024, 1, 1, tzinfo=odd)))
    assert back.utcoffset() == odd.utcoffset(None)
    # A named zone comes back as the fixed offset it had at that instant.
    winter = codec.decode(codec.encode(dt.datetime(2024, 1, 15, 12, tzinfo=paris)))
    summer = codec.decode(codec.encode(dt.datetime(2024, 7, 15, 12, tzinfo=paris)))
    assert winter.tzinfo == dt.timezone(dt.timedelta(hours=1))
    assert summer.tzinfo == dt.timezone(dt.timedelta(hours=2))
    # fold is kept, and with it the offset of the repeated hour.
    for fold in (0, 1):
        d = dt.datetime(2024, 10, 27, 2, 30, tzinfo=paris, fold=fold)
        back = codec.decode(codec.encode(d))
        assert back.fold == fold and back.utcoffset() == d.utcoffset()
        assert back.timestamp() == d.timestamp()

    class NoOffset(dt.tzinfo):
        def utcoffset(self, d: dt.datetime | None) -> None:
            return None

    back = codec.decode(codec.encode(dt.datetime(2024, 1, 1, tzinfo=NoOffset())))
    assert back.tzinfo is None  # as Python itself sees it: naive


def test_shared_references_are_not_cycles(codec: ModuleType) -> None:
    shared = [1, {"a": 2}]
    v = {"x": shared, "y": shared, "z": (shared, shared)}
    back = codec.decode(codec.encode(v))
    assert back == v
    assert back["x"] is not back["y"]
    c = codec.copy(v)
    assert c == v and c["x"] is not shared


def test_reentrant_encode(codec: ModuleType) -> None:
    # A tzinfo that encodes while being encoded must not clobber the outer call.
    class Reentrant(dt.tzinfo):
        def utcoffset(self, d: dt.datetime | None) -> dt.timedelta:
            assert codec.encode({"nested": ["ab", "cd", 300]}) == _codec_py.encode(
                {"nested": ["ab", "cd", 300]}
            )
            assert codec.copy(["ab", [1]]) == ["ab", [1]]
            return dt.timedelta(hours=1)

    v = ["ab", "cd", dt.datetime(2024, 1, 1, tzinfo=Reentrant()), "ab", "cd"]
    assert codec.encode(v) == _codec_py.encode(v)


def test_big_values(codec: ModuleType) -> None:
    big = {"blob": b"x" * (3 << 20), "text": "é" * 100_000, "list": list(range(100_000))}
    assert codec.decode(codec.encode(big)) == big
    assert codec.encode({"after": "a big one"}) == _codec_py.encode({"after": "a big one"})


# ---------------------------------------------------------------- copy


@FAST
@given(v=values)
def test_copy(codec: ModuleType, v: Any) -> None:
    c = codec.copy(v)
    assert same(c, v)
    assert not mutable_ids(c) & mutable_ids(v)


def test_copy_shares_only_immutables(codec: ModuleType) -> None:
    inner = [1, 2]
    t = (1, "a", (2, 3))
    v = {"t": t, "tl": (1, inner), "fs": frozenset({1, (2, 3)}), "s": {1, 2}}
    c = codec.copy(v)
    assert c["t"] is t  # nothing mutable inside: shared
    assert c["fs"] is v["fs"]
    assert c["tl"] is not v["tl"] and c["tl"][1] is not inner
    assert c["s"] is not v["s"]
    c["tl"][1].append(3)
    c["s"].add(3)
    assert inner == [1, 2] and v["s"] == {1, 2}


def test_copy_passthrough(codec: ModuleType) -> None:
    class Stub:
        pass

    class SubStub(Stub):
        pass

    stub = Stub()
    v = {"stub": stub, "in": [(stub, 1)]}
    c = codec.copy(v, (Stub,))
    assert c["stub"] is stub and c["in"][0][0] is stub
    assert c["in"] is not v["in"]
    with pytest.raises(TypeError, match=r"type 'Stub' at value\['stub'\]"):
        codec.copy(v)
    with pytest.raises(TypeError, match=r"type 'SubStub' at value\[0\]"):
        codec.copy([SubStub()], (Stub,))  # exact types only
    with pytest.raises(TypeError, match="passthrough must be a tuple"):
        codec.copy(1, [Stub])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="type 'Stub'"):
        codec.encode(stub)


# ---------------------------------------------------------------- errors


class Color(enum.IntEnum):
    RED = 1


class MyStr(str):
    pass


class MyDate(dt.datetime):
    pass


Point = collections.namedtuple("Point", "x y")

SUPPORTED = (
    "supported: None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset, "
    "datetime, date"
)


def all_errors(v: Any) -> list[str]:
    """The error each of encode/copy of each twin raises, as 'Type: message'."""
    out = []
    for mod in both("codec"):
        for fn in (mod.encode, mod.copy):
            try:
                fn(v)
            except (TypeError, ValueError) as e:
                out.append(f"{type(e).__name__}: {e}")
            else:
                out.append("no error")
    return out


@pytest.mark.parametrize(
    "value, exc, message",
    [
        (object(), TypeError, f"cannot store value of type 'object' at value; {SUPPORTED}"),
        (
            {"a": [0, 1, 2, object()]},
            TypeError,
            f"cannot store value of type 'object' at value['a'][3]; {SUPPORTED}",
        ),
        ([bytearray(b"x")], TypeError, "cannot store value of type 'bytearray' at value[0]; use bytes"),
        (memoryview(b"x"), TypeError, "cannot store value of type 'memoryview' at value; use bytes"),
        (
            {"c": Color.RED},
            TypeError,
            "cannot store value of type 'Color' at value['c']; only exact types are "
            "stored, not subclasses: convert it to int",
        ),
        (collections.OrderedDict(), TypeError, "type 'OrderedDict' at value; only exact types"),
        (collections.defaultdict(list), TypeError, "convert it to dict"),
        (Point(1, 2), TypeError,
         "type 'Point' at value; only exact types are stored, not subclasses: convert it to tuple"),
        ([MyStr("x")], TypeError, "convert it to str"),
        (MyDate(2024, 1, 1), TypeError, "convert it to datetime"),
        (dt.time(1, 2), TypeError, "type 'time' at value; supported"),
        ({object(): 1}, TypeError, "type 'object' at value<key #0>; supported"),
        ({"k": 1, (1, object()): 1}, TypeError, "type 'object' at value<key #1>[1]; supported"),
        ({"s": frozenset({1.5, 3j})}, TypeError, "type 'complex' at value['s']<item #"),
        ({"x" * 60: [object()]}, TypeError, "at value['" + "x" * 36 + "...][0]"),
        (
            ["ok", "bad \udc80 str"],
            ValueError,
            "cannot store str at value[1]: not valid UTF-8 (surrogates not allowed at index 4)",
        ),
        ({"\ud800": 1}, ValueError, "cannot store str at value<key #0>: not valid UTF-8"),
    ],
)
def test_errors(codec: ModuleType, value: Any, exc: type[Exception], message: str) -> None:
    for fn in (codec.encode, codec.copy):
        with pytest.raises(exc) as info:
            fn(value)
        assert message in str(info.value)
    assert len(set(all_errors(value))) == 1  # the same message from everyone


def test_cycles(codec: ModuleType) -> None:
    a: list[Any] = [1]
    a.append(a)
    d: dict[str, Any] = {"k": [0]}
    d["k"].append(d)
    t = ([],)
    t[0].append(t)
    for v, where in [
        (a, "value[1]"),
        ({"x": a}, "value['x'][1]"),
        (d, "value['k'][1]"),
        ([t], "value[0][0][0]"),
    ]:
        for fn in (codec.encode, codec.copy):
            with pytest.raises(ValueError, match=rf"^value contains itself at {__import__('re').escape(where)}$"):
                fn(v)
        assert len(set(all_errors(v))) == 1


def nested(depth: int) -> list[Any]:
    v: list[Any] = []
    for _ in range(depth - 1):
        v = [v]
    return v


def test_max_depth(codec: ModuleType) -> None:
    ok = nested(codec.MAX_DEPTH)
    assert codec.decode(codec.encode(ok)) == ok
    assert codec.copy(ok) == ok
    for too_deep in (nested(codec.MAX_DEPTH + 1), nested(100_000)):
        for fn in (codec.encode, codec.copy):
            with pytest.raises(ValueError, match=r"nests deeper than MAX_DEPTH=256 at value\[0\]"):
                fn(too_deep)
    mixed: Any = "leaf"
    for i in range(codec.MAX_DEPTH + 1):
        mixed = [mixed] if i % 3 == 0 else {"k": mixed} if i % 3 == 1 else (mixed,)
    assert len(set(all_errors(mixed))) == 1
    assert "nests deeper" in all_errors(mixed)[0]


def test_deep_caller(codec: ModuleType) -> None:
    # Called from deep in the stack: the compiled twin uses no Python frames;
    # the pure one may run out, but says so with a ValueError.
    import sys

    v = nested(codec.MAX_DEPTH)
    data = codec.encode(v)

    def at_depth(n: int) -> list[Any]:
        if n:
            return at_depth(n - 1)
        out: list[Any] = []
        for fn, arg in ((codec.encode, v), (codec.copy, v), (codec.decode, data)):
            try:
                out.append(fn(arg))
            except ValueError as e:
                assert codec is _codec_py and "Python stack" in str(e)
                out.append(None)
        return out

    results = at_depth(sys.getrecursionlimit() - 150)
    if codec is not _codec_py:
        assert results == [data, v, v]


def test_decode_depth(codec: ModuleType) -> None:
    ok = b"\x01" + b"\x61" * (codec.MAX_DEPTH - 1) + b"\x60"
    assert codec.decode(ok) == nested(codec.MAX_DEPTH)
    for deep in (b"\x01" + b"\x61" * codec.MAX_DEPTH + b"\x60", b"\x01" + b"\x61" * 200_000):
        with pytest.raises(ValueError, match="corrupt stored value: nesting deeper"):
            codec.decode(deep)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty input"),
        (b"\x02\x00", "unknown format version 2"),
        (b"\x01", "truncated"),
        (b"\x01\x00\x00", "1 trailing bytes at offset 2"),
        (b"\x01\x11", "unknown tag 0x11 at offset 1"),
        (b"\x01\x62\x80", "truncated"),
        (b"\x01\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", "varint too long at offset 2"),
        (b"\x01\x09\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "truncated"),  # a huge count
        (b"\x01\x22\xff\xfe", "invalid UTF-8 at offset 1"),
        (b"\x01\x23\xed\xa0\x80", "invalid UTF-8 at offset 1"),  # an encoded surrogate
        (b"\x01\x41", "string reference 1 out of range at offset 1"),
        (b"\x01\x10\x80\x01", "string reference 128 out of range at offset 1"),
        (b"\x01\x71\x60\x80", "unhashable dict key at offset 2"),
        (b"\x01\x0c\x01\x70", "unhashable set item at offset 3"),
        (b"\x01\x0d\x01\x0a\x01\x60", "unhashable set item at offset 3"),
        (b"\x01\x0e\x00", "date out of range at offset 1"),
        (b"\x01\x0e\xdc\xf4\xde\x01", "date out of range at offset 1"),
        (b"\x01\x0f\x10\x01\x00", "bad datetime flags 0x10 at offset 1"),
        (b"\x01\x0f\x04\x01\x00", "bad datetime flags 0x04 at offset 1"),
        (b"\x01\x0f\x0e\x01\x00\x00", "bad datetime flags 0x0e at offset 1"),
        (b"\x01\x0f\x00\x01\x80\xe0\xa9\xa7\xc9\x02", "time of day out of range at offset 1"),
        (b"\x01\x0f\x02\x01\x00\xc0\x16", "UTC offset out of range at offset 1"),  # +1440 min
        (b"\x01\x0f\x02\x01\x00\xbf\x16", "UTC offset out of range at offset 1"),  # -1440 min
        (
            b"\x01\x0f\x0a\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
            "UTC offset out of range at offset 1",
        ),
    ],
)
def test_decode_errors(codec: ModuleType, data: bytes, message: str) -> None:
    with pytest.raises(ValueError) as info:
        codec.decode(data)
    assert str(info.value) == f"corrupt stored value: {message}"


def test_decode_accepts(codec: ModuleType) -> None:
    # Longer forms than the encoder's are still read.
    assert codec.decode(b"\x01\x03\x05") == 5
    assert codec.decode(b"\x01\x07\x02ab") == "ab"
    assert codec.decode(b"\x01\x09\x01\x85") == [5]
    assert codec.decode(b"\x01\x85\x80\x00"[:2]) == 5
    assert codec.decode(b"\x01\x03\x85\x80\x00") == 5  # a non-minimal varint
    assert codec.decode(b"\x01\x0f\x06\x01\x00\xf0\x01") == dt.datetime(
        1, 1, 1, tzinfo=dt.timezone(dt.timedelta(minutes=2))
    )
    for z, minutes in ((b"\xbe\x16", 1439), (b"\xbd\x16", -1439)):  # the extremes
        back = codec.decode(b"\x01\x0f\x02\x01\x00" + z)
        assert back.utcoffset() == dt.timedelta(minutes=minutes)
    with pytest.raises(TypeError, match="needs bytes or memoryview, not 'str'"):
        codec.decode("\x01\x00")  # type: ignore[arg-type]


def decode_outcome(mod: ModuleType, data: bytes) -> Any:
    try:
        return ("ok", mod.decode(data))
    except ValueError as e:
        assert str(e).startswith("corrupt stored value: ")
        return ("error", str(e))


def assert_twins_agree(data: bytes) -> None:
    outcomes = [decode_outcome(m, data) for m in both("codec")]
    first = outcomes[0]
    for other in outcomes[1:]:
        assert other[0] == first[0]
        assert same(other[1], first[1]) if first[0] == "ok" else other[1] == first[1]


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=64) | st.binary(max_size=64).map(lambda b: b"\x01" + b))
def test_fuzz_random_bytes(data: bytes) -> None:
    assert_twins_agree(data)


@settings(max_examples=150, deadline=None)
@given(
    v=values,
    cut=st.integers(min_value=0),
    flips=st.lists(st.tuples(st.integers(0), st.integers(0, 255)), min_size=1, max_size=3),
)
def test_fuzz_damaged_encodings(v: Any, cut: int, flips: list[tuple[int, int]]) -> None:
    data = _codec_py.encode(v)
    truncated = data[: cut % len(data)]
    for mod in both("codec"):
        with pytest.raises(ValueError, match="^corrupt stored value: "):
            mod.decode(truncated)
    damaged = bytearray(data)
    for pos, byte in flips:
        damaged[pos % len(damaged)] = byte
    assume(bytes(damaged) != data)
    assert_twins_agree(bytes(damaged))
    assert_twins_agree(data + bytes([flips[0][1]]))
