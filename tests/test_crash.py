"""Crash safety with a real SIGKILL of a real process, and an injected commit
failure half-way through a batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import apsw
import pytest
import trio

import dotrio
from tests.helpers.ack_writer import Box

ROOT = Path(__file__).resolve().parent.parent


def run_and_kill(data_dir: Path, objects: int, acks_before_kill: int, durability: str) -> dict[int, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.ack_writer", str(data_dir), str(objects), durability],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    acked: dict[int, int] = {}
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        count = 0
        for line in proc.stdout:
            _, k, n = line.split()
            acked[int(k)] = int(n)
            count += 1
            if count >= acks_before_kill:
                os.kill(proc.pid, signal.SIGKILL)
                break
        # Acknowledgements already in the pipe when the kill landed are
        # acknowledgements too: read them, or a later write looks "unacknowledged".
        for line in proc.stdout:
            parts = line.split()
            if len(parts) == 3 and line.endswith("\n"):  # not a line cut short by the kill
                acked[int(parts[1])] = int(parts[2])
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return acked


@pytest.mark.parametrize("durability", ["process", "power"])
async def test_sigkill_loses_no_acknowledged_write(tmp_path, durability):
    data_dir = tmp_path / "data"
    acked = await trio.to_thread.run_sync(run_and_kill, data_dir, 20, 1500, durability)
    assert len(acked) == 20
    async with dotrio.Runtime(bindings={"BOX": Box}, data_dir=data_dir) as rt:
        for k, n in acked.items():

            async def read(inst):
                s = inst.ctx.storage
                return await s.get("n"), await s.get("mirror")

            ns = rt.env.BOX
            value, mirror = await rt.call(ns, ns.id_from_name(f"o{k}"), read)
            # every acknowledged write is there; at most the one in flight beyond it
            assert n <= value <= n + 1, (k, n, value)
            # and a batch is never half-present
            assert mirror == value


class FlakyVFS(apsw.VFS):
    """The default VFS, except that WAL writes fail once armed, after a budget."""

    def __init__(self) -> None:
        self.armed = False
        self.budget = 0
        self.failures = 0
        super().__init__("dotrio-flaky", "")

    def xOpen(self, name, flags):  # noqa: N802 - apsw's name
        return FlakyFile(self, name, flags)


class FlakyFile(apsw.VFSFile):
    def __init__(self, vfs: FlakyVFS, name, flags) -> None:
        self.vfs = vfs
        self.is_wal = str(name.filename() if hasattr(name, "filename") else name).endswith("-wal")
        super().__init__("", name, flags)

    def xWrite(self, data, offset):  # noqa: N802
        vfs = self.vfs
        if vfs.armed and self.is_wal:
            if vfs.budget <= 0:
                vfs.failures += 1
                raise apsw.IOError("injected write failure")
            vfs.budget -= 1
        super().xWrite(data, offset)


class Batch(dotrio.DurableObject):
    async def seed(self) -> None:
        await self.ctx.storage.put({f"k{i:04d}": "old" for i in range(300)})

    async def big_batch(self) -> str:
        # ~300 KB over many pages: the failure hits after some pages were written
        await self.ctx.storage.put({f"k{i:04d}": "new" * 300 for i in range(300)})
        return "acknowledged?"

    async def snapshot(self) -> dict:
        return await self.ctx.storage.list()


async def test_commit_failing_half_way_shows_nothing_and_resets(tmp_path):
    vfs = FlakyVFS()
    data_dir = tmp_path / "data"
    async with dotrio.Runtime(bindings={"B": Batch}, data_dir=data_dir, sqlite_vfs="dotrio-flaky") as rt:
        stub = rt.env.B.get_by_name("x")
        await stub.seed()
        vfs.budget = 5
        vfs.armed = True
        with pytest.raises(dotrio.ObjectResetError, match="commit failed"):
            await stub.big_batch()
        assert vfs.failures >= 1
        vfs.armed = False
        snap = await stub.snapshot()
        assert set(snap.values()) == {"old"} and len(snap) == 300
    # and on disk, through a fresh runtime without the flaky VFS
    async with dotrio.Runtime(bindings={"B": Batch}, data_dir=data_dir) as rt:
        snap = await rt.env.B.get_by_name("x").snapshot()
        assert set(snap.values()) == {"old"} and len(snap) == 300
    vfs.unregister()
