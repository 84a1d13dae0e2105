"""Per-object SQLite storage: KV and SQL APIs in one transaction."""

from ._backend import BackendStatistics, StorageBackend
from ._object import MAX_KEY_BYTES, MAX_VALUE_BYTES, ObjectStorage, Transaction
from ._sql import DEFAULT_MAX_SQL_RESULT_ROWS, SqlCursor, SqlStorage

__all__ = [
    "BackendStatistics",
    "StorageBackend",
    "ObjectStorage",
    "Transaction",
    "SqlCursor",
    "SqlStorage",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "DEFAULT_MAX_SQL_RESULT_ROWS",
]
