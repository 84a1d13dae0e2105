"""The runtime's registry of hibernatable WebSockets, by object: it outlives
the object instances, answers auto-responses, and posts socket events to the
objects through their input gates."""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import outcome
import trio

from .._errors import OverloadedError
from .._websocket import (
    CLOSED,
    MAX_SOCKETS_PER_OBJECT,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    ActorKey,
    WebSocket,
    WebSocketRequestResponsePair,
    auto_answer,
    auto_response_timestamp,
    bind_hibernatable,
    is_accepted,
    socket_key,
    socket_tags,
)

if TYPE_CHECKING:
    from .._ids import DurableObjectId
    from .._namespace import DurableObjectNamespace
    from ._actor import Actor


class SocketRuntime(Protocol):
    """What the registry needs of the Runtime: finding and posting to objects."""

    @property
    def closing(self) -> bool: ...

    def live_actor(self, key: ActorKey) -> Actor | None: ...

    def find_namespace(self, name: str) -> DurableObjectNamespace | None: ...

    def post(
        self,
        ns: DurableObjectNamespace,
        oid: DurableObjectId,
        fn: Callable[[Any], Awaitable[Any]],
        callback: Callable[[outcome.Outcome[Any]], None] | None = None,
        force: bool = False,
    ) -> None: ...

__all__ = ["WebSocketRegistry", "WebSocketStatistics"]

log = logging.getLogger("dotrio.websocket")


@dataclass(frozen=True)
class WebSocketStatistics:
    objects_with_sockets: int
    hibernatable_sockets: int
    auto_responses: int


class _ObjectSockets:
    __slots__ = ("sockets", "auto")

    def __init__(self) -> None:
        self.sockets: dict[WebSocket, None] = {}
        self.auto: WebSocketRequestResponsePair | None = None


class WebSocketRegistry:
    """Every hibernatable socket of a Runtime, by object. Survives eviction."""

    def __init__(self, runtime: SocketRuntime) -> None:
        self.runtime = runtime
        self._by_object: dict[ActorKey, _ObjectSockets] = {}
        self._auto_responses = 0

    def accept(self, actor: Actor, ws: WebSocket, tags: Iterable[str] | None) -> None:
        if not isinstance(ws, WebSocket):
            raise TypeError(f"accept_websocket() takes a WebSocket, got {type(ws).__name__}")
        if is_accepted(ws):
            raise RuntimeError("this WebSocket was already accepted")
        tag_tuple = tuple(tags) if tags is not None else ()
        if len(tag_tuple) > MAX_TAGS:
            raise ValueError(f"a WebSocket takes at most {MAX_TAGS} tags, got {len(tag_tuple)}")
        for tag in tag_tuple:
            if not isinstance(tag, str):
                raise TypeError(f"WebSocket tags are str, got {type(tag).__name__}")
            if not tag or len(tag) > MAX_TAG_LENGTH:
                raise ValueError(f"a WebSocket tag must be 1 to {MAX_TAG_LENGTH} characters, got {len(tag)}")
        entry = self._by_object.get(actor.key)
        if entry is None:
            entry = self._by_object[actor.key] = _ObjectSockets()
        if len(entry.sockets) >= MAX_SOCKETS_PER_OBJECT:
            raise RuntimeError(f"an object can accept at most {MAX_SOCKETS_PER_OBJECT} WebSockets")
        bind_hibernatable(ws, self, actor.key, tuple(dict.fromkeys(tag_tuple)))
        entry.sockets[ws] = None

    def get_websockets(self, key: ActorKey, tag: str | None = None) -> list[WebSocket]:
        entry = self._by_object.get(key)
        if entry is None:
            return []
        if tag is None:
            return [ws for ws in entry.sockets if ws.ready_state != CLOSED]
        return [ws for ws in entry.sockets if tag in socket_tags(ws) and ws.ready_state != CLOSED]

    def get_tags(self, key: ActorKey, ws: WebSocket) -> list[str]:
        if socket_key(ws) != key:
            raise ValueError("this WebSocket was not accepted by this object")
        return list(socket_tags(ws))

    def set_auto_response(self, key: ActorKey, pair: WebSocketRequestResponsePair | None) -> None:
        if pair is not None and not isinstance(pair, WebSocketRequestResponsePair):
            raise TypeError("set_websocket_auto_response() takes a WebSocketRequestResponsePair or None")
        entry = self._by_object.get(key)
        if entry is None:
            if pair is None:
                return
            entry = self._by_object[key] = _ObjectSockets()
        entry.auto = pair

    def get_auto_response(self, key: ActorKey) -> WebSocketRequestResponsePair | None:
        entry = self._by_object.get(key)
        return None if entry is None else entry.auto

    def get_auto_response_timestamp(self, ws: WebSocket) -> _dt.datetime | None:
        return auto_response_timestamp(ws)

    def live_actor(self, key: ActorKey) -> Actor | None:
        """The live object that holds sockets under ``key`` (their output gate)."""
        return self.runtime.live_actor(key)

    def hibernatable_only(self, actor: Actor) -> bool:
        entry = self._by_object.get(actor.key)
        return entry is not None and bool(entry.sockets)

    def _target(self, ws: WebSocket) -> tuple[Any, Any] | None:
        key = socket_key(ws)
        if key is None:
            return None
        ns = self.runtime.find_namespace(key[0])
        if ns is None:
            return None
        return ns, ns.id_from_string(key[1])

    def _auto_respond(self, ws: WebSocket, data: str | bytes) -> bool:
        key = socket_key(ws)
        entry = self._by_object.get(key) if key is not None else None
        if entry is None or entry.auto is None or not isinstance(data, str) or data != entry.auto.request:
            return False
        self._auto_responses += 1
        auto_answer(ws, entry.auto.response)
        return True

    def _message_event(self, ws: WebSocket, data: str | bytes) -> Any:
        async def run(instance: Any) -> None:
            await instance.websocket_message(ws, data)

        return run

    def deliver_message_nowait(self, ws: WebSocket, data: str | bytes) -> None:
        """Deliver or auto-answer a message; OverloadedError if the object is full."""
        if not self._auto_respond(ws, data):
            self._post(ws, self._message_event(ws, data), "websocket_message", force=False)

    async def deliver_message(self, ws: WebSocket, data: str | bytes) -> None:
        """As deliver_message_nowait, but waits while the object's inbox is full:
        a slow object slows the socket's reader instead of dropping messages."""
        if self._auto_respond(ws, data):
            return
        run = self._message_event(ws, data)
        delay = 0.001
        while True:
            try:
                self._post(ws, run, "websocket_message", force=False)
                return
            except OverloadedError:
                await trio.sleep(delay)
                delay = min(delay * 2, 0.1)

    def deliver_close(self, ws: WebSocket, code: int, reason: str, was_clean: bool) -> None:
        async def run(instance: Any) -> None:
            try:
                handler = getattr(instance, "websocket_close", None)
                if handler is not None:
                    await handler(ws, code, reason, was_clean)
            finally:
                self._forget(ws)

        # A close is never dropped: it bypasses the inbox bound (one per socket).
        if not self._post(ws, run, "websocket_close", force=True):
            self._forget(ws)

    def deliver_error(self, ws: WebSocket, exc: BaseException) -> None:
        async def run(instance: Any) -> None:
            handler = getattr(instance, "websocket_error", None)
            if handler is not None:
                await handler(ws, exc)

        self._post(ws, run, "websocket_error", force=True)

    def _forget(self, ws: WebSocket) -> None:
        key = socket_key(ws)
        entry = self._by_object.get(key) if key is not None else None
        if entry is not None:
            entry.sockets.pop(ws, None)
            if not entry.sockets and entry.auto is None and key is not None:
                del self._by_object[key]

    def _post(self, ws: WebSocket, run: Any, what: str, force: bool) -> bool:
        target = self._target(ws)
        if target is None or self.runtime.closing:
            return False
        ns, oid = target

        def done(result: outcome.Outcome[Any]) -> None:
            if isinstance(result, outcome.Error):
                log.warning("%s handler of %s/%s raised %r", what, ns.name, oid, result.error)

        self.runtime.post(ns, oid, run, done, force=force)
        return True

    def statistics(self) -> WebSocketStatistics:
        return WebSocketStatistics(
            objects_with_sockets=len(self._by_object),
            hibernatable_sockets=sum(len(e.sockets) for e in self._by_object.values()),
            auto_responses=self._auto_responses,
        )
