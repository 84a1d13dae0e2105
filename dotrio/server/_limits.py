"""Limits and timeouts shared by both front ends."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one server accepts from clients, and how long it waits for them.

    Timeouts are enforced by a sweep that runs about once a second, so each one
    fires up to ``sweep_interval`` late; that is the price of not arming a timer
    per request.
    """

    #: request line plus headers, in bytes; over it -> 431 (414 for the URL alone)
    max_header_bytes: int = 32 * 1024
    #: number of header lines; over it -> 431
    max_header_count: int = 128
    #: request body, in bytes; over it -> 413
    max_request_body: int = 32 * 1024 * 1024
    #: open connections; at the limit the server stops accepting (the kernel
    #: backlog holds the rest) instead of answering with an error, except for
    #: a small reserve (fast front end: 16) where /_dotrio/health is answered
    #: and other requests wait for a slot
    max_connections: int = 10_000
    #: listen() backlog
    backlog: int = 1024
    #: from the first byte of a request until its headers are complete -> 408;
    #: also how long a new connection may stay silent before its first request
    header_timeout: float = 10.0
    #: the longest a request body may make no progress -> 408
    body_timeout: float = 30.0
    #: the slowest a request body may arrive, in bytes/s, once ``body_timeout``
    #: has passed: a body is cut off with 408 when it has taken longer than
    #: ``body_timeout + received / min_body_rate`` (0 = no minimum rate)
    min_body_rate: int = 1024
    #: request bodies held in memory across all connections (being received
    #: or waiting for their response), in bytes; over it -> 503
    max_buffered_bodies: int = 256 * 1024 * 1024
    #: the longest a response write may make no progress -> close
    write_timeout: float = 30.0
    #: an idle keep-alive connection is closed after this
    keep_alive_timeout: float = 75.0
    #: one inbound WebSocket message (reassembled), in bytes; over it -> 1009
    ws_max_message_size: int = 1024 * 1024
    #: outbound bytes queued on one WebSocket, pongs and other control frames
    #: included; over it -> close 1008
    ws_send_buffer: int = 16 * 1024 * 1024
    #: how long to wait for the peer's answer to our close frame
    ws_close_timeout: float = 5.0
    #: graceful shutdown: how long in-flight work may take before it is cancelled
    shutdown_grace: float = 10.0
    #: how often timeouts are checked and the Date header is refreshed
    sweep_interval: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_header_count", "max_connections", "backlog",
                     "ws_max_message_size", "ws_send_buffer", "max_buffered_bodies"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ServerLimits.{name} must be a positive int, got {value!r}")
        if isinstance(self.min_body_rate, bool) or not isinstance(self.min_body_rate, int) or self.min_body_rate < 0:
            raise ValueError(f"ServerLimits.min_body_rate must be an int >= 0 (bytes/s), got {self.min_body_rate!r}")
        if not isinstance(self.max_request_body, int) or self.max_request_body < 0:
            raise ValueError(f"ServerLimits.max_request_body must be an int >= 0, got {self.max_request_body!r}")
        for name in ("header_timeout", "body_timeout", "write_timeout", "keep_alive_timeout",
                     "ws_close_timeout", "shutdown_grace", "sweep_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ServerLimits.{name} must be a positive number, got {value!r}")


class BodyBudget:
    """Bytes of request bodies one server holds in memory right now, against
    ``ServerLimits.max_buffered_bodies``: every connection charges what it
    receives and releases it once the request is answered (or dropped)."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, n: int) -> bool:
        """Count ``n`` more bytes; False if that goes over the limit (still counted)."""
        self.used += n
        return self.used <= self.limit

    def release(self, n: int) -> None:
        """Give back ``n`` bytes charged earlier."""
        self.used -= n
