"""Storage failures that are not the caller's fault, named for people.

The OS and SQLite fail in ways no request can fix: a full disk (ENOSPC, also
when the inode table is full), a read-only file system, an I/O error. Such a
failure while serving one object becomes a ``StorageError`` (a
``StorageFullError`` for a full disk) whose message starts with what happened
(``storage full: ...``), keeps the original as ``__cause__``, and resets that
object only; the rest of the server goes on.

The fault-injection hook
------------------------

``StorageBackend.fault_hook`` (None by default) is a test-facing hook: when set,
it is called as ``hook(step, path)`` before each storage step, where ``path`` is
the object's database path and ``step`` one of :data:`FAULT_STEPS`:

* ``"mkdir"``: creating the directory of a new object's database;
* ``"open"``: opening (and creating) an object's database;
* ``"commit"``: writing and committing a batch (in the worker thread for
  ``"power"`` durability);
* ``"checkpoint"``: right after a commit appended to the WAL, where SQLite
  checkpoints (connections opened while a hook is set run the checkpoint
  themselves, every ``wal_autocheckpoint`` pages, as SQLite would);
* ``"close"``: closing an object's connection.

Whatever the hook raises is raised where a real failure of that step would
be, so a test can inject ENOSPC (or anything else) at every step and check
that only that object resets. Set it before the runtime opens the databases
it is about; it costs one attribute check per step when unset.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import apsw

from .._errors import StorageError, StorageFullError

__all__ = ["FAULT_STEPS", "FaultHook", "failure_kind", "storage_failure", "is_environment_failure"]

FAULT_STEPS = ("open", "mkdir", "commit", "checkpoint", "close")
FaultHook = Callable[[str, str], None]

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# SQLite result codes that say the environment failed, not the statement.
_ENVIRONMENT = (
    apsw.FullError,
    apsw.IOError,
    apsw.ReadOnlyError,
    apsw.CantOpenError,
    apsw.NoMemError,
    apsw.CorruptError,
    apsw.NotADBError,
)


def failure_kind(exc: BaseException, path: str | None = None) -> str:
    """``"storage full"``, ``"storage read-only"`` or ``"storage failed"``.

    SQLite reports a file it could not create as "unable to open", without the
    errno: with the ``path`` concerned, a file system that has no free block
    or inode left makes that "storage full" too."""
    if isinstance(exc, StorageFullError) or isinstance(exc, apsw.FullError):
        return "storage full"
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return "storage full"
    if isinstance(exc, apsw.ReadOnlyError) or (isinstance(exc, OSError) and exc.errno == errno.EROFS):
        return "storage read-only"
    if path is not None and isinstance(exc, (apsw.CantOpenError, apsw.IOError)) and _no_room(path):
        return "storage full"
    return "storage failed"


def _no_room(path: str) -> bool:
    """The file system holding ``path`` (or its nearest existing parent) has
    no free block or no free inode for an unprivileged writer."""
    where = path
    for _ in range(64):
        try:
            st = os.statvfs(where)
        except OSError:
            parent = os.path.dirname(where)
            if not parent or parent == where:
                return False
            where = parent
            continue
        return st.f_bavail == 0 or (st.f_files > 0 and st.f_favail == 0)
    return False


def is_environment_failure(exc: BaseException) -> bool:
    """A failure of the disk, the OS or SQLite's files rather than of the statement."""
    return isinstance(exc, (OSError, *_ENVIRONMENT))


def storage_failure(what: str, exc: BaseException, path: str | None = None) -> StorageError:
    """The StorageError (StorageFullError for a full disk) to raise for ``exc``,
    which happened while doing ``what`` (to the file ``path``, if given);
    ``exc`` is kept as ``__cause__``."""
    if isinstance(exc, StorageError):
        return exc
    kind = failure_kind(exc, path)
    detail = str(exc) or type(exc).__name__
    if not isinstance(exc, (OSError, apsw.Error)):
        detail = f"{type(exc).__name__}: {detail}"
    err: StorageError = (StorageFullError if kind == "storage full" else StorageError)(f"{kind}: {what}: {detail}")
    err.__cause__ = exc
    return err
