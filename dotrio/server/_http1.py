"""HTTP/1.1 connection state on httptools (llhttp), and response serialization.

Sans-IO: ``HTTP1Parser.feed(data)`` runs llhttp over the bytes and leaves
complete requests (and at most one terminal error) in ``events``; the caller
answers them in order. Nothing here awaits, so the front end can parse a whole
pipelined burst in one call and keep the per-request work to a few callbacks
that append to lists.
"""

from __future__ import annotations

import base64
import binascii
from collections import deque
from http import HTTPStatus

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from .._http import Request, Response, header_items, headers_from_raw, trusted_request
from ._limits import BodyBudget, ServerLimits

# The most one receive can bring; the raw header-size bound allows for it.
RECV_SIZE = 64 * 1024

STATUS_LINES: dict[int, bytes] = {
    int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode("ascii") for s in HTTPStatus
}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        # An empty reason phrase is allowed (RFC 9112 section 4).
        line = b"HTTP/1.1 %d \r\n" % status
    return line


class ProtocolFailure:
    """A request the server answers itself (status + short reason), then closes."""

    __slots__ = ("status", "reason", "headers")

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers

    def __repr__(self) -> str:
        return f"<ProtocolFailure {self.status} {self.reason!r}>"


class WSOffer:
    """What a valid WebSocket upgrade request offered."""

    __slots__ = ("key", "protocols")

    def __init__(self, key: bytes, protocols: list[str]) -> None:
        self.key = key
        self.protocols = protocols


# Over the server's max_buffered_bodies: the client may retry soon.
_BUSY = ProtocolFailure(503, "server busy: too many request bodies in memory", (("retry-after", "1"),))


class _Reject(Exception):
    """Raised inside a parser callback to stop llhttp; the status is kept on the parser."""


# A parsed request waiting for its answer: (request, keep_alive, is_head, ws)
# where keep_alive is 0 (close), 1 (HTTP/1.1 keep-alive) or 2 (HTTP/1.0 keep-alive),
# and ws is None (not an upgrade attempt), a WSOffer (valid) or a
# ProtocolFailure (an invalid attempt, answered without calling the handler).
Pending = tuple[Request, int, bool, "WSOffer | ProtocolFailure | None"]

# Bytes allowed in a Host header (RFC 3986 reg-name / IP literal, plus port).
HOST_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:[]%"


def _parse_ws_offer(method: bytes, version: str, headers: list[tuple[bytes, bytes]]) -> WSOffer | ProtocolFailure:
    """RFC 6455 section 4.2.1 checks on a request that asked for ``Upgrade: websocket``."""
    connection_tokens: list[bytes] = []
    key: bytes | None = None
    ws_version: bytes | None = None
    protocols: list[str] = []
    for name, value in headers:
        n = name.lower()
        if n == b"connection":
            connection_tokens.extend(t.strip().lower() for t in value.split(b","))
        elif n == b"sec-websocket-key":
            if key is not None:
                return ProtocolFailure(400, "more than one Sec-WebSocket-Key")
            key = value.strip()
        elif n == b"sec-websocket-version":
            ws_version = value.strip()
        elif n == b"sec-websocket-protocol":
            protocols.extend(p.strip().decode("latin-1") for p in value.split(b",") if p.strip())
    if method != b"GET":
        return ProtocolFailure(400, "WebSocket upgrade needs GET")
    if version != "1.1":
        return ProtocolFailure(400, "WebSocket upgrade needs HTTP/1.1")
    if b"upgrade" not in connection_tokens:
        return ProtocolFailure(400, "WebSocket upgrade needs Connection: upgrade")
    if ws_version != b"13":
        return ProtocolFailure(426, "unsupported Sec-WebSocket-Version", (("sec-websocket-version", "13"),))
    if key is None:
        return ProtocolFailure(400, "missing Sec-WebSocket-Key")
    try:
        raw_key = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw_key = b""
    if len(raw_key) != 16:
        return ProtocolFailure(400, "bad Sec-WebSocket-Key")
    return WSOffer(key, protocols)


def smuggling(headers: list[tuple[bytes, bytes]]) -> bool:
    """Content-Length and Transfer-Encoding together: the two framings
    disagree about where the body ends (RFC 9112 section 6.1)."""
    length = chunked = False
    for name, _ in headers:
        name = name.lower()
        if name == b"content-length":
            length = True
        elif name == b"transfer-encoding":
            chunked = True
    return length and chunked


def check_head(target: bytes, headers: list[tuple[bytes, bytes]]) -> ProtocolFailure | None:
    """This parser's checks on an HTTP/1.x request head, for other parsers
    (hypercorn's): no request smuggling, at most one Host and a valid one, a
    path or absolute-form target with a valid authority."""
    if smuggling(headers):
        return ProtocolFailure(400, "Content-Length with Transfer-Encoding")
    host = None
    for name, value in headers:
        if name.lower() == b"host":
            if host is not None:
                return ProtocolFailure(400, "more than one Host header")
            host = value
    if target[:1] != b"/":
        lower = target[:8].lower()
        if not (lower.startswith(b"http://") or lower.startswith(b"https://")):
            return ProtocolFailure(400, "unsupported request target")
        rest = target.split(b"://", 1)[1]
        cut = rest.find(b"/")
        authority = rest if cut < 0 else rest[:cut]
        if authority.translate(None, HOST_CHARS):
            return ProtocolFailure(400, "bad Host header")
    if host and host.translate(None, HOST_CHARS):
        return ProtocolFailure(400, "bad Host header")
    return None


class HTTP1Parser:
    """Request parsing state of one connection; see the module docstring.

    After ``feed``: ``events`` holds requests to answer in order, possibly ending
    with a ``ProtocolFailure`` (after which nothing more is parsed);
    ``in_message``/``headers_done`` tell where the next request stands (for the
    timeouts); ``need_continue`` is true when that request asked for
    ``100 Continue`` and has not sent its body; after an upgrade request,
    ``upgraded`` is true and ``upgrade_tail`` holds the bytes that followed it.
    """

    __slots__ = (
        "_parser", "_limits", "_prefix", "_default_host", "events", "failed",
        "in_message", "headers_done", "need_continue", "upgraded", "upgrade_tail",
        "_headers", "_body", "_body_len", "_hdr_bytes", "_raw_hdr",
        "_max_header_bytes", "_max_header_count", "_max_body",
        "_reject", "_keep_alive", "_method", "_host", "_ws", "_target",
        "_budget", "held", "_chunks", "_raw_body",
    )

    def __init__(
        self, limits: ServerLimits, default_host: str, scheme: str = "http", budget: BodyBudget | None = None
    ) -> None:
        self._limits = limits
        # Body bytes charged to the server's budget and not yet released.
        self._budget = budget
        self.held = 0
        self._chunks = -1  # not a chunked body
        self._raw_body = 0
        self._prefix = (scheme + "://").encode("ascii")
        self._default_host = default_host.encode("latin-1")
        self.events: deque[Pending | ProtocolFailure] = deque()
        self.failed = False
        self.in_message = False
        self.headers_done = False
        self.need_continue = False
        self.upgraded = False
        self.upgrade_tail = b""
        self._reject: ProtocolFailure | None = None
        self._max_header_bytes = limits.max_header_bytes
        self._max_header_count = limits.max_header_count
        self._max_body = limits.max_request_body
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_len = 0
        self._hdr_bytes = 0
        self._raw_hdr = 0
        self._keep_alive = 1
        self._method = b"GET"
        self._host: bytes | None = None
        self._ws: WSOffer | ProtocolFailure | None = None
        self._target = b""
        self._parser = HttpRequestParser(self)

    # -- driving -----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self.failed or self.upgraded:
            return
        in_body = self.in_message and self.headers_done
        if in_body:
            self._raw_body += len(data)
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self.upgraded = True
            self.upgrade_tail = data[exc.args[0]:]
            return
        except HttpParserError as exc:
            reject = self._reject
            if reject is None:
                reject = ProtocolFailure(400, _short_reason(exc))
            self._fail(reject)
            return
        if self.in_message and not self.headers_done:
            # httptools gathers a header line internally and calls on_header only
            # once it is complete, so a single endless line escapes the exact
            # count; this raw count over-counts by at most the receive that began
            # the message, hence the slack.
            self._raw_hdr += len(data)
            if self._raw_hdr > self._limits.max_header_bytes + RECV_SIZE:
                self._fail(ProtocolFailure(431, "request headers too large"))
        elif in_body and self._chunks >= 0 and self.in_message:
            # llhttp skips chunk extensions without a callback or a limit: what
            # a chunked body sent beyond its data and framing (up to 24 bytes a
            # chunk) is extensions (and trailers), held to the header limit.
            if self._raw_body - self._body_len - 24 * (self._chunks + 1) > self._max_header_bytes:
                self._fail(ProtocolFailure(413, "chunk extensions too large"))

    def release(self, n: int) -> None:
        """The request whose body had ``n`` bytes was answered: give them back."""
        n = min(n, self.held)
        self.held -= n
        if self._budget is not None:
            self._budget.release(n)

    def release_all(self) -> None:
        """The connection is done: give back every body byte it still held."""
        self.release(self.held)

    def eof(self) -> None:
        """The peer closed its side: a half-received request is an error."""
        if self.in_message and not self.failed:
            self._fail(ProtocolFailure(400, "incomplete request"))

    def restart_after_upgrade(self) -> bytes:
        """The upgrade was declined and the connection goes on: a fresh parser.

        Returns the bytes that followed the upgrade request, to feed again.
        """
        tail = self.upgrade_tail
        self.upgraded = False
        self.upgrade_tail = b""
        self._parser = HttpRequestParser(self)
        return tail

    def _fail(self, failure: ProtocolFailure) -> None:
        self.failed = True
        self.in_message = False
        self.need_continue = False
        self.events.append(failure)

    # -- llhttp callbacks --------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = True
        self.headers_done = False
        self._target = b""
        self._headers = []
        self._body = []
        self._body_len = 0
        self._hdr_bytes = 0
        self._raw_hdr = 0
        self._chunks = -1  # not a chunked body
        self._raw_body = 0

    def on_url(self, url: bytes) -> None:
        # llhttp may hand the URL over in pieces (one per receive).
        self._target += url
        self._hdr_bytes += len(url)
        if self._hdr_bytes > self._max_header_bytes:
            self._reject = ProtocolFailure(414, "request target too long")
            raise _Reject

    def on_header(self, name: bytes, value: bytes) -> None:
        self._hdr_bytes += len(name) + len(value) + 4
        if self.headers_done:
            # Trailer fields of a chunked body: counted, not kept.
            if self._hdr_bytes > self._max_header_bytes:
                self._reject = ProtocolFailure(431, "trailers too large")
                raise _Reject
            return
        headers = self._headers
        headers.append((name, value))
        if self._hdr_bytes > self._max_header_bytes or len(headers) > self._max_header_count:
            self._reject = ProtocolFailure(431, "request headers too large")
            raise _Reject

    def on_headers_complete(self) -> None:
        self.headers_done = True
        parser = self._parser
        method = parser.get_method()
        self._method = method
        host = None
        clen = None
        expect = None
        upgrade = None
        connection = None
        for name, value in self._headers:
            n = name.lower()
            if n == b"host":
                if host is not None:
                    self._reject = ProtocolFailure(400, "more than one Host header")
                    raise _Reject
                host = value
            elif n == b"content-length":
                clen = value
            elif n == b"connection":
                connection = value
            elif n == b"expect":
                expect = value
            elif n == b"upgrade":
                upgrade = value
            elif n == b"transfer-encoding":
                self._chunks = 0
        # The version costs a string format; most requests never need it.
        version = None
        if parser.should_keep_alive():
            if connection is not None and b"keep-alive" in connection.lower():
                version = parser.get_http_version()
            # 0: close after; 1: keep-alive (HTTP/1.1); 2: keep-alive an
            # HTTP/1.0 client asked for, which the response must confirm.
            self._keep_alive = 2 if version == "1.0" else 1
        else:
            self._keep_alive = 0
        if host is None:
            version = version or parser.get_http_version()
            if version != "1.0":
                self._reject = ProtocolFailure(400, "missing Host header")
                raise _Reject
            host = self._default_host
        elif not host:
            host = self._default_host
        elif host.translate(None, HOST_CHARS):
            self._reject = ProtocolFailure(400, "bad Host header")
            raise _Reject
        self._host = host
        target = self._target
        if target[:1] != b"/":
            if method == b"CONNECT":
                self._reject = ProtocolFailure(501, "CONNECT is not supported")
                raise _Reject
            lower = target[:8].lower()
            if not (lower.startswith(b"http://") or lower.startswith(b"https://")):
                self._reject = ProtocolFailure(400, "unsupported request target")
                raise _Reject
        if clen is not None and int(clen) > self._max_body:
            # Answered before the body is read, even with Expect: 100-continue.
            self._reject = ProtocolFailure(413, "request body too large")
            raise _Reject
        budget = self._budget
        if clen is not None and budget is not None and budget.used + int(clen) > budget.limit:
            self._reject = _BUSY
            raise _Reject
        if expect is not None:
            if expect.strip().lower() != b"100-continue":
                self._reject = ProtocolFailure(417, "unsupported Expect")
                raise _Reject
            version = version or parser.get_http_version()
            if version != "1.0":
                self.need_continue = True
        if upgrade is not None and b"websocket" in upgrade.lower():
            self._ws = _parse_ws_offer(method, version or parser.get_http_version(), self._headers)
        else:
            self._ws = None

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        self.need_continue = False
        self._body.append(body)
        n = len(body)
        self._body_len += n
        if self._body_len > self._max_body:
            self._reject = ProtocolFailure(413, "request body too large")
            raise _Reject
        budget = self._budget
        if budget is not None:
            self.held += n
            if not budget.charge(n):
                self._reject = _BUSY
                raise _Reject

    def on_message_complete(self) -> None:
        self.in_message = False
        self.need_continue = False
        body_parts = self._body
        if not body_parts:
            body = b""
        elif len(body_parts) == 1:
            body = body_parts[0]
        else:
            body = b"".join(body_parts)
        target = self._target
        if target[:1] == b"/":
            url = (self._prefix + self._host + target).decode("latin-1")  # type: ignore[operator]
        else:
            url = target.decode("latin-1")
        method = self._method
        ws = self._ws
        request = trusted_request(
            url,
            method.decode("ascii"),
            headers_from_raw(self._headers),
            body,
            ws_upgrade=ws is not None and ws.__class__ is WSOffer,
        )
        self.events.append((request, self._keep_alive, method == b"HEAD", ws))


def _short_reason(exc: HttpParserError) -> str:
    text = str(exc) or type(exc).__name__
    # llhttp reasons look like "Invalid method encountered"; keep them short and
    # on one line, they go into a response body.
    text = text.replace("\r", " ").replace("\n", " ")
    return text[:100]


# -- responses ---------------------------------------------------------------

# Headers the server writes itself; a handler's values for them are replaced.
_MANAGED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "date"})
_NO_BODY_STATUSES = frozenset({204, 304})


def render_response(
    response: Response, *, head: bool, keep_alive: bool, date_line: bytes, http10_keep_alive: bool = False
) -> tuple[bytes, bool]:
    """The bytes of one response and whether the connection stays open after it.

    ``date_line`` is the cached ``date: ...\\r\\n``. A handler's
    ``Connection: close`` is honoured; Content-Length is always computed.
    """
    status = response.status
    line = STATUS_LINES.get(status) or status_line(status)
    items = header_items(response.headers)  # trusted: Headers validated them on the way in
    extra = b""
    if items:
        parts = []
        for name, value in items:
            if name in _MANAGED:
                if name == "connection":
                    if "close" in value.lower():
                        keep_alive = False
                elif name == "date":
                    date_line = b""
                    parts.append(f"date: {value}\r\n")
                continue
            parts.append(f"{name}: {value}\r\n")
        text = "".join(parts)
        try:
            extra = text.encode("latin-1")
        except UnicodeEncodeError:
            extra = text.encode("utf-8")
    body = response.body
    if status < 200 or status in _NO_BODY_STATUSES:
        length = b""
        body = b""
    else:
        length = b"content-length: %d\r\n" % len(body)
        if head:
            body = b""
    if not keep_alive:
        conn = b"connection: close\r\n\r\n"
    elif http10_keep_alive:
        conn = b"connection: keep-alive\r\n\r\n"
    else:
        conn = b"\r\n"
    return line + extra + date_line + length + conn + body, keep_alive


def render_failure(failure: ProtocolFailure, date_line: bytes) -> bytes:
    """A short plain-text error response that closes the connection."""
    body = failure.reason.encode("utf-8", "replace") + b"\n"
    extra = "".join(f"{n}: {v}\r\n" for n, v in failure.headers).encode("latin-1")
    return (
        status_line(failure.status)
        + extra
        + b"content-type: text/plain; charset=utf-8\r\n"
        + date_line
        + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        + body
    )


def render_simple(status: int, reason: str, date_line: bytes, *, keep_alive: bool, head: bool = False) -> bytes:
    """A short plain-text response (e.g. a 500) that may keep the connection."""
    body = reason.encode("utf-8") + b"\n"
    return (
        status_line(status)
        + b"content-type: text/plain; charset=utf-8\r\n"
        + date_line
        + b"content-length: %d\r\n" % len(body)
        + (b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
        + (b"" if head else body)
    )
