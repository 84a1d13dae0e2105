"""The systemd unit in docs/operating.md: its ExecStart is a command the CLI
accepts, its stop settings let SIGTERM drain, and LimitNOFILE covers the
descriptors of the default pool and connection limit."""

from __future__ import annotations

import configparser
import inspect
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

import dotrio
from dotrio.server import ServerLimits
from dotrio.server._cli import serve
from dotrio.server._serve import DEFAULT_SHUTDOWN_GRACE

REPO = Path(dotrio.__file__).resolve().parent.parent
OPERATING = (REPO / "docs" / "operating.md").read_text()


def _unit_text() -> str:
    found = re.search(r"```ini\n(# /etc/systemd/system/dotrio\.service\n.*?)```", OPERATING, re.S)
    assert found is not None, "docs/operating.md has the dotrio.service unit"
    return found.group(1)


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(_unit_text())
    return parser


def test_exec_start_is_a_command_the_cli_accepts() -> None:
    argv = shlex.split(_unit()["Service"]["ExecStart"])
    assert argv[0].endswith("/dotrio") and argv[1] == "serve"
    ctx = serve.make_context("serve", argv[2:])  # raises on an unknown option or a bad value
    assert ctx.params["data_dir"] == "/var/lib/dotrio" and ctx.params["port"] == 8787


def test_stop_and_descriptor_limits() -> None:
    service = _unit()["Service"]
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > DEFAULT_SHUTDOWN_GRACE
    assert service["RestartPreventExitStatus"] == "2"  # the CLI's exit status for a bad config
    pool = inspect.signature(dotrio.Runtime).parameters["pool_size"].default
    needed = 2 * pool + ServerLimits().max_connections + 64
    assert int(service["LimitNOFILE"]) >= needed
    assert service["User"] != "root"


def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "dotrio.service"
    unit.write_text(_unit_text().replace("/srv/app/.venv/bin/dotrio", shutil.which("true") or "/bin/true"))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if str(unit) in line and "User" not in line]
    assert not problems, done.stderr
