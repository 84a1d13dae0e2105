"""``dotrio dev`` in a real subprocess: it prints what to try, reloads on a
code or config change with storage kept, closes WebSockets with 1001 on a
reload, keeps the running version when the new one does not load, and stops
on SIGINT with status 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
import trio_websocket

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[2]

APP = """
import dotrio

class Counter(dotrio.DurableObject):
    async def fetch(self, request):
        if request.headers.get("upgrade", "").lower() == "websocket":
            client, server = dotrio.WebSocketPair()
            self.ctx.accept_websocket(server)
            return dotrio.Response(status=101, web_socket=client)
        n = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", n)
        return dotrio.Response(f"VERSION {n} {self.env.GREETING}")

    async def websocket_message(self, ws, message):
        ws.send(message)
"""

CONFIG = """
name = "devtest"
[vars]
GREETING = "hi"
[[durable_objects.bindings]]
name = "C"
class_name = "MOD:Counter"
"""


class Dev:
    """``python -m dotrio dev CONFIG --port 0`` with its output in a file."""

    def __init__(self, config: Path) -> None:
        self.log_path = config.parent / f"dev-{uuid.uuid4().hex[:6]}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dotrio", "dev", str(config), "--port", "0"],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=config.parent,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_for(self, pattern: str, count: int = 1, within: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = list(re.finditer(pattern, self.log()))
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None:
                pytest.fail(f"dotrio dev exited with {self.proc.returncode}:\n{self.log()}")
            await trio.sleep(0.05)
        pytest.fail(f"{pattern!r} (x{count}) not printed within {within} s:\n{self.log()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    mod = "devapp_" + uuid.uuid4().hex[:10]
    (tmp_path / f"{mod}.py").write_text(APP.replace("VERSION", "v1"))
    (tmp_path / "dotrio.toml").write_text(CONFIG.replace("MOD", mod))
    yield tmp_path, mod


async def test_dev_reloads_on_code_and_config_changes(project: tuple[Path, str]) -> None:
    root, mod = project
    dev = Dev(root / "dotrio.toml")
    try:
        url = (await dev.wait_for(r"url:\s+(http://\S+?)/\n")).group(1)
        out = dev.log()
        # What to try next: the URL, the routes under default routing, the docs.
        assert f"{url}/C/<name>/  ->  {mod}.Counter" in out
        assert f"health:   {url}/_dotrio/health" in out
        assert "docs:     " in out and "quickstart.md" in out
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
            assert (await client.get("/C/a/")).text == "v1 1 hi"
            index = await client.get("/")
            assert index.status_code == 200 and f"/C/<name>/...  ->  {mod}.Counter" in index.text

            async with trio_websocket.open_websocket_url(url.replace("http", "ws") + "/C/a/ws") as ws:
                await ws.send_message("ping")
                assert await ws.get_message() == "ping"
                # A code change: drained, restarted with the new code, storage kept.
                (root / f"{mod}.py").write_text(APP.replace("VERSION", "v2"))
                with trio.fail_after(60):
                    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                        while True:
                            await ws.get_message()
                assert closed.value.reason.code == 1001
            await dev.wait_for(r"reloaded; serving on " + re.escape(url))
            assert (await client.get("/C/a/")).text == "v2 2 hi"

            # A broken config: every error printed, the running version keeps serving.
            (root / "dotrio.toml").write_text(CONFIG.replace("MOD", mod) + "[runtime]\nidle_timeut = 3\n")
            await dev.wait_for(r"did you mean 'idle_timeout'\?")
            await dev.wait_for(r"the running version keeps serving")
            assert (await client.get("/C/a/")).text == "v2 3 hi"

            # Fixed, with a secret from .dev.vars: reloaded again.
            (root / "dotrio.toml").write_text(CONFIG.replace("MOD", mod))
            (root / ".dev.vars").write_text("GREETING=from-dev-vars\n")
            await dev.wait_for(r"reloaded; serving on ", count=2)
            assert (await client.get("/C/a/")).text == "v2 4 from-dev-vars"
        assert "from-dev-vars" not in dev.log()

        dev.proc.send_signal(signal.SIGINT)
        assert dev.proc.wait(30) == 0, dev.log()
        assert "dotrio dev: stopped" in dev.log()
    finally:
        dev.kill()


async def test_dev_waits_for_a_fix_when_the_first_load_fails(project: tuple[Path, str]) -> None:
    root, mod = project
    (root / "dotrio.toml").write_text(CONFIG.replace("MOD", mod).replace("class_name", "clas_name"))
    dev = Dev(root / "dotrio.toml")
    try:
        await dev.wait_for(r"did you mean 'class_name'\?")
        await dev.wait_for(r"waiting for a change")
        (root / "dotrio.toml").write_text(CONFIG.replace("MOD", mod))
        url = (await dev.wait_for(r"url:\s+(http://\S+?)/\n")).group(1)
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
            assert (await client.get("/C/b/")).text == "v1 1 hi"
        dev.proc.send_signal(signal.SIGTERM)
        assert dev.proc.wait(30) == 0, dev.log()
    finally:
        dev.kill()


def test_dev_without_watchfiles_says_which_extra_to_install(project: tuple[Path, str]) -> None:
    root, _ = project
    code = (
        "import sys\n"
        "from importlib.abc import MetaPathFinder\n"
        "class Block(MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'watchfiles':\n"
        "            raise ImportError('not installed')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from dotrio.server._cli import main\n"
        "main(['dev'], prog_name='dotrio')\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "dotrio dev needs the watchfiles package: pip install 'dotrio[dev]'" in done.stderr


def test_describe_shows_the_worker_entry_and_its_docstring(tmp_path: Path) -> None:
    from dotrio._config import load_config
    from dotrio.server._dev import describe

    mod = "devworker_" + uuid.uuid4().hex[:10]
    (tmp_path / f"{mod}.py").write_text(APP.replace("VERSION", "v1") + (
        "\nclass Worker(dotrio.WorkerEntrypoint):\n"
        '    """Routes:\n\n    GET /hello   a greeting\n    GET /c/<name>  a counter\n    """\n'
        "    async def fetch(self, request):\n        return dotrio.Response('w')\n"
    ))
    (tmp_path / "dotrio.toml").write_text(f'main = "{mod}:Worker"\ndata_dir = ":memory:"\n'
                                          + CONFIG.replace("MOD", mod).replace('name = "devtest"\n', ""))
    lines = describe(load_config(tmp_path / "dotrio.toml", environ={}), "http://127.0.0.1:9")
    text = "\n".join(lines)
    assert f"worker:   {mod}.Worker (main = '{mod}:Worker') receives every request" in text
    assert "GET /hello   a greeting" in text and "GET /c/<name>  a counter" in text
    assert f"bindings: C -> {mod}.Counter (on self.env)" in text
    assert "every reload starts with empty storage" in text
