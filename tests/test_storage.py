"""Storage API (API.md §4) against real SQLite files."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dotrio
from dotrio import DurableObject, StorageError


class Store(DurableObject):
    """Runs arbitrary storage code inside the object (tests pass functions)."""


async def run_in(rt, name, fn):
    async def call(instance):
        return await fn(instance.ctx.storage)

    ns = rt.env.STORE
    return await rt.call(ns, ns.id_from_name(name), call)


@pytest.fixture(params=["process", "power"])
async def rt(make_runtime, request):
    # "power" commits run in worker threads: the same contract must hold.
    async with make_runtime({"STORE": Store}, durability=request.param) as runtime:
        yield runtime


async def test_kv_basics(rt):
    async def body(s):
        assert await s.get("missing") is None
        await s.put("a", 1)
        assert await s.get("a") == 1  # read-your-writes before commit
        await s.put({"b": [1, 2], "c": {"x": None}})
        assert await s.get(["c", "zz", "a"]) == {"a": 1, "c": {"x": None}}
        assert list((await s.get(["c", "a", "b"])).keys()) == ["a", "b", "c"]
        assert await s.delete("a") is True
        assert await s.delete("a") is False
        assert await s.delete(["b", "c", "nope"]) == 2
        assert await s.list() == {}

    await run_in(rt, "basics", body)


async def test_values_round_trip_and_are_copied(rt):
    naive = dt.datetime(2024, 5, 6, 7, 8, 9, 123456)
    aware = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    value = {
        "none": None,
        "t": True,
        "big": 2**200,
        "neg": -(2**70),
        "nan": math.nan,
        "inf": -math.inf,
        "s": "héllo \x00 ☃",
        "b": b"\x00\xff",
        "l": [1, [2, (3, 4)]],
        "set": {1, 2},
        "fs": frozenset({"a"}),
        "naive": naive,
        "aware": aware,
        "date": dt.date(2020, 1, 2),
        (1, 2): "tuple key",
    }

    async def body(s):
        await s.put("v", value)
        got = await s.get("v")
        assert math.isnan(got.pop("nan"))
        expect = dict(value)
        expect.pop("nan")
        assert got == expect
        assert got["naive"].tzinfo is None
        assert got["aware"].utcoffset() == dt.timedelta(hours=5, minutes=30)
        assert type(got["l"][1][1]) is tuple
        # copies both ways
        got["l"].append(99)
        assert 99 not in (await s.get("v"))["l"]
        mutable = [1]
        await s.put("m", mutable)
        mutable.append(2)
        assert await s.get("m") == [1]

    await run_in(rt, "values", body)
    # and after commit, from a fresh read
    async def reread(s):
        got = await s.get("v")
        assert got["big"] == 2**200 and got["naive"] == naive

    await run_in(rt, "values", reread)


async def test_bad_keys_and_values_write_nothing(rt):
    async def body(s):
        await s.put("keep", "old")
        with pytest.raises(TypeError, match="must be str"):
            await s.put(1, "x")
        with pytest.raises(ValueError, match="2048"):
            await s.put("k" * 2049, "x")
        with pytest.raises(ValueError, match="2048"):
            await s.get("é" * 1025)
        with pytest.raises(TypeError, match="object"):
            await s.put("keep", object())
        with pytest.raises(TypeError):
            await s.put({"keep": "new", "bad": object()})
        cyc: list = []
        cyc.append(cyc)
        with pytest.raises(ValueError, match="contains itself"):
            await s.put("cyc", cyc)
        with pytest.raises(ValueError, match="2 MiB"):
            await s.put("huge", b"x" * (2 * 1024 * 1024 + 1))
        with pytest.raises(ValueError, match="surrogate"):
            await s.put("\ud800", 1)
        assert await s.get("keep") == "old"
        assert await s.get(["cyc", "huge", "bad"]) == {}

    await run_in(rt, "bad", body)


async def test_list_options(rt):
    async def body(s):
        await s.put({f"k{i:02d}": i for i in range(20)})
        await s.put({"a": 0, "z": 0, "k": -1})
        assert list(await s.list(prefix="k0")) == [f"k0{i}" for i in range(10)]
        assert list(await s.list(start="k18")) == ["k18", "k19", "z"]
        assert list(await s.list(start_after="k18")) == ["k19", "z"]
        assert list(await s.list(start="k", end="k02")) == ["k", "k00", "k01"]
        assert list(await s.list(prefix="k1", reverse=True, limit=2)) == ["k19", "k18"]
        assert list(await s.list(limit=1)) == ["a"]
        with pytest.raises(ValueError, match="start or start_after"):
            await s.list(start="a", start_after="b")
        with pytest.raises(ValueError, match="positive"):
            await s.list(limit=0)

    await run_in(rt, "list", body)


KEYS = st.text(alphabet=st.sampled_from(["a", "b", "é", "\U0001f600", "\x00", "z"]), max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(st.tuples(st.sampled_from(["put", "del"]), KEYS, st.integers(0, 9)), max_size=25),
    prefix=st.none() | KEYS,
    start=st.none() | KEYS,
    end=st.none() | KEYS,
    after=st.booleans(),
    reverse=st.booleans(),
    limit=st.none() | st.integers(1, 5),
    commit_midway=st.booleans(),
)
async def test_list_matches_dict_model(tmp_path_factory, ops, prefix, start, end, after, reverse, limit, commit_midway):
    model: dict[str, int] = {}
    data_dir = tmp_path_factory.mktemp("model")
    async with dotrio.Runtime(bindings={"STORE": Store}, data_dir=data_dir) as rt:

        async def apply(s, part):
            for op, key, val in part:
                if op == "put":
                    await s.put(key, val)
                    model[key] = val
                else:
                    await s.delete(key)
                    model.pop(key, None)

        half = len(ops) // 2 if commit_midway else 0
        await run_in(rt, "m", lambda s: apply(s, ops[:half]))

        async def finish(s):
            await apply(s, ops[half:])  # pending, uncommitted writes merge with the database
            kwargs = {"prefix": prefix, "end": end, "reverse": reverse, "limit": limit}
            kwargs["start_after" if after else "start"] = start
            return await s.list(**kwargs)

        got = await run_in(rt, "m", finish)
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
    assert list(got.items()) == [(k, model[k]) for k in keys]


async def test_delete_all_removes_kv_sql_and_alarm(rt):
    async def body(s):
        await s.put("a", 1)
        s.sql.exec("CREATE TABLE parent(id INTEGER PRIMARY KEY)")
        s.sql.exec("CREATE TABLE child(p INTEGER REFERENCES parent(id))")
        s.sql.exec("INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1)")
        await s.set_alarm(10**13)

    await run_in(rt, "da", body)

    async def wipe(s):
        await s.delete_all()

    await run_in(rt, "da", wipe)

    async def check(s):
        assert await s.list() == {}
        assert await s.get_alarm() is None
        tables = s.sql.exec(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE '\\_dotrio%' ESCAPE '\\'"
        ).to_array()
        assert tables == []

    await run_in(rt, "da", check)


async def test_sql_api(rt):
    async def body(s):
        cur = s.sql.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
        assert cur.to_array() == []
        s.sql.exec("INSERT INTO t(name, data) VALUES (?, ?), (?, ?)", "a", b"\x01", "b", None)
        cur = s.sql.exec("SELECT id, name, data FROM t ORDER BY id")
        assert cur.column_names == ["id", "name", "data"]
        assert cur.to_array() == [{"id": 1, "name": "a", "data": b"\x01"}, {"id": 2, "name": "b", "data": None}]
        assert list(s.sql.exec("SELECT name FROM t ORDER BY id").raw()) == [["a"], ["b"]]
        assert s.sql.exec("SELECT count(*) AS n FROM t").one() == {"n": 2}
        with pytest.raises(StorageError, match="exactly one row"):
            s.sql.exec("SELECT * FROM t").one()
        # several statements: the cursor is the last one's
        cur = s.sql.exec("INSERT INTO t(name) VALUES ('c'); SELECT name FROM t WHERE id = ?", 3)
        assert cur.to_array() == [{"name": "c"}]
        assert s.sql.exec("UPDATE t SET name = 'z'").rows_written == 3
        assert s.sql.database_size > 0
        rows = [r["name"] for r in s.sql.exec("SELECT name FROM t")]
        assert rows == ["z", "z", "z"]

    await run_in(rt, "sql", body)


@pytest.mark.parametrize(
    "query, match",
    [
        ("BEGIN", "not allowed"),
        ("COMMIT", "not allowed"),
        ("ROLLBACK", "not allowed"),
        ("SAVEPOINT x", "SAVEPOINT"),
        ("RELEASE x", "SAVEPOINT"),
        ("SELECT * FROM _dotrio_kv", "_dotrio_"),
        ("SELECT * FROM _DOTRIO_KV", "(?i)_dotrio_"),
        ("DROP TABLE _dotrio_meta", "_dotrio_"),
        ("CREATE TABLE _dotrio_mine(x)", "_dotrio_"),
        ("ATTACH DATABASE ':memory:' AS other", "ATTACH"),
        ("PRAGMA journal_mode=DELETE", "PRAGMA"),
        ("PRAGMA foreign_keys=OFF", "PRAGMA"),
        ("SELEC 1", "SQL error"),
        ("SELECT * FROM nowhere", "no such table"),
    ],
)
async def test_sql_forbidden_and_errors(rt, query, match):
    async def body(s):
        await s.put("k", "v")
        with pytest.raises(StorageError, match=match):
            s.sql.exec(query)
        assert await s.get("k") == "v"

    await run_in(rt, "forbidden", body)


async def test_sql_bindings_errors_and_atomic_multi_statement(rt):
    async def body(s):
        s.sql.exec("CREATE TABLE t(x INTEGER NOT NULL)")
        with pytest.raises(TypeError, match="binding 1 has unsupported type list"):
            s.sql.exec("INSERT INTO t VALUES (?)", [1])
        with pytest.raises(StorageError, match="bindings"):
            s.sql.exec("INSERT INTO t VALUES (?)", 1, 2)
        with pytest.raises(StorageError, match="NOT NULL"):
            s.sql.exec("INSERT INTO t VALUES (1); INSERT INTO t VALUES (NULL)")
        assert s.sql.exec("SELECT count(*) AS n FROM t").one()["n"] == 0
        with pytest.raises(StorageError, match="FOREIGN KEY"):
            s.sql.exec(
                "CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(p REFERENCES p(id)); INSERT INTO c VALUES (7)"
            )

    await run_in(rt, "binding", body)


async def test_transaction_commit_rollback_and_exception(rt):
    async def body(s):
        await s.put("n", 1)

        async def ok(txn):
            await txn.put("n", (await txn.get("n")) + 1)
            await txn.put("other", True)
            return "done"

        assert await s.transaction(ok) == "done"
        assert await s.get("n") == 2

        async def fails(txn):
            await txn.put("n", 100)
            raise KeyError("nope")

        with pytest.raises(KeyError):
            await s.transaction(fails)
        assert await s.get("n") == 2

        async def rolls_back(txn):
            await txn.put("n", 50)
            txn.rollback()
            return "rolled"

        assert await s.transaction(rolls_back) == "rolled"
        assert await s.get("n") == 2

        def sync_ok():
            s.sql.exec("CREATE TABLE IF NOT EXISTS t(x)")
            s.sql.exec("INSERT INTO t VALUES (1)")
            return 7

        assert s.transaction_sync(sync_ok) == 7

        def sync_fail():
            s.sql.exec("INSERT INTO t VALUES (2)")
            raise RuntimeError("undo")

        with pytest.raises(RuntimeError):
            s.transaction_sync(sync_fail)
        assert s.sql.exec("SELECT count(*) AS n FROM t").one()["n"] == 1

        async def not_sync():
            return 1

        with pytest.raises(TypeError, match="sync function"):
            s.transaction_sync(not_sync)

    await run_in(rt, "txn", body)

    async def after(s):
        return await s.get("n"), await s.get("other"), s.sql.exec("SELECT count(*) AS n FROM t").one()["n"]

    assert await run_in(rt, "txn", after) == (2, True, 1)


async def test_reads_never_create_files(rt, data_dir):
    async def body(s):
        assert await s.get("x") is None
        assert await s.list() == {}
        assert s.sql.database_size == 0
        assert await s.get_alarm() is None

    await run_in(rt, "ghost", body)
    assert not list((data_dir / "Store").rglob("*.sqlite"))


async def test_alarm_value_validation(rt):
    async def body(s):
        with pytest.raises(ValueError, match="naive"):
            await s.set_alarm(dt.datetime(2030, 1, 1))
        with pytest.raises(TypeError, match="epoch milliseconds"):
            await s.set_alarm("tomorrow")
        await s.set_alarm(1234.6)
        assert await s.get_alarm() == 1235
        await s.set_alarm(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
        assert await s.get_alarm() == 1893456000000

    await run_in(rt, "alarmval", body)


async def test_sync_commits(rt, data_dir, make_runtime):
    async def call(instance):
        s = instance.ctx.storage
        await s.put("x", 1)
        await s.sync()
        assert not instance.ctx._host.storage.dirty  # the engine has nothing left to commit

    ns = rt.env.STORE
    await rt.call(ns, ns.id_from_name("sync"), call)
