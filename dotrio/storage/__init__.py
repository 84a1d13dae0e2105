"""Per-object SQLite storage: KV and SQL APIs in one transaction."""

from ._backend import BackendStatistics, StorageBackend
from ._api import ObjectStorage
from ._object import MAX_KEY_BYTES, MAX_VALUE_BYTES, StorageEngine, Transaction, encode_value
from ._schedules import ScheduleRow, ScheduleTable
from ._sql import DEFAULT_MAX_SQL_RESULT_ROWS, SqlCursor, SqlStorage

__all__ = [
    "BackendStatistics",
    "StorageBackend",
    "ObjectStorage",
    "StorageEngine",
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
