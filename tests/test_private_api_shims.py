"""The two shims that hold dotrio's uses of other libraries' private APIs
(issue 10, item 4): ``dotrio.storage._trio_shim`` and
``dotrio.server._hypercorn_shim``.

These tests are the tripwire for upgrades: a new Trio or hypercorn that moves
or reshapes anything the shims rely on fails here, by name, before it can
quietly change behaviour (the shims themselves then fall back, with a
warning, to something less exact but correct)."""

from __future__ import annotations

import inspect
import logging

import pytest
import trio
import trio.testing

from dotrio.server import _hypercorn_shim
from dotrio.storage import _trio_shim
from dotrio.storage._trio_shim import cancel_for_passed_deadline

# ---- Trio ------------------------------------------------------------------------------


def test_trio_is_a_version_the_shim_was_checked_against() -> None:
    low, high = _trio_shim.TESTED_TRIO
    assert low <= _trio_shim.trio_version() <= high, (
        f"trio {trio.__version__} is new to dotrio/storage/_trio_shim.py: check the private "
        "attributes it uses (this file's tests), then widen TESTED_TRIO"
    )


def test_trio_internals_the_shim_uses_have_the_expected_shape() -> None:
    assert _trio_shim.shape_problems() == []
    assert _trio_shim._USABLE

    async def main() -> None:
        task = trio.lowlevel.current_task()
        with trio.CancelScope(deadline=123.0) as outer, trio.CancelScope() as inner:  # noqa: ASYNC100 - sync code under a deadline is the point
            status = task._cancel_status
            assert status._scope is inner
            assert status.parent._scope is outer
            assert outer.deadline == 123.0
        made = trio.Cancelled._create(source="deadline")
        assert type(made) is trio.Cancelled
        assert made.source == "deadline"

    trio.run(main)


async def test_a_passed_deadline_becomes_the_cancellation_its_scope_catches(mock_clock: trio.testing.MockClock) -> None:
    assert cancel_for_passed_deadline() is None  # no deadline at all
    with trio.move_on_after(1) as scope:  # noqa: ASYNC100 - sync code under a deadline is the point
        assert cancel_for_passed_deadline() is None  # not passed yet
        mock_clock.jump(2)  # time passes during a synchronous call
        exc = cancel_for_passed_deadline()
        assert isinstance(exc, trio.Cancelled)
        raise exc
    assert scope.cancelled_caught

    with pytest.raises(trio.TooSlowError), trio.fail_after(1):  # noqa: ASYNC100 - sync code under a deadline is the point
        mock_clock.jump(2)
        raise cancel_for_passed_deadline() or AssertionError("no cancellation")


async def test_only_the_scope_whose_deadline_passed_is_cancelled(mock_clock: trio.testing.MockClock) -> None:
    with trio.move_on_after(100) as outer:
        with trio.move_on_after(1) as inner:  # noqa: ASYNC100 - sync code under a deadline is the point
            mock_clock.jump(2)
            raise cancel_for_passed_deadline() or AssertionError("no cancellation")
        assert inner.cancelled_caught
        await trio.lowlevel.checkpoint()  # the outer scope goes on
    assert not outer.cancel_called


async def test_a_shield_keeps_a_passed_outer_deadline_out(mock_clock: trio.testing.MockClock) -> None:
    with trio.move_on_after(1) as outer:
        with trio.CancelScope(shield=True):  # noqa: ASYNC100 - sync code under a deadline is the point
            mock_clock.jump(2)
            assert cancel_for_passed_deadline() is None
        await trio.lowlevel.checkpoint()  # Trio cancels it here, as usual
    assert outer.cancelled_caught


def test_trio_out_of_range_is_reported_and_falls_back(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(_trio_shim, "TESTED_TRIO", ((99, 0), (99, 1)))
    with caplog.at_level(logging.WARNING, logger="dotrio.storage"):
        assert _trio_shim._check() is False
    assert "raise StorageError instead of trio.Cancelled" in caplog.text
    assert f"trio {trio.__version__} is outside the versions dotrio was checked against (99.0 to 99.1)" in caplog.text
    monkeypatch.setattr(_trio_shim, "_USABLE", False)

    async def main() -> None:
        with trio.move_on_after(0):  # noqa: ASYNC100 - sync code under a deadline is the point
            # The deadline has passed, but the shim may not touch trio's internals.
            assert cancel_for_passed_deadline() is None

    trio.run(main)


# ---- hypercorn -------------------------------------------------------------------------


def test_hypercorn_is_a_version_the_shim_was_checked_against() -> None:
    from importlib import metadata

    low, high = _hypercorn_shim.TESTED_HYPERCORN
    assert low <= _hypercorn_shim.hypercorn_version() <= high, (
        f"hypercorn {metadata.version('hypercorn')} is new to dotrio/server/_hypercorn_shim.py: "
        "compare its ws_stream.WSStream.handle/_handle_events with the subclass, then widen TESTED_HYPERCORN"
    )


def test_hypercorn_internals_the_shim_uses_have_the_expected_shape() -> None:
    from hypercorn.config import Config
    from hypercorn.protocol import ws_stream
    from hypercorn.protocol.events import StreamClosed
    from wsproto.connection import ConnectionState
    from wsproto.events import CloseConnection

    assert _hypercorn_shim.shape_problems() == []
    base = ws_stream.WSStream
    # The methods the subclass overrides or calls, with the parameters it passes.
    assert list(inspect.signature(base.handle).parameters) == ["self", "event"]
    assert list(inspect.signature(base._handle_events).parameters) == ["self"]
    assert list(inspect.signature(base._send_wsproto_event).parameters) == ["self", "event"]
    for method in (base.handle, base._handle_events, base._send_wsproto_event):
        assert inspect.iscoroutinefunction(method)
    assert list(inspect.signature(base.__init__).parameters)[1:3] == ["app", "config"]
    # The instance state it reads and writes.
    async def send(event: object) -> None:
        pass

    stream = base(None, Config(), None, None, False, None, None, send, 7)
    assert stream.app_put is None and stream.closed is False and stream.stream_id == 7
    assert stream.send is send
    for name in ("extend", "clear", "to_message"):
        assert callable(getattr(stream.buffer, name))
    assert issubclass(ws_stream.FrameTooLargeError, Exception)
    assert StreamClosed(stream_id=7).stream_id == 7
    assert CloseConnection(code=1009, reason="x").response().code == 1009
    assert {"OPEN", "LOCAL_CLOSING", "REMOTE_CLOSING"} <= set(ConnectionState.__members__)


def test_close_codes_are_enabled_per_config_not_for_the_whole_process() -> None:
    import hypercorn.protocol.h2 as h2_module
    import hypercorn.protocol.h11 as h11_module
    from hypercorn.config import Config
    from hypercorn.protocol.ws_stream import WSStream

    ours, theirs = Config(), Config()
    assert _hypercorn_shim.enable_close_codes(ours) is True
    assert _hypercorn_shim.enable_close_codes(ours) is True  # idempotent
    for module in (h11_module, h2_module):
        made = module.WSStream(None, ours, None, None, False, None, None, None, 1)
        assert type(made) is not WSStream and isinstance(made, WSStream)
        assert type(made) is module.WSStream.dotrio_class
        # Another hypercorn server in the same process gets hypercorn's own class.
        assert type(module.WSStream(None, theirs, None, None, False, None, None, None, 1)) is WSStream


def test_hypercorn_out_of_range_is_reported_and_left_alone(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    from hypercorn.config import Config

    monkeypatch.setattr(_hypercorn_shim, "TESTED_HYPERCORN", ((99, 0), (99, 1)))
    monkeypatch.setattr(_hypercorn_shim, "_installed", None)
    config = Config()
    with caplog.at_level(logging.WARNING, logger="dotrio.server"):
        assert _hypercorn_shim.enable_close_codes(config) is False
    assert "close codes and reasons from clients will reach handlers as 1000/1006" in caplog.text
    assert "is outside the versions dotrio was checked against (99.0 to 99.1)" in caplog.text
    assert config not in _hypercorn_shim._enabled


def test_strict_http1_hook_has_the_shape_it_needs_and_is_per_config() -> None:
    import hypercorn.protocol as protocol_module
    from hypercorn.config import Config
    from hypercorn.protocol.h11 import H11Protocol

    assert _hypercorn_shim.h11_shape_problems() == []
    assert inspect.iscoroutinefunction(H11Protocol._create_stream)
    assert list(inspect.signature(H11Protocol._create_stream).parameters) == ["self", "request"]
    assert list(inspect.signature(H11Protocol._send_h11_event).parameters) == ["self", "event"]
    ours, theirs = Config(), Config()
    assert _hypercorn_shim.enable_strict_http1(ours) is True
    assert _hypercorn_shim.enable_strict_http1(ours) is True  # idempotent
    from hypercorn.trio.worker_context import WorkerContext

    args = (WorkerContext(None), None, None, False, None, None, None)
    made = protocol_module.H11Protocol(None, ours, *args)
    assert type(made) is protocol_module.H11Protocol.dotrio_class and isinstance(made, H11Protocol)
    assert type(protocol_module.H11Protocol(None, theirs, *args)) is H11Protocol
