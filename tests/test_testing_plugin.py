"""dotrio.testing, the pytest plugin for users' own objects, tested the way a
user meets it: inner pytest runs (pytester, in-process) over test files that
use its fixtures and helpers.

Each inner run holds many inner tests and asserts the exact outcome counts,
so a helper that silently did nothing would fail an inner assertion and show
up here as a failed inner test."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

# "no:dotrio" keeps an installed entry point from registering the module a
# second time under its entry-point name; "-p dotrio.testing" then loads it
# whether or not the package's entry points are installed.
PLUGIN_ARGS = (
    "-p", "no:dotrio", "-p", "dotrio.testing", "-p", "no:cacheprovider",
    # The module may already be imported (by the outer run), so it cannot be rewritten.
    "-W", "ignore::pytest.PytestAssertRewriteWarning",
)

OBJECTS = '''
import time
import pytest
import trio
import trio.testing
import dotrio
from dotrio import DurableObject, Request, Response, WebSocketPair
from dotrio.testing import (
    advance, evict, list_durable_object_ids, run_durable_object_alarm,
    run_in_durable_object, runtime_of,
)


class Counter(DurableObject):
    constructed = 0

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        Counter.constructed += 1
        self.hits = 0

    async def hit(self) -> int:
        self.hits += 1
        n = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", n)
        return n

    async def read(self, key):
        return await self.ctx.storage.get(key)

    async def arm(self, delay_ms: int) -> None:
        await self.ctx.storage.set_alarm(self.now_ms() + delay_ms)

    def now_ms(self) -> int:
        import time as _t
        return int(_t.time() * 1000)

    async def alarm(self, info) -> None:
        fired = (await self.ctx.storage.get("fired") or 0) + 1
        await self.ctx.storage.put("fired", fired)
        await self.ctx.storage.put("alarm_seen", await self.ctx.storage.get_alarm())
        if await self.ctx.storage.get("rearm"):
            await self.ctx.storage.set_alarm(self.now_ms() + 60_000)

    async def nap(self, seconds: float) -> str:
        await trio.sleep(seconds)
        return "rested"

    async def fetch(self, request: Request) -> Response:
        client, server = WebSocketPair()
        self.ctx.accept_websocket(server)
        return Response(status=101, web_socket=client)

    async def websocket_message(self, ws, message):
        ws.send(f"{Counter.constructed}:{message}")
'''


def write_objects(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(objects=OBJECTS)


def run_inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess(*PLUGIN_ARGS, *args)


def test_fixtures_and_helpers_against_a_live_object(pytester: pytest.Pytester) -> None:
    write_objects(pytester)
    pytester.makepyfile(
        test_helpers='''
from objects import *


async def test_run_in_durable_object_sees_the_live_instance(dotrio_runtime_factory):
    async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("a")
        assert await stub.hit() == 1
        # The very instance the RPC ran on: its in-memory attribute, not a copy.
        assert await run_in_durable_object(stub, lambda obj, ctx: obj.hits) == 1
        assert await run_in_durable_object(stub, lambda obj, ctx: ctx.id == stub.id)

        async def write(obj, ctx):
            await ctx.storage.put("from-test", [1, 2])
            return obj

        instance = await run_in_durable_object(stub, write)
        assert isinstance(instance, Counter)
        assert await stub.read("from-test") == [1, 2]
        assert runtime_of(stub) is rt and runtime_of(rt.env.COUNTER) is rt


async def test_run_in_durable_object_propagates_errors_and_keeps_earlier_writes(dotrio_runtime_factory):
    async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("a")

        async def fail(obj, ctx):
            await ctx.storage.put("before", 1)
            raise LookupError("inner")

        with pytest.raises(LookupError, match="inner"):
            await run_in_durable_object(stub, fail)
        assert await stub.read("before") == 1


async def test_run_durable_object_alarm(dotrio_runtime_factory):
    async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("a")
        assert await run_durable_object_alarm(stub) is False
        await stub.arm(3_600_000)
        assert await run_durable_object_alarm(stub) is True
        assert await stub.read("fired") == 1
        assert await stub.read("alarm_seen") is None  # hidden while alarm() runs
        assert await run_in_durable_object(stub, lambda o, c: c.storage.get_alarm()) is None
        assert await run_durable_object_alarm(stub) is False  # it was removed
        # A handler that sets a new alarm keeps it.
        await run_in_durable_object(stub, lambda o, c: c.storage.put("rearm", True))
        await stub.arm(1)
        assert await run_durable_object_alarm(stub) is True
        assert await run_in_durable_object(stub, lambda o, c: c.storage.get_alarm()) is not None
        assert await run_durable_object_alarm(stub) is True
        assert await stub.read("fired") == 3


async def test_list_durable_object_ids(dotrio_runtime_factory):
    async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
        ns = rt.env.COUNTER
        assert list_durable_object_ids(ns) == []
        await ns.get_by_name("a").hit()
        await ns.get_by_name("b").hit()
        await ns.get_by_name("live-only").read("x")   # activated, never wrote
        expected = sorted(str(ns.id_from_name(n)) for n in ("a", "b", "live-only"))
        assert [str(i) for i in list_durable_object_ids(ns)] == expected
        assert all(i.name is None for i in list_durable_object_ids(ns))
    # Same data dir, new runtime: only objects with stored data remain.
    async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
        ns = rt.env.COUNTER
        assert [str(i) for i in list_durable_object_ids(ns)] == sorted(
            str(ns.id_from_name(n)) for n in ("a", "b")
        )
        assert await ns.get_by_name("a").hit() == 2


async def test_list_durable_object_ids_in_memory(dotrio_runtime_factory):
    async with dotrio_runtime_factory({"COUNTER": Counter}, data_dir=None) as rt:
        ns = rt.env.COUNTER
        await ns.get_by_name("a").hit()
        assert await evict(ns.get_by_name("a")) is True
        assert [str(i) for i in list_durable_object_ids(ns)] == [str(ns.id_from_name("a"))]


async def test_evict_constructs_a_new_instance(dotrio_runtime_factory):
    async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("a")
        assert await evict(stub) is False  # never activated
        await stub.hit()
        before = Counter.constructed
        assert await evict(stub) is True
        assert await evict(stub) is False
        assert await stub.hit() == 2
        assert Counter.constructed == before + 1
        assert await run_in_durable_object(stub, lambda o, c: o.hits) == 1


async def test_evict_hibernates_websockets(dotrio_runtime_factory):
    async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("ws")
        client = (await stub.fetch("https://x/ws")).web_socket
        client.accept()
        client.send("one")
        first = await client.receive()
        assert await evict(stub) is True
        client.send("two")
        second = await client.receive()
        assert int(second.split(":")[0]) == int(first.split(":")[0]) + 1
        assert second.endswith(":two")


async def test_evict_refuses_a_busy_object(dotrio_runtime_factory):
    async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("a")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stub.nap, 10.0)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(RuntimeError, match="busy"):
                await evict(stub)
        assert await evict(stub) is True
'''
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=8)


def test_virtual_time_and_its_opt_outs(pytester: pytest.Pytester) -> None:
    write_objects(pytester)
    pytester.makepyfile(
        test_time='''
from objects import *


async def test_virtual_by_default(dotrio_runtime_factory):
    assert type(trio.lowlevel.current_clock()) is trio.testing.MockClock
    t0 = time.monotonic()
    async with dotrio_runtime_factory({"COUNTER": Counter}, idle_timeout=60.0) as rt:
        stub = rt.env.COUNTER.get_by_name("a")
        await stub.hit()
        before = Counter.constructed
        start = trio.current_time()
        await advance(59)
        await stub.hit()
        assert Counter.constructed == before            # not idle long enough yet
        await advance(61)                               # idle eviction on the way
        await stub.hit()
        assert Counter.constructed == before + 1
        await advance(6 * 3600)
        assert trio.current_time() - start >= 6 * 3600 + 120
    assert time.monotonic() - t0 < 5


async def test_advance_without_autojump(dotrio_runtime_factory, mock_clock):
    # A test's own clock fixture wins; advance() steps it deadline by deadline.
    assert trio.lowlevel.current_clock() is mock_clock
    assert mock_clock.autojump_threshold == float("inf")
    async with dotrio_runtime_factory({"COUNTER": Counter}, idle_timeout=30.0) as rt:
        stub = rt.env.COUNTER.get_by_name("a")
        await stub.hit()
        before = Counter.constructed
        start = trio.current_time()
        await advance(45)
        assert trio.current_time() - start == pytest.approx(45)
        await stub.hit()
        assert Counter.constructed == before + 1


async def test_advance_runs_work_that_falls_due(dotrio_runtime_factory):
    async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("a")
        async with trio.open_nursery() as nursery:
            results = []

            async def call():
                results.append(await stub.nap(30))

            nursery.start_soon(call)
            await advance(29)
            assert results == []
            await advance(1)
            assert results == ["rested"]


@pytest.mark.dotrio(real_time=True)
async def test_real_time_marker(dotrio_runtime_factory):
    assert not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
        await rt.env.COUNTER.get_by_name("a").hit()
        t0 = time.monotonic()
        await advance(0.05)
        assert time.monotonic() - t0 >= 0.05


@pytest.mark.trio
async def test_untouched_without_dotrio_fixtures():
    assert not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)


def test_sync_tests_untouched(tmp_path):
    assert tmp_path.exists()
'''
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=6)


def test_dotrio_runtime_fixture_from_marker_config_and_ini(pytester: pytest.Pytester) -> None:
    write_objects(pytester)
    pytester.makefile(
        ".toml",
        dotrio="""
data_dir = "ignored-by-the-fixture"
[vars]
GREETING = "hello"
[[durable_objects.bindings]]
name = "COUNTER"
class_name = "objects:Counter"
""",
    )
    pytester.makepyfile(
        test_fixture='''
from pathlib import Path
from objects import *


@pytest.mark.dotrio(bindings={"C": Counter}, vars={"X": 1})
async def test_from_marker_bindings(dotrio_runtime, dotrio_data_dir):
    assert dotrio_runtime.env.X == 1
    assert await dotrio_runtime.env.C.get_by_name("a").hit() == 1
    assert dotrio_runtime.data_dir == dotrio_data_dir.resolve()


@pytest.mark.dotrio(config="dotrio.toml")
async def test_from_marker_config(dotrio_runtime, dotrio_data_dir):
    assert dotrio_runtime.env.GREETING == "hello"
    stub = dotrio_runtime.env.COUNTER.get_by_name("a")
    assert await stub.hit() == 1
    assert any(dotrio_data_dir.rglob("*.sqlite"))
    assert not Path("ignored-by-the-fixture").exists()


async def test_from_ini(dotrio_runtime):
    assert dotrio_runtime.env.GREETING == "hello"
    assert type(trio.lowlevel.current_clock()) is trio.testing.MockClock


async def test_factory_rejects_both_or_neither(dotrio_runtime_factory):
    with pytest.raises(TypeError):
        dotrio_runtime_factory()
    with pytest.raises(TypeError):
        dotrio_runtime_factory({"C": Counter}, config="dotrio.toml")
'''
    )
    pytester.makeini("[pytest]\ndotrio_config = dotrio.toml\n")
    result = run_inner(pytester)
    result.assert_outcomes(passed=4)


def test_dotrio_runtime_without_configuration_explains(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_unconfigured="""
async def test_needs_config(dotrio_runtime):
    pass
"""
    )
    result = run_inner(pytester)
    # Raised inside pytest-trio's run of the fixture, so it fails the test.
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the dotrio_runtime fixture needs @pytest.mark.dotrio(bindings=*"])


def test_missing_pytest_trio_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_no_trio="""
async def test_x(dotrio_runtime_factory):
    pass
"""
    )
    result = pytester.runpytest_inprocess("-p", "no:trio", "-p", "no:dotrio", "-p", "dotrio.testing")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*uses dotrio's async fixtures, which need pytest-trio*"])


def test_the_entry_point_names_this_module() -> None:
    # pytest finds the plugin through this entry point once dotrio is installed.
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["entry-points"]["pytest11"] == {"dotrio": "dotrio.testing"}


# ---- virtual time under every pytest-trio configuration -----------------------------------

# One inner file, run under each configuration below: every test in it must get
# the MockClock, so an hour of advance() takes no real time.
VIRTUAL_EVERYWHERE = '''
from objects import *

HOUR = 3600


async def check_virtual(rt):
    assert type(trio.lowlevel.current_clock()) is trio.testing.MockClock
    t0 = time.monotonic()
    stub = rt.env.COUNTER.get_by_name("a")
    await stub.arm(HOUR * 1000)
    start = trio.current_time()
    await advance(HOUR + 1)
    assert trio.current_time() - start >= HOUR + 1
    assert await stub.read("fired") == 1          # the alarm fired on the way
    assert time.monotonic() - t0 < 5


async def test_factory(dotrio_runtime_factory):
    async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
        await check_virtual(rt)


@pytest.mark.dotrio(bindings={"COUNTER": Counter})
async def test_runtime_fixture(dotrio_runtime):
    await check_virtual(dotrio_runtime)


@pytest.mark.trio
async def test_explicit_trio_marker(dotrio_runtime_factory):
    async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
        await check_virtual(rt)


class TestInAClass:
    @pytest.mark.dotrio(bindings={"COUNTER": Counter})
    async def test_method(self, dotrio_runtime):
        await check_virtual(dotrio_runtime)


def test_sync_test_with_data_dir(dotrio_data_dir):
    assert not dotrio_data_dir.exists()


@pytest.mark.dotrio
async def test_marker_alone_without_fixtures():
    assert type(trio.lowlevel.current_clock()) is trio.testing.MockClock
    t0 = time.monotonic()
    await advance(3600)
    assert time.monotonic() - t0 < 5
'''

# A stand-in for qtrio (which needs Qt): a runner that honours clock= as
# qtrio.run does, and records that it ran.
FAKE_QTRIO = '''
import trio

def run(fn, *args, clock=None, instruments=()):
    with open("qtrio-runs.txt", "a") as f:
        f.write(type(clock).__name__ + "\\n")
    return trio.run(fn, *args, clock=clock, instruments=instruments)
'''


@pytest.mark.parametrize(
    "ini",
    [
        "",
        "trio_mode = true",
        "trio_mode = false",
        "trio_mode = true\ntrio_run = trio",
        "trio_run = trio",
        "trio_mode = true\ntrio_run = qtrio",
        "trio_run = qtrio",
    ],
    ids=["no-ini", "trio_mode", "trio_mode-false", "trio_mode+trio_run=trio", "trio_run=trio",
         "trio_mode+trio_run=qtrio", "trio_run=qtrio"],
)
def test_virtual_time_under_every_configuration(pytester: pytest.Pytester, ini: str) -> None:
    write_objects(pytester)
    pytester.makepyfile(qtrio=FAKE_QTRIO, test_everywhere=VIRTUAL_EVERYWHERE)
    pytester.syspathinsert()
    pytester.makeini(f"[pytest]\n{ini}\n")
    result = run_inner(pytester)
    result.assert_outcomes(passed=6)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    if "qtrio" in ini:
        # The qtrio runner really ran the 5 async tests, with the virtual clock.
        assert (pytester.path / "qtrio-runs.txt").read_text().split() == ["MockClock"] * 5
    else:
        assert not (pytester.path / "qtrio-runs.txt").exists()


def test_a_runner_from_a_marker_gets_the_clock(pytester: pytest.Pytester) -> None:
    write_objects(pytester)
    pytester.makepyfile(
        test_runner='''
from objects import *

seen = []

def my_run(fn, *, clock=None, instruments=()):
    seen.append(clock)
    return trio.run(fn, clock=clock, instruments=instruments)

pytestmark = pytest.mark.trio(run=my_run)


async def test_module_marker_runner(dotrio_runtime_factory, request):
    assert type(trio.lowlevel.current_clock()) is trio.testing.MockClock
    if request.config.getini("trio_mode"):
        # pytest-trio's own rule: trio_mode's marker on the test comes before
        # the module's, so trio.run runs it (with dotrio's clock all the same).
        assert seen == []
    else:
        assert trio.lowlevel.current_clock() is seen[-1]
    async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
        t0 = time.monotonic()
        await advance(3600)
        assert time.monotonic() - t0 < 5


@pytest.mark.trio(run=my_run)
async def test_own_marker_runner(dotrio_runtime_factory, mock_clock):
    # The test's clock fixture is what the runner gets.
    assert seen[-1] is mock_clock is trio.lowlevel.current_clock()
    async with dotrio_runtime_factory({"COUNTER": Counter}):
        await advance(60)
'''
    )
    for ini in ("", "trio_mode = true"):
        pytester.makeini(f"[pytest]\n{ini}\n")
        run_inner(pytester).assert_outcomes(passed=2)


def test_no_virtual_time_is_an_error_that_says_what_to_change(pytester: pytest.Pytester) -> None:
    write_objects(pytester)
    pytester.makepyfile(
        test_no_virtual='''
from hypothesis import HealthCheck, given, settings, strategies as st
from objects import *


def run_ignoring_the_clock(fn, *, clock=None, instruments=()):
    return trio.run(fn, instruments=instruments)


@pytest.mark.trio(run=run_ignoring_the_clock)
async def test_runner_ignores_clock(dotrio_runtime_factory):
    dotrio_runtime_factory({"COUNTER": Counter})


@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers())
async def test_hypothesis_without_clock(dotrio_runtime_factory, n):
    dotrio_runtime_factory({"COUNTER": Counter})


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10))
async def test_hypothesis_with_autojump_clock(dotrio_runtime_factory, autojump_clock, n):
    async with dotrio_runtime_factory({"COUNTER": Counter}, data_dir=None) as rt:
        t0 = time.monotonic()
        await advance(3600 + n)
        assert time.monotonic() - t0 < 5


@pytest.mark.trio
async def test_advance_on_the_real_clock_without_the_fixtures():
    await advance(10)


@pytest.mark.dotrio(real_time=True)
@pytest.mark.trio
async def test_advance_on_the_real_clock_when_asked():
    t0 = time.monotonic()
    await advance(0.05)
    assert time.monotonic() - t0 >= 0.05
'''
    )
    for ini in ("", "trio_mode = true"):
        pytester.makeini(f"[pytest]\n{ini}\n")
        result = run_inner(pytester)
        result.assert_outcomes(passed=2, failed=3)
        out = result.stdout.str()
        assert "10 real seconds" not in out
        result.stdout.fnmatch_lines([
            "*dotrio_runtime_factory needs dotrio's virtual time, but this test runs on the real clock*"
            "which ignored the clock dotrio passed it*",
        ])
        result.stdout.fnmatch_lines([
            "*dotrio_runtime_factory needs dotrio's virtual time*pytest-trio runs Hypothesis tests with "
            "trio.run and no clock*add pytest-trio's autojump_clock fixture*",
        ])
        result.stdout.fnmatch_lines([
            "*advance(10) needs dotrio's virtual time, but this test runs on the real clock*"
            "autojump_clock*real_time=True*",
        ])


def test_fixtures_imported_without_the_plugin_still_refuse_real_time(pytester: pytest.Pytester) -> None:
    # tests/examples does this: fixtures imported in a conftest, plugin hooks not loaded.
    write_objects(pytester)
    pytester.makeconftest("from dotrio.testing import dotrio_data_dir, dotrio_runtime_factory\n")
    pytester.makepyfile(
        test_imported='''
from objects import *


@pytest.mark.trio
async def test_without_a_clock(dotrio_runtime_factory):
    dotrio_runtime_factory({"COUNTER": Counter})


@pytest.mark.trio
async def test_with_autojump_clock(dotrio_runtime_factory, autojump_clock):
    async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
        t0 = time.monotonic()
        await advance(3600)
        assert time.monotonic() - t0 < 5
'''
    )
    # A subprocess: in-process, this outer test's own plugin state would be visible.
    result = pytester.runpytest_subprocess("-p", "no:dotrio", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*dotrio's pytest plugin did not set this test up*autojump_clock*"])
