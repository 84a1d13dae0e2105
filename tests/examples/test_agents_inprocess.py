"""The agent example (examples/agents) in-process, under virtual time: the app
loaded from its own dotrio.toml by the dotrio.testing runtime factory, with a
temporary data dir. The same app through a real server is in
test_agents_server.py."""

from __future__ import annotations

import sys
import tomllib
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
import trio

from dotrio.testing import (
    advance,
    evict,
    list_durable_object_ids,
    run_durable_object_alarm,
    run_in_durable_object,
)

from .conftest import EXAMPLE_CONFIG

if TYPE_CHECKING:
    from dotrio import Response, Runtime


def make(factory: Any, **vars: Any) -> Runtime:
    """The example's runtime; ``vars`` are added to the file's."""
    if not vars:
        return factory(config=EXAMPLE_CONFIG)
    with open(EXAMPLE_CONFIG, "rb") as f:
        file_vars = tomllib.load(f)["vars"]
    return factory(config=EXAMPLE_CONFIG, vars={**file_vars, **vars})


async def req(stub: Any, method: str, path: str, body: Any = None, name: str | None = None) -> Response:
    data = b"" if body is None else orjson.dumps(body)
    return await stub.fetch(f"https://agents.test/agents/{name or stub.name}{path}", method=method, body=data)


async def ok(stub: Any, method: str, path: str, body: Any = None) -> Any:
    resp = await req(stub, method, path, body)
    assert resp.status == 200, (resp.status, resp.text())
    return resp.json()


async def subscribe(stub: Any, patterns: str, prefix: str = "agents") -> Any:
    resp = await stub.fetch(
        f"https://agents.test/{prefix}/{stub.name}/ws?subscribe={patterns}", headers={"upgrade": "websocket"}
    )
    assert resp.status == 101
    ws = resp.web_socket
    ws.accept()
    return ws


async def next_event(ws: Any) -> dict[str, Any]:
    with trio.fail_after(5):
        return orjson.loads(await ws.receive())


async def no_event(ws: Any) -> None:
    with trio.move_on_after(1):
        message = await ws.receive()
        raise AssertionError(f"unexpected event {message!r}")


async def test_prompt_stores_the_message_and_replies_deterministically(dotrio_runtime_factory, autojump_clock):
    async with make(dotrio_runtime_factory) as rt:
        alice = rt.env.AGENTS.get_by_name("alice")
        first = await ok(alice, "POST", "/prompt", {"message": "Hello there, agent"})
        assert first["reply"] == "alice (turn 1): noted 3 words, starting with 'hello'"
        await ok(alice, "POST", "/memory", {"text": "Alice prefers green tea in the morning", "tags": ["prefs"]})
        second = await ok(alice, "POST", "/prompt", {"message": "which teas do I like?", "from": "carol"})
        assert second["recalled"] == ["Alice prefers green tea in the morning"]
        assert second["reply"].startswith("alice to carol (turn 2): I remember Alice prefers green tea")
        log = await ok(alice, "GET", "/messages")
        assert [(m["role"], m["body"]) for m in log] == [
            ("user", "Hello there, agent"),
            ("agent", first["reply"]),
            ("user", "which teas do I like?"),
            ("agent", second["reply"]),
        ]
        state = await ok(alice, "GET", "")
        assert state["identity"]["name"] == "alice"
        assert (state["messages"], state["memories"]) == (4, 1)
        # A failing think step: 502, and the prompt itself stays stored.
        resp = await req(alice, "POST", "/prompt", {"message": "please #fail now"})
        assert resp.status == 502 and "#fail" in resp.json()["error"]
        assert (await ok(alice, "GET", "/messages"))[-1]["body"] == "please #fail now"
        assert (await req(alice, "POST", "/prompt", {"message": "  "})).status == 400
        assert (await req(alice, "POST", "/prompt", None)).status == 400
        assert (await req(alice, "GET", "/nope")).status == 404


async def test_memory_put_list_search_and_delete(dotrio_runtime_factory, autojump_clock):
    async with make(dotrio_runtime_factory) as rt:
        bob = rt.env.AGENTS.get_by_name("bob")
        notes = [
            ("k1", "The deploy runs every Friday afternoon"),
            ("k2", "Bob's favourite editor is vim"),
            ("k3", "Deploying on Fridays is risky, said Carol"),
        ]
        for key, text in notes:
            await ok(bob, "POST", "/memory", {"key": key, "text": text})
        assert [m["key"] for m in await ok(bob, "GET", "/memory")] == ["k1", "k2", "k3"]
        # Porter stemming: "deploys", "deploy" and "deploying" share the stem "deploy".
        hits = await ok(bob, "GET", "/memory?q=deploys")
        assert sorted(h["key"] for h in hits) == ["k1", "k3"]
        assert all("[" in h["snippet"] for h in hits)
        assert [h["key"] for h in await ok(bob, "GET", "/memory?q=edit")] == ["k2"]  # prefix on the last word
        assert await ok(bob, "GET", "/memory?q=kubernetes") == []
        # User text is never FTS5 syntax.
        assert await ok(bob, "GET", '/memory?q=%22NEAR(AND%20*') == []
        # Same key replaces.
        await ok(bob, "POST", "/memory", {"key": "k2", "text": "Bob switched to emacs"})
        assert [h["key"] for h in await ok(bob, "GET", "/memory?q=emacs")] == ["k2"]
        assert await ok(bob, "GET", "/memory?q=vim") == []
        assert (await req(bob, "DELETE", "/memory/k1")).status == 200
        assert (await req(bob, "DELETE", "/memory/k1")).status == 404
        assert [h["key"] for h in await ok(bob, "GET", "/memory?q=friday")] == ["k3"]
    # The FTS index is ordinary SQLite data: it survives a restart.
    async with make(dotrio_runtime_factory) as rt:
        bob = rt.env.AGENTS.get_by_name("bob")
        assert [h["key"] for h in await ok(bob, "GET", "/memory?q=risk")] == ["k3"]


async def test_subscribers_get_matching_events_across_hibernation(dotrio_runtime_factory, autojump_clock):
    async with make(dotrio_runtime_factory) as rt:
        agent = rt.env.AGENTS.get_by_name("dana")
        memory_ws = await subscribe(agent, "agent.memory.*")
        prompt_ws = await subscribe(agent, "agent.prompt,agent.reply")
        await ok(agent, "POST", "/memory", {"key": "a", "text": "one"})
        event = await next_event(memory_ws)
        assert (event["type"], event["agent"], event["data"]["key"]) == ("agent.memory.put", "dana", "a")
        await ok(agent, "POST", "/prompt", {"message": "hi"})
        assert (await next_event(prompt_ws))["type"] == "agent.prompt"
        assert (await next_event(prompt_ws))["type"] == "agent.reply"
        await no_event(memory_ws)

        # Subscriptions live in the attachment: evicting the agent (hibernation)
        # keeps the sockets and their patterns.
        prompt_ws.send(orjson.dumps({"op": "subscribe", "patterns": ["agent.memory.delete"]}).decode())
        assert (await next_event(prompt_ws))["patterns"] == ["agent.prompt", "agent.reply", "agent.memory.delete"]
        assert await evict(agent) is True
        await advance(60)
        await ok(agent, "DELETE", "/memory/a")
        assert (await next_event(memory_ws))["type"] == "agent.memory.delete"
        assert (await next_event(prompt_ws))["type"] == "agent.memory.delete"
        # Prompting over the socket; ping is answered without waking the agent.
        prompt_ws.send(orjson.dumps({"op": "prompt", "message": "over the socket"}).decode())
        assert (await next_event(prompt_ws))["type"] == "agent.prompt"
        assert (await next_event(prompt_ws))["type"] == "agent.reply"
        assert (await next_event(prompt_ws))["type"] == "reply"
        assert await evict(agent) is True
        memory_ws.send("ping")
        with trio.fail_after(5):
            assert await memory_ws.receive() == "pong"
        assert rt.live_actor(("AgentDO", str(agent.id))) is None
        memory_ws.send("not json")
        assert (await next_event(memory_ws))["type"] == "error"
        assert (await ok(agent, "GET", ""))["subscribers"] == 2


async def test_agent_to_agent_through_rpc_and_fetch(dotrio_runtime_factory, autojump_clock):
    async with make(dotrio_runtime_factory) as rt:
        ann = rt.env.AGENTS.get_by_name("ann")
        ben = rt.env.AGENTS.get_by_name("ben")
        watcher = await subscribe(ben, "agent.inbox")
        sent = await ok(ann, "POST", "/send", {"to": "ben", "body": "via rpc"})
        assert sent == {"to": "ben", "via": "rpc", "inbox_id": 1}
        sent = await ok(ann, "POST", "/send", {"to": "ben", "body": "via fetch", "via": "fetch"})
        assert sent["inbox_id"] == 2
        assert await ben.receive("zed", "direct rpc") == 3
        inbox = await ok(ben, "GET", "/inbox")
        assert [(m["sender"], m["body"], m["via"]) for m in inbox] == [
            ("ann", "via rpc", "rpc"),
            ("ann", "via fetch", "fetch"),
            ("zed", "direct rpc", "rpc"),
        ]
        assert [(await next_event(watcher))["data"]["via"] for _ in range(3)] == ["rpc", "fetch", "rpc"]
        assert [m["role"] for m in await ok(ann, "GET", "/messages")] == ["sent", "sent"]
        assert (await req(ann, "POST", "/send", {"to": "ben", "body": "x", "via": "pigeon"})).status == 400
        assert (await req(ben, "POST", "/inbox", {"from": 1})).status == 400


async def test_relay_fans_agent_events_out_to_matching_subscribers(dotrio_runtime_factory, autojump_clock):
    async with make(dotrio_runtime_factory, RELAY_TOPIC="lobby") as rt:
        lobby = rt.env.RELAY.get_by_name("lobby")
        everything = await subscribe(lobby, "*", prefix="relay")
        memories = await subscribe(lobby, "agent.memory.*", prefix="relay")
        inboxes = await subscribe(lobby, "agent.inbox", prefix="relay")
        for name in ("a1", "a2", "a3"):
            await ok(rt.env.AGENTS.get_by_name(name), "POST", "/memory", {"text": f"note of {name}"})
        got = [await next_event(memories) for _ in range(3)]
        assert sorted(e["agent"] for e in got) == ["a1", "a2", "a3"]
        assert {e["type"] for e in got} == {"agent.memory.put"}
        await ok(rt.env.AGENTS.get_by_name("a1"), "POST", "/send", {"to": "a2", "body": "psst"})
        event = await next_event(inboxes)
        assert (event["agent"], event["data"]["from"]) == ("a2", "a1")
        seen = [(await next_event(everything))["type"] for _ in range(5)]
        assert seen.count("agent.memory.put") == 3 and "agent.inbox" in seen
        await no_event(memories)
        # External publishers, and the relay's own bookkeeping.
        resp = await lobby.fetch("https://agents.test/relay/lobby/publish", method="POST",
                                 body=orjson.dumps({"type": "agent.memory.note", "data": {"x": 1}}))
        assert resp.json() == {"delivered": 2}
        stats = (await lobby.fetch("https://agents.test/relay/lobby")).json()
        assert stats["subscribers"] == 3 and stats["published"] == 6
        assert stats["recent"][-1]["type"] == "agent.memory.note"


async def test_loop_ticks_under_virtual_time(dotrio_runtime_factory, autojump_clock):
    async with make(dotrio_runtime_factory) as rt:
        eve = rt.env.AGENTS.get_by_name("eve")
        fred = rt.env.AGENTS.get_by_name("fred")
        ticks = await subscribe(eve, "agent.loop.*")
        started = await ok(eve, "POST", "/loop/start", {"interval": 30})
        assert started["running"] and started["interval"] == 30.0
        assert (await next_event(ticks))["type"] == "agent.loop.started"
        await fred.send("eve", "what is the plan?", "rpc", True)
        await fred.send("eve", "no reply needed", "fetch", False)
        # Alarm times are whole milliseconds, so each step goes a little past the
        # tick it waits for.
        await advance(29.9)
        assert (await ok(eve, "GET", ""))["loop"]["ticks"] == 0
        await advance(0.2)
        tick = await next_event(ticks)
        assert (tick["type"], tick["data"]) == ("agent.loop.tick", {"tick": 1, "handled": 2})
        # The loop answered the message that asked for a reply, and remembered both.
        reply = (await ok(fred, "GET", "/inbox"))[0]
        assert (reply["sender"], reply["via"]) == ("eve", "rpc")
        assert reply["body"].startswith("eve to fred (turn 1)")
        assert [h["text"] for h in await ok(eve, "GET", "/memory?q=plan")] == ["fred said: what is the plan?"]
        assert {m["status"] for m in await ok(eve, "GET", "/inbox")} == {"read"}
        # Ten more intervals: ten more ticks, each re-arming the alarm, even
        # across eviction (the sweeper evicts eve between ticks: idle_timeout=70).
        await advance(300)
        state = await ok(eve, "GET", "")
        assert state["loop"]["ticks"] == 11
        assert state["alarm"] == state["loop"]["next_ms"]
        stopped = await ok(eve, "POST", "/loop/stop")
        assert stopped["running"] is False
        await advance(600)
        state = await ok(eve, "GET", "")
        assert state["loop"]["ticks"] == 11 and state["alarm"] is None
        assert (await req(eve, "POST", "/loop/start", {"interval": -1})).status == 400


async def test_loop_backs_off_after_errors_and_recovers(dotrio_runtime_factory, autojump_clock):
    async with make(dotrio_runtime_factory) as rt:
        gus = rt.env.AGENTS.get_by_name("gus")
        await ok(gus, "POST", "/loop/start", {"interval": 10})
        await gus.receive("x", "this one will #fail")
        await gus.receive("x", "this one is fine")
        await advance(10.1)
        loop = (await ok(gus, "GET", ""))["loop"]
        assert (loop["errors"], loop["failures_in_a_row"]) == (1, 1)
        assert "ThinkError" in loop["last_error"]
        assert loop["next_ms"] - loop["last_tick_ms"] == 20_000  # interval x 2
        statuses = [m["status"] for m in await ok(gus, "GET", "/inbox")]
        assert statuses == ["failed", "unread"]  # the bad message cannot wedge the loop
        await advance(19.8)
        assert (await ok(gus, "GET", ""))["loop"]["ticks"] == 1
        await advance(0.2)
        loop = (await ok(gus, "GET", ""))["loop"]
        assert (loop["ticks"], loop["errors"], loop["failures_in_a_row"]) == (2, 1, 0)
        assert loop["next_ms"] - loop["last_tick_ms"] == 10_000
        assert [m["status"] for m in await ok(gus, "GET", "/inbox")] == ["failed", "read"]


async def test_loop_survives_restart_and_knows_its_name(dotrio_runtime_factory, autojump_clock):
    async with make(dotrio_runtime_factory) as rt:
        await ok(rt.env.AGENTS.get_by_name("hal"), "POST", "/loop/start", {"interval": 60})
        ids = list_durable_object_ids(rt.env.AGENTS)
    async with make(dotrio_runtime_factory) as rt:
        assert [str(i) for i in list_durable_object_ids(rt.env.AGENTS)] == [str(i) for i in ids]
        # Woken by its alarm alone, the agent knows only its id: its name comes
        # from storage, and so its events and replies carry it.
        hal = rt.env.AGENTS.get(ids[0])
        await hal.receive("ivy", "are you there?", "rpc", True)
        await advance(61)
        reply = (await ok(rt.env.AGENTS.get_by_name("ivy"), "GET", "/inbox"))[0]
        assert reply["sender"] == "hal" and reply["body"].startswith("hal to ivy")
        # run_durable_object_alarm runs a tick now, without waiting.
        before = (await hal.state())["loop"]["ticks"]
        assert await run_durable_object_alarm(hal) is True
        assert (await hal.state())["loop"]["ticks"] == before + 1


async def test_scheduled_reminders(dotrio_runtime_factory, autojump_clock):
    async with make(dotrio_runtime_factory) as rt:
        kim = rt.env.AGENTS.get_by_name("kim")
        fired = await subscribe(kim, "agent.schedule.*")
        once = (await ok(kim, "POST", "/schedules", {"in": 90, "note": "stand-up"}))["id"]
        cron = (await ok(kim, "POST", "/schedules", {"cron": "*/10 * * * *", "note": "digest"}))["id"]
        later = (await ok(kim, "POST", "/schedules", {"in": 7200, "note": "never"}))["id"]
        schedules = await ok(kim, "GET", "/schedules")
        assert {s["id"] for s in schedules} == {once, cron, later}
        assert [(await next_event(fired))["type"] for _ in range(3)] == ["agent.schedule.added"] * 3
        # The loop's alarm and the schedules share the object's one wake-up.
        await ok(kim, "POST", "/loop/start", {"interval": 45})
        assert (await ok(kim, "DELETE", f"/schedules/{later}")) == {"cancelled": True}
        assert (await req(kim, "DELETE", f"/schedules/{later}")).status == 404
        await advance(91)
        notes = [m["body"] for m in await ok(kim, "GET", "/messages") if m["role"] == "reminder"]
        assert "stand-up" in notes
        await advance(3600)
        state = await ok(kim, "GET", "")
        reminders = [m["body"] for m in await ok(kim, "GET", "/messages?limit=1000") if m["role"] == "reminder"]
        assert reminders.count("stand-up") == 1
        assert 6 <= reminders.count("digest") <= 7
        assert "never" not in reminders
        assert state["schedules"] == 1  # the cron one repeats; the one-shot is gone
        assert state["loop"]["ticks"] == (91 + 3600) // 45
        assert (await req(kim, "POST", "/schedules", {"note": "when?"})).status == 400
        assert (await req(kim, "POST", "/schedules", {"cron": "not cron", "note": "x"})).status == 400


async def test_openai_adapter_speaks_chat_completions_without_a_network(dotrio_runtime_factory) -> None:
    make(dotrio_runtime_factory)  # loading the config imports the app module
    app = sys.modules["app"]
    OpenAIResponder, ThinkError, Thought = app.OpenAIResponder, app.ThinkError, app.Thought

    seen: list[httpx.Request] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers["authorization"] != "Bearer k-123":
            return httpx.Response(401, text="bad key")
        return httpx.Response(200, json={"choices": [{"message": {"content": "model says hi"}}]})

    responder = OpenAIResponder("http://llm.invalid/v1/", "k-123", "tiny", transport=httpx.MockTransport(endpoint))
    thought = Thought("ada", "You are Ada.", "hello?", "bob", (("user", "earlier"), ("agent", "answer")), ("a memory",))
    assert await responder.think(thought) == "model says hi"
    sent = orjson.loads(seen[0].content)
    assert str(seen[0].url) == "http://llm.invalid/v1/chat/completions"
    assert sent["model"] == "tiny"
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert "a memory" in sent["messages"][0]["content"] and sent["messages"][-1]["content"] == "hello?"
    with pytest.raises(ThinkError, match="401"):
        await OpenAIResponder("http://llm.invalid/v1", "wrong", "tiny", transport=httpx.MockTransport(endpoint)).think(
            thought
        )


async def test_openai_responder_without_vars_is_a_502(dotrio_runtime_factory, autojump_clock):
    async with make(dotrio_runtime_factory) as rt:
        lee = rt.env.AGENTS.get_by_name("lee")
        assert (await ok(lee, "PUT", "/config", {"responder": "openai"}))["responder"] == "openai"
        resp = await req(lee, "POST", "/prompt", {"message": "hi"})
        assert resp.status == 502 and "LLM_URL" in resp.json()["error"]
        assert (await req(lee, "PUT", "/config", {"colour": "red"})).status == 400
        instance_config = await run_in_durable_object(lee, lambda obj, ctx: ctx.storage.get("config"))
        assert instance_config["responder"] == "openai"


async def test_relay_keeps_only_its_recent_events(dotrio_runtime_factory, autojump_clock):
    async with make(dotrio_runtime_factory) as rt:
        relay = rt.env.RELAY.get_by_name("busy")
        for i in range(1, 131):
            assert await relay.publish({"type": "agent.n", "data": i}) == 0
        recent = await relay.recent_events(1000)
        assert 50 <= len(recent) < 100  # trimmed every 50 events
        assert [e["data"] for e in recent][-3:] == [128, 129, 130]
        assert (await relay.stats())["published"] == 130
        with pytest.raises(ValueError):
            await relay.publish({"no": "type"})
