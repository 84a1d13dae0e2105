"""The public surface, the trio way: every name ``dotrio`` exports exists, says
``dotrio.X`` (not the private module it lives in), is documented, and so is
every public method; nothing else leaks out; the handles dotrio gives to user
code cannot be built or subclassed by it."""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Iterator
from typing import Any

import pytest

import dotrio
import dotrio.server
import dotrio.storage
import dotrio.testing

# Subpackages are attributes of the package once imported; they are public.
SUBPACKAGES = {"runtime", "storage", "server", "testing"}

HANDLES = [
    dotrio.DurableObjectState,
    dotrio.DurableObjectStub,
    dotrio.WebSocket,
    dotrio.SqlCursor,
    dotrio.storage.Transaction,
    dotrio.storage.ObjectStorage,
]


def test_every_export_exists_says_dotrio_and_has_a_docstring() -> None:
    assert len(set(dotrio.__all__)) == len(dotrio.__all__)
    for name in dotrio.__all__:
        obj = getattr(dotrio, name)
        assert obj.__module__ == "dotrio", f"dotrio.{name}.__module__ is {obj.__module__!r}"
        assert inspect.getdoc(obj), f"dotrio.{name} has no docstring"
        if isinstance(obj, type):
            assert obj.__qualname__ == name


def test_no_accidental_public_names() -> None:
    # (pytest, which loads dotrio.testing as a plugin, adds "@py_builtins"-style names: not identifiers)
    public = {n for n in vars(dotrio) if n.isidentifier() and not n.startswith("_")}
    assert public - set(dotrio.__all__) <= SUBPACKAGES, sorted(public - set(dotrio.__all__) - SUBPACKAGES)


def test_public_storage_and_server_types_say_their_package() -> None:
    for cls in (dotrio.storage.ObjectStorage, dotrio.storage.Transaction, dotrio.storage.SqlStorage):
        assert cls.__module__ == "dotrio.storage"
    for name in ("ServerControl", "ServerLimits", "Dispatcher", "serve", "serve_fast", "serve_hypercorn"):
        assert getattr(dotrio.server, name).__module__ == "dotrio.server"


def test_tracebacks_and_pickles_name_the_public_path() -> None:
    assert repr(dotrio.StorageError("x")) == "StorageError('x')"
    assert dotrio.StorageError.__module__ == "dotrio"
    # Classes pickle by their public name, which resolves.
    assert pickle.loads(pickle.dumps(dotrio.Request)) is dotrio.Request
    info = dotrio.AlarmInfo(retry_count=1, is_retry=True)
    assert pickle.loads(pickle.dumps(info)) == info


@pytest.mark.parametrize("cls", HANDLES, ids=lambda c: c.__qualname__)
def test_handles_have_no_public_constructor_and_cannot_be_subclassed(cls: type) -> None:
    with pytest.raises(TypeError, match="no public constructor"):
        cls()
    with pytest.raises(TypeError, match="does not support subclassing"):
        type("Sub", (cls,), {})
    assert getattr(cls, "__final__", False), f"{cls.__qualname__} is not marked @final"


def _public_members(cls: type) -> Iterator[tuple[str, Any]]:
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property) or inspect.isfunction(value):
            yield name, value


def _documented_classes() -> Iterator[tuple[str, type]]:
    for pkg, names in (
        (dotrio, dotrio.__all__),
        (dotrio.storage, ["ObjectStorage", "Transaction", "SqlStorage"]),
        (dotrio.server, dotrio.server.__all__),
        (dotrio.testing, dotrio.testing.__all__),
    ):
        for name in names:
            obj = getattr(pkg, name)
            if isinstance(obj, type):
                yield f"{pkg.__name__}.{name}", obj


def test_every_public_method_has_a_docstring() -> None:
    missing = [
        f"{label}.{name}"
        for label, cls in _documented_classes()
        for name, member in _public_members(cls)
        if not (member.__doc__ or "").strip()
    ]
    assert not missing, "public methods without a docstring: " + ", ".join(missing)


def test_public_functions_have_docstrings() -> None:
    for pkg in (dotrio, dotrio.server, dotrio.testing):
        for name in pkg.__all__:
            obj = getattr(pkg, name)
            if inspect.isfunction(obj):
                assert inspect.getdoc(obj), f"{pkg.__name__}.{name}"
