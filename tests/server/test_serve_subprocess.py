"""A real ``python -m dotrio serve`` process on 127.0.0.1, driven by httpx,
over both front ends: routing, worker entry, vars, 413, health, errors,
SIGTERM drain, a second signal, and SIGKILL under acknowledged writes.

Each server listens on ``--port 0`` (a free port picked by the kernel, so no
race with other tests) and the test reads the bound URL from its log line,
then waits for the health endpoint (bounded).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

import dotrio

REPO = Path(dotrio.__file__).resolve().parent.parent
KINDS = ["fast", "hypercorn"]
READY_TIMEOUT = 20.0

APP = '''
import os
import trio
import dotrio


class Counter(dotrio.DurableObject):
    async def fetch(self, request):
        parts = request.path.split("/", 3)
        action = parts[3] if len(parts) > 3 else ""
        if action == "inc":
            return dotrio.Response(str(await self.increment()))
        if action == "value":
            return dotrio.Response(str(await self.ctx.storage.get("n") or 0))
        if action == "size":
            return dotrio.Response(str(len(request.body)))
        if action == "boom":
            raise RuntimeError("boom")
        if action == "ws":
            client, server = dotrio.WebSocketPair()
            self.ctx.accept_websocket(server)
            return dotrio.Response(status=101, web_socket=client)
        if action == "closed":
            return dotrio.Response.json(await self.ctx.storage.get("closed"))
        if action == "slow":
            secs = float(request.query.get("secs", "1.0"))
            # Tells the test the request is in flight inside the object.
            open(os.path.join(self.env.MARKERS, self.ctx.id.name), "w").close()
            await trio.sleep(secs)
            await self.increment()
            return dotrio.Response("slow done")
        return dotrio.Response.json({"url": request.url, "name": self.ctx.id.name, "method": request.method})

    async def websocket_message(self, ws, message):
        ws.send(f"echo {message}")

    async def websocket_close(self, ws, code, reason, was_clean):
        await self.ctx.storage.put("closed", [code, reason, was_clean])

    async def closed(self):
        return await self.ctx.storage.get("closed")

    async def increment(self, by=1):
        n = (await self.ctx.storage.get("n") or 0) + by
        await self.ctx.storage.put("n", n)
        return n


class Worker(dotrio.WorkerEntrypoint):
    async def fetch(self, request):
        path = request.path
        if path == "/hello":
            return dotrio.Response(f"{self.env.GREETING} from worker")
        if path.startswith("/count/"):
            return dotrio.Response(str(await self.env.COUNTER.get_by_name(path[7:]).increment()))
        if path == "/size":
            return dotrio.Response(str(len(request.body)))
        return dotrio.Response("worker says no", status=404)
'''

CONFIG = """
name = "{name}"
{main}
data_dir = "{data}"
max_request_body = 1024
[vars]
GREETING = "hi"
MARKERS = "{markers}"
[[durable_objects.bindings]]
name = "COUNTER"
class_name = "{mod}:Counter"
[[migrations]]
tag = "v1"
new_sqlite_classes = ["Counter"]
"""


class App:
    """An app folder: a uniquely named module (so the test process can load it
    too), a routing config and a worker config with separate data dirs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mod = "srvapp_" + uuid.uuid4().hex[:10]
        (root / f"{self.mod}.py").write_text(APP)
        self.markers = root / "markers"
        self.markers.mkdir()
        self.routing = self._config("routing.toml", "routing", "")
        self.worker = self._config("worker.toml", "worker", f'main = "{self.mod}:Worker"')

    def _config(self, filename: str, name: str, main: str) -> Path:
        path = self.root / filename
        path.write_text(CONFIG.format(name=name, main=main, data=f"data-{name}", markers=self.markers, mod=self.mod))
        return path


class Server:
    """``python -m dotrio serve CONFIG --port 0`` in a subprocess."""

    def __init__(self, config: Path, kind: str, *args: str) -> None:
        self.log_path = config.parent / f"{config.stem}-{kind}-{uuid.uuid4().hex[:6]}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dotrio", "serve", str(config), "--port", "0", "--server", kind, *args],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=config.parent,
            )
        self.url = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> Server:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode} before it was ready:\n{self.log()}")
            if not self.url:
                found = re.search(r"serving \S+ on (http://\S+)", self.log())
                if found:
                    self.url = found.group(1)
            if self.url:
                try:
                    if httpx.get(self.url + "/_dotrio/health", timeout=2.0).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        pytest.fail(f"server not ready within {READY_TIMEOUT} s:\n{self.log()}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"server did not exit within {timeout} s:\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module", params=KINDS)
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[App, Server, Server]]:
    """One routing server and one worker server per front end, shared by the
    module's read-mostly tests (startup is the expensive part)."""
    kind = request.param
    app = App(tmp_path_factory.mktemp(f"app-{kind}"))
    routing = Server(app.routing, kind)
    worker = Server(app.worker, kind, "--max-request-body", "100", "--access-log")
    try:
        yield app, routing.wait_ready(), worker.wait_ready()
        assert routing.stop() == 0, routing.log()
        assert worker.stop() == 0, worker.log()
    finally:
        routing.ensure_dead()
        worker.ensure_dead()


def test_default_routing(running: tuple[App, Server, Server]) -> None:
    _, server, _ = running
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        assert [client.post("/COUNTER/alice/inc").text for _ in range(3)] == ["1", "2", "3"]
        assert client.post("/COUNTER/bob/inc").text == "1"
        info = client.get("/COUNTER/alice/where/else?q=1&r=%2F").json()
        assert info == {"url": f"{server.url}/COUNTER/alice/where/else?q=1&r=%2F", "name": "alice", "method": "GET"}
        assert client.get("/COUNTER/room%2042/").json()["name"] == "room 42"
        assert client.get("/COUNTER/alice/value").text == "3"


@pytest.mark.parametrize("path", ["/COUNTER", "/COUNTER/", "/NOPE/alice/", "/counter/alice/", "/_dotrio/what"])
def test_unknown_binding_or_missing_name_is_404(running: tuple[App, Server, Server], path: str) -> None:
    _, server, _ = running
    response = httpx.get(server.url + path, timeout=10.0)
    assert (response.status_code, response.text) == (404, "not found\n")


def test_worker_entry_and_vars(running: tuple[App, Server, Server]) -> None:
    _, _, server = running
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        assert client.get("/hello").text == "hi from worker"
        assert [client.get("/count/w").text for _ in range(2)] == ["1", "2"]
        # The worker gets every path, default routing's included.
        r = client.get("/COUNTER/alice/inc")
        assert (r.status_code, r.text) == (404, "worker says no")
    assert "method=GET path=/hello status=200" in server.log()


def test_request_body_limit_is_413(running: tuple[App, Server, Server]) -> None:
    _, routing, worker = running
    with httpx.Client(timeout=10.0) as client:
        # max_request_body = 1024 in the file
        assert client.post(routing.url + "/COUNTER/a/size", content=b"x" * 1024).text == "1024"
        assert client.post(routing.url + "/COUNTER/a/size", content=b"x" * 1025).status_code == 413
        # --max-request-body 100 on the command line wins over the file
        assert client.post(worker.url + "/size", content=b"x" * 100).text == "100"
        assert client.post(worker.url + "/size", content=b"x" * 101).status_code == 413
        assert client.get(routing.url + "/COUNTER/a/value").status_code == 200


def test_health(running: tuple[App, Server, Server], request: pytest.FixtureRequest) -> None:
    _, server, _ = running
    httpx.post(server.url + "/COUNTER/h/inc", timeout=10.0)
    response = httpx.get(server.url + "/_dotrio/health", timeout=10.0)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "ok" and body["name"] == "routing"
    assert body["runtime"]["live_objects"] >= 1 and body["runtime"]["events"] >= 1
    assert body["server"]["front_end"] == request.node.callspec.params["running"]
    assert body["server"]["accepting"] is True


def test_handler_error_is_500_and_the_server_keeps_serving(running: tuple[App, Server, Server]) -> None:
    _, server, _ = running
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        r = client.get("/COUNTER/e/boom")
        assert (r.status_code, r.text) == (500, "internal server error\n")
        assert client.post("/COUNTER/e/inc").text == "1"
    assert "RuntimeError: boom" in server.log()  # the traceback is logged, not sent


# ---- shutdown and crashes ------------------------------------------------------------


def _in_background(fn: object) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []

    def run() -> None:
        try:
            result.append(fn())  # type: ignore[operator]
        except Exception as exc:  # reported by the test's assertions
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def _wait_for(path: Path, server: Server, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} never appeared:\n{server.log()}")
        time.sleep(0.01)


def _stored_value(app: App, name: str) -> int:
    """Read an object's counter in-process, on the server's data dir."""

    async def read() -> int:
        async with dotrio.Runtime.from_config(app.routing) as rt:
            return int(await rt.env.COUNTER.get_by_name(name).increment(0))

    return trio.run(read)


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_drains_in_flight_request_and_exits_0(tmp_path: Path, kind: str) -> None:
    app = App(tmp_path)
    server = Server(app.routing, kind).wait_ready()
    try:
        assert httpx.post(server.url + "/COUNTER/s/inc", timeout=10.0).text == "1"
        thread, result = _in_background(lambda: httpx.get(server.url + "/COUNTER/s/slow?secs=1.0", timeout=20.0))
        _wait_for(app.markers / "s", server)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        thread.join(20.0)
        response = result[0]
        assert isinstance(response, httpx.Response), response
        assert (response.status_code, response.text) == (200, "slow done")
        assert server.wait() == 0, server.log()
        assert time.monotonic() - started < 10.0
        assert "SIGTERM received" in server.log() and "stopped" in server.log()
    finally:
        server.ensure_dead()
    # The drained request's write was committed before exit.
    assert _stored_value(app, "s") == 2


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_closes_websockets_with_1001_and_commits_their_close_handlers(tmp_path: Path, kind: str) -> None:
    app = App(tmp_path)
    server = Server(app.routing, kind).wait_ready()
    ws_url = server.url.replace("http://", "ws://") + "/COUNTER/sock/ws"
    outcome: dict[str, object] = {}

    async def client() -> None:
        async with trio_websocket.open_websocket_url(ws_url) as ws:
            await ws.send_message("hello")
            outcome["echo"] = await ws.get_message()
            server.signal(signal.SIGTERM)
            with trio.fail_after(10):
                try:
                    await ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    outcome["code"] = exc.reason.code

    try:
        trio.run(client)
        assert server.wait() == 0, server.log()
    finally:
        server.ensure_dead()
    assert outcome == {"echo": "echo hello", "code": 1001}

    async def closed() -> object:
        async with dotrio.Runtime.from_config(app.routing) as rt:
            return await rt.env.COUNTER.get_by_name("sock").closed()

    # The object's websocket_close ran and its write was committed before exit.
    code, _reason, _clean = trio.run(closed)  # type: ignore[misc]
    assert code == 1001


@pytest.mark.parametrize("kind", KINDS)
def test_second_signal_exits_at_once_without_losing_acknowledged_data(tmp_path: Path, kind: str) -> None:
    app = App(tmp_path)
    server = Server(app.routing, kind).wait_ready()
    try:
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            assert [client.post("/COUNTER/q/inc").text for _ in range(5)] == ["1", "2", "3", "4", "5"]
        thread, result = _in_background(lambda: httpx.get(server.url + "/COUNTER/q/slow?secs=60", timeout=30.0))
        _wait_for(app.markers / "q", server)
        server.signal(signal.SIGTERM)
        time.sleep(0.2)
        assert server.proc.poll() is None  # still draining the 60 s request
        started = time.monotonic()
        server.signal(signal.SIGINT)
        assert server.wait(10.0) == 128 + signal.SIGINT
        assert time.monotonic() - started < 5.0
        thread.join(10.0)
        assert isinstance(result[0], httpx.TransportError)
    finally:
        server.ensure_dead()
    assert _stored_value(app, "q") == 5


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_under_a_stream_of_acknowledged_writes_loses_none(tmp_path: Path, kind: str) -> None:
    app = App(tmp_path)
    server = Server(app.routing, kind).wait_ready()
    keys = [f"k{i}" for i in range(4)]
    acked = dict.fromkeys(keys, 0)
    stop = threading.Event()

    def writer(key: str) -> None:
        # One request at a time per object: at most one unacknowledged
        # increment per key can be in flight when the process dies.
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            while not stop.is_set():
                try:
                    value = int(client.post(f"/COUNTER/{key}/inc").text)
                except httpx.TransportError:
                    return
                assert value == acked[key] + 1
                acked[key] = value

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in keys]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10.0
        while sum(acked.values()) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.proc.kill()  # SIGKILL, mid-stream
        server.proc.wait(10.0)
        stop.set()
        for t in threads:
            t.join(10.0)
    finally:
        stop.set()
        server.ensure_dead()
    assert sum(acked.values()) >= 50, acked

    again = Server(app.routing, kind).wait_ready()
    try:
        with httpx.Client(base_url=again.url, timeout=10.0) as client:
            stored = {k: int(client.get(f"/COUNTER/{k}/value").text) for k in keys}
        assert again.stop() == 0, again.log()
    finally:
        again.ensure_dead()
    for key in keys:
        assert acked[key] <= stored[key] <= acked[key] + 1, (key, acked, stored)


def test_bad_config_exits_2_with_the_message_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "dotrio.toml"
    path.write_text(textwrap.dedent("""
        [[durable_objects.bindings]]
        name = "C"
        class_name = "nowhere_to_be_found:Counter"
    """))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "dotrio", "serve", str(path), "--port", "0"],
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith(f"dotrio: error: {path}: durable_objects.bindings[0].class_name: expected ")
    assert "Traceback" not in done.stderr and done.stdout == ""
