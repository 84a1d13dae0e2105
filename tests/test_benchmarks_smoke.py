"""Smoke runs of every benchmark scenario at tiny sizes, so the suite cannot
rot: each real scenario (servers as subprocesses, real load generators) runs
for about a second per phase and must produce its figures without errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._report import Histogram, ScenarioResult, Series, print_table  # noqa: E402
from benchmarks.scenarios import SCENARIOS  # noqa: E402


def run_bench(*args: str, timeout: float = 180) -> list[dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", *args, "--quick", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def rows(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in lines if r["type"] == kind]


def check_throughput(lines: list[dict[str, Any]], names: set[str]) -> None:
    ms = {m["name"]: m for m in rows(lines, "measurement")}
    assert names <= set(ms), ms.keys()
    for name in names:
        m = ms[name]
        assert m["ops"] > 0 and m["rate"] > 0, m
        assert m["errors"] == 0, m
        assert m["latency"]["p50_ms"] > 0, m
    assert rows(lines, "ratio"), "a ratio against the baseline"


@pytest.mark.parametrize("scenario", ["http-hello", "http-hot", "http-spread", "http-sql"])
def test_http_scenarios(scenario: str) -> None:
    check_throughput(run_bench(scenario), {"baseline", "dotrio"})


def test_http_python_client_and_power_row() -> None:
    lines = run_bench("http-hot", "--client", "python", "--durability", "both")
    check_throughput(lines, {"baseline", "dotrio", "dotrio-power"})
    assert {m["client"] for m in rows(lines, "measurement")} == {"python x1"}


def test_ws_echo() -> None:
    check_throughput(run_bench("ws-echo"), {"baseline", "dotrio"})


def test_ws_fanout() -> None:
    lines = run_bench("ws-fanout")
    check_throughput(lines, {"baseline", "dotrio"})
    dotrio = next(m for m in rows(lines, "measurement") if m["name"] == "dotrio")
    assert dotrio["unit"] == "deliveries/s"


def test_ws_hibernate() -> None:
    figures = {f["name"]: f for f in rows(run_bench("ws-hibernate"), "figure")}
    assert figures["echoes after waking (one per socket)"]["met"] is True
    assert figures["server RSS per hibernated WebSocket"]["value"] is not None


def test_alarms() -> None:
    figures = {f["name"]: f for f in rows(run_bench("alarms"), "figure")}
    assert figures["dotrio: fired"]["value"] == 200
    assert figures["dotrio: missing"]["value"] == 0


def test_alarms_restart() -> None:
    figures = {f["name"]: f for f in rows(run_bench("alarms-restart"), "figure")}
    assert figures["missing"]["value"] == 0
    assert figures["fired after restart"]["met"] is True


def test_population() -> None:
    figures = {f["name"]: f for f in rows(run_bench("population"), "figure")}
    assert figures["objects touched (cold activations)"]["value"] == 100
    assert figures["open fds: before / max during / after eviction"]["met"] is True
    assert figures["cold activation p50"]["value"] > 0


def test_storage_gathers_or_explains() -> None:
    lines = run_bench("storage", timeout=300)
    run = rows(lines, "run")[0]
    assert run["text"] or run["notes"]


def test_workerd_peer_runs_or_explains() -> None:
    """With workerd installed (benchmarks/.peers), the peer row runs; without
    it, users get a message that says what is missing and how to get it."""
    from benchmarks._peers import PeerUnavailable, workerd_binary

    try:
        workerd_binary(install=False)
    except PeerUnavailable as exc:
        assert "workerd" in str(exc) and len(str(exc)) > 20
        return
    lines = run_bench("http-hot", "--peer", "workerd", "--durability", "process")
    check_throughput(lines, {"baseline", "dotrio", "workerd"})
    assert any("workerd" in r["label"] for r in rows(lines, "ratio"))


def test_every_scenario_is_smoke_tested() -> None:
    covered = {"http-hello", "http-hot", "http-spread", "http-sql", "ws-echo", "ws-fanout", "ws-hibernate", "alarms",
               "alarms-restart", "population", "storage"}
    assert set(SCENARIOS) == covered


def test_histogram_percentiles_within_two_percent() -> None:
    h = Histogram()
    for us in range(1, 100_001):
        h.add(float(us))
    for p in (50, 90, 99, 99.9):
        assert math.isclose(h.percentile(p), p * 1000, rel_tol=0.02)
    assert h.percentile(100) == 100_000
    merged = Histogram.from_json(h.to_json())
    merged.merge(h)
    assert merged.total == 200_000
    assert math.isclose(merged.percentile(50), 50_000, rel_tol=0.02)


def test_series_and_table_render() -> None:
    s = Series(100.0, 0.5)
    for i in range(10):
        s.add(100.0 + i * 0.1)
    assert sum(s.counts) == 10 and s.rates()[0][1] == 10.0
    result = ScenarioResult("x", "cmd", machine={"cores": 2, "memory_gib": 1.0, "loadavg": (0.1, 0.1, 0.1)})
    result.figure("f", 1.5, "ms", "<= 2", True)
    import io

    out = io.StringIO()
    print_table(result, out)
    assert "f" in out.getvalue() and "yes" in out.getvalue()
