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
    #: backlog holds the rest) instead of answering with an error
    max_connections: int = 10_000
    #: listen() backlog
    backlog: int = 1024
    #: from the first byte of a request until its headers are complete -> 408;
    #: also how long a new connection may stay silent before its first request
    header_timeout: float = 10.0
    #: the longest a request body may make no progress -> 408
    body_timeout: float = 30.0
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
                     "ws_max_message_size", "ws_send_buffer"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ServerLimits.{name} must be a positive int, got {value!r}")
        if not isinstance(self.max_request_body, int) or self.max_request_body < 0:
            raise ValueError(f"ServerLimits.max_request_body must be an int >= 0, got {self.max_request_body!r}")
        for name in ("header_timeout", "body_timeout", "write_timeout", "keep_alive_timeout",
                     "ws_close_timeout", "shutdown_grace", "sweep_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ServerLimits.{name} must be a positive number, got {value!r}")
