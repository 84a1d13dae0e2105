"""Peers: other runtimes run on the same port layout for side-by-side figures.

Only Cloudflare's workerd so far. It is installed from npm into
``benchmarks/.peers/`` (not committed) the first time it is asked for, when
``npm`` is on PATH; otherwise the peer rows are skipped with the reason.
workerd's local-disk Durable Object storage is SQLite and fsyncs every
committed write, which is why dotrio's like-for-like row runs at
``durability = "power"``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ._servers import Server, _running, free_port

__all__ = ["PEERS", "PeerUnavailable", "workerd_binary", "workerd_version", "workerd", "WORKERD_DURABILITY"]

PEERS = ("workerd",)
PEERS_DIR = Path(__file__).resolve().parent / ".peers"
_WORKER_DIR = Path(__file__).resolve().parent / "peers" / "workerd"
# The version the suite was written against; DOTRIO_BENCH_WORKERD overrides it.
WORKERD_PACKAGE = os.environ.get("DOTRIO_BENCH_WORKERD", "workerd@1.20261117.1")
# Short: it is printed in the results table beside every workerd row.
WORKERD_DURABILITY = "fsync per commit"


class PeerUnavailable(RuntimeError):
    """The peer cannot run here; the message says why and what to do."""


def _installed() -> Path | None:
    for rel in ("node_modules/@cloudflare/workerd-linux-64/bin/workerd",
                "node_modules/@cloudflare/workerd-linux-arm64/bin/workerd",
                "node_modules/.bin/workerd"):
        p = PEERS_DIR / rel
        if p.exists():
            return p
    return None


def workerd_binary(install: bool = True) -> Path:
    """The workerd binary, installing it with npm if needed."""
    found = _installed()
    if found is not None:
        return found
    env_bin = shutil.which("workerd")
    if env_bin:
        return Path(env_bin)
    if not install:
        raise PeerUnavailable("workerd is not installed (run with --peer workerd once to install it)")
    npm = shutil.which("npm")
    if npm is None:
        raise PeerUnavailable("workerd peer skipped: npm is not installed (needs Node.js and npm to fetch the "
                              "'workerd' package)")
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    # The platform binary ships inside @cloudflare/workerd-<os>-<arch>, an
    # ordinary registry package, so no install script has to download it.
    proc = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(PEERS_DIR), WORKERD_PACKAGE],
                          capture_output=True, text=True, timeout=600)
    found = _installed()
    if proc.returncode != 0 or found is None:
        raise PeerUnavailable(f"workerd peer skipped: `npm install {WORKERD_PACKAGE}` failed "
                              f"(exit {proc.returncode}): {(proc.stderr or proc.stdout)[-800:]}")
    return found


def workerd_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or out.stderr.strip()


@contextlib.contextmanager
def workerd() -> Iterator[Server]:
    """workerd serving benchmarks/peers/workerd/worker.js on a free port, with
    a fresh storage folder."""
    binary = workerd_binary()
    with tempfile.TemporaryDirectory(prefix="dotrio-bench-workerd-") as tmp:
        storage = Path(tmp) / "storage"
        storage.mkdir()
        port = free_port()
        cmd = [str(binary), "serve", str(_WORKER_DIR / "config.capnp"), "--socket-addr", f"http=127.0.0.1:{port}",
               "--directory-path", f"storage={storage}"]
        server = Server(f"workerd ({workerd_version(binary)})", cmd, port, Path(tmp) / "server.log",
                        cwd=str(_WORKER_DIR), env=dict(os.environ))
        with _running(server) as s:
            yield s
