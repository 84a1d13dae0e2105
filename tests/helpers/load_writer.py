"""Child process for the crash-under-load test: many objects written at once.

One task per object loops over ``bump()``: each turn reads the counter and
writes a batch of KV pairs *and* an SQL row that must commit together. A line
"ack <object> <value>" is printed only after the RPC returned, i.e. after the
output gate released it, so every printed value is acknowledged.
"""

from __future__ import annotations

import sys

import trio

import dotrio


class Ledger(dotrio.DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS log(n INTEGER PRIMARY KEY, note TEXT)")

    async def bump(self) -> int:
        s = self.ctx.storage
        n = (await s.get("n") or 0) + 1
        # One batch: the counter, its mirror, a new entry, and an SQL row.
        await s.put({"n": n, "mirror": n, f"entry:{n:06d}": {"n": n, "pad": "x" * 100}})
        s.sql.exec("INSERT INTO log(n, note) VALUES (?, ?)", n, "y" * 50)
        return n

    async def state(self) -> dict:
        s = self.ctx.storage
        log = s.sql.exec("SELECT count(*) AS c, coalesce(max(n), 0) AS m FROM log").one()
        entries = await s.list(prefix="entry:")
        return {
            "n": await s.get("n") or 0,
            "mirror": await s.get("mirror") or 0,
            "entries": len(entries),
            "last_entry": max(entries) if entries else None,
            "log_count": log["c"],
            "log_max": log["m"],
        }


async def main(data_dir: str, objects: int, durability: str) -> None:
    async with dotrio.Runtime(bindings={"LEDGER": Ledger}, data_dir=data_dir, durability=durability) as rt:
        stubs = [rt.env.LEDGER.get_by_name(f"o{i}") for i in range(objects)]
        out = sys.stdout

        async def writer(k: int) -> None:
            stub = stubs[k]
            while True:
                n = await stub.bump()
                out.write(f"ack {k} {n}\n")
                out.flush()

        out.write("ready\n")
        out.flush()
        async with trio.open_nursery() as nursery:
            for k in range(objects):
                nursery.start_soon(writer, k)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
