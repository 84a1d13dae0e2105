"""The runtime's contract (API.md §1, §2, §7): gates, stubs, RPC, resets, eviction."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

import dotrio
from dotrio import DurableObject, ObjectResetError, OverloadedError, Request, Response


class Counter(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.constructed = True

    async def increment(self, by: int = 1) -> int:
        value = (await self.ctx.storage.get("n") or 0) + by
        await self.ctx.storage.put("n", value)
        return value

    async def get(self) -> int:
        return await self.ctx.storage.get("n") or 0

    async def slow_increment(self, delay: float) -> int:
        # A non-storage await between read and write: other events may interleave.
        value = await self.ctx.storage.get("n") or 0
        await trio.sleep(delay)
        await self.ctx.storage.put("n", value + 1)
        return value + 1

    async def fetch(self, request: Request) -> Response:
        if request.path == "/boom":
            raise KeyError("boom")
        n = await self.increment()
        return Response(f"{request.method} {request.url} n={n}")

    async def echo(self, value):
        return value

    async def make_bad(self):
        return object()

    async def raise_value_error(self, msg):
        await self.ctx.storage.put("before-error", True)
        raise ValueError(msg)

    async def do_abort(self):
        await self.ctx.storage.put("aborted-write", 1)
        self.ctx.abort("testing")
        return "unreachable"

    async def sleep_then(self, delay: float, value):
        await trio.sleep(delay)
        return value

    async def stub_of_self(self):
        return self.env.COUNTER.get(self.ctx.id)

    def _private(self):
        return 1

    not_callable = 5


async def test_rpc_and_fetch_roundtrip(make_runtime):
    async with make_runtime({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("a")
        assert await stub.increment() == 1
        assert await stub.increment(by=5) == 6
        resp = await stub.fetch("https://do.example/x?q=1", method="POST", body=b"hi")
        assert resp.status == 200
        assert resp.text() == "POST https://do.example/x?q=1 n=7"
        assert stub.name == "a"
        assert stub.id.name == "a"


async def test_many_concurrent_increments_lose_nothing(make_runtime):
    async with make_runtime({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("hot")
        async with trio.open_nursery() as n:
            for _ in range(500):
                n.start_soon(stub.increment)
        assert await stub.get() == 500


async def test_interleaving_at_non_storage_await(make_runtime, autojump_clock):
    """As on Cloudflare: a non-storage await lets other events in, so a
    read-sleep-write handler can lose updates; the storage-only one cannot."""
    async with make_runtime({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("interleave")
        values = []

        async def one():
            values.append(await stub.slow_increment(1.0))

        async with trio.open_nursery() as n:
            for _ in range(3):
                n.start_soon(one)
        # All three started before any finished: they all read 0.
        assert values == [1, 1, 1]


async def test_durable_before_answered(make_runtime, data_dir):
    async with make_runtime({"COUNTER": Counter}) as rt:
        assert await rt.env.COUNTER.get_by_name("d").increment(by=41) == 41
    async with make_runtime({"COUNTER": Counter}) as rt2:
        assert await rt2.env.COUNTER.get_by_name("d").get() == 41


async def test_exception_in_rpc_propagates_with_type_and_keeps_writes(make_runtime):
    async with make_runtime({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("e")
        with pytest.raises(ValueError, match="bad thing"):
            await stub.raise_value_error("bad thing")
        # writes before an uncaught exception are committed; the object lives on
        assert await stub.echo("alive") == "alive"

        async def peek(inst):
            return await inst.ctx.storage.get("before-error")

        assert await rt.call(rt.env.COUNTER, stub.id, peek) is True


async def test_fetch_exception_raised_to_in_process_caller(make_runtime):
    async with make_runtime({"COUNTER": Counter}) as rt:
        with pytest.raises(KeyError, match="boom"):
            await rt.env.COUNTER.get_by_name("f").fetch("https://x/boom")


async def test_rpc_names_that_are_not_callable(make_runtime):
    async with make_runtime({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("n")
        for name in ("_private", "fetch_not_there", "alarm", "on_start", "websocket_message", "not_callable"):
            with pytest.raises(AttributeError):
                getattr(stub, name)
        # fetch is the stub's own method, not RPC
        assert callable(stub.fetch)


async def test_rpc_copies_by_value(make_runtime):
    async with make_runtime({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("c")
        arg = {"list": [1, 2, {"x": b"y"}]}
        result = await stub.echo(arg)
        assert result == arg and result is not arg and result["list"] is not arg["list"]
        with pytest.raises(TypeError):
            await stub.echo(object())
        cyclic: list = []
        cyclic.append(cyclic)
        with pytest.raises(ValueError):
            await stub.echo(cyclic)
        with pytest.raises(TypeError):
            await stub.make_bad()
        # ids and stubs pass through
        other = await stub.stub_of_self()
        assert isinstance(other, dotrio.DurableObjectStub) and other.id == stub.id
        assert await stub.echo(stub.id) == stub.id


async def test_abort_resets_and_drops_pending_writes(make_runtime, autojump_clock):
    async with make_runtime({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("ab")
        await stub.increment()
        waiting = []

        async def sleeper():
            try:
                await stub.sleep_then(10, "done")
            except ObjectResetError as e:
                waiting.append(e)

        async with trio.open_nursery() as n:
            n.start_soon(sleeper)
            await trio.sleep(1)
            with pytest.raises(ObjectResetError):
                await stub.do_abort()
        assert len(waiting) == 1  # the event that had started also got reset

        async def peek(inst):
            return await inst.ctx.storage.get("aborted-write")

        assert await rt.call(rt.env.COUNTER, stub.id, peek) is None
        assert await stub.get() == 1  # committed state survived; a new instance answers


class Gate(DurableObject):
    async def on_start(self):
        await self.ctx.storage.put("starts", (await self.ctx.storage.get("starts") or 0) + 1)

    async def hold(self, log: list | None = None):
        async def inner():
            await trio.sleep(5)
            return "held"

        return await self.ctx.block_concurrency_while(inner)

    async def fail_inside(self):
        async def inner():
            await self.ctx.storage.put("inside", 1)
            raise RuntimeError("inner failed")

        return await self.ctx.block_concurrency_while(inner)

    async def ping(self):
        return trio.current_time()

    async def starts(self):
        return await self.ctx.storage.get("starts")

    async def peek(self, key):
        return await self.ctx.storage.get(key)


async def test_block_concurrency_while_holds_other_events(make_runtime, autojump_clock):
    async with make_runtime({"GATE": Gate}) as rt:
        stub = rt.env.GATE.get_by_name("g")
        await stub.ping()
        t0 = trio.current_time()
        times = {}

        async def hold():
            times["hold"] = (await stub.hold(), trio.current_time())

        async def ping():
            times["ping"] = await stub.ping()

        async with trio.open_nursery() as n:
            n.start_soon(hold)
            await trio.sleep(0.5)
            n.start_soon(ping)
        assert times["hold"][0] == "held"
        assert times["ping"] >= t0 + 5  # delivered only after the gate opened


async def test_block_concurrency_while_exception_resets(make_runtime):
    async with make_runtime({"GATE": Gate}) as rt:
        stub = rt.env.GATE.get_by_name("g2")
        assert await stub.starts() == 1
        with pytest.raises(RuntimeError, match="inner failed"):
            await stub.fail_inside()
        assert await stub.peek("inside") is None
        # reset: a new instance ran on_start again
        assert await stub.starts() == 2


async def test_on_start_runs_once_per_activation_and_eviction(make_runtime, autojump_clock):
    async with make_runtime({"GATE": Gate}, idle_timeout=30) as rt:
        stub = rt.env.GATE.get_by_name("ev")
        assert await stub.starts() == 1
        assert await stub.starts() == 1
        assert rt.statistics().live_objects == 1
        await trio.sleep(31)
        assert rt.statistics().live_objects == 0
        assert rt.statistics().evictions == 1
        assert await stub.starts() == 2


class Slow(DurableObject):
    async def wait(self, t):
        await trio.sleep(t)
        return t


async def test_overloaded_when_inbox_full(make_runtime, autojump_clock):
    async with make_runtime({"SLOW": Slow}, max_queue=3) as rt:
        stub = rt.env.SLOW.get_by_name("s")
        errors = []

        async def call():
            try:
                await stub.wait(1)
            except OverloadedError as e:
                errors.append(e)

        async with trio.open_nursery() as n:
            for _ in range(10):
                n.start_soon(call)
        # one running plus three queued at any time: the rest are refused with a clear error
        assert errors, "expected some calls to be refused"
        assert "max_queue=3" in str(errors[0])


class BadCtor(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        raise RuntimeError("constructor exploded")

    async def hi(self):
        return "hi"


async def test_constructor_error_reaches_caller_and_retries(make_runtime):
    async with make_runtime({"BAD": BadCtor}) as rt:
        stub = rt.env.BAD.get_by_name("x")
        for _ in range(2):
            with pytest.raises(RuntimeError, match="constructor exploded"):
                await stub.hi()


class SqlInCtor(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t(x INTEGER)")

    async def add(self, x):
        self.ctx.storage.sql.exec("INSERT INTO t VALUES(?)", x)
        return self.ctx.storage.sql.exec("SELECT sum(x) AS s FROM t").one()["s"]


async def test_constructor_may_use_sql(make_runtime):
    async with make_runtime({"SQL": SqlInCtor}) as rt:
        stub = rt.env.SQL.get_by_name("q")
        assert await stub.add(2) == 2
        assert await stub.add(3) == 5


async def test_ids(make_runtime, tmp_path):
    async with make_runtime({"COUNTER": Counter, "GATE": Gate}) as rt:
        ns = rt.env.COUNTER
        a = ns.id_from_name("room")
        assert a == ns.id_from_name("room")
        assert len(str(a)) == 64 and str(a) == str(a).lower()
        assert ns.id_from_string(str(a)) == a
        assert ns.id_from_string(str(a)).name is None
        u = ns.new_unique_id()
        assert u != ns.new_unique_id() and u.name is None
        with pytest.raises(ValueError, match="64 lowercase hex"):
            ns.id_from_string("abc")
        with pytest.raises(ValueError, match="lowercase hex"):
            ns.id_from_string(str(a).upper())
        with pytest.raises(ValueError, match="does not belong to namespace"):
            rt.env.GATE.id_from_string(str(a))
        with pytest.raises(ValueError, match="namespace"):
            rt.env.GATE.get(a)
    # another data dir: same name, different id, and foreign ids rejected
    async with dotrio.Runtime(bindings={"COUNTER": Counter}, data_dir=tmp_path / "other") as rt2:
        assert rt2.env.COUNTER.id_from_name("room") != a
        with pytest.raises(ValueError, match="does not belong"):
            rt2.env.COUNTER.id_from_string(str(a))


async def test_in_memory_runtime_survives_eviction(autojump_clock):
    async with dotrio.Runtime(bindings={"COUNTER": Counter}, data_dir=None, idle_timeout=5) as rt:
        stub = rt.env.COUNTER.get_by_name("m")
        await stub.increment(by=3)
        await trio.sleep(10)
        assert rt.statistics().live_objects == 0
        assert await stub.get() == 3


def test_runtime_argument_errors():
    with pytest.raises(TypeError, match="DurableObject subclass"):
        dotrio.Runtime(bindings={"X": int})
    with pytest.raises(ValueError, match="idle_timeout"):
        dotrio.Runtime(bindings={"X": Counter}, idle_timeout=-1)
    with pytest.raises(ValueError, match="idle_timeout"):
        dotrio.Runtime(bindings={"X": Counter}, idle_timeout=math.nan)
    with pytest.raises(ValueError, match="max_queue"):
        dotrio.Runtime(bindings={"X": Counter}, max_queue=0)
    with pytest.raises(ValueError, match="durability"):
        dotrio.Runtime(bindings={"X": Counter}, durability="sometimes")


async def test_env_vars_and_statistics(make_runtime):
    async with make_runtime({"COUNTER": Counter}, vars={"GREETING": "hi"}) as rt:
        assert rt.env.GREETING == "hi"
        with pytest.raises(AttributeError, match="NOPE"):
            rt.env.NOPE  # noqa: B018 - the attribute access is what raises
        await rt.env.COUNTER.get_by_name("s").increment()
        stats = rt.statistics()
        assert stats.live_objects == 1 and stats.activations == 1 and stats.events >= 1
