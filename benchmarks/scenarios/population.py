"""population: many objects on disk, a random sample of them woken.

Phase 1 creates ``--population`` objects, each with a little state (three
keys, ~150 bytes: one database file each), through an in-process Runtime with
a short idle timeout so they do not pile up in memory. Phase 2 opens a fresh
Runtime on the same files and touches ``--touch`` of them at random, one at a
time (so each latency is one cold activation, not a queue), keeping every
touched object live; then evicts them all. It reports RSS per live object,
RSS per evicted object, open file descriptors (sampled during the run: they
must stay bounded by the connection pool, not grow with the population) and
cold-activation latency.

This runs in-process (the benchmark process is the server): RSS and fd counts
are this process's. ``--data-dir`` keeps the created objects for later runs
(a marker file records how many exist), since creating a million databases
takes a long while.
"""

from __future__ import annotations

import ctypes
import gc
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import trio

from dotrio import DurableObject, Runtime

from .._common import Options, new_result
from .._proc import open_fds, rss_bytes
from .._report import Histogram, Measurement, Progress, ScenarioResult, Series

__all__ = ["run", "Agent"]

_MARKER = "population.count"


class Agent(DurableObject):
    async def create(self, i: int) -> None:
        await self.ctx.storage.put({"name": f"agent-{i}", "turns": 0,
                                    "profile": {"model": "small", "tags": ["a", "b"], "created": i}})

    async def touch(self) -> int:
        return await self.ctx.storage.get("turns")


def _malloc_trim() -> bool:
    """Give freed heap back to the OS, so RSS shows what is still held."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False


def _disk_usage(path: Path) -> tuple[int, int]:
    files = used = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            try:
                st = os.stat(os.path.join(root, n))
            except OSError:
                continue
            files += 1
            used += st.st_blocks * 512
    return files, used


async def _create(data_dir: Path, start: int, n: int, progress: Progress, concurrency: int = 32) -> float:
    t0 = time.monotonic()
    done = start
    async with Runtime(bindings={"AGENT": Agent}, data_dir=data_dir, idle_timeout=0.5) as rt:
        ns = rt.env.AGENT
        next_i = start

        async def worker() -> None:
            nonlocal next_i, done
            while next_i < n:
                i = next_i
                next_i += 1
                await ns.get_by_name(f"a{i}").create(i)
                done += 1
                if done % 1000 == 0:
                    el = time.monotonic() - t0
                    progress.update(f"creating {done:,}/{n:,} objects ({(done - start) / el:,.0f}/s, "
                                    f"{(n - done) / max(1e-9, (done - start) / el) / 60:.1f} min left)")
                    (data_dir / _MARKER).write_text(str(done - concurrency))  # resumable, conservatively

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
    (data_dir / _MARKER).write_text(str(n))
    return time.monotonic() - t0


async def _touch(data_dir: Path, n: int, touch: int, pool_size: int | None, progress: Progress,
                 result: ScenarioResult) -> Measurement:
    kwargs = {"pool_size": pool_size} if pool_size else {}
    rng = random.Random(7)
    sample = rng.sample(range(n), min(touch, n))
    hist = Histogram()
    async with Runtime(bindings={"AGENT": Agent}, data_dir=data_dir, idle_timeout=3600.0, **kwargs) as rt:
        ns = rt.env.AGENT
        gc.collect()
        _malloc_trim()
        rss0 = rss_bytes()
        fds0 = max_fds = open_fds()
        series = Series(time.monotonic())
        capacity = rt.backend.statistics().pool.capacity if rt.backend.statistics().pool else 0
        # RSS checkpoints: once the pool is full (capacity touched) and later,
        # so that the slope between them is the cost of one more live object
        # with the pool's size constant.
        checkpoints = {capacity: None, max(capacity + 1, min(2 * capacity, len(sample) // 2)): None}
        t0 = time.monotonic()
        for k, i in enumerate(sample):
            if k in checkpoints:
                checkpoints[k] = (rt.statistics().live_objects, rss_bytes())
            stub = ns.get_by_name(f"a{i}")
            s = time.perf_counter()
            await stub.touch()
            t = time.perf_counter()
            hist.add((t - s) * 1e6)
            series.add(time.monotonic())
            if k % 1000 == 0:
                max_fds = max(max_fds, open_fds())
                progress.update(f"touched {k:,}/{len(sample):,}, live {rt.statistics().live_objects:,}, "
                                f"fds {max_fds}")
        elapsed = time.monotonic() - t0
        max_fds = max(max_fds, open_fds())
        stats = rt.statistics()
        live = stats.live_objects
        gc.collect()
        rss_live = rss_bytes()
        # Evict everything now (the sweeper would after idle_timeout).
        for actor in list(rt._actors.values()):
            rt.evict(actor)
        gc.collect()
        rss_bytes()
        _malloc_trim()
        rss_evicted = rss_bytes()
        fds_after = open_fds()
        pool = getattr(stats.storage, "pool", None)
        # Steady-state cost of an evicted object: wake fresh objects and evict
        # each at once; freed memory is reused, so growth is what is retained.
        touched_set = set(sample)
        fresh = [i for i in rng.sample(range(n), min(n, len(sample) + 20_000)) if i not in touched_set][:20_000]
        pool_full = pool is not None and pool.open >= pool.capacity
        rss_f0 = rss_bytes()
        for i in fresh:
            await ns.get_by_name(f"a{i}").touch()
            actor = rt._actors.get((ns.name, str(ns.id_from_name(f"a{i}"))))
            if actor is not None:
                rt.evict(actor)
        gc.collect()
        per_evicted = (rss_bytes() - rss_f0) / max(1, len(fresh))
    touched = len(sample)
    result.figure("objects touched (cold activations)", touched)
    result.figure("live objects after touching", live)
    per_live = (rss_live - rss0) / max(1, live)
    result.figure("RSS per live object, all-in (instance + its share of the pool)", per_live, "bytes",
                  "<= 13,619 (1/20 of workerd's ~266 KiB)", per_live <= 266 * 1024 / 20)
    (live_a, rss_a), (live_b, rss_b) = [v if v is not None else (live, rss_live) for v in checkpoints.values()]
    if live_b > live_a:
        marginal = (rss_live - rss_b) / max(1, live - live_b) if live > live_b else (rss_b - rss_a) / (live_b - live_a)
        result.figure("RSS per live object, marginal (pool full: instance only)", marginal, "bytes", "<= 13,619",
                      marginal <= 266 * 1024 / 20)
        if pool is not None and live_a:
            per_conn = (rss_a - rss0 - marginal * live_a) / max(1, pool.capacity)
            result.figure("RSS per pooled connection (derived)", per_conn, "bytes", "<= 65,536",
                          per_conn <= 65536)
    else:
        result.notes.append("touch fewer than twice the pool size: no marginal per-object figure "
                            "(raise --touch or lower --pool-size)")
    if pool_full:
        result.figure(f"RSS retained per evicted object ({len(fresh):,} more woken then evicted, pool full)",
                      per_evicted, "bytes", "~0", per_evicted < 1024)
    else:
        result.notes.append("the pool was not full, so waking more objects grows it: no per-evicted-object figure "
                            "(touch at least the pool size)")
    result.figure("RSS before touching / all live / after evicting all (pool kept)",
                  f"{rss0 / 2**20:.0f} / {rss_live / 2**20:.0f} / {rss_evicted / 2**20:.0f}", "MiB")
    result.figure("open fds: before / max during / after eviction", f"{fds0} / {max_fds} / {fds_after}", "fds",
                  "bounded by the pool, not the population", max_fds <= fds0 + 3 * (pool.capacity if pool else 4096) + 64)
    if pool is not None:
        result.figure("connection pool (capacity / open at end / opens)", f"{pool.capacity} / {pool.open} / "
                      f"{pool.opens}")
    result.figure("cold activation p50", hist.percentile(50) / 1000, "ms")
    result.figure("cold activation p99", hist.percentile(99) / 1000, "ms")
    return Measurement("dotrio", f"cold activations, one at a time ({n:,} on disk)", touched, elapsed,
                       "activations/s", "in-process", 0, hist, series, server_rss=rss_live)


def run(opts: Options, progress: Progress) -> ScenarioResult:
    n = opts.population
    touch = min(opts.touch, n)
    result = new_result("population", opts, population=n, touch=touch, pool_size=opts.pool_size or "default")
    tmp: str | None = None
    if opts.data_dir:
        data_dir = Path(opts.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="dotrio-bench-population-", dir=os.environ.get("DOTRIO_BENCH_TMP"))
        data_dir = Path(tmp)
    try:
        marker = data_dir / _MARKER
        have = int(marker.read_text()) if marker.exists() else 0
        if have < n:
            free = shutil.disk_usage(data_dir).free
            need = (n - have) * 20_000  # measured: ~12-16 KiB per object database, with margin
            if need > free * 0.8:
                raise RuntimeError(f"population {n:,} needs ~{need / 2**30:.0f} GiB; {free / 2**30:.0f} GiB free "
                                   f"at {data_dir}: pass a smaller --population")
            secs = trio.run(_create, data_dir, have, n, progress)
            result.figure("objects created in this run", n - have)
            result.figure("creation rate", (n - have) / secs, "objects/s")
        else:
            result.notes.append(f"reused {have:,} objects already in {data_dir}")
        files, used = _disk_usage(data_dir)
        result.figure("objects on disk", n, "", ">= 1,000,000", n >= 1_000_000)
        result.figure("disk used per object", used / max(1, n), "bytes")
        result.figure("files on disk", files)
        m = trio.run(_touch, data_dir, n, touch, opts.pool_size, progress, result)
        result.measurements.append(m)
    finally:
        progress.done()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result.notes.append("in-process Runtime: RSS and descriptors are the benchmark process's own")
    return result
