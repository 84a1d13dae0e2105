"""ws-echo (100 connections -> 100 objects) and ws-fanout (one room, 1,000
subscribers, each message broadcast to all). Baseline: bare hypercorn-trio
WebSocket echo, measured in the same run."""

from __future__ import annotations

import http.client
import json
import time

from .. import _load, _servers
from .._common import Options, durabilities, measure_ws_echo, measure_ws_fanout, new_result
from .._peers import WORKERD_DURABILITY, PeerUnavailable, workerd
from .._proc import open_fds
from .._report import Measurement, Progress, ScenarioResult

__all__ = ["run_echo", "run_fanout", "run_hibernate"]


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
        result.ratio(f"{m.name} / trio-websocket echo", m, tws, 1.2 if dur == "process" else None)
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


def _health(port: int) -> dict | None:  # type: ignore[type-arg]
    """The server's health JSON, or None when it does not answer in 3 s (at
    its max_connections it stops accepting)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", "/_dotrio/health")
        return json.loads(conn.getresponse().read())
    except OSError:
        return None
    finally:
        conn.close()


def run_hibernate(opts: Options, progress: Progress) -> ScenarioResult:
    """N idle WebSockets, one per object, held open until every object has
    hibernated (evicted, its socket kept by the server): server RSS per
    socket (issue 6: <= 16 KB), descriptors, then one message on each socket
    wakes its object: the echo latency is a wake from hibernation."""
    n = opts.hibernate_sockets
    hib = 1.0
    result = new_result("ws-hibernate", opts, sockets=n, hibernation_timeout=hib)
    paths = [f"/ECHO/h{i}/" for i in range(n)]
    # idle_timeout too, so that the warm-up objects (whose sockets closed) are gone as well.
    runtime = {"hibernation_timeout": hib, "idle_timeout": hib, **(_runtime(opts) or {})}
    held: dict[str, object] = {}
    # Room above the front end's default max_connections (10,000) for the
    # health probe made while the sockets are held.
    with _servers.dotrio(runtime=runtime, server={"max_connections": n + 1000}) as server:
        # Warm up (imports, first sockets) so that the baseline RSS is the
        # running server's, then let those objects hibernate too.
        _load.run_ws_echo(server.port, [f"/ECHO/warm{i}/" for i in range(10)], 0.5)
        time.sleep(hib + 1.5)
        rss0, fds0 = server.rss(), open_fds(server.pid)

        def while_held() -> None:
            progress.update(f"{n:,} sockets open, waiting {hib + 2.5:g} s for every object to hibernate", force=True)
            time.sleep(hib + 2.5)  # the sweeper runs at least once a second
            held["rss"], held["fds"] = server.rss(), open_fds(server.pid)
            held["health"] = _health(server.port)

        progress.update(f"opening {n:,} WebSockets", force=True)
        r = _load.run_ws_hold(server.port, paths, while_held, processes=max(1, min(4, n // 5000)))
    progress.done()
    per = (int(held["rss"]) - rss0) / n  # type: ignore[call-overload]
    health = held.get("health") or {}
    runtime_stats = health.get("runtime", health) if isinstance(health, dict) else {}
    live = runtime_stats.get("live_objects") if isinstance(runtime_stats, dict) else None
    result.figure("WebSockets held open", n)
    if health is None or not health:
        result.notes.append("the health endpoint did not answer while the sockets were held: no live-object "
                            "count")
    result.figure("live objects while held (hibernated ones are evicted)", live, "", "~0 (all hibernated)")
    result.figure("server RSS per hibernated WebSocket", per, "bytes", "<= 16,384", per <= 16384)
    result.figure("server RSS before / with the sockets held", f"{rss0 / 2**20:.0f} / {int(held['rss']) / 2**20:.0f}",  # type: ignore[call-overload]
                  "MiB")
    result.figure("server fds before / with the sockets held", f"{fds0} / {held['fds']}")
    result.figure("echoes after waking (one per socket)", r.ops, f"of {n:,}", f"{n:,}", r.ops == n and not r.errors)
    result.figure("wake-from-hibernation echo p50", r.latency.percentile(50) / 1000, "ms")
    result.figure("wake-from-hibernation echo p99", r.latency.percentile(99) / 1000, "ms")
    result.measurements.append(Measurement("dotrio", f"{n:,} hibernated sockets woken at once", r.ops, r.seconds,
                                           "wakes/s", r.client, r.errors, r.latency, None))
    result.notes.append("all sockets are woken at the same moment: the latency includes queueing behind the others")
    return result
