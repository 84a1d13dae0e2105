"""The canned responder (``python -m benchmarks._ceiling --port P``): the
cheapest server we can write, so that the load generator pointed at it shows
its own ceiling. Not a general server: it assumes what the suite's clients
send (requests without bodies; WebSocket frames masked with the zero key,
which the suite always uses) and answers every request with "hello" and
every frame with an unmasked copy.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import select
import signal
import socket

__all__ = ["main"]

_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _accept_key(request: bytes) -> bytes:
    for line in request.split(b"\r\n"):
        if line.lower().startswith(b"sec-websocket-key:"):
            key = line.split(b":", 1)[1].strip()
            return base64.b64encode(hashlib.sha1(key + _GUID).digest())
    return b""


def _echo_frames(buf: bytearray) -> tuple[bytes, int]:
    out = bytearray()
    pos = 0
    n = len(buf)
    while n - pos >= 6:
        b0, b1 = buf[pos], buf[pos + 1] & 0x7F
        if b1 < 126:
            hl, ln = 6, b1
        elif b1 == 126:
            hl, ln = 8, int.from_bytes(buf[pos + 2:pos + 4], "big")
        else:
            hl, ln = 14, int.from_bytes(buf[pos + 2:pos + 10], "big")
        if n - pos < hl + ln:
            break
        payload = buf[pos + hl:pos + hl + ln]
        if b0 & 0x0F == 8:
            out += b"\x88\x00"
        elif ln < 126:
            out += bytes((b0, ln)) + payload
        else:
            out += bytes((b0, 126)) + ln.to_bytes(2, "big") + payload
        pos += hl + ln
    return bytes(out), pos


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ws-size", type=int, default=32)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", args.port))
    lsock.listen(4096)
    lsock.setblocking(False)
    ep = select.epoll()
    ep.register(lsock.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    ws: dict[int, bytearray] = {}
    pending: dict[int, bytearray] = {}
    while True:
        for fd, _ in ep.poll():
            if fd == lsock.fileno():
                while True:
                    try:
                        c, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            c = conns[fd]
            try:
                data = c.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                conns.pop(fd).close()
                ws.pop(fd, None)
                pending.pop(fd, None)
                continue
            if fd in ws:
                buf = ws[fd]
                buf += data
                out, used = _echo_frames(buf)
                del buf[:used]
                if out:
                    c.send(out)
                continue
            buf = pending.setdefault(fd, bytearray())
            buf += data
            if buf.startswith(b"GET ") and b"upgrade: websocket" in bytes(buf).lower():
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    continue
                key = _accept_key(bytes(buf[:end]))
                c.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Accept: " + key + b"\r\n\r\n")
                ws[fd] = bytearray(buf[end + 4:])
                del pending[fd]
                continue
            count = buf.count(b"\r\n\r\n")
            if count:
                del buf[:buf.rindex(b"\r\n\r\n") + 4]
                c.send(_RESPONSE * count)


if __name__ == "__main__":
    main()
