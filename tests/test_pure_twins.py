"""The core suites again on the pure-Python twins (DOTRIO_NO_EXTENSIONS=1).

The twin tests compare the extensions with their twins value by value; this
runs the runtime, storage, alarm and crash suites end to end on the twins, so
the fallback a user gets without a compiler is known to work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SUITES = [
    "tests/test_runtime.py",
    "tests/test_storage.py",
    "tests/test_websocket_runtime.py",
    "tests/test_crash.py",
    "tests/test_alarms.py",
    "tests/test_scheduler.py",
]


def test_core_suites_pass_on_the_pure_python_twins(tmp_path: Path) -> None:
    env = dict(os.environ, DOTRIO_NO_EXTENSIONS="1")
    probe = subprocess.run(
        [sys.executable, "-c",
         "from dotrio._kernels import kernels_status; print(*[s.compiled for s in kernels_status()])"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )
    assert probe.stdout.split() == ["False", "False", "False"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"), *SUITES],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
