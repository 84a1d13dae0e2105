"""The data dir is one server's, and damage to it is reported and repaired
(issue 16 items 2-4 and 8): the lock, startup failures that unwind cleanly
inside structured concurrency, the id secret, the alarm index rebuilt from
the objects' databases, corrupt object files, a read-only data dir, and
``dotrio fsck``. Real files throughout; a read-only mount needs root (CI)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import ClassVar

import apsw
import pytest
import trio
import trio.lowlevel

import dotrio
from dotrio import DataDirError, DurableObject
from dotrio.runtime._fsck import fsck
from tests.helpers.readonly import read_only

INDEX = "alarms.sqlite"


class Box(DurableObject):
    fired: ClassVar[dict[str, int]] = {}

    async def put(self, value: object) -> None:
        await self.ctx.storage.put("v", value)

    async def value(self) -> object:
        return await self.ctx.storage.get("v")

    async def arm(self, when: int) -> None:
        await self.ctx.storage.set_alarm(when)

    async def get_alarm(self) -> int | None:
        return await self.ctx.storage.get_alarm()

    async def alarm(self, info: dotrio.AlarmInfo) -> None:
        key = str(self.ctx.id)
        Box.fired[key] = Box.fired.get(key, 0) + 1

    async def plan(self, seconds: float) -> None:
        await self.schedule(seconds, "ring", "payload")

    async def ring(self, payload: str) -> None:
        key = f"{self.ctx.id}:{payload}"
        Box.fired[key] = Box.fired.get(key, 0) + 1


@pytest.fixture(autouse=True)
def _reset_box() -> None:
    Box.fired = {}


def object_paths(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("Box/*/*.sqlite"))


async def seed(make_runtime, names: list[str]) -> None:
    async with make_runtime({"B": Box}) as rt:
        for name in names:
            await rt.env.B.get_by_name(name).put(name)


# ---- the lock ----------------------------------------------------------------------


async def test_second_runtime_on_the_same_dir_fails_at_once(make_runtime, data_dir):
    async with make_runtime({"B": Box}) as rt:
        await rt.env.B.get_by_name("a").put(1)
        with pytest.raises(DataDirError, match=rf"data dir {data_dir} is in use by pid {os.getpid()}\b"):
            async with make_runtime({"B": Box}):
                pass  # pragma: no cover - must not start
        # The first one is untouched by the attempt.
        assert await rt.env.B.get_by_name("a").value() == 1
    assert (data_dir / "lock").read_text().strip() == str(os.getpid())
    # Released at exit: the next one starts.
    async with make_runtime({"B": Box}) as rt:
        assert await rt.env.B.get_by_name("a").value() == 1


# ---- startup failures unwind cleanly ----------------------------------------------------


async def test_locked_alarm_index_is_one_clear_error_and_unwinds(make_runtime, data_dir):
    async with make_runtime({"B": Box}) as rt:
        await rt.env.B.get_by_name("a").arm(rt.clock.now_ms() + 3_600_000)
    other = apsw.Connection(str(data_dir / INDEX))  # another program holds the index
    other.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(2):  # twice: the first attempt left no lock, nursery or file open
            with pytest.raises(DataDirError, match=r"alarms\.sqlite is locked by another program: close it"):
                async with make_runtime({"B": Box}):
                    pass  # pragma: no cover
    finally:
        other.execute("ROLLBACK")
        other.close()
    # The Trio run is intact (no corrupted cancel scope stack) and the dir usable.
    await trio.lowlevel.checkpoint()
    async with make_runtime({"B": Box}) as rt:
        assert await rt.env.B.get_by_name("a").get_alarm() is not None


async def test_unusable_alarm_index_is_one_clear_error(make_runtime, data_dir):
    await seed(make_runtime, ["a"])
    damage_index(data_dir, "deleted")
    (data_dir / INDEX).mkdir()
    with pytest.raises(DataDirError, match=r"alarms\.sqlite is a directory; move it away"):
        async with make_runtime({"B": Box}):
            pass  # pragma: no cover
    (data_dir / INDEX).rmdir()
    async with make_runtime({"B": Box}) as rt:
        assert await rt.env.B.get_by_name("a").value() == "a"


async def test_alarm_index_that_cannot_be_made_is_one_clear_error(make_runtime, data_dir, tmp_path):
    await seed(make_runtime, ["a"])
    damage_index(data_dir, "deleted")
    (data_dir / INDEX).symlink_to(tmp_path / "no-such-dir" / INDEX)  # a rebuild cannot create it
    with pytest.raises(DataDirError, match=r"cannot use the alarm index \S+alarms\.sqlite \(unable to open"):
        async with make_runtime({"B": Box}):
            pass  # pragma: no cover
    (data_dir / INDEX).unlink()
    async with make_runtime({"B": Box}) as rt:
        assert await rt.env.B.get_by_name("a").value() == "a"


async def test_runtime_body_and_shutdown_still_work(make_runtime):
    # The lifecycle is one context manager: an error in the body still closes
    # everything and reaches the caller; a Runtime is entered once at a time.
    rt = make_runtime({"B": Box})
    with pytest.raises((KeyError, BaseExceptionGroup)) as info:
        async with rt:
            await rt.env.B.get_by_name("a").put(1)
            raise KeyError("body")
    assert isinstance(info.value, KeyError) or info.group_contains(KeyError)
    assert not rt.running
    async with make_runtime({"B": Box}) as rt2:
        assert rt2.running
        with pytest.raises(dotrio.DotrioError, match="already running"):
            await rt2.__aenter__()
        assert await rt2.env.B.get_by_name("a").value() == 1


# ---- id-secret -----------------------------------------------------------------------


async def test_missing_secret_with_objects_refuses_to_start(make_runtime, data_dir):
    await seed(make_runtime, ["a"])
    secret = (data_dir / "id-secret").read_bytes()
    (data_dir / "id-secret").unlink()
    with pytest.raises(
        DataDirError, match=r"objects exist in .* but its id-secret is missing .*restore it from backup"
    ):
        async with make_runtime({"B": Box}):
            pass  # pragma: no cover
    assert not (data_dir / "id-secret").exists()  # no new secret was made
    (data_dir / "id-secret").write_bytes(secret)
    async with make_runtime({"B": Box}) as rt:
        assert await rt.env.B.get_by_name("a").value() == "a"


@pytest.mark.parametrize("damage", ["truncated", "directory"])
async def test_damaged_secret_is_one_clear_error(make_runtime, data_dir, damage):
    await seed(make_runtime, ["a"])
    path = data_dir / "id-secret"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:12])
        expected = r"id-secret is damaged: 12 bytes, expected 32; restore it from backup"
    else:
        path.unlink()
        path.mkdir()
        expected = r"id-secret is a directory, expected the 32-byte id secret file; restore"
    with pytest.raises(DataDirError, match=expected):
        async with make_runtime({"B": Box}):
            pass  # pragma: no cover


# ---- the alarm index is rebuilt from the objects ---------------------------------------------


def damage_index(data_dir: Path, how: str) -> None:
    path = data_dir / INDEX
    for extra in (data_dir / (INDEX + "-wal"), data_dir / (INDEX + "-shm")):
        extra.unlink(missing_ok=True)
    if how == "deleted":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"this is not an SQLite database, just garbage " * 200)


@pytest.mark.parametrize("how", ["deleted", "empty", "corrupt"])
async def test_damaged_index_is_rebuilt_and_alarms_fire(make_runtime, data_dir, autojump_clock, caplog, how):
    async with make_runtime({"B": Box}) as rt:
        now = rt.clock.now_ms()
        due, later = rt.env.B.get_by_name("due"), rt.env.B.get_by_name("later")
        await due.arm(now + 2_000)
        await later.arm(now + 3_600_000)
        await rt.env.B.get_by_name("plain").put(1)
        due_id, later_id = str(due.id), str(later.id)
    damage_index(data_dir, how)
    caplog.set_level(logging.WARNING, "dotrio.alarms")
    async with make_runtime({"B": Box}) as rt:
        assert f"alarm index {data_dir / INDEX} was" in caplog.text
        assert "rebuilt from 3 object databases (2 with a wake-up)" in caplog.text
        assert rt.alarms.statistics().loaded_on_start == 2
        assert await rt.env.B.get_by_name("later").get_alarm() == now + 3_600_000
        await trio.sleep(5)
        assert Box.fired == {due_id: 1}
        assert await rt.env.B.get_by_name("due").get_alarm() is None
        assert await rt.env.B.get_by_name("later").get_alarm() == now + 3_600_000
    if how == "corrupt":
        moved = list(data_dir.glob(INDEX + ".corrupt-*"))
        assert len(moved) == 1 and b"garbage" in moved[0].read_bytes()
    # The rebuilt index is the objects' truth.
    conn = apsw.Connection(str(data_dir / INDEX))
    rows = conn.execute("SELECT ns, oid, when_ms FROM alarms").fetchall()
    conn.close()
    assert rows == [("Box", bytes.fromhex(later_id[:32]), now + 3_600_000)]


async def test_rebuild_covers_schedules_too(make_runtime, data_dir, autojump_clock):
    async with make_runtime({"B": Box}) as rt:
        planner = rt.env.B.get_by_name("planner")
        await planner.plan(5)
        planner_id = str(planner.id)
    damage_index(data_dir, "deleted")
    async with make_runtime({"B": Box}) as rt:
        assert rt.alarms.statistics().loaded_on_start == 1
        await trio.sleep(10)
        assert Box.fired == {f"{planner_id}:payload": 1}


async def test_index_is_made_in_a_new_data_dir_and_rebuilt_once_if_lost(make_runtime, data_dir, caplog):
    caplog.set_level(logging.WARNING, "dotrio.alarms")
    await seed(make_runtime, ["a", "b"])
    assert len((data_dir / "id-secret").read_bytes()) == 32
    assert (data_dir / INDEX).is_file()  # made (empty) at the first start: later, missing means lost
    async with make_runtime({"B": Box}):
        pass
    assert "rebuilt" not in caplog.text
    damage_index(data_dir, "deleted")  # e.g. a data dir from before the index was made at start
    async with make_runtime({"B": Box}):
        pass
    assert "was missing: rebuilt from 2 object databases (0 with a wake-up)" in caplog.text
    caplog.clear()
    async with make_runtime({"B": Box}):
        pass
    assert "rebuilt" not in caplog.text  # once: no rescan at every start


# ---- a corrupt object file fails only that object ----------------------------------------------


async def test_corrupt_object_fails_only_itself_and_is_counted(make_runtime, data_dir):
    await seed(make_runtime, ["bad", "good"])
    async with make_runtime({"B": Box}) as rt:
        bad_id = str(rt.env.B.get_by_name("bad").id)
    path = data_dir / "Box" / bad_id[:2] / f"{bad_id}.sqlite"
    Path(str(path) + "-wal").unlink(missing_ok=True)
    path.write_bytes(os.urandom(8192))
    async with make_runtime({"B": Box}) as rt:
        with pytest.raises(dotrio.StorageError) as info:
            await rt.env.B.get_by_name("bad").value()
        message = str(info.value)
        assert f"object Box/{bad_id} cannot be used: its database {path} is corrupt" in message
        assert "other objects are not affected" in message and "dotrio fsck" in message
        assert await rt.env.B.get_by_name("good").value() == "good"
        await rt.env.B.get_by_name("new").put(3)
        stats = rt.statistics().storage
        assert stats.corrupt_objects == 1 and stats.pool is not None and stats.pool.corrupt_objects == 1
        with pytest.raises(dotrio.StorageError):
            await rt.env.B.get_by_name("bad").value()
        assert rt.statistics().storage.corrupt_objects == 1  # counted once per file


# ---- a read-only data dir ------------------------------------------------------------------


async def test_read_only_data_dir_is_reported_at_start(make_runtime, data_dir):
    await seed(make_runtime, ["a"])
    with read_only(data_dir) as why:
        expected = rf"data dir {data_dir} is read-only \({why}\): .*mount it read-write"
        with pytest.raises(DataDirError, match=expected):
            async with make_runtime({"B": Box}):
                pass  # pragma: no cover
    async with make_runtime({"B": Box}) as rt:
        assert await rt.env.B.get_by_name("a").value() == "a"


# ---- fsck --------------------------------------------------------------------------------


async def test_fsck_reports_corrupt_objects_and_repairs_the_index(make_runtime, data_dir, autojump_clock):
    async with make_runtime({"B": Box}) as rt:
        now = rt.clock.now_ms()
        await rt.env.B.get_by_name("due").arm(now + 2_000)
        await rt.env.B.get_by_name("bad").put(1)
        bad_id = str(rt.env.B.get_by_name("bad").id)
        due_id = str(rt.env.B.get_by_name("due").id)
    clean = fsck(data_dir)
    assert clean.ok and clean.objects == 2 and clean.wakes == 1, clean

    bad = data_dir / "Box" / bad_id[:2] / f"{bad_id}.sqlite"
    Path(str(bad) + "-wal").unlink(missing_ok=True)
    bad.write_bytes(b"\0" * 100 + os.urandom(4000))
    damage_index(data_dir, "deleted")
    report = fsck(data_dir)
    assert report.corrupt and report.corrupt[0][0] == f"Box/{bad_id}"
    assert any(f"object Box/{bad_id} is corrupt" in p for p in report.problems)
    assert any("alarms.sqlite is missing: 1 wake-ups would not fire" in p for p in report.problems)
    assert not (data_dir / INDEX).exists()  # no --repair: nothing changed

    repaired = fsck(data_dir, repair=True)
    assert [p for p in repaired.problems if "alarms.sqlite" in p] == []
    assert any("rebuilt from 1 object databases (1 wake-ups)" in n for n in repaired.notes)
    assert len(repaired.problems) == 1  # the corrupt object remains: it is user data
    shutil.move(str(bad), str(data_dir / "bad-object.sqlite"))
    assert fsck(data_dir).ok
    async with make_runtime({"B": Box}) as rt:
        await trio.sleep(3)
        assert Box.fired == {due_id: 1}


def garble_a_middle_page(path: Path) -> None:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the pages into the file itself
    conn.close()
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(b"\xff" * 2048)


async def test_fsck_finds_damage_inside_a_file_that_still_opens(make_runtime, data_dir):
    async with make_runtime({"B": Box}) as rt:
        big = rt.env.B.get_by_name("big")
        for i in range(100):
            await big.put({"i": i, "pad": "x" * 2000})
            await rt.env.B.get_by_name(f"k{i}").put(i)
        big_id = str(big.id)
    garble_a_middle_page(data_dir / "Box" / big_id[:2] / f"{big_id}.sqlite")
    report = fsck(data_dir)
    assert [label for label, _ in report.corrupt] == [f"Box/{big_id}"], report
    assert "\n" not in report.corrupt[0][1] and report.corrupt[0][1]
    assert report.objects == 101 and len(report.problems) == 1


async def test_fsck_refuses_a_data_dir_in_use(make_runtime, data_dir):
    async with make_runtime({"B": Box}):
        with pytest.raises(DataDirError, match=rf"in use by pid {os.getpid()}"):
            fsck(data_dir)


async def test_fsck_finds_an_index_that_misses_alarms(make_runtime, data_dir):
    async with make_runtime({"B": Box}) as rt:
        await rt.env.B.get_by_name("a").arm(rt.clock.now_ms() + 60_000)
    conn = apsw.Connection(str(data_dir / INDEX))
    conn.execute("DELETE FROM alarms")  # sound file, missing row: the alarm would never fire
    conn.close()
    report = fsck(data_dir)
    assert any("misses or delays 1 of 1 wake-ups" in p for p in report.problems)
    assert fsck(data_dir, repair=True).ok
    assert fsck(data_dir).ok
