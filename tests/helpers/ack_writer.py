"""Child process for crash tests: streams acknowledged writes to stdout.

Each write is one turn that puts two keys (a value and its mirror) over
``objects`` objects; a line "ack <object> <value>" is printed only after the
RPC returned, i.e. after the output gate released it.
"""

from __future__ import annotations

import sys

import trio

import dotrio


class Box(dotrio.DurableObject):
    async def bump(self) -> int:
        n = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put({"n": n, "mirror": n, "pad": b"x" * 200})
        return n


async def main(data_dir: str, objects: int, durability: str) -> None:
    async with dotrio.Runtime(bindings={"BOX": Box}, data_dir=data_dir, durability=durability) as rt:
        stubs = [rt.env.BOX.get_by_name(f"o{i}") for i in range(objects)]
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        i = 0
        while True:
            k = i % objects
            n = await stubs[k].bump()
            sys.stdout.write(f"ack {k} {n}\n")
            sys.stdout.flush()
            i += 1


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "process")
