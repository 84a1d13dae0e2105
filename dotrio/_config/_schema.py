"""What a config may say: the keys, their types and ranges, and the validated
result (``Config``). No file is read and no module imported here.

Validation collects every problem before reporting: ``Checker.fail`` records
one message (naming the file, the key as a path such as
``durable_objects.bindings[1].class_name``, and what was expected) and
abandons only the value being checked; ``Checker.report`` then raises one
``ConfigError`` listing them all, one per line.
"""

from __future__ import annotations

import difflib
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn

from .._errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from pathlib import Path

    from .._object import DurableObject, WorkerEntrypoint

__all__ = [
    "CONFIG_NAMES",
    "DEFAULT_DATA_DIR",
    "DEFAULT_MAX_REQUEST_BODY",
    "MEMORY_DATA_DIR",
    "RESERVED_BINDING",
    "RESERVED_PREFIX",
    "BindingConfig",
    "Checker",
    "Config",
    "MigrationConfig",
    "ServerSettings",
    "check_top_level",
    "load_runtime",
    "load_server",
]

DEFAULT_MAX_REQUEST_BODY = 32 * 1024 * 1024
DEFAULT_DATA_DIR = ".dotrio"
MEMORY_DATA_DIR = ":memory:"
#: The server answers paths under this prefix itself (health); a binding may
#: not take its name.
RESERVED_PREFIX = "/_dotrio/"
RESERVED_BINDING = "_dotrio"
#: Discovery order of ``find_config`` (and ``dotrio serve`` without a file).
CONFIG_NAMES = ("dotrio.toml", "wrangler.jsonc", "wrangler.json", "wrangler.toml")

TOP_KEYS = frozenset(
    {"name", "main", "data_dir", "max_request_body", "runtime", "server", "vars", "durable_objects", "migrations"}
)
# Keys wrangler (or Cloudflare's dashboard) understands and dotrio does not use.
# Accepted with a warning so that a wrangler file written for Python runs as is.
WRANGLER_ONLY = frozenset(
    {
        "$schema", "account_id", "ai", "alias", "analytics_engine_datasets", "assets", "base_dir",
        "browser", "build", "cloudchamber", "compatibility_date", "compatibility_flags", "containers",
        "d1_databases", "data_blobs", "define", "dev", "dispatch_namespaces", "env",
        "find_additional_modules", "first_party_worker", "hyperdrive", "jsx_factory",
        "jsx_fragment", "keep_vars", "kv_namespaces", "legacy_env", "limits", "logfwdr", "logpush",
        "minify", "mtls_certificates", "no_bundle", "node_compat", "observability", "pipelines",
        "placement", "preserve_file_names", "preview_urls", "python_modules", "queues", "r2_buckets",
        "route", "routes", "rules", "secrets_store_secrets", "send_email", "send_metrics", "services",
        "site", "tail_consumers", "text_blobs", "triggers", "tsconfig", "unsafe", "upload_source_maps",
        "usage_model", "vectorize", "version_metadata", "wasm_modules", "workers_dev", "workflows",
    }
)
RUNTIME_FLOATS = ("idle_timeout", "hibernation_timeout", "drain_timeout")
RUNTIME_INTS = ("max_queue", "pool_size", "max_sql_result_rows")
DURABILITY = ("process", "power")
SERVERS = ("fast", "hypercorn")
MIGRATION_KEYS = frozenset({"tag", "new_classes", "new_sqlite_classes", "renamed_classes", "deleted_classes"})
BINDING_KEYS = ("name", "class_name")


@dataclass(frozen=True)
class BindingConfig:
    """One ``[[durable_objects.bindings]]`` entry, resolved."""

    name: str
    class_name: str  # as written in the file
    cls: type[DurableObject]
    namespace: str  # storage namespace: data_dir/<namespace>/, and what ids derive from


@dataclass(frozen=True)
class MigrationConfig:
    """One ``[[migrations]]`` entry, validated (class names without modules)."""

    tag: str
    new_classes: tuple[str, ...] = ()
    new_sqlite_classes: tuple[str, ...] = ()
    renamed_classes: tuple[tuple[str, str], ...] = ()
    deleted_classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerSettings:
    """``[server]``: defaults for ``dotrio serve`` (None = not set in the file)."""

    host: str | None = None
    port: int | None = None
    server: str | None = None
    shutdown_grace: float | None = None
    access_log: bool | None = None
    max_connections: int | None = None
    request_timeout: float | None = None
    max_buffered_bodies: int | None = None


@dataclass(frozen=True)
class Config:
    """A validated configuration with its classes imported.

    ``vars`` holds the final values (file, ``.dev.vars``, ``DOTRIO_VAR_*``);
    ``secrets`` names those that came from a secret source and must never be
    printed. Neither appears in ``repr()``.
    """

    path: Path
    root: Path
    name: str | None
    main: str | None
    worker: type[WorkerEntrypoint] | None
    data_dir: Path | None
    max_request_body: int
    vars: Mapping[str, Any] = field(repr=False)
    bindings: tuple[BindingConfig, ...]
    migrations: tuple[MigrationConfig, ...] = ()
    runtime: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    server: ServerSettings = field(default_factory=ServerSettings)
    warnings: tuple[str, ...] = ()
    #: var name -> where its value came from, for the vars that are secrets
    #: (``.dev.vars``, ``DOTRIO_VAR_<NAME>``, ``{ env = "NAME" }``).
    secrets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    #: Files whose change means the config must be read again (``dotrio dev``).
    sources: tuple[Path, ...] = ()

    @property
    def namespace_names(self) -> dict[str, str]:
        """Class ``__name__`` -> storage namespace, where they differ."""
        return {b.cls.__name__: b.namespace for b in self.bindings if b.cls.__name__ != b.namespace}

    def runtime_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``dotrio.Runtime(**...)``."""
        kwargs: dict[str, Any] = {
            "bindings": {b.name: b.cls for b in self.bindings},
            "data_dir": self.data_dir,
            "vars": dict(self.vars),
        }
        kwargs.update(self.runtime)
        names = self.namespace_names
        if names:
            kwargs["namespace_names"] = names
        return kwargs


# ---- checking -----------------------------------------------------------------------

_MISSING: Any = object()


class Invalid(Exception):
    """The value being checked is bad; its message is already recorded."""


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


def did_you_mean(key: str, known: Iterable[str]) -> str | None:
    """The known key closest to a misspelt ``key``, if one is close enough."""
    leaf = key.rpartition(".")[2]
    close = difflib.get_close_matches(leaf, sorted(known), n=1, cutoff=0.6)
    return close[0] if close else None


class Checker:
    """Builds errors that name the file and the key; collects them and the warnings."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def fail(self, key: str | None, expected: str, got: Any = _MISSING, detail: str | None = None) -> NoReturn:
        """Record a problem with ``key`` and abandon the value being checked."""
        message = f"{self.path}: {key}: expected {expected}" if key else f"{self.path}: expected {expected}"
        if got is not _MISSING:
            message += f", got {_show(got)}"
        if detail:
            message += f" ({detail})"
        self.errors.append(message)
        raise Invalid(message)

    def warn(self, key: str, message: str) -> None:
        """Record a warning about ``key`` (shown by the CLI, not an error)."""
        self.warnings.append(f"{self.path}: {key}: {message}")

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Checking inside goes on after this block even if it found a problem."""
        try:
            yield
        except Invalid:
            pass

    @property
    def ok(self) -> bool:
        """No problem recorded so far."""
        return not self.errors

    def report(self) -> None:
        """Raise one ConfigError listing every problem recorded, if any."""
        if self.errors:
            raise ConfigError("\n".join(self.errors))

    def table(self, key: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, "a table", value)
        return value

    def string(self, key: str, value: Any, *, empty: bool = False) -> str:
        if not isinstance(value, str) or (not empty and not value):
            self.fail(key, "a non-empty string", value)
        return value

    def number(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
            self.fail(key, "a positive number of seconds", value)
        return float(value)

    def integer(self, key: str, value: Any, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(key, f"an integer >= {minimum}", value)
        return value

    def names(self, key: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.fail(key, "an array of class names", value)
        return tuple(class_part(self, f"{key}[{i}]", item) for i, item in enumerate(value))

    def unknown(self, key: str, allowed: Iterable[str], note: str = "", also: Iterable[str] = ()) -> NoReturn:
        """An unknown key: the message lists the known ones and the closest
        match among them and ``also`` (keys accepted but not listed)."""
        allowed = list(allowed)
        guess = did_you_mean(key, [*allowed, *also])
        detail = "this key is unknown" + (f"; did you mean {guess!r}?" if guess else "")
        self.fail(key, f"a known key (one of: {', '.join(allowed)}{note})", detail=detail)


def class_part(check: Checker, key: str, value: Any) -> str:
    """A class name as migrations name it: ``Class`` or ``module:Class`` -> ``Class``."""
    if not isinstance(value, str) or not value:
        check.fail(key, "a class name", value)
    name = value.rpartition(":")[2].rpartition(".")[2]
    if not name.isidentifier():
        check.fail(key, "a class name (a Python identifier)", value)
    return name


# ---- sections without I/O -------------------------------------------------------------


def check_top_level(check: Checker, data: Mapping[str, Any]) -> None:
    """Unknown top-level keys are errors; wrangler-only ones are warnings."""
    for key in data:
        with check.guard():
            if key in WRANGLER_ONLY:
                check.warn(key, "only wrangler uses this key; dotrio ignores it")
            elif key not in TOP_KEYS:
                check.unknown(key, sorted(TOP_KEYS), " (and wrangler-only keys, ignored)", also=WRANGLER_ONLY)


def load_runtime(check: Checker, value: Any) -> dict[str, Any]:
    """``[runtime]``: the Runtime keyword arguments a file may set."""
    table = check.table("runtime", value)
    out: dict[str, Any] = {}
    allowed = (*RUNTIME_FLOATS, *RUNTIME_INTS, "durability")
    for key, item in table.items():
        path = f"runtime.{key}"
        with check.guard():
            if key in RUNTIME_FLOATS:
                out[key] = check.number(path, item)
            elif key in RUNTIME_INTS:
                out[key] = check.integer(path, item, 1)
            elif key == "durability":
                if item not in DURABILITY:
                    check.fail(path, "'process' or 'power'", item)
                out[key] = item
            else:
                check.unknown(path, allowed)
    return out


def _port(check: Checker, path: str, item: Any) -> int:
    if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= 65535:
        check.fail(path, "a port number from 0 to 65535", item)
    return item


def _server_name(check: Checker, path: str, item: Any) -> str:
    if item not in SERVERS:
        check.fail(path, "'fast' or 'hypercorn'", item)
    return str(item)


def _grace(check: Checker, path: str, item: Any) -> float:
    if isinstance(item, bool) or not isinstance(item, (int, float)) or not 0 <= item < math.inf:
        check.fail(path, "a number of seconds >= 0", item)
    return float(item)


def _flag(check: Checker, path: str, item: Any) -> bool:
    if not isinstance(item, bool):
        check.fail(path, "true or false", item)
    return item


def _connections(check: Checker, path: str, item: Any) -> int:
    if isinstance(item, bool) or not isinstance(item, int) or item < 1:
        check.fail(path, "a positive whole number of connections", item)
    return item


def _timeout(check: Checker, path: str, item: Any) -> float:
    if isinstance(item, bool) or not isinstance(item, (int, float)) or not 0 < item < math.inf:
        check.fail(path, "a number of seconds > 0", item)
    return float(item)


def _bytes(check: Checker, path: str, item: Any) -> int:
    if isinstance(item, bool) or not isinstance(item, int) or item < 1:
        check.fail(path, "a positive whole number of bytes", item)
    return item


#: ``[server]`` key -> its validator. New server settings are added here and
#: as a field of ``ServerSettings``.
SERVER_KEYS: dict[str, Any] = {
    "host": lambda check, path, item: check.string(path, item),
    "port": _port,
    "server": _server_name,
    "shutdown_grace": _grace,
    "access_log": _flag,
    "max_connections": _connections,
    "request_timeout": _timeout,
    "max_buffered_bodies": _bytes,
}


def load_server(check: Checker, value: Any) -> ServerSettings:
    """``[server]``: defaults for ``dotrio serve``."""
    table = check.table("server", value)
    settings: dict[str, Any] = {}
    for key, item in table.items():
        path = f"server.{key}"
        with check.guard():
            validate = SERVER_KEYS.get(key)
            if validate is None:
                check.unknown(path, SERVER_KEYS)
            settings[key] = validate(check, path, item)
    return ServerSettings(**settings)
