"""The one place dotrio reaches into Trio's internals.

``sql.exec`` is synchronous (as on Cloudflare), yet a Trio deadline of the
calling task interrupts a long statement (the apsw progress handler in
``_sql``). The caller's ``fail_after``/``move_on_after`` must then see an
ordinary Trio cancellation, and that needs two things Trio has no public API
for in synchronous code:

* finding the cancel scope whose deadline passed (the run loop marks it
  cancelled on its next pass, which a synchronous call does not reach): the
  task's private ``_cancel_status`` chain, each link with ``_scope`` and
  ``parent``;
* making the ``trio.Cancelled`` to raise: its private ``_create`` constructor.

Whether a deadline passed at all is asked through the public
``trio.current_effective_deadline()`` first, so the private path runs only
when there is something to cancel. Nothing here yields.

The Trio versions this was checked against are ``TESTED_TRIO``. Outside that
range, or if the internals are not the shape below, a warning is logged once
at import and :func:`cancel_for_passed_deadline` returns None: the caller
then raises a StorageError saying the deadline passed, never something
half-right. ``tests/test_private_api_shims.py`` fails when a Trio upgrade
changes any of this.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import trio

__all__ = ["TESTED_TRIO", "cancel_for_passed_deadline", "shape_problems", "trio_version"]

#: Trio versions (major, minor), lowest included and highest included, whose
#: internals this module was checked against.
TESTED_TRIO = ((0, 25), (0, 35))

log = logging.getLogger("dotrio.storage")


def trio_version() -> tuple[int, int]:
    """The installed Trio's (major, minor)."""
    match = re.match(r"(\d+)\.(\d+)", trio.__version__)
    if match is None:
        return (0, 0)
    return (int(match.group(1)), int(match.group(2)))


def shape_problems() -> list[str]:
    """What this module needs from Trio's internals and does not find (empty
    when all is in place). Checked without a running Trio loop."""
    problems = []
    create = getattr(trio.Cancelled, "_create", None)
    if not callable(create):
        problems.append("trio.Cancelled._create (the private constructor) is missing")
    fields = getattr(trio.lowlevel.Task, "__attrs_attrs__", None)
    names = {f.name for f in fields} if fields is not None else set()
    if "_cancel_status" not in names:
        problems.append("trio.lowlevel.Task has no _cancel_status field")
    status_cls = getattr(getattr(trio, "_core", None), "_run", None)
    status_cls = getattr(status_cls, "CancelStatus", None)
    if "_scope" not in {f.name for f in getattr(status_cls, "__attrs_attrs__", ())}:
        problems.append("trio's CancelStatus has no _scope field")
    if not isinstance(getattr(status_cls, "parent", None), property):
        problems.append("trio's CancelStatus has no parent property")
    return problems


def _check() -> bool:
    problems = shape_problems()
    version = trio_version()
    low, high = TESTED_TRIO
    if not low <= version <= high:
        problems.append(
            f"trio {trio.__version__} is outside the versions dotrio was checked against "
            f"({low[0]}.{low[1]} to {high[0]}.{high[1]})"
        )
    if problems:
        log.warning(
            "a deadline that interrupts sql.exec() will raise StorageError instead of trio.Cancelled: %s",
            "; ".join(problems),
        )
    return not problems


_USABLE = _check()


def cancel_for_passed_deadline() -> BaseException | None:
    """If a deadline of the running task has passed, cancel the scope it
    belongs to (the public ``cancel()``, which the run loop is about to do
    anyway) and return the ``trio.Cancelled`` to raise, which that scope then
    catches as it would at a checkpoint. None if no deadline passed or Trio's
    internals are not what this module knows. Must run inside a Trio task;
    never yields."""
    now = trio.current_time()
    if trio.current_effective_deadline() > now or not _USABLE:
        return None
    try:
        status: Any = trio.lowlevel.current_task()._cancel_status
        while status is not None:
            scope = status._scope
            if scope.deadline <= now or scope.cancel_called:
                scope.cancel()
                try:
                    return trio.Cancelled._create(source="deadline")
                except TypeError:  # Trio before 0.30 had no cancel reasons
                    return trio.Cancelled._create()
            status = status.parent
    except AttributeError:
        pass
    return None
