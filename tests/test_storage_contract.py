"""Two contract points of the storage API (issue 16, item 9): a wrong type is
a TypeError everywhere (API.md §4), and sql.exec allows the PRAGMAs
Cloudflare's SQLite allows, as reads, plus ``defer_foreign_keys`` as a write."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import dotrio
from dotrio import StorageError


class Store(dotrio.DurableObject):
    """Runs the test's function on its storage."""


async def run_in(rt: dotrio.Runtime, fn: Callable[[Any], Awaitable[Any]], name: str = "x") -> Any:
    async def call(instance: Any) -> Any:
        return await fn(instance.ctx.storage)

    ns = rt.env.S
    return await rt.call(ns, ns.id_from_name(name), call)


@pytest.fixture
async def rt(tmp_path: Path) -> Any:
    async with dotrio.Runtime(bindings={"S": Store}, data_dir=tmp_path / "d") as runtime:
        yield runtime


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.list(limit="3"),
        lambda s: s.list(limit=3.0),
        lambda s: s.list(limit=True),
        lambda s: s.list(prefix=3),
        lambda s: s.list(start=b"a"),
        lambda s: s.list(start_after=1),
        lambda s: s.list(end=2),
        lambda s: s.list(reverse="yes"),
        lambda s: s.get(1),
        lambda s: s.get(["a", 1]),
        lambda s: s.put(1, "v"),
        lambda s: s.put({1: "v"}),
        lambda s: s.delete(1.5),
        lambda s: s.delete(["a", None]),
        lambda s: s.set_alarm("1700000000000"),
        lambda s: s.transaction("not a function"),
    ],
    ids=[
        "list-limit-str", "list-limit-float", "list-limit-bool", "list-prefix", "list-start", "list-start_after",
        "list-end", "list-reverse", "get", "get-list", "put", "put-dict", "delete", "delete-list", "set_alarm",
        "transaction",
    ],
)
async def test_a_wrong_type_is_a_type_error_everywhere(rt: dotrio.Runtime, call: Any) -> None:
    async def body(s: Any) -> None:
        await s.put("a", 1)
        with pytest.raises(TypeError) as info:
            await call(s)
        # The message says what was expected, not just that something failed.
        assert "must be" in str(info.value) or "takes" in str(info.value), str(info.value)
        assert await s.get("a") == 1

    await run_in(rt, body)


async def test_list_limit_values(rt: dotrio.Runtime) -> None:
    async def body(s: Any) -> None:
        await s.put({"a": 1, "b": 2, "c": 3})
        for bad in (0, -1):
            with pytest.raises(ValueError, match="limit must be a positive int"):
                await s.list(limit=bad)
        assert await s.list(limit=2) == {"a": 1, "b": 2}
        with pytest.raises(TypeError, match="limit must be a positive int or None, got str '3'"):
            await s.list(limit="3")

    await run_in(rt, body)


async def test_transaction_sync_takes_a_function(rt: dotrio.Runtime) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(TypeError, match="transaction_sync\\(\\) takes a sync function fn\\(\\), got int"):
            s.transaction_sync(3)

    await run_in(rt, body)


SCHEMA = (
    "CREATE TABLE p(id INTEGER PRIMARY KEY);"
    "CREATE TABLE c(id INTEGER PRIMARY KEY, p INTEGER REFERENCES p(id));"
    "CREATE INDEX c_p ON c(p)"
)


@pytest.mark.parametrize(
    "query, expected",
    [
        ("PRAGMA foreign_keys", [{"foreign_keys": 1}]),
        ("PRAGMA defer_foreign_keys", [{"defer_foreign_keys": 0}]),
        ("PRAGMA foreign_key_list(c)", None),
        ("PRAGMA foreign_key_check", []),
        ("PRAGMA foreign_key_check(c)", []),
        ("PRAGMA index_list(c)", None),
        ("PRAGMA index_info(c_p)", [{"seqno": 0, "cid": 1, "name": "p"}]),
        ("PRAGMA index_xinfo(c_p)", None),
        ("PRAGMA quick_check", [{"quick_check": "ok"}]),
        ("PRAGMA quick_check(c)", [{"quick_check": "ok"}]),
        ("PRAGMA optimize", []),
        ("SELECT * FROM pragma_foreign_keys", [{"foreign_keys": 1}]),
    ],
)
async def test_cloudflare_pragmas_are_allowed_as_reads(rt: dotrio.Runtime, query: str, expected: Any) -> None:
    async def body(s: Any) -> Any:
        if "optimize" in query:
            # KV traffic first: PRAGMA optimize then analyzes the runtime's own table too.
            await s.put({f"k{i}": i for i in range(3000)})
            await s.sync()
            for i in range(100):
                await s.get(f"absent{i}")  # misses the cache: reads _dotrio_kv
        s.sql.exec(SCHEMA)
        s.sql.exec("INSERT INTO p VALUES (1); INSERT INTO c VALUES (1, 1)")
        return s.sql.exec(query).to_array()

    rows = await run_in(rt, body)
    if expected is None:
        assert rows, f"{query} returned no rows"
    else:
        assert rows == expected


@pytest.mark.parametrize(
    "query",
    ["PRAGMA foreign_keys=OFF", "PRAGMA foreign_keys = 0", "PRAGMA optimize=0x10002", "PRAGMA journal_mode=DELETE",
     "PRAGMA synchronous", "PRAGMA writable_schema=ON"],
)
async def test_other_pragmas_and_settings_stay_refused(rt: dotrio.Runtime, query: str) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(StorageError, match="PRAGMA"):
            s.sql.exec(query)
        assert s.sql.exec("PRAGMA foreign_keys").one() == {"foreign_keys": 1}

    await run_in(rt, body)


async def test_defer_foreign_keys_is_allowed_as_a_write_for_migrations(tmp_path: Path) -> None:
    """A migration tool defers foreign keys inside a transaction and copies
    rows children first; the check happens at the commit, which succeeds once
    the parents are there (and resets the object, storing nothing, if not)."""
    data_dir = tmp_path / "d"
    async with dotrio.Runtime(bindings={"S": Store}, data_dir=data_dir) as rt:

        async def body(s: Any) -> Any:
            s.sql.exec(SCHEMA)

            def migrate() -> None:
                s.sql.exec("PRAGMA defer_foreign_keys = ON")
                assert s.sql.exec("PRAGMA defer_foreign_keys").one() == {"defer_foreign_keys": 1}
                s.sql.exec("INSERT INTO c VALUES (1, 7)")  # its parent comes next
                s.sql.exec("INSERT INTO p VALUES (7)")

            s.transaction_sync(migrate)
            return s.sql.exec("SELECT c.id, p.id AS parent FROM c JOIN p ON c.p = p.id").to_array()

        assert await run_in(rt, body) == [{"id": 1, "parent": 7}]

        async def dangling(s: Any) -> None:
            await s.put("marker", "batch")
            s.sql.exec("PRAGMA defer_foreign_keys = ON")
            s.sql.exec("INSERT INTO c VALUES (2, 99)")  # no parent, ever

        with pytest.raises(dotrio.ObjectResetError, match="FOREIGN KEY constraint failed"):
            await run_in(rt, dangling)
    # Committed, the dangling batch is not, and foreign keys are checked at once again.
    async with dotrio.Runtime(bindings={"S": Store}, data_dir=data_dir) as rt:

        async def after(s: Any) -> Any:
            assert await s.get("marker") is None
            with pytest.raises(StorageError, match="FOREIGN KEY"):
                s.sql.exec("INSERT INTO c VALUES (3, 99)")
            return s.sql.exec("SELECT id FROM c").to_array(), s.sql.exec("PRAGMA defer_foreign_keys").one()

        assert await run_in(rt, after) == ([{"id": 1}], {"defer_foreign_keys": 0})
