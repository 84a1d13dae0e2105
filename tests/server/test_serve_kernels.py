"""``dotrio serve`` says which kernels run compiled, and warns about a silent fallback.

Real ``dotrio serve`` processes: one as installed, one with the codec's
extension made unimportable (the state of a wheel built without its
extensions), one with ``DOTRIO_NO_EXTENSIONS=1``. Each is stopped with
SIGTERM as soon as it logs that it is serving.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dotrio

REPO = Path(dotrio.__file__).resolve().parent.parent

CONFIG = """
name = "kernels"
data_dir = "data"
[[durable_objects.bindings]]
name = "C"
class_name = "kapp:C"
[[migrations]]
tag = "v1"
new_sqlite_classes = ["C"]
"""

# Runs the CLI as `dotrio serve` does, optionally with one extension blocked
# (None in sys.modules makes its import raise ImportError).
RUN = """
import sys
for name in sys.argv[1:]:
    sys.modules[name] = None
sys.argv = ["dotrio", "serve", "dotrio.toml", "--port", "0"]
from dotrio.server._cli import main
main()
"""


def serve_log(tmp_path: Path, *blocked: str, **env: str) -> str:
    """Start a server, wait until it serves, stop it; its log."""
    (tmp_path / "kapp.py").write_text("import dotrio\n\nclass C(dotrio.DurableObject):\n    pass\n")
    (tmp_path / "dotrio.toml").write_text(CONFIG)
    environ = {k: v for k, v in os.environ.items() if k != "DOTRIO_NO_EXTENSIONS"}
    environ.update(env, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]))
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", RUN, *blocked], cwd=tmp_path, env=environ,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "serving kernels on" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start (exit {proc.poll()}):\n{log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log_path.read_text(errors="replace")


def test_serve_logs_the_compiled_kernels(tmp_path: Path) -> None:
    log = serve_log(tmp_path)
    assert "dotrio: kernels: codec compiled, wheel compiled, coalesce compiled" in log
    assert "pure-Python twin" not in log


def test_serve_warns_when_a_kernel_fell_back_to_its_twin(tmp_path: Path) -> None:
    log = serve_log(tmp_path, "dotrio._kernels.codec._compiled")
    assert "dotrio: kernels: codec PURE PYTHON, wheel compiled, coalesce compiled" in log
    warning = [line for line in log.splitlines() if "pure-Python twin" in line]
    assert len(warning) == 1, log
    assert "WARNING" in warning[0] and "the codec kernel" in warning[0]
    assert "dotrio._kernels.codec._compiled" in warning[0]  # the import error, so the cause is visible
    assert "DOTRIO_NO_EXTENSIONS=1" in warning[0]


def test_serve_does_not_warn_when_the_twins_were_asked_for(tmp_path: Path) -> None:
    log = serve_log(tmp_path, DOTRIO_NO_EXTENSIONS="1")
    assert "dotrio: kernels: codec pure Python (DOTRIO_NO_EXTENSIONS)" in log
    assert "WARNING" not in log
