"""Drive a population of agents against a running example server and report.

    dotrio serve examples/agents/dotrio.toml &           # in one shell
    python examples/agents/simulate.py --agents 10000     # in another

Phases: (1) set up every agent (config, a memory, a prompt), (2) start the
loops of ``--loops`` of them and give ``--schedules`` of them a reminder,
(3) for ``--duration`` seconds, agents message each other (through RPC and
through ``fetch`` to the inbox, some asking for a reply) while relay
subscribers count the events fanned out to them, (4) read back a sample of
agents and the server's health, stop the loops, and print what happened.

Only a server on this machine is accepted (127.0.0.1, ::1 or localhost), and
every count and duration is bounded, so the script cannot be turned into a
load generator against someone else's host.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import secrets
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
import trio_websocket

__all__ = ["Options", "PhaseStats", "Simulation", "main", "parse_args"]

LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_AGENTS = 100_000
MAX_DURATION = 600.0
MAX_CONCURRENCY = 512
MAX_SUBSCRIBERS = 100
SAMPLE = 200
WORDS = (
    "plan deploy review coffee garden rocket budget report meeting weather music river "
    "invoice design bug release travel kitchen paper signal orbit harvest"
).split()


@dataclass
class Options:
    url: str
    agents: int
    loops: int
    interval: float
    schedules: int
    duration: float
    concurrency: int
    relays: int
    subscribers: int
    prefix: str
    seed: int
    keep_loops: bool
    json: bool


@dataclass
class PhaseStats:
    """Requests of one phase: outcomes and latencies."""

    name: str
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    elapsed: float = 0.0

    def record(self, status: str, seconds: float) -> None:
        self.statuses[status] += 1
        self.latencies.append(seconds)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "statuses": dict(sorted(self.statuses.items())),
            "seconds": round(self.elapsed, 3),
            "per_second": round(self.requests / self.elapsed, 1) if self.elapsed > 0 else 0.0,
            "p50_ms": round(self.percentile(50) * 1000, 2),
            "p99_ms": round(self.percentile(99) * 1000, 2),
        }


class Simulation:
    def __init__(self, options: Options) -> None:
        self.o = options
        self.rng = random.Random(options.seed)
        self.names = [f"{options.prefix}-{i}" for i in range(options.agents)]
        self.topics = [f"{options.prefix}-relay-{i}" for i in range(options.relays)]
        self.phases: list[PhaseStats] = []
        self.events: Counter[str] = Counter()
        self.subscribers_ready = 0
        self.messages_sent: Counter[str] = Counter()

    # ---- plumbing ----

    async def request(
        self, client: httpx.AsyncClient, phase: PhaseStats, method: str, path: str, body: Any = None
    ) -> Any:
        start = time.perf_counter()
        try:
            resp = await client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            phase.record(type(exc).__name__, time.perf_counter() - start)
            return None
        phase.record(str(resp.status_code), time.perf_counter() - start)
        if resp.status_code != 200:
            return None
        return resp.json()

    async def run_phase(self, name: str, jobs: list[Callable[[PhaseStats], Awaitable[None]]]) -> PhaseStats:
        """Run ``jobs`` with at most ``concurrency`` in flight."""
        phase = PhaseStats(name)
        self.phases.append(phase)
        phase.started = time.perf_counter()
        slots = trio.Semaphore(self.o.concurrency)

        async def run(job: Callable[[PhaseStats], Awaitable[None]]) -> None:
            try:
                await job(phase)
            finally:
                slots.release()

        async with trio.open_nursery() as nursery:
            for job in jobs:
                # Taken here, released by the job: never more tasks than slots.
                await slots.acquire()
                nursery.start_soon(run, job)
        phase.elapsed = time.perf_counter() - phase.started
        self.progress(f"{name}: {phase.requests} requests, {phase.errors} errors, {phase.elapsed:.1f} s")
        return phase

    def progress(self, line: str) -> None:
        if not self.o.json:
            print(f"  .. {line}", file=sys.stderr, flush=True)

    def path(self, name: str, rest: str = "") -> str:
        return f"/agents/{urllib.parse.quote(name, safe='')}{rest}"

    # ---- phases ----

    def setup_jobs(self, client: httpx.AsyncClient) -> list[Callable[[PhaseStats], Awaitable[None]]]:
        def job(i: int, name: str) -> Callable[[PhaseStats], Awaitable[None]]:
            topic = self.topics[i % len(self.topics)] if self.topics else None
            words = self.rng.sample(WORDS, 3)

            async def run(phase: PhaseStats) -> None:
                await self.request(client, phase, "PUT", self.path(name, "/config"),
                                   {"persona": f"agent {i}", "relay": topic})
                await self.request(client, phase, "POST", self.path(name, "/memory"),
                                   {"key": "hello", "text": f"{name} cares about {' and '.join(words)}"})
                await self.request(client, phase, "POST", self.path(name, "/prompt"),
                                   {"message": f"what do you care about, {words[0]}?"})

            return run

        return [job(i, n) for i, n in enumerate(self.names)]

    def start_jobs(self, client: httpx.AsyncClient) -> list[Callable[[PhaseStats], Awaitable[None]]]:
        jobs: list[Callable[[PhaseStats], Awaitable[None]]] = []
        for name in self.names[: self.o.loops]:

            async def start(phase: PhaseStats, name: str = name) -> None:
                await self.request(client, phase, "POST", self.path(name, "/loop/start"), {"interval": self.o.interval})

            jobs.append(start)
        for name in self.rng.sample(self.names, min(self.o.schedules, len(self.names))):
            delay = round(self.rng.uniform(1.0, max(1.0, self.o.duration)), 1)

            async def remind(phase: PhaseStats, name: str = name, delay: float = delay) -> None:
                await self.request(client, phase, "POST", self.path(name, "/schedules"),
                                   {"in": delay, "note": f"check in after {delay} s"})

            jobs.append(remind)
        return jobs

    def stop_jobs(self, client: httpx.AsyncClient) -> list[Callable[[PhaseStats], Awaitable[None]]]:
        def job(name: str) -> Callable[[PhaseStats], Awaitable[None]]:
            async def run(phase: PhaseStats) -> None:
                await self.request(client, phase, "POST", self.path(name, "/loop/stop"))

            return run

        return [job(n) for n in self.names[: self.o.loops]]

    async def message_storm(self, client: httpx.AsyncClient) -> PhaseStats:
        phase = PhaseStats("messages")
        self.phases.append(phase)
        phase.started = time.perf_counter()
        deadline = trio.current_time() + self.o.duration

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while trio.current_time() < deadline:
                sender, to = rng.sample(self.names, 2) if len(self.names) > 1 else (self.names[0], self.names[0])
                via = rng.choice(("rpc", "fetch"))
                reply = rng.random() < 0.3
                body = {"to": to, "body": f"{rng.choice(WORDS)} {rng.choice(WORDS)}?", "via": via, "reply": reply}
                if await self.request(client, phase, "POST", self.path(sender, "/send"), body) is not None:
                    self.messages_sent[via] += 1

        with trio.move_on_after(self.o.duration + 30):
            async with trio.open_nursery() as nursery:
                for w in range(self.o.concurrency):
                    nursery.start_soon(worker, self.o.seed * 1000 + w)
        phase.elapsed = time.perf_counter() - phase.started
        self.progress(f"messages: {phase.requests} sent in {phase.elapsed:.1f} s, {phase.errors} errors")
        return phase

    async def subscribe(self, topic: str, stop: trio.Event, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        ws_url = self.o.url.replace("http://", "ws://", 1) + f"/relay/{urllib.parse.quote(topic)}/ws?subscribe=agent.*"
        async with trio_websocket.open_websocket_url(ws_url) as ws:
            self.subscribers_ready += 1
            task_status.started()
            with trio.move_on_after(MAX_DURATION * 2):
                while not stop.is_set():
                    with trio.move_on_after(0.2):
                        message = await ws.get_message()
                        try:
                            self.events[json.loads(message).get("type", "?")] += 1
                        except ValueError:
                            self.events["unparsable"] += 1

    async def read_back(self, client: httpx.AsyncClient) -> dict[str, Any]:
        sample = self.rng.sample(self.names, min(SAMPLE, len(self.names)))
        loops_sample = self.names[: min(SAMPLE, self.o.loops)]
        states: dict[str, Any] = {}
        phase = PhaseStats("read back")
        self.phases.append(phase)
        phase.started = time.perf_counter()
        limiter = trio.CapacityLimiter(self.o.concurrency)

        async def read(name: str) -> None:
            async with limiter:
                states[name] = await self.request(client, phase, "GET", self.path(name))

        async with trio.open_nursery() as nursery:
            for name in dict.fromkeys(sample + loops_sample):
                nursery.start_soon(read, name)
        phase.elapsed = time.perf_counter() - phase.started
        got = {k: v for k, v in states.items() if v}
        sampled = [got[n] for n in sample if n in got]
        looped = [got[n] for n in loops_sample if n in got]
        return {
            "sampled_agents": len(sampled),
            "messages_per_agent": _mean(s["messages"] for s in sampled),
            "memories_per_agent": _mean(s["memories"] for s in sampled),
            "unread_inbox_per_agent": _mean(s["inbox_unread"] for s in sampled),
            "loop_agents_sampled": len(looped),
            "ticks_per_loop_agent": _mean(s["loop"]["ticks"] for s in looped),
            "loop_errors": sum(s["loop"]["errors"] for s in looped),
            "loops_running": sum(1 for s in looped if s["loop"]["running"]),
        }

    async def run(self) -> dict[str, Any]:
        limits = httpx.Limits(max_connections=self.o.concurrency, max_keepalive_connections=self.o.concurrency)
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=self.o.url, timeout=30.0, limits=limits) as client:
            try:
                health = (await client.get("/_dotrio/health")).json()
            except httpx.HTTPError as exc:
                raise SystemExit(f"no dotrio server at {self.o.url} ({exc}); start one with: "
                                 "dotrio serve examples/agents/dotrio.toml") from None
            before = health.get("runtime", {})
            await self.run_phase("setup", self.setup_jobs(client))
            await self.run_phase("loops+schedules", self.start_jobs(client))
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for i in range(self.o.subscribers):
                    await nursery.start(self.subscribe, self.topics[i % len(self.topics)], stop)
                await self.message_storm(client)
                # Let the last ticks, replies and fan-outs arrive.
                await trio.sleep(min(2.0, self.o.interval))
                stop.set()
            agents = await self.read_back(client)
            if not self.o.keep_loops:
                await self.run_phase("stop loops", self.stop_jobs(client))
            after = (await client.get("/_dotrio/health")).json().get("runtime", {})
        return {
            "server": self.o.url,
            "population": {
                "agents": self.o.agents, "prefix": self.o.prefix, "loops": self.o.loops,
                "interval_s": self.o.interval, "schedules": self.o.schedules, "duration_s": self.o.duration,
                "concurrency": self.o.concurrency, "relays": len(self.topics), "subscribers": self.o.subscribers,
            },
            "phases": {p.name: p.summary() for p in self.phases},
            "messages_sent": dict(self.messages_sent),
            "relay_events_received": dict(sorted(self.events.items())),
            "agents": agents,
            "server_runtime": _runtime_delta(before, after),
            "wall_seconds": round(time.perf_counter() - started, 2),
        }


def _mean(values: Any) -> float:
    values = list(values)
    return round(sum(values) / len(values), 2) if values else 0.0


def _runtime_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"live_objects": after.get("live_objects")}
    for key in ("activations", "evictions", "events", "overloaded"):
        if isinstance(after.get(key), int) and isinstance(before.get(key), int):
            out[key] = after[key] - before[key]
    alarms_before, alarms_after = before.get("alarms") or {}, after.get("alarms") or {}
    for key, label in (("alarms_run", "alarms_run"), ("schedules_run", "schedules_run"),
                       ("dispatched", "alarm_wakes"), ("alarm_failures", "alarm_failures")):
        if isinstance(alarms_after.get(key), int):
            out[label] = alarms_after[key] - alarms_before.get(key, 0)
    if "armed" in alarms_after:
        out["alarms_armed"] = alarms_after["armed"]
    return out


def render(report: dict[str, Any]) -> str:
    p = report["population"]
    lines = [
        f"dotrio agent simulation against {report['server']} ({report['wall_seconds']} s)",
        f"population: {p['agents']} agents (prefix {p['prefix']}), {p['loops']} loops every {p['interval_s']} s, "
        f"{p['schedules']} reminders, {p['relays']} relays with {p['subscribers']} subscribers, "
        f"{p['duration_s']} s of messages at concurrency {p['concurrency']}",
        "",
        f"{'phase':<16}{'requests':>10}{'errors':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}  statuses",
    ]
    for name, s in report["phases"].items():
        statuses = " ".join(f"{k}:{v}" for k, v in s["statuses"].items())
        lines.append(
            f"{name:<16}{s['requests']:>10}{s['errors']:>8}{s['per_second']:>10}"
            f"{s['p50_ms']:>9}{s['p99_ms']:>9}  {statuses}"
        )
    a = report["agents"]
    lines += [
        "",
        f"messages sent: {report['messages_sent']}",
        f"relay events received: {sum(report['relay_events_received'].values())} {report['relay_events_received']}",
        f"sampled {a['sampled_agents']} agents: {a['messages_per_agent']} log entries, "
        f"{a['memories_per_agent']} memories, "
        f"{a['unread_inbox_per_agent']} unread inbox messages each",
        f"loops ({a['loop_agents_sampled']} sampled): {a['ticks_per_loop_agent']} ticks each, "
        f"{a['loop_errors']} errors, {a['loops_running']} running at read-back",
        f"server runtime (delta): {report['server_runtime']}",
    ]
    return "\n".join(lines)


def _bounded(kind: type, low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def parse_args(argv: list[str] | None = None) -> Options:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--url", default="http://127.0.0.1:8787", help="the running server (this machine only)")
    ap.add_argument("--agents", type=_bounded(int, 1, MAX_AGENTS), default=1000)
    ap.add_argument("--loops", type=_bounded(int, 0, MAX_AGENTS), default=None,
                    help="how many agents run their loop (default: a tenth of them)")
    ap.add_argument("--interval", type=_bounded(float, 0.05, 3600), default=2.0, help="loop interval, seconds")
    ap.add_argument("--schedules", type=_bounded(int, 0, MAX_AGENTS), default=None,
                    help="how many agents get a one-shot reminder (default: a tenth)")
    ap.add_argument("--duration", type=_bounded(float, 0.1, MAX_DURATION), default=10.0,
                    help="seconds of agent-to-agent messages")
    ap.add_argument("--concurrency", type=_bounded(int, 1, MAX_CONCURRENCY), default=32)
    ap.add_argument("--relays", type=_bounded(int, 0, 1000), default=4, help="relay topics the agents publish to")
    ap.add_argument("--subscribers", type=_bounded(int, 0, MAX_SUBSCRIBERS), default=4,
                    help="WebSocket subscribers spread over the relays")
    ap.add_argument("--prefix", default=None, help="agent name prefix (default: sim-<random>)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep-loops", action="store_true", help="leave the loops running at the end")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ns = ap.parse_args(argv)
    parsed = urllib.parse.urlsplit(ns.url)
    if parsed.scheme != "http" or parsed.hostname not in LOCAL_HOSTS:
        ap.error(f"--url must be http:// on this machine ({', '.join(sorted(LOCAL_HOSTS))}), got {ns.url!r}")
    if ns.subscribers and not ns.relays:
        ap.error("--subscribers needs at least one relay (--relays)")
    loops = ns.agents // 10 if ns.loops is None else min(ns.loops, ns.agents)
    schedules = ns.agents // 10 if ns.schedules is None else min(ns.schedules, ns.agents)
    return Options(
        url=ns.url.rstrip("/"), agents=ns.agents, loops=loops, interval=ns.interval, schedules=schedules,
        duration=ns.duration, concurrency=ns.concurrency, relays=ns.relays, subscribers=ns.subscribers,
        prefix=ns.prefix or f"sim-{secrets.token_hex(3)}", seed=ns.seed, keep_loops=ns.keep_loops, json=ns.json,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    report = trio.run(Simulation(options).run)
    print(json.dumps(report, indent=2) if options.json else render(report))
    failed = sum(p["errors"] for p in report["phases"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
