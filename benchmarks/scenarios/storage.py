"""storage: the storage engineer's micro-benchmarks (issue 3), gathered here.

They live in benchmarks/bench_storage.py, each printing our figure, the raw
apsw baseline measured in the same run, and the ratio; this scenario runs
that script as it is (``--quick`` passed through at smoke sizes when the
script accepts it) and shows its output. Until the script exists the
scenario says so instead of failing.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

from .._common import Options, new_result
from .._servers import REPO, _env

if TYPE_CHECKING:
    from .._report import Progress, ScenarioResult

__all__ = ["run", "SCRIPT"]

SCRIPT = REPO / "benchmarks" / "bench_storage.py"


def run(opts: Options, progress: Progress) -> ScenarioResult:
    result = new_result("storage", opts, script=str(SCRIPT.relative_to(REPO)))
    if not SCRIPT.exists():
        result.notes.append(f"{SCRIPT.relative_to(REPO)} does not exist: nothing to gather")
        return result
    cmd = [sys.executable, str(SCRIPT)]
    if opts.quick:
        helptext = subprocess.run(cmd + ["--help"], capture_output=True, text=True, env=_env(), cwd=str(REPO),
                                  timeout=60).stdout
        if "--quick" in helptext:
            cmd.append("--quick")
    progress.update("running " + " ".join(cmd[1:]), force=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=str(REPO),
                          timeout=120 if opts.quick else 3600)
    progress.done()
    result.params["command"] = "python " + " ".join(c if c != sys.executable else "" for c in cmd[1:]).strip()
    result.text = proc.stdout + (f"\n[stderr]\n{proc.stderr[-3000:]}" if proc.returncode else "")
    result.figure("bench_storage.py exit status", proc.returncode, "", "0", proc.returncode == 0)
    return result
