"""The tutorial's code (docs/tutorial/*.py, shown in the docs with
literalinclude) runs as written: its own test files, with the dotrio.testing
plugin, in an inner pytest run, and its config passes ``dotrio check``."""

from __future__ import annotations

import json
import os
import re
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


async def test_chat_room_as_the_tutorial_serves_it(tmp_path: Path) -> None:
    """The tutorial's serve-and-connect steps against a real server (real time)."""
    import httpx
    import trio
    from trio_websocket import open_websocket_url

    for name in ("chat.toml", "chat_room.py"):
        shutil.copy(TUTORIAL / name, tmp_path / name)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dotrio", "serve", "chat.toml", "--port", "0"],
                                cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = ""
        with trio.fail_after(20):
            while not url:
                assert proc.poll() is None, log_path.read_text()
                found = re.search(r"serving \S+ on (http://\S+)", log_path.read_text())
                url = found.group(1) if found else ""
                await trio.sleep(0.05)
        ws_url = url.replace("http://", "ws://") + "/ROOMS/lobby/ws"
        async with open_websocket_url(ws_url, extra_headers=[(b"x-user", b"ada")]) as ada, \
                open_websocket_url(ws_url, extra_headers=[(b"x-user", b"bob")]) as bob:
            await ada.send_message("hello, room")
            with trio.fail_after(10):
                assert json.loads(await bob.get_message()) == {"user": "ada", "text": "hello, room"}
                assert json.loads(await ada.get_message()) == {"user": "ada", "text": "hello, room"}
        async with httpx.AsyncClient() as client:
            history = (await client.get(url + "/ROOMS/lobby/history")).json()
            assert history == [{"user": "ada", "text": "hello, room"}]
            assert (await client.get(url + "/ROOMS/lobby/")).status_code == 426
    finally:
        proc.terminate()
        assert proc.wait(20) == 0, log_path.read_text()
    assert list((tmp_path / ".dotrio" / "ChatRoom").rglob("*.sqlite"))
