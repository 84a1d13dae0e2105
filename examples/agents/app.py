"""An agent population on dotrio: one ``AgentDO`` per agent name, a ``RelayDO``
per topic, and a worker entry that routes HTTP to them.

Routes (the worker entry, ``Worker.fetch``)::

    GET    /                                  what is here
    GET    /agents/<name>                     identity, config, loop state, counts
    PUT    /agents/<name>/config              merge JSON into the agent's config
    POST   /agents/<name>/prompt              {"message": ...} -> {"reply": ...}
    GET    /agents/<name>/messages            the conversation log
    POST   /agents/<name>/memory              {"text": ..., "key"?: ..., "tags"?: [...]}
    GET    /agents/<name>/memory[?q=words]    list, or full-text search (SQLite FTS5)
    DELETE /agents/<name>/memory/<key>
    POST   /agents/<name>/inbox               {"from": ..., "body": ..., "reply"?: bool}
    GET    /agents/<name>/inbox
    POST   /agents/<name>/send                {"to": ..., "body": ..., "via": "rpc"|"fetch"}
    POST   /agents/<name>/loop/start          {"interval"?: seconds}
    POST   /agents/<name>/loop/stop
    POST   /agents/<name>/schedules           {"in": seconds | "at": epoch s | "cron": "...", "note": ...}
    GET    /agents/<name>/schedules
    DELETE /agents/<name>/schedules/<id>
    GET    /agents/<name>/ws?subscribe=agent.memory.*,agent.prompt    (WebSocket)
    GET    /relay/<topic>/ws?subscribe=...                            (WebSocket)
    POST   /relay/<topic>/publish             {"type": ..., "data": ...}
    GET    /relay/<topic>                     counters and recent events

Events are JSON objects ``{"type", "agent", "ts", "data"}``. Subscribers give
shell-style patterns (``agent.memory.*``); the patterns live in the socket's
attachment, so they survive hibernation.
"""

from __future__ import annotations

import fnmatch
import math
import re
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from dotrio import (
    AlarmInfo,
    DotrioError,
    DurableObject,
    DurableObjectState,
    Env,
    Request,
    Response,
    WebSocket,
    WebSocketPair,
    WebSocketRequestResponsePair,
    WorkerEntrypoint,
)

__all__ = [
    "AgentDO",
    "LocalResponder",
    "OpenAIResponder",
    "RelayDO",
    "ThinkError",
    "Thinker",
    "Thought",
    "Worker",
    "make_thinker",
    "matches",
]

DEFAULT_LOOP_INTERVAL = 60.0
# A failing loop backs off (interval x 2^failures) but never waits longer than this.
MAX_LOOP_BACKOFF = 3600.0
INBOX_PER_TICK = 20
HISTORY_TURNS = 6
RECALL_LIMIT = 3
MAX_PATTERNS = 16
RELAY_RECENT = 50
ROUTES = [line.strip() for line in (__doc__ or "").split("::", 1)[1].split("\n\n")[1].splitlines()]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages(
    id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, role TEXT NOT NULL,
    peer TEXT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbox(
    id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, sender TEXT NOT NULL, body TEXT NOT NULL,
    via TEXT NOT NULL, want_reply INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'unread');
CREATE INDEX IF NOT EXISTS inbox_status ON inbox(status, id);
CREATE VIRTUAL TABLE IF NOT EXISTS memory USING fts5(
    key UNINDEXED, body, tags, ts UNINDEXED, tokenize = 'porter unicode61');
"""


def now_ms(ctx: DurableObjectState | None = None) -> int:
    """Epoch milliseconds on the runtime's clock, which is virtual under a
    MockClock in tests; alarm times must be computed from it."""
    if ctx is not None:
        return ctx.now_ms()
    return int(time.time() * 1000)


def matches(patterns: Iterable[str], event_type: str) -> bool:
    """Whether a subscriber with ``patterns`` wants an event of ``event_type``."""
    return any(fnmatch.fnmatchcase(event_type, p) for p in patterns)


def _patterns(raw: object) -> list[str]:
    if isinstance(raw, str):
        raw = [p for p in raw.split(",")]
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise ValueError("patterns are a list of strings (or a comma-separated string)")
    patterns = list(dict.fromkeys(p.strip() for p in raw if p.strip()))
    if len(patterns) > MAX_PATTERNS:
        raise ValueError(f"at most {MAX_PATTERNS} patterns per subscriber")
    return patterns


def _query(request: Request) -> dict[str, str]:
    """The query parameters; a repeated name's last value wins, blank values are dropped."""
    return {k: v for k, v in request.query.items(multi=True) if v}


def _error(status: int, message: str) -> Response:
    return Response.json({"error": message}, status=status)


def _body(request: Request) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        data = request.json()
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _BadRequest("the body must be a JSON object")
    return data


class _BadRequest(Exception):
    """Turned into a 400 by the object's fetch."""


def _subscribe_socket(ctx: DurableObjectState, request: Request, tag: str) -> Response:
    """Accept a hibernatable subscriber whose patterns come from ?subscribe=."""
    if (request.headers.get("upgrade") or "").lower() != "websocket":
        return _error(426, "this endpoint takes a WebSocket upgrade")
    patterns = _patterns(_query(request).get("subscribe", "*"))
    client, server = WebSocketPair()
    ctx.accept_websocket(server, tags=[tag])
    # Kept with the socket, not the instance: it outlives hibernation.
    server.serialize_attachment({"patterns": patterns})
    ctx.set_websocket_auto_response(WebSocketRequestResponsePair("ping", "pong"))
    return Response(status=101, web_socket=client)


def _handle_subscription_op(ws: WebSocket, op: dict[str, Any]) -> bool:
    """subscribe/unsubscribe messages from a subscriber; False if not one."""
    kind = op.get("op")
    if kind not in ("subscribe", "unsubscribe"):
        return False
    state = ws.deserialize_attachment() or {"patterns": []}
    current: list[str] = state["patterns"]
    change = _patterns(op.get("patterns", []))
    if kind == "subscribe":
        current = list(dict.fromkeys(current + change))[:MAX_PATTERNS]
    else:
        current = [p for p in current if p not in change]
    state["patterns"] = current
    ws.serialize_attachment(state)
    ws.send(orjson.dumps({"type": "subscribed", "patterns": current}).decode())
    return True


def _fan_out(sockets: Iterable[WebSocket], event: dict[str, Any]) -> int:
    """Send ``event`` to every socket whose patterns match; returns how many."""
    text = orjson.dumps(event).decode()
    sent = 0
    for ws in sockets:
        state = ws.deserialize_attachment()
        if state and matches(state["patterns"], event["type"]):
            try:
                ws.send(text)
            except RuntimeError:
                continue  # closed while we were looping; its close event will clean up
            sent += 1
    return sent


# ---- the "think" step -----------------------------------------------------------------


class ThinkError(Exception):
    """The think step failed (a model endpoint error, or a requested failure)."""


@dataclass(frozen=True)
class Thought:
    """What an agent thinks about: who it is, the new message, recent history,
    and the memories that matched the message."""

    agent: str
    persona: str
    message: str
    sender: str | None = None
    history: tuple[tuple[str, str], ...] = ()
    recalled: tuple[str, ...] = field(default_factory=tuple)


class Thinker(Protocol):
    async def think(self, thought: Thought) -> str: ...


class LocalResponder:
    """Deterministic, offline: the default, and what the tests use. The same
    thought always gets the same reply. A message containing ``#fail`` raises
    ThinkError, so that error handling can be exercised without a network."""

    async def think(self, thought: Thought) -> str:
        if "#fail" in thought.message:
            raise ThinkError("the local responder was asked to fail (#fail)")
        turn = sum(1 for role, _ in thought.history if role == "user") + 1
        who = f" to {thought.sender}" if thought.sender else ""
        reply = f"{thought.agent}{who} (turn {turn}): "
        if thought.recalled:
            reply += "I remember " + " | ".join(r[:80] for r in thought.recalled)
        else:
            words = re.findall(r"\w+", thought.message.lower())
            plural = "" if len(words) == 1 else "s"
            reply += f"noted {len(words)} word{plural}" + (f", starting with {words[0]!r}" if words else "")
        return reply


class OpenAIResponder:
    """An OpenAI-compatible chat completions endpoint (``POST {url}/chat/completions``).

    Configured from vars: ``LLM_URL`` (e.g. ``https://api.openai.com/v1`` or a
    local server's ``http://127.0.0.1:8000/v1``), ``LLM_API_KEY`` and
    ``LLM_MODEL``. The HTTP call is a non-storage await, so other events may
    reach the agent while the model thinks, as on Cloudflare."""

    def __init__(self, url: str, api_key: str, model: str, timeout: float = 60.0, transport: Any = None) -> None:
        self.url = url.rstrip("/") + "/chat/completions"
        self.api_key = api_key
        self.model = model
        self.timeout = timeout
        # Tests pass an httpx.MockTransport; nothing here ever needs a real endpoint.
        self.transport = transport

    def request_body(self, thought: Thought) -> dict[str, Any]:
        system = thought.persona or f"You are {thought.agent}, a helpful agent."
        if thought.recalled:
            system += "\nRelevant memories:\n" + "\n".join(f"- {r}" for r in thought.recalled)
        messages: list[dict[str, str]] = [{"role": "system", "content": system}]
        for role, text in thought.history:
            messages.append({"role": "assistant" if role == "agent" else "user", "content": text})
        messages.append({"role": "user", "content": thought.message})
        return {"model": self.model, "messages": messages}

    async def think(self, thought: Thought) -> str:
        import httpx  # only agents configured for a model endpoint need it

        headers = {"authorization": f"Bearer {self.api_key}"}
        try:
            async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as client:
                resp = await client.post(self.url, json=self.request_body(thought), headers=headers)
        except httpx.HTTPError as exc:
            raise ThinkError(f"model endpoint unreachable: {exc!r}") from exc
        if resp.status_code != 200:
            raise ThinkError(f"model endpoint answered {resp.status_code}: {resp.text[:200]}")
        try:
            return str(resp.json()["choices"][0]["message"]["content"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ThinkError(f"model endpoint answered something unexpected: {resp.text[:200]}") from exc


def make_thinker(env: Env, config: dict[str, Any]) -> Thinker:
    """The agent's think step: its config's ``responder``, else the ``THINK``
    var, else the local responder."""
    kind = config.get("responder") or env.get("THINK") or "local"
    if kind == "local":
        return LocalResponder()
    if kind == "openai":
        url, key = env.get("LLM_URL"), env.get("LLM_API_KEY")
        if not url or not key:
            raise ThinkError("responder 'openai' needs the LLM_URL and LLM_API_KEY vars")
        return OpenAIResponder(url, key, env.get("LLM_MODEL") or "gpt-4o-mini")
    raise ThinkError(f"unknown responder {kind!r} (expected 'local' or 'openai')")


# ---- the agent -------------------------------------------------------------------------


class AgentDO(DurableObject):
    """One agent: identity and config in KV, conversation, inbox and memory in
    SQL (memory is an FTS5 table), subscribers on hibernatable WebSockets, a
    loop on the alarm, reminders on the scheduler."""

    def __init__(self, ctx: DurableObjectState, env: Env) -> None:
        super().__init__(ctx, env)
        self.sql = ctx.storage.sql
        # Sync and idempotent: every activation may run it, nothing else can
        # interleave with a constructor.
        self.sql.exec(_SCHEMA)

    # ---- identity and config ----

    async def _identity(self, name: str | None = None) -> dict[str, Any]:
        identity = await self.ctx.storage.get("identity")
        if identity is None:
            # The name comes with the id when the agent is reached by name; an
            # agent woken by its alarm has only its id, hence storing it.
            name = name or self.ctx.id.name
            if name is None:
                raise _BadRequest("this agent has no name yet; reach it by name first")
            identity = {"name": name, "id": str(self.ctx.id), "created_ms": now_ms(self.ctx)}
            await self.ctx.storage.put("identity", identity)
        return identity

    async def _name(self) -> str:
        return (await self._identity())["name"]

    async def _config(self) -> dict[str, Any]:
        config = await self.ctx.storage.get("config")
        if config is None:
            config = {
                "persona": "",
                "responder": None,
                "loop_interval": float(self.env.get("LOOP_INTERVAL", DEFAULT_LOOP_INTERVAL)),
                "relay": self.env.get("RELAY_TOPIC") or None,
            }
        return config

    async def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` into the config (RPC, and PUT /config)."""
        allowed = {"persona", "responder", "loop_interval", "relay"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        if "loop_interval" in changes:
            changes["loop_interval"] = _interval(changes["loop_interval"])
        config = await self._config()
        config.update(changes)
        await self.ctx.storage.put("config", config)
        await self._publish("agent.config", {"config": config})
        return config

    async def state(self) -> dict[str, Any]:
        def count(table: str, where: str = "") -> int:
            return self.sql.exec(f"SELECT count(*) AS n FROM {table} {where}").one()["n"]

        return {
            "identity": await self._identity(),
            "config": await self._config(),
            "loop": await self._loop_state(),
            "alarm": await self.ctx.storage.get_alarm(),
            "messages": count("messages"),
            "memories": count("memory"),
            "inbox_unread": count("inbox", "WHERE status = 'unread'"),
            "subscribers": len(self.ctx.get_websockets("subscriber")),
            "schedules": len(await self._schedules()),
        }

    # ---- events ----

    async def _publish(self, event_type: str, data: dict[str, Any]) -> None:
        """Send an event to this agent's matching subscribers and to its relay."""
        identity = await self.ctx.storage.get("identity")
        event = {
            "type": event_type,
            "agent": identity["name"] if identity else None,
            "ts": now_ms(self.ctx),
            "data": data,
        }
        _fan_out(self.ctx.get_websockets("subscriber"), event)
        topic = (await self._config()).get("relay")
        if topic:
            relay = self.env.RELAY.get_by_name(topic)
            # The relay's answer is not needed to answer our caller; wait_until
            # keeps the agent alive until the call is done.
            self.ctx.wait_until(_relay_publish(relay, event))

    # ---- prompt ----

    async def prompt(self, message: str, sender: str | None = None) -> dict[str, Any]:
        """Store ``message``, think about it, store and return the reply (RPC,
        and POST /prompt). Raises ThinkError if the think step fails; the
        message stays stored."""
        if not isinstance(message, str) or not message.strip():
            raise ValueError("message must be a non-empty string")
        name = await self._name()
        config = await self._config()
        history = self._history()
        recalled = self._recall(message)
        msg_id = self.sql.exec(
            "INSERT INTO messages(ts, role, peer, body) VALUES(?, 'user', ?, ?) RETURNING id",
            now_ms(self.ctx), sender, message,
        ).one()["id"]
        await self._publish("agent.prompt", {"id": msg_id, "from": sender, "message": message})
        thought = Thought(name, config.get("persona") or "", message, sender, history, recalled)
        reply = await make_thinker(self.env, config).think(thought)
        reply_id = self.sql.exec(
            "INSERT INTO messages(ts, role, peer, body) VALUES(?, 'agent', ?, ?) RETURNING id",
            now_ms(self.ctx), sender, reply,
        ).one()["id"]
        await self._publish("agent.reply", {"id": reply_id, "to": sender, "reply": reply})
        return {"id": reply_id, "reply": reply, "recalled": list(recalled)}

    def _history(self) -> tuple[tuple[str, str], ...]:
        rows = self.sql.exec(
            "SELECT role, body FROM messages WHERE role IN ('user', 'agent') ORDER BY id DESC LIMIT ?",
            HISTORY_TURNS * 2,
        ).raw()
        return tuple((role, body) for role, body in reversed(list(rows)))

    def _recall(self, text: str) -> tuple[str, ...]:
        query = _fts_query(text)
        if not query:
            return ()
        rows = self.sql.exec(
            "SELECT body FROM memory WHERE memory MATCH ? ORDER BY rank LIMIT ?", query, RECALL_LIMIT
        ).raw()
        return tuple(body for (body,) in rows)

    def messages(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.sql.exec(
            "SELECT * FROM (SELECT id, ts, role, peer, body FROM messages ORDER BY id DESC LIMIT ?) ORDER BY id",
            limit,
        ).to_array()

    # ---- memory ----

    async def remember(self, text: str, key: str | None = None, tags: list[str] | None = None) -> dict[str, Any]:
        """Put a memory (replacing the one with the same key)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        tags = tags or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError("tags must be a list of strings")
        await self._identity()
        if key is None:
            key = f"m{self.sql.exec('SELECT coalesce(max(rowid), 0) + 1 AS n FROM memory').one()['n']}"
        replaced = self.sql.exec("DELETE FROM memory WHERE key = ?", key).rows_written > 0
        ts = now_ms(self.ctx)
        self.sql.exec("INSERT INTO memory(key, body, tags, ts) VALUES(?, ?, ?, ?)", key, text, " ".join(tags), ts)
        item = {"key": key, "text": text, "tags": tags, "ts": ts}
        await self._publish("agent.memory.put", {**item, "replaced": replaced})
        return item

    async def forget(self, key: str) -> bool:
        gone = self.sql.exec("DELETE FROM memory WHERE key = ?", key).rows_written > 0
        if gone:
            await self._publish("agent.memory.delete", {"key": key})
        return gone

    def memories(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.sql.exec("SELECT key, body, tags, ts FROM memory ORDER BY rowid LIMIT ?", limit).raw()
        return [{"key": k, "text": b, "tags": t.split() if t else [], "ts": ts} for k, b, t, ts in rows]

    def search(self, words: str, limit: int = 10) -> list[dict[str, Any]]:
        """Full-text search over memories (FTS5, porter stemming), best first."""
        query = _fts_query(words)
        if not query:
            return []
        rows = self.sql.exec(
            "SELECT key, body, tags, ts, bm25(memory) AS score, "
            "snippet(memory, 1, '[', ']', '…', 12) AS snippet "
            "FROM memory WHERE memory MATCH ? ORDER BY rank LIMIT ?",
            query, limit,
        ).raw()
        return [
            {"key": k, "text": b, "tags": t.split() if t else [], "ts": ts, "score": s, "snippet": snip}
            for k, b, t, ts, s, snip in rows
        ]

    # ---- agent to agent ----

    async def receive(self, sender: str, body: str, via: str = "rpc", reply: bool = False) -> int:
        """Another agent's message, into the inbox (RPC; POST /inbox does the same).
        The loop answers messages that ask for a reply."""
        if not isinstance(sender, str) or not isinstance(body, str):
            raise TypeError("sender and body are strings")
        await self._identity()
        msg_id = self.sql.exec(
            "INSERT INTO inbox(ts, sender, body, via, want_reply) VALUES(?, ?, ?, ?, ?) RETURNING id",
            now_ms(self.ctx), sender, body, via, int(bool(reply)),
        ).one()["id"]
        await self._publish("agent.inbox", {"id": msg_id, "from": sender, "body": body, "via": via})
        return msg_id

    async def send(self, to: str, body: str, via: str = "rpc", reply: bool = False) -> dict[str, Any]:
        """Send ``body`` to agent ``to`` through RPC or through its /inbox."""
        me = await self._name()
        self.sql.exec(
            "INSERT INTO messages(ts, role, peer, body) VALUES(?, 'sent', ?, ?)", now_ms(self.ctx), to, body
        )
        peer = self.env.AGENTS.get_by_name(to)
        if via == "rpc":
            inbox_id = await peer.receive(me, body, "rpc", reply)
        elif via == "fetch":
            resp = await peer.fetch(
                f"https://agents.internal/agents/{urllib.parse.quote(to, safe='')}/inbox",
                method="POST",
                headers={"content-type": "application/json"},
                body=orjson.dumps({"from": me, "body": body, "reply": reply}),
            )
            if resp.status != 200:
                raise ThinkError(f"agent {to!r} refused the message: {resp.status} {resp.text()[:200]}")
            inbox_id = resp.json()["id"]
        else:
            raise ValueError(f"via must be 'rpc' or 'fetch', got {via!r}")
        await self._publish("agent.sent", {"to": to, "via": via, "inbox_id": inbox_id})
        return {"to": to, "via": via, "inbox_id": inbox_id}

    def inbox(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        return self.sql.exec(
            f"SELECT id, ts, sender, body, via, want_reply, status FROM inbox {where} ORDER BY id LIMIT ?",
            *args, limit,
        ).to_array()

    # ---- the loop (on the alarm) ----

    async def _loop_state(self) -> dict[str, Any]:
        return await self.ctx.storage.get("loop") or {
            "running": False, "interval": None, "ticks": 0, "errors": 0,
            "failures_in_a_row": 0, "last_error": None, "last_tick_ms": None, "next_ms": None,
        }

    async def start(self, interval: float | None = None) -> dict[str, Any]:
        """Start the agent loop: a tick now-ish, then every ``interval`` seconds
        (default: the config's ``loop_interval``)."""
        await self._identity()
        loop = await self._loop_state()
        loop["running"] = True
        loop["interval"] = _interval(interval) if interval is not None else (await self._config())["loop_interval"]
        loop["failures_in_a_row"] = 0
        loop["next_ms"] = now_ms(self.ctx) + int(loop["interval"] * 1000)
        await self.ctx.storage.put("loop", loop)
        await self.ctx.storage.set_alarm(loop["next_ms"])
        await self._publish("agent.loop.started", {"interval": loop["interval"]})
        return loop

    async def stop(self) -> dict[str, Any]:
        loop = await self._loop_state()
        loop["running"] = False
        loop["next_ms"] = None
        await self.ctx.storage.put("loop", loop)
        await self.ctx.storage.delete_alarm()
        await self._publish("agent.loop.stopped", {"ticks": loop["ticks"]})
        return loop

    async def alarm(self, info: AlarmInfo) -> None:
        loop = await self._loop_state()
        if not loop["running"]:
            return
        interval: float = loop["interval"]
        try:
            handled = await self._tick()
        except Exception as exc:  # noqa: BLE001 - any failure must not end the loop
            loop["errors"] += 1
            loop["failures_in_a_row"] += 1
            loop["last_error"] = f"{type(exc).__name__}: {exc}"
            # Back off rather than hammer whatever is failing; the runtime's own
            # alarm retries are for crashes, not for an agent's bad day.
            delay = min(interval * 2 ** loop["failures_in_a_row"], max(MAX_LOOP_BACKOFF, interval))
            await self._publish("agent.loop.error", {"error": loop["last_error"], "retry_in": delay})
        else:
            loop["failures_in_a_row"] = 0
            delay = interval
            await self._publish("agent.loop.tick", {"tick": loop["ticks"] + 1, "handled": handled})
        loop["ticks"] += 1
        loop["last_tick_ms"] = now_ms(self.ctx)
        loop["next_ms"] = loop["last_tick_ms"] + int(delay * 1000)
        await self.ctx.storage.put("loop", loop)
        await self.ctx.storage.set_alarm(loop["next_ms"])

    async def _tick(self) -> int:
        """One turn of the loop: think about unread inbox messages, remember
        them, answer those that want a reply. Returns how many were handled."""
        name = await self._name()
        config = await self._config()
        thinker = make_thinker(self.env, config)
        unread = self.sql.exec(
            "SELECT id, sender, body, want_reply FROM inbox WHERE status = 'unread' ORDER BY id LIMIT ?",
            INBOX_PER_TICK,
        ).raw()
        handled = 0
        for msg_id, sender, body, want_reply in list(unread):
            thought = Thought(name, config.get("persona") or "", body, sender, (), self._recall(body))
            try:
                answer = await thinker.think(thought)
            except ThinkError:
                # Marked first so that one bad message cannot wedge the loop.
                self.sql.exec("UPDATE inbox SET status = 'failed' WHERE id = ?", msg_id)
                raise
            self.sql.exec("UPDATE inbox SET status = 'read' WHERE id = ?", msg_id)
            self.sql.exec(
                "INSERT INTO messages(ts, role, peer, body) VALUES(?, 'thought', ?, ?)",
                now_ms(self.ctx), sender, answer,
            )
            await self.remember(f"{sender} said: {body}", tags=["inbox", sender])
            if want_reply:
                await self.env.AGENTS.get_by_name(sender).receive(name, answer, "rpc", False)
            handled += 1
        return handled

    # ---- scheduled events (the scheduler, driven by the same alarm) ----

    async def remind_at(self, note: str, *, delay: float | None = None, cron: str | None = None) -> str:
        """Schedule a reminder ``delay`` seconds from now, or repeating on ``cron``."""
        await self._identity()
        if (delay is None) == (cron is None):
            raise ValueError("give exactly one of delay or cron")
        when: Any = cron if cron is not None else float(delay)  # type: ignore[arg-type]
        schedule_id = await self.schedule(when, "_remind", {"note": note})
        await self._publish("agent.schedule.added", {"id": schedule_id, "note": note, "cron": cron, "delay": delay})
        return schedule_id

    async def _remind(self, payload: dict[str, Any]) -> None:
        """Runs when a reminder falls due (called by the scheduler; private, so
        not reachable over RPC)."""
        note = payload.get("note", "")
        self.sql.exec(
            "INSERT INTO messages(ts, role, peer, body) VALUES(?, 'reminder', NULL, ?)", now_ms(self.ctx), note
        )
        count = (await self.ctx.storage.get("reminders_fired") or 0) + 1
        await self.ctx.storage.put("reminders_fired", count)
        await self._publish("agent.schedule.fired", {"note": note, "count": count})

    async def _schedules(self) -> list[Any]:
        return list(await self.get_schedules())

    async def schedules(self) -> list[dict[str, Any]]:
        return [_schedule_dict(s) for s in await self._schedules()]

    async def unschedule(self, schedule_id: str) -> bool:
        return bool(await self.cancel_schedule(schedule_id))

    # ---- WebSocket subscribers ----

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        try:
            op = orjson.loads(message)
            if not isinstance(op, dict):
                raise ValueError("expected a JSON object")
            if _handle_subscription_op(ws, op):
                return
            if op.get("op") == "prompt":
                result = await self.prompt(str(op.get("message", "")), op.get("from"))
                ws.send(orjson.dumps({"type": "reply", **result}).decode())
                return
            raise ValueError(f"unknown op {op.get('op')!r}; expected subscribe, unsubscribe or prompt")
        except (ValueError, ThinkError) as exc:
            ws.send(orjson.dumps({"type": "error", "error": str(exc)}).decode())

    async def websocket_close(self, ws: WebSocket, code: int, reason: str, was_clean: bool) -> None:
        """Nothing to clean up: the runtime forgets the socket, and its
        patterns went with its attachment."""

    # ---- HTTP ----

    async def fetch(self, request: Request) -> Response:
        # /<prefix>/<name>/<rest...>: the worker routes /agents/<name>/..., the
        # server's default routing /AGENTS/<name>/...; both land here.
        parts = request.path.strip("/").split("/")
        name = urllib.parse.unquote(parts[1]) if len(parts) > 1 else None
        rest = parts[2:]
        method = request.method
        try:
            await self._identity(name)
            q = _query(request)
            if not rest:
                if method == "GET":
                    return Response.json(await self.state())
            elif rest == ["ws"]:
                return _subscribe_socket(self.ctx, request, "subscriber")
            elif rest == ["config"] and method == "PUT":
                return Response.json(await self.configure(_body(request)))
            elif rest == ["config"] and method == "GET":
                return Response.json(await self._config())
            elif rest == ["prompt"] and method == "POST":
                data = _body(request)
                return Response.json(await self.prompt(data.get("message", ""), data.get("from")))
            elif rest == ["messages"] and method == "GET":
                return Response.json(self.messages(_limit(q, 50)))
            elif rest == ["memory"] and method == "POST":
                data = _body(request)
                return Response.json(await self.remember(data.get("text", ""), data.get("key"), data.get("tags")))
            elif rest == ["memory"] and method == "GET":
                if "q" in q:
                    return Response.json(self.search(q["q"], _limit(q, 10)))
                return Response.json(self.memories(_limit(q, 100)))
            elif len(rest) == 2 and rest[0] == "memory" and method == "DELETE":
                gone = await self.forget(urllib.parse.unquote(rest[1]))
                return Response.json({"deleted": gone}, status=200 if gone else 404)
            elif rest == ["inbox"] and method == "POST":
                data = _body(request)
                sender, text = data.get("from"), data.get("body")
                if not isinstance(sender, str) or not isinstance(text, str):
                    raise _BadRequest('an inbox message is {"from": str, "body": str}')
                msg_id = await self.receive(sender, text, "fetch", bool(data.get("reply")))
                return Response.json({"id": msg_id})
            elif rest == ["inbox"] and method == "GET":
                return Response.json(self.inbox(q.get("status"), _limit(q, 100)))
            elif rest == ["send"] and method == "POST":
                data = _body(request)
                to, text = data.get("to"), data.get("body")
                if not isinstance(to, str) or not isinstance(text, str):
                    raise _BadRequest('send takes {"to": str, "body": str, "via"?: "rpc"|"fetch"}')
                return Response.json(await self.send(to, text, data.get("via", "rpc"), bool(data.get("reply"))))
            elif rest == ["loop", "start"] and method == "POST":
                return Response.json(await self.start(_body(request).get("interval")))
            elif rest == ["loop", "stop"] and method == "POST":
                return Response.json(await self.stop())
            elif rest == ["schedules"] and method == "POST":
                data = _body(request)
                note = str(data.get("note", ""))
                if "cron" in data:
                    sid = await self.remind_at(note, cron=str(data["cron"]))
                elif "in" in data:
                    sid = await self.remind_at(note, delay=float(data["in"]))
                else:
                    raise _BadRequest('a schedule needs "in" (seconds) or "cron"')
                return Response.json({"id": sid})
            elif rest == ["schedules"] and method == "GET":
                return Response.json(await self.schedules())
            elif len(rest) == 2 and rest[0] == "schedules" and method == "DELETE":
                gone = await self.unschedule(urllib.parse.unquote(rest[1]))
                return Response.json({"cancelled": gone}, status=200 if gone else 404)
            else:
                return _error(404, f"no route for {method} {request.path}")
            return _error(405, f"{method} is not allowed on {request.path}")
        except (_BadRequest, ValueError, TypeError) as exc:
            return _error(400, str(exc))
        except ThinkError as exc:
            return _error(502, str(exc))


def _interval(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"a loop interval is a positive number of seconds, got {value!r}")
    return float(value)


def _limit(q: dict[str, str], default: int) -> int:
    try:
        return max(1, min(int(q.get("limit", default)), 1000))
    except ValueError:
        raise _BadRequest("limit must be an integer") from None


def _fts_query(text: str) -> str:
    """Free text to an FTS5 query: any of the words (quoted, so that user input
    is never parsed as FTS5 syntax), with a prefix match on the last one."""
    words = re.findall(r"\w+", text.lower())[:16]
    if not words:
        return ""
    # The last word also as a prefix (search as you type). A prefix term is not
    # stemmed, hence the plain term beside it.
    terms = [f'"{w}"' for w in words] + [f'"{words[-1]}"*']
    return " OR ".join(terms)


def _schedule_dict(schedule: Any) -> dict[str, Any]:
    if isinstance(schedule, dict):
        return schedule
    fields = getattr(schedule, "__dataclass_fields__", None)
    if fields is not None:
        return {name: getattr(schedule, name) for name in fields}
    return {"schedule": repr(schedule)}


async def _relay_publish(relay: Any, event: dict[str, Any]) -> None:
    try:
        await relay.publish(event)
    except DotrioError:
        pass  # a full relay drops the event; subscribers of the agent itself still got it


# ---- the relay --------------------------------------------------------------------------


class RelayDO(DurableObject):
    """A topic: agents publish events to it, subscribers (WebSockets with
    patterns) receive the matching ones. Keeps counters and the last events."""

    def __init__(self, ctx: DurableObjectState, env: Env) -> None:
        super().__init__(ctx, env)
        self.sql = ctx.storage.sql
        self.sql.exec("CREATE TABLE IF NOT EXISTS recent(id INTEGER PRIMARY KEY, event TEXT NOT NULL)")

    async def publish(self, event: dict[str, Any]) -> int:
        """Fan ``event`` out; returns how many subscribers got it."""
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ValueError('an event is a dict with a str "type"')
        sent = _fan_out(self.ctx.get_websockets("subscriber"), event)
        # A relay is a hot object: an append and an occasional trim cost far
        # less per event than rewriting a stored list of the last events.
        event_id = self.sql.exec(
            "INSERT INTO recent(event) VALUES(?) RETURNING id", orjson.dumps(event).decode()
        ).one()["id"]
        if event_id % RELAY_RECENT == 0:
            self.sql.exec("DELETE FROM recent WHERE id <= ?", event_id - RELAY_RECENT)
        stats = await self.ctx.storage.get("stats") or {"published": 0, "delivered": 0}
        stats["published"] += 1
        stats["delivered"] += sent
        await self.ctx.storage.put("stats", stats)
        return sent

    def recent_events(self, limit: int = RELAY_RECENT) -> list[dict[str, Any]]:
        rows = self.sql.exec("SELECT event FROM recent ORDER BY id DESC LIMIT ?", limit).raw()
        return [orjson.loads(text) for (text,) in reversed(list(rows))]

    async def stats(self) -> dict[str, Any]:
        stats = await self.ctx.storage.get("stats") or {"published": 0, "delivered": 0}
        return {**stats, "subscribers": len(self.ctx.get_websockets("subscriber"))}

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        try:
            op = orjson.loads(message)
            if not isinstance(op, dict) or not _handle_subscription_op(ws, op):
                raise ValueError("expected {\"op\": \"subscribe\"|\"unsubscribe\", \"patterns\": [...]}")
        except ValueError as exc:
            ws.send(orjson.dumps({"type": "error", "error": str(exc)}).decode())

    async def websocket_close(self, ws: WebSocket, code: int, reason: str, was_clean: bool) -> None:
        """Nothing to do: subscriptions live in the socket's attachment."""

    async def fetch(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        rest = parts[2:]
        try:
            if rest == ["ws"]:
                return _subscribe_socket(self.ctx, request, "subscriber")
            if rest == ["publish"] and request.method == "POST":
                data = _body(request)
                event = {"type": data.get("type"), "agent": data.get("agent"), "ts": now_ms(self.ctx),
                         "data": data.get("data")}
                return Response.json({"delivered": await self.publish(event)})
            if not rest and request.method == "GET":
                return Response.json({**await self.stats(), "recent": self.recent_events()})
        except (_BadRequest, ValueError) as exc:
            return _error(400, str(exc))
        return _error(404, f"no route for {request.method} {request.path}")


# ---- the worker entry -------------------------------------------------------------------


class Worker(WorkerEntrypoint):
    """Routes /agents/<name>/... to AgentDO and /relay/<topic>/... to RelayDO."""

    async def fetch(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        if len(parts) >= 2 and parts[1]:
            name = urllib.parse.unquote(parts[1])
            if parts[0] == "agents":
                return await self.env.AGENTS.get_by_name(name).fetch(request)
            if parts[0] == "relay":
                return await self.env.RELAY.get_by_name(name).fetch(request)
        if request.path == "/":
            return Response.json({"app": "dotrio agents example", "routes": ROUTES})
        return _error(404, "try /agents/<name> or /relay/<topic>")
