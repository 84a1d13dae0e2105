"""Per-object SQLite storage: KV and SQL APIs in one transaction."""

from .._util import fixup_module_metadata as _fixup_module_metadata
from ._api import ObjectStorage, new_user_storage
from ._backend import BackendStatistics, StorageBackend
from ._object import MAX_KEY_BYTES, MAX_VALUE_BYTES, StorageEngine, Transaction, encode_value
from ._schedules import ScheduleRow, ScheduleTable
from ._sql import DEFAULT_MAX_SQL_RESULT_ROWS, SqlCursor, SqlStorage

__all__ = [
    "BackendStatistics",
    "StorageBackend",
    "ObjectStorage",
    "StorageEngine",
    "new_user_storage",
    "Transaction",
    "SqlCursor",
    "SqlStorage",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "ScheduleRow",
    "ScheduleTable",
    "encode_value",
    "DEFAULT_MAX_SQL_RESULT_ROWS",
]

# Public storage types say dotrio.storage.X (dotrio.SqlCursor says dotrio.X).
_fixup_module_metadata(__name__, globals(), ["ObjectStorage", "SqlStorage", "Transaction"])
