"""The agent of the tutorial: notes with full-text search, a loop, reminders."""

from __future__ import annotations

from dotrio import DurableObject, DurableObjectState, Env


class Agent(DurableObject):
    def __init__(self, ctx: DurableObjectState, env: Env) -> None:
        super().__init__(ctx, env)
        # An FTS5 table: SQLite's full-text index, stemming English words.
        ctx.storage.sql.exec(
            "CREATE VIRTUAL TABLE IF NOT EXISTS notes USING fts5(text, tokenize = 'porter unicode61')"
        )

    async def remember(self, text: str) -> None:
        self.ctx.storage.sql.exec("INSERT INTO notes(text) VALUES (?)", text)

    def recall(self, words: str) -> list[str]:
        # Quote each word so that user text is never read as FTS5 query syntax.
        query = " OR ".join(f'"{w}"' for w in words.split() if w.isalnum())
        if not query:
            return []
        rows = self.ctx.storage.sql.exec("SELECT text FROM notes WHERE notes MATCH ? ORDER BY rank", query)
        return [row["text"] for row in rows]

    async def start(self, every: float) -> None:
        """Think every ``every`` seconds: a repeating schedule named "loop"."""
        await self.schedule(every, "_think", None, repeat=every, id="loop")

    async def stop(self) -> bool:
        return await self.cancel_schedule("loop")

    async def _think(self, _: None) -> None:
        # A private method: the scheduler may call it, RPC callers may not.
        ticks = (await self.ctx.storage.get("ticks") or 0) + 1
        await self.ctx.storage.put("ticks", ticks)
        if ticks % 10 == 0:
            await self.remember(f"I have thought {ticks} times")

    async def remind(self, text: str, after: float) -> str:
        return await self.schedule(after, "_remind", text)

    async def _remind(self, text: str) -> None:
        await self.remember(f"reminder: {text}")

    async def ticks(self) -> int:
        return await self.ctx.storage.get("ticks") or 0
