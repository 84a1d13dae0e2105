"""Load generators: wrk when installed, else Python keep-alive HTTP/1.1 and
WebSocket clients, each in its own processes (never in the server's).

Only 127.0.0.1. Every run is bounded in time (``duration``) and, for the
Python clients, in requests (``max_requests``). The Python clients are
closed-loop: each connection has one request (or message) in flight, like
wrk, so throughput and latency mean the same thing on both.

The Python clients run a bare ``select.epoll`` loop over non-blocking sockets
instead of asyncio or Trio: a client that costs more per request than the
server would measure itself. WebSocket frames are sent masked with the
all-zero key (legal per RFC 6455 § 5.3; the payload goes out unchanged), so a
frame is built once, not XORed per send.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import resource
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._proc import io_bytes
from ._report import Histogram, Series

__all__ = [
    "LoadResult",
    "wrk_path",
    "wrk_version",
    "run_wrk",
    "run_http",
    "run_ws_echo",
    "run_ws_fanout",
    "run_ws_hold",
    "http_request",
    "ws_frame",
    "children_cpu",
]

HOST = "127.0.0.1"
_LUA = Path(__file__).resolve().parent / "scenarios" / "wrk_bench.lua"


@dataclass
class LoadResult:
    ops: int
    seconds: float
    errors: int
    latency: Histogram
    series: Series
    client: str
    client_cpu: float  # cores (CPU seconds / wall seconds) used by the client processes
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


def children_cpu() -> float:
    """CPU seconds of every child this process has reaped: wrapping a client
    run in two reads gives the client's own CPU (servers are reaped later)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    path = wrk_path()
    if path is None:
        return ""
    out = subprocess.run([path, "-v"], capture_output=True, text=True)
    text = (out.stdout + out.stderr).strip()
    # "wrk debian/4.1.0-3+b2 [epoll] ..." -> "wrk 4.1.0"
    words = text.split()
    version = words[1].rsplit("/", 1)[-1].split("-", 1)[0] if len(words) > 1 else ""
    return f"wrk {version}".strip()


def http_request(method: str, path: str, body: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


# ---------------------------------------------------------------- wrk


def run_wrk(
    port: int,
    method: str,
    paths: Sequence[str],
    connections: int,
    duration: float,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
    random_paths: bool = True,
) -> LoadResult:
    """wrk against http://127.0.0.1:port. With one path wrk sends it as is
    (no Lua per request); with several, the Lua script picks one per
    request. Throughput over time comes from sampling wrk's /proc/<pid>/io
    (bytes written: wrk writes nothing but requests until its final report,
    whereas it reads its script and path list too), scaled by the bytes per
    request at the end: no hook in wrk's hot path."""
    wrk = wrk_path()
    assert wrk is not None
    with tempfile.TemporaryDirectory(prefix="dotrio-wrk-") as tmp:
        paths_file = os.path.join(tmp, "paths.txt")
        with open(paths_file, "w") as f:
            f.write("\n".join(paths) + "\n")
        env = dict(os.environ, BENCH_METHOD=method, BENCH_PATHS=paths_file,
                   BENCH_RANDOM="1" if random_paths else "0")
        secs = max(1, int(round(duration)))
        cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{secs}s", "--timeout", "5s", "-s", str(_LUA),
               f"http://{HOST}:{port}{paths[0]}"]
        cpu0 = children_cpu()
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        samples: list[tuple[float, int]] = []
        deadline = t0 + secs + 30  # bounded even if wrk hangs
        while proc.poll() is None:
            now = time.monotonic()
            try:
                samples.append((now - t0, io_bytes(proc.pid)[1]))
            except OSError:
                pass
            if progress is not None:
                progress(f"wrk {now - t0:4.1f}/{secs} s")
            if now > deadline:
                proc.kill()
                break
            time.sleep(0.25)
        out, err = proc.communicate()
        cpu = children_cpu() - cpu0
    data: dict[str, Any] | None = None
    for line in out.splitlines():
        if line.startswith("BENCHJSON "):
            data = json.loads(line[len("BENCHJSON "):])
    if data is None:
        raise RuntimeError(f"wrk printed no result (exit {proc.returncode}): {out[-2000:]} {err[-2000:]}")
    seconds = data["duration_us"] / 1e6
    requests = data["requests"]
    hist = Histogram()
    # wrk hands out quantiles, not samples: rebuild a histogram from them,
    # each quantile step weighted by the requests it stands for.
    prev = 0.0
    for p, us in data["quantiles"]:
        weight = int(round(requests * (p - prev) / 100.0))
        if weight > 0:
            hist.add_many(max(us, 1.0), weight)
        prev = p
    hist.max_us = float(data["max_us"])
    # Throughput over time: bytes written per interval / bytes per request.
    series = Series(0.0, 0.25)
    total_written = samples[-1][1] if samples else 0
    if requests and len(samples) > 1 and total_written > samples[0][1]:
        prev_t, prev_b = samples[0]
        per = (total_written - prev_b) / requests
        for t, b in samples[1:]:
            if b > prev_b:
                series.add((prev_t + t) / 2, int((b - prev_b) / per))
            prev_t, prev_b = t, b
    errors = sum(data["errors"].values())
    return LoadResult(requests, seconds, errors, hist, series, wrk_version() or "wrk", cpu / seconds if seconds else 0.0,
                      {"errors": data["errors"], "threads": threads})


# ---------------------------------------------------------------- shared


def _connect(port: int) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _spawn(target: Callable[..., None], jobs: list[tuple[Any, ...]], duration: float) -> list[dict[str, Any]]:
    """Runs ``target(conn, *job)`` in one process per job and gathers what each
    sends back. Spawned, not forked: the parent may hold a Trio run or open
    servers that a child must not inherit."""
    ctx = mp.get_context("spawn")
    procs, pipes = [], []
    for job in jobs:
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=target, args=(child, *job), daemon=True)
        p.start()
        child.close()
        procs.append(p)
        pipes.append(parent)
    results = []
    deadline = time.monotonic() + duration + 60
    for p, pipe in zip(procs, pipes):
        left = max(0.1, deadline - time.monotonic())
        if pipe.poll(left):
            try:
                results.append(pipe.recv())
            except EOFError:
                results.append({"error": f"client process died (exit {p.exitcode})"})
        else:
            results.append({"error": "client process timed out"})
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
    return results


def _merge(results: list[dict[str, Any]], client: str, cpu: float, start: float, unit_key: str = "ops") -> LoadResult:
    hist = Histogram()
    series = Series(start, 0.25)
    ops = errors = 0
    seconds = 0.0
    extra: dict[str, Any] = {}
    for r in results:
        if "error" in r:
            raise RuntimeError(r["error"])
        ops += r[unit_key]
        errors += r["errors"]
        seconds = max(seconds, r["seconds"])
        hist.merge(Histogram.from_json(r["latency"]))
        series.merge(Series.from_json(r["series"]))
        for k, v in r.get("extra", {}).items():
            extra[k] = extra.get(k, 0) + v
    # Re-base the series on the start barrier so all clients share t = 0.
    series.start = 0.0
    return LoadResult(ops, seconds, errors, hist, series, client, cpu / seconds if seconds else 0.0, extra)


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


# ---------------------------------------------------------------- HTTP


def _http_worker(pipe: Any, port: int, requests: list[bytes], connections: int, start_at: float, duration: float,
                 max_requests: int, random_paths: bool, seed: int) -> None:
    try:
        rng = random.Random(seed)
        socks = [_connect(port) for _ in range(connections)]
        for s in socks:
            s.setblocking(False)
        n_req = len(requests)
        cursor = seed % n_req if n_req else 0
        hist = Histogram()
        series = Series(start_at, 0.25)
        ep = select.epoll()
        by_fd: dict[int, socket.socket] = {}
        bufs: dict[int, bytearray] = {}
        sent_at: dict[int, float] = {}
        delay = start_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        end = start_at + duration
        now = time.monotonic
        add = hist.add
        done = errors = 0
        for s in socks:
            fd = s.fileno()
            by_fd[fd] = s
            bufs[fd] = bytearray()
            ep.register(fd, select.EPOLLIN)
            req = requests[rng.randrange(n_req)] if random_paths else requests[cursor % n_req]
            cursor += 1
            sent_at[fd] = now()
            s.send(req)
        issued = len(socks)
        live = len(socks)
        while live and now() < end:
            for fd, _ in ep.poll(0.2):
                s = by_fd[fd]
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    errors += 1
                    ep.unregister(fd)
                    s.close()
                    live -= 1
                    continue
                buf = bufs[fd]
                buf += data
                while True:
                    hend = buf.find(b"\r\n\r\n")
                    if hend < 0:
                        break
                    head = bytes(buf[:hend]).lower()
                    i = head.find(b"\r\ncontent-length:")
                    if i < 0:
                        raise RuntimeError(f"response without content-length: {head[:200]!r}")
                    j = head.find(b"\r\n", i + 2)
                    length = int(head[i + 17:j if j > 0 else len(head)])
                    total = hend + 4 + length
                    if len(buf) < total:
                        break
                    status = int(buf[9:12])
                    del buf[:total]
                    t = now()
                    add((t - sent_at[fd]) * 1e6)
                    series.add(t)
                    done += 1
                    if status >= 400:
                        errors += 1
                    if issued < max_requests and t < end:
                        req = requests[rng.randrange(n_req)] if random_paths else requests[cursor % n_req]
                        cursor += 1
                        sent_at[fd] = t
                        s.send(req)
                        issued += 1
                    elif issued >= max_requests and done >= issued:
                        end = t
        elapsed = min(now(), end) - start_at
        for s in socks:
            s.close()
        pipe.send({"ops": done, "errors": errors, "seconds": elapsed, "latency": hist.to_json(),
                   "series": series.to_json()})
    except Exception as exc:  # report, don't hang the parent
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})


def run_http(
    port: int,
    method: str,
    paths: Sequence[str],
    connections: int,
    duration: float,
    processes: int = 1,
    max_requests: int = 10**9,
    random_paths: bool = True,
    body: bytes = b"",
) -> LoadResult:
    """The Python keep-alive client: ``connections`` spread over ``processes``."""
    requests = [http_request(method, p, body) for p in paths]
    start_at = time.monotonic() + 1.0 + 0.2 * processes  # let every process connect first
    conns = _split(connections, processes)
    reqs = _split(max_requests, processes)
    jobs = [(port, requests, c, start_at, duration, r, random_paths, 1000 + i)
            for i, (c, r) in enumerate(zip(conns, reqs)) if c]
    cpu0 = children_cpu()
    results = _spawn(_http_worker, jobs, duration)
    cpu = children_cpu() - cpu0
    return _merge(results, f"python x{len(jobs)}", cpu, start_at)


# ---------------------------------------------------------------- WebSocket

_WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame with the all-zero mask key."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + payload


def _ws_open(port: int, path: str) -> tuple[socket.socket, bytearray]:
    s = _connect(port)
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {_WS_KEY.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed during the WebSocket handshake for {path}")
        buf += chunk
    hend = buf.index(b"\r\n\r\n")
    if b" 101 " not in buf[:hend].split(b"\r\n", 1)[0] + b" ":
        raise RuntimeError(f"WebSocket handshake for {path} refused: {bytes(buf[:hend])[:200]!r}")
    return s, bytearray(buf[hend + 4:])


def _frames(buf: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete server frames at the start of ``buf`` and the bytes they span."""
    out = []
    pos = 0
    n = len(buf)
    while n - pos >= 2:
        b1 = buf[pos + 1] & 0x7F
        if b1 < 126:
            hl, ln = 2, b1
        elif b1 == 126:
            if n - pos < 4:
                break
            hl, ln = 4, int.from_bytes(buf[pos + 2:pos + 4], "big")
        else:
            if n - pos < 10:
                break
            hl, ln = 10, int.from_bytes(buf[pos + 2:pos + 10], "big")
        if n - pos < hl + ln:
            break
        out.append((buf[pos] & 0x0F, bytes(buf[pos + hl:pos + hl + ln])))
        pos += hl + ln
    return out, pos


_PONG_EMPTY = ws_frame(b"", 0xA)


def _ws_echo_worker(pipe: Any, port: int, paths: list[str], message: bytes, start_at: float, duration: float,
                    max_messages: int) -> None:
    try:
        opened = [_ws_open(port, p) for p in paths]
        frame = ws_frame(message, 2)
        hist = Histogram()
        series = Series(start_at, 0.25)
        ep = select.epoll()
        by_fd: dict[int, socket.socket] = {}
        bufs: dict[int, bytearray] = {}
        sent_at: dict[int, float] = {}
        delay = start_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.monotonic
        end = start_at + duration
        for s, rest in opened:
            s.setblocking(False)
            fd = s.fileno()
            by_fd[fd] = s
            bufs[fd] = rest
            ep.register(fd, select.EPOLLIN)
            sent_at[fd] = now()
            s.send(frame)
        done = errors = 0
        issued = len(opened)
        live = len(opened)
        while live and now() < end:
            for fd, _ in ep.poll(0.2):
                s = by_fd[fd]
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    errors += 1
                    ep.unregister(fd)
                    live -= 1
                    continue
                buf = bufs[fd]
                buf += data
                frames, used = _frames(buf)
                del buf[:used]
                for opcode, payload in frames:
                    if opcode == 9:
                        s.send(ws_frame(payload, 0xA))
                        continue
                    if opcode == 8:
                        errors += 1
                        ep.unregister(fd)
                        live -= 1
                        break
                    if opcode > 2:
                        continue
                    t = now()
                    hist.add((t - sent_at[fd]) * 1e6)
                    series.add(t)
                    done += 1
                    if issued < max_messages and t < end:
                        sent_at[fd] = t
                        s.send(frame)
                        issued += 1
                    elif issued >= max_messages and done >= issued:
                        end = t
        elapsed = min(now(), end) - start_at
        for s in by_fd.values():
            s.close()
        pipe.send({"ops": done, "errors": errors, "seconds": elapsed, "latency": hist.to_json(),
                   "series": series.to_json()})
    except Exception as exc:
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})


def run_ws_echo(port: int, paths: Sequence[str], duration: float, processes: int = 1, message: bytes = b"x" * 32,
                max_messages: int = 10**9) -> LoadResult:
    """One WebSocket per path, each with one message in flight (closed loop)."""
    start_at = time.monotonic() + 1.5 + 0.002 * len(paths)
    chunks = [list(paths[i::processes]) for i in range(processes)]
    maxes = _split(max_messages, processes)
    jobs = [(port, c, message, start_at, duration, m) for c, m in zip(chunks, maxes) if c]
    cpu0 = children_cpu()
    results = _spawn(_ws_echo_worker, jobs, duration)
    cpu = children_cpu() - cpu0
    return _merge(results, f"python x{len(jobs)}", cpu, start_at)


def _ws_sub_worker(pipe: Any, port: int, path: str, count: int, ready: Any, start_at: float, duration: float) -> None:
    """``count`` subscribers; every data frame is a publish timestamp
    (time.monotonic_ns, shared by all processes on Linux): latency is now - it."""
    try:
        opened = [_ws_open(port, path) for _ in range(count)]
        ready.set()
        hist = Histogram()
        series = Series(start_at, 0.25)
        ep = select.epoll()
        by_fd: dict[int, socket.socket] = {}
        bufs: dict[int, bytearray] = {}
        for s, rest in opened:
            s.setblocking(False)
            by_fd[s.fileno()] = s
            bufs[s.fileno()] = rest
            ep.register(s.fileno(), select.EPOLLIN)
        now_ns = time.monotonic_ns
        end = start_at + duration + 0.5  # the tail still in flight at the publisher's end
        done = errors = 0
        live = len(opened)
        while live and time.monotonic() < end:
            for fd, _ in ep.poll(0.2):
                s = by_fd[fd]
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    errors += 1
                    ep.unregister(fd)
                    live -= 1
                    continue
                buf = bufs[fd]
                buf += data
                frames, used = _frames(buf)
                del buf[:used]
                t = now_ns()
                for opcode, payload in frames:
                    if opcode in (1, 2):
                        sent = int(payload[:20])
                        if sent >= 0:
                            hist.add((t - sent) / 1000.0)
                            series.add(t / 1e9)
                            done += 1
                    elif opcode == 9:
                        s.send(ws_frame(payload, 0xA))
                    elif opcode == 8:
                        errors += 1
                        ep.unregister(fd)
                        live -= 1
                        break
        for s in by_fd.values():
            s.close()
        pipe.send({"ops": done, "errors": errors, "seconds": duration, "latency": hist.to_json(),
                   "series": series.to_json()})
    except Exception as exc:
        ready.set()
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})


def _ws_pub_worker(pipe: Any, port: int, path: str, window: int, start_at: float, duration: float,
                   max_messages: int) -> None:
    """Publishes timestamps with at most ``window`` unacknowledged (the room
    echoes each message back to its publisher after queueing the broadcast)."""
    try:
        s, buf = _ws_open(port, path)
        delay = start_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        end = start_at + duration
        sent = acked = 0
        inflight = 0
        while time.monotonic() < end and acked < max_messages:
            while inflight < window and sent < max_messages:
                s.sendall(ws_frame(b"%020d" % time.monotonic_ns(), 1))
                sent += 1
                inflight += 1
            s.settimeout(max(0.01, end - time.monotonic()))
            try:
                data = s.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            buf += data
            frames, used = _frames(buf)
            del buf[:used]
            for opcode, _payload in frames:
                if opcode in (1, 2):
                    acked += 1
                    inflight -= 1
        s.close()
        pipe.send({"published": sent, "acked": acked, "seconds": min(time.monotonic(), end) - start_at})
    except Exception as exc:
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})


def run_ws_fanout(port: int, sub_path: str, pub_path: str, subscribers: int, duration: float, processes: int = 2,
                  window: int = 4, max_messages: int = 10**9) -> LoadResult:
    """``subscribers`` sockets on one room over ``processes`` processes, one
    publisher; ops are deliveries (one message reaching one subscriber)."""
    ctx = mp.get_context("spawn")
    counts = [c for c in _split(subscribers, processes) if c]
    readies = [ctx.Event() for _ in counts]
    start_at = time.monotonic() + 3.0 + 0.003 * subscribers
    pipes, procs = [], []
    for c, ready in zip(counts, readies):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_ws_sub_worker, args=(child, port, sub_path, c, ready, start_at, duration), daemon=True)
        p.start()
        child.close()
        pipes.append(parent)
        procs.append(p)
    for ready in readies:  # every subscriber is in before the first publish
        ready.wait(30 + 0.01 * subscribers)
    start_at = max(start_at, time.monotonic() + 0.2)
    cpu0 = children_cpu()
    parent, child = ctx.Pipe(duplex=False)
    pub = ctx.Process(target=_ws_pub_worker, args=(child, port, pub_path, window, start_at, duration, max_messages),
                      daemon=True)
    pub.start()
    child.close()
    results = []
    for pp in pipes:
        results.append(pp.recv() if pp.poll(duration + 60) else {"error": "subscriber process timed out"})
    pub_result = parent.recv() if parent.poll(duration + 30) else {"error": "publisher timed out"}
    for p in (*procs, pub):
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
    cpu = children_cpu() - cpu0
    if "error" in pub_result:
        raise RuntimeError(pub_result["error"])
    for r in results:
        r["seconds"] = pub_result["seconds"]
    merged = _merge(results, f"python x{len(counts)}+1", cpu, start_at)
    merged.extra.update(published=pub_result["published"], acked=pub_result["acked"])
    return merged


def _ws_hold_worker(pipe: Any, port: int, paths: list[str], ready: Any, go: Any, timeout: float) -> None:
    """Opens a WebSocket per path, reports ready, waits for ``go``, then sends
    one message on each and times its echo (a hibernated object waking up)."""
    try:
        opened = [_ws_open(port, p) for p in paths]
        ready.set()
        if not go.wait(timeout):
            raise RuntimeError("never told to go")
        hist = Histogram()
        ep = select.epoll()
        by_fd: dict[int, socket.socket] = {}
        bufs: dict[int, bytearray] = {}
        sent_at: dict[int, float] = {}
        frame = ws_frame(b"wake", 1)
        for s, rest in opened:
            s.setblocking(False)
            by_fd[s.fileno()] = s
            bufs[s.fileno()] = rest
            ep.register(s.fileno(), select.EPOLLIN)
        t0 = time.monotonic()
        for fd, s in by_fd.items():
            sent_at[fd] = time.monotonic()
            s.send(frame)
        pending = set(by_fd)
        deadline = time.monotonic() + 60
        errors = 0
        while pending and time.monotonic() < deadline:
            for fd, _ in ep.poll(0.2):
                try:
                    data = by_fd[fd].recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    errors += 1
                    pending.discard(fd)
                    ep.unregister(fd)
                    continue
                bufs[fd] += data
                frames, used = _frames(bufs[fd])
                del bufs[fd][:used]
                if fd in pending and any(op in (1, 2) for op, _ in frames):
                    hist.add((time.monotonic() - sent_at[fd]) * 1e6)
                    pending.discard(fd)
        elapsed = time.monotonic() - t0
        for s in by_fd.values():
            s.close()
        pipe.send({"ops": hist.total, "errors": errors + len(pending), "seconds": elapsed,
                   "latency": hist.to_json(), "series": Series(t0).to_json()})
    except Exception as exc:
        ready.set()
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})


def run_ws_hold(port: int, paths: Sequence[str], while_held: Callable[[], None], processes: int = 1,
                timeout: float = 600.0) -> LoadResult:
    """Holds one WebSocket per path open (idle), calls ``while_held()``, then
    wakes each with one message and measures the echo; ops = echoes."""
    ctx = mp.get_context("spawn")
    chunks = [list(paths[i::processes]) for i in range(processes)]
    readies = [ctx.Event() for _ in chunks]
    go = ctx.Event()
    pipes, procs = [], []
    cpu0 = children_cpu()
    for chunk, ready in zip(chunks, readies):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_ws_hold_worker, args=(child, port, chunk, ready, go, timeout), daemon=True)
        p.start()
        child.close()
        pipes.append(parent)
        procs.append(p)
    try:
        for ready in readies:
            ready.wait(timeout)
        while_held()
    finally:
        go.set()
    results = []
    for pp, p in zip(pipes, procs):
        try:
            results.append(pp.recv() if pp.poll(120) else {"error": "holder process timed out"})
        except EOFError:
            results.append({"error": f"holder process died (exit {p.exitcode})"})
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
    cpu = children_cpu() - cpu0
    return _merge(results, f"python x{len(chunks)}", cpu, 0.0)
