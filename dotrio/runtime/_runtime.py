"""The embedded runtime: one root nursery hosting every live object.

``async with Runtime(bindings=..., data_dir=...) as rt`` is the whole
lifecycle: objects are activated by their first event, evicted when idle, and
on exit in-flight work is drained, committed, and databases are closed. No
task or thread outlives the block.
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import logging
import math
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import outcome
import trio

from .._clock import RuntimeClock
from .._context import request_deadline
from .._errors import DotrioError, ObjectResetError
from .._http import Request, Response
from .._ids import DurableObjectId, IdFactory
from .._kernels.codec import copy as copy_value
from .._namespace import DurableObjectNamespace, DurableObjectStub
from .._object import DurableObject, Env
from ..storage import DEFAULT_MAX_SQL_RESULT_ROWS, StorageBackend
from ..storage._datadir import SECRET_BYTES, load_or_create_secret, lock_data_dir
from ._actor import Actor, ActorKey, Event, Gone
from ._alarms import AlarmManager

log = logging.getLogger("dotrio.runtime")

__all__ = ["ConfigReader", "Runtime", "RuntimeStatistics", "Namespace", "set_config_reader"]

#: Reads a config file into ``Runtime`` keyword arguments.
ConfigReader = Callable[["str | os.PathLike[str]"], dict[str, Any]]
# The config layer sits above the runtime (it imports user modules and reads
# files; the runtime does neither), so the runtime does not import it: the
# package installs the reader ``Runtime.from_config`` uses (dotrio/__init__.py).
_config_reader: ConfigReader | None = None


def set_config_reader(reader: ConfigReader) -> None:
    """Install the function ``Runtime.from_config`` reads config files with."""
    global _config_reader
    _config_reader = reader

Namespace = DurableObjectNamespace
_PASSTHROUGH = (DurableObjectId, DurableObjectStub)


@dataclass(frozen=True)
class RuntimeStatistics:
    """``rt.statistics()``: counters of a Runtime and its subsystems."""

    live_objects: int
    activations: int
    evictions: int
    events: int
    overloaded: int
    storage: Any
    alarms: Any = None


# The codec says "cannot store ... at value[path]"; across RPC nothing is stored.
_CODEC_MESSAGE = re.compile(r"cannot store (.+?) at value(\S*?)([;:].*)?$", re.S)


def _rpc_copy(value: Any, verb: str, root: str) -> Any:
    """``copy_value`` for an RPC argument (``verb="pass"``) or result
    (``"return"``), with errors worded for RPC: "cannot return value of type
    'generator' from RPC"."""
    try:
        return copy_value(value, _PASSTHROUGH)
    except (TypeError, ValueError) as exc:
        found = _CODEC_MESSAGE.fullmatch(str(exc))
        if found is None:
            raise
        what, path, rest = found.groups()
        where = f" (at {root}{path})" if root or path else ""
        direction = "to" if verb == "pass" else "from"
        raise type(exc)(f"cannot {verb} {what} {direction} RPC{where}{rest or ''}") from None


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isnan(value):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


class Runtime:
    """Hosts Durable Object classes in-process; the same thing the server runs.

    ``async with`` it to run it. With a ``data_dir``, entering takes the data
    dir's lock (one process per data dir), reads its id secret and opens the
    alarm index (rebuilding it from the objects' databases if it is missing,
    empty or corrupt); any of these failing raises
    :class:`~dotrio.DataDirError` naming the file, what is wrong and what to
    do, with nothing left open.

    ``max_sql_result_rows`` (default 100,000) is the most rows one
    ``sql.exec()`` result may have; more raises ``StorageError`` naming the
    limit (building a bigger result would hold every object of the process)."""

    def __init__(
        self,
        bindings: Mapping[str, type],
        data_dir: str | Path | None = None,
        vars: Mapping[str, Any] | None = None,
        idle_timeout: float = 70.0,
        hibernation_timeout: float = 10.0,
        max_queue: int = 1024,
        durability: str = "process",
        pool_size: int = 2048,
        drain_timeout: float = 30.0,
        sqlite_vfs: str | None = None,
        namespace_names: Mapping[str, str] | None = None,
        max_sql_result_rows: int = DEFAULT_MAX_SQL_RESULT_ROWS,
    ) -> None:
        if not isinstance(bindings, Mapping) or not bindings:
            raise TypeError("bindings must be a non-empty mapping of binding name -> DurableObject class")
        for bname, cls in bindings.items():
            if not isinstance(bname, str) or not bname.isidentifier():
                raise ValueError(f"binding name {bname!r} must be a Python identifier")
            if not (isinstance(cls, type) and issubclass(cls, DurableObject)):
                raise TypeError(f"binding {bname!r} must be a DurableObject subclass, got {cls!r}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be a positive int, got {max_queue!r}")
        self.idle_timeout = _positive("idle_timeout", idle_timeout)
        self.hibernation_timeout = _positive("hibernation_timeout", hibernation_timeout)
        self.drain_timeout = _positive("drain_timeout", drain_timeout)
        self.max_queue = max_queue
        self.data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self.backend = StorageBackend(self.data_dir, durability=durability, pool_size=pool_size, vfs=sqlite_vfs,
                                      max_sql_result_rows=max_sql_result_rows)
        self._bindings = dict(bindings)
        # Storage identity of each class (its namespace): the class name unless a
        # migration renamed the class, in which case it keeps its first name so
        # that ids and files stay the same.
        self._namespace_names = dict(namespace_names or {})
        self._vars = dict(vars or {})
        clash = set(self._bindings) & set(self._vars)
        if clash:
            raise ValueError(f"names used both as binding and var: {sorted(clash)}")
        self._actors: OrderedDict[ActorKey, Actor] = OrderedDict()
        # Request deadlines of suspended handlers (watch_deadline).
        self._deadlines: list[tuple[float, int, Actor, Event]] = []
        self._deadline_seq = itertools.count()
        self._deadline_watcher = False
        self._deadline_scope: trio.CancelScope | None = None
        self._prune_at = 4096
        self._namespaces: dict[str, DurableObjectNamespace] = {}
        self._id_factories: dict[str, IdFactory] = {}
        self.env = Env({})
        self.clock: RuntimeClock | None = None
        self._nursery: trio.Nursery | None = None
        self._lifecycle: AbstractAsyncContextManager[None] | None = None
        self._closing = False
        self._dirty: dict[ActorKey, Actor] = {}
        self._flusher_parked: trio.lowlevel.Task | None = None
        self._sweeper_wake = trio.Event()
        self._activations = 0
        self._evictions = 0
        self._events = 0
        self._overloaded = 0
        # Attached by the subsystems that need to see every object.
        from ._websockets import WebSocketRegistry

        self.websockets = WebSocketRegistry(self)
        self.alarms = AlarmManager(self)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], **overrides: Any) -> Runtime:
        """A Runtime as the config file at ``path`` (``dotrio.toml`` or a
        wrangler file) describes it; ``overrides`` replace keyword arguments.
        Raises ConfigError at once on a bad file. The config's worker entry and
        server settings are not part of a Runtime: ``dotrio.server.serve(path)``
        uses them."""
        if _config_reader is None:
            raise RuntimeError("no config reader is installed (import dotrio, which installs it)")
        kwargs = _config_reader(path)
        kwargs.update(overrides)
        return cls(**kwargs)

    # ---- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._lifecycle is not None:
            raise DotrioError("this Runtime is already running: enter it once")
        lifecycle = self._run()
        await lifecycle.__aenter__()
        self._lifecycle = lifecycle
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        lifecycle, self._lifecycle = self._lifecycle, None
        if lifecycle is None:
            raise DotrioError("this Runtime is not running")
        return await lifecycle.__aexit__(exc_type, exc, tb)

    @property
    def running(self) -> bool:
        """True between entering the Runtime and the start of its shutdown."""
        return self._nursery is not None and not self._closing

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        """The whole lifecycle. Everything that can fail at start (the data dir
        lock, the id secret, the alarm index) happens before the root nursery
        opens, and each resource taken is given back by the exit stack if a
        later step fails: a startup error leaves nothing open and is raised
        as itself (a DataDirError saying which file, what and what to do)."""
        with ExitStack() as resources:
            if self.data_dir is not None:
                resources.callback(lock_data_dir(self.data_dir).release)
                secret = load_or_create_secret(self.data_dir)
            else:
                secret = secrets.token_bytes(SECRET_BYTES)
            self.clock = RuntimeClock()
            self._closing = False
            env: dict[str, Any] = dict(self._vars)
            for bname, cls in self._bindings.items():
                ns_name = self._namespace_names.get(cls.__name__, cls.__name__)
                ids = self._id_factories[ns_name] = IdFactory(ns_name, secret)
                ns = DurableObjectNamespace(self, ns_name, cls, ids)
                self._namespaces[ns_name] = ns
                env[bname] = ns
            self.env = Env(env)
            # Runs last (after the nursery has closed and every object is done):
            # commits what is left and closes every database and the index.
            resources.callback(self._shutdown_storage)
            self.alarms.open()
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    try:
                        nursery.start_soon(self._flusher)
                        nursery.start_soon(self._sweeper)
                        self.alarms.start(nursery)
                        yield
                        # The body finished: undelivered alarms stay persisted (and
                        # fire after a restart) while the objects drain.
                        self.alarms.pause()
                        await self.drain(self.drain_timeout)
                    finally:
                        self.alarms.pause()
                        self._closing = True
                        nursery.cancel_scope.cancel()
            finally:
                self._nursery = None

    async def drain(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until no object has work running or queued.
        Returns whether everything went idle."""
        with trio.move_on_after(timeout):
            while True:
                busy = [a for a in self._actors.values() if a.is_busy()]
                if not busy:
                    return True
                for actor in busy:
                    actor.flush()
                await trio.sleep(0.005)
        return False

    def _shutdown_storage(self) -> None:
        for actor in list(self._actors.values()):
            if actor.is_idle() or not actor.handlers_running:
                actor.flush()
            actor.evict()
        self._actors.clear()
        self.alarms.close()
        self.backend.close()

    def statistics(self) -> RuntimeStatistics:
        """Counters of the runtime and its subsystems (objects, storage, alarms), for monitoring."""
        return RuntimeStatistics(
            live_objects=len(self._actors),
            activations=self._activations,
            evictions=self._evictions,
            events=self._events,
            overloaded=self._overloaded,
            storage=self.backend.statistics(),
            alarms=self.alarms.statistics(),
        )

    def namespace(self, name: str) -> DurableObjectNamespace:
        """A namespace by binding name or class name."""
        ns = self.env.get(name)
        if isinstance(ns, DurableObjectNamespace):
            return ns
        try:
            return self._namespaces[name]
        except KeyError:
            raise KeyError(f"no namespace or binding named {name!r}") from None

    @property
    def namespaces(self) -> dict[str, DurableObjectNamespace]:
        """The namespaces by their storage name (the class name unless a migration renamed it)."""
        return dict(self._namespaces)

    # ---- activation -------------------------------------------------------------------

    def _actor_for(self, ns: DurableObjectNamespace, oid: DurableObjectId) -> Actor:
        key = (ns.name, str(oid))
        actor = self._actors.get(key)
        if actor is not None:
            self._actors.move_to_end(key)
            return actor
        if self._closing or self._nursery is None:
            raise DotrioError("the runtime is not running (not entered, or shutting down)")
        actor = Actor(self, ns, oid)
        self._actors[key] = actor
        self._sweeper_wake.set()
        self._activations += 1
        self._nursery.start_soon(actor.run, name=f"dotrio.actor {ns.name}/{str(oid)[:12]}")
        return actor

    def live_actor(self, key: ActorKey) -> Actor | None:
        """The live actor of ``(namespace, hex id)``, or None if not activated."""
        return self._actors.get(key)

    def find_namespace(self, name: str) -> DurableObjectNamespace | None:
        """The namespace whose storage name is ``name`` (class name unless renamed), or None."""
        return self._namespaces.get(name)

    def object_hex_id(self, namespace: str, base: bytes) -> str:
        """The full hex id, in namespace ``namespace``, of the object whose id starts with ``base``."""
        return self._id_factories[namespace].hex_from_base(base)

    @property
    def closing(self) -> bool:
        """True once the runtime is shutting down (it accepts no new events)."""
        return self._closing

    @property
    def accepts_background(self) -> bool:
        """Whether :meth:`start_background` can start a task now."""
        return self._nursery is not None and not self._closing

    def start_background(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn()`` in the runtime's nursery (only while :attr:`accepts_background`)."""
        assert self._nursery is not None
        self._nursery.start_soon(fn)

    def submit(self, ns: DurableObjectNamespace, oid: DurableObjectId, event: Event, force: bool = False) -> Actor:
        """Queue ``event`` for the object, activating it if needed."""
        while True:
            actor = self._actor_for(ns, oid)
            try:
                actor.submit(event, force)
            except Gone:
                continue
            except DotrioError:
                self._overloaded += 1
                raise
            self._events += 1
            return actor

    async def call(self, ns: DurableObjectNamespace, oid: DurableObjectId, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run ``fn(instance)`` as an event of the object and return its outcome."""
        event = Event(fn, trio.lowlevel.current_task(), None, request_deadline.get())
        self.submit(ns, oid, event)

        def abort(_: Any) -> trio.lowlevel.Abort:
            # The event still runs (as on Cloudflare a disconnected client does not
            # cancel the object's work); only this caller stops waiting.
            event.waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def post(
        self,
        ns: DurableObjectNamespace,
        oid: DurableObjectId,
        fn: Callable[[Any], Awaitable[Any]],
        callback: Callable[[outcome.Outcome], None] | None = None,
        force: bool = False,
    ) -> None:
        """Queue ``fn(instance)`` without waiting for it (alarms, WebSocket events).
        ``force`` skips the inbox bound, for events that must not be dropped and
        are bounded elsewhere (one close per socket, one alarm per object)."""
        self.submit(ns, oid, Event(fn, None, callback), force=force)

    async def fetch_object(self, ns: DurableObjectNamespace, oid: DurableObjectId, request: Request) -> Response:
        """Deliver ``request`` to the object's ``fetch`` (what ``stub.fetch`` does)."""
        async def run(instance: Any) -> Response:
            response = await instance.fetch(request)
            if not isinstance(response, Response):
                raise TypeError(
                    f"{type(instance).__name__}.fetch() must return a dotrio.Response, got {type(response).__name__}"
                )
            return response

        return await self.call(ns, oid, run)

    async def call_object(
        self, ns: DurableObjectNamespace, oid: DurableObjectId, name: str, args: tuple, kwargs: dict
    ) -> Any:
        """Call the object's RPC method ``name`` with copies of the arguments
        and return a copy of its result (what ``await stub.method(...)`` does)."""
        args = _rpc_copy(args, "pass", "args")
        kwargs = _rpc_copy(kwargs, "pass", "kwargs")

        async def run(instance: Any) -> Any:
            result = getattr(instance, name)(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return _rpc_copy(result, "return", "")

        return await self.call(ns, oid, run)

    # ---- request deadlines --------------------------------------------------------------

    def watch_deadline(self, actor: Actor, event: Event) -> None:
        """Reset ``actor`` if ``event``'s handler (suspended now) is still
        running at its deadline. Only handlers that suspend are watched; the
        entries of those that finish first are dropped as they come up."""
        nursery = self._nursery
        if nursery is None or self._closing:
            return
        heapq.heappush(self._deadlines, (event.deadline, next(self._deadline_seq), actor, event))
        if not self._deadline_watcher:
            self._deadline_watcher = True
            nursery.start_soon(self._watch_deadlines)
        scope = self._deadline_scope
        if scope is not None and event.deadline < scope.deadline:
            scope.deadline = event.deadline
        elif len(self._deadlines) > self._prune_at:
            # Entries of handlers that finished stay until their deadline: drop
            # them now and then (amortized: the next prune waits for twice as many).
            self._deadlines = [e for e in self._deadlines if e[3].running]
            heapq.heapify(self._deadlines)
            self._prune_at = max(4096, 2 * len(self._deadlines))

    async def _watch_deadlines(self) -> None:
        while True:
            with trio.CancelScope() as scope:
                self._deadline_scope = scope
                if self._deadlines:
                    scope.deadline = self._deadlines[0][0]
                await trio.sleep_forever()
            self._deadline_scope = None
            deadlines = self._deadlines
            now = trio.current_time()
            while deadlines and deadlines[0][0] <= now:
                _, _, actor, event = heapq.heappop(deadlines)
                try:
                    actor.deadline_passed(event)
                except Exception:  # one object must not stop the watch for all
                    log.exception("resetting %s/%s at its request deadline failed", actor.namespace.name, actor.id)

    # ---- background tasks --------------------------------------------------------------

    def schedule_flush(self, actor: Actor) -> None:
        """The flusher commits ``actor``'s writes at its next pass."""
        self._dirty[actor.key] = actor
        parked = self._flusher_parked
        if parked is not None:
            self._flusher_parked = None
            trio.lowlevel.reschedule(parked)

    async def _flusher(self) -> None:
        """Commits objects' writes once their handler yields at a non-storage
        await: it can only run when every handler is suspended."""

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._flusher_parked = None
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            if not self._dirty:
                self._flusher_parked = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(abort)
                continue
            dirty = self._dirty
            self._dirty = {}
            self.alarms.before_flush(dirty.values())  # one alarm-index transaction for the pass
            for actor in dirty.values():
                if not actor.evicted:
                    actor.flush()
            if self._dirty:
                await trio.lowlevel.checkpoint()

    async def _sweeper(self) -> None:
        """Evicts objects idle past their timeout, oldest activity first. It
        sleeps until the earliest moment an eviction is possible (and not at all
        while no object is live), so virtual days pass in a few wakeups."""
        shortest = min(self.idle_timeout, self.hibernation_timeout)
        resolution = min(max(shortest / 10.0, 0.01), 1.0)
        while True:
            if not self._actors:
                self._sweeper_wake = trio.Event()
                await self._sweeper_wake.wait()
                continue
            oldest = next(iter(self._actors.values())).last_active
            await trio.sleep_until(max(oldest + shortest, trio.current_time() + resolution))
            now = trio.current_time()
            for actor in list(self._actors.values()):
                if actor.last_active > now - shortest:
                    break
                timeout = (
                    self.hibernation_timeout if self.websockets.hibernatable_only(actor) else self.idle_timeout
                )
                if actor.last_active <= now - timeout and actor.is_idle():
                    self.evict(actor)

    def live_object_ids(self, namespace: str) -> list[str]:
        """Hex ids of the live (activated, not evicted) objects of a namespace
        (binding or class name)."""
        name = self.namespace(namespace).name
        return [key[1] for key in self._actors if key[0] == name]

    def evict(self, actor: Actor) -> bool:
        """Evict ``actor`` now if it is idle. Returns whether it was evicted."""
        if actor.evicted:
            return True
        actor.flush()
        if not actor.is_idle():
            return False
        if self._actors.get(actor.key) is actor:
            del self._actors[actor.key]
        self._dirty.pop(actor.key, None)
        actor.evict()
        self._evictions += 1
        return True
