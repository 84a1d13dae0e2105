"""The agent example end to end through a real server: ``python -m dotrio
serve`` on a copy of examples/agents/dotrio.toml whose data dir is a temporary
one, driven by httpx and trio-websocket over 127.0.0.1.

These run on the real clock (a subprocess cannot follow a MockClock); loop
ticks under virtual time are covered in test_agents_inprocess.py. One server
is shared by the module; its SIGTERM exit status is checked at teardown.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio_websocket

import dotrio

from .conftest import EXAMPLE_CONFIG, EXAMPLE_DIR

REPO = Path(dotrio.__file__).resolve().parent.parent
READY_TIMEOUT = 20.0


class Server:
    """``python -m dotrio serve CONFIG --port 0``; the URL comes from its log."""

    def __init__(self, config: Path) -> None:
        self.log_path = config.parent / "server.log"
        env = dict(os.environ)
        # The example's folder is on sys.path through the config; the repo is
        # there for a checkout that is not pip-installed.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dotrio", "serve", str(config), "--port", "0"],
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
            found = re.search(r"serving \S+ on (http://\S+)", self.log())
            if found:
                self.url = found.group(1)
                try:
                    if httpx.get(self.url + "/_dotrio/health", timeout=2.0).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        pytest.fail(f"server not ready within {READY_TIMEOUT} s:\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"server did not exit within 20 s of SIGTERM:\n{self.log()}")


def config_copy(folder: Path) -> Path:
    """The example's config, byte for byte, except: data in ``folder``, modules
    from the example's folder, and a relay topic every agent publishes to."""
    text = EXAMPLE_CONFIG.read_text()
    text, n1 = re.subn(r'(?m)^data_dir = ".*?"', f'data_dir = "{folder / "data"}"', text)
    text, n2 = re.subn(r'(?m)^main = "app:', f'main = "{EXAMPLE_DIR / "app.py"}:', text)
    text, n3 = re.subn(r'(?m)^RELAY_TOPIC = ".*?"', 'RELAY_TOPIC = "lobby"', text)
    text, n4 = re.subn(r'(?m)^class_name = "app:', 'class_name = "', text)
    assert (n1, n2, n3, n4) == (1, 1, 1, 2), "examples/agents/dotrio.toml changed shape; update config_copy()"
    path = folder / "dotrio.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(config_copy(tmp_path_factory.mktemp("agents-server")))
    try:
        yield srv.wait_ready()
        assert srv.stop() == 0, srv.log()
        assert (Path(srv.log_path).parent / "data" / "AgentDO").is_dir()
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()


@asynccontextmanager
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as c:
        yield c


async def ok(c: httpx.AsyncClient, method: str, path: str, body: Any = None) -> Any:
    resp = await c.request(method, path, json=body)
    assert resp.status_code == 200, (resp.status_code, resp.text)
    return resp.json()


@asynccontextmanager
async def subscriber(server: Server, path: str, patterns: str) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    url = server.url.replace("http://", "ws://") + f"{path}/ws?subscribe={patterns}"
    async with trio_websocket.open_websocket_url(url) as ws:
        yield ws


async def next_event(ws: trio_websocket.WebSocketConnection, wanted: str | None = None) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            event = orjson.loads(await ws.get_message())
            if wanted is None or event["type"] == wanted:
                return event


async def test_prompt_and_memory_search(server: Server) -> None:
    async with client(server) as c:
        index = await ok(c, "GET", "/")
        assert any("/prompt" in route for route in index["routes"])
        first = await ok(c, "POST", "/agents/sam/prompt", {"message": "Hello from the network"})
        assert first["reply"] == "sam (turn 1): noted 4 words, starting with 'hello'"
        await ok(c, "POST", "/agents/sam/memory", {"key": "cat", "text": "Sam's cat is called Miso", "tags": ["pets"]})
        await ok(c, "POST", "/agents/sam/memory", {"key": "car", "text": "Sam drives an old bicycle"})
        hits = await ok(c, "GET", "/agents/sam/memory?q=cats")
        assert [h["key"] for h in hits] == ["cat"]
        second = await ok(c, "POST", "/agents/sam/prompt", {"message": "what is my cat called?"})
        assert second["recalled"] == ["Sam's cat is called Miso"]
        state = await ok(c, "GET", "/agents/sam")
        assert (state["identity"]["name"], state["messages"], state["memories"]) == ("sam", 4, 2)
        assert (await c.get("/agents/sam/unknown")).status_code == 404
        assert (await c.get("/nowhere")).status_code == 404
        assert (await c.post("/agents/sam/prompt", content=b"{not json")).status_code == 400


async def test_subscription_events_over_a_real_websocket(server: Server) -> None:
    async with client(server) as c, subscriber(server, "/agents/tia", "agent.memory.*") as ws:
        await ok(c, "POST", "/agents/tia/memory", {"key": "k", "text": "first note"})
        event = await next_event(ws)
        assert (event["type"], event["agent"], event["data"]["text"]) == ("agent.memory.put", "tia", "first note")
        await ok(c, "POST", "/agents/tia/prompt", {"message": "not a memory event"})
        await ok(c, "DELETE", "/agents/tia/memory/k")
        # The prompt's events did not match: the next one is the delete.
        assert (await next_event(ws))["type"] == "agent.memory.delete"
        await ws.send_message(orjson.dumps({"op": "subscribe", "patterns": ["agent.reply"]}).decode())
        assert (await next_event(ws, "subscribed"))["patterns"] == ["agent.memory.*", "agent.reply"]
        await ws.send_message(orjson.dumps({"op": "prompt", "message": "via socket"}).decode())
        assert (await next_event(ws))["type"] == "agent.reply"
        assert (await next_event(ws))["type"] == "reply"
        await ws.send_message("ping")
        with trio.fail_after(10):
            assert await ws.get_message() == "pong"


async def test_agent_to_agent_delivery(server: Server) -> None:
    async with client(server) as c, subscriber(server, "/agents/uma", "agent.inbox") as ws:
        assert (await ok(c, "POST", "/agents/vic/send", {"to": "uma", "body": "by rpc"}))["via"] == "rpc"
        sent = await ok(c, "POST", "/agents/vic/send", {"to": "uma", "body": "by fetch", "via": "fetch"})
        assert sent["via"] == "fetch"
        assert [(await next_event(ws))["data"]["body"] for _ in range(2)] == ["by rpc", "by fetch"]
        inbox = await ok(c, "GET", "/agents/uma/inbox")
        assert [(m["sender"], m["body"], m["via"]) for m in inbox] == [
            ("vic", "by rpc", "rpc"),
            ("vic", "by fetch", "fetch"),
        ]


async def test_relay_fan_out_and_a_running_loop(server: Server) -> None:
    # The copied config sets RELAY_TOPIC = "lobby": every agent publishes there.
    async with (
        client(server) as c,
        subscriber(server, "/relay/lobby", "agent.loop.tick") as ticks,
        subscriber(server, "/relay/lobby", "agent.memory.put") as memories,
    ):
        for name in ("w1", "w2", "w3"):
            await ok(c, "POST", f"/agents/{name}/memory", {"text": f"hello from {name}"})
        assert sorted([(await next_event(memories))["agent"] for _ in range(3)]) == ["w1", "w2", "w3"]
        # A real loop, on the real clock: a short interval, two ticks, stop.
        await ok(c, "POST", "/agents/w1/inbox", {"from": "w2", "body": "tick me", "reply": True})
        await ok(c, "POST", "/agents/w1/loop/start", {"interval": 0.2})
        first = await next_event(ticks)
        second = await next_event(ticks)
        assert (first["agent"], first["data"]) == ("w1", {"tick": 1, "handled": 1})
        assert second["data"]["tick"] == 2
        stopped = await ok(c, "POST", "/agents/w1/loop/stop")
        assert stopped["running"] is False and stopped["ticks"] >= 2
        replies = await ok(c, "GET", "/agents/w2/inbox")
        assert [(m["sender"], m["via"]) for m in replies] == [("w1", "rpc")]
        stats = await ok(c, "GET", "/relay/lobby")
        assert stats["subscribers"] == 2 and stats["published"] >= 8


def test_simulate_drives_a_small_population(server: Server) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    args = ["--url", server.url, "--agents", "40", "--loops", "10", "--interval", "0.3", "--schedules", "5",
            "--duration", "1.5", "--concurrency", "8", "--relays", "2", "--subscribers", "2", "--json"]
    done = subprocess.run([sys.executable, str(EXAMPLE_DIR / "simulate.py"), *args],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    phases = report["phases"]
    assert phases["setup"]["statuses"] == {"200": 120}
    assert phases["loops+schedules"]["statuses"] == {"200": 15}
    assert phases["messages"]["requests"] > 0 and phases["messages"]["errors"] == 0
    assert sum(report["messages_sent"].values()) == phases["messages"]["requests"]
    events = report["relay_events_received"]
    assert events["agent.sent"] == phases["messages"]["requests"]
    assert events.get("agent.loop.tick", 0) >= 10
    agents = report["agents"]
    assert agents["loop_agents_sampled"] == 10 and agents["ticks_per_loop_agent"] >= 2
    assert agents["loop_errors"] == 0
    assert phases["stop loops"]["statuses"] == {"200": 10}


def test_simulate_refuses_other_hosts() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE_DIR / "simulate.py"), "--url", "http://example.com:8787"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "this machine" in done.stderr
