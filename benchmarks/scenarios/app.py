"""The Durable Objects every dotrio benchmark serves (copied next to the
generated dotrio.toml as ``bench_app.py``). benchmarks/peers/workerd/worker.js
is the same program in JavaScript: keep the two in step, or the comparison
stops being like for like.

URL layout (dotrio's default routing, reproduced by the JavaScript worker):
``/<BINDING>/<name>/<rest>``.
"""

from __future__ import annotations

import time

from dotrio import DurableObject, Request, Response, WorkerEntrypoint

__all__ = ["Counter", "SqlCounter", "Echo", "Room", "AlarmProbe", "Hello"]


class Counter(DurableObject):
    """KV read + increment: one get and one put per request."""

    async def fetch(self, request: Request) -> Response:
        storage = self.ctx.storage
        n = (await storage.get("n") or 0) + 1
        await storage.put("n", n)
        return Response(str(n))


class SqlCounter(DurableObject):
    """The same read + increment through ``sql.exec``."""

    def __init__(self, ctx, env) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx, env)
        self.sql = ctx.storage.sql
        self.sql.exec("CREATE TABLE IF NOT EXISTS counter(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")

    async def fetch(self, request: Request) -> Response:
        sql = self.sql
        rows = sql.exec("SELECT n FROM counter WHERE id = 1").to_array()
        n = (rows[0]["n"] if rows else 0) + 1
        sql.exec("INSERT OR REPLACE INTO counter(id, n) VALUES (1, ?)", n)
        return Response(str(n))


class Echo(DurableObject):
    """Hibernatable WebSocket echo."""

    async def fetch(self, request: Request) -> Response:
        from dotrio import WebSocketPair

        client, server = WebSocketPair()
        self.ctx.accept_websocket(server)
        return Response(status=101, web_socket=client)

    async def websocket_message(self, ws, message) -> None:  # type: ignore[no-untyped-def]
        ws.send(message)


class Room(DurableObject):
    """One room: ``/ROOM/<room>/sub`` subscribes, ``/ROOM/<room>/pub`` publishes;
    each published message goes to every subscriber, then back to the
    publisher as its acknowledgement."""

    async def fetch(self, request: Request) -> Response:
        from dotrio import WebSocketPair

        client, server = WebSocketPair()
        role = "pub" if request.url.rstrip("/").endswith("/pub") else "sub"
        self.ctx.accept_websocket(server, tags=[role])
        return Response(status=101, web_socket=client)

    async def websocket_message(self, ws, message) -> None:  # type: ignore[no-untyped-def]
        ctx = self.ctx
        if "pub" in ctx.get_tags(ws):
            for sub in ctx.get_websockets("sub"):
                try:
                    sub.send(message)
                except RuntimeError:  # a subscriber that left at the end of the run
                    pass
            ws.send(message)


class AlarmProbe(DurableObject):
    """``POST .../arm?at=<epoch ms>`` arms the alarm; ``alarm()`` records when it
    ran; ``GET .../stats`` answers ``{"due": ms, "fired": [ms, ...]}``."""

    async def fetch(self, request: Request) -> Response:
        storage = self.ctx.storage
        path, _, query = request.url.partition("?")
        if path.endswith("/arm"):
            at = int(query.split("at=", 1)[1].split("&", 1)[0])
            await storage.put("due", at)
            await storage.set_alarm(at)
            return Response("armed")
        fired = await storage.get("fired") or []
        return Response.json({"due": await storage.get("due"), "fired": fired})

    async def alarm(self, info) -> None:  # type: ignore[no-untyped-def]
        now = time.time() * 1000.0
        storage = self.ctx.storage
        fired = await storage.get("fired") or []
        fired.append(now)
        await storage.put("fired", fired)


class Hello(WorkerEntrypoint):
    """Hello-world through the dispatcher (issue 6): the worker entry of the
    http-hello config only (``main = "bench_app:Hello"``); every other
    scenario's config has no ``main`` and uses default routing."""

    async def fetch(self, request: Request) -> Response:
        return Response("hello")
