"""ws-echo (100 connections -> 100 objects) and ws-fanout (one room, 1,000
subscribers, each message broadcast to all). Baseline: bare hypercorn-trio
WebSocket echo, measured in the same run."""

from __future__ import annotations

from .. import _load, _servers
from .._common import Options, durabilities, measure_ws_echo, measure_ws_fanout, new_result
from .._peers import WORKERD_DURABILITY, PeerUnavailable, workerd
from .._report import Measurement, Progress, ScenarioResult

__all__ = ["run_echo", "run_fanout"]


def _runtime(opts: Options) -> dict[str, object] | None:
    """[runtime] settings the command line overrides (--pool-size)."""
    return {"pool_size": opts.pool_size} if opts.pool_size else None



def _ceiling(opts: Options, result: ScenarioResult, progress: Progress, paths: list[str]) -> None:
    if not opts.ceiling:
        return
    with _servers.ceiling() as server:
        saved = opts.duration, opts.warmup
        opts.duration, opts.warmup = min(opts.duration, 5.0), 0.0
        try:
            m = measure_ws_echo(opts, server, "ceiling", "canned echo (client ceiling)", paths, progress)
        finally:
            opts.duration, opts.warmup = saved
    result.measurements.append(m)
    if m.client_cpu:
        result.figure("client ceiling (msgs/s per client core, from the ceiling run)", m.rate / m.client_cpu,
                      "msgs/s")


def _baseline(opts: Options, result: ScenarioResult, progress: Progress, paths: list[str]) -> Measurement:
    with _servers.hypercorn_baseline() as server:
        m = measure_ws_echo(opts, server, "baseline", f"hypercorn-trio WebSocket echo, {len(paths)} conns", paths,
                            progress)
    result.measurements.append(m)
    return m


def _notes(result: ScenarioResult) -> None:
    for m in result.measurements:
        if m.name != "ceiling" and m.client_cpu is not None and m.client_cpu > 0.85 * max(1, m.extra.get("procs", 1)):
            result.notes.append(f"{m.name}: the client used {m.client_cpu:.2f} cores: this figure may be client-bound")


def run_echo(opts: Options, progress: Progress) -> ScenarioResult:
    n = opts.ws_connections
    durs = durabilities(opts)
    result = new_result("ws-echo", opts, connections=n, duration=opts.duration, durability=",".join(durs),
                        peer=opts.peer or "-")
    paths = [f"/ECHO/e{i}/" for i in range(n)]
    _ceiling(opts, result, progress, paths)
    baseline = _baseline(opts, result, progress, paths)
    with _servers.trio_websocket_baseline() as server:
        tws = measure_ws_echo(opts, server, "trio-websocket", f"trio-websocket echo server, {n} conns", paths,
                              progress)
    result.measurements.append(tws)
    ours: dict[str, Measurement] = {}
    for dur in durs:
        with _servers.dotrio(durability=dur, runtime=_runtime(opts)) as server:
            name = "dotrio" if dur == "process" else f"dotrio-{dur}"
            m = measure_ws_echo(opts, server, name, f"echo through {n} objects", paths, progress, durability=dur)
        result.measurements.append(m)
        ours[dur] = m
    peer = None
    if opts.peer == "workerd":
        try:
            with workerd() as server:
                peer = measure_ws_echo(opts, server, "workerd", f"echo through {n} objects", paths,
                                       progress, durability=WORKERD_DURABILITY)
            result.measurements.append(peer)
            result.notes.append(f"peer: {server.name}, hibernatable WebSockets (acceptWebSocket)")
        except PeerUnavailable as exc:
            result.notes.append(str(exc))
    progress.done()
    for dur, m in ours.items():
        result.ratio(f"{m.name} / baseline (hypercorn-trio echo)", m, baseline)
        result.ratio(f"{m.name} / trio-websocket echo (issue 6)", m, tws, 1.2 if dur == "process" else None)
    if peer is not None:
        for dur, m in ours.items():
            result.ratio(f"{m.name} [{dur}] / workerd", m, peer, 1.0)
    for m in ours.values():
        result.cpu_ratio(f"{m.name}: baseline's server CPU per message / ours", m, baseline)
        if peer is not None:
            result.cpu_ratio(f"{m.name}: workerd's server CPU per message / ours", m, peer)
    _notes(result)
    return result


def run_fanout(opts: Options, progress: Progress) -> ScenarioResult:
    durs = durabilities(opts)
    result = new_result("ws-fanout", opts, subscribers=opts.subscribers, window=opts.window,
                        duration=opts.duration, durability=",".join(durs), peer=opts.peer or "-")
    paths = [f"/ECHO/e{i}/" for i in range(opts.ws_connections)]
    _ceiling(opts, result, progress, paths)
    baseline = _baseline(opts, result, progress, paths)
    ours: dict[str, Measurement] = {}
    for dur in durs:
        with _servers.dotrio(durability=dur, runtime=_runtime(opts)) as server:
            name = "dotrio" if dur == "process" else f"dotrio-{dur}"
            m = measure_ws_fanout(opts, server, name, f"1 room -> {opts.subscribers:,} subscribers", "room",
                                  progress, durability=dur)
        result.measurements.append(m)
        ours[dur] = m
    peer = None
    if opts.peer == "workerd":
        try:
            with workerd() as server:
                peer = measure_ws_fanout(opts, server, "workerd", f"1 room -> {opts.subscribers:,} subscribers",
                                         "room", progress, durability=WORKERD_DURABILITY)
            result.measurements.append(peer)
            result.notes.append(f"peer: {server.name}, hibernatable WebSockets (acceptWebSocket)")
        except PeerUnavailable as exc:
            result.notes.append(str(exc))
    progress.done()
    for dur, m in ours.items():
        result.ratio(f"{m.name} deliveries / baseline echo msgs", m, baseline)
        result.figure(f"{m.name}: messages published (each to {opts.subscribers:,})", m.extra.get("published"))
        if m.latency is not None:
            result.figure(f"{m.name}: delivery p99", m.latency.percentile(99) / 1000, "ms")
    if peer is not None:
        for dur, m in ours.items():
            result.ratio(f"{m.name} [{dur}] / workerd", m, peer)
            result.cpu_ratio(f"{m.name}: workerd's server CPU per delivery / ours", m, peer)
    result.notes.append("deliveries/s counts every message reaching every subscriber; latency is publish -> "
                        "delivery (monotonic clock shared by the client processes)")
    _notes(result)
    return result
