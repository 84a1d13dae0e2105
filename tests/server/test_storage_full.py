"""A full disk answers ``503 storage full`` with ``Retry-After`` and takes
down nothing else (issue 16, items 1 and 8).

In-process, through the dispatcher, with faults injected by
``StorageBackend.fault_hook``; and for real: a ``dotrio serve`` subprocess
whose data dir is a tiny tmpfs, filled first to its last inode, then to its
last byte (root only, to mount; CI runs as root).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import dotrio
from dotrio.server import Dispatcher

from .test_serve_subprocess import Server

BASE = "http://example.test"


class Counter(dotrio.DurableObject):
    async def fetch(self, request: dotrio.Request) -> dotrio.Response:
        action = request.path.rsplit("/", 1)[1]
        storage = self.ctx.storage
        if action == "value":
            return dotrio.Response(str(await storage.get("n")))
        if action == "peek":  # a key never read before: goes to the database
            return dotrio.Response(str(await storage.get(request.query_string)))
        n = (await storage.get("n") or 0) + 1
        await storage.put("n", n)
        return dotrio.Response(str(n))


class Faults:
    def __init__(self, step: str, exc: BaseException) -> None:
        self.step = step
        self.exc = exc
        self.target = ""

    def __call__(self, step: str, path: str) -> None:
        if self.target and step == self.step and self.target in path:
            raise self.exc


def req(path: str) -> dotrio.Request:
    return dotrio.Request(BASE + path, method="POST")


async def test_dispatcher_answers_503_storage_full_with_retry_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with dotrio.Runtime(bindings={"C": Counter}, data_dir=tmp_path / "d", pool_size=1) as rt:
        d = Dispatcher(rt)
        assert (await d(req("/C/old/inc"))).text() == "1"
        faults = Faults("mkdir", OSError(errno.ENOSPC, "No space left on device"))
        rt.backend.fault_hook = faults
        new_id = str(rt.env.C.id_from_name("new"))
        faults.target = new_id
        with caplog.at_level(logging.INFO):
            r = await d(req("/C/new/inc"))
        assert (r.status, r.text(), r.headers.get("retry-after")) == (503, "storage full\n", "10")
        reports = [rec for rec in caplog.records if new_id in rec.getMessage()]
        assert len(reports) == 1 and "storage full" in reports[0].getMessage(), [x.getMessage() for x in reports]
        assert (await d(req("/C/old/inc"))).text() == "2"  # others keep being served

        # A read that cannot open the database (it is uncaught by the handler):
        # no reset, but the answer still says what happened.
        assert (await d(req("/C/third/inc"))).text() == "1"  # closes old's connection (pool_size=1)
        faults.step, faults.target = "open", str(rt.env.C.id_from_name("old"))
        r = await d(req("/C/old/peek?k1"))
        assert (r.status, r.text(), r.headers.get("retry-after")) == (503, "storage full\n", "10")

        # Any other failure resets the object with the usual answer.
        faults.step, faults.exc = "commit", RuntimeError("disk controller on fire")
        r = await d(req("/C/old/inc"))
        assert (r.status, r.text()) == (503, "object reset; retry\n")
        faults.target = ""
        assert (await d(req("/C/new/inc"))).text() == "1"
        assert (await d(req("/C/old/inc"))).text() == "3"  # the failed increment was not stored
        assert (await d(req("/C/old/peek?k1"))).text() == "None"


# ---- a real full disk ---------------------------------------------------------------------

APP = '''
import dotrio


class Counter(dotrio.DurableObject):
    async def fetch(self, request):
        action = request.path.rsplit("/", 1)[1]
        storage = self.ctx.storage
        if action == "id":  # no write: creates no file
            return dotrio.Response(str(self.ctx.id))
        if action == "value":
            return dotrio.Response(str(await storage.get("n") or 0))
        if action == "sql":
            storage.sql.exec("CREATE TABLE IF NOT EXISTS t(x)")
            storage.sql.exec("INSERT INTO t VALUES (1)")
            return dotrio.Response("sql")
        if action == "alarm":
            await storage.set_alarm(4102444800000)  # 2100: never fires here
        n = (await storage.get("n") or 0) + 1
        await storage.put("n", n)
        return dotrio.Response(str(n))
'''


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs with 200 inodes, mounted for the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=200", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"mount failed as root: {done.stderr}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_inodes(where: Path) -> list[Path]:
    where.mkdir()
    made = []
    while True:
        path = where / f"i{len(made)}"
        try:
            path.touch()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
            return made
        made.append(path)


def fill_space(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 4096, 1):
            while True:
                try:
                    if os.write(fd, b"\0" * size) < size:
                        break
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    finally:
        os.close(fd)


def fresh_shards(client: httpx.Client, taken: set[str], count: int) -> list[str]:
    """Names of objects whose id shards (directories) exist nowhere yet."""
    names = []
    for i in range(500):
        name = f"n{i}"
        shard = client.get(f"/C/{name}/id").text[:2]
        if shard not in taken:
            taken.add(shard)
            names.append(name)
            if len(names) == count:
                return names
    raise AssertionError("no fresh shards")


def same_shard(client: httpx.Client, shards: set[str]) -> str:
    """The name of a new object whose id shard is one of ``shards`` (whose directory exists)."""
    for i in range(4000):
        name = f"s{i}"
        if client.get(f"/C/{name}/id").text[:2] in shards:
            return name
    raise AssertionError("no object found in an existing shard")


def full(r: Any) -> bool:
    return (r.status_code, r.text, r.headers.get("retry-after")) == (503, "storage full\n", "10")


def test_a_real_full_disk_answers_503_storage_full_and_the_server_goes_on(tmpfs: Path, tmp_path: Path) -> None:
    mod = "fullapp_" + uuid.uuid4().hex[:10]
    (tmp_path / f"{mod}.py").write_text(APP)
    config = tmp_path / "dotrio.toml"
    config.write_text(f'data_dir = "{tmpfs / "data"}"\n'
                      f'[[durable_objects.bindings]]\nname = "C"\nclass_name = "{mod}:Counter"\n')
    server = Server(config, "fast")
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert [client.post("/C/a/inc").text for _ in range(3)] == ["1", "2", "3"]
            acked = 3
            a_shard = client.get("/C/a/id").text[:2]
            taken = {a_shard}

            # 1. No inode left: a new object's directory cannot be made, through
            #    a KV put, sql.exec and set_alarm.
            inodes = fill_inodes(tmpfs / "inodes")
            b, c, d = fresh_shards(client, taken, 3)
            for name, action in ((b, "inc"), (c, "sql"), (d, "alarm")):
                r = client.post(f"/C/{name}/{action}")
                assert full(r), f"{action} on a new object with no inode left: {r.status_code} {r.text!r}"
            # ... nor a new object's file in a directory that exists already.
            r = client.post(f"/C/{same_shard(client, {a_shard})}/inc")
            assert full(r), f"a new file with no inode left: {r.status_code} {r.text!r}"
            assert client.get("/C/a/value").text == str(acked)  # an open object is still served
            r = client.post("/C/a/inc")  # its file exists: this write needs no inode
            assert r.status_code == 200, r.text
            acked = int(r.text)
            for path in inodes:
                path.unlink()
            (tmpfs / "inodes").rmdir()

            # 2. No byte left: a new object's database cannot be written.
            filler = tmpfs / "filler"
            fill_space(filler)
            (e,) = fresh_shards(client, taken, 1)
            r = client.post(f"/C/{e}/inc")
            assert full(r), f"a new object on a full disk: {r.status_code} {r.text!r}"
            assert client.get("/C/a/value").text == str(acked)
            r = client.post("/C/a/inc")  # may or may not find room in its WAL
            if r.status_code == 200:
                acked = int(r.text)
            else:
                assert full(r), r.text
            assert client.get("/_dotrio/health").status_code == 200
            assert server.proc.poll() is None, server.log()
            filler.unlink()

            # 3. Space again: everything works, nothing acknowledged was lost.
            assert client.post(f"/C/{b}/inc").text == "1"
            assert client.post(f"/C/{e}/inc").text == "1"
            assert client.post(f"/C/{c}/sql").text == "sql"
            assert client.get("/C/a/value").text == str(acked)
        log = server.log()
        assert "cannot serve on" not in log, log
        assert log.count("reset: storage full") >= 4, log
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.log()
    finally:
        server.ensure_dead()
    again = Server(config, "fast")
    try:
        again.wait_ready()
        assert httpx.get(again.url + "/C/a/value", timeout=30).text == str(acked)
        again.signal(signal.SIGTERM)
        assert again.wait() == 0, again.log()
    finally:
        again.ensure_dead()
