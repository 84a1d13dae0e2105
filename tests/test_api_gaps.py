"""Small API gaps a user hit: ``Request.query`` is a parsed multidict (the raw
string is ``Request.query_string``), and RPC values that cannot be copied
are reported as RPC errors, not storage errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

import dotrio
from dotrio import QueryParams, Request

if TYPE_CHECKING:
    from collections.abc import Iterator


def test_query_is_a_parsed_multidict_and_the_raw_string_is_kept() -> None:
    r = Request("https://x.test/C/a/path?user=ada&tag=a&tag=b+c&empty=&flag&name=%C3%A9%26#frag")
    assert r.query.get("user") == "ada"
    assert r.query["tag"] == "a"
    assert r.query.getlist("tag") == ["a", "b c"]
    assert r.query.get("empty") == "" and r.query.get("flag") == ""
    assert r.query.get("name") == "é&"
    assert r.query.get("missing") is None and r.query.get("missing", "d") == "d"
    assert r.query.getlist("missing") == []
    with pytest.raises(KeyError):
        r.query["missing"]
    assert "user" in r.query and "missing" not in r.query
    assert list(r.query) == ["user", "tag", "empty", "flag", "name"] and len(r.query) == 5
    assert dict(r.query) == {"user": "ada", "tag": "a", "empty": "", "flag": "", "name": "é&"}
    assert r.query.items(multi=True)[1:3] == [("tag", "a"), ("tag", "b c")]
    assert r.query_string == "user=ada&tag=a&tag=b+c&empty=&flag&name=%C3%A9%26"
    assert str(r.query) == r.query_string
    assert r.query is r.query  # parsed once
    bare = Request("https://x.test/")
    assert bare.query_string == "" and len(bare.query) == 0 and bare.query.get("user") is None
    assert QueryParams("?a=1").get("a") == "1"
    with pytest.raises(TypeError):
        QueryParams(b"a=1")  # type: ignore[arg-type]


class Gen(dotrio.DurableObject):
    async def numbers(self) -> Iterator[int]:
        return (i for i in range(3))

    async def nested(self) -> dict[str, Any]:
        return {"ok": [1, object()]}

    async def take(self, *args: Any, **kwargs: Any) -> int:
        return len(args) + len(kwargs)

    async def fetch(self, request: Request) -> dotrio.Response:
        return dotrio.Response(request.query.get("user") or "nobody")


async def test_rpc_values_that_cannot_be_copied_say_rpc() -> None:
    async with dotrio.Runtime(bindings={"G": Gen}) as rt:
        stub = rt.env.G.get_by_name("g")
        with pytest.raises(TypeError, match=r"^cannot return value of type 'generator' from RPC; supported: "):
            await stub.numbers()
        with pytest.raises(TypeError, match=r"^cannot return value of type 'object' from RPC \(at \['ok'\]\[1\]\)"):
            await stub.nested()
        with pytest.raises(TypeError, match=r"^cannot pass value of type 'generator' to RPC \(at args\[1\]\)"):
            await stub.take(1, (i for i in range(2)))
        bytearray_kwarg = r"^cannot pass value of type 'bytearray' to RPC \(at kwargs\['b'\]\); use bytes"
        with pytest.raises(TypeError, match=bytearray_kwarg):
            await stub.take(b=bytearray(b"x"))
        assert await stub.take(1, b=2) == 2
        # The query reaches the object parsed, through fetch.
        assert (await stub.fetch("https://x.test/?user=ada")).text() == "ada"
