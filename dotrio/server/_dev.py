"""``dotrio dev``: serve a config and restart it when its code or config changes.

One process, one Trio run. ``watchfiles`` watches the config file's folder
for changes to ``.py`` files, the config file and ``.dev.vars``. On a
change:

1. the modules imported from that folder are dropped from ``sys.modules``
   and the config is loaded again (importing the new code). If that fails,
   the errors are printed and the running version keeps serving until the
   next change;
2. otherwise the running server shuts down gracefully, exactly as on
   SIGTERM: the front end stops accepting, in-flight requests get the grace
   period, WebSockets are closed with code 1001 (going away: clients
   reconnect, and the objects' ``websocket_close`` handlers run), the
   runtime drains and commits, and every database is closed;
3. a new server starts on the same address with the new code. Storage is
   the same data dir, so every object keeps its data (a ``":memory:"`` data
   dir starts empty again).

Hibernated WebSockets are not carried across a restart: their handler
classes are the code being replaced, so they are closed like live ones.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from .._config import CONFIG_NAMES, DEV_VARS, Config, load_config
from .._errors import ConfigError
from ._control import ServerControl
from ._dispatch import HEALTH_PATH
from ._serve import serve

__all__ = ["describe", "run_dev"]

#: Folders never watched nor reloaded from.
_IGNORED_PARTS = frozenset({"__pycache__", ".git", ".hg", ".venv", "venv", "node_modules", "site-packages",
                            ".mypy_cache", ".pytest_cache", ".ruff_cache"})
DEV_GRACE = 2.0


def _docs_hint() -> str:
    checkout = Path(__file__).resolve().parents[2]
    index = checkout / "docs" / "index.md"
    if index.is_file():
        return (f"{index} (quick start: {checkout / 'docs' / 'quickstart.md'}; "
                f"build the site with: python -m sphinx {checkout / 'docs'} {checkout / 'docs' / '_build' / 'html'})")
    return "the docs/ folder of the dotrio source distribution (start with docs/quickstart.md)"


def describe(config: Config, url: str) -> list[str]:
    """What to try next: the URL, the routes and where the docs are."""
    lines = [f"dotrio dev: serving {config.name or 'app'} ({config.path})", f"  url:      {url}/"]
    bindings = ", ".join(f"{b.name} -> {b.cls.__module__}.{b.cls.__qualname__}" for b in config.bindings)
    if config.worker is not None:
        worker = config.worker
        lines.append(f"  worker:   {worker.__module__}.{worker.__qualname__} (main = {config.main!r}) "
                     "receives every request")
        doc = (worker.__doc__ or "").strip()
        for line in doc.splitlines()[:12]:
            lines.append(f"            {line.strip()}" if line.strip() else "")
        lines.append(f"  bindings: {bindings} (on self.env)")
    else:
        lines.append("  routes:   default routing: /<binding>/<name>/<path> goes to that object's fetch()")
        for b in config.bindings:
            lines.append(f"            {url}/{b.name}/<name>/  ->  {b.cls.__module__}.{b.cls.__qualname__}")
        lines.append(f"            GET {url}/ lists them")
    lines.append(f"  health:   {url}{HEALTH_PATH}")
    lines.append(f"  docs:     {_docs_hint()}")
    names = ", ".join(p.name for p in config.sources)
    lines.append(f"  reload:   on changes to *.py, {names} under {config.root} (Ctrl+C stops)")
    if config.data_dir is None:
        lines.append("  storage:  data_dir = ':memory:': every reload starts with empty storage")
    return lines


def _watch_filter(config_name: str) -> Callable[[Any, str], bool]:
    # The data dir holds no .py file nor a config name, so it needs no rule.
    names = {*CONFIG_NAMES, DEV_VARS, config_name}

    def accept(change: Any, path: str) -> bool:
        p = Path(path)
        if _IGNORED_PARTS.intersection(p.parts):
            return False
        return p.suffix == ".py" or p.name in names

    return accept


def _purge_modules(root: Path) -> list[str]:
    """Forget the modules imported from ``root`` so the next load imports the
    new code (dotrio's own modules and installed packages stay)."""
    dropped = []
    for name, module in list(sys.modules.items()):
        if name == "dotrio" or name.startswith("dotrio.") or name == "__main__":
            continue
        file = getattr(module, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        if path.is_relative_to(root) and not _IGNORED_PARTS.intersection(path.parts):
            del sys.modules[name]
            dropped.append(name)
    return dropped


def _load(path: Path, echo: Callable[[str], None]) -> Config | None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            echo(f"dotrio dev: error: {line}")
        return None
    for warning in config.warnings:
        echo(f"dotrio dev: warning: {warning}")
    return config


async def _watch(root: Path, accept: Callable[[Any, str], bool], stop: Any,
                 changes: trio.MemorySendChannel[set[Any]], debounce: int) -> None:
    from watchfiles import awatch

    async with changes:
        async for batch in awatch(root, watch_filter=accept, stop_event=stop, debounce=debounce):
            try:
                changes.send_nowait(batch)
            except trio.WouldBlock:
                pass  # a reload is already pending; it will read the newest files


async def dev(path: Path, *, host: str | None, port: int | None, echo: Callable[[str], None],
              grace: float = DEV_GRACE, debounce: int = 400) -> int:
    """Serve ``path`` and restart on changes until ``SIGINT``/``SIGTERM``."""
    import anyio

    root = path.absolute().parent.resolve()
    stop = anyio.Event()  # ends the watcher (its thread checks it every 50 ms)
    send, receive = trio.open_memory_channel[set[Any]](1)
    quitting = False
    current: ServerControl | None = None

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def on_signals() -> None:
                nonlocal quitting
                async for signum in signals:
                    if quitting:
                        os._exit(128 + signum)
                    quitting = True
                    echo(f"dotrio dev: {signal.Signals(signum).name}: stopping")
                    stop.set()
                    if current is not None:
                        current.shutdown(grace)

            nursery.start_soon(on_signals)
            nursery.start_soon(_watch, root, _watch_filter(path.name), stop, send, debounce)

            config = _load(path, echo)
            while config is None:
                echo("dotrio dev: fix the errors above; waiting for a change")
                try:
                    await receive.receive()
                except trio.EndOfChannel:  # stopped by a signal
                    break
                _purge_modules(root)
                config = _load(path, echo)

            first = True
            while config is not None and not quitting:
                control = current = ServerControl()
                next_config: Config | None = None
                async with trio.open_nursery() as server:

                    async def run(task_status: trio.TaskStatus[ServerControl] = trio.TASK_STATUS_IGNORED) -> None:
                        await serve(config, host=host, port=port, control=control, task_status=task_status)
                        server.cancel_scope.cancel()  # the server stopped: stop waiting for changes

                    async def wait_for_good_change() -> None:
                        nonlocal next_config
                        async for batch in receive:
                            changed = sorted({Path(p).name for _, p in batch})
                            echo(f"dotrio dev: {', '.join(changed)} changed: reloading")
                            _purge_modules(root)
                            next_config = _load(path, echo)
                            if next_config is not None:
                                break
                            echo("dotrio dev: the running version keeps serving until the next change")
                        control.shutdown(grace)

                    started = await server.start(run)
                    port = started.port  # the same address across restarts (port=0 picks one once)
                    if first:
                        for line in describe(config, started.url):
                            echo(line)
                        first = False
                    else:
                        echo(f"dotrio dev: reloaded; serving on {started.url}/")
                    server.start_soon(wait_for_good_change)
                config = next_config
            stop.set()
            nursery.cancel_scope.cancel()
    echo("dotrio dev: stopped")
    return 0


def run_dev(path: Path, **options: Any) -> int:
    """The ``dotrio dev`` process entry."""
    return trio.run(partial(dev, path, **options))
