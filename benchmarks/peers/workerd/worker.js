// The benchmark objects for Cloudflare's workerd: the same program as
// benchmarks/scenarios/app.py, so dotrio and workerd serve identical work.
// URL layout as dotrio's default routing: /<BINDING>/<name>/<rest>.
import { DurableObject } from "cloudflare:workers";

export class Counter extends DurableObject {
  async fetch(request) {
    const storage = this.ctx.storage;
    const n = ((await storage.get("n")) || 0) + 1;
    await storage.put("n", n);
    return new Response(String(n));
  }
}

export class SqlCounter extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec("CREATE TABLE IF NOT EXISTS counter(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)");
  }
  async fetch(request) {
    const rows = this.sql.exec("SELECT n FROM counter WHERE id = 1").toArray();
    const n = (rows.length ? rows[0].n : 0) + 1;
    this.sql.exec("INSERT OR REPLACE INTO counter(id, n) VALUES (1, ?)", n);
    return new Response(String(n));
  }
}

export class Echo extends DurableObject {
  async fetch(request) {
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1]);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }
  async webSocketMessage(ws, message) {
    ws.send(message);
  }
}

export class Room extends DurableObject {
  async fetch(request) {
    const pair = new WebSocketPair();
    const path = new URL(request.url).pathname.replace(/\/+$/, "");
    const role = path.endsWith("/pub") ? "pub" : "sub";
    this.ctx.acceptWebSocket(pair[1], [role]);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }
  async webSocketMessage(ws, message) {
    if (this.ctx.getTags(ws).includes("pub")) {
      for (const sub of this.ctx.getWebSockets("sub")) sub.send(message);
      ws.send(message);
    }
  }
}

export class AlarmProbe extends DurableObject {
  async fetch(request) {
    const storage = this.ctx.storage;
    const url = new URL(request.url);
    if (url.pathname.endsWith("/arm")) {
      const at = Number(url.searchParams.get("at"));
      await storage.put("due", at);
      await storage.setAlarm(at);
      return new Response("armed");
    }
    const fired = (await storage.get("fired")) || [];
    return Response.json({ due: (await storage.get("due")) ?? null, fired });
  }
  async alarm() {
    const now = Date.now();
    const storage = this.ctx.storage;
    const fired = (await storage.get("fired")) || [];
    fired.push(now);
    await storage.put("fired", fired);
  }
}

export default {
  async fetch(request, env) {
    const parts = new URL(request.url).pathname.split("/");
    const ns = env[parts[1]];
    const name = parts[2] ? decodeURIComponent(parts[2]) : "";
    if (!ns || !name || typeof ns.idFromName !== "function") {
      return new Response("not found", { status: 404 });
    }
    return ns.get(ns.idFromName(name)).fetch(request);
  },
};
