"""dotrio: Cloudflare-style Durable Objects in Python, on Trio, on one box."""

from ._errors import ConfigError, DotrioError, ObjectResetError, OverloadedError, StorageError
from .http import Headers, Request, Response
from .ids import DurableObjectId
from .namespace import DurableObjectNamespace, DurableObjectStub
from .object import AlarmInfo, DurableObject, DurableObjectState, Env, WorkerEntrypoint
from .runtime import Runtime
from .storage import SqlCursor
from .websocket import WebSocket, WebSocketPair, WebSocketRequestResponsePair

from ._version import __version__ as __version__

__all__ = [
    "AlarmInfo",
    "ConfigError",
    "DotrioError",
    "DurableObject",
    "DurableObjectId",
    "DurableObjectNamespace",
    "DurableObjectState",
    "DurableObjectStub",
    "Env",
    "Headers",
    "ObjectResetError",
    "OverloadedError",
    "Request",
    "Response",
    "Runtime",
    "SqlCursor",
    "StorageError",
    "WebSocket",
    "WebSocketPair",
    "WebSocketRequestResponsePair",
    "WorkerEntrypoint",
]
