"""``dotrio fsck DATA_DIR [--repair]``: check a data dir while no server runs.

What it checks, in order:

1. the data dir can be locked (no server is using it);
2. ``id-secret`` is a 32-byte file (or absent while there are no objects);
3. every object database passes ``PRAGMA quick_check``; corrupt ones are
   reported by object id (``namespace/id``) and left alone, since they are
   user data: restoring them from a backup, or moving them away, is the
   operator's call;
4. the alarm index ``alarms.sqlite`` is sound and covers every object's wake
   time as its own database says (the truth). With ``--repair`` a missing,
   corrupt or incomplete index is rebuilt from the objects' databases (a
   corrupt one is first moved aside to ``alarms.sqlite.corrupt-<time>``).

The report's ``problems`` are what still needs the operator after the run;
``dotrio fsck`` exits 1 while there are any.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import apsw

from .._alarm_index import INDEX_FILE, AlarmIndex
from .._errors import DataDirError
from ..storage._datadir import (
    SECRET_BYTES,
    SECRET_FILE,
    check_object,
    lock_data_dir,
    object_files,
)

__all__ = ["FsckReport", "fsck"]

# The index row's key: the id's 16-byte base (see dotrio._alarm_index).
_BASE_HEX = 32


@dataclass
class FsckReport:
    """What :func:`fsck` found and did."""

    data_dir: Path
    objects: int = 0
    """Object databases checked."""
    wakes: int = 0
    """Objects whose database holds an alarm or a schedule."""
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    """``(namespace/id, what is wrong)`` of each object database that failed its check."""
    notes: list[str] = field(default_factory=list)
    """Findings that need nothing done (or were repaired)."""
    problems: list[str] = field(default_factory=list)
    """What remains wrong after the run, each saying what to do."""

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_secret(data_dir: Path, have_objects: bool, report: FsckReport) -> None:
    path = data_dir / SECRET_FILE
    try:
        size = len(path.read_bytes())
    except FileNotFoundError:
        if have_objects:
            report.problems.append(
                f"objects exist but id-secret is missing ({path}); restore it from backup (a new one "
                "would make every object read empty)"
            )
        else:
            report.notes.append(f"{SECRET_FILE}: absent (no objects yet; created at the first start)")
        return
    except IsADirectoryError:
        report.problems.append(
            f"{path} is a directory, expected the {SECRET_BYTES}-byte id secret: restore it from backup"
        )
        return
    except OSError as exc:
        report.problems.append(f"cannot read {path}: {exc.strerror or exc}")
        return
    if size != SECRET_BYTES:
        report.problems.append(f"{path} is damaged: {size} bytes, expected {SECRET_BYTES}; restore it from backup")
    else:
        report.notes.append(f"{SECRET_FILE}: ok")


def _read_index(path: str) -> dict[tuple[str, bytes], int]:
    """The index's rows; raises apsw errors (corrupt, locked) and DataDirError."""
    if os.path.isdir(path):
        raise DataDirError(f"the alarm index {path} is a directory: move it away, then run with --repair")
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()
        check = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
        if check != ["ok"]:
            raise apsw.CorruptError("; ".join(check[:5]))
        return {(ns, bytes(oid)): int(when) for ns, oid, when in conn.execute("SELECT ns, oid, when_ms FROM alarms")}
    finally:
        conn.close()


def fsck(data_dir: str | os.PathLike[str], repair: bool = False) -> FsckReport:
    """Check (and with ``repair``, rebuild the alarm index of) a data dir that
    no server is using. Raises DataDirError if it cannot be checked at all (not
    there, in use)."""
    root = Path(data_dir).resolve()
    if not root.is_dir():
        raise DataDirError(f"no data dir at {root}: give the data_dir of a dotrio config")
    report = FsckReport(root)
    lock = lock_data_dir(root)
    try:
        truth: dict[tuple[str, bytes], int] = {}
        for f in object_files(root):
            report.objects += 1
            problem, wake = check_object(f.path)
            if problem is not None:
                report.corrupt.append((f.label, problem))
                continue
            if wake is not None:
                report.wakes += 1
                truth[(f.namespace, bytes.fromhex(f.object_id[:_BASE_HEX]))] = wake
        _check_secret(root, report.objects > 0, report)
        report.notes.append(
            f"objects: {report.objects} checked, {len(report.corrupt)} corrupt, {report.wakes} with a wake-up"
        )
        for label, problem in report.corrupt:
            report.problems.append(
                f"object {label} is corrupt ({problem}): only this object fails; restore its file from a "
                "backup, or move it away to start the object empty"
            )
        _check_index(root, truth, repair, report)
    finally:
        lock.release()
    return report


def _check_index(root: Path, truth: dict[tuple[str, bytes], int], repair: bool, report: FsckReport) -> None:
    path = os.path.join(root, INDEX_FILE)
    wrong: str | None = None
    if not os.path.exists(path):
        if truth:
            wrong = f"{INDEX_FILE} is missing: {len(truth)} wake-ups would not fire"
        else:
            report.notes.append(f"{INDEX_FILE}: absent (no wake-ups)")
            return
    else:
        try:
            rows = _read_index(path)
        except DataDirError as exc:
            report.problems.append(str(exc))
            return
        except apsw.BusyError:
            report.problems.append(f"{path} is locked by another program: close it and run again")
            return
        except apsw.SQLError as exc:
            wrong = f"{INDEX_FILE} is empty or not an alarm index ({exc})"
        except apsw.Error as exc:
            wrong = f"{INDEX_FILE} is corrupt ({exc})"
        else:
            uncovered = sum(1 for key, when in truth.items() if rows.get(key, when + 1) > when)
            stale = sum(1 for key, when in rows.items() if truth.get(key) != when)
            if uncovered:
                wrong = (
                    f"{INDEX_FILE} misses or delays {uncovered} of {len(truth)} wake-ups "
                    "(they would fire late or never)"
                )
            elif stale:
                # Early or left-over rows: a spurious wake each, never a missed alarm.
                note = f"{INDEX_FILE}: ok ({len(rows)} rows; {stale} early or stale, harmless"
                if repair:
                    _rebuild(root, truth)
                    note += "; rebuilt"
                report.notes.append(note + ")")
                return
            else:
                report.notes.append(f"{INDEX_FILE}: ok ({len(rows)} rows)")
                return
    if not repair:
        report.problems.append(f"{wrong}: run `dotrio fsck {root} --repair` (or start the server) to rebuild it")
        return
    moved = _rebuild(root, truth)
    report.notes.append(
        f"{INDEX_FILE}: {wrong}; rebuilt from {report.objects - len(report.corrupt)} object databases "
        f"({len(truth)} wake-ups)" + (f"; the damaged file was moved to {moved}" if moved else "")
    )


def _rebuild(root: Path, truth: dict[tuple[str, bytes], int]) -> str | None:
    index = AlarmIndex(root)  # moves a file found corrupt at open aside
    try:
        rows = [(ns, oid, when) for (ns, oid), when in truth.items()]
        try:
            index.rebuild(rows)
        except (apsw.NotADBError, apsw.CorruptError) as exc:  # corrupt beyond its first pages
            index.discard_corrupt(exc)
            index.rebuild(rows)
        return index.moved_to
    finally:
        index.close()
