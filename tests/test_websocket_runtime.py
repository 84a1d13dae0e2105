"""WebSockets inside the runtime (API.md §6) with in-process pairs: the
hibernation API, attachments, tags, auto-responses, the output gate, and the
standard mode. The network front end has its own tests under tests/server."""

from __future__ import annotations

import pytest
import trio

import dotrio
from dotrio import DurableObject, Request, Response, WebSocketPair, WebSocketRequestResponsePair


class Room(DurableObject):
    instances = 0

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        Room.instances += 1

    async def fetch(self, request: Request) -> Response:
        client, server = WebSocketPair()
        user = request.headers.get("x-user", "anon")
        self.ctx.accept_websocket(server, tags=[f"user:{user}", "room"])
        server.serialize_attachment({"user": user, "joined": await self.count("joins")})
        self.ctx.set_websocket_auto_response(WebSocketRequestResponsePair("ping", "pong"))
        return Response(status=101, web_socket=client)

    async def count(self, key: str) -> int:
        n = (await self.ctx.storage.get(key) or 0) + 1
        await self.ctx.storage.put(key, n)
        return n

    async def websocket_message(self, ws, message):
        att = ws.deserialize_attachment()
        n = await self.count("messages")
        if message == "who":
            ws.send(f"{att['user']} #{att['joined']}")
        elif message == "broadcast":
            for other in self.ctx.get_websockets("room"):
                other.send(f"from {att['user']}")
        elif message == "tags":
            ws.send(",".join(self.ctx.get_tags(ws)))
        elif message == "close":
            ws.close(4000, "asked to")
        else:
            ws.send(f"{n}:{message}")

    async def websocket_close(self, ws, code, reason, was_clean):
        await self.ctx.storage.put("last_close", [code, reason, was_clean])

    async def last_close(self):
        return await self.ctx.storage.get("last_close")

    async def sockets(self):
        return len(self.ctx.get_websockets())


async def connect(stub, user):
    resp = await stub.fetch("https://x/ws", headers={"x-user": user})
    assert resp.status == 101
    ws = resp.web_socket
    ws.accept()
    return ws


async def test_messages_tags_attachments_and_broadcast(make_runtime):
    async with make_runtime({"ROOM": Room}) as rt:
        stub = rt.env.ROOM.get_by_name("r1")
        alice = await connect(stub, "alice")
        bob = await connect(stub, "bob")
        alice.send("who")
        assert await alice.receive() == "alice #1"
        bob.send("who")
        assert await bob.receive() == "bob #2"
        alice.send("tags")
        assert await alice.receive() == "user:alice,room"
        bob.send("broadcast")
        assert await alice.receive() == "from bob"
        assert await bob.receive() == "from bob"
        assert await stub.sockets() == 2


async def test_hibernation_keeps_sockets_and_attachments(make_runtime, autojump_clock):
    async with make_runtime({"ROOM": Room}, hibernation_timeout=5, idle_timeout=70) as rt:
        stub = rt.env.ROOM.get_by_name("hib")
        ws = await connect(stub, "carol")
        ws.send("hello")
        assert await ws.receive() == "1:hello"
        before = Room.instances
        await trio.sleep(6)
        assert rt.statistics().live_objects == 0  # hibernated after 5 s, not 70
        ws.send("who")  # wakes a new instance, which reads the attachment
        assert await ws.receive() == "carol #1"
        assert Room.instances == before + 1


async def test_auto_response_does_not_wake(make_runtime, autojump_clock):
    async with make_runtime({"ROOM": Room}, hibernation_timeout=5) as rt:
        stub = rt.env.ROOM.get_by_name("auto")
        ws = await connect(stub, "dan")
        await trio.sleep(6)
        assert rt.statistics().live_objects == 0
        ws.send("ping")
        assert await ws.receive() == "pong"
        assert rt.statistics().live_objects == 0
        server_end = rt.websockets.get_websockets(("Room", str(stub.id)))[0]
        assert server_end is not None
        assert rt.websockets.get_auto_response_timestamp(server_end) is not None


async def test_close_from_client_reaches_object(make_runtime):
    async with make_runtime({"ROOM": Room}) as rt:
        stub = rt.env.ROOM.get_by_name("close")
        ws = await connect(stub, "erin")
        ws.close(4001, "bye now")
        for _ in range(50):
            await trio.sleep(0.01)
            if await stub.last_close():
                break
        assert await stub.last_close() == [4001, "bye now", True]
        assert await stub.sockets() == 0


async def test_close_from_object_reaches_client(make_runtime):
    async with make_runtime({"ROOM": Room}) as rt:
        stub = rt.env.ROOM.get_by_name("close2")
        ws = await connect(stub, "finn")
        ws.send("close")
        with pytest.raises(trio.EndOfChannel):
            await ws.receive()
        assert ws.close_code == 4000 and ws.close_reason == "asked to"


class Gated(DurableObject):
    async def fetch(self, request):
        client, server = WebSocketPair()
        self.ctx.accept_websocket(server)
        return Response(status=101, web_socket=client)

    async def websocket_message(self, ws, message):
        await self.ctx.storage.put("seen", message)
        ws.send("stored " + message)  # must leave only after the put is committed

    async def seen(self):
        return await self.ctx.storage.get("seen")


async def test_send_passes_output_gate(make_runtime, data_dir):
    async with make_runtime({"G": Gated}) as rt:
        stub = rt.env.G.get_by_name("g")
        resp = await stub.fetch("https://x/")
        ws = resp.web_socket
        ws.accept()
        ws.send("m1")
        assert await ws.receive() == "stored m1"
        actor = rt.live_actor(("Gated", str(stub.id)))
        assert actor is not None and not actor.storage.dirty


class Standard(DurableObject):
    async def fetch(self, request):
        client, server = WebSocketPair()
        server.accept()

        async def echo():
            async for message in server:
                server.send(message.upper())

        self.ctx.wait_until(echo())
        return Response(status=101, web_socket=client)


async def test_standard_mode_keeps_object_in_memory(make_runtime, autojump_clock):
    async with make_runtime({"S": Standard}, idle_timeout=5, hibernation_timeout=1) as rt:
        stub = rt.env.S.get_by_name("s")
        ws = (await stub.fetch("https://x/")).web_socket
        ws.accept()
        ws.send("abc")
        assert await ws.receive() == "ABC"
        await trio.sleep(30)
        assert rt.statistics().live_objects == 1  # the open standard socket pins it
        ws.send("def")
        assert await ws.receive() == "DEF"
        ws.close()
        await trio.sleep(30)
        assert rt.statistics().live_objects == 0


class Limits(DurableObject):
    async def fetch(self, request):
        client, server = WebSocketPair()
        try:
            if request.path == "/tags":
                self.ctx.accept_websocket(server, tags=[str(i) for i in range(11)])
            elif request.path == "/attach":
                self.ctx.accept_websocket(server)
                server.serialize_attachment(b"x" * 20000)
        except (ValueError, TypeError) as e:
            return Response(str(e), status=400)
        return Response(status=101, web_socket=client)


async def test_limits(make_runtime):
    async with make_runtime({"L": Limits}) as rt:
        stub = rt.env.L.get_by_name("l")
        r = await stub.fetch("https://x/tags")
        assert r.status == 400 and "at most 10 tags" in r.text()
        r = await stub.fetch("https://x/attach")
        assert r.status == 400 and "16384" in r.text()
    with pytest.raises(ValueError, match="101"):
        Response(status=101)
    client, _server = dotrio.WebSocketPair()
    with pytest.raises(ValueError, match="close code"):
        client.close(1005)
