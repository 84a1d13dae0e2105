"""http-hot, http-spread, http-sql: a KV read + increment per request through
HTTP, on one object, over many objects, and through ``sql.exec``.

Each run measures, in order: the load generator against the canned responder
(its ceiling), the baseline (bare hypercorn-trio ASGI hello-world), dotrio
at each durability asked for, and the peer if asked for; then the ratios.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _load, _servers
from .._common import Options, durabilities, measure_http, new_result
from .._peers import WORKERD_DURABILITY, PeerUnavailable, workerd

if TYPE_CHECKING:
    from .._report import Measurement, Progress, ScenarioResult

__all__ = ["run_hot", "run_spread", "run_sql", "run_hello", "ceiling_http"]


def _runtime(opts: Options) -> dict[str, object] | None:
    """[runtime] settings the command line overrides (--pool-size)."""
    return {"pool_size": opts.pool_size} if opts.pool_size else None


# Targets from issues 6 and 7 (dotrio / baseline, dotrio / workerd).
_BASELINE_TARGET = {"http-hot": 3.0, "http-spread": 2.0, "http-sql": None}
_WORKERD_TARGET = {"http-hot": {"process": 3.0, "power": 1.0}}


def ceiling_http(opts: Options, result: ScenarioResult, progress: Progress) -> None:
    """The load generator against the canned responder: what it can drive."""
    if not opts.ceiling:
        return
    with _servers.ceiling() as server:
        saved = opts.duration
        opts.duration = min(opts.duration, 5.0)
        try:
            m = measure_http(opts, server, "ceiling", "canned responder (client ceiling)", "POST", ["/"], progress)
        finally:
            opts.duration = saved
    result.measurements.append(m)
    if m.client_cpu:
        result.figure("client ceiling (req/s per client core, from the ceiling run)", m.rate / m.client_cpu, "req/s")


def _client_notes(result: ScenarioResult) -> None:
    for m in result.measurements:
        if m.name != "ceiling" and m.client_cpu is not None and m.client_cpu > 0.85:
            result.notes.append(f"{m.name}: the client used {m.client_cpu:.2f} cores: this figure may be "
                                "client-bound")


def _run(scenario: str, binding: str, objects: int, opts: Options, progress: Progress) -> ScenarioResult:
    paths = [f"/{binding}/hot/"] if objects == 1 else [f"/{binding}/o{i}/" for i in range(objects)]
    durs = durabilities(opts)
    result = new_result(scenario, opts, connections=opts.connections, duration=opts.duration, warmup=opts.warmup,
                        objects=objects, client=opts.client, durability=",".join(durs), peer=opts.peer or "-")

    def prepare_for(server: _servers.Server):  # type: ignore[no-untyped-def]
        if objects == 1:
            return None

        def touch_all() -> None:
            # Every object gets its database before the clock starts: creating
            # one costs milliseconds and is not what this scenario measures.
            _load.run_http(server.port, "POST", paths, min(opts.connections, 64), 120.0 + objects / 200,
                           max_requests=objects, random_paths=False)

        return touch_all

    ceiling_http(opts, result, progress)
    with _servers.hypercorn_baseline() as server:
        baseline = measure_http(opts, server, "baseline", "hypercorn-trio ASGI hello-world", "POST", ["/"], progress)
    result.measurements.append(baseline)

    ours: dict[str, Measurement] = {}
    for dur in durs:
        with _servers.dotrio(durability=dur, runtime=_runtime(opts)) as server:
            name = "dotrio" if dur == "process" else f"dotrio-{dur}"
            m = measure_http(opts, server, name, f"{scenario} ({objects:,} object{'s' if objects > 1 else ''})",
                             "POST", paths, progress, durability=dur, prepare=prepare_for(server))
        result.measurements.append(m)
        ours[dur] = m

    peer: Measurement | None = None
    if opts.peer == "workerd":
        try:
            with workerd() as server:
                peer = measure_http(opts, server, "workerd", f"{scenario} (same worker in JS)", "POST", paths,
                                    progress, durability=WORKERD_DURABILITY, prepare=prepare_for(server))
            result.measurements.append(peer)
            result.notes.append(f"peer: {server.name}, local-disk SQLite storage (fsyncs every commit)")
        except PeerUnavailable as exc:
            result.notes.append(str(exc))
    progress.done()

    target = _BASELINE_TARGET.get(scenario)
    for dur, m in ours.items():
        result.ratio(f"{m.name} / baseline (hypercorn-trio hello)", m, baseline, target if dur == "process" else None)
    if peer is not None:
        for dur, m in ours.items():
            result.ratio(f"{m.name} [{dur}] / workerd [fsync]", m, peer, _WORKERD_TARGET.get(scenario, {}).get(dur))
    for m in ours.values():
        result.cpu_ratio(f"{m.name}: baseline's server CPU per request / ours", m, baseline)
        if peer is not None:
            result.cpu_ratio(f"{m.name}: workerd's server CPU per request / ours", m, peer)
    _client_notes(result)
    return result


def run_hot(opts: Options, progress: Progress) -> ScenarioResult:
    return _run("http-hot", "COUNTER", 1, opts, progress)


def run_spread(opts: Options, progress: Progress) -> ScenarioResult:
    return _run("http-spread", "COUNTER", opts.objects or (50 if opts.quick else 10_000), opts, progress)


def run_sql(opts: Options, progress: Progress) -> ScenarioResult:
    return _run("http-sql", "SQLCOUNTER", opts.objects or 1, opts, progress)


def run_hello(opts: Options, progress: Progress) -> ScenarioResult:
    """Hello-world through dotrio serve's dispatcher (a worker entry that
    answers "hello", no object) against the same hypercorn-trio hello-world:
    issue 6's front-end target (>= 15x)."""
    result = new_result("http-hello", opts, connections=opts.connections, duration=opts.duration,
                        warmup=opts.warmup, client=opts.client)
    ceiling_http(opts, result, progress)
    with _servers.hypercorn_baseline() as server:
        baseline = measure_http(opts, server, "baseline", "hypercorn-trio ASGI hello-world", "GET", ["/"], progress)
    result.measurements.append(baseline)
    with _servers.dotrio(runtime=_runtime(opts), main="bench_app:Hello") as server:
        ours = measure_http(opts, server, "dotrio", "hello-world through the dispatcher (worker entry)", "GET",
                            ["/"], progress)
    result.measurements.append(ours)
    progress.done()
    result.ratio("dotrio / baseline (hypercorn-trio hello)", ours, baseline, 15.0)
    result.cpu_ratio("baseline's server CPU per request / ours", ours, baseline)
    _client_notes(result)
    return result
