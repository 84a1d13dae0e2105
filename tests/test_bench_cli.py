"""``dotrio bench`` finds the benchmark suite without editing sys.path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOTRIO = Path(sys.executable).with_name("dotrio")


def test_outside_a_checkout_it_says_where_the_suite_is(tmp_path: Path) -> None:
    # The console script's path holds no checkout, and the cwd is not one.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(DOTRIO), "bench", "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "source checkout" in done.stderr
    assert "python -m benchmarks" in done.stderr


def test_from_a_checkout_python_m_dotrio_bench_runs_the_suite() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "dotrio", "bench", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dotrio bench" in done.stdout + done.stderr
