"""dotrio: Cloudflare-style Durable Objects in Python, on Trio, on one box."""

import os
from typing import Any

from ._errors import ConfigError, DotrioError, ObjectResetError, OverloadedError, StorageError
from .http import Headers, Request, Response
from .ids import DurableObjectId
from .namespace import DurableObjectNamespace, DurableObjectStub
from .object import AlarmInfo, DurableObject, DurableObjectState, Env, WorkerEntrypoint
from .runtime import Runtime
from .runtime import set_config_reader as _set_config_reader
from .storage import SqlCursor
from .websocket import WebSocket, WebSocketPair, WebSocketRequestResponsePair

__version__ = "0.1.0"


def _read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    # The composition root wires the config layer into Runtime.from_config:
    # neither layer imports the other, and the import stays lazy (tomllib and
    # user modules load only when a config is read).
    from ._config import runtime_kwargs_from_file

    return runtime_kwargs_from_file(path)


_set_config_reader(_read_config)

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
