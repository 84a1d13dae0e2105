"""What every scenario shares: options, the client choice, and running one
load against one server into a ``Measurement``."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _load
from ._proc import machine
from ._report import Measurement, Progress, ScenarioResult

if TYPE_CHECKING:
    from ._servers import Server

__all__ = ["Options", "new_result", "http_load", "measure_http", "measure_ws_echo", "measure_ws_fanout",
           "client_name", "durabilities"]


@dataclass
class Options:
    """Every knob of every scenario; each scenario reads the ones it needs."""

    duration: float = 10.0          # seconds of each measured load phase
    warmup: float = 2.0             # seconds of load before measuring (hot paths)
    connections: int = 64           # HTTP keep-alive connections
    objects: int | None = None      # http-spread: number of objects (default 10,000)
    client: str = "auto"            # auto | wrk | python
    client_procs: int = 1           # Python client processes
    durability: str = "default"     # default | process | power | both
    peer: str | None = None         # workerd
    ceiling: bool = True            # measure the load generator's ceiling first
    ws_connections: int = 100
    subscribers: int = 1000
    hibernate_sockets: int = 10_000
    window: int = 4                 # ws-fanout: unacknowledged publishes
    alarms: int = 10_000
    rpc_load: int = 0               # alarms: also run the stampede with this many concurrent RPC callers
    restart_alarms: int = 100_000
    population: int = 1_000_000
    touch: int = 100_000
    pool_size: int | None = None
    data_dir: str | None = None     # population: keep/reuse the created objects here
    quick: bool = False             # smoke sizes (the test suite)
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def durabilities(opts: Options) -> list[str]:
    """Default: "process" alone; with a peer, both (the default row and the
    like-for-like "power" row: workerd fsyncs every write)."""
    if opts.durability == "both" or (opts.durability == "default" and opts.peer):
        return ["process", "power"]
    if opts.durability == "default":
        return ["process"]
    return [opts.durability]


def new_result(scenario: str, opts: Options, **params: Any) -> ScenarioResult:
    cmd = opts.command or "python -m benchmarks " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return ScenarioResult(scenario, cmd, params=params, machine=machine())


def client_name(opts: Options) -> str:
    if opts.client == "python":
        return "python"
    if _load.wrk_path() is not None:
        return "wrk"
    if opts.client == "wrk":
        raise SystemExit("--client wrk: wrk is not installed (apt-get install -y wrk)")
    return "python"


def http_load(opts: Options, port: int, method: str, paths: Sequence[str], duration: float,
              progress: Progress | None = None, random_paths: bool = True) -> _load.LoadResult:
    if client_name(opts) == "wrk":
        return _load.run_wrk(port, method, paths, opts.connections, duration,
                             progress=progress.update if progress else None, random_paths=random_paths)
    return _load.run_http(port, method, paths, opts.connections, duration, processes=opts.client_procs,
                          random_paths=random_paths)


def _measurement(name: str, what: str, unit: str, r: _load.LoadResult, server: Server | None,
                 durability: str | None, server_cpu: float | None) -> Measurement:
    return Measurement(name=name, what=what, ops=r.ops, seconds=r.seconds, unit=unit, client=r.client,
                       errors=r.errors, latency=r.latency, series=r.series, client_cpu=r.client_cpu,
                       server_cpu=server_cpu, server_rss=server.rss() if server is not None else None,
                       durability=durability, extra=dict(r.extra))


def measure_http(opts: Options, server: Server, name: str, what: str, method: str, paths: Sequence[str],
                 progress: Progress, durability: str | None = None,
                 prepare: Callable[[], None] | None = None) -> Measurement:
    """Warm up (``prepare`` or a short load), then one measured load."""
    if prepare is not None:
        progress.update(f"{name}: preparing", force=True)
        prepare()
    if opts.warmup > 0:
        progress.update(f"{name}: warm-up {opts.warmup:g} s", force=True)
        http_load(opts, server.port, method, paths, opts.warmup)
    progress.update(f"{name}: measuring", force=True)
    server.mark()
    r = http_load(opts, server.port, method, paths, opts.duration, progress)
    cpu = server.cpu_since_mark()
    return _measurement(name, what, "req/s", r, server, durability, cpu)


def measure_ws_echo(opts: Options, server: Server, name: str, what: str, paths: Sequence[str], progress: Progress,
                    durability: str | None = None) -> Measurement:
    if opts.warmup > 0:
        progress.update(f"{name}: warm-up", force=True)
        _load.run_ws_echo(server.port, paths, opts.warmup, processes=opts.client_procs)
    progress.update(f"{name}: measuring {opts.duration:g} s", force=True)
    server.mark()
    r = _load.run_ws_echo(server.port, paths, opts.duration, processes=opts.client_procs)
    cpu = server.cpu_since_mark()
    return _measurement(name, what, "msgs/s", r, server, durability, cpu)


def measure_ws_fanout(opts: Options, server: Server, name: str, what: str, room: str, progress: Progress,
                      durability: str | None = None) -> Measurement:
    progress.update(f"{name}: {opts.subscribers} subscribers, measuring {opts.duration:g} s", force=True)
    server.mark()
    r = _load.run_ws_fanout(server.port, f"/ROOM/{room}/sub", f"/ROOM/{room}/pub", opts.subscribers, opts.duration,
                            processes=max(2, opts.client_procs), window=opts.window)
    cpu = server.cpu_since_mark()
    return _measurement(name, what, "deliveries/s", r, server, durability, cpu)
