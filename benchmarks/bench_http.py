"""Hello-world req/s: dotrio's fast front end vs hypercorn's trio worker.

Each server runs in its own process; the load generator is ``wrk`` when it is
installed (``apt-get install -y wrk``), else a small multi-process Python
keep-alive client. Same connections and duration for each server, one run.

    python benchmarks/bench_http.py                  # 64 connections, 5 s each
    python benchmarks/bench_http.py --duration 10 --client python

Servers measured:
  fast            dotrio.server.serve_fast with a native Handler
  hypercorn-asgi  hypercorn.trio.serve with a minimal ASGI hello-world (the baseline)
  hypercorn-dotrio  serve_hypercorn: the same Handler through dotrio's ASGI adapter
"""

from __future__ import annotations

import argparse
import datetime as _dt
import multiprocessing
import os
import platform
import re
import selectors
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BODY = b"Hello, world!"
SERVERS = ["fast", "hypercorn-asgi", "hypercorn-dotrio"]
BASELINE = "hypercorn-asgi"


# -- servers (run in a child process) ------------------------------------------


def _serve(kind: str, port: int) -> None:
    sys.path.insert(0, str(ROOT))
    import logging

    import trio

    logging.basicConfig(level=logging.WARNING)
    if kind == "fast":
        from dotrio import Response
        from dotrio.server import serve_fast

        async def handler(request: object) -> Response:
            return Response(BODY, headers={"content-type": "text/plain"})

        trio.run(lambda: serve_fast(handler, port=port))
    elif kind == "hypercorn-dotrio":
        from dotrio import Response
        from dotrio.server import serve_hypercorn

        async def handler2(request: object) -> Response:
            return Response(BODY, headers={"content-type": "text/plain"})

        trio.run(lambda: serve_hypercorn(handler2, port=port))
    elif kind == "hypercorn-asgi":
        from hypercorn.config import Config
        from hypercorn.trio import serve

        async def app(scope: dict, receive: object, send: object) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()  # type: ignore[operator]
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})  # type: ignore[operator]
                    else:
                        await send({"type": "lifespan.shutdown.complete"})  # type: ignore[operator]
                        return
            await send({  # type: ignore[operator]
                "type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
            })
            await send({"type": "http.response.body", "body": BODY})  # type: ignore[operator]

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        config.errorlog = None
        trio.run(serve, app, config)
    else:
        raise SystemExit(f"unknown server {kind!r}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(4096).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not come up")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- load generators -----------------------------------------------------------


@dataclass
class Load:
    requests: int
    seconds: float
    errors: int
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def _wrk(port: int, connections: int, duration: float) -> Load:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", f"http://127.0.0.1:{port}/"],
        check=True, capture_output=True, text=True,
    ).stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if not m:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    seconds = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
    errors = 0
    for e in re.finditer(r"(connect|read|write|timeout) (\d+)", out):
        errors += int(e.group(2))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))

    def pct(label: str) -> float | None:
        p = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not p:
            return None
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p.group(2)]
        return float(p.group(1)) * scale

    return Load(int(m.group(1)), seconds, errors, pct("50"), pct("99"))


_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _py_worker(port: int, connections: int, duration: float, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Keep-alive client: one request in flight per connection, counted by response."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, [b""])
    start = time.perf_counter()
    end = start + duration
    done = 0
    for s in socks:
        s.send(_REQUEST)
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        for key, _ in sel.select(timeout=end - now):
            sock = key.fileobj
            buf = key.data[0] + sock.recv(65536)  # type: ignore[union-attr]
            # A response is complete when its body (Content-Length) is in.
            while True:
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    break
                m = re.search(rb"content-length: *(\d+)", buf[:head_end], re.I)
                total = head_end + 4 + (int(m.group(1)) if m else 0)
                if len(buf) < total:
                    break
                buf = buf[total:]
                done += 1
                sock.send(_REQUEST)  # type: ignore[union-attr]
            key.data[0] = buf
    elapsed = time.perf_counter() - start
    for s in socks:
        s.close()
    queue.put((done, elapsed))


def _python_load(port: int, connections: int, duration: float, processes: int = 2) -> Load:
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    per = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    workers = [multiprocessing.Process(target=_py_worker, args=(port, n, duration, queue)) for n in per]
    for w in workers:
        w.start()
    results = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    return Load(sum(r[0] for r in results), max(r[1] for r in results), 0)


# -- driver --------------------------------------------------------------------


@dataclass
class Result:
    server: str
    load: Load
    cpu_us_per_request: float


def _measure(kind: str, client: str, connections: int, duration: float) -> Result:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc)
        # Warm up (imports, first connections), then measure.
        (_wrk if client == "wrk" else _python_load)(port, connections, 1.0)
        cpu0 = _cpu_seconds(proc.pid)
        load = (_wrk if client == "wrk" else _python_load)(port, connections, duration)
        cpu1 = _cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    cpu = (cpu1 - cpu0) / max(load.requests, 1) * 1e6
    return Result(kind, load, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of " + ", ".join(SERVERS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "http.md"),
                        help="markdown file for the figures ('-' for none)")
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.port)
        return

    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    servers = [s for s in args.servers.split(",") if s]
    args.loadavg = os.getloadavg()[:2]
    results = []
    for kind in servers:
        result = _measure(kind, client, args.connections, args.duration)
        results.append(result)
        print(f"{kind:18} {result.load.rps:10,.0f} req/s   {result.cpu_us_per_request:7.1f} us CPU/req"
              f"   errors {result.load.errors}", flush=True)
    base = next((r for r in results if r.server == BASELINE), None)
    fast = next((r for r in results if r.server == "fast"), None)
    ratio = fast.load.rps / base.load.rps if fast and base else None
    cpu_ratio = base.cpu_us_per_request / fast.cpu_us_per_request if fast and base else None
    if ratio is not None:
        print(f"fast / hypercorn-asgi: {ratio:.1f}x req/s, {cpu_ratio:.1f}x less CPU per request (client: {client})")

    if args.out != "-":
        _write_report(Path(args.out), results, client, args, ratio, cpu_ratio)


def _write_report(path: Path, results: list[Result], client: str, args: argparse.Namespace,
                  ratio: float | None, cpu_ratio: float | None) -> None:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load1, load5 = args.loadavg
    command = "python benchmarks/bench_http.py" + "".join(
        f" --{k} {v}" for k, v in (("connections", args.connections), ("duration", args.duration), ("client", args.client))
    )
    wrk_cmd = f"wrk -t1 -c{args.connections} -d{args.duration:g}s --latency http://127.0.0.1:PORT/"
    lines = [
        "# HTTP hello-world: dotrio fast front end vs hypercorn-trio",
        "",
        f"* date: {now}",
        f"* command: `{command}`",
        f"* load generator: {client}" + (f" (`{wrk_cmd}`)" if client == "wrk" else " (2 processes, keep-alive, 1 request in flight per connection)"),
        f"* machine: {os.cpu_count()} cores, Python {platform.python_version()}, load average before the run {load1:.2f} / {load5:.2f}"
        " (the machine is shared: other work competes for the same cores)",
        "* each server is one process (one core at most); CPU/request is the server process's user+system time divided by requests",
        "",
        "| server | req/s | server CPU µs/request | server cores busy | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        p50 = f"{r.load.latency_p50_ms:.2f}" if r.load.latency_p50_ms is not None else "–"
        p99 = f"{r.load.latency_p99_ms:.2f}" if r.load.latency_p99_ms is not None else "–"
        busy = r.cpu_us_per_request * r.load.rps / 1e6
        lines.append(f"| {r.server} | {r.load.rps:,.0f} | {r.cpu_us_per_request:.1f} | {busy:.2f} | {p50} | {p99} "
                     f"| {r.load.errors} |")
    lines.append("")
    if ratio is not None:
        lines.append(f"**fast / hypercorn-asgi: {ratio:.1f}× req/s; {cpu_ratio:.1f}× less server CPU per request.**"
                     " Target: ≥ 15× req/s.")
        lines.append("")
        lines.append("A server that is not given a whole core (\"server cores busy\" well under 1.0: wrk and other")
        lines.append("work share the 2 cores) serves fewer req/s than its CPU cost allows; on a machine where each")
        lines.append("server gets its core, the req/s ratio tends to the CPU-per-request ratio.")
        lines.append("")
    lines += [
        "Servers: `fast` = `dotrio.server.serve_fast` with a native handler; `hypercorn-asgi` = `hypercorn.trio.serve`",
        "with a minimal raw ASGI hello-world (the baseline); `hypercorn-dotrio` = `dotrio.server.serve_hypercorn`,",
        "the same handler through dotrio's ASGI adapter.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
