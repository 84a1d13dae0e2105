"""Memory per hibernated WebSocket (issue 6: <= 16 KB RSS each).

Starts ``dotrio serve`` on a throwaway app whose objects accept every socket
with the hibernation API (two tags and a small attachment each), opens N
WebSockets from a separate client process spread over R room objects, waits
until every object has hibernated (the health endpoint reports no live
objects), and reports the server's RSS growth per socket. A sample of sockets
then sends a message, which must wake the objects and be answered.

Baseline in the same run: the same N sockets held open on trio-websocket's own
server (``trio_websocket.serve_websocket``) doing nothing, the cheapest Trio
WebSocket server at hand.

    python benchmarks/bench_hibernation.py [--sockets 10000] [--rooms 100]

Only 127.0.0.1 is used; every step is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

APP = textwrap.dedent(
    """
    from dotrio import DurableObject, Response, WebSocketPair

    class Room(DurableObject):
        async def fetch(self, request):
            client, server = WebSocketPair()
            user = request.url.rsplit("user=", 1)[-1]
            self.ctx.accept_websocket(server, tags=["room", "user:" + user])
            server.serialize_attachment({"user": user, "joined": 1})
            return Response(status=101, web_socket=client)

        async def websocket_message(self, ws, message):
            ws.send(ws.deserialize_attachment()["user"] + ":" + message)
    """
)

CONFIG = textwrap.dedent(
    """
    name = "hibernation-bench"
    data_dir = ".dotrio"
    [server]
    max_connections = 20000
    [runtime]
    hibernation_timeout = 1
    idle_timeout = 70
    [[durable_objects.bindings]]
    name = "ROOM"
    class_name = "app:Room"
    """
)

BASELINE = textwrap.dedent(
    """
    import sys, trio
    from trio_websocket import serve_websocket

    async def handler(request):
        ws = await request.accept()
        try:
            while True:
                await ws.get_message()
        except Exception:
            pass

    async def main(port):
        await serve_websocket(handler, "127.0.0.1", port, ssl_context=None)

    trio.run(main, int(sys.argv[1]))
    """
)

# The client: a separate process holding raw sockets (a few hundred bytes each on
# its side), so that its memory and CPU don't mix with the server's.
CLIENT = textwrap.dedent(
    """
    import base64, os, socket, sys, time
    port, n, rooms, sample = (int(a) for a in sys.argv[1:5])
    socks = []
    def frame(text):
        data = text.encode()
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        return bytes([0x81, 0x80 | len(data)]) + mask + body
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        path = f"/ROOM/room{i % rooms}/ws?user=u{i}"
        s.sendall((f"GET {path} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nUpgrade: websocket\\r\\n"
                   f"Connection: Upgrade\\r\\nSec-WebSocket-Key: {key}\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n").encode())
        head = b""
        while b"\\r\\n\\r\\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit(f"connection {i} closed during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\\r\\n", 1)[0]:
            raise SystemExit(f"connection {i}: {head[:80]!r}")
        socks.append(s)
    print("connected", flush=True)
    line = sys.stdin.readline()
    answered = 0
    if sample:
        step = max(1, n // sample)
        picked = socks[::step][:sample]
        for s in picked:
            s.sendall(frame("hi"))
        for s in picked:
            data = s.recv(4096)
            if data and b":hi" in data:
                answered += 1
    print(f"answered {answered}", flush=True)
    sys.stdin.readline()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_dotrio/health", timeout=5) as r:
        return json.loads(r.read())


def live_objects(port: int) -> int:
    stats = health(port)
    runtime = stats.get("runtime", stats)
    return int(runtime.get("live_objects", -1))


def hold(port: int, server_pid: int, n: int, rooms: int, sample: int, settle: float, hibernate_check: bool) -> dict:
    before = rss_kib(server_pid)
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(port), str(n), str(rooms), str(sample)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert client.stdout is not None and client.stdin is not None
        t0 = time.monotonic()
        line = client.stdout.readline().strip()
        if line != "connected":
            raise RuntimeError(f"client failed: {line!r}")
        connect_s = time.monotonic() - t0
        time.sleep(settle)
        live = -1
        if hibernate_check:
            deadline = time.monotonic() + 30
            live = live_objects(port)
            while live and time.monotonic() < deadline:
                time.sleep(0.5)
                live = live_objects(port)
        after = rss_kib(server_pid)
        client.stdin.write("go\n")
        client.stdin.flush()
        answered = int(client.stdout.readline().split()[1])
        client.stdin.write("done\n")
        client.stdin.flush()
        client.wait(timeout=60)
    finally:
        client.kill()
    return {
        "sockets": n,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_socket": (after - before) * 1024 / n,
        "connect_s": connect_s,
        "live_objects_when_measured": live,
        "sample_answered": answered,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sockets", type=int, default=10_000)
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--sample", type=int, default=100)
    args = ap.parse_args()
    if args.sockets * 2 + 200 > 20_000:
        print(f"note: {args.sockets} sockets need ~{args.sockets} descriptors in each process")

    with tempfile.TemporaryDirectory(prefix="dotrio-hib-") as tmp:
        work = Path(tmp)
        (work / "app.py").write_text(APP)
        (work / "dotrio.toml").write_text(CONFIG)
        (work / "baseline.py").write_text(BASELINE)

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "dotrio", "serve", str(work / "dotrio.toml"), "--port", str(port)],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port, time.monotonic() + 30)
            # Warm up imports, the pool and the first activation before measuring.
            hold(port, server.pid, 10, 10, 0, 0.5, False)
            ours = hold(port, server.pid, args.sockets, args.rooms, args.sample, 2.5, True)
        finally:
            server.terminate()
            server.wait(timeout=60)

        bport = free_port()
        base = subprocess.Popen([sys.executable, str(work / "baseline.py"), str(bport)], cwd=work)
        try:
            wait_port(bport, time.monotonic() + 30)
            hold(bport, base.pid, 10, 10, 0, 0.5, False)
            baseline = hold(bport, base.pid, args.sockets, args.rooms, 0, 1.0, False)
        finally:
            base.kill()
            base.wait(timeout=30)

    print(f"hibernated WebSockets: {args.sockets} sockets over {args.rooms} room objects")
    print(
        f"  dotrio serve (hibernated, live objects when measured: {ours['live_objects_when_measured']}): "
        f"{ours['bytes_per_socket']:,.0f} B RSS per socket "
        f"({ours['rss_before_kib']:,} -> {ours['rss_after_kib']:,} KiB; connect {ours['connect_s']:.1f} s); "
        f"woken and answered after hibernation: {ours['sample_answered']}/{min(args.sample, args.sockets)}"
    )
    print(
        f"  trio-websocket serve_websocket, idle: {baseline['bytes_per_socket']:,.0f} B RSS per socket "
        f"({baseline['rss_before_kib']:,} -> {baseline['rss_after_kib']:,} KiB)"
    )
    ratio = ours["bytes_per_socket"] / baseline["bytes_per_socket"] if baseline["bytes_per_socket"] > 0 else float("nan")
    print(f"  ratio dotrio/trio-websocket: {ratio:.2f}  (target: <= 16,384 B per socket)")
    print(json.dumps({"dotrio": ours, "baseline": baseline, "ratio": ratio}))


if __name__ == "__main__":
    main()
