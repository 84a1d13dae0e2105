"""The chat room of the tutorial: one ChatRoom object per room name."""

from __future__ import annotations

import json

from dotrio import DurableObject, DurableObjectState, Env, Request, Response, WebSocket, WebSocketPair


class ChatRoom(DurableObject):
    def __init__(self, ctx: DurableObjectState, env: Env) -> None:
        super().__init__(ctx, env)
        # Runs at every activation; cheap, and nothing else can run meanwhile.
        ctx.storage.sql.exec(
            "CREATE TABLE IF NOT EXISTS messages(id INTEGER PRIMARY KEY, user TEXT NOT NULL, text TEXT NOT NULL)"
        )

    async def fetch(self, request: Request) -> Response:
        if request.path.endswith("/history"):
            return Response.json(self.history())
        if request.headers.get("upgrade", "").lower() != "websocket":
            return Response("connect with a WebSocket, or GET .../history", status=426)
        user = request.headers.get("x-user") or "anonymous"
        client, server = WebSocketPair()
        # Hibernatable: the runtime keeps the socket while this instance may be evicted.
        self.ctx.accept_websocket(server, tags=[f"user:{user}"])
        server.serialize_attachment({"user": user})
        return Response(status=101, web_socket=client)

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        user = ws.deserialize_attachment()["user"]
        text = message if isinstance(message, str) else message.decode()
        self.ctx.storage.sql.exec("INSERT INTO messages(user, text) VALUES (?, ?)", user, text)
        line = json.dumps({"user": user, "text": text})
        for peer in self.ctx.get_websockets():
            peer.send(line)  # leaves only once the INSERT above is committed

    def history(self, limit: int = 50) -> list[dict]:
        """The last messages, oldest first (also callable over RPC)."""
        rows = self.ctx.storage.sql.exec(
            "SELECT user, text FROM (SELECT * FROM messages ORDER BY id DESC LIMIT ?) ORDER BY id", limit
        )
        return rows.to_array()
