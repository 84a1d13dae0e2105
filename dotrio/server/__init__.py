"""dotrio's servers: the fast Trio HTTP/1.1 + WebSocket front end and the
hypercorn adapter (HTTP/2, TLS), both generic over a ``Handler``; the
dispatcher that routes requests to objects; ``serve()``, which runs a config
or a Runtime behind either; and the config loader ``dotrio`` uses."""

from .._util import fixup_module_metadata as _fixup_module_metadata
from ._asgi import asgi_app, serve_hypercorn
from .._config import Config, load_config
from ._control import ConnectionStatistics, Handler, ServerControl, ServerStatistics
from ._dispatch import HEALTH_PATH, Dispatcher, WorkerContext
from ._fast import serve_fast
from ._limits import ServerLimits
from ._serve import run_server, serve
from ._ws import WebSocketEndpoint, WebSocketProtocolError, WebSocketTransport

__all__ = [
    "Config",
    "ConnectionStatistics",
    "Dispatcher",
    "HEALTH_PATH",
    "Handler",
    "ServerControl",
    "ServerLimits",
    "ServerStatistics",
    "WebSocketEndpoint",
    "WebSocketProtocolError",
    "WebSocketTransport",
    "WorkerContext",
    "asgi_app",
    "load_config",
    "run_server",
    "serve",
    "serve_fast",
    "serve_hypercorn",
]

_fixup_module_metadata(__name__, globals(), [n for n in __all__ if n not in ("Handler", "HEALTH_PATH")])
