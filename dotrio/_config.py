"""``dotrio.toml`` (and a Python ``wrangler.toml``): load, validate, import.

Every problem is a ``ConfigError`` whose message names the file, the key (as
a path such as ``durable_objects.bindings[1].class_name``) and what was
expected, so that ``dotrio serve`` can print it and exit without a traceback.

Keys
----
Top level: ``name``, ``main``, ``data_dir``, ``max_request_body``, and the
tables ``[runtime]``, ``[server]``, ``[vars]``, ``[[durable_objects.bindings]]``
and ``[[migrations]]``. Unknown keys are errors (a typo must not be silently
ignored), except the keys only wrangler understands (``compatibility_date``,
``routes``, ``kv_namespaces``, ...), which are accepted with a warning in
``Config.warnings`` so that one file can serve both. Wrangler features whose
silent omission would change what the program does (``script_name`` on a
binding, ``transferred_classes``) are errors.

* ``main = "module[:Class]"`` or ``"path/to/file.py[:Class]"``: the worker
  entry. Without ``:Class`` the module's ``Default`` class (Cloudflare's Python
  Workers convention) is used, else its only ``WorkerEntrypoint`` subclass;
  a module with none only serves to resolve bare class names, and requests
  use default routing.
* ``data_dir`` (default ``".dotrio"``); ``":memory:"`` keeps everything in
  memory (lost on exit; for trials and tests).
* ``max_request_body``: bytes, default 32 MiB.
* ``[runtime]``: ``idle_timeout``, ``hibernation_timeout``, ``drain_timeout``
  (seconds, > 0), ``max_queue``, ``pool_size`` (ints >= 1), ``durability``
  (``"process"`` or ``"power"``): the ``Runtime`` keyword arguments.
* ``[server]``: ``host``, ``port``, ``server`` (``"fast"`` or
  ``"hypercorn"``), ``shutdown_grace`` (seconds), ``access_log`` (bool):
  defaults for ``dotrio serve``; command-line options win.
* ``[vars]``: any TOML values, on ``env`` beside the bindings.
* ``[[durable_objects.bindings]]``: ``name`` (a Python identifier, not
  ``_dotrio``, which the server reserves) and ``class_name``
  (``"module:Class"``, or a bare ``"Class"`` looked up in ``main``'s module).

Migrations
----------
``[[migrations]]`` entries (``tag`` plus ``new_classes``,
``new_sqlite_classes``, ``renamed_classes = [{from = "A", to = "B"}]``,
``deleted_classes``) are replayed in order, as Cloudflare does. Without any
migration every bound class counts as created; with migrations every bound
class must be alive after them (a typo or a forgotten migration is an error).
``new_classes`` and ``new_sqlite_classes`` mean the same here: every dotrio
object is SQLite-backed.

A class name is also its *storage namespace*: the directory
``data_dir/<namespace>/`` and the key its ids are derived from. A renamed
class keeps its first name as its namespace (``Runtime(namespace_names=...)``)
and nothing moves on disk. Moving the directory instead would not keep the
objects: ``id_from_name`` depends on the namespace, so the same name would
reach a different id. Hence a name that is still some class's namespace (or
was a deleted class's) cannot be given to a new class.

A deleted class refuses to start while ``data_dir/<namespace>/`` still holds
object databases: delete that directory to delete the data (that is the
irreversible step Cloudflare performs on deploy; dotrio leaves it to you).

Modules and paths resolve from the config file's folder, which is put on
``sys.path``.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, NoReturn

from ._errors import ConfigError
from ._object import DurableObject, WorkerEntrypoint

__all__ = [
    "BindingConfig",
    "Config",
    "MigrationConfig",
    "ServerSettings",
    "DEFAULT_MAX_REQUEST_BODY",
    "RESERVED_PREFIX",
    "find_config",
    "load_config",
]

DEFAULT_MAX_REQUEST_BODY = 32 * 1024 * 1024
DEFAULT_DATA_DIR = ".dotrio"
MEMORY_DATA_DIR = ":memory:"
#: The server answers paths under this prefix itself (health); a binding may
#: not take its name.
RESERVED_PREFIX = "/_dotrio/"
_RESERVED_BINDING = "_dotrio"
CONFIG_NAMES = ("dotrio.toml", "wrangler.toml")

_TOP_KEYS = frozenset(
    {"name", "main", "data_dir", "max_request_body", "runtime", "server", "vars", "durable_objects", "migrations"}
)
# Keys wrangler (or Cloudflare's dashboard) understands and dotrio does not use.
# Accepted with a warning so that a wrangler.toml written for Python runs as is.
_WRANGLER_ONLY = frozenset(
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
_RUNTIME_FLOATS = ("idle_timeout", "hibernation_timeout", "drain_timeout")
_RUNTIME_INTS = ("max_queue", "pool_size")
_DURABILITY = ("process", "power")
_SERVERS = ("fast", "hypercorn")
_MIGRATION_KEYS = frozenset({"tag", "new_classes", "new_sqlite_classes", "renamed_classes", "deleted_classes"})


@dataclass(frozen=True)
class BindingConfig:
    """One ``[[durable_objects.bindings]]`` entry, resolved."""

    name: str
    class_name: str  # as written in the file
    cls: type[DurableObject]
    namespace: str  # storage namespace: data_dir/<namespace>/, and what ids derive from


@dataclass(frozen=True)
class MigrationConfig:
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


@dataclass(frozen=True)
class Config:
    """A validated configuration with its classes imported."""

    path: Path
    root: Path
    name: str | None
    main: str | None
    worker: type[WorkerEntrypoint] | None
    data_dir: Path | None
    max_request_body: int
    vars: Mapping[str, Any]
    bindings: tuple[BindingConfig, ...]
    migrations: tuple[MigrationConfig, ...] = ()
    runtime: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    server: ServerSettings = field(default_factory=ServerSettings)
    warnings: tuple[str, ...] = ()

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


# ---- helpers ------------------------------------------------------------------------

_MISSING: Any = object()


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


class _Checker:
    """Builds errors that name the file and the key; collects warnings."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.warnings: list[str] = []

    def fail(self, key: str, expected: str, got: Any = _MISSING, detail: str | None = None) -> NoReturn:
        message = f"{self.path}: {key}: expected {expected}"
        if got is not _MISSING:
            message += f", got {_show(got)}"
        if detail:
            message += f" ({detail})"
        raise ConfigError(message)

    def warn(self, key: str, message: str) -> None:
        self.warnings.append(f"{self.path}: {key}: {message}")

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
        out = []
        for i, item in enumerate(value):
            out.append(_class_part(self, f"{key}[{i}]", item))
        return tuple(out)

    def unknown(self, key: str, allowed: str) -> NoReturn:
        self.fail(key, f"a known key (one of: {allowed})", detail="this key is unknown")


def _class_part(check: _Checker, key: str, value: Any) -> str:
    """A class name as migrations name it: ``Class`` or ``module:Class`` -> ``Class``."""
    if not isinstance(value, str) or not value:
        check.fail(key, "a class name", value)
    name = value.rpartition(":")[2].rpartition(".")[2]
    if not name.isidentifier():
        check.fail(key, "a class name (a Python identifier)", value)
    return name


def _dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _ensure_on_path(folder: Path) -> None:
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)


def _import(check: _Checker, key: str, module_spec: str, root: Path) -> ModuleType:
    """Import ``module_spec`` (dotted name or a .py path relative to ``root``)."""
    if module_spec.endswith(".py"):
        file = (root / module_spec).resolve()
        if not file.is_file():
            check.fail(key, f"a Python file relative to {root}", module_spec, "no such file")
        if not file.stem.isidentifier():
            check.fail(key, "a .py file whose name is a Python identifier", module_spec)
        search = file.parent
        modname = file.stem
    else:
        if not _dotted(module_spec):
            check.fail(key, "a module name (dotted Python identifiers) or a path to a .py file", module_spec)
        search = root
        modname = module_spec
    _ensure_on_path(root)
    _ensure_on_path(search)
    try:
        module = importlib.import_module(modname)
    except (Exception, SystemExit) as exc:
        detail = f"importing {modname!r} failed: {type(exc).__name__}: {exc}"
        check.fail(key, "an importable module", module_spec, detail)
    _check_not_shadowed(check, key, modname, search)
    return module


def _check_not_shadowed(check: _Checker, key: str, modname: str, search: Path) -> None:
    """A module of the same name imported earlier from elsewhere would be used
    silently instead of the one beside the config file (two apps in one
    process, e.g. tests): refuse rather than run the wrong code."""
    top = modname.split(".", 1)[0]
    local = search / (top + ".py")
    local_pkg = search / top / "__init__.py"
    if not (local.is_file() or local_pkg.is_file()):
        return
    loaded = sys.modules.get(top)
    loaded_file = getattr(loaded, "__file__", None)
    if loaded_file is None:
        return
    loaded_path = Path(loaded_file).resolve()
    if loaded_path not in (local.resolve(), local_pkg.resolve()):
        check.fail(
            key,
            f"module {top!r} from {search}",
            modname,
            f"a different module {top!r} is already imported from {loaded_path}; use distinct module names",
        )


def _attribute(check: _Checker, key: str, module: ModuleType, attr_path: str, written: str) -> Any:
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            check.fail(key, f"a class defined in module {module.__name__!r}", written, f"it has no attribute {attr_path!r}")
    return obj


def _split_spec(check: _Checker, key: str, spec: str, what: str) -> tuple[str, str | None]:
    """``module[:Attr]`` -> (module, attr or None)."""
    module_spec, sep, attr = spec.rpartition(":")
    if not sep:
        return spec, None
    if not module_spec or not _dotted(attr):
        check.fail(key, what, spec)
    return module_spec, attr


# ---- sections ------------------------------------------------------------------------


def _load_main(check: _Checker, main: str, root: Path) -> tuple[ModuleType, type[WorkerEntrypoint] | None]:
    expected = "'module[:Class]' or 'path/file.py[:Class]' naming a dotrio.WorkerEntrypoint subclass"
    module_spec, attr = _split_spec(check, "main", main, expected)
    module = _import(check, "main", module_spec, root)
    if attr is not None:
        worker = _attribute(check, "main", module, attr, main)
    else:
        worker = getattr(module, "Default", None)
        if not (isinstance(worker, type) and issubclass(worker, WorkerEntrypoint)):
            found = [
                v
                for v in vars(module).values()
                if isinstance(v, type)
                and issubclass(v, WorkerEntrypoint)
                and v is not WorkerEntrypoint
                and v.__module__ == module.__name__
            ]
            if len(found) > 1:
                names = ", ".join(sorted(v.__name__ for v in found))
                check.fail("main", f"'{module_spec}:Class' naming one of its worker entries", main,
                           f"module defines several WorkerEntrypoint subclasses: {names}")
            worker = found[0] if found else None
        if worker is None:
            return module, None
    if not (isinstance(worker, type) and issubclass(worker, WorkerEntrypoint)) or worker is WorkerEntrypoint:
        check.fail("main", expected, main, f"{attr} is {worker!r}")
    if worker.fetch is WorkerEntrypoint.fetch:
        check.fail("main", "a WorkerEntrypoint subclass that defines async fetch(self, request)", main)
    return module, worker


def _load_runtime(check: _Checker, value: Any) -> dict[str, Any]:
    table = check.table("runtime", value)
    out: dict[str, Any] = {}
    allowed = ", ".join((*_RUNTIME_FLOATS, *_RUNTIME_INTS, "durability"))
    for key, item in table.items():
        path = f"runtime.{key}"
        if key in _RUNTIME_FLOATS:
            out[key] = check.number(path, item)
        elif key in _RUNTIME_INTS:
            out[key] = check.integer(path, item, 1)
        elif key == "durability":
            if item not in _DURABILITY:
                check.fail(path, "'process' or 'power'", item)
            out[key] = item
        else:
            check.unknown(path, allowed)
    return out


def _load_server(check: _Checker, value: Any) -> ServerSettings:
    table = check.table("server", value)
    settings: dict[str, Any] = {}
    for key, item in table.items():
        path = f"server.{key}"
        if key == "host":
            settings[key] = check.string(path, item)
        elif key == "port":
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= 65535:
                check.fail(path, "a port number from 0 to 65535", item)
            settings[key] = item
        elif key == "server":
            if item not in _SERVERS:
                check.fail(path, "'fast' or 'hypercorn'", item)
            settings[key] = item
        elif key == "shutdown_grace":
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not 0 <= item < math.inf:
                check.fail(path, "a number of seconds >= 0", item)
            settings[key] = float(item)
        elif key == "access_log":
            if not isinstance(item, bool):
                check.fail(path, "true or false", item)
            settings[key] = item
        elif key == "max_connections":
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                check.fail(path, "a positive whole number of connections", item)
            settings[key] = item
        else:
            check.unknown(path, "host, port, server, shutdown_grace, access_log, max_connections")
    return ServerSettings(**settings)


def _load_migrations(check: _Checker, value: Any) -> tuple[tuple[MigrationConfig, ...], dict[str, str], list[tuple[str, str, str]]]:
    """Replay the migrations. Returns them, the live classes (class name ->
    namespace) and the deleted ones as (namespace, key, class name)."""
    if not isinstance(value, list):
        check.fail("migrations", "an array of tables ([[migrations]])", value)
    alive: dict[str, str] = {}
    # namespace -> why it is taken, for every namespace ever used
    taken: dict[str, str] = {}
    deleted: list[tuple[str, str, str]] = []
    tags: set[str] = set()
    out = []
    for i, item in enumerate(value):
        base = f"migrations[{i}]"
        table = check.table(base, item)
        if "transferred_classes" in table:
            check.fail(f"{base}.transferred_classes", "no transferred_classes (dotrio hosts one script's classes)")
        for key in table:
            if key not in _MIGRATION_KEYS:
                check.unknown(f"{base}.{key}", ", ".join(sorted(_MIGRATION_KEYS)))
        if "tag" not in table:
            check.fail(f"{base}.tag", "a tag (a non-empty string unique among migrations)")
        tag = check.string(f"{base}.tag", table["tag"])
        if tag in tags:
            check.fail(f"{base}.tag", "a tag unique among migrations", tag, "used by an earlier migration")
        tags.add(tag)

        created: dict[str, tuple[str, ...]] = {}
        for key in ("new_classes", "new_sqlite_classes"):
            names = check.names(f"{base}.{key}", table.get(key, []))
            created[key] = names
            for j, cname in enumerate(names):
                where = f"{base}.{key}[{j}]"
                if cname in alive:
                    check.fail(where, "a class that does not exist yet", cname, "it was created by an earlier migration")
                if cname in taken:
                    check.fail(where, "a class name not used as a storage namespace", cname,
                               f"{taken[cname]}; choose another class name")
                alive[cname] = cname
                taken[cname] = f"it is the storage namespace of class {cname!r}"

        renames_raw = table.get("renamed_classes", [])
        if not isinstance(renames_raw, list):
            check.fail(f"{base}.renamed_classes", "an array of {from = \"Old\", to = \"New\"} tables", renames_raw)
        renames = []
        for j, entry in enumerate(renames_raw):
            where = f"{base}.renamed_classes[{j}]"
            entry = check.table(where, entry)
            for key in entry:
                if key not in ("from", "to"):
                    check.unknown(f"{where}.{key}", "from, to")
            if "from" not in entry or "to" not in entry:
                check.fail(where, "a table with both 'from' and 'to'", entry)
            old = _class_part(check, f"{where}.from", entry["from"])
            new = _class_part(check, f"{where}.to", entry["to"])
            if old not in alive:
                check.fail(f"{where}.from", "a class created by an earlier migration", old)
            if new in alive:
                check.fail(f"{where}.to", "a class name not in use", new, "that class already exists")
            # The new name keeps the old namespace; the old name stays taken, so a
            # later class called like it cannot reach these objects by accident.
            ns = alive.pop(old)
            alive[new] = ns
            taken[ns] = f"it is the storage namespace of class {new!r} (renamed from {old!r} in migration {tag!r})"
            renames.append((old, new))

        deletes = check.names(f"{base}.deleted_classes", table.get("deleted_classes", []))
        for j, cname in enumerate(deletes):
            where = f"{base}.deleted_classes[{j}]"
            if cname not in alive:
                check.fail(where, "a class that exists (created and not deleted by earlier migrations)", cname)
            ns = alive.pop(cname)
            taken[ns] = f"it held the objects of class {cname!r}, deleted in migration {tag!r}"
            deleted.append((ns, where, cname))

        out.append(
            MigrationConfig(
                tag=tag,
                new_classes=created["new_classes"],
                new_sqlite_classes=created["new_sqlite_classes"],
                renamed_classes=tuple(renames),
                deleted_classes=deletes,
            )
        )
    return tuple(out), alive, deleted


def _load_bindings(
    check: _Checker,
    value: Any,
    root: Path,
    main_module: ModuleType | None,
    alive: dict[str, str] | None,
) -> tuple[BindingConfig, ...]:
    table = check.table("durable_objects", value)
    for key in table:
        if key != "bindings":
            check.unknown(f"durable_objects.{key}", "bindings")
    raw = table.get("bindings", [])
    if not isinstance(raw, list):
        check.fail("durable_objects.bindings", "an array of tables ([[durable_objects.bindings]])", raw)
    out: list[BindingConfig] = []
    seen_names: set[str] = set()
    by_namespace: dict[str, tuple[type, str]] = {}
    by_dunder: dict[str, tuple[type, str]] = {}
    for i, item in enumerate(raw):
        base = f"durable_objects.bindings[{i}]"
        entry = check.table(base, item)
        for key in entry:
            if key in ("script_name", "environment"):
                check.fail(f"{base}.{key}", "no " + key + " (dotrio binds only classes of this config)")
            if key not in ("name", "class_name"):
                check.unknown(f"{base}.{key}", "name, class_name")
        if "name" not in entry:
            check.fail(f"{base}.name", "a binding name (a Python identifier)")
        name = entry["name"]
        if not isinstance(name, str) or not name.isidentifier():
            check.fail(f"{base}.name", "a binding name (a Python identifier)", name)
        if name == _RESERVED_BINDING:
            check.fail(f"{base}.name", f"a name other than {_RESERVED_BINDING!r} (reserved for the server's own paths)", name)
        if name in seen_names:
            check.fail(f"{base}.name", "a binding name unique among bindings", name)
        seen_names.add(name)

        key = f"{base}.class_name"
        if "class_name" not in entry:
            check.fail(key, "'module:Class' naming a dotrio.DurableObject subclass")
        written = check.string(key, entry["class_name"])
        expected = "'module:Class' or 'Class' naming a dotrio.DurableObject subclass"
        module_spec, attr = _split_spec(check, key, written, expected)
        if attr is None:
            if not _dotted(written):
                check.fail(key, expected, written)
            if main_module is None:
                check.fail(key, "'module:Class' (a bare class name needs a main module to look in)", written)
            module, attr = main_module, written
        else:
            module = _import(check, key, module_spec, root)
        cls = _attribute(check, key, module, attr, written)
        if not (isinstance(cls, type) and issubclass(cls, DurableObject)) or cls is DurableObject:
            check.fail(key, "a dotrio.DurableObject subclass", written, f"found {cls!r}")
        cname = attr.rpartition(".")[2]
        if alive is None:
            namespace = cname
        elif cname in alive:
            namespace = alive[cname]
        else:
            check.fail(key, "a class created by a migration (new_sqlite_classes, new_classes or renamed_classes)",
                       written, f"no migration leaves a class named {cname!r}")
        other = by_namespace.get(namespace)
        if other is not None and other[0] is not cls:
            check.fail(key, "a class with its own storage namespace", written,
                       f"{other[1]} is a different class with the same namespace {namespace!r}")
        by_namespace[namespace] = (cls, key)
        other = by_dunder.get(cls.__name__)
        if other is not None and other[0] is not cls:
            check.fail(key, "classes with distinct __name__", written, f"{other[1]} is another class named {cls.__name__!r}")
        by_dunder[cls.__name__] = (cls, key)
        out.append(BindingConfig(name=name, class_name=written, cls=cls, namespace=namespace))
    return tuple(out)


def _check_deleted(check: _Checker, data_dir: Path | None, deleted: list[tuple[str, str, str]], alive: set[str]) -> None:
    if data_dir is None:
        return
    for namespace, key, cname in deleted:
        if namespace in alive:
            continue
        folder = data_dir / namespace
        if not folder.is_dir():
            continue
        if any(p.suffix == ".sqlite" for p in folder.rglob("*.sqlite")):
            check.fail(
                key,
                f"no stored objects of the deleted class {cname!r}",
                detail=f"{folder} still holds its objects; delete that directory to delete them "
                "(irreversible), or remove the class from deleted_classes",
            )


# ---- entry points ------------------------------------------------------------------


def find_config(directory: str | os.PathLike[str] = ".") -> Path | None:
    """``dotrio.toml`` in ``directory``, else ``wrangler.toml``, else None."""
    for name in CONFIG_NAMES:
        candidate = Path(directory) / name
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, validate and import ``path``. Raises ConfigError naming the file,
    the key and what was expected."""
    file = Path(path).absolute()
    check = _Checker(file)
    try:
        with open(file, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: expected a valid TOML document: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file: {exc.strerror or exc}") from exc
    root = file.parent

    for key in data:
        if key in _WRANGLER_ONLY:
            check.warn(key, "only wrangler uses this key; dotrio ignores it")
        elif key not in _TOP_KEYS:
            check.unknown(key, ", ".join(sorted(_TOP_KEYS)) + " (and wrangler-only keys, ignored)")

    name = check.string("name", data["name"]) if "name" in data else None

    main_module: ModuleType | None = None
    worker: type[WorkerEntrypoint] | None = None
    main = None
    if "main" in data:
        main = check.string("main", data["main"])
        main_module, worker = _load_main(check, main, root)

    data_dir: Path | None
    raw_dir = check.string("data_dir", data.get("data_dir", DEFAULT_DATA_DIR))
    data_dir = None if raw_dir == MEMORY_DATA_DIR else (root / raw_dir).resolve()
    if data_dir is not None and data_dir.exists() and not data_dir.is_dir():
        check.fail("data_dir", "a directory (or a path to create one at)", raw_dir, f"{data_dir} is not a directory")

    max_body = DEFAULT_MAX_REQUEST_BODY
    if "max_request_body" in data:
        max_body = check.integer("max_request_body", data["max_request_body"], 0)

    runtime = _load_runtime(check, data["runtime"]) if "runtime" in data else {}
    server = _load_server(check, data["server"]) if "server" in data else ServerSettings()

    migrations: tuple[MigrationConfig, ...] = ()
    alive: dict[str, str] | None = None
    deleted: list[tuple[str, str, str]] = []
    if "migrations" in data:
        migrations, alive, deleted = _load_migrations(check, data["migrations"])

    if "durable_objects" not in data:
        check.fail("durable_objects.bindings", "at least one [[durable_objects.bindings]] entry")
    bindings = _load_bindings(check, data["durable_objects"], root, main_module, alive)
    if not bindings:
        check.fail("durable_objects.bindings", "at least one [[durable_objects.bindings]] entry")

    vars_table = check.table("vars", data.get("vars", {}))
    binding_names = {b.name for b in bindings}
    for key in vars_table:
        if key in binding_names:
            check.fail(f"vars.{key}", "a var name that is not also a binding name", key)

    _check_deleted(check, data_dir, deleted, set(alive.values()) if alive is not None else set())

    return Config(
        path=file,
        root=root,
        name=name,
        main=main,
        worker=worker,
        data_dir=data_dir,
        max_request_body=max_body,
        vars=MappingProxyType(dict(vars_table)),
        bindings=bindings,
        migrations=migrations,
        runtime=MappingProxyType(runtime),
        server=server,
        warnings=tuple(check.warnings),
    )
