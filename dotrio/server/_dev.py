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

Hibernated WebSockets are not carried across a restart: they are closed
like live ones, as a deploy of new code closes them on Cloudflare, and
clients reconnect to the new code.
"""

from __future__ import annotations

import os
import signal
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from .._config import CONFIG_NAMES, DEV_VARS, Config, load_config
from .._errors import ConfigError, DataDirError
from ._control import ServerControl
from ._dispatch import HEALTH_PATH
from ._serve import serve

if TYPE_CHECKING:
    from collections.abc import Callable

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


class _DevLoop:
    """The state of one ``dotrio dev`` session."""

    def __init__(self, path: Path, root: Path, host: str | None, port: int | None,
                 echo: Callable[[str], None], grace: float, debounce: int) -> None:
        import anyio

        self.path = path
        self.root = root
        self.host = host
        self.port = port
        self.echo = echo
        self.grace = grace
        self.debounce = debounce
        self.stop = anyio.Event()  # ends the watcher (its thread checks it every 50 ms)
        self.send, self.receive = trio.open_memory_channel[set[Any]](1)
        self.quitting = False
        self.current: ServerControl | None = None

    async def on_signals(self, signals: Any) -> None:
        async for signum in signals:
            if self.quitting:
                os._exit(128 + signum)
            self.quitting = True
            self.echo(f"dotrio dev: {signal.Signals(signum).name}: stopping")
            self.stop.set()
            if self.current is not None:
                self.current.shutdown(self.grace)

    def reload(self) -> Config | None:
        _purge_modules(self.root)
        return _load(self.path, self.echo)

    async def run_server(self, config: Config, control: ServerControl, scope: trio.CancelScope,
                         task_status: trio.TaskStatus[ServerControl] = trio.TASK_STATUS_IGNORED) -> None:
        await serve(config, host=self.host, port=self.port, control=control, task_status=task_status)
        scope.cancel()  # the server stopped: stop waiting for changes

    async def wait_for_good_change(self, control: ServerControl, result: list[Config]) -> None:
        async for batch in self.receive:
            changed = sorted({Path(p).name for _, p in batch})
            self.echo(f"dotrio dev: {', '.join(changed)} changed: reloading")
            config = self.reload()
            if config is not None:
                result.append(config)
                break
            self.echo("dotrio dev: the running version keeps serving until the next change")
        control.shutdown(self.grace)

    async def main(self) -> int:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.on_signals, signals)
                nursery.start_soon(_watch, self.root, _watch_filter(self.path.name), self.stop, self.send,
                                   self.debounce)
                config = _load(self.path, self.echo)
                while config is None:
                    self.echo("dotrio dev: fix the errors above; waiting for a change")
                    try:
                        await self.receive.receive()
                    except trio.EndOfChannel:  # stopped by a signal
                        break
                    config = self.reload()

                first = True
                while config is not None and not self.quitting:
                    control = self.current = ServerControl()
                    result: list[Config] = []
                    async with trio.open_nursery() as server:
                        started = await server.start(self.run_server, config, control, server.cancel_scope)
                        self.port = started.port  # the same address across restarts (port=0 picks one once)
                        if first:
                            for line in describe(config, started.url):
                                self.echo(line)
                            first = False
                        else:
                            self.echo(f"dotrio dev: reloaded; serving on {started.url}/")
                        server.start_soon(self.wait_for_good_change, control, result)
                    config = result[0] if result else None
                self.stop.set()
                nursery.cancel_scope.cancel()
        self.echo("dotrio dev: stopped")
        return 0


async def dev(path: Path, *, host: str | None, port: int | None, echo: Callable[[str], None],
              grace: float = DEV_GRACE, debounce: int = 400) -> int:
    """Serve ``path`` and restart on changes until ``SIGINT``/``SIGTERM``."""
    root = await (await trio.Path(path).absolute()).parent.resolve()
    loop = _DevLoop(path, Path(root), host, port, echo, grace, debounce)
    return await loop.main()


def run_dev(path: Path, **options: Any) -> int:
    """The ``dotrio dev`` process entry. A failure to start (a port in use, a
    data dir in use or damaged) is raised as itself, not as exception groups."""
    try:
        return trio.run(partial(dev, path, **options))
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, (OSError, DataDirError)):
            raise leaf from None
        raise
