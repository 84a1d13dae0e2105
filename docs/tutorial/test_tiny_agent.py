import pytest

from dotrio.testing import advance, evict
from tiny_agent import Agent


@pytest.mark.dotrio(bindings={"AGENTS": Agent})
async def test_notes_loop_and_reminders(dotrio_runtime):
    agent = dotrio_runtime.env.AGENTS.get_by_name("ada")
    await agent.remember("Deploys happen on Fridays")
    assert await agent.recall("deploying friday") == ["Deploys happen on Fridays"]

    await agent.start(every=60)
    await agent.remind("water the plants", after=90)
    await evict(agent)          # the loop lives in storage, not in memory

    await advance(10 * 60 + 1)  # ten virtual minutes, in milliseconds of real time
    assert await agent.ticks() == 10
    assert await agent.recall("plants") == ["reminder: water the plants"]
    assert await agent.recall("thought") == ["I have thought 10 times"]

    assert await agent.stop() is True
    await advance(3600)
    assert await agent.ticks() == 10
