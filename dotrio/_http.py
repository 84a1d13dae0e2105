"""Request, Response and Headers: the values events carry in and out of objects.

Bodies are always read in full before a handler runs, so ``text()`` and
``json()`` are synchronous, as the API promises.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import parse_qsl

import orjson

if TYPE_CHECKING:
    from ._websocket import WebSocket

__all__ = [
    "Headers",
    "QueryParams",
    "Request",
    "Response",
    "HeadersInit",
    "headers_from_raw",
    "header_items",
    "trusted_request",
    "is_websocket_upgrade",
]

HeadersInit = Union["Headers", Mapping[str, str], Iterable[tuple[str, str]], None]


def _check_str(what: str, value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if not isinstance(value, str):
        raise TypeError(f"header {what} must be str, got {type(value).__name__}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {what} {value!r} contains a line break")
    return value


class Headers:
    """Case-insensitive, order-keeping, multi-valued HTTP headers."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, init: HeadersInit = None) -> None:
        # (lower-case name, value) pairs: lookups are linear but header lists are
        # short, and this keeps duplicates (Set-Cookie) and order exactly.
        self._raw: list[tuple[bytes, bytes]] | None = None
        self._decoded: list[tuple[str, str]] = []
        if init is None:
            return
        if isinstance(init, Headers):
            self._decoded = list(init._items)
            return
        pairs = init.items() if isinstance(init, Mapping) else init
        for name, value in pairs:
            self.append(name, value)

    @classmethod
    def _from_raw(cls, raw: list[tuple[bytes, bytes]]) -> Headers:
        """Trusted constructor for parsed wire headers (already validated).
        Decoding is deferred: many handlers never look at the headers."""
        h = cls.__new__(cls)
        h._raw = raw
        h._decoded = None  # type: ignore[assignment]
        return h

    @property
    def _items(self) -> list[tuple[str, str]]:
        decoded = self._decoded
        if decoded is None:
            raw = self._raw or []
            decoded = self._decoded = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in raw]
            self._raw = None
        return decoded

    @_items.setter
    def _items(self, value: list[tuple[str, str]]) -> None:
        self._decoded = value
        self._raw = None

    def append(self, name: str, value: str) -> None:
        """Add a header, keeping any others of the same name."""
        self._items.append((_check_str("name", name).lower(), _check_str("value", value)))

    def set(self, name: str, value: str) -> None:
        """Replace every header named ``name`` with one of value ``value``."""
        key = _check_str("name", name).lower()
        self._items = [(n, v) for n, v in self._items if n != key]
        self._items.append((key, _check_str("value", value)))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The values of ``name`` joined by ", " (as the Fetch API does), or default."""
        key = name.lower()
        found = [v for n, v in self._items if n == key]
        if not found:
            return default
        return found[0] if len(found) == 1 else ", ".join(found)

    def get_all(self, name: str) -> list[str]:
        """Every value of the headers named ``name``, in order."""
        key = name.lower()
        return [v for n, v in self._items if n == key]

    def delete(self, name: str) -> None:
        """Remove every header named ``name``."""
        key = name.lower()
        self._items = [(n, v) for n, v in self._items if n != key]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        self.delete(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower()
        return any(n == key for n, _ in self._items)

    def __iter__(self) -> Iterator[str]:
        seen: list[str] = []
        for n, _ in self._items:
            if n not in seen:
                seen.append(n)
        return iter(seen)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str]]:
        """The (lower-case name, value) pairs, in order, duplicates included."""
        return list(self._items)

    def keys(self) -> list[str]:
        """The distinct lower-case header names, in order."""
        return list(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return sorted(self._items) == sorted(other._items)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def _as_body(body: object) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise TypeError(f"body must be bytes or str, got {type(body).__name__}")


class QueryParams(Mapping[str, str]):
    """The parsed query string of a request: a read-only multidict.

    ``params["user"]`` and ``params.get("user")`` give the first value of a
    name (as ``URLSearchParams.get`` does), ``params.getlist("tag")`` every
    value in order, ``params.items(multi=True)`` every pair. Names and values
    are percent-decoded, ``+`` is a space, and a name without ``=`` has the
    value ``""``. ``str(params)`` is the raw query string.
    """

    __slots__ = ("_raw", "_pairs", "_first")

    def __init__(self, query_string: str = "") -> None:
        if not isinstance(query_string, str):
            raise TypeError(f"query_string must be str, got {type(query_string).__name__}")
        self._raw = query_string.removeprefix("?")
        self._pairs: list[tuple[str, str]] = parse_qsl(self._raw, keep_blank_values=True)
        first: dict[str, str] = {}
        for name, value in self._pairs:
            first.setdefault(name, value)
        self._first = first

    def __getitem__(self, name: str) -> str:
        return self._first[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def getlist(self, name: str) -> list[str]:
        """Every value of ``name``, in order (``[]`` if absent)."""
        return [v for n, v in self._pairs if n == name]

    def items(self, multi: bool = False) -> Any:
        """``(name, first value)`` pairs, or with ``multi=True`` every pair in order."""
        return list(self._pairs) if multi else self._first.items()

    def __str__(self) -> str:
        return self._raw

    def __repr__(self) -> str:
        return f"QueryParams({self._raw!r})"


class Request:
    """An HTTP request as an object sees it: the full original URL, body in full."""

    __slots__ = ("method", "url", "headers", "body", "_ws_upgrade", "_query")

    def __init__(
        self,
        url: str,
        method: str = "GET",
        headers: HeadersInit = None,
        body: bytes | str | None = b"",
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be str, got {type(url).__name__}")
        if not isinstance(method, str) or not method:
            raise TypeError(f"method must be a non-empty str, got {method!r}")
        self.url = url
        self.method = method.upper()
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = _as_body(body)
        # Set by a front end when this request asks for a WebSocket upgrade.
        self._ws_upgrade: Any = None
        self._query: QueryParams | None = None

    @classmethod
    def _trusted(cls, url: str, method: str, headers: Headers, body: bytes) -> Request:
        """Front ends' constructor: arguments already validated by the parser."""
        r = cls.__new__(cls)
        r.url = url
        r.method = method
        r.headers = headers
        r.body = body
        r._ws_upgrade = None
        r._query = None
        return r

    @property
    def path(self) -> str:
        """The path part of the URL (no query string)."""
        rest = self.url.split("://", 1)[-1]
        slash = rest.find("/")
        path = "/" if slash < 0 else rest[slash:]
        return path.split("?", 1)[0].split("#", 1)[0]

    @property
    def query_string(self) -> str:
        """The raw query string of the URL, without the ``?`` (``""`` if none)."""
        return self.url.split("?", 1)[1].split("#", 1)[0] if "?" in self.url else ""

    @property
    def query(self) -> QueryParams:
        """The parsed query parameters, as in ``request.query.get("user")``.

        A read-only multidict (a :class:`~dotrio.QueryParams`); the raw
        string is :attr:`query_string`."""
        parsed = self._query
        if parsed is None:
            parsed = self._query = QueryParams(self.query_string)
        return parsed

    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url} ({len(self.body)} bytes)>"


class _JsonDescriptor:
    """``Response.json`` is both a constructor (class) and a decoder (instance)."""

    def __get__(self, obj: Response | None, cls: type[Response]) -> Any:
        if obj is None:

            def make(value: Any, status: int = 200, headers: HeadersInit = None) -> Response:
                resp = cls(orjson.dumps(value), status=status, headers=headers)
                resp.headers.set("content-type", "application/json")
                return resp

            return make

        def decode() -> Any:
            return orjson.loads(obj.body)

        return decode


class Response:
    """An HTTP response; ``status=101`` with ``web_socket`` answers an upgrade."""

    __slots__ = ("status", "headers", "body", "web_socket")

    json = _JsonDescriptor()

    def __init__(
        self,
        body: bytes | str | None = b"",
        status: int = 200,
        headers: HeadersInit = None,
        web_socket: WebSocket | None = None,
    ) -> None:
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise ValueError(f"status must be an int from 100 to 599, got {status!r}")
        if status == 101 and web_socket is None:
            raise ValueError("a status 101 response needs web_socket= (the client end of a WebSocketPair)")
        self.status = status
        if isinstance(body, str):
            self.body = body.encode("utf-8")
            if headers is None:
                # The common case, built directly: Headers.set() validates what we know is valid.
                h = Headers.__new__(Headers)
                h._raw = None
                h._decoded = [("content-type", "text/plain; charset=utf-8")]
                self.headers = h
            else:
                self.headers = headers if isinstance(headers, Headers) else Headers(headers)
                if "content-type" not in self.headers:
                    self.headers.set("content-type", "text/plain; charset=utf-8")
        else:
            self.body = _as_body(body)
            self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.web_socket = web_socket

    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")

    @property
    def ok(self) -> bool:
        """True for a status from 200 to 299."""
        return 200 <= self.status < 300

    def __repr__(self) -> str:
        return f"<Response {self.status} ({len(self.body)} bytes)>"


# ---- the front ends' side (trusted constructors for parsed wire data) -----------------


def headers_from_raw(raw: list[tuple[bytes, bytes]]) -> Headers:
    """Headers from a parser's (name, value) byte pairs, already validated;
    decoding waits until a handler looks at them."""
    return Headers._from_raw(raw)


def header_items(headers: Headers) -> list[tuple[str, str]]:
    """The (lower-case name, value) pairs of ``headers`` (not a copy: read only)."""
    return headers._items


def trusted_request(url: str, method: str, headers: Headers, body: bytes, ws_upgrade: bool = False) -> Request:
    """A Request from a front end's parsed, already validated parts."""
    request = Request._trusted(url, method, headers, body)
    if ws_upgrade:
        request._ws_upgrade = True
    return request


def is_websocket_upgrade(request: Request) -> bool:
    """The request asks for a WebSocket upgrade (set by the front end)."""
    return bool(request._ws_upgrade)
