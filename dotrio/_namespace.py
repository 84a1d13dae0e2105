"""Namespaces and stubs: how callers address objects and talk to them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol, final

from ._http import HeadersInit, Request, Response
from ._ids import DurableObjectId, IdFactory
from ._object import HANDLER_NAMES, DurableObject
from ._util import NoPublicConstructor

__all__ = ["DurableObjectNamespace", "DurableObjectStub", "ObjectDelivery", "rpc_method_allowed"]


class ObjectDelivery(Protocol):
    """What namespaces and stubs need of the runtime: delivering a request or
    an RPC call to an object (the Runtime implements it)."""

    async def fetch_object(self, ns: DurableObjectNamespace, oid: DurableObjectId, request: Request) -> Response: ...

    async def call_object(
        self, ns: DurableObjectNamespace, oid: DurableObjectId, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any: ...

_BASE_NAMES = frozenset(dir(DurableObject))


_allowed_cache: dict[tuple[type, str], str | None] = {}


def rpc_method_allowed(cls: type, name: str) -> str | None:
    """None if ``name`` may be called over RPC on ``cls``, else why not.
    Cached: classes don't change while served, and this runs on every call."""
    key = (cls, name)
    try:
        return _allowed_cache[key]
    except KeyError:
        pass
    why = _rpc_method_allowed(cls, name)
    if len(_allowed_cache) < 65536:
        _allowed_cache[key] = why
    return why


def _rpc_method_allowed(cls: type, name: str) -> str | None:
    if name.startswith("_"):
        return f"{name!r} is private (starts with '_') and cannot be called over RPC"
    if name in HANDLER_NAMES:
        return f"{name!r} is a handler the runtime calls; it cannot be called over RPC"
    attr = inspect.getattr_static(cls, name, None)
    if attr is None or name in _BASE_NAMES and getattr(DurableObject, name, None) is attr:
        return f"{cls.__name__} has no RPC method {name!r}"
    if isinstance(attr, (staticmethod, classmethod)):
        attr = attr.__func__
    if not callable(attr):
        return f"{cls.__name__}.{name} is not a method and cannot be called over RPC"
    return None


class DurableObjectNamespace:
    """``env.BINDING``: makes ids and stubs for one object class."""

    def __init__(self, runtime: ObjectDelivery, name: str, cls: type, ids: IdFactory) -> None:
        self._runtime = runtime
        self.name = name
        self.cls = cls
        self._ids = ids
        self._stubs: dict[str, DurableObjectStub] = {}

    @property
    def runtime(self) -> ObjectDelivery:
        """The Runtime hosting this namespace."""
        return self._runtime

    def id_from_name(self, name: str) -> DurableObjectId:
        """The id of the object named ``name``: the same name always gives the same id."""
        return self._ids.from_name(name)

    def new_unique_id(self, jurisdiction: str | None = None) -> DurableObjectId:
        """A new random id (``jurisdiction`` is accepted for Cloudflare compatibility and ignored)."""
        return self._ids.new_unique()

    def id_from_string(self, hex_id: str) -> DurableObjectId:
        """The id whose ``str()`` is ``hex_id``. ValueError if it is malformed
        or belongs to another namespace or data dir."""
        return self._ids.from_string(hex_id)

    def get(self, oid: DurableObjectId) -> DurableObjectStub:
        """A stub for the object ``oid`` (TypeError if not a DurableObjectId, ValueError if of another namespace)."""
        if not isinstance(oid, DurableObjectId):
            raise TypeError(f"get() takes a DurableObjectId, got {type(oid).__name__}")
        if oid.namespace != self.name:
            raise ValueError(f"id belongs to namespace {oid.namespace!r}, not {self.name!r}")
        return DurableObjectStub._create(self, oid)

    def get_by_name(self, name: str) -> DurableObjectStub:
        """A stub for the object named ``name`` (``get(id_from_name(name))``)."""
        return DurableObjectStub._create(self, self._ids.from_name(name))

    def __repr__(self) -> str:
        return f"<DurableObjectNamespace {self.name} ({self.cls.__name__})>"


@final
class DurableObjectStub(metaclass=NoPublicConstructor):
    """A handle on one object: ``fetch`` and RPC (``await stub.method(...)``)."""

    __slots__ = ("_ns", "id")

    def __init__(self, namespace: DurableObjectNamespace, oid: DurableObjectId) -> None:
        self._ns = namespace
        self.id = oid

    @property
    def name(self) -> str | None:
        """The name the stub was made from (``get_by_name``, ``id_from_name``), else None."""
        return self.id.name

    @property
    def namespace(self) -> DurableObjectNamespace:
        """The namespace the stub belongs to."""
        return self._ns

    async def fetch(
        self,
        url_or_request: str | Request,
        *,
        method: str = "GET",
        headers: HeadersInit = None,
        body: bytes | str | None = b"",
    ) -> Response:
        """Deliver an HTTP request to the object's ``fetch`` handler."""
        if isinstance(url_or_request, Request):
            request = url_or_request
        elif isinstance(url_or_request, str):
            request = Request(url_or_request, method=method, headers=headers, body=body)
        else:
            raise TypeError(f"fetch() takes a URL str or a Request, got {type(url_or_request).__name__}")
        return await self._ns._runtime.fetch_object(self._ns, self.id, request)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        why = rpc_method_allowed(self._ns.cls, name)
        if why is not None:
            raise AttributeError(why)
        runtime = self._ns._runtime
        ns = self._ns
        oid = self.id

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await runtime.call_object(ns, oid, name, args, kwargs)

        call.__name__ = name
        return call

    def __repr__(self) -> str:
        label = f" name={self.id.name!r}" if self.id.name is not None else ""
        return f"<DurableObjectStub {self._ns.name}/{str(self.id)[:12]}…{label}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DurableObjectStub):
            return self.id == other.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)
