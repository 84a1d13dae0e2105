"""dotrio: Cloudflare-style Durable Objects in Python, on Trio, on one box."""

from ._errors import ConfigError as ConfigError
from ._errors import DotrioError as DotrioError
from ._errors import ObjectResetError as ObjectResetError
from ._errors import OverloadedError as OverloadedError
from ._errors import StorageError as StorageError
from ._http import Headers as Headers
from ._http import Request as Request
from ._http import Response as Response
from ._ids import DurableObjectId as DurableObjectId
from ._namespace import DurableObjectNamespace as DurableObjectNamespace
from ._namespace import DurableObjectStub as DurableObjectStub
from ._object import AlarmInfo as AlarmInfo
from ._object import DurableObject as DurableObject
from ._object import DurableObjectState as DurableObjectState
from ._object import Env as Env
from ._object import WorkerEntrypoint as WorkerEntrypoint
from ._websocket import WebSocket as WebSocket
from ._websocket import WebSocketPair as WebSocketPair
from ._websocket import WebSocketRequestResponsePair as WebSocketRequestResponsePair
from .runtime import Runtime as Runtime
from .runtime._alarms import Schedule as Schedule
from .storage import SqlCursor as SqlCursor

__version__ = "0.1.0"

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
    "Schedule",
    "SqlCursor",
    "StorageError",
    "WebSocket",
    "WebSocketPair",
    "WebSocketRequestResponsePair",
    "WorkerEntrypoint",
]
