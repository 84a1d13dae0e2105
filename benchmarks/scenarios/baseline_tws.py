"""trio-websocket's own echo server: issue 6 measures dotrio's WebSocket echo
against it (``python -m benchmarks.scenarios.baseline_tws --port P``). Plain
HTTP requests get a 404 from trio-websocket's handshake, which is enough for
the suite's readiness probe."""

from __future__ import annotations

import argparse

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

__all__ = ["main"]


async def _echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        trio.run(lambda: serve_websocket(_echo, "127.0.0.1", args.port, ssl_context=None))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
