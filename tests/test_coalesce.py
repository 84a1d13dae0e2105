"""The write coalescer: compiled twin == pure twin == a dict model.

Differential hypothesis tests drive both twins with the same operations
(writes, commits in flight, settles, rollbacks, transaction snapshots, cache
fills, merges with database rows) and compare every answer with each other and
with a model; then StorageEngine's list() is checked against a dict model with
list() calls interleaved with pending writes and committed data, for each twin.
"""

from __future__ import annotations

from bisect import bisect_left
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dotrio._kernels.codec import decode, encode
from dotrio.storage import StorageEngine, _object
from dotrio.storage._backend import StorageBackend
from tests.twins import both, twin_fixture

mod = twin_fixture("coalesce")


# Few, short keys (with non-ASCII, astral and NUL code points) so that
# operations collide and ranges are interesting; ordering by code point.
KEYS = st.text(alphabet=st.sampled_from(["a", "b", "z", "é", "\U0001f600", "\x00", "\uffff"]), max_size=3)
DATA = st.binary(max_size=40)


def _model_range(
    keys: list[str], lo: str | None, lo_incl: bool, hi: str | None, reverse: bool, limit: int
) -> list[str]:
    out = [k for k in sorted(keys) if (lo is None or (k >= lo if lo_incl else k > lo)) and (hi is None or k < hi)]
    if reverse:
        out.reverse()
    return out if limit < 0 else out[:limit]


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), KEYS, DATA),
        st.tuples(st.just("delete"), KEYS),
        st.tuples(st.just("lookup"), KEYS),
        st.tuples(st.just("remember"), KEYS),
        st.tuples(st.just("commit")),
        st.tuples(st.just("take")),
        st.tuples(st.just("settle")),
        st.tuples(st.just("fail")),
        st.tuples(st.just("snapshot")),
        st.tuples(st.just("restore")),
        st.tuples(
            st.just("merge"),
            st.none() | KEYS,
            st.booleans(),
            st.none() | KEYS,
            st.booleans(),
            st.integers(-1, 4),
        ),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, budget=st.sampled_from([0, 200, 600, 32 * 1024]))
def test_twins_agree_with_each_other_and_a_model(ops: list[tuple], budget: int) -> None:
    twins = [m.Coalescer(budget) for m in both("coalesce")]
    missing = [m.MISSING for m in both("coalesce")]
    db: dict[str, bytes] = {}  # what is committed
    pending: dict[str, bytes | None] = {}
    inflight: dict[str, bytes | None] | None = None
    snap: dict[str, bytes | None] | None = None
    snaps: list[object] = [None] * len(twins)

    def newest(key: str) -> bytes | None:
        if key in pending:
            return pending[key]
        if inflight is not None and key in inflight:
            return inflight[key]
        return db.get(key)

    for op in ops:
        kind = op[0]
        if kind == "put":
            for c in twins:
                c.put(op[1], op[2])
            pending[op[1]] = op[2]
        elif kind == "delete":
            for c in twins:
                c.delete(op[1])
            pending[op[1]] = None
        elif kind == "lookup":
            answers = [c.lookup(op[1]) for c in twins]
            for a, m in zip(answers, missing, strict=True):
                # MISSING is allowed only when neither pending nor in flight knows the key;
                # anything else must be the newest state.
                if a is m:
                    assert op[1] not in pending and (inflight is None or op[1] not in inflight)
                else:
                    assert a == newest(op[1])
            assert [a is m for a, m in zip(answers, missing, strict=True)] == [answers[0] is missing[0]] * len(twins)
        elif kind == "remember":
            if op[1] not in pending and inflight is None:
                for c in twins:
                    c.remember(op[1], db.get(op[1]))
        elif kind in ("take", "commit"):
            if inflight is not None:
                with pytest.raises(RuntimeError):
                    twins[0].take()
                continue
            rows = [c.take() for c in twins]
            assert all(r == rows[0] for r in rows)
            puts, dels = rows[0]
            assert [k for k, _ in puts] == sorted(k for k, v in pending.items() if v is not None)
            assert [k for (k,) in dels] == sorted(k for k, v in pending.items() if v is None)
            assert dict(puts) == {k: v for k, v in pending.items() if v is not None}
            inflight, pending = pending, {}
            if kind == "commit":
                for c in twins:
                    c.settle()
                db.update({k: v for k, v in inflight.items() if v is not None})
                for k, v in inflight.items():
                    if v is None:
                        db.pop(k, None)
                inflight = None
        elif kind == "settle":
            for c in twins:
                c.settle()
            if inflight is not None:
                for k, v in inflight.items():
                    if v is None:
                        db.pop(k, None)
                    else:
                        db[k] = v
            inflight = None
        elif kind == "fail":
            for c in twins:
                c.discard()
                c.clear_cache()
            pending, inflight = {}, None
        elif kind == "snapshot":
            snaps = [c.snapshot() for c in twins]
            snap = dict(pending)
        elif kind == "restore":
            if snap is not None:
                for c, s in zip(twins, snaps, strict=True):
                    c.restore(s)
                pending = dict(snap)
        elif kind == "merge":
            _, lo, lo_incl, hi, reverse, limit = op
            if inflight is not None:
                with pytest.raises(RuntimeError):
                    twins[0].merge(None, lo, lo_incl, hi, reverse, limit)
                continue
            keys = _model_range(list(db), lo, lo_incl, hi, reverse, -1)
            results = [c.merge(iter([(k, db[k]) for k in keys]), lo, lo_incl, hi, reverse, limit) for c in twins]
            merged = {**db, **pending}
            live = [k for k in merged if merged[k] is not None]
            expect_keys = _model_range(live, lo, lo_incl, hi, reverse, limit)
            expect = [(k, merged[k]) for k in expect_keys]
            for r in results:
                assert r == expect
        for c in twins:
            assert c.pending == len(pending)
            assert c.in_flight == (inflight is not None)
            assert 0 <= c.cache_bytes <= budget
        assert len({(c.cache_bytes, c.cache_entries) for c in twins}) == 1


def test_check_key(mod: Any) -> None:
    assert mod.check_key("abc") == "abc"
    assert mod.check_key("é" * 1024) == "é" * 1024  # 2048 bytes exactly
    with pytest.raises(TypeError, match="must be str"):
        mod.check_key(b"abc")
    with pytest.raises(TypeError, match="start must be str"):
        mod.check_key(1, "start")
    with pytest.raises(ValueError, match="2050 bytes"):
        mod.check_key("é" * 1025)
    with pytest.raises(ValueError, match="surrogate at index 1"):
        mod.check_key("a\ud800")
    with pytest.raises(ValueError):
        mod.check_key("x" * 2049)


def test_cache_budget_and_big_values(mod: Any) -> None:
    c = mod.Coalescer(1000)
    for i in range(50):
        c.remember(f"k{i}", b"v" * 10)
        assert c.cache_bytes <= 1000
    # the most recent entries survive, the oldest went first
    assert c.lookup("k49") == b"v" * 10
    assert c.lookup("k0") is mod.MISSING
    # a value bigger than a quarter of the budget is never cached (and drops a stale copy)
    c.remember("k49", b"x" * 300)
    assert c.lookup("k49") is mod.MISSING
    # absent keys are cached too
    c.remember("gone", None)
    assert c.lookup("gone") is None
    with pytest.raises(ValueError):
        mod.Coalescer(-1)
    with pytest.raises(TypeError):
        c.put("k", "not bytes")  # type: ignore[arg-type]


def test_big_batch_settle_drops_stale_cache_entries(mod: Any) -> None:
    c = mod.Coalescer()
    c.remember("k5", b"old")
    c.remember("other", b"keep")
    for i in range(500):
        c.put(f"k{i}", b"new")
    c.take()
    assert c.lookup("k5") == b"new"  # in flight is newer than the cache
    c.settle()
    assert c.lookup("k5") in (b"new", mod.MISSING)  # never the stale b"old"
    assert c.lookup("other") == b"keep"


# ---- StorageEngine.list() with pending writes, in both twins ------------------------------------

STORE_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), KEYS, st.integers(0, 99)),
        st.tuples(st.just("delete"), KEYS),
        st.tuples(st.just("commit")),
        st.tuples(st.just("rollback")),
        st.tuples(st.just("get"), KEYS),
        st.tuples(
            st.just("list"),
            st.none() | KEYS,
            st.none() | KEYS,
            st.booleans(),
            st.none() | KEYS,
            st.booleans(),
            st.none() | st.integers(1, 5),
        ),
    ),
    max_size=40,
)


def _expected_list(model: dict[str, int], prefix, start, after, end, reverse, limit) -> list[tuple[str, int]]:
    keys = sorted(model)
    if prefix is not None:
        keys = [k for k in keys if k.startswith(prefix)]
    if start is not None:
        keys = [k for k in keys if (k > start if after else k >= start)]
    if end is not None:
        keys = [k for k in keys if k < end]
    if reverse:
        keys.reverse()
    if limit is not None:
        keys = keys[:limit]
    return [(k, model[k]) for k in keys]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=STORE_OPS, on_disk=st.booleans())
async def test_storage_list_interleaved_with_pending_writes(
    mod: Any, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, ops: list[tuple], on_disk: bool
) -> None:
    monkeypatch.setattr(_object, "Coalescer", mod.Coalescer)
    monkeypatch.setattr(_object, "MISSING", mod.MISSING)
    monkeypatch.setattr(_object, "check_key", mod.check_key)
    data_dir: Path | None = tmp_path_factory.mktemp("co") if on_disk else None
    backend = StorageBackend(data_dir)
    try:
        s = StorageEngine(backend, "NS", "ab" * 32)
        committed: dict[str, int] = {}
        model: dict[str, int] = {}
        for op in ops:
            kind = op[0]
            if kind == "put":
                await s.put(op[1], op[2])
                model[op[1]] = op[2]
            elif kind == "delete":
                existed = await s.delete(op[1])
                assert existed == (op[1] in model)
                model.pop(op[1], None)
            elif kind == "commit":
                s.commit()
                committed = dict(model)
            elif kind == "rollback":
                s.rollback()
                model = dict(committed)
            elif kind == "get":
                assert await s.get(op[1]) == model.get(op[1])
            else:
                _, prefix, start, after, end, reverse, limit = op
                kwargs: dict[str, Any] = {"prefix": prefix, "end": end, "reverse": reverse, "limit": limit}
                kwargs["start_after" if after else "start"] = start
                got = await s.list(**kwargs)
                assert list(got.items()) == _expected_list(model, prefix, start, after, end, reverse, limit)
        s.commit()
        s.close()
        # what reached the database is exactly the model
        s2 = StorageEngine(backend, "NS", "ab" * 32)
        assert await s2.list() == dict(sorted(model.items()))
        s2.close()
    finally:
        backend.close()


async def test_cached_get_never_reaches_sqlite(tmp_path: Path) -> None:
    backend = StorageBackend(tmp_path / "d")
    try:
        s = StorageEngine(backend, "NS", "cd" * 32)
        await s.put({"a": {"x": [1, 2]}, "b": 2})
        s.commit()
        await s.get("missing")  # a miss reads SQLite once, then it is known absent
        conn = s._conn
        assert conn is not None
        statements: list[str] = []
        conn.exec_trace = lambda _cur, sql, _b: statements.append(sql) or True
        for _ in range(3):
            assert await s.get("a") == {"x": [1, 2]}
            assert await s.get("b") == 2
            assert await s.get("missing") is None
            assert await s.get(["a", "b"]) == {"a": {"x": [1, 2]}, "b": 2}
        assert statements == []
        # values are still copies
        v = await s.get("a")
        v["x"].append(3)
        assert await s.get("a") == {"x": [1, 2]}
        await s.get("c")
        assert statements == ["SELECT value FROM _dotrio_kv WHERE key=?"]
        s.close()
    finally:
        backend.close()


async def test_list_merges_without_writing_the_buffer(tmp_path: Path) -> None:
    backend = StorageBackend(tmp_path / "d")
    try:
        s = StorageEngine(backend, "NS", "ef" * 32)
        await s.put({f"k{i}": i for i in range(10)})
        s.commit()
        await s.put("k05", "new")
        await s.delete("k3")
        conn = s._conn
        assert conn is not None
        statements: list[str] = []
        conn.exec_trace = lambda _cur, sql, _b: statements.append(sql) or True
        got = await s.list(start="k2", limit=4)
        assert got == {"k2": 2, "k4": 4, "k5": 5, "k6": 6}
        assert await s.list(prefix="k0") == {"k0": 0, "k05": "new"}
        assert all(sql.startswith("SELECT") for sql in statements), statements
        assert not conn.in_transaction  # nothing was written into SQLite
        s.commit()
        assert decode(conn.execute("SELECT value FROM _dotrio_kv WHERE key='k05'").fetchall()[0][0]) == "new"
        assert conn.execute("SELECT count(*) FROM _dotrio_kv WHERE key='k3'").fetchall() == [(0,)]
        s.close()
    finally:
        backend.close()


def test_merge_reads_rows_lazily() -> None:
    for mod in both("coalesce"):
        c = mod.Coalescer()
        c.put("b", encode(1))
        consumed = []

        def rows():
            for k in ["a", "c", "d", "e"]:
                consumed.append(k)  # noqa: B023 - consumed within this iteration
                yield (k, b"x")

        assert [k for k, _ in c.merge(rows(), None, True, None, False, 2)] == ["a", "b"]
        assert consumed == ["a", "c"]  # read one row ahead, no further


def test_bisect_matches_code_point_order() -> None:
    keys = sorted(["", "\x00", "a", "é", "\uffff", "\U0001f600"])
    for k in keys:
        assert bisect_left(keys, k) == keys.index(k)
    # SQLite's BINARY collation on UTF-8 agrees with Python's str order
    conn = apsw.Connection(":memory:")
    conn.execute("CREATE TABLE t(k TEXT PRIMARY KEY)")
    conn.executemany("INSERT INTO t VALUES(?)", [(k,) for k in reversed(keys)])
    assert [r[0] for r in conn.execute("SELECT k FROM t ORDER BY k")] == keys


FIXED_KEYS = ["", "\x00", "a", "aa", "ab", "b", "ba", "z", "é", "éa", "\uffff", "\U0001f600"]


@settings(max_examples=200, deadline=None)
@given(
    order=st.permutations(FIXED_KEYS),
    deleted=st.sets(st.sampled_from(FIXED_KEYS)),
    lo=st.none() | st.sampled_from(FIXED_KEYS),
    hi=st.none() | st.sampled_from(FIXED_KEYS),
    lo_incl=st.booleans(),
    reverse=st.booleans(),
)
def test_any_insertion_order_gives_key_order(order, deleted, lo, hi, lo_incl, reverse) -> None:
    for mod in both("coalesce"):
        c = mod.Coalescer()
        for k in order:
            if k in deleted:
                c.delete(k)
            else:
                c.put(k, k.encode())
        live = [k for k in FIXED_KEYS if k not in deleted]
        got = c.merge(None, lo, lo_incl, hi, reverse, -1)
        assert [k for k, _ in got] == _model_range(live, lo, lo_incl, hi, reverse, -1)
        puts, dels = c.take()
        assert [k for k, _ in puts] == sorted(live)
        assert [k for (k,) in dels] == sorted(deleted)


def test_value_level_calls(mod: Any) -> None:
    c = mod.Coalescer()
    c.put_value("a", {"x": [1, 2]})
    got = c.get_value("a")
    assert got == {"x": [1, 2]}
    got["x"].append(3)  # a copy each time
    assert c.get_value("a") == {"x": [1, 2]}
    assert c.get_value("nope") is mod.MISSING
    assert c.get_value(7) is mod.MISSING  # not a key: the caller's check raises
    c.delete("a")
    assert c.get_value("a") is None
    assert c.put_values({"b": 1, "é": "two"}) == 2
    assert c.pending == 3
    errors = [
        (lambda: c.put_value(1, "x"), TypeError, "must be str"),
        (lambda: c.put_value("k" * 2049, "x"), ValueError, "2049 bytes"),
        (lambda: c.put_value("\ud800", "x"), ValueError, "surrogate"),
        (lambda: c.put_value("k", object()), TypeError, "object"),
        (lambda: c.put_value("k", b"x" * (2 * 1024 * 1024 + 1)), ValueError, "2 MiB"),
        (lambda: c.put_values({"ok": 1, "bad": object()}), TypeError, "object"),
        (lambda: c.put_values({"ok": 1, 3: 1}), TypeError, "must be str"),
    ]
    for call, exc, match in errors:
        with pytest.raises(exc, match=match):
            call()
    assert c.pending == 3  # nothing of a rejected put was buffered
    assert c.get_value("ok") is mod.MISSING


def test_cached_values_are_never_shared_mutably(mod: Any) -> None:
    import datetime as dt

    c = mod.Coalescer()
    values = {
        "flat": {"n": 1, "name": "x", "t": (1, "a"), "when": dt.date(2020, 1, 2)},
        "nested": {"items": [1, 2], "meta": {"a": 1}},
        "list": [1, "two", 3.0],
        "tuple": (1, (2, "three")),
        "set": {1, 2},
        "int": 42,
    }
    for key, value in values.items():
        c.remember(key, encode(value))
    for key, value in values.items():
        first = c.get_value(key)
        second = c.get_value(key)
        third = c.get_value(key)
        assert first == second == third == value
        if isinstance(value, (dict, list, set)):
            assert first is not second and second is not third
            if isinstance(first, dict):
                first["added"] = True
            elif isinstance(first, list):
                first.append("x")
            else:
                first.add(99)
            assert c.get_value(key) == value
    nested = c.get_value("nested")
    nested["items"].append(3)
    nested["meta"]["b"] = 2
    assert c.get_value("nested") == values["nested"]
    # a newer value replaces what was kept
    c.remember("flat", encode({"n": 2}))
    assert c.get_value("flat") == {"n": 2}
    c.put("flat", encode({"n": 3}))
    assert c.get_value("flat") == {"n": 3}  # pending wins over the cache
    c.take()
    c.settle()
    assert c.get_value("flat") == {"n": 3}
