"""The agent example served from a ``wrangler.jsonc`` (found without naming
it) whose API key comes from ``.dev.vars``: the key reaches the model
endpoint (a fake one on 127.0.0.1) and never the server's output."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import httpx
import pytest

from .conftest import EXAMPLE_DIR

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

REPO = EXAMPLE_DIR.parents[1]
SECRET = "sk-test-" + "5" * 32

WRANGLER_JSONC = """\
// The agent example as a Cloudflare template would write it.
{
  "$schema": "node_modules/wrangler/config-schema.json",
  "name": "agents-jsonc",
  "main": "app.py",                       // its only WorkerEntrypoint: Worker
  "compatibility_date": "2025-01-01",
  "compatibility_flags": ["python_workers"],
  "vars": {
    "THINK": "openai",
    "LLM_URL": "LLM_URL_HERE",
    "LLM_MODEL": "fake-model",
    /* LLM_API_KEY comes from .dev.vars */
  },
  "durable_objects": {
    "bindings": [
      { "name": "AGENTS", "class_name": "AgentDO" },
      { "name": "RELAY", "class_name": "RelayDO" },
    ],
  },
  "migrations": [{ "tag": "v1", "new_sqlite_classes": ["AgentDO", "RelayDO"] }],
}
"""


class FakeModel(BaseHTTPRequestHandler):
    seen: list[tuple[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        FakeModel.seen.append((self.path, self.headers.get("authorization", "")))
        model = json.loads(body)["model"]
        answer = json.dumps({"choices": [{"message": {"content": f"fake reply from {model}"}}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_model() -> Iterator[str]:
    FakeModel.seen.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeModel)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_wrangler_jsonc_with_dev_vars_serves_the_example(tmp_path: Path, fake_model: str) -> None:
    app = tmp_path / "agents"
    app.mkdir()
    shutil.copy(EXAMPLE_DIR / "app.py", app / "app.py")
    (app / "wrangler.jsonc").write_text(WRANGLER_JSONC.replace("LLM_URL_HERE", fake_model))
    (app / ".dev.vars").write_text(f"# never committed\nLLM_API_KEY={SECRET}\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    log_path = tmp_path / "serve.log"

    check = subprocess.run([sys.executable, "-m", "dotrio", "check"], cwd=app, env=env, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert f"config:   {app / 'wrangler.jsonc'}" in check.stdout
    assert "LLM_API_KEY (secret: .dev.vars)" in check.stdout
    assert SECRET not in check.stdout + check.stderr

    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dotrio", "serve", "--port", "0", "--log-level", "debug",
                                 "--access-log"], cwd=app, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"serving \S+ on (http://\S+)", log_path.read_text())
            url = found.group(1) if found else None
            time.sleep(0.05)
        assert url is not None, log_path.read_text()
        reply = httpx.post(url + "/agents/ada/prompt", json={"message": "hello"}, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json()["reply"] == "fake reply from fake-model"
        assert FakeModel.seen == [("/v1/chat/completions", f"Bearer {SECRET}")]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log_path.read_text()
    assert "agents-jsonc" in output and "path=/agents/ada/prompt status=200" in output
    assert SECRET not in output
