"""The one exception tree of dotrio.

Every error the runtime raises on its own account derives from DotrioError;
low-level errors (apsw, sockets, TOML) are translated at the boundary into one
of these, keeping the original as ``__cause__``. Wrong argument types raise the
built-in TypeError and bad values ValueError, as Python code expects.
"""

from __future__ import annotations

__all__ = [
    "DotrioError",
    "StorageError",
    "StorageFullError",
    "ObjectResetError",
    "OverloadedError",
    "ConfigError",
    "DataDirError",
]


class DotrioError(Exception):
    """Base class of every dotrio runtime error."""


class StorageError(DotrioError):
    """A storage operation failed: SQL error, forbidden statement, bad cursor use."""


class StorageFullError(StorageError):
    """A storage operation failed because the disk (or its inode table) is
    full. The object is reset; the server answers 503 ``storage full`` with
    ``Retry-After``. Catch ``StorageError`` to handle it with the others."""


class ObjectResetError(DotrioError):
    """The object was reset (abort, failed commit, failed block_concurrency_while)
    while this caller's event was running."""


class OverloadedError(DotrioError):
    """The object's inbox is full; retry later (HTTP 503 at the server)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(DotrioError):
    """A configuration file is invalid. The message names the file, the key and
    what was expected."""


class DataDirError(DotrioError):
    """The data dir cannot be used: in use by another process, read-only,
    or its metadata (``id-secret``, ``alarms.sqlite``) is damaged. Raised when
    a Runtime starts; the message names the file, what is wrong and what to do."""
