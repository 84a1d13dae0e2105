"""Small helpers for dotrio's public surface, after trio's ``_util``.

* :class:`NoPublicConstructor`: the metaclass of handle classes that user code
  receives but never builds or subclasses (``DurableObjectState``, stubs,
  ``WebSocket``, ``SqlCursor``, ``Transaction``, ``ctx.storage``). Calling the
  class raises TypeError; the module that owns it builds instances with
  ``Cls._create(...)``, and other modules through a factory function there.
* :func:`fixup_module_metadata`: rewrites ``__module__`` of the names a
  package exports, so that reprs, tracebacks and the docs say ``dotrio.X``
  rather than the private module ``X`` happens to live in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["NoPublicConstructor", "fixup_module_metadata"]

T = TypeVar("T")


class NoPublicConstructor(type):
    """Metaclass: the class can be neither instantiated by calling it nor
    subclassed. Its own module builds instances with ``Cls._create(...)``."""

    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any
    ) -> NoPublicConstructor:
        for base in bases:
            if isinstance(base, NoPublicConstructor):
                raise TypeError(f"{base.__module__}.{base.__qualname__} does not support subclassing")
        return super().__new__(mcs, name, bases, namespace, **kwargs)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} has no public constructor: "
            "dotrio creates these and hands them to your code"
        )

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]


def fixup_module_metadata(module_name: str, namespace: Mapping[str, Any], names: list[str]) -> None:
    """Set ``__module__`` to ``module_name`` on each of ``names`` in
    ``namespace`` that lives in a private dotrio module, and on the methods
    and properties of such classes."""
    seen: set[int] = set()

    def fix(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        mod = getattr(obj, "__module__", None)
        if not isinstance(mod, str) or not mod.startswith("dotrio."):
            return
        try:
            obj.__module__ = module_name
        except (AttributeError, TypeError):
            return
        if isinstance(obj, type):
            for value in list(vars(obj).values()):
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                elif isinstance(value, property):
                    value = value.fget
                if callable(value) and not isinstance(value, type):
                    fix(value)

    for name in names:
        fix(namespace[name])
