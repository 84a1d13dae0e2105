"""dotrio's servers: the fast Trio HTTP/1.1 + WebSocket front end and the
hypercorn adapter (HTTP/2, TLS), both generic over a ``Handler``."""

from ._asgi import asgi_app, serve_hypercorn
from ._control import ConnectionStatistics, Handler, ServerControl, ServerStatistics
from ._fast import serve_fast
from ._limits import ServerLimits
from ._ws import WebSocketEndpoint, WebSocketProtocolError, WebSocketTransport

__all__ = [
    "ConnectionStatistics",
    "Handler",
    "ServerControl",
    "ServerLimits",
    "ServerStatistics",
    "WebSocketEndpoint",
    "WebSocketProtocolError",
    "WebSocketTransport",
    "asgi_app",
    "serve_fast",
    "serve_hypercorn",
]
