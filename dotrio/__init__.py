"""dotrio: Cloudflare-style Durable Objects in Python, on Trio, on one box.

Every public name is importable from here; the modules they live in are
private (``dotrio._object``, ``dotrio.storage._api``, ...) and their
``__module__`` says ``dotrio``.
"""

import os as _os
from typing import Any as _Any

from ._errors import ConfigError as ConfigError
from ._errors import DataDirError as DataDirError
from ._errors import DotrioError as DotrioError
from ._errors import ObjectResetError as ObjectResetError
from ._errors import OverloadedError as OverloadedError
from ._errors import StorageError as StorageError
from ._http import Headers as Headers
from ._http import QueryParams as QueryParams
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
from ._schedule import Schedule as Schedule
from ._util import fixup_module_metadata as _fixup_module_metadata
from ._version import __version__ as __version__
from ._websocket import WebSocket as WebSocket
from ._websocket import WebSocketPair as WebSocketPair
from ._websocket import WebSocketRequestResponsePair as WebSocketRequestResponsePair
from .runtime import Runtime as Runtime
from .runtime import set_config_reader as _set_config_reader
from .storage import SqlCursor as SqlCursor


def _read_config(path: str | _os.PathLike[str]) -> dict[str, _Any]:
    # The composition root wires the config layer into Runtime.from_config:
    # neither layer imports the other, and the import stays lazy (tomllib and
    # user modules load only when a config is read).
    from ._config import runtime_kwargs_from_file

    return runtime_kwargs_from_file(path)


_set_config_reader(_read_config)

__all__ = [
    "AlarmInfo",
    "ConfigError",
    "DataDirError",
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
    "QueryParams",
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

_fixup_module_metadata(__name__, globals(), __all__)
