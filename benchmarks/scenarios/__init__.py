"""The scenario registry: name -> (runner, one-line description)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from .._common import Options
from .._report import Progress, ScenarioResult

__all__ = ["SCENARIOS", "get", "Runner"]

Runner = Callable[[Options, Progress], ScenarioResult]

# module:function, imported on use so that one scenario's imports (matplotlib,
# a peer) never slow down or break another.
SCENARIOS: dict[str, tuple[str, str]] = {
    "http-hello": ("http:run_hello", "hello-world through dotrio serve's dispatcher vs hypercorn-trio (target: >= 15x)"),
    "http-hot": ("http:run_hot", "KV read+increment over HTTP on one object vs hypercorn-trio hello-world"),
    "http-spread": ("http:run_spread", "the same over 10,000 objects (--objects)"),
    "http-sql": ("http:run_sql", "the same through sql.exec"),
    "ws-echo": ("ws:run_echo", "WebSocket echo, 100 connections -> 100 objects vs hypercorn-trio echo"),
    "ws-hibernate": ("ws:run_hibernate", "10,000 idle WebSockets on hibernated objects: RSS per socket, wake latency"),
    "ws-fanout": ("ws:run_fanout", "one room object, 1,000 subscribers, every message to all"),
    "alarms": ("alarms:run_alarms", "N objects armed, all due in the same second: rates, lateness, duplicates"),
    "alarms-restart": ("alarms:run_restart", "N alarms overdue at start: recovery time, duplicates, latency meanwhile"),
    "population": ("population:run", "1,000,000 objects on disk, 100,000 touched: RSS, fds, cold activation"),
    "storage": ("storage:run", "storage micro-benchmarks against raw apsw (benchmarks/bench_storage.py)"),
}


def get(name: str) -> Runner:
    try:
        target, _ = SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; one of: {', '.join(SCENARIOS)}") from None
    module, _, func = target.partition(":")
    return getattr(import_module(f"{__name__}.{module}"), func)
