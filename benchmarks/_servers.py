"""Servers under test, each a subprocess on 127.0.0.1 with a free port,
stopped with SIGTERM (SIGKILL after a deadline) at the end of its block.

``dotrio(...)`` writes a dotrio.toml into a temporary folder (with the
benchmark objects copied beside it as ``bench_app.py``) and runs
``python -m dotrio serve CONFIG --port P``; ``hypercorn_baseline()`` runs the
bare hypercorn-trio ASGI app; ``ceiling()`` the canned responder used to
measure the load generator's own ceiling. The workerd peer lives in _peers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ._proc import tree_cpu_seconds, tree_rss_bytes

__all__ = ["Server", "free_port", "dotrio", "hypercorn_baseline", "trio_websocket_baseline", "ceiling", "REPO", "BINDINGS", "dotrio_config"]

REPO = Path(__file__).resolve().parent.parent
_APP = Path(__file__).resolve().parent / "scenarios" / "app.py"

# binding -> class in benchmarks/scenarios/app.py (and worker.js).
BINDINGS = {
    "COUNTER": "Counter",
    "SQLCOUNTER": "SqlCounter",
    "ECHO": "Echo",
    "ROOM": "Room",
    "ALARM": "AlarmProbe",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Server:
    """A running server subprocess: its port, CPU and RSS, its log."""

    def __init__(self, name: str, cmd: Sequence[str], port: int, log_path: Path, cwd: str | None = None,
                 env: dict[str, str] | None = None, ready_path: str = "/") -> None:
        self.name = name
        self.cmd = list(cmd)
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd,
                                     env=env if env is not None else _env(), start_new_session=True)
        self.ready_path = ready_path
        self._cpu_mark = 0.0
        self._t_mark = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until a TCP connect succeeds (and an HTTP request gets any answer)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(f"GET {self.ready_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                              .encode())
                    if s.recv(100):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")

    def mark(self) -> None:
        """Start of a measured phase (for ``cpu_since_mark``)."""
        self._cpu_mark = tree_cpu_seconds(self.pid)
        self._t_mark = time.monotonic()

    def cpu_since_mark(self) -> float:
        """Cores used since ``mark()`` (1.0 = one core busy all along)."""
        dt = time.monotonic() - self._t_mark
        return (tree_cpu_seconds(self.pid) - self._cpu_mark) / dt if dt > 0 else 0.0

    def rss(self) -> int:
        return tree_rss_bytes(self.pid)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def _running(server: Server, timeout: float = 30.0) -> Iterator[Server]:
    try:
        server.wait_ready(timeout)
        yield server
    finally:
        server.stop()


def dotrio_config(folder: Path, durability: str = "process", data_dir: str | None = None,
                  runtime: dict[str, object] | None = None, main: str | None = None,
                  server: dict[str, object] | None = None) -> Path:
    """Writes dotrio.toml and bench_app.py into ``folder``; returns the config."""
    shutil.copy(_APP, folder / "bench_app.py")
    rt = {"durability": durability, **(runtime or {})}
    lines = ['name = "dotrio-bench"', f'data_dir = "{data_dir or (folder / "data")}"']
    if main:
        lines.append(f'main = "{main}"')
    lines += ["", "[runtime]"]
    for k, v in rt.items():
        lines.append(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"')
    if server:
        lines += ["", "[server]"] + [f"{k} = {v!r}" for k, v in server.items()]
    for binding, cls in BINDINGS.items():
        lines += ["", "[[durable_objects.bindings]]", f'name = "{binding}"', f'class_name = "bench_app:{cls}"']
    path = folder / "dotrio.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def dotrio(durability: str = "process", front_end: str = "fast", runtime: dict[str, object] | None = None,
           data_dir: str | None = None, main: str | None = None,
           server: dict[str, object] | None = None) -> Iterator[Server]:
    """``python -m dotrio serve`` on a fresh data dir (unless ``data_dir``)."""
    with tempfile.TemporaryDirectory(prefix="dotrio-bench-") as tmp:
        folder = Path(tmp)
        cfg = dotrio_config(folder, durability, data_dir, runtime, main, server)
        port = free_port()
        cmd = [sys.executable, "-m", "dotrio", "serve", str(cfg), "--port", str(port), "--server", front_end,
               "--log-level", "warning"]
        proc = Server(f"dotrio serve ({front_end}, {durability})", cmd, port, folder / "server.log",
                      cwd=str(folder), ready_path="/_dotrio/health")
        with _running(proc) as s:
            yield s


@contextlib.contextmanager
def hypercorn_baseline() -> Iterator[Server]:
    """Bare hypercorn with its trio worker: ASGI hello-world and WebSocket echo."""
    with tempfile.TemporaryDirectory(prefix="dotrio-bench-") as tmp:
        port = free_port()
        cmd = [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--bind", f"127.0.0.1:{port}",
               "benchmarks.scenarios.baseline:app"]
        server = Server("hypercorn-trio baseline", cmd, port, Path(tmp) / "server.log", cwd=str(REPO))
        with _running(server) as s:
            yield s


@contextlib.contextmanager
def trio_websocket_baseline() -> Iterator[Server]:
    """trio-websocket's echo server (issue 6's WebSocket baseline)."""
    with tempfile.TemporaryDirectory(prefix="dotrio-bench-") as tmp:
        port = free_port()
        cmd = [sys.executable, "-m", "benchmarks.scenarios.baseline_tws", "--port", str(port)]
        server = Server("trio-websocket echo", cmd, port, Path(tmp) / "server.log", cwd=str(REPO))
        with _running(server) as s:
            yield s


@contextlib.contextmanager
def ceiling(ws_message_size: int = 32) -> Iterator[Server]:
    """The canned responder: the fastest server we can put in front of the
    load generator, so what it measures is the generator's own ceiling."""
    with tempfile.TemporaryDirectory(prefix="dotrio-bench-") as tmp:
        port = free_port()
        cmd = [sys.executable, "-m", "benchmarks._ceiling", "--port", str(port), "--ws-size", str(ws_message_size)]
        server = Server("canned responder", cmd, port, Path(tmp) / "server.log", cwd=str(REPO))
        with _running(server) as s:
            yield s
