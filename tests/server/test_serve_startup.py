"""``dotrio serve`` startup failures (issue 16 items 2-4 and 8), as real
subprocesses: each exits at once, non-zero, with one line on stderr that
names the file, what is wrong and what to do, and no traceback. A second
server on the same data dir is refused while the first keeps serving."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from functools import partial
from pathlib import Path

import apsw
import httpx
import pytest
import trio

import dotrio
from tests.helpers.readonly import read_only

REPO = Path(dotrio.__file__).resolve().parent.parent
READY_TIMEOUT = 20.0

APP = '''
import dotrio


class Counter(dotrio.DurableObject):
    async def fetch(self, request):
        n = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", n)
        return dotrio.Response(str(n))
'''


class Counter(dotrio.DurableObject):
    """Writes what the subprocess app reads: same class name, same files."""

    async def arm(self, when: int) -> None:
        await self.ctx.storage.put("n", 41)
        await self.ctx.storage.set_alarm(when)


def make_app(root: Path) -> Path:
    mod = "startapp_" + uuid.uuid4().hex[:10]
    (root / f"{mod}.py").write_text(APP)
    config = root / "dotrio.toml"
    config.write_text(f'data_dir = "data"\n[[durable_objects.bindings]]\nname = "C"\nclass_name = "{mod}:Counter"\n')
    return config


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), out.get("PYTHONPATH", "")) if p)
    return out


def serve_once(config: Path) -> subprocess.CompletedProcess[str]:
    """A server expected to fail at start."""
    return subprocess.run(
        [sys.executable, "-m", "dotrio", "serve", str(config), "--port", "0"],
        capture_output=True, text=True, env=env(), cwd=config.parent, timeout=60, check=False,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], pattern: str) -> str:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    assert "Traceback" not in output and "please file a bug" not in output, output
    lines = output.splitlines()
    assert len(lines) == 1, output
    assert re.fullmatch(r"dotrio: error: " + pattern, lines[0]), lines[0]
    return lines[0]


async def seed(data_dir: Path) -> None:
    async with dotrio.Runtime({"C": Counter}, data_dir=data_dir) as rt:
        await rt.env.C.get_by_name("a").arm(rt.clock.now_ms() + 3_600_000)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return make_app(tmp_path)


def test_second_server_on_the_same_data_dir_exits_at_once(app: Path) -> None:
    data = (app.parent / "data").resolve()
    log_path = app.parent / "first.log"
    with open(log_path, "wb") as log:
        first = subprocess.Popen(
            [sys.executable, "-m", "dotrio", "serve", str(app), "--port", "0"],
            stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=app.parent,
        )
    try:
        url = ""
        deadline = time.monotonic() + READY_TIMEOUT
        while not url and time.monotonic() < deadline:
            assert first.poll() is None, log_path.read_text()
            found = re.search(r"serving \S+ on (http://\S+)", log_path.read_text())
            url = found.group(1) if found else ""
            time.sleep(0.05)
        assert url, log_path.read_text()
        second = serve_once(app)
        assert_one_line(second, re.escape(f"data dir {data} is in use by pid {first.pid}: one server per data dir; ")
                        + r".*")
        assert httpx.get(url + "/C/a/", timeout=10.0).text == "1"  # the first is unharmed
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0, log_path.read_text()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_missing_id_secret_with_objects(app: Path) -> None:
    data = app.parent / "data"
    trio.run(seed, data)
    (data / "id-secret").unlink()
    result = serve_once(app)
    assert_one_line(result, r"objects exist in \S+ but its id-secret is missing \(\S+id-secret\); "
                            r"restore it from backup .*")
    assert not (data / "id-secret").exists()


def test_truncated_id_secret(app: Path) -> None:
    data = app.parent / "data"
    trio.run(seed, data)
    (data / "id-secret").write_bytes(b"short")
    result = serve_once(app)
    assert_one_line(result, r"\S+id-secret is damaged: 5 bytes, expected 32; restore it from backup")


def test_locked_alarm_index(app: Path) -> None:
    data = app.parent / "data"
    trio.run(seed, data)
    other = apsw.Connection(str(data / "alarms.sqlite"))
    other.execute("BEGIN EXCLUSIVE")
    try:
        result = serve_once(app)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert_one_line(result, r"the alarm index \S+alarms\.sqlite is locked by another program: close it .*")


def test_alarm_index_that_is_a_directory(app: Path) -> None:
    data = app.parent / "data"
    trio.run(seed, data)
    for f in data.glob("alarms.sqlite*"):
        f.unlink()
    (data / "alarms.sqlite").mkdir()
    result = serve_once(app)
    assert_one_line(result, r"the alarm index \S+alarms\.sqlite is a directory; move it away .*")


def test_read_only_data_dir(app: Path) -> None:
    data = app.parent / "data"
    trio.run(seed, data)
    with read_only(data) as why:
        result = serve_once(app)
    assert_one_line(result, re.escape(f"data dir {data.resolve()} is read-only ({why}): ") + r".*mount it read-write.*")


def test_fsck_command(app: Path) -> None:
    data = app.parent / "data"
    trio.run(seed, data)
    (data / "alarms.sqlite").unlink()
    ids = list(data.glob("Counter/*/*.sqlite"))
    good = subprocess.run([sys.executable, "-m", "dotrio", "fsck", str(data)], capture_output=True, text=True,
                          env=env(), timeout=60, check=False)
    assert good.returncode == 1, good.stdout + good.stderr
    assert "PROBLEM: alarms.sqlite is missing: 1 wake-ups would not fire" in good.stdout
    fixed = subprocess.run([sys.executable, "-m", "dotrio", "fsck", str(data), "--repair"], capture_output=True,
                           text=True, env=env(), timeout=60, check=False)
    assert fixed.returncode == 0 and fixed.stdout.rstrip().endswith("\nok"), fixed.stdout + fixed.stderr
    ids[0].write_bytes(os.urandom(4096))
    Path(str(ids[0]) + "-wal").unlink(missing_ok=True)
    bad = subprocess.run([sys.executable, "-m", "dotrio", "fsck", str(data)], capture_output=True, text=True,
                         env=env(), timeout=60, check=False)
    assert bad.returncode == 1
    assert f"PROBLEM: object Counter/{ids[0].stem} is corrupt" in bad.stdout
    assert "1 problem remains" in bad.stdout


def test_dev_on_a_data_dir_in_use(app: Path) -> None:
    data = (app.parent / "data").resolve()

    async def hold_and_run() -> subprocess.CompletedProcess[str]:
        async with dotrio.Runtime({"C": Counter}, data_dir=data):
            return await trio.to_thread.run_sync(partial(
                subprocess.run, [sys.executable, "-m", "dotrio", "dev", str(app), "--port", "0"],
                capture_output=True, text=True, env=env(), cwd=app.parent, timeout=60, check=False,
            ))

    result = trio.run(hold_and_run)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert output.splitlines()[-1] == (
        f"dotrio: error: data dir {data} is in use by pid {os.getpid()}: one server per data dir; "
        "stop the other one or use another data_dir"
    ), output
