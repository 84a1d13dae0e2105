"""The tutorial's code (docs/tutorial/*.py, shown in the docs with
literalinclude) runs as written: its own test files, with the dotrio.testing
plugin, in an inner pytest run, and its config passes ``dotrio check``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dotrio

pytest_plugins = ["pytester"]

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial"
REPO = Path(dotrio.__file__).resolve().parent.parent


@pytest.mark.parametrize(("module", "tests"), [("chat_room", 1), ("tiny_agent", 1)])
def test_tutorial_code_passes_its_own_tests(pytester: pytest.Pytester, module: str, tests: int) -> None:
    for name in (f"{module}.py", f"test_{module}.py"):
        shutil.copy(TUTORIAL / name, pytester.path / name)
    pytester.syspathinsert()
    result = pytester.runpytest_inprocess(
        "-p", "no:dotrio", "-p", "dotrio.testing", "-p", "no:cacheprovider",
        "-W", "ignore::pytest.PytestAssertRewriteWarning",
    )
    result.assert_outcomes(passed=tests)


def test_chat_config_checks(tmp_path: Path) -> None:
    for name in ("chat.toml", "chat_room.py"):
        shutil.copy(TUTORIAL / name, tmp_path / name)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, "-m", "dotrio", "check", "chat.toml"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ROOMS -> chat_room.ChatRoom" in done.stdout
