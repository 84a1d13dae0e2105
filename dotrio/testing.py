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

The plugin needs pytest-trio (the fixtures are async). Importing this module
is cheap: dotrio itself is imported only when a fixture or helper is used, so
test runs that never touch dotrio pay nothing for the plugin.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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

# Tests that use one of these get virtual time (see the module docstring).
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


def _run_virtual(fn: Callable[[], Awaitable[Any]], *, clock: Any = None, instruments: Any = ()) -> Any:
    """pytest-trio's runner with a virtual clock unless the test chose a clock."""
    import trio
    import trio.testing

    if clock is None:
        clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(fn, clock=clock, instruments=instruments)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    users = [item for item in items if _FIXTURES.intersection(getattr(item, "fixturenames", ()))]
    if not users:
        return
    if not config.pluginmanager.has_plugin("trio"):
        raise pytest.UsageError(
            f"{users[0].nodeid} uses dotrio's async fixtures, which need pytest-trio: pip install pytest-trio"
        )
    # Another runner (qtrio, say) was chosen for the whole run: leave it alone.
    if (config.getini("trio_run") or "trio") != "trio":
        return
    for item in users:
        marker = item.get_closest_marker("dotrio")
        if marker is not None and marker.kwargs.get("real_time"):
            item.add_marker(pytest.mark.trio)
            continue
        # pytest-trio takes the first trio marker that names a runner, so a
        # runner the test chose itself comes before this one and wins.
        item.add_marker(pytest.mark.trio(run=_run_virtual))


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
async def dotrio_runtime(dotrio_runtime_factory: RuntimeFactory, request: pytest.FixtureRequest) -> AsyncIterator[Runtime]:
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

    if isinstance(stub_or_namespace, DurableObjectStub):
        return stub_or_namespace.namespace.runtime
    if isinstance(stub_or_namespace, DurableObjectNamespace):
        return stub_or_namespace.runtime
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
        return result  # type: ignore[return-value]

    return await runtime_of(stub).call(ns, stub.id, run)


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
    this takes no real time; on the real clock it sleeps."""
    import trio
    import trio.testing

    if seconds < 0:
        raise ValueError(f"advance() takes a non-negative number of seconds, got {seconds!r}")
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
