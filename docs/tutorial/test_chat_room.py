import json

import pytest

from chat_room import ChatRoom
from dotrio.testing import evict


async def join(room, user):
    resp = await room.fetch("http://chat/ROOMS/lobby/ws", headers={"upgrade": "websocket", "x-user": user})
    assert resp.status == 101
    ws = resp.web_socket
    ws.accept()  # our end of the in-process pair
    return ws


@pytest.mark.dotrio(bindings={"ROOMS": ChatRoom})
async def test_everyone_hears_everything_and_it_is_kept(dotrio_runtime):
    room = dotrio_runtime.env.ROOMS.get_by_name("lobby")
    alice = await join(room, "alice")
    bob = await join(room, "bob")

    alice.send("hi bob")
    assert json.loads(await bob.receive()) == {"user": "alice", "text": "hi bob"}
    assert json.loads(await alice.receive()) == {"user": "alice", "text": "hi bob"}

    # Hibernate the room: the instance goes, the sockets stay.
    assert await evict(room)
    bob.send("still there?")
    assert json.loads(await alice.receive())["text"] == "still there?"

    assert await room.history() == [
        {"user": "alice", "text": "hi bob"},
        {"user": "bob", "text": "still there?"},
    ]
