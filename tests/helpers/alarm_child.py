"""Child process for the alarm crash test: an ``alarm()`` that is running when
the process is killed.

``arm``: sets the alarm of object "k" to now (and one an hour away on "later"),
then its ``alarm()`` counts the attempt in storage, prints "started <retry>"
and hangs until killed. ``recover``: the same data dir; ``alarm()`` prints
"ran <retry> <attempts>" and returns; the process then exits cleanly.
"""

from __future__ import annotations

import sys

import trio

import dotrio


class Crashy(dotrio.DurableObject):
    async def arm(self, when: int) -> None:
        await self.ctx.storage.set_alarm(when)

    async def alarm(self, info: dotrio.AlarmInfo) -> None:
        attempts = (await self.ctx.storage.get("attempts") or 0) + 1
        await self.ctx.storage.put("attempts", attempts)
        if MODE == "arm":
            # Yielding lets the flusher commit the attempt count first.
            await trio.sleep(0.05)
            print(f"started {info.retry_count}", flush=True)
            await trio.sleep_forever()
        print(f"ran {info.retry_count} {attempts}", flush=True)


MODE = ""


async def main(data_dir: str) -> None:
    async with dotrio.Runtime(bindings={"C": Crashy}, data_dir=data_dir) as rt:
        if MODE == "arm":
            now = rt.clock.now_ms()
            await rt.env.C.get_by_name("later").arm(now + 3_600_000)
            await rt.env.C.get_by_name("k").arm(now)
            await trio.sleep_forever()
        with trio.fail_after(20):
            while rt.alarms.statistics().alarms_run < 1:
                await trio.sleep(0.01)
        print("done", flush=True)


if __name__ == "__main__":
    MODE = sys.argv[2]
    trio.run(main, sys.argv[1])
