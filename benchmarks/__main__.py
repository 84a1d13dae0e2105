"""``python -m benchmarks SCENARIO [...]`` (also ``dotrio bench SCENARIO``).

Examples::

    python -m benchmarks --list
    python -m benchmarks http-hot --duration 10 --plot
    python -m benchmarks http-hot --peer workerd          # + workerd, dotrio at "process" and "power"
    python -m benchmarks population --population 200000 --touch 100000
    python -m benchmarks all --quick --json > out.jsonl   # every scenario at smoke sizes
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._common import Options
from ._peers import PEERS
from ._report import Progress, ScenarioResult, markdown, plot, print_table, write_json
from .scenarios import SCENARIOS, get

__all__ = ["main", "build_parser", "run_scenario", "QUICK"]

OUT_DIR = Path(__file__).resolve().parent / "out"

# Smoke sizes: every scenario in seconds (tests/test_benchmarks_smoke.py).
QUICK = dict(duration=1.0, warmup=0.0, connections=8, ws_connections=8, subscribers=20, hibernate_sockets=50, alarms=200,
             restart_alarms=200, population=300, touch=100, ceiling=False)


def build_parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="dotrio's benchmark suite",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="scenarios:\n" + "\n".join(f"  {k:15} {v[1]}" for k, v in SCENARIOS.items()))
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario names, or 'all'")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--duration", type=float, help="seconds per measured load phase [10]")
    ap.add_argument("--warmup", type=float, help="seconds of warm-up load before measuring [2]")
    ap.add_argument("--connections", type=int, help="HTTP keep-alive connections [64]")
    ap.add_argument("--objects", type=int, help="http-spread objects [10000] (http-sql: [1])")
    ap.add_argument("--client", choices=["auto", "wrk", "python"], help="HTTP load generator [auto: wrk if installed]")
    ap.add_argument("--client-procs", type=int, help="Python client processes [1]")
    ap.add_argument("--durability", choices=["default", "process", "power", "both"],
                    help="dotrio durability rows [process; both with --peer]")
    ap.add_argument("--peer", choices=PEERS, help="also run a peer runtime (installed with npm if needed)")
    ap.add_argument("--no-ceiling", dest="ceiling", action="store_false", default=None,
                    help="skip the client-ceiling run")
    ap.add_argument("--ws-connections", type=int, help="ws-echo connections [100]")
    ap.add_argument("--hibernate-sockets", type=int, help="ws-hibernate: idle WebSockets [10000]")
    ap.add_argument("--subscribers", type=int, help="ws-fanout subscribers [1000]")
    ap.add_argument("--window", type=int, help="ws-fanout unacknowledged publishes [4]")
    ap.add_argument("--alarms", type=int, help="alarms: objects armed [10000]")
    ap.add_argument("--rpc-load", type=int, help="alarms: run once more with N concurrent RPC callers [0: no]")
    ap.add_argument("--restart-alarms", type=int, help="alarms-restart: overdue alarms [100000]")
    ap.add_argument("--population", type=int, help="population: objects created [1000000]")
    ap.add_argument("--touch", type=int, help="population: objects touched at random [100000]")
    ap.add_argument("--pool-size", type=int, help="dotrio connection pool size (http, ws, population) [runtime default]")
    ap.add_argument("--data-dir", help="population: create (or reuse) the objects here instead of a temp folder")
    ap.add_argument("--quick", action="store_true", help="smoke sizes: every scenario in seconds")
    ap.add_argument("--json", action="store_true", help="JSON lines on stdout (the table goes to stderr)")
    ap.add_argument("--markdown", metavar="FILE", help="append each run as a Markdown section to FILE")
    ap.add_argument("--plot", nargs="?", const=str(OUT_DIR), metavar="DIR",
                    help=f"a PNG per run (throughput over time, latency distribution) [{OUT_DIR}]")
    return ap


def options_from(args: argparse.Namespace, command: str) -> Options:
    opts = Options(command=command)
    if args.quick:
        for k, v in QUICK.items():
            setattr(opts, k, v)
    for k in ("duration", "warmup", "connections", "objects", "client", "client_procs", "durability", "peer",
              "ceiling", "ws_connections", "hibernate_sockets", "subscribers", "window", "alarms", "rpc_load", "restart_alarms", "population",
              "touch", "pool_size", "data_dir"):
        v = getattr(args, k)
        if v is not None:
            setattr(opts, k, v)
    opts.quick = args.quick
    return opts


def run_scenario(name: str, opts: Options) -> ScenarioResult:
    progress = Progress(name)
    try:
        return get(name)(opts, progress)
    finally:
        progress.done()


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks") -> int:
    ap = build_parser(prog)
    args = ap.parse_args(argv)
    if args.list or not args.scenarios:
        for k, v in SCENARIOS.items():
            print(f"{k:15} {v[1]}")
        return 0 if args.list else 2
    names = list(SCENARIOS) if args.scenarios == ["all"] else args.scenarios
    for n in names:
        if n not in SCENARIOS:
            ap.error(f"unknown scenario {n!r}; one of: {', '.join(SCENARIOS)}, all")
    argv_list = list(argv) if argv is not None else sys.argv[1:]
    failed = 0
    for n in names:
        command = f"{prog} " + " ".join(shlex.quote(a) for a in ([n] + [a for a in argv_list if a not in names]))
        opts = options_from(args, command)
        table_out = sys.stderr if args.json else sys.stdout
        try:
            result = run_scenario(n, opts)
        except Exception as exc:  # one broken scenario must not hide the others' figures
            failed += 1
            table_out.write(f"\n== {n} ==  FAILED: {type(exc).__name__}: {exc}\n")
            continue
        print_table(result, table_out)
        if args.json:
            write_json(result, sys.stdout)
        if args.markdown:
            with open(args.markdown, "a") as f:
                f.write(markdown(result) + "\n")
        if args.plot:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(result.started))
            path = plot(result, Path(args.plot) / f"{n}-{stamp}.png")
            if path is not None:
                table_out.write(f"chart: {path}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
