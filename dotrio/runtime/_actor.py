"""One live object: its task, its inbox, its gates.

Each live object has one dedicated task (``Actor.run``) that owns a bounded
inbox and, per *generation* (one per constructed instance), a nursery. Events
are run by *runners*: the actor task itself, plus helper tasks started only
when needed. A runner takes the next event and runs its handler inline (no
task per event); if the handler awaits something other than storage while
events are queued, another runner takes the next one, so a handler that
awaits something other than storage lets the next event in, as on Cloudflare.
Events start in arrival order: runners pop the inbox in order and run each
event until its first yield before any other runner runs. Storage calls never
yield (or hold the gate while they wait), which is what keeps events out while
a handler is inside one (the input gate).

A handler's result is released only after every write made before it is
committed (the output gate). A reset (abort, failed commit, failed
block_concurrency_while) cancels the generation: every event that had started
gets ObjectResetError, queued events go to a fresh instance.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import types
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import outcome
import trio

from .._context import current_actor, request_deadline
from .._errors import ObjectResetError, OverloadedError, StorageError
from .._object import DurableObjectState, Env, new_state
from ..storage import StorageEngine, new_user_storage

if TYPE_CHECKING:
    from .._clock import RuntimeClock
    from .._ids import DurableObjectId
    from .._namespace import DurableObjectNamespace
    from .._schedule import Schedule
    from .._websocket import WebSocket, WebSocketRequestResponsePair
    from ..storage import StorageBackend

__all__ = ["Actor", "Event", "ActorStatistics", "ActorRuntime", "ActorAlarms", "ActorSockets"]

log = logging.getLogger("dotrio.runtime")

ActorKey = tuple[str, str]
T = TypeVar("T")


class ActorAlarms(Protocol):
    """The alarm manager, as an actor sees it."""

    def attach(self, actor: Actor) -> None: ...

    def before_flush(self, actors: Iterable[Actor]) -> None: ...

    async def before_output_gate(self, actor: Actor) -> None: ...

    def add_schedule(
        self,
        actor: Actor,
        when: int | float | _dt.datetime | str,
        method: str,
        payload: Any = None,
        *,
        repeat: float | None = None,
        missed: str = "latest",
        tz: str | None = None,
        id: str | None = None,
    ) -> str: ...

    def list_schedules(self, actor: Actor) -> list[Schedule]: ...

    def remove_schedule(self, actor: Actor, sid: str) -> bool: ...


class ActorSockets(Protocol):
    """The hibernatable WebSocket registry, as an actor sees it."""

    def accept(self, actor: Actor, ws: WebSocket, tags: Iterable[str] | None) -> None: ...

    def get_websockets(self, key: ActorKey, tag: str | None = None) -> list[WebSocket]: ...

    def get_tags(self, key: ActorKey, ws: WebSocket) -> list[str]: ...

    def set_auto_response(self, key: ActorKey, pair: WebSocketRequestResponsePair | None) -> None: ...

    def get_auto_response(self, key: ActorKey) -> WebSocketRequestResponsePair | None: ...

    def get_auto_response_timestamp(self, ws: WebSocket) -> _dt.datetime | None: ...


class ActorRuntime(Protocol):
    """What an actor needs of the Runtime hosting it."""

    backend: StorageBackend
    max_queue: int
    env: Env
    clock: RuntimeClock | None
    alarms: ActorAlarms
    websockets: ActorSockets

    def schedule_flush(self, actor: Actor) -> None: ...

    def watch_deadline(self, actor: Actor, event: Event) -> None: ...

    @property
    def accepts_background(self) -> bool: ...

    def start_background(self, fn: Callable[[], Awaitable[None]]) -> None: ...


class Event:
    """One delivery to an object: ``fn(instance)`` and who waits for its outcome."""

    __slots__ = ("fn", "waiter", "callback", "deadline", "running")

    def __init__(
        self,
        fn: Callable[[Any], Awaitable[Any]],
        waiter: trio.lowlevel.Task | None = None,
        callback: Callable[[outcome.Outcome[Any]], None] | None = None,
        deadline: float = math.inf,
    ) -> None:
        self.fn = fn
        self.waiter = waiter
        self.callback = callback
        # Trio time by which the request this event serves must be answered.
        self.deadline = deadline
        # Its handler is suspended mid-way, watched for that deadline.
        self.running = False

    def reply(self, result: outcome.Outcome[Any]) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            trio.lowlevel.reschedule(waiter, result)
        callback = self.callback
        if callback is not None:
            self.callback = None
            callback(result)


class _Generation:
    __slots__ = ("scope", "nursery", "resetting", "reason", "cause", "reset_when_idle", "ready")

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None
        self.nursery: trio.Nursery | None = None
        self.resetting = False
        self.reason = "the object was reset"
        # The failure that reset the object (the ObjectResetError's __cause__).
        self.cause: BaseException | None = None
        self.reset_when_idle = False
        # Constructed (and on_start done): runners deliver events.
        self.ready = False


@dataclass(frozen=True)
class ActorStatistics:
    namespace: str
    id: str
    queued: int
    max_queue: int
    running: int
    gate_holders: int
    generations: int
    dirty: bool
    pins: int


# _drive's "no first step made yet".
_NOT_STEPPED: Any = object()


class Gone(Exception):
    """Internal: the actor was evicted between lookup and submit."""


class Actor:
    """The runtime side of one live object."""

    def __init__(self, runtime: ActorRuntime, namespace: DurableObjectNamespace, oid: DurableObjectId) -> None:
        self.runtime = runtime
        self.namespace = namespace
        self.id = oid
        self.key: ActorKey = (namespace.name, str(oid))
        self.storage = StorageEngine(runtime.backend, namespace.name, str(oid))
        self.user_storage = new_user_storage(self.storage)
        self.storage.attach_gate(self)
        runtime.alarms.attach(self)
        self.instance: Any = None
        self.ctx: DurableObjectState | None = None
        self._inbox: deque[Event] = deque()
        self._max_queue = runtime.max_queue
        # The actor task between generations, waiting for an event.
        self._parked: trio.lowlevel.Task | None = None
        # Runners waiting for events: the actor task (primary) and helpers.
        self._primary_parked: trio.lowlevel.Task | None = None
        self._helpers_parked: list[trio.lowlevel.Task] = []
        # Runners woken or started for the inbox that have not looked at it yet.
        self._wakes = 0
        # >0 while a handler step runs under _drive (the driver commits at its yields).
        self._stepping = 0
        self._gate_holders = 0
        self._running = 0
        self._pins = 0
        self._gen: _Generation | None = None
        self._generations = 0
        self.evicted = False
        self.last_active = trio.current_time()
        self._gated_sends: list[Callable[[], None]] = []
        self._commit_started = False

    # ---- caller side ----------------------------------------------------------------

    def submit(self, event: Event, force: bool = False) -> None:
        if self.evicted:
            raise Gone
        if len(self._inbox) >= self._max_queue and not force:
            raise OverloadedError(
                f"object {self.namespace.name}/{self.id} has {len(self._inbox)} events queued "
                f"(max_queue={self._max_queue}); retry later"
            )
        self._inbox.append(event)
        self.last_active = trio.current_time()
        gen = self._gen
        if gen is None or not gen.ready or gen.resetting:
            parked = self._parked
            if parked is not None:
                self._parked = None
                trio.lowlevel.reschedule(parked)
        elif not self._wakes and not self._gate_holders:
            self._wake_runner(gen)

    # ---- the actor task -------------------------------------------------------------

    async def run(self) -> None:
        # This task was started from whichever task sent the first event: its
        # request's deadline is not this object's.
        request_deadline.set(math.inf)
        try:
            while not self.evicted:
                try:
                    await self._generation()
                except Exception as exc:
                    # Whatever escaped this object's generation (a bug, or a
                    # failure nothing else caught) resets this object only.
                    self.reset(f"{type(exc).__name__}: {exc}", exc)
        finally:
            # Runtime shutdown: nobody will deliver what is still queued.
            while self._inbox:
                self._inbox.popleft().reply(outcome.Error(ObjectResetError("the runtime shut down")))

    async def _next_event(self) -> Event | None:
        while not self._inbox:
            if self.evicted:
                return None
            self._parked = trio.lowlevel.current_task()

            def abort(_: Any) -> trio.lowlevel.Abort:
                self._parked = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        return self._inbox.popleft()

    async def _generation(self) -> None:
        event = await self._next_event()
        if event is None:
            return
        gen = _Generation()
        self._gen = gen
        self._generations += 1
        self._wakes = 0
        try:
            async with trio.open_nursery() as nursery:
                gen.scope = nursery.cancel_scope
                gen.nursery = nursery
                if not await self._construct(event, gen):
                    return
                gen.ready = True
                try:
                    await self._runner(gen, True, event)
                finally:
                    # The generation is ending (reset or eviction): new events wait
                    # for the next one, and no helper may join a closing nursery.
                    gen.ready = False
        finally:
            gen.ready = False
            self.instance = None
            self.ctx = None
            self._gen = None

    async def _construct(self, first: Event, gen: _Generation) -> bool:
        ctx = new_state(self)
        self.ctx = ctx
        current_actor.set(self)
        try:
            instance = self.namespace.cls(ctx, self.runtime.env)
            self.instance = instance
            on_start = getattr(instance, "on_start", None)
            if on_start is not None:
                self.hold_gate()
                try:
                    await on_start()
                finally:
                    self.release_gate()
            await self.output_gate()
        except trio.Cancelled:
            self._inbox.appendleft(first)
            raise
        except Exception as exc:
            self.storage.rollback()
            first.reply(outcome.Error(exc))
            return False
        return True

    def _wake_runner(self, gen: _Generation) -> None:
        """See that a runner comes for the inbox: a parked one (the primary
        first, so that helpers can retire), else a new helper."""
        self._wakes += 1
        task = self._primary_parked
        if task is not None:
            self._primary_parked = None
            trio.lowlevel.reschedule(task)
        elif self._helpers_parked:
            trio.lowlevel.reschedule(self._helpers_parked.pop())
        else:
            assert gen.nursery is not None
            gen.nursery.start_soon(self._runner, gen, False, None)

    async def _take(self, gen: _Generation, primary: bool) -> Event | None:
        """The next event once the gate is free; None when the generation ends."""
        while True:
            if self.evicted or gen.resetting or gen.reset_when_idle:
                return None
            if self._inbox and not self._gate_holders:
                return self._inbox.popleft()
            task = trio.lowlevel.current_task()
            if primary:
                self._primary_parked = task
            else:
                self._helpers_parked.append(task)

            def abort(_: Any) -> trio.lowlevel.Abort:
                if self._primary_parked is task:
                    self._primary_parked = None
                elif task in self._helpers_parked:
                    self._helpers_parked.remove(task)
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
            self._wakes -= 1

    async def _runner(self, gen: _Generation, primary: bool, event: Event | None) -> None:
        """Run events one after the other, each inline in this task. The
        primary (the actor task) lasts the generation; a helper retires when
        another runner is already waiting."""
        if not primary:
            self._wakes -= 1  # the wake that started this helper
            current_actor.set(self)
            request_deadline.set(math.inf)
        while True:
            if event is None:
                event = await self._take(gen, primary)
                if event is None:
                    return
            if self._inbox and not self._wakes and not self._gate_holders:
                # Should this handler yield at a non-storage await, the next event
                # must not wait for it to finish.
                self._wake_runner(gen)
            await self._handle(event, gen)
            event = None
            if gen.resetting or gen.reset_when_idle:
                return
            if not primary and (self._primary_parked is not None or self._helpers_parked):
                return

    async def _handle(self, event: Event, gen: _Generation) -> None:
        deadline = event.deadline
        if deadline != math.inf and trio.current_time() >= deadline:
            # Its request's time ran out while it waited in the inbox: not run.
            event.reply(outcome.Error(OverloadedError(
                f"object {self.namespace.name}/{self.id} did not get to this request before its deadline "
                "(request_timeout); retry later"
            )))
            return
        self._running += 1
        try:
            try:
                if deadline == math.inf:
                    value = await self._drive(event.fn(self.instance))
                else:
                    value = await self._drive_until(event, deadline)
                result: outcome.Outcome[Any] = outcome.Value(value)
            except trio.Cancelled:
                event.reply(outcome.Error(_reset_error(gen)))
                raise
            except Exception as exc:
                if gen.resetting:
                    event.reply(outcome.Error(_reset_error(gen)))
                    return
                result = outcome.Error(exc)
            if gen.resetting:
                event.reply(outcome.Error(_reset_error(gen)))
                return
            try:
                await self.output_gate()
            except trio.Cancelled:
                event.reply(outcome.Error(_reset_error(gen)))
                raise
            except Exception as exc:
                self.reset(_commit_reason(exc), exc)
            if gen.resetting:
                event.reply(outcome.Error(_reset_error(gen)))
                return
            event.reply(result)
        finally:
            self._running -= 1
            self.last_active = trio.current_time()
            if gen.reset_when_idle and not gen.resetting:
                self.reset("block_concurrency_while() raised")

    async def _drive_until(self, event: Event, deadline: float) -> Any:
        """Run the handler under its request's deadline: past it, the handler
        is cancelled (long SQL interrupted, rolled back) and the object reset,
        as Cloudflare resets an object over its limits: the handler stopped at
        an arbitrary point, so neither its uncommitted writes nor the instance's
        memory can be trusted.

        No cancel scope per event (it would cost about as much as a scheduler
        pass per request, and could not be entered after the handler's first
        step anyway): SQL sees the deadline through ``request_deadline`` (the
        storage's progress handler reads it); a handler that suspends is
        watched by the runtime (``Runtime.watch_deadline``), which resets the
        object if the handler is still running when the deadline passes."""
        token = request_deadline.set(deadline)
        try:
            coro = event.fn(self.instance)
            try:
                done, got = self._first_step(coro)
                if done:
                    return got
                event.running = True
                self.runtime.watch_deadline(self, event)
                try:
                    return await self._drive(coro, got)
                finally:
                    event.running = False
            except Exception:
                if trio.current_time() >= deadline:
                    # (an interrupted statement raised, and the handler let it)
                    self._timed_out(deadline)
                raise
        finally:
            request_deadline.reset(token)

    def _timed_out(self, deadline: float) -> NoReturn:
        self.reset(f"a request ran past its deadline (request_timeout) by {trio.current_time() - deadline:.3f} s")
        raise ObjectResetError("the request ran past its deadline (request_timeout)")

    def deadline_passed(self, event: Event) -> None:
        """The runtime's watcher: ``event``'s deadline passed while its handler
        was suspended (reset the object: its handlers are cancelled)."""
        if event.running:
            self.reset(f"a request ran past its deadline (request_timeout) by "
                       f"{trio.current_time() - event.deadline:.3f} s")

    def _first_step(self, coro: Any) -> tuple[bool, Any]:
        """``_drive``'s first step, alone: (True, result) if the handler
        finished in it, else (False, what it yielded to Trio)."""
        self._stepping += 1
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return True, stop.value
        finally:
            self._stepping -= 1
        storage = self.storage
        if storage.pending_writes and not storage.waiting:
            if storage.alarm_pending:
                self.runtime.alarms.before_flush((self,))
            self.flush()
        return False, yielded

    @types.coroutine
    def _drive(self, coro: Any, yielded: Any = _NOT_STEPPED) -> Any:
        """Await the handler coroutine ``coro``, step by step. Before it suspends
        at anything but a storage wait, commit its writes: what the runtime's
        flusher would do a scheduler pass later, without waking it (the output
        gate commits what is left when the handler returns). ``yielded``: the
        handler already made its first step (``_first_step``) and yielded this."""
        storage = self.storage
        value: Any = None
        error: BaseException | None = None
        while True:
            if yielded is _NOT_STEPPED:
                self._stepping += 1
                try:
                    yielded = coro.send(value) if error is None else coro.throw(error)
                except StopIteration as stop:
                    return stop.value
                finally:
                    self._stepping -= 1
                if storage.pending_writes and not storage.waiting:
                    alarms = self.runtime.alarms
                    if storage.alarm_pending:
                        alarms.before_flush((self,))
                    self.flush()
            try:
                value = yield yielded
                error = None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                value = None
                error = exc
            yielded = _NOT_STEPPED

    # ---- gates ------------------------------------------------------------------------

    def hold_gate(self) -> None:
        self._gate_holders += 1

    def release_gate(self) -> None:
        self._gate_holders -= 1
        if not self._gate_holders and self._inbox and not self._wakes:
            gen = self._gen
            if gen is not None and gen.ready:
                self._wake_runner(gen)

    def storage_dirty(self) -> None:
        # Inside a driven handler step the driver (or the output gate) commits;
        # anything else (on_start, wait_until tasks) needs the flusher.
        if not self._stepping:
            self.runtime.schedule_flush(self)

    async def output_gate(self) -> None:
        """Return once every write made so far is committed; then release
        WebSocket messages that were waiting for it."""
        storage = self.storage
        # A new alarm time joins the alarm index's next batch before the commit.
        await self.runtime.alarms.before_output_gate(self)
        if storage.in_transaction:
            await storage.wait_transaction_done()
        if storage.commits_off_thread:
            await storage.commit_async()
        else:
            storage.commit()
        self._release_sends()

    def flush(self) -> None:
        """Commit now if possible (the runtime's flusher calls this after a yield).
        A "power" commit is started in the background instead: its fsync runs in
        a worker thread while other objects go on."""
        storage = self.storage
        if storage.in_transaction or not storage.dirty or storage.committing or storage.waiting:
            return
        if storage.commits_off_thread and self.runtime.accepts_background:
            if not self._commit_started:
                self._commit_started = True
                self.runtime.start_background(self._background_commit)
            return
        try:
            storage.commit()
        except Exception as exc:
            self.reset(_commit_reason(exc), exc)
            return
        self._release_sends()

    async def _background_commit(self) -> None:
        try:
            await self.storage.commit_async()
        except Exception as exc:
            self.reset(_commit_reason(exc), exc)
            return
        finally:
            self._commit_started = False
        self._release_sends()

    def gated_send(self, send: Callable[[], None]) -> None:
        """Run ``send`` once earlier writes are committed (now, if none are pending)."""
        if self.storage.dirty or self._gated_sends:
            self._gated_sends.append(send)
        else:
            send()

    def _release_sends(self) -> None:
        sends = self._gated_sends
        if sends:
            self._gated_sends = []
            for send in sends:
                send()

    # ---- resets -------------------------------------------------------------------------

    def reset(self, reason: str, cause: BaseException | None = None, *, requested: bool = False) -> None:
        """Reset the object: drop uncommitted writes, fail the events that had
        started (ObjectResetError, its ``__cause__`` being ``cause``), build a
        fresh instance for the next one. Logged once per reset, naming the
        object: a failure (``cause``) at ERROR with its traceback, a reset the
        code asked for (``requested``: ``ctx.abort``) at INFO, others at WARNING."""
        gen = self._gen
        try:
            self.storage.rollback()
        except Exception:
            # Nothing uncommitted survives a failed rollback (the connection
            # is dropped); the reset goes on.
            log.debug("rollback during the reset of %s/%s failed", self.namespace.name, self.id, exc_info=True)
        self._gated_sends = []
        if gen is not None and gen.resetting:
            return
        name = f"{self.namespace.name}/{self.id}"
        reason = reason.replace(f"object {name}: ", "")  # storage messages name it too
        if cause is not None:
            log.error("object %s reset: %s", name, reason, exc_info=cause)
        elif requested:
            log.info("object %s reset: %s", name, reason)
        else:
            log.warning("object %s reset: %s", name, reason)
        if gen is None:
            return
        gen.resetting = True
        gen.reason = f"object {name} was reset: {reason}"
        gen.cause = cause
        if gen.scope is not None:
            gen.scope.cancel()

    def abort(self, reason: str | None) -> None:
        self.reset(f"ctx.abort({reason!r})" if reason is not None else "ctx.abort()", requested=True)
        raise ObjectResetError(reason or "the object was aborted")

    async def block_concurrency_while(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        self.hold_gate()
        try:
            return await fn()
        except Exception:
            self.storage.rollback()
            gen = self._gen
            if gen is not None:
                gen.reset_when_idle = True
            raise
        finally:
            self.release_gate()

    def wait_until(self, awaitable: Awaitable[Any]) -> None:
        gen = self._gen
        if gen is None or gen.nursery is None:
            raise RuntimeError("wait_until() called outside an active object")

        async def run() -> None:
            # Work meant to outlive the request: not bound by its deadline.
            request_deadline.set(math.inf)
            self._pins += 1
            try:
                await awaitable
            except Exception as exc:
                # Nobody awaits this work: its failure resets the object (whose
                # state it may have left half-changed) instead of the runtime.
                self.reset(f"a ctx.wait_until() task raised {type(exc).__name__}: {exc}", exc)
            finally:
                self._pins -= 1
                self.last_active = trio.current_time()

        gen.nursery.start_soon(run)

    # ---- ObjectHost: what ctx and the scheduler methods call --------------------------

    def now_ms(self) -> int:
        clock = self.runtime.clock
        assert clock is not None
        return clock.now_ms()

    def accept_websocket(self, ws: WebSocket, tags: Iterable[str] | None) -> None:
        self.runtime.websockets.accept(self, ws, tags)

    def get_websockets(self, tag: str | None) -> list[WebSocket]:
        return self.runtime.websockets.get_websockets(self.key, tag)

    def get_tags(self, ws: WebSocket) -> list[str]:
        return self.runtime.websockets.get_tags(self.key, ws)

    def set_websocket_auto_response(self, pair: WebSocketRequestResponsePair | None) -> None:
        self.runtime.websockets.set_auto_response(self.key, pair)

    def get_websocket_auto_response(self) -> WebSocketRequestResponsePair | None:
        return self.runtime.websockets.get_auto_response(self.key)

    def get_websocket_auto_response_timestamp(self, ws: WebSocket) -> _dt.datetime | None:
        return self.runtime.websockets.get_auto_response_timestamp(ws)

    def add_schedule(
        self,
        when: int | float | _dt.datetime | str,
        method: str,
        payload: Any,
        *,
        repeat: float | None,
        missed: str,
        tz: str | None,
        id: str | None,
    ) -> str:
        return self.runtime.alarms.add_schedule(
            self, when, method, payload, repeat=repeat, missed=missed, tz=tz, id=id
        )

    def list_schedules(self) -> list[Schedule]:
        return self.runtime.alarms.list_schedules(self)

    def remove_schedule(self, id: str) -> bool:
        return self.runtime.alarms.remove_schedule(self, id)

    # ---- eviction -----------------------------------------------------------------------

    def pin(self) -> None:
        """Something keeps this object in memory (a non-hibernatable WebSocket)."""
        self._pins += 1

    def unpin(self) -> None:
        self._pins -= 1
        self.last_active = trio.current_time()

    @property
    def handlers_running(self) -> int:
        """Events whose handler is running now."""
        return self._running

    def is_idle(self) -> bool:
        return (
            not self._running
            and not self._inbox
            and not self._pins
            and not self._gate_holders
            and not self.storage.dirty
            and not self._gated_sends
        )

    def is_busy(self) -> bool:
        """Work is running, queued or uncommitted (open sockets don't count:
        shutdown must not wait for clients to hang up)."""
        return bool(self._running or self._inbox or self.storage.dirty or self._gated_sends)

    def evict(self) -> None:
        """Drop the instance (state lives in storage). Synchronous: once this
        returns the next event for this id builds a new actor."""
        self.evicted = True
        self.storage.close()
        parked = self._parked
        if parked is not None:
            self._parked = None
            trio.lowlevel.reschedule(parked)
        # Waiting runners end the generation.
        waiting = self._helpers_parked
        self._helpers_parked = []
        if self._primary_parked is not None:
            waiting.append(self._primary_parked)
            self._primary_parked = None
        for task in waiting:
            self._wakes += 1
            trio.lowlevel.reschedule(task)

    def statistics(self) -> ActorStatistics:
        return ActorStatistics(
            namespace=self.namespace.name,
            id=str(self.id),
            queued=len(self._inbox),
            max_queue=self._max_queue,
            running=self._running,
            gate_holders=self._gate_holders,
            generations=self._generations,
            dirty=self.storage.dirty,
            pins=self._pins,
        )


def _reset_error(gen: _Generation) -> ObjectResetError:
    """What an event of a reset generation gets: ObjectResetError naming the
    reason, with the failure that caused it (if any) as ``__cause__``."""
    err = ObjectResetError(gen.reason)
    err.__cause__ = gen.cause
    return err


def _commit_reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, StorageError) and "commit failed" in text:
        return text
    return f"commit failed: {text}"
