"""Results: latency histograms, throughput series, the terminal table, JSON
lines and the PNG chart every scenario shares."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "Histogram",
    "Series",
    "Measurement",
    "Ratio",
    "Figure",
    "ScenarioResult",
    "Progress",
    "print_table",
    "markdown",
    "write_json",
    "plot",
    "fmt_num",
]

# Log buckets at 2% resolution: percentiles within 1% of the true value, a
# fixed 1 KiB per histogram whatever the sample count, and mergeable across
# client processes by adding counts.
_K = 1.0 / math.log(1.02)
_NB = 1100  # covers 1 µs .. ~3e9 µs


class Histogram:
    """Latencies in microseconds, log-bucketed."""

    __slots__ = ("counts", "total", "max_us", "min_us")

    def __init__(self, counts: Sequence[int] | None = None, max_us: float = 0.0, min_us: float = math.inf) -> None:
        self.counts = list(counts) if counts is not None else [0] * _NB
        self.total = sum(self.counts)
        self.max_us = max_us
        self.min_us = min_us

    def add(self, us: float) -> None:
        if us > self.max_us:
            self.max_us = us
        if us < self.min_us:
            self.min_us = us
        i = int(math.log(us) * _K) if us > 1.0 else 0
        self.counts[i if i < _NB else _NB - 1] += 1
        self.total += 1

    def add_many(self, us: float, n: int) -> None:
        """``n`` samples of ``us`` (for quantiles handed over by wrk)."""
        self.add(us)
        if n > 1:
            i = int(math.log(us) * _K) if us > 1.0 else 0
            self.counts[i if i < _NB else _NB - 1] += n - 1
            self.total += n - 1

    def merge(self, other: Histogram) -> None:
        c = self.counts
        for i, n in enumerate(other.counts):
            if n:
                c[i] += n
        self.total += other.total
        self.max_us = max(self.max_us, other.max_us)
        self.min_us = min(self.min_us, other.min_us)

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0..100) in µs; 0 when empty."""
        if self.total == 0:
            return 0.0
        if p >= 100:
            return self.max_us
        rank = max(1, math.ceil(self.total * p / 100.0))
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(math.exp((i + 0.5) / _K), self.max_us) if i else 1.0
        return self.max_us  # pragma: no cover

    def to_json(self) -> dict[str, Any]:
        nz = {i: n for i, n in enumerate(self.counts) if n}
        return {"buckets": nz, "max_us": self.max_us, "min_us": self.min_us if self.total else 0.0}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        counts = [0] * _NB
        for i, n in data["buckets"].items():
            counts[int(i)] = n
        h = cls(counts, data["max_us"], data["min_us"] if data["min_us"] else math.inf)
        return h

    def summary(self) -> dict[str, float]:
        return {
            "p50_ms": self.percentile(50) / 1000,
            "p90_ms": self.percentile(90) / 1000,
            "p99_ms": self.percentile(99) / 1000,
            "p999_ms": self.percentile(99.9) / 1000,
            "max_ms": self.max_us / 1000,
            "samples": self.total,
        }


class Series:
    """Completions per time bin, for the throughput-over-time chart."""

    __slots__ = ("start", "step", "counts")

    def __init__(self, start: float, step: float = 0.25) -> None:
        self.start = start
        self.step = step
        self.counts: list[int] = []

    def add(self, t: float, n: int = 1) -> None:
        i = int((t - self.start) / self.step)
        if i < 0:
            i = 0
        c = self.counts
        while len(c) <= i:
            c.append(0)
        c[i] += n

    def merge(self, other: Series) -> None:
        shift = int(round((other.start - self.start) / self.step))
        for i, n in enumerate(other.counts):
            self.add(self.start + (i + shift + 0.5) * self.step, n)

    def rates(self) -> list[tuple[float, float]]:
        """(seconds since start, ops/s) per bin."""
        return [((i + 0.5) * self.step, n / self.step) for i, n in enumerate(self.counts)]

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "step": self.step, "counts": self.counts}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Series:
        s = cls(data["start"], data["step"])
        s.counts = list(data["counts"])
        return s


@dataclass
class Measurement:
    """One side of a comparison: a server (or in-process system) under one load."""

    name: str                      # "dotrio", "baseline", "workerd", "client ceiling", ...
    what: str                      # a few words: what ran
    ops: int                       # operations completed
    seconds: float                 # wall time of the measured phase
    unit: str = "req/s"
    client: str = ""               # "wrk 4.x", "python", "in-process"
    errors: int = 0
    latency: Histogram | None = None
    series: Series | None = None
    client_cpu: float | None = None  # cores used by the load generator (1.0 = one core saturated)
    server_cpu: float | None = None  # cores used by the server under test
    server_rss: int | None = None    # bytes, at the end
    durability: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_us_per_op(self) -> float | None:
        """Server CPU per operation: the figure a shared box disturbs least
        (a server denied part of its core serves fewer ops/s, not dearer ones)."""
        if self.server_cpu is None or not self.ops:
            return None
        return self.server_cpu * self.seconds / self.ops * 1e6

    def to_json(self) -> dict[str, Any]:
        d = {
            "name": self.name, "what": self.what, "ops": self.ops, "seconds": round(self.seconds, 4),
            "rate": round(self.rate, 2), "unit": self.unit, "client": self.client, "errors": self.errors,
            "client_cpu": self.client_cpu, "server_cpu": self.server_cpu, "server_rss": self.server_rss,
            "server_us_per_op": self.server_us_per_op,
            "durability": self.durability, "extra": self.extra,
        }
        if self.latency is not None:
            d["latency"] = self.latency.summary()
        return d


@dataclass
class Ratio:
    label: str
    value: float | None
    target: str = ""          # e.g. ">= 3x"
    met: bool | None = None   # None: no target, or not measurable

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Figure:
    """A scalar result that is not a throughput (RSS per object, lateness...)."""

    name: str
    value: float | int | str | None
    unit: str = ""
    target: str = ""
    met: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScenarioResult:
    scenario: str
    command: str
    params: dict[str, Any] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    text: str = ""  # verbatim output of a gathered script (the storage scenario)

    def measurement(self, name: str) -> Measurement | None:
        for m in self.measurements:
            if m.name == name:
                return m
        return None

    def ratio(self, label: str, num: Measurement | None, den: Measurement | None,
              target: float | None = None) -> Ratio:
        """Adds num.rate / den.rate (None when either side is missing)."""
        value = num.rate / den.rate if num is not None and den is not None and den.rate > 0 else None
        met = None if target is None or value is None else value >= target
        r = Ratio(label, value, f">= {target:g}x" if target is not None else "", met)
        self.ratios.append(r)
        return r

    def cpu_ratio(self, label: str, num: Measurement | None, den: Measurement | None) -> Ratio:
        """Adds den's server CPU per op / num's: how many times cheaper num's
        operations are. Robust on a shared box where req/s is not."""
        a = num.server_us_per_op if num is not None else None
        b = den.server_us_per_op if den is not None else None
        r = Ratio(label, b / a if a and b else None)
        self.ratios.append(r)
        return r

    def figure(self, name: str, value: Any, unit: str = "", target: str = "", met: bool | None = None) -> Figure:
        f = Figure(name, value, unit, target, met)
        self.figures.append(f)
        return f


def fmt_num(x: float | int | None, digits: int = 3) -> str:
    """Human figures: 12,345 / 1.23 / 0.0123."""
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 1000):
        return f"{int(x):,}"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.1f}"
    if ax == 0:
        return "0"
    return f"{x:.{digits}g}"


def _ms(us: float) -> str:
    return fmt_num(us / 1000.0)


def _table(headers: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out.write(line.rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for r in rows:
        out.write("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                  + "\n")


def print_table(result: ScenarioResult, out: TextIO = sys.stdout) -> None:
    m = result.machine
    out.write(f"\n== {result.scenario} ==  ({m.get('cores')} cores, {m.get('memory_gib')} GiB, "
              f"load {m.get('loadavg', ('?',))[0]} at start)\n")
    out.write(f"command: {result.command}\n")
    if result.params:
        out.write("params:  " + ", ".join(f"{k}={v}" for k, v in result.params.items()) + "\n")
    if result.measurements:
        headers = ["run", "client", "rate", "unit", "p50 ms", "p99 ms", "max ms", "errors", "srv CPU", "srv µs/op",
                   "cli CPU", "srv RSS MiB"]
        rows = []
        for ms in result.measurements:
            h = ms.latency
            rows.append([
                f"{ms.name}: {ms.what}" + (f" [{ms.durability}]" if ms.durability else ""),
                ms.client or "-",
                fmt_num(ms.rate),
                ms.unit,
                _ms(h.percentile(50)) if h and h.total else "-",
                _ms(h.percentile(99)) if h and h.total else "-",
                _ms(h.max_us) if h and h.total else "-",
                fmt_num(ms.errors),
                fmt_num(ms.server_cpu, 2) if ms.server_cpu is not None else "-",
                fmt_num(ms.server_us_per_op),
                fmt_num(ms.client_cpu, 2) if ms.client_cpu is not None else "-",
                fmt_num(ms.server_rss / 2**20) if ms.server_rss else "-",
            ])
        _table(headers, rows, out)
    if result.ratios:
        out.write("\n")
        _table(["ratio", "value", "target", "met"],
               [[r.label, (fmt_num(r.value) + "x") if r.value is not None else "-", r.target or "-",
                 {True: "yes", False: "NO", None: "-"}[r.met]] for r in result.ratios], out)
    if result.figures:
        out.write("\n")
        _table(["figure", "value", "unit", "target", "met"],
               [[f.name, fmt_num(f.value), f.unit, f.target or "-", {True: "yes", False: "NO", None: "-"}[f.met]]
                for f in result.figures], out)
    if result.text:
        out.write("\n" + result.text.rstrip() + "\n")
    for n in result.notes:
        out.write(f"note: {n}\n")
    out.flush()


def markdown(result: ScenarioResult) -> str:
    """The run as a Markdown section (what benchmarks/RESULTS.md is built from)."""
    m = result.machine
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(result.started))
    lines = [f"### {result.scenario}", "",
             f"`{result.command}`  ", f"{when}; {m.get('cores')} cores ({m.get('cpu')}), {m.get('memory_gib')} GiB, "
             f"Python {m.get('python')}, load average at start {m.get('loadavg', ('?',))[0]}", ""]
    if result.measurements:
        lines += ["| run | client | rate | p50 ms | p99 ms | max ms | errors | server CPU | server µs/op | client CPU |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for ms in result.measurements:
            h = ms.latency
            ok = h is not None and h.total
            lines.append(
                f"| {ms.name}: {ms.what}{f' [{ms.durability}]' if ms.durability else ''} | {ms.client or '-'} | "
                f"{fmt_num(ms.rate)} {ms.unit} | {_ms(h.percentile(50)) if ok else '-'} | "
                f"{_ms(h.percentile(99)) if ok else '-'} | {_ms(h.max_us) if ok else '-'} | {fmt_num(ms.errors)} | "
                f"{fmt_num(ms.server_cpu, 2) if ms.server_cpu is not None else '-'} | "
                f"{fmt_num(ms.server_us_per_op)} | "
                f"{fmt_num(ms.client_cpu, 2) if ms.client_cpu is not None else '-'} |")
        lines.append("")
    if result.ratios:
        lines += ["| ratio | value | target | met |", "|---|---:|---|---|"]
        for r in result.ratios:
            lines.append(f"| {r.label} | {fmt_num(r.value) + 'x' if r.value is not None else '-'} | "
                         f"{r.target or '-'} | {({True: 'yes', False: '**no**', None: '-'})[r.met]} |")
        lines.append("")
    if result.figures:
        lines += ["| figure | value | target | met |", "|---|---:|---|---|"]
        for f in result.figures:
            lines.append(f"| {f.name} | {fmt_num(f.value)} {f.unit} | {f.target or '-'} | "
                         f"{({True: 'yes', False: '**no**', None: '-'})[f.met]} |")
        lines.append("")
    if result.text:
        lines += ["```", result.text.rstrip(), "```", ""]
    for n in result.notes:
        lines.append(f"- {n}")
    return "\n".join(lines).rstrip() + "\n"


def json_lines(result: ScenarioResult) -> Iterable[dict[str, Any]]:
    base = {"scenario": result.scenario, "started": result.started}
    yield {**base, "type": "run", "command": result.command, "params": result.params, "machine": result.machine,
           "notes": result.notes, "text": result.text}
    for ms in result.measurements:
        yield {**base, "type": "measurement", **ms.to_json()}
    for r in result.ratios:
        yield {**base, "type": "ratio", **r.to_json()}
    for f in result.figures:
        yield {**base, "type": "figure", **f.to_json()}


def write_json(result: ScenarioResult, out: TextIO = sys.stdout) -> None:
    for line in json_lines(result):
        out.write(json.dumps(line, default=str) + "\n")
    out.flush()


def plot(result: ScenarioResult, path: str | os.PathLike[str]) -> Path | None:
    """Throughput over time and latency distribution, one PNG per run.
    Returns the path, or None when matplotlib is missing (said on stderr)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.stderr.write("--plot needs matplotlib (pip install matplotlib); no chart written\n")
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    drew = False
    for ms in result.measurements:
        if ms.series is not None and ms.series.counts:
            pts = ms.series.rates()
            ax1.plot([p[0] for p in pts], [p[1] for p in pts], label=f"{ms.name}: {ms.what}")
            drew = True
    ax1.set_title(f"{result.scenario}: throughput over time")
    ax1.set_xlabel("seconds")
    units = list(dict.fromkeys(ms.unit for ms in result.measurements if ms.series is not None))
    ax1.set_ylabel(" | ".join(units) if units else "ops/s")
    ax1.grid(alpha=0.3)
    if drew:
        ax1.legend(fontsize=7)
    drew = False
    pcts = [1, 5, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99]
    for ms in result.measurements:
        h = ms.latency
        if h is not None and h.total:
            # Latency by percentile on a "number of nines" axis: the tail is readable.
            xs = [-math.log10(1 - p / 100.0) for p in pcts]
            ax2.plot(xs, [h.percentile(p) / 1000.0 for p in pcts], marker=".", label=f"{ms.name}: {ms.what}")
            drew = True
    ax2.set_xticks([-math.log10(1 - p / 100.0) for p in (50, 90, 99, 99.9, 99.99)])
    ax2.set_xticklabels(["p50", "p90", "p99", "p99.9", "p99.99"])
    ax2.set_yscale("log")
    ax2.set_ylabel("latency ms")
    ax2.set_title("latency distribution")
    ax2.grid(alpha=0.3, which="both")
    if drew:
        ax2.legend(fontsize=7)
    m = result.machine
    fig.suptitle(f"{result.command}   ({m.get('cores')} cores, {m.get('memory_gib')} GiB)", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class Progress:
    """One status line rewritten with \\r on a TTY; silent otherwise (logs and
    pipes get the final table, not a spinner)."""

    def __init__(self, scenario: str, out: TextIO = sys.stderr, enabled: bool | None = None) -> None:
        self.scenario = scenario
        self.out = out
        self.enabled = out.isatty() if enabled is None else enabled
        self._last = 0.0
        self._width = 0

    def update(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        line = f"[{self.scenario}] {text}"
        pad = max(0, self._width - len(line))
        self._width = len(line)
        self.out.write("\r" + line + " " * pad)
        self.out.flush()

    def done(self) -> None:
        if self.enabled and self._width:
            self.out.write("\r" + " " * self._width + "\r")
            self.out.flush()
            self._width = 0
