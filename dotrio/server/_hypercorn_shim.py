"""The one place dotrio reaches into hypercorn's internals:
exact WebSocket close codes under ``--server hypercorn``.

hypercorn (0.16 to 0.18) tells an ASGI app only 1000 or 1006 when the client
closes, never the reason, and drops the connection on a bad frame without a
close frame. :class:`DotrioWSStream` (built by :func:`_ws_stream_class`)
subclasses hypercorn's ``WSStream`` and overrides ``handle`` and the private
``_handle_events``: it keeps the peer's close code and reason from wsproto's
``CloseConnection`` event and passes them in ``websocket.disconnect`` as
``code`` and ``reason`` (the ASGI 2.3+ key), plus ``dotrio.clean`` and
``dotrio.error`` for what ASGI has no words for, and sends the close frame
(1002/1007/1009) RFC 6455 asks for before dropping a misbehaving peer.

hypercorn has no per-app or per-config way to choose its stream class: its
HTTP/1.1 and HTTP/2 protocols build ``WSStream`` from their module globals.
So those two globals are replaced, once, by a factory that builds the
subclass only for a ``Config`` passed to :func:`enable_close_codes`; every
other hypercorn server in the process gets hypercorn's own ``WSStream``,
unchanged.

The hypercorn versions this was checked against are ``TESTED_HYPERCORN``
(0.18 runs in the test suite; 0.16 and 0.17 have the same ``ws_stream`` code
paths). Outside that range, or if the internals are not the shape listed in
:func:`shape_problems`, nothing is replaced, a warning is logged once, and
close codes fall back to hypercorn's 1000/1006. ``tests/test_private_api_shims.py``
fails when a hypercorn upgrade changes any of this.
"""

from __future__ import annotations

import inspect
import logging
import re
import weakref
from importlib import metadata
from typing import Any

__all__ = [
    "TESTED_HYPERCORN", "enable_close_codes", "enable_strict_http1", "hypercorn_version", "shape_problems",
    "h11_shape_problems",
]

#: hypercorn versions (major, minor), lowest and highest included, whose
#: internals this module was checked against.
TESTED_HYPERCORN = ((0, 16), (0, 18))

log = logging.getLogger("dotrio.server")

# The configs whose WebSockets get DotrioWSStream.
_enabled: weakref.WeakSet[Any] = weakref.WeakSet()
# None: not tried yet; else whether the factory is in place.
_installed: bool | None = None
_OURS = "_dotrio_ws_stream_factory"


def hypercorn_version() -> tuple[int, int]:
    """The installed hypercorn's (major, minor)."""
    match = re.match(r"(\d+)\.(\d+)", metadata.version("hypercorn"))
    if match is None:
        return (0, 0)
    return (int(match.group(1)), int(match.group(2)))


def shape_problems() -> list[str]:
    """What the subclass needs from hypercorn and does not find (empty when
    all is in place)."""
    import hypercorn.protocol.h2 as h2_module
    import hypercorn.protocol.h11 as h11_module
    from hypercorn.protocol import ws_stream

    problems = []
    base = getattr(ws_stream, "WSStream", None)
    if base is None:
        return ["hypercorn.protocol.ws_stream.WSStream is missing"]
    for name in ("handle", "_handle_events", "_send_wsproto_event", "app_send"):
        if not callable(getattr(base, name, None)):
            problems.append(f"WSStream.{name} is missing")
    if not hasattr(ws_stream, "FrameTooLargeError"):
        problems.append("hypercorn.protocol.ws_stream.FrameTooLargeError is missing")
    params = list(inspect.signature(base.__init__).parameters)
    if params[:3] != ["self", "app", "config"]:
        problems.append(f"WSStream() takes {params[1:3]} first, not app, config")
    for module in (h11_module, h2_module):
        current = getattr(module, "WSStream", None)
        if current is not base and getattr(current, _OURS, False) is not True:
            problems.append(f"{module.__name__}.WSStream is not hypercorn's WSStream")
    return problems


def _ws_stream_class() -> type:
    """hypercorn's WSStream, keeping the peer's close code and reason."""
    from hypercorn.protocol import ws_stream
    from hypercorn.protocol.events import StreamClosed
    from wsproto.connection import ConnectionState
    from wsproto.events import CloseConnection, Message, Ping

    class DotrioWSStream(ws_stream.WSStream):
        """hypercorn's WSStream, keeping the peer's close code and reason."""

        _dotrio_close: tuple[int, str, bool, str | None] | None = None

        async def handle(self, event: Any) -> None:
            if isinstance(event, StreamClosed) and not self.closed:
                self.closed = True
                if self.app_put is not None:
                    code, reason, clean, error = self._dotrio_close or (1006, "", False, None)
                    await self.app_put({
                        "type": "websocket.disconnect", "code": code, "reason": reason,
                        "dotrio.clean": clean, "dotrio.error": error,
                    })
                return
            await super().handle(event)

        async def _dotrio_fail(self, code: int, reason: str) -> None:
            self._dotrio_close = (code, reason, False, reason or str(code))
            await self._send_wsproto_event(CloseConnection(code=code, reason=reason))
            await self.send(StreamClosed(stream_id=self.stream_id))

        async def _handle_events(self) -> None:
            for event in self.connection.events():
                if isinstance(event, Message):
                    if self._dotrio_close is not None:
                        continue
                    try:
                        self.buffer.extend(event)
                    except ws_stream.FrameTooLargeError:
                        self.buffer.clear()
                        await self._dotrio_fail(1009, "message too big")
                        break
                    if event.message_finished:
                        await self.app_put(self.buffer.to_message())  # type: ignore[misc]
                        self.buffer.clear()
                elif isinstance(event, Ping):
                    await self._send_wsproto_event(event.response())
                elif isinstance(event, CloseConnection):
                    if self.connection.state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
                        # wsproto reports an unparseable frame this way, state unchanged.
                        await self._dotrio_fail(int(event.code), event.reason or "")
                        break
                    if self._dotrio_close is None:
                        self._dotrio_close = (int(event.code), event.reason or "", True, None)
                    if self.connection.state == ConnectionState.REMOTE_CLOSING:
                        await self._send_wsproto_event(event.response())
                    await self.send(StreamClosed(stream_id=self.stream_id))
                    break

    return DotrioWSStream


def _install() -> bool:
    global _installed
    if _installed is not None:
        return _installed
    import hypercorn.protocol.h2 as h2_module
    import hypercorn.protocol.h11 as h11_module
    from hypercorn.protocol import ws_stream

    problems = shape_problems()
    version = hypercorn_version()
    low, high = TESTED_HYPERCORN
    if not low <= version <= high:
        problems.append(
            f"hypercorn {metadata.version('hypercorn')} is outside the versions dotrio was checked "
            f"against ({low[0]}.{low[1]} to {high[0]}.{high[1]})"
        )
    if problems:
        log.warning(
            "WebSocket close codes and reasons from clients will reach handlers as 1000/1006 under "
            "hypercorn: %s",
            "; ".join(problems),
        )
        _installed = False
        return False
    base = ws_stream.WSStream
    ours = _ws_stream_class()

    def factory(app: Any, config: Any, *args: Any, **kwargs: Any) -> Any:
        cls = ours if config in _enabled else base
        return cls(app, config, *args, **kwargs)

    setattr(factory, _OURS, True)
    factory.dotrio_class = ours  # type: ignore[attr-defined]
    setattr(h11_module, "WSStream", factory)  # noqa: B010 - replacing a module global, on purpose
    setattr(h2_module, "WSStream", factory)  # noqa: B010
    _installed = True
    return True


def enable_close_codes(config: Any) -> bool:
    """Make WebSockets served with this hypercorn ``Config`` report the
    peer's real close code and reason (idempotent). Returns whether that is
    in place; if not, a warning saying why was logged."""
    if not _install():
        return False
    _enabled.add(config)
    return True


# -- strict HTTP/1.1 -----------------------------------------------------------
#
# hypercorn (h11) serves a request with both Content-Length and
# Transfer-Encoding (going by chunked, so a request hidden in the body runs)
# and passes any Host through. The app can refuse such a request, but an app
# answering ``Connection: close`` while a pipelined request waits races
# hypercorn's own close (two tasks in ``send_eof``: BusyResourceError, the
# answer lost). So the refusal happens in the protocol, in its one reading
# task, before any stream or app sees the request: ``H11Protocol`` (the
# module global ``ProtocolWrapper`` builds) is replaced, once, by a factory
# that builds a subclass overriding ``_create_stream`` for the configs passed
# to :func:`enable_strict_http1`, hypercorn's own class for every other.

_strict: weakref.WeakSet[Any] = weakref.WeakSet()
_h11_installed: bool | None = None
_OURS_H11 = "_dotrio_h11_protocol_factory"


def h11_shape_problems() -> list[str]:
    """What the strict HTTP/1.1 subclass needs from hypercorn and does not find."""
    import hypercorn.protocol as protocol_module
    import hypercorn.protocol.h11 as h11_module

    base = getattr(h11_module, "H11Protocol", None)
    if base is None:
        return ["hypercorn.protocol.h11.H11Protocol is missing"]
    problems = []
    for name in ("_create_stream", "_send_h11_event"):
        if not callable(getattr(base, name, None)):
            problems.append(f"H11Protocol.{name} is missing")
    params = list(inspect.signature(base.__init__).parameters)
    if params[:3] != ["self", "app", "config"]:
        problems.append(f"H11Protocol() takes {params[1:3]} first, not app, config")
    current = getattr(protocol_module, "H11Protocol", None)
    if current is not base and getattr(current, _OURS_H11, False) is not True:
        problems.append("hypercorn.protocol.H11Protocol is not hypercorn's H11Protocol")
    return problems


def _h11_protocol_class() -> type:
    from http import HTTPStatus

    import h11
    from hypercorn.events import Closed
    from hypercorn.protocol.h11 import H11Protocol

    from ._http1 import check_head

    class DotrioH11Protocol(H11Protocol):
        """hypercorn's H11Protocol with the fast front end's request checks."""

        async def _create_stream(self, request: Any) -> None:
            failure = check_head(request.target, list(request.headers.raw_items()))
            if failure is None:
                await super()._create_stream(request)
                return
            body = failure.reason.encode("utf-8") + b"\n"
            await self._send_h11_event(h11.Response(
                status_code=failure.status,
                reason=HTTPStatus(failure.status).phrase.encode("ascii"),
                headers=[
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode("ascii")),
                    (b"connection", b"close"),
                    *self.config.response_headers("h11"),
                ],
            ))
            await self._send_h11_event(h11.Data(data=body))
            await self._send_h11_event(h11.EndOfMessage())
            await self.send(Closed())

    return DotrioH11Protocol


def _install_h11() -> bool:
    global _h11_installed
    if _h11_installed is not None:
        return _h11_installed
    import hypercorn.protocol as protocol_module

    problems = h11_shape_problems()
    version = hypercorn_version()
    low, high = TESTED_HYPERCORN
    if not low <= version <= high:
        problems.append(f"hypercorn {metadata.version('hypercorn')} is outside the versions dotrio was checked against")
    if problems:
        log.warning("hypercorn's HTTP/1.1 checks run in the app instead (a pipelined request after "
                    "a refused one may lose its answer): %s", "; ".join(problems))
        _h11_installed = False
        return False
    base = protocol_module.H11Protocol
    ours = _h11_protocol_class()

    def factory(app: Any, config: Any, *args: Any, **kwargs: Any) -> Any:
        cls = ours if config in _strict else base
        return cls(app, config, *args, **kwargs)

    setattr(factory, _OURS_H11, True)
    factory.dotrio_class = ours  # type: ignore[attr-defined]
    setattr(protocol_module, "H11Protocol", factory)  # noqa: B010 - replacing a module global, on purpose
    _h11_installed = True
    return True


def enable_strict_http1(config: Any) -> bool:
    """Make HTTP/1.1 served with this hypercorn ``Config`` refuse what the fast
    front end refuses (``dotrio.server._http1.check_head``: Content-Length
    with Transfer-Encoding, a bad or repeated Host, an unusable target) with
    400 and a close, before the app sees it (idempotent). Returns whether
    that is in place; if not, the app makes the same checks."""
    if not _install_h11():
        return False
    _strict.add(config)
    return True
