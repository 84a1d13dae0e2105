"""The container image: multi-stage, non-root, data dir as a volume, SIGTERM
drained. Its command is run here without docker; the image is built and run
where a docker engine answers, and skipped with the engine's reason
otherwise."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

import dotrio

REPO = Path(dotrio.__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
TEXT = DOCKERFILE.read_text()


def _instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", TEXT)
    return [line.split(None, 1)[1] for line in joined.splitlines()
            if line.strip() and not line.startswith("#") and line.split(None, 1)[0] == name]


def _entrypoint() -> list[str]:
    (entry,) = _instructions("ENTRYPOINT")
    command = json.loads(entry)
    assert isinstance(command, list), "ENTRYPOINT in exec form, so that dotrio is PID 1 and gets SIGTERM"
    return command


def test_image_is_multi_stage_non_root_with_a_data_volume() -> None:
    froms = _instructions("FROM")
    assert len(froms) >= 2 and froms[0].endswith(" AS build"), froms
    assert any("--from=build" in c for c in _instructions("COPY"))
    (user,) = _instructions("USER")
    assert user.strip() not in ("root", "0")
    assert _instructions("VOLUME") == ['["/data"]']
    assert _instructions("STOPSIGNAL") == ["SIGTERM"]
    command = _entrypoint()
    assert command[:2] == ["dotrio", "serve"]
    assert command[command.index("--data-dir") + 1] == "/data"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "**/.dev.vars" in ignored and ".venv" in ignored and "**/.dotrio" in ignored


def test_the_image_command_serves_and_drains_on_sigterm(tmp_path: Path) -> None:
    """The ENTRYPOINT, run as is except for the address and the volume's path."""
    app = tmp_path / "app"
    shutil.copytree(REPO / "examples" / "agents", app, ignore=shutil.ignore_patterns(".dotrio", "__pycache__"))
    data = tmp_path / "volume"
    command = _entrypoint()
    command[command.index("--data-dir") + 1] = str(data)
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = "0"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    log_path = tmp_path / "log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dotrio", *command[1:]], cwd=app, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"serving \S+ on (http://\S+)", log_path.read_text())
            url = found.group(1) if found else None
            time.sleep(0.05)
        assert url is not None, log_path.read_text()
        request = urllib.request.Request(url + "/agents/ada/memory", data=b'{"text": "kept"}', method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "shutting down gracefully" in log_path.read_text()
    assert (data / "AgentDO").is_dir() and not (app / ".dotrio").exists()


def _docker_engine() -> str | None:
    """None if a docker engine answers, else why not."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        return "no docker engine: " + (done.stderr.strip().splitlines() or ["docker info failed"])[-1]
    return None


def _docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout.strip()


def _wait_health(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/_dotrio/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the container did not answer on {url}")


def test_docker_image_builds_runs_non_root_and_keeps_data_across_sigterm() -> None:
    reason = _docker_engine()
    if reason is not None:
        pytest.skip(reason)
    tag = f"dotrio-test-{uuid.uuid4().hex[:8]}"
    volume = f"{tag}-data"
    containers: list[str] = []
    try:
        _docker("build", "-t", tag, str(REPO), timeout=1800)

        def start() -> tuple[str, str]:
            cid = _docker("run", "-d", "-p", "127.0.0.1::8787", "-v", f"{volume}:/data", tag)
            containers.append(cid)
            port = _docker("port", cid, "8787/tcp").splitlines()[0].rsplit(":", 1)[1]
            url = f"http://127.0.0.1:{port}"
            _wait_health(url)
            return cid, url

        cid, url = start()
        assert _docker("exec", cid, "id", "-u") != "0"
        request = urllib.request.Request(url + "/agents/ada/memory", data=b'{"text": "kept"}', method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
        _docker("stop", "-t", "30", cid, timeout=60)
        assert _docker("inspect", "-f", "{{.State.ExitCode}}", cid) == "0"
        assert "shutting down gracefully" in _docker("logs", cid)

        cid, url = start()
        with urllib.request.urlopen(url + "/agents/ada/memory", timeout=10) as resp:
            assert b"kept" in resp.read()
        _docker("stop", "-t", "30", cid, timeout=60)
    finally:
        for cid in containers:
            _docker("rm", "-f", cid, check=False)
        _docker("volume", "rm", "-f", volume, check=False)
        _docker("rmi", "-f", tag, check=False)
