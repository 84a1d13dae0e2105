"""The new limits through a real ``python -m dotrio serve`` and its config
file: ``[server] request_timeout`` (a handler whose SQL runs past it is
interrupted: 504, and the object serves again), ``[runtime]
max_sql_result_rows`` (a clear error instead of a huge result) and ``[server]
max_buffered_bodies`` (503 past it); a bad value is refused at start."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from .test_serve_subprocess import REPO, Server

APP = '''
import dotrio

SLOW = ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 200000000) "
        "SELECT max(i) AS n FROM r")


class Box(dotrio.DurableObject):
    async def fetch(self, request):
        sql = self.ctx.storage.sql
        action = request.path.rsplit("/", 1)[1]
        if action == "slow":
            return dotrio.Response(str(sql.exec(SLOW).one()["n"]))
        if action == "rows":
            n = int(request.query["n"])
            try:
                rows = sql.exec("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < ?) "
                                "SELECT i FROM r", n).to_array()
            except dotrio.StorageError as exc:
                return dotrio.Response(str(exc), status=422)
            return dotrio.Response(str(len(rows)))
        return dotrio.Response("ok")
'''

CONFIG = """
data_dir = "data"
[server]
request_timeout = 0.5
max_buffered_bodies = 4096
[runtime]
max_sql_result_rows = 50
[[durable_objects.bindings]]
name = "BOX"
class_name = "{mod}:Box"
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    mod = "limapp_" + uuid.uuid4().hex[:10]
    (tmp_path / f"{mod}.py").write_text(APP)
    config = tmp_path / "dotrio.toml"
    config.write_text(CONFIG.format(mod=mod))
    return config


@pytest.mark.parametrize("kind", ["fast", "hypercorn"])
def test_configured_limits_hold_in_a_real_server(app: Path, kind: str) -> None:
    server = Server(app, kind)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            r = client.get("/BOX/a/slow")
            assert r.status_code == 504 and r.text == "request timed out\n"
            assert client.get("/BOX/a/again").text == "ok"  # reset, and serving
            assert client.get("/BOX/a/rows?n=50").text == "50"
            r = client.get("/BOX/a/rows?n=51")
            assert r.status_code == 422 and "more than 50 rows (the max_sql_result_rows limit)" in r.text
            # max_buffered_bodies = 4096: a bigger body (under max_request_body) is refused.
            r = client.post("/BOX/a/post", content=b"x" * 5000)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert client.post("/BOX/a/post", content=b"x" * 4000).text == "ok"
        assert server.stop() == 0, server.log()
    finally:
        server.ensure_dead()
    assert "ran past request_timeout" in server.log()


def test_bad_limit_values_are_refused_at_start(app: Path) -> None:
    text = app.read_text().replace("request_timeout = 0.5", "request_timeout = 0").replace(
        "max_sql_result_rows = 50", 'max_sql_result_rows = "many"')
    app.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "dotrio", "serve", str(app), "--port", "0"],
                          capture_output=True, text=True, timeout=60, cwd=app.parent,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    assert "server.request_timeout" in proc.stderr and "a number of seconds > 0" in proc.stderr
    assert "runtime.max_sql_result_rows" in proc.stderr
