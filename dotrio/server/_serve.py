"""``serve()``: a Runtime and a front end in one Trio run, and the process
entry that turns SIGTERM/SIGINT into a graceful shutdown.

Shutdown, in order (the first SIGTERM/SIGINT, or ``control.shutdown()``):

1. The front end stops accepting, closes idle keep-alive connections, closes
   WebSockets with 1001, and gives in-flight requests ``shutdown_grace``
   seconds (default 10) before cancelling them.
2. Work started with the worker's ``ctx.wait_until`` gets the same deadline.
3. The Runtime drains what objects still have queued (``websocket_close``
   handlers of the sockets just closed, events whose caller was cancelled),
   for what is left of the deadline plus ``_RUNTIME_EXTRA`` seconds, then
   commits and closes every database. The process exits 0.

A second signal exits at once (``os._exit(128 + signum)``). That corrupts
nothing: every commit is a SQLite transaction in WAL mode, so a transaction
is either wholly in the WAL (and replayed on the next open) or not at all;
responses leave the output gate only after their writes committed, so
nothing acknowledged is lost either (at ``durability = "process"`` a commit
survives the process, at ``"power"`` the machine).
"""

from __future__ import annotations

import dataclasses
import math
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from .._config import Config, load_config
from .._context import request_deadline
from .._kernels import kernels_status
from .._object import WorkerEntrypoint
from ..runtime import Runtime
from ._control import ServerControl
from ._dispatch import DEFAULT_REQUEST_TIMEOUT, Dispatcher
from ._limits import ServerLimits

__all__ = ["serve", "run_server", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_SHUTDOWN_GRACE", "SERVERS"]

log = logging.getLogger("dotrio.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_SHUTDOWN_GRACE = 10.0
SERVERS = ("fast", "hypercorn")
# After the front end's grace, the runtime's own drain gets this much more:
# the close events of WebSockets closed at the last moment still need a turn.
_RUNTIME_EXTRA = 2.0


async def _background(awaitable: Awaitable[Any]) -> None:
    # ctx.wait_until work outlives its request: not bound by its deadline.
    request_deadline.set(math.inf)
    try:
        await awaitable
    except Exception:
        log.exception("ctx.wait_until() task failed")


def _pick(explicit: Any, from_file: Any, default: Any) -> Any:
    if explicit is not None:
        return explicit
    return from_file if from_file is not None else default


async def serve(
    target: Config | Runtime | str | os.PathLike[str],
    *,
    host: str | None = None,
    port: int | None = None,
    server: str | None = None,
    limits: ServerLimits | None = None,
    max_request_body: int | None = None,
    worker: type[WorkerEntrypoint] | None = None,
    access_log: bool | None = None,
    shutdown_grace: float | None = None,
    request_timeout: float | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    control: ServerControl | None = None,
    task_status: trio.TaskStatus[ServerControl] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a config (path or ``Config``) or a ``Runtime`` until shut down.

    ``control = await nursery.start(serve, "dotrio.toml", port=0)`` returns the
    front end's ``ServerControl`` (``port``, ``statistics()``,
    ``shutdown(grace)``). Options left None come from the config's
    ``[server]`` table, then from the defaults (127.0.0.1:8787, ``fast``,
    10 s grace, no access log, 30 s request timeout). A ``Runtime`` that is not entered yet is
    entered (and closed) here; ``worker`` is then the worker entry, if any.
    """
    config: Config | None
    if isinstance(target, Runtime):
        config, runtime = None, target
    else:
        config = target if isinstance(target, Config) else load_config(target)
        runtime = Runtime(**config.runtime_kwargs())
        if worker is None:
            worker = config.worker
    settings = config.server if config is not None else None
    host = _pick(host, settings and settings.host, DEFAULT_HOST)
    port = _pick(port, settings and settings.port, DEFAULT_PORT)
    server = _pick(server, settings and settings.server, "fast")
    grace = float(_pick(shutdown_grace, settings and settings.shutdown_grace, DEFAULT_SHUTDOWN_GRACE))
    access = bool(_pick(access_log, settings and settings.access_log, False))
    timeout = float(_pick(request_timeout, settings and settings.request_timeout, DEFAULT_REQUEST_TIMEOUT))
    if server not in SERVERS:
        raise ValueError(f"server must be one of {SERVERS}, got {server!r}")
    if (certfile is not None or keyfile is not None) and server != "hypercorn":
        raise ValueError("TLS (certfile/keyfile) needs server='hypercorn'")
    limits = limits if limits is not None else ServerLimits()
    body_limit = _pick(max_request_body, config.max_request_body if config is not None else None,
                       limits.max_request_body)
    limits = dataclasses.replace(limits, max_request_body=body_limit, shutdown_grace=grace if grace > 0 else 0.001)
    if settings is not None and settings.max_connections is not None:
        limits = dataclasses.replace(limits, max_connections=settings.max_connections)
    if settings is not None and settings.max_buffered_bodies is not None:
        limits = dataclasses.replace(limits, max_buffered_bodies=settings.max_buffered_bodies)

    if server == "fast":
        from ._fast import serve_fast

        front = partial(serve_fast, host=host, port=port, limits=limits)
    else:
        from ._asgi import serve_hypercorn

        front = partial(serve_hypercorn, host=host, port=port, limits=limits, certfile=certfile, keyfile=keyfile)

    control = control if control is not None else ServerControl()
    owned = not runtime.running
    # Bounds the runtime's drain once a shutdown has begun (Runtime's own
    # drain_timeout may be longer than the grace the operator asked for).
    hard = trio.CancelScope()
    with hard:
        async with _maybe_enter(runtime, owned):
            async with trio.open_nursery() as bg:
                dispatcher = Dispatcher(
                    runtime,
                    worker,
                    access_log=access,
                    statistics=control.statistics,
                    draining=lambda: control.shutting_down,
                    spawn=lambda aw: bg.start_soon(_background, aw),
                    name=config.name if config is not None else None,
                    request_timeout=timeout,
                )

                async def deadline_on_shutdown() -> None:
                    await control.wait_shutdown_requested()
                    effective = control.grace if control.grace is not None else grace
                    end = trio.current_time() + effective
                    bg.cancel_scope.deadline = end + 0.5
                    hard.deadline = end + _RUNTIME_EXTRA

                bg.start_soon(deadline_on_shutdown)
                started = await bg.start(partial(front, dispatcher, control=control))
                _log_kernels()
                log.info("dotrio: serving %s on %s (%s front end)", config.name if config and config.name else "app",
                         started.url, server)
                task_status.started(started)
                await control.wait_stopped()
                # The watcher may still be parked if the front end stopped on
                # its own; the nursery then only waits for wait_until work.
                if not control.shutting_down:
                    bg.cancel_scope.cancel()
    if hard.cancelled_caught:
        log.warning("dotrio: shutdown deadline passed; unfinished object work was cancelled (nothing uncommitted was acknowledged)")


def _log_kernels() -> None:
    """Log which kernels run compiled, and warn for each that fell back to its
    pure-Python twin without ``DOTRIO_NO_EXTENSIONS`` asking for it."""
    status = kernels_status()
    log.info("dotrio: kernels: %s", ", ".join(
        f"{s.name} {'compiled' if s.compiled else 'pure Python (DOTRIO_NO_EXTENSIONS)' if s.disabled else 'PURE PYTHON'}"
        for s in status))
    for s in status:
        if not s.compiled and not s.disabled:
            log.warning(
                "dotrio: the %s kernel runs on its pure-Python twin, several times slower, because its compiled "
                "extension did not load (%s). Reinstall dotrio where a C compiler is available, or set "
                "DOTRIO_NO_EXTENSIONS=1 to choose the twins and silence this warning.", s.name, s.error)


@asynccontextmanager
async def _maybe_enter(runtime: Runtime, owned: bool) -> AsyncIterator[Runtime]:
    """``async with runtime`` when we own it, else nothing."""
    if owned:
        async with runtime:
            yield runtime
    else:
        yield runtime


def _collapse(exc: BaseException) -> BaseException:
    """The one interesting exception inside nested single-member groups."""
    while isinstance(exc, BaseExceptionGroup):
        real = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        if len(real) != 1:
            return exc
        exc = real[0]
    return exc


def run_server(target: Config | str | os.PathLike[str], **options: Any) -> int:
    """The process entry: serve until SIGTERM/SIGINT, then shut down gracefully
    and return 0. A second signal exits the process at once. Startup errors
    (a port in use, ...) are raised as themselves, not as exception groups."""
    try:
        return trio.run(_main, target, options)
    except BaseExceptionGroup as group:
        raise _collapse(group) from None


async def _main(target: Config | str | os.PathLike[str], options: dict[str, Any]) -> int:
    control = ServerControl()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def on_signals() -> None:
                first = True
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if first:
                        first = False
                        log.info("dotrio: %s received: shutting down gracefully (send it again to exit at once)", name)
                        control.shutdown()
                    else:
                        log.warning("dotrio: second %s: exiting now (committed data is safe in the WAL)", name)
                        for stream in (sys.stdout, sys.stderr):
                            try:
                                stream.flush()
                            except Exception:  # noqa: S110 - exiting anyway
                                pass
                        os._exit(128 + signum)

            nursery.start_soon(on_signals)
            await serve(target, control=control, **options)
            nursery.cancel_scope.cancel()
    log.info("dotrio: stopped")
    return 0
