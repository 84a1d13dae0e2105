"""Test your own Durable Objects with pytest: fixtures, helpers and time travel.

This module is a pytest plugin (registered through the ``pytest11`` entry
point, so installing dotrio is enough) and a library of helpers you import in
your tests::

    from dotrio.testing import advance, evict, run_durable_object_alarm, run_in_durable_object

    async def test_counter(dotrio_runtime_factory):
        async with dotrio_runtime_factory({"COUNTER": Counter}) as rt:
            stub = rt.env.COUNTER.get_by_name("a")
            await stub.increment()
            assert await run_in_durable_object(stub, lambda obj, ctx: obj.count) == 1
            await advance(3600)          # virtual time: alarms and evictions fire on the way

Fixtures
--------
``dotrio_runtime_factory``
    Makes ``dotrio.Runtime`` objects (enter them with ``async with``) from
    bindings or from a ``dotrio.toml``, with their data in the test's temporary
    directory. Calling it again in the same test gives a runtime on the same
    data: that is how a test restarts "the server".
``dotrio_runtime``
    An entered runtime built from the ``dotrio`` marker
    (``@pytest.mark.dotrio(bindings={...})`` or ``config="dotrio.toml"``,
    relative to the test file) or, failing that, from the ``dotrio_config`` ini
    option (relative to the rootdir).
``dotrio_data_dir``
    The temporary data dir those runtimes use.

Virtual time
------------
A test that uses any of these fixtures runs under
``trio.testing.MockClock(autojump_threshold=0)`` unless it asks for a clock
fixture itself (pytest-trio's ``mock_clock``/``autojump_clock``) or is marked
``@pytest.mark.dotrio(real_time=True)``. The runtime reads time only through
Trio's clock, so alarms, alarm retries and idle eviction all happen in virtual
time: an hour passes in milliseconds. A test that talks to a real network peer
(a server subprocess, say) must use real time, because an autojumping clock
races ahead while the peer is working.

This holds whatever pytest-trio is told (``trio_mode`` on or off, a
``trio_run`` ini, a test's own ``trio`` marker or runner): the plugin keeps
the runner pytest-trio would choose and hands it the virtual clock. Where that
cannot work (a Hypothesis test, which pytest-trio runs with plain
``trio.run``; a runner that drops ``clock=``), the fixtures and ``advance()``
raise RuntimeError saying why and what to change, rather than letting the test
run on real time.

The plugin needs pytest-trio (the fixtures are async). Importing this module
is cheap: dotrio itself is imported only when a fixture or helper is used, so
test runs that never touch dotrio pay nothing for the plugin.
"""

from __future__ import annotations

import contextvars
import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from ._ids import DurableObjectId
    from ._namespace import DurableObjectNamespace, DurableObjectStub
    from .runtime import Runtime

__all__ = [
    "RuntimeFactory",
    "advance",
    "evict",
    "list_durable_object_ids",
    "run_durable_object_alarm",
    "run_in_durable_object",
    "runtime_of",
]

T = TypeVar("T")

# Tests that use one of these (or the dotrio marker) get virtual time (see the module docstring).
_FIXTURES = frozenset({"dotrio_runtime", "dotrio_runtime_factory", "dotrio_data_dir"})
_MARKER_HELP = (
    "dotrio(bindings=None, config=None, real_time=False, **runtime_kwargs): how the "
    "dotrio_runtime fixture builds its Runtime (config is relative to the test file); "
    "real_time=True runs the test on the real clock instead of virtual time"
)


# ---- pytest hooks -------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "dotrio_config",
        "dotrio.toml for the dotrio_runtime fixture, relative to the rootdir",
        default=None,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)


class _TimePolicy(NamedTuple):
    """What the running test asked for: real time allowed, and why it might
    not have virtual time (said in the error when it does not)."""

    real_time: bool
    hint: str


# Set around each test's call (see pytest_runtest_call); None outside pytest.
_TIME_POLICY: contextvars.ContextVar[_TimePolicy | None] = contextvars.ContextVar(
    "dotrio.testing time policy", default=None
)
_HINT = pytest.StashKey[str]()
_DEFAULT_HINT = (
    "ask for pytest-trio's autojump_clock (or mock_clock) fixture in the test's arguments, "
    "or mark it @pytest.mark.dotrio(real_time=True) if real time is what you want"
)
_HYPOTHESIS_HINT = (
    "pytest-trio runs Hypothesis tests with trio.run and no clock, whatever runner a marker "
    "or the trio_run ini names, so dotrio cannot give them virtual time: add pytest-trio's "
    "autojump_clock fixture to the test's arguments"
)


def _runner_named_by_ini(config: pytest.Config) -> Callable[..., Any]:
    """The runner pytest-trio's ``trio_run`` ini option names (pytest-trio's own
    rule: ``trio`` or ``qtrio``)."""
    import trio

    name = config.getini("trio_run") or "trio"
    if name == "trio":
        return trio.run
    if name == "qtrio":
        import qtrio  # type: ignore[import-not-found]

        return qtrio.run  # type: ignore[no-any-return]
    raise ValueError(f"{name!r} not valid for 'trio_run' config.  Must be one of: trio, qtrio")


def _virtual_runner(item: pytest.Item, chosen: Callable[..., Any] | None) -> Callable[..., Any]:
    """The runner pytest-trio would use for ``item`` (the ``run=`` of its first
    trio marker that names one, else the ``trio_run`` ini option), handed a
    ``MockClock(autojump_threshold=0)`` unless the test took a clock fixture."""

    def run_virtual(fn: Callable[[], Awaitable[Any]], *, clock: Any = None, instruments: Any = ()) -> Any:
        import trio.testing

        run = chosen if chosen is not None else _runner_named_by_ini(item.config)
        if clock is None:
            clock = trio.testing.MockClock(autojump_threshold=0)
        return run(fn, clock=clock, instruments=instruments)

    return run_virtual


def _wants_dotrio(item: pytest.Item) -> bool:
    return bool(_FIXTURES.intersection(getattr(item, "fixturenames", ()))) or (
        item.get_closest_marker("dotrio") is not None
    )


def _test_function(item: pytest.Item) -> Any:
    obj = getattr(item, "obj", None)
    hypothesis = getattr(obj, "hypothesis", None)
    return hypothesis.inner_test if hypothesis is not None else obj


def _wants_real_time(item: pytest.Item) -> bool:
    marker = item.get_closest_marker("dotrio")
    return bool(marker is not None and marker.kwargs.get("real_time"))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    users = [item for item in items if _wants_dotrio(item)]
    if not users:
        return
    if not config.pluginmanager.has_plugin("trio"):
        raise pytest.UsageError(
            f"{users[0].nodeid} uses dotrio's async fixtures, which need pytest-trio: pip install pytest-trio"
        )
    for item in users:
        if not inspect.iscoroutinefunction(_test_function(item)):
            continue  # a sync test (using dotrio_data_dir, say): nothing for Trio to run
        if _wants_real_time(item) or hasattr(getattr(item, "obj", None), "hypothesis"):
            if hasattr(getattr(item, "obj", None), "hypothesis"):
                item.stash[_HINT] = _HYPOTHESIS_HINT
            if item.get_closest_marker("trio") is None:
                item.add_marker(pytest.mark.trio)
            continue
        # pytest-trio runs a test with the run= of the first trio marker that
        # names one (trio_mode appends one naming the trio_run ini's runner);
        # failing that, the ini's. Put ours first: the same runner, plus a
        # virtual clock. Whatever the configuration, a runner that does not
        # honour the clock is caught by _require_virtual_time, not ignored.
        chosen = next(
            (m.kwargs["run"] for m in item.iter_markers("trio") if m.kwargs.get("run") is not None), None
        )
        name = (
            f"{getattr(chosen, '__module__', '?')}.{getattr(chosen, '__qualname__', repr(chosen))}"
            if chosen is not None
            else None
        )
        if name is not None:
            item.stash[_HINT] = (
                f"the test runs under {name}, which ignored the clock dotrio passed it; "
                f"use a runner that accepts clock= (as trio.run does) or {_DEFAULT_HINT}"
            )
        else:
            item.stash[_HINT] = (
                f"the runner named by the trio_run ini option ignored the clock dotrio passed it; {_DEFAULT_HINT}"
            )
        item.add_marker(pytest.mark.trio(run=_virtual_runner(item, chosen)), append=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    # Trio copies the context into the run, so the fixtures and helpers see
    # what this test asked for.
    token = _TIME_POLICY.set(_TimePolicy(_wants_real_time(item), item.stash.get(_HINT, _DEFAULT_HINT)))
    try:
        return (yield)
    finally:
        _TIME_POLICY.reset(token)


def _require_virtual_time(what: str) -> None:
    """Raise unless the running Trio clock is a MockClock or the test asked
    for real time: virtual time never falls back to real time in silence."""
    import trio
    import trio.testing

    try:
        clock = trio.lowlevel.current_clock()
    except RuntimeError:
        return  # not inside trio.run: nothing runs yet
    if isinstance(clock, trio.testing.MockClock):
        return
    policy = _TIME_POLICY.get()
    if policy is not None and policy.real_time:
        return
    hint = policy.hint if policy is not None else (
        "dotrio's pytest plugin did not set this test up (load it with -p dotrio.testing if the "
        "pytest11 entry point is not installed), so ask for pytest-trio's autojump_clock fixture; "
        "outside pytest, pass clock=trio.testing.MockClock(autojump_threshold=0) to trio.run"
    )
    raise RuntimeError(
        f"{what} needs dotrio's virtual time, but this test runs on the real clock "
        f"({type(clock).__module__}.{type(clock).__qualname__}): {hint}"
    )


# ---- fixtures -------------------------------------------------------------------------


class RuntimeFactory:
    """The ``dotrio_runtime_factory`` fixture: makes (unentered) Runtimes whose
    data lives in the test's temporary data dir."""

    def __init__(self, data_dir: Path, base: Path) -> None:
        #: Where the runtimes keep their data (the ``dotrio_data_dir`` fixture).
        self.data_dir = data_dir
        self._base = base

    def __call__(
        self,
        bindings: Mapping[str, type] | None = None,
        *,
        config: str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> Runtime:
        """A Runtime from ``bindings`` or from the ``config`` file (relative to
        the test file), with ``data_dir`` set to the test's data dir unless given
        in ``overrides`` (``data_dir=None`` keeps everything in memory). Other
        ``overrides`` are ``Runtime`` keyword arguments, and win over the file's."""
        from .runtime import Runtime

        _require_virtual_time("dotrio_runtime_factory")
        if (bindings is None) == (config is None):
            raise TypeError("pass either bindings or config=, not both and not neither")
        overrides.setdefault("data_dir", self.data_dir)
        if config is not None:
            return Runtime.from_config(self._base / config, **overrides)
        return Runtime(bindings=bindings, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def dotrio_data_dir(tmp_path: Path) -> Path:
    """Where this test's runtimes keep their data (inside ``tmp_path``)."""
    return tmp_path / "dotrio-data"


@pytest.fixture
def dotrio_runtime_factory(dotrio_data_dir: Path, request: pytest.FixtureRequest) -> RuntimeFactory:
    """Makes Runtimes for this test; use them with ``async with``."""
    return RuntimeFactory(dotrio_data_dir, Path(str(request.path)).parent)


@pytest.fixture
async def dotrio_runtime(
    dotrio_runtime_factory: RuntimeFactory, request: pytest.FixtureRequest
) -> AsyncIterator[Runtime]:
    """An entered Runtime, from the ``dotrio`` marker or the ``dotrio_config`` ini option."""
    marker = request.node.get_closest_marker("dotrio")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    kwargs.pop("real_time", None)
    if "bindings" not in kwargs and "config" not in kwargs:
        ini = request.config.getini("dotrio_config")
        if not ini:
            raise pytest.UsageError(
                "the dotrio_runtime fixture needs @pytest.mark.dotrio(bindings={...}) or "
                "@pytest.mark.dotrio(config='dotrio.toml'), or the dotrio_config ini option"
            )
        kwargs["config"] = Path(str(request.config.rootpath)) / str(ini)
    bindings = kwargs.pop("bindings", None)
    async with dotrio_runtime_factory(bindings, **kwargs) as rt:
        yield rt


# ---- helpers ----------------------------------------------------------------------------


def runtime_of(stub_or_namespace: DurableObjectStub | DurableObjectNamespace) -> Runtime:
    """The Runtime that hosts a stub's object or a namespace."""
    from ._namespace import DurableObjectNamespace, DurableObjectStub

    # Namespaces type their host as the narrow ObjectDelivery Protocol; the
    # host is always the Runtime that made them.
    if isinstance(stub_or_namespace, DurableObjectStub):
        return cast("Runtime", stub_or_namespace.namespace.runtime)
    if isinstance(stub_or_namespace, DurableObjectNamespace):
        return cast("Runtime", stub_or_namespace.runtime)
    raise TypeError(f"expected a DurableObjectStub or DurableObjectNamespace, got {type(stub_or_namespace).__name__}")


def _namespace_of(stub: DurableObjectStub) -> DurableObjectNamespace:
    runtime_of(stub)  # type check
    return stub.namespace


async def run_in_durable_object(stub: DurableObjectStub, fn: Callable[[Any, Any], T | Awaitable[T]]) -> T:
    """Run ``fn(instance, ctx)`` against the object's live instance, as an event
    inside its input gate (activating it if needed), and return what it returns.

    ``fn`` may be sync or async. Its result is not copied: you get the very
    objects the instance holds. Writes it makes pass the output gate before this
    returns, exactly as a handler's would; an exception propagates (writes made
    before it are kept, as on Cloudflare)."""
    ns = _namespace_of(stub)

    async def run(instance: Any) -> T:
        result = fn(instance, instance.ctx)
        if inspect.isawaitable(result):
            result = await result
        return cast("T", result)

    value: T = await runtime_of(stub).call(ns, stub.id, run)
    return value


async def run_durable_object_alarm(stub: DurableObjectStub) -> bool:
    """Run the object's alarm now, if one is set, and remove it (unless the
    handler sets a new one). Returns whether an alarm ran.

    The handler gets ``AlarmInfo(retry_count=0, is_retry=False)``; an exception
    from it propagates to the caller instead of being retried. Use
    :func:`advance` to watch the runtime's own alarm driver (and its retries)
    instead."""
    from ._object import AlarmInfo

    async def fire(instance: Any, ctx: Any) -> bool:
        if await ctx.storage.get_alarm() is None:
            return False
        handler = getattr(instance, "alarm", None)
        if handler is None:
            raise TypeError(f"{type(instance).__name__} has an alarm set but defines no alarm(info) handler")
        # Cleared first, in the same commit as the handler's writes, so that
        # get_alarm() inside the handler is None unless the handler sets one,
        # as with the runtime's own alarms.
        await ctx.storage.delete_alarm()
        await handler(AlarmInfo(retry_count=0, is_retry=False))
        return True

    return await run_in_durable_object(stub, fire)


def list_durable_object_ids(namespace: DurableObjectNamespace) -> list[DurableObjectId]:
    """The ids of the namespace's objects that have stored data or are live in
    memory now, sorted by their hex string. Ids come back without names (as
    on Cloudflare: a name is not stored with the object)."""
    rt = runtime_of(namespace)
    found = set(rt.backend.object_ids(namespace.name))
    found.update(rt.live_object_ids(namespace.name))
    ids = []
    for hex_id in sorted(found):
        try:
            ids.append(namespace.id_from_string(hex_id))
        except ValueError:
            continue  # a stray file that is not one of this namespace's objects
    return ids


async def evict(stub: DurableObjectStub) -> bool:
    """Evict the object now, as the idle sweeper would: the instance is dropped
    and the next event constructs a new one. Hibernatable WebSockets stay open
    (this is how a test makes an object hibernate). Returns False if the object
    was not in memory.

    Work that can finish without time passing (queued events, commits) is
    allowed to finish first. Raises RuntimeError if the object stays busy: a
    handler waiting on a timer or another object, ``wait_until`` work, or a
    standard-mode (non-hibernatable) WebSocket keeping it in memory."""
    import trio.testing

    ns = _namespace_of(stub)
    rt = runtime_of(stub)
    key = (ns.name, str(stub.id))
    for _ in range(100):
        actor = rt.live_actor(key)
        if actor is None:
            return False
        if rt.evict(actor):
            return True
        await trio.testing.wait_all_tasks_blocked()
    assert actor is not None  # the loop returns when it is None
    stats = actor.statistics()
    raise RuntimeError(
        f"cannot evict {ns.name}/{str(stub.id)[:12]}…: it stays busy "
        f"({stats.running} events running, {stats.queued} queued, pinned={stats.pins}); "
        "let its work finish (await advance(...)) or close its standard-mode WebSockets first"
    )


async def advance(seconds: float) -> None:
    """Let ``seconds`` of time pass, running everything that falls due on the
    way in order: alarms (and their retries), scheduled events, idle eviction
    and hibernation. Returns once the work that became due has run as far as it
    can without more time passing.

    Under a ``MockClock`` (the default for tests that use the dotrio fixtures)
    this takes no real time. On the real clock it sleeps, but only in a test
    marked ``@pytest.mark.dotrio(real_time=True)``; anywhere else it raises
    RuntimeError saying why the test has no virtual time and what to change."""
    import trio
    import trio.testing

    if seconds < 0:
        raise ValueError(f"advance() takes a non-negative number of seconds, got {seconds!r}")
    _require_virtual_time(f"advance({seconds!r})")
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock):
        await trio.sleep(seconds)
        await trio.testing.wait_all_tasks_blocked()
        return
    target = trio.current_time() + seconds
    if clock.autojump_threshold == 0:
        # The autojump clock already jumps from one deadline to the next, in
        # order, whenever everything is blocked: sleeping is the cheapest walk.
        await trio.sleep_until(target)
        await trio.testing.wait_all_tasks_blocked()
        return
    while True:
        # wait_all_tasks_blocked wakes before an autojump clock would jump, so
        # each step below runs the work due at one instant before moving on.
        await trio.testing.wait_all_tasks_blocked()
        now = trio.current_time()
        if now >= target:
            return
        upcoming = now + trio.lowlevel.current_statistics().seconds_to_next_deadline
        clock.jump(min(upcoming, target) - now)
