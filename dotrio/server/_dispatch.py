"""The one dispatcher both front ends call: request in, response out.

Routing, in order:

1. Paths under ``/_dotrio/`` belong to the server itself, with or without a
   worker entry: ``GET /_dotrio/health`` answers 200 with JSON statistics
   (503 ``"draining"`` once a shutdown has begun, so load balancers stop
   sending); anything else there is a 404.
2. A worker entry (``main`` in the config) gets every other request. One
   instance serves the whole server (as one isolate serves many requests on
   Cloudflare): keep per-request state in locals, not on ``self``.
3. Without one, default routing: ``/<binding>/<name>/<rest>`` goes to
   ``env.<binding>.get_by_name(name).fetch(request)`` with the request's full
   original URL. ``name`` is percent-decoded. ``GET /`` lists the bindings
   (plain text); an unknown binding or a missing (empty) name is a 404.

Errors: ``OverloadedError`` -> 503 with ``Retry-After``; ``ObjectResetError``
-> 503 as well (the reset object is rebuilt by the next event, so the
condition is transient and a retry is the right client reaction; the runtime
has logged the reset once, naming the object); a full disk
(``StorageFullError``, as the cause of a reset or uncaught by the handler) ->
503 ``storage full`` with ``Retry-After: 10``; anything else -> 500 with a
short body, logged with its traceback on ``dotrio.server``.
A request that ran past ``request_timeout`` -> 504 (its object was reset).
Bodies never carry exception text.

Access log: one line per request on ``dotrio.access`` when enabled:
``method=GET path=/C/a/ status=200 bytes=2 duration_ms=0.21``; the same
fields are attached to the record (``record.method`` ...) for structured
formatters. Disabled, it costs nothing: not even a clock read.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import Any
from urllib.parse import unquote

import orjson
import trio

from .._config import RESERVED_PREFIX
from .._context import request_deadline
from .._errors import ObjectResetError, OverloadedError, StorageFullError
from .._http import Request, Response
from .._namespace import DurableObjectNamespace, DurableObjectStub
from .._object import WorkerEntrypoint
from ..runtime import Runtime

__all__ = ["Dispatcher", "WorkerContext", "HEALTH_PATH", "DEFAULT_REQUEST_TIMEOUT"]

log = logging.getLogger("dotrio.server")
access_log = logging.getLogger("dotrio.access")

HEALTH_PATH = RESERVED_PREFIX + "health"
# Seconds a client is asked to wait after "storage full": freeing disk space
# takes an operator, not a moment.
STORAGE_FULL_RETRY_AFTER = 10
#: Seconds a request may take (``[server] request_timeout``).
DEFAULT_REQUEST_TIMEOUT = 30.0
# Stubs made by default routing, kept so a hot object costs a dict lookup, not
# two HMACs. Bounded: oldest-first eviction once full.
_STUB_CACHE_SIZE = 4096


class WorkerContext:
    """``ctx`` of the worker entry (Cloudflare's ExecutionContext)."""

    __slots__ = ("_spawn",)

    def __init__(self, spawn: Callable[[Any], None] | None) -> None:
        self._spawn = spawn

    def wait_until(self, awaitable: Any) -> None:
        """Run ``awaitable`` in the background after the response is sent; a
        graceful shutdown waits for it (within the grace period)."""
        if self._spawn is None:
            raise RuntimeError("wait_until() needs a server (no background nursery was given)")
        self._spawn(awaitable)

    def pass_through_on_exception(self) -> None:
        """Accepted for compatibility with Cloudflare; there is no origin to pass to."""


def _storage_full(exc: BaseException) -> bool:
    """``exc`` is, or was caused by, a full disk (a few links of cause at most)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, StorageFullError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _plain(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(text, status=status, headers=headers)


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


class Dispatcher:
    """``await dispatcher(request) -> Response``: the handler given to a front end.

    ``runtime`` must be entered (its ``env`` is built on entry). ``worker`` is a
    ``WorkerEntrypoint`` subclass or None for default routing. ``statistics``
    returns the front end's statistics for the health endpoint; ``draining``
    tells whether a shutdown has begun; ``spawn`` runs ``ctx.wait_until`` work.

    ``request_timeout`` (seconds, None for none) bounds each request: the
    events it sends to objects run under that deadline (see
    ``dotrio._context.request_deadline``), so a handler still running when
    it passes is cancelled, its SQL interrupted and its object reset; the
    answer is ``504 request timed out``. A request that waited in an object's
    inbox past its deadline is not run (503 overloaded). A worker entry's own
    ``fetch`` is cancelled at the deadline as well.
    """

    def __init__(
        self,
        runtime: Runtime,
        worker: type[WorkerEntrypoint] | None = None,
        *,
        access_log: bool = False,
        statistics: Callable[[], Any] | None = None,
        draining: Callable[[], bool] | None = None,
        spawn: Callable[[Any], None] | None = None,
        name: str | None = None,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        if request_timeout is not None and (
            isinstance(request_timeout, bool) or not isinstance(request_timeout, (int, float))
            or not 0 < request_timeout < math.inf
        ):
            raise ValueError(f"request_timeout must be a positive number of seconds or None, got {request_timeout!r}")
        self.request_timeout = request_timeout
        self.runtime = runtime
        self.name = name
        self.access_log = access_log
        self.statistics = statistics
        self.draining = draining
        self.started = time.monotonic()
        env = runtime.env
        self._routes: dict[str, DurableObjectNamespace] = {
            key: env[key] for key in env.keys() if isinstance(env[key], DurableObjectNamespace)
        }
        self._stubs: dict[tuple[str, str], DurableObjectStub] = {}
        self.worker: WorkerEntrypoint | None = worker(WorkerContext(spawn), env) if worker is not None else None
        self.requests = 0
        self.errors = 0

    async def __call__(self, request: Request) -> Response:
        if not self.access_log:
            return await self._dispatch(request)
        start = time.perf_counter()
        response = await self._dispatch(request)
        elapsed = (time.perf_counter() - start) * 1000.0
        path = request.path
        nbytes = len(response.body)
        access_log.info(
            "method=%s path=%s status=%d bytes=%d duration_ms=%.2f",
            request.method, path, response.status, nbytes, elapsed,
            extra={"method": request.method, "path": path, "status": response.status,
                   "bytes": nbytes, "duration_ms": round(elapsed, 3)},
        )
        return response

    async def _dispatch(self, request: Request) -> Response:
        self.requests += 1
        url = request.url
        # The path, with str methods only: this runs for every request.
        scheme_end = url.find("://")
        if scheme_end >= 0:
            start = url.find("/", scheme_end + 3)
            path = "/" if start < 0 else url[start:]
        else:
            path = url
        cut = path.find("?")
        if cut >= 0:
            path = path[:cut]
        timeout = self.request_timeout
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        token = request_deadline.set(deadline)
        try:
            if path.startswith(RESERVED_PREFIX):
                return self._own(request, path)
            worker = self.worker
            if worker is not None:
                with trio.CancelScope(deadline=deadline) as scope:
                    response = await worker.fetch(request)
                if scope.cancelled_caught:
                    log.warning("%s %s: the worker's fetch ran past request_timeout (%s s)",
                                request.method, path, timeout)
                    return _plain(504, "request timed out\n")
                if not isinstance(response, Response):
                    raise TypeError(f"{type(worker).__name__}.fetch() must return a dotrio.Response, "
                                    f"got {type(response).__name__}")
                return response
            stub = self._route(path)
            if stub is None:
                if path == "/" and request.method in ("GET", "HEAD"):
                    return self.index()
                return _plain(404, "not found\n")
            return await stub.fetch(request)
        except OverloadedError as exc:
            retry = getattr(exc, "retry_after", 1.0)
            return _plain(503, "overloaded\n", [("retry-after", str(max(1, math.ceil(retry))))])
        except ObjectResetError as exc:
            if _storage_full(exc):
                return _plain(503, "storage full\n", [("retry-after", str(STORAGE_FULL_RETRY_AFTER))])
            if trio.current_time() >= deadline:
                log.warning("%s %s: ran past request_timeout (%s s): %s", request.method, path, timeout, exc)
                return _plain(504, "request timed out\n")
            # The runtime logged the reset once, naming the object and the cause.
            log.debug("%s %s: object reset: %s", request.method, path, exc)
            return _plain(503, "object reset; retry\n", [("retry-after", "1")])
        except Exception as exc:
            if _storage_full(exc):
                return _plain(503, "storage full\n", [("retry-after", str(STORAGE_FULL_RETRY_AFTER))])
            self.errors += 1
            log.exception("%s %s failed", request.method, path)
            return _plain(500, "internal server error\n")
        finally:
            request_deadline.reset(token)

    def _route(self, path: str) -> DurableObjectStub | None:
        """``/<binding>/<name>[/<rest>]`` -> the object's stub, or None."""
        second = path.find("/", 1)
        if second < 0:
            return None
        third = path.find("/", second + 1)
        name = path[second + 1 :] if third < 0 else path[second + 1 : third]
        if not name:
            return None
        binding = path[1:second]
        key = (binding, name)
        stub = self._stubs.get(key)
        if stub is not None:
            return stub
        ns = self._routes.get(binding)
        if ns is None:
            return None
        stub = ns.get_by_name(unquote(name) if "%" in name else name)
        stubs = self._stubs
        if len(stubs) >= _STUB_CACHE_SIZE:
            del stubs[next(iter(stubs))]
        stubs[key] = stub
        return stub

    # ---- the server's own paths -------------------------------------------------

    def _own(self, request: Request, path: str) -> Response:
        if path == HEALTH_PATH and request.method in ("GET", "HEAD"):
            return self.health()
        return _plain(404, "not found\n")

    def index(self) -> Response:
        """``GET /`` under default routing: what there is to call, as text."""
        lines = [f"dotrio: {self.name or 'app'}", "",
                 "Default routing: /<binding>/<name>/<path> goes to that object's fetch(request).", "",
                 "Bindings:"]
        for binding, ns in self._routes.items():
            cls = ns.cls
            lines.append(f"  /{binding}/<name>/...  ->  {cls.__module__}.{cls.__qualname__}")
        lines += ["", f"Health: {HEALTH_PATH}", ""]
        return _plain(200, "\n".join(lines))

    def health(self) -> Response:
        """The answer to ``GET /_dotrio/health``: the runtime's statistics as
        JSON (without filesystem paths)."""
        draining = self.draining() if self.draining is not None else False
        runtime = self.runtime
        stats = _jsonable(runtime.statistics())
        storage = stats.get("storage") if isinstance(stats, dict) else None
        if isinstance(storage, dict):
            # The endpoint is often public (load balancers): no filesystem paths.
            storage.pop("data_dir", None)
        body: dict[str, Any] = {
            "status": "draining" if draining else "ok",
            "name": self.name,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "dispatcher": {"requests": self.requests, "errors": self.errors},
            "runtime": stats,
            "websockets": _jsonable(runtime.websockets.statistics()),
        }
        if self.statistics is not None:
            try:
                body["server"] = _jsonable(self.statistics())
            except RuntimeError:  # the front end has not bound yet
                body["server"] = None
        data = orjson.dumps(body, default=str)
        return Response(data, status=503 if draining else 200,
                        headers=[("content-type", "application/json"), ("cache-control", "no-store")])
