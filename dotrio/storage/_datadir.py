"""The data dir as a whole: its lock, its id secret, its object files.

A data dir belongs to one process at a time: :func:`lock_data_dir` takes an
exclusive ``fcntl.flock`` on ``data_dir/lock`` (holding the owner's pid, so a
second server can say who has it) for as long as a Runtime runs. Everything
here raises :class:`~dotrio.DataDirError` with a message naming the file,
what is wrong and what to do, never a bare OSError or apsw error.

The scanning helpers (:func:`object_files`, :func:`wake_time`,
:func:`quick_check`) read object databases directly; they are for the alarm
index rebuild at start and for ``dotrio fsck``, both of which hold the lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import apsw

from .._errors import DataDirError
from ._pool import CORRUPTION_ERRORS, open_existing
from ._schedules import HAS_TABLE_SQL, NEXT_RUN_SQL

__all__ = [
    "LOCK_FILE",
    "SECRET_BYTES",
    "SECRET_FILE",
    "DataDirLock",
    "ObjectFile",
    "WakeScan",
    "check_object",
    "has_object_files",
    "load_or_create_secret",
    "lock_data_dir",
    "object_files",
    "quick_check",
    "scan_wake_times",
    "wake_time",
]

LOCK_FILE = "lock"
SECRET_FILE = "id-secret"
SECRET_BYTES = 32
_HEX_ID_LEN = 64
_SUFFIX = ".sqlite"
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _read_only_error(data_dir: Path, exc: OSError) -> DataDirError:
    return DataDirError(
        f"data dir {data_dir} is read-only ({_why(exc)}): dotrio writes its databases there; "
        "mount it read-write, fix its permissions, or set data_dir to a writable directory"
    )


class DataDirLock:
    """The held lock of a data dir; :meth:`release` (or process exit) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        """Unlock (closing the file unlocks). The file stays: deleting it would
        let a third process lock a new file while a second holds the old one."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return "another process"
    return f"pid {text}" if text.isdigit() else "another process"


def lock_data_dir(data_dir: Path) -> DataDirLock:
    """Create ``data_dir`` if needed and lock it for this process, or raise
    DataDirError at once: in use (naming the holder's pid) or not writable."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataDirError(f"data dir {data_dir} exists and is not a directory; set data_dir to a directory") from None
    except OSError as exc:
        if exc.errno in _READ_ONLY:
            raise _read_only_error(data_dir, exc) from None
        raise DataDirError(f"cannot create data dir {data_dir}: {_why(exc)}") from None
    if not data_dir.is_dir():
        raise DataDirError(f"data dir {data_dir} is not a directory; set data_dir to a directory")
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except IsADirectoryError:
        raise DataDirError(f"{path} is a directory; remove it (dotrio keeps its lock file there)") from None
    except OSError as exc:
        if exc.errno in _READ_ONLY:
            raise _read_only_error(data_dir, exc) from None
        raise DataDirError(f"cannot open the lock file {path}: {_why(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirError(
            f"data dir {data_dir} is in use by {_holder(path)}: one server per data dir; "
            "stop the other one or use another data_dir"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise DataDirError(f"cannot lock {path}: {_why(exc)}") from None
    try:
        # Root passes permission checks on a read-only *mode*, not on a
        # read-only *mount*: access() reports EROFS for both.
        if not os.access(data_dir, os.W_OK | os.X_OK):
            raise _read_only_error(data_dir, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            if exc.errno in _READ_ONLY:
                raise _read_only_error(data_dir, exc) from None
            raise DataDirError(f"cannot write the lock file {path}: {_why(exc)}") from None
    except BaseException:
        os.close(fd)
        raise
    return DataDirLock(path, fd)


def has_object_files(data_dir: Path) -> bool:
    """Whether any object database exists under ``data_dir`` (stops at the first)."""
    for _ in object_files(data_dir):
        return True
    return False


@dataclass(frozen=True)
class ObjectFile:
    namespace: str
    object_id: str
    """The 64-hex-digit id."""
    path: str

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.object_id}"


def _is_hex_id(name: str) -> bool:
    return len(name) == _HEX_ID_LEN and all(c in "0123456789abcdef" for c in name)


def object_files(data_dir: Path) -> Iterator[ObjectFile]:
    """Every object database under ``data_dir`` (``<ns>/<id[:2]>/<id>.sqlite``),
    by namespace, shard and id."""
    try:
        namespaces = sorted(e.name for e in os.scandir(data_dir) if e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return
    for ns in namespaces:
        root = os.path.join(data_dir, ns)
        try:
            shards = sorted(e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and len(e.name) == 2)
        except OSError:
            continue
        for shard in shards:
            folder = os.path.join(root, shard)
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                continue
            for name in names:
                if name.endswith(_SUFFIX):
                    oid = name[: -len(_SUFFIX)]
                    if _is_hex_id(oid) and oid.startswith(shard):
                        yield ObjectFile(ns, oid, os.path.join(folder, name))


def load_or_create_secret(data_dir: Path) -> bytes:
    """The data dir's id secret, created (0600) on first use.

    Refuses (DataDirError) to make a new one while object databases exist:
    with another secret every name maps to another (empty) object and every
    stored id is refused, so a lost secret must be restored, not replaced."""
    path = data_dir / SECRET_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if has_object_files(data_dir):
            raise DataDirError(
                f"objects exist in {data_dir} but its id-secret is missing ({path}); restore it from "
                "backup (a new secret would make every object read empty)"
            ) from None
        data = _create_secret(data_dir, path)
    except IsADirectoryError:
        raise DataDirError(
            f"{path} is a directory, expected the {SECRET_BYTES}-byte id secret file; "
            "restore the file from backup"
        ) from None
    except OSError as exc:
        raise DataDirError(f"cannot read {path}: {_why(exc)}; fix its permissions or restore it from backup") from None
    if len(data) != SECRET_BYTES:
        raise DataDirError(
            f"{path} is damaged: {len(data)} bytes, expected {SECRET_BYTES}; restore it from backup"
        )
    return data


def _create_secret(data_dir: Path, path: Path) -> bytes:
    tmp = path.with_suffix(".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_bytes(SECRET_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        # link() refuses to overwrite: if another process won the race, use its secret.
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        tmp.unlink(missing_ok=True)
        return path.read_bytes()
    except OSError as exc:
        if exc.errno in _READ_ONLY:
            raise _read_only_error(data_dir, exc) from None
        raise DataDirError(f"cannot create {path}: {_why(exc)}") from None


def _wake_time(conn: apsw.Connection) -> int | None:
    when: int | None = None
    for (v,) in conn.execute("SELECT v FROM _dotrio_meta WHERE k='alarm'"):
        if isinstance(v, int):
            when = v
    if conn.execute(HAS_TABLE_SQL).fetchall():
        for (v,) in conn.execute(NEXT_RUN_SQL):
            if isinstance(v, int) and (when is None or v < when):
                when = v
    return when


def wake_time(path: str) -> int | None:
    """An object's wake time from its own database: the earliest of its alarm
    and its schedules' next runs (None: nothing to wake for). Raises apsw
    errors (corrupt files) to the caller."""
    conn = open_existing(path)
    try:
        return _wake_time(conn)
    finally:
        conn.close()


def check_object(path: str) -> tuple[str | None, int | None]:
    """``PRAGMA quick_check`` of an object database, then its wake time:
    ``(None, wake)`` if it is sound, ``(what is wrong, None)`` if not (one line)."""
    problem, wake = _check_object(path)
    return (None if problem is None else " ".join(problem.split())), wake


def _check_object(path: str) -> tuple[str | None, int | None]:
    try:
        conn = open_existing(path)
    except apsw.Error as exc:
        return f"cannot be opened: {exc}", None
    try:
        rows = [line for r in conn.execute("PRAGMA quick_check") for line in str(r[0]).splitlines() if line]
        if rows != ["ok"]:
            rows = [r for r in rows if not r.startswith("*** in database")]
            return "; ".join(rows[:5]) + (f" (and {len(rows) - 5} more)" if len(rows) > 5 else ""), None
        return None, _wake_time(conn)
    except CORRUPTION_ERRORS as exc:
        return str(exc), None
    except apsw.Error as exc:
        return f"cannot be read: {exc}", None
    finally:
        conn.close()


def quick_check(path: str) -> str | None:
    """None if ``PRAGMA quick_check`` finds the database sound, else what is wrong."""
    return check_object(path)[0]


@dataclass
class WakeScan:
    """Counts of a :func:`scan_wake_times` pass (filled in as it is consumed)."""

    objects: int = 0
    """Object databases read."""
    wakes: int = 0
    """Of those, objects with a wake time."""
    unreadable: list[tuple[ObjectFile, str]] = field(default_factory=list)
    """Object databases that could not be read, and why."""


def scan_wake_times(data_dir: Path, scan: WakeScan) -> Iterator[tuple[ObjectFile, int]]:
    """Every object's wake time, read from its own database (the truth the
    alarm index is rebuilt from), streamed. Objects whose database cannot be
    read go to ``scan.unreadable``, not raised: one damaged file must not
    stop the others."""
    for f in object_files(data_dir):
        scan.objects += 1
        try:
            when = wake_time(f.path)
        except apsw.Error as exc:
            scan.unreadable.append((f, str(exc)))
            continue
        if when is not None:
            scan.wakes += 1
            yield f, when
