"""Reading a config: find the file, parse it (TOML, JSON or JSON with
comments), gather secrets, import the classes it names, and build a
``Config``.

Files
-----
``find_config`` looks for ``dotrio.toml``, ``wrangler.jsonc``,
``wrangler.json`` and ``wrangler.toml``, in that order. A file ending in
``.json`` or ``.jsonc`` is read as JSON with ``//`` and ``/* */`` comments
and trailing commas allowed (wrangler's own dialect); any other file as
TOML. Both map to the same keys (see ``_schema``). Modules and paths
resolve from the config file's folder, which is put on ``sys.path``.

Vars and secrets, later sources winning:

1. ``[vars]`` in the file. A value written ``{ env = "NAME" }`` is read from
   the environment variable ``NAME`` (an error if it is not set and no later
   source gives the var).
2. ``.dev.vars`` beside the config file (``NAME=value`` lines, as wrangler
   reads it for local development; ``#`` comments, optional quotes).
3. ``DOTRIO_VAR_<NAME>`` environment variables. Where the file's value is a
   number or a boolean, the variable is parsed as JSON and must give the
   same type.

Values from 1's ``env`` form, 2 and 3 are *secrets*: ``Config.secrets`` names
them, and nothing dotrio prints (``dotrio check``, logs, errors, ``repr``)
shows their values.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tomllib
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from .._object import DurableObject, WorkerEntrypoint
from ._migrations import Replayed, replay_migrations
from ._schema import (
    CONFIG_NAMES,
    DEFAULT_DATA_DIR,
    DEFAULT_MAX_REQUEST_BODY,
    MEMORY_DATA_DIR,
    RESERVED_BINDING,
    BindingConfig,
    Checker,
    Config,
    ServerSettings,
    check_top_level,
    load_runtime,
    load_server,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DEV_VARS", "VAR_ENV_PREFIX", "find_config", "load_config", "parse_jsonc", "runtime_kwargs_from_file"]

#: The secrets file read beside the config file.
DEV_VARS = ".dev.vars"
#: ``DOTRIO_VAR_<NAME>=value`` in the environment sets var ``NAME``.
VAR_ENV_PREFIX = "DOTRIO_VAR_"


# ---- finding and parsing --------------------------------------------------------------


def find_config(directory: str | os.PathLike[str] = ".") -> Path | None:
    """The first of ``dotrio.toml``, ``wrangler.jsonc``, ``wrangler.json``,
    ``wrangler.toml`` in ``directory``, else None."""
    for name in CONFIG_NAMES:
        candidate = Path(directory) / name
        if candidate.is_file():
            return candidate
    return None


def parse_jsonc(text: str) -> Any:
    """Parse JSON with ``//`` and ``/* */`` comments and trailing commas.

    Comments and trailing commas become spaces, so line and column numbers in
    errors (``json.JSONDecodeError``) still point into the original text.
    """
    out = list(text)
    n = len(text)
    last = -1  # index of the last significant character seen
    i = 0
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            last = j
            i = j + 1
            continue
        if c == "/" and i + 1 < n and text[i + 1] in "/*":
            if text[i + 1] == "/":
                end = text.find("\n", i)
                end = n if end < 0 else end
            else:
                close = text.find("*/", i + 2)
                if close < 0:
                    raise json.JSONDecodeError("unterminated /* comment", text, i)
                end = close + 2
            for k in range(i, end):
                if out[k] != "\n":
                    out[k] = " "
            i = end
            continue
        if c in "}]" and last >= 0 and out[last] == ",":
            out[last] = " "
        if not c.isspace():
            last = i
        i += 1
    return json.loads("".join(out))


def _read_document(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc
    if path.suffix in (".json", ".jsonc"):
        try:
            data = parse_jsonc(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: expected a UTF-8 text file: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path}: expected a valid JSON document (comments and trailing commas allowed): "
                f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
        return data
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: expected a valid TOML document: {exc}") from exc


# ---- vars and secrets ---------------------------------------------------------------


def read_dev_vars(check: Checker, path: Path) -> dict[str, str]:
    """``NAME=value`` lines of a ``.dev.vars`` file (dotenv syntax: ``#``
    comments, optional ``export``, single or double quotes). Problems name
    the file and the line but never the value."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        with check.guard():
            check.fail(None, f"a readable UTF-8 file at {path}", detail=str(getattr(exc, "strerror", None) or exc))
        return out
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export "):].lstrip()
        name, eq, value = stripped.partition("=")
        name = name.strip()
        where = f"line {number}"
        with check.guard():
            if not eq or not name.isidentifier():
                # A line without "=" may be a pasted secret: never echo it.
                check.fail(where, "NAME=value with NAME a Python identifier",
                           detail="there is no '='" if not eq else f"NAME is {name!r}")
            value = value.strip()
            if value[:1] == "'":
                end = value.find("'", 1)
                if end < 0:
                    check.fail(where, "a closing ' on the same line")
                value = value[1:end]
            elif value[:1] == '"':
                unquoted = _double_quoted(value)
                if unquoted is None:
                    check.fail(where, 'a closing " on the same line')
                value = unquoted
            else:
                value = value.split(" #", 1)[0].rstrip()
            out[name] = value
    return out


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def _double_quoted(text: str) -> str | None:
    """The value of ``"..."`` at the start of ``text`` (``\\n``, ``\\t``, ``\\r``,
    and a backslash before any other character keeps that character), or
    None if it is not closed."""
    out: list[str] = []
    i = 1
    while i < len(text):
        c = text[i]
        if c == '"':
            return "".join(out)
        if c == "\\" and i + 1 < len(text):
            i += 1
            out.append(_ESCAPES.get(text[i], text[i]))
        else:
            out.append(c)
        i += 1
    return None


def _env_form(value: Any) -> bool:
    return isinstance(value, dict) and list(value) == ["env"]


def _coerce(check: Checker, key: str, text: str, like: Any) -> Any:
    """A ``DOTRIO_VAR_`` string given the type of the file's value it overrides."""
    if isinstance(like, str) or like is None or _env_form(like):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if type(value) is not type(like) and not (isinstance(like, float) and type(value) is int):
        check.fail(key, f"a {type(like).__name__} like the value in the config file", detail="the value is not shown")
    return float(value) if isinstance(like, float) else value


def resolve_vars(
    check: Checker, table: Mapping[str, Any], dev_vars: Mapping[str, str], environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The final vars and the secret ones (name -> where the value came from)."""
    values: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    overridden = set(dev_vars) | {k[len(VAR_ENV_PREFIX):] for k in environ if k.startswith(VAR_ENV_PREFIX)}
    for name, value in table.items():
        if not _env_form(value):
            values[name] = value
            continue
        source = value["env"]
        with check.guard():
            if not isinstance(source, str) or not source:
                check.fail(f"vars.{name}.env", "the name of an environment variable", source)
            if source in environ:
                values[name] = environ[source]
                secrets[name] = f"environment variable {source}"
            elif name not in overridden:
                check.fail(f"vars.{name}", f"environment variable {source} to be set",
                           detail=f"or {name} in {DEV_VARS}, or {VAR_ENV_PREFIX}{name}")
    for name, value in dev_vars.items():
        values[name] = value
        secrets[name] = DEV_VARS
    for env_name in sorted(environ):
        if not env_name.startswith(VAR_ENV_PREFIX):
            continue
        name = env_name[len(VAR_ENV_PREFIX):]
        with check.guard():
            if not name.isidentifier():
                check.fail(f"environment variable {env_name}", f"{VAR_ENV_PREFIX}<NAME> with NAME a Python identifier")
            values[name] = _coerce(check, f"environment variable {env_name}", environ[env_name], table.get(name))
            secrets[name] = f"environment variable {env_name}"
    return values, secrets


# ---- imports --------------------------------------------------------------------------


def _dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _ensure_on_path(folder: Path) -> None:
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)


def _import(check: Checker, key: str, module_spec: str, root: Path) -> ModuleType:
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


def _check_not_shadowed(check: Checker, key: str, modname: str, search: Path) -> None:
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


def _attribute(check: Checker, key: str, module: ModuleType, attr_path: str, written: str) -> Any:
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            check.fail(key, f"a class defined in module {module.__name__!r}", written,
                       f"it has no attribute {attr_path!r}")
    return obj


def _split_spec(check: Checker, key: str, spec: str, what: str) -> tuple[str, str | None]:
    """``module[:Attr]`` -> (module, attr or None)."""
    module_spec, sep, attr = spec.rpartition(":")
    if not sep:
        return spec, None
    if not module_spec or not _dotted(attr):
        check.fail(key, what, spec)
    return module_spec, attr


def _load_main(check: Checker, main: str, root: Path) -> tuple[ModuleType, type[WorkerEntrypoint] | None]:
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


class _Bindings:
    """State shared across ``[[durable_objects.bindings]]`` entries."""

    def __init__(self) -> None:
        self.seen_names: set[str] = set()
        self.by_namespace: dict[str, tuple[type, str]] = {}
        self.by_dunder: dict[str, tuple[type, str]] = {}
        self.out: list[BindingConfig] = []


def _load_bindings(
    check: Checker, value: Any, root: Path, main_module: ModuleType | None, main_failed: bool, replayed: Replayed | None
) -> tuple[BindingConfig, ...]:
    table = check.table("durable_objects", value)
    for key in table:
        if key != "bindings":
            with check.guard():
                check.unknown(f"durable_objects.{key}", ("bindings",))
    raw = table.get("bindings", [])
    if not isinstance(raw, list):
        check.fail("durable_objects.bindings", "an array of tables ([[durable_objects.bindings]])", raw)
    state = _Bindings()
    for i, item in enumerate(raw):
        with check.guard():
            _load_binding(check, f"durable_objects.bindings[{i}]", item, root, main_module, main_failed, replayed,
                          state)
    return tuple(state.out)


def _load_binding(
    check: Checker,
    base: str,
    item: Any,
    root: Path,
    main_module: ModuleType | None,
    main_failed: bool,
    replayed: Replayed | None,
    state: _Bindings,
) -> None:
    entry = check.table(base, item)
    for key in entry:
        with check.guard():
            if key in ("script_name", "environment"):
                check.fail(f"{base}.{key}", "no " + key + " (dotrio binds only classes of this config)")
            if key not in ("name", "class_name"):
                check.unknown(f"{base}.{key}", ("name", "class_name"))
    name = None
    with check.guard():
        if "name" not in entry:
            check.fail(f"{base}.name", "a binding name (a Python identifier)")
        name = entry["name"]
        if not isinstance(name, str) or not name.isidentifier():
            check.fail(f"{base}.name", "a binding name (a Python identifier)", name)
        if name == RESERVED_BINDING:
            check.fail(f"{base}.name", f"a name other than {RESERVED_BINDING!r} (reserved for the server's own paths)",
                       name)
        if name in state.seen_names:
            check.fail(f"{base}.name", "a binding name unique among bindings", name)
        state.seen_names.add(name)

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
            if main_failed:  # already reported under "main"
                return
            check.fail(key, "'module:Class' (a bare class name needs a main module to look in)", written)
        module, attr = main_module, written
    else:
        module = _import(check, key, module_spec, root)
    cls = _attribute(check, key, module, attr, written)
    if not (isinstance(cls, type) and issubclass(cls, DurableObject)) or cls is DurableObject:
        check.fail(key, "a dotrio.DurableObject subclass", written, f"found {cls!r}")
    cname = attr.rpartition(".")[2]
    if replayed is None or not replayed.complete:
        namespace = cname if replayed is None else replayed.alive.get(cname, cname)
    elif cname in replayed.alive:
        namespace = replayed.alive[cname]
    else:
        check.fail(key, "a class created by a migration (new_sqlite_classes, new_classes or renamed_classes)",
                   written, f"no migration leaves a class named {cname!r}")
    other = state.by_namespace.get(namespace)
    if other is not None and other[0] is not cls:
        check.fail(key, "a class with its own storage namespace", written,
                   f"{other[1]} is a different class with the same namespace {namespace!r}")
    state.by_namespace[namespace] = (cls, key)
    other = state.by_dunder.get(cls.__name__)
    if other is not None and other[0] is not cls:
        check.fail(key, "classes with distinct __name__", written,
                   f"{other[1]} is another class named {cls.__name__!r}")
    state.by_dunder[cls.__name__] = (cls, key)
    if name is not None:
        state.out.append(BindingConfig(name=name, class_name=written, cls=cls, namespace=namespace))


def _check_deleted(check: Checker, data_dir: Path | None, replayed: Replayed) -> None:
    if data_dir is None:
        return
    alive = set(replayed.alive.values())
    for namespace, key, cname in replayed.deleted:
        if namespace in alive:
            continue
        folder = data_dir / namespace
        if not folder.is_dir():
            continue
        if any(p.suffix == ".sqlite" for p in folder.rglob("*.sqlite")):
            with check.guard():
                check.fail(
                    key,
                    f"no stored objects of the deleted class {cname!r}",
                    detail=f"{folder} still holds its objects; delete that directory to delete them "
                    "(irreversible), or remove the class from deleted_classes",
                )


# ---- entry points ------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, validate and import ``path`` (TOML, or JSON/JSONC for ``.json``
    and ``.jsonc`` files), with the secrets of ``.dev.vars`` beside it and
    of ``environ`` (default ``os.environ``). Raises one ConfigError listing
    every problem, each naming the file, the key and what was expected."""
    file = Path(path).absolute()
    environ = os.environ if environ is None else environ
    check = Checker(file)
    data = _read_document(file)
    root = file.parent
    sources = [file]

    check_top_level(check, data)

    name = None
    with check.guard():
        name = check.string("name", data["name"]) if "name" in data else None

    main_module: ModuleType | None = None
    worker: type[WorkerEntrypoint] | None = None
    main = None
    main_failed = False
    if "main" in data:
        errors_before = len(check.errors)
        with check.guard():
            main = check.string("main", data["main"])
            main_module, worker = _load_main(check, main, root)
        main_failed = len(check.errors) != errors_before

    data_dir: Path | None = None
    with check.guard():
        raw_dir = check.string("data_dir", data.get("data_dir", DEFAULT_DATA_DIR))
        data_dir = None if raw_dir == MEMORY_DATA_DIR else (root / raw_dir).resolve()
        if data_dir is not None and data_dir.exists() and not data_dir.is_dir():
            check.fail("data_dir", "a directory (or a path to create one at)", raw_dir,
                       f"{data_dir} is not a directory")

    max_body = DEFAULT_MAX_REQUEST_BODY
    with check.guard():
        if "max_request_body" in data:
            max_body = check.integer("max_request_body", data["max_request_body"], 0)

    runtime: dict[str, Any] = {}
    with check.guard():
        if "runtime" in data:
            runtime = load_runtime(check, data["runtime"])
    server = ServerSettings()
    with check.guard():
        if "server" in data:
            server = load_server(check, data["server"])

    replayed: Replayed | None = None
    if "migrations" in data:
        replayed = replay_migrations(check, data["migrations"])

    bindings: tuple[BindingConfig, ...] = ()
    with check.guard():
        if "durable_objects" not in data:
            check.fail("durable_objects.bindings", "at least one [[durable_objects.bindings]] entry")
        bindings = _load_bindings(check, data["durable_objects"], root, main_module, main_failed, replayed)
        if not bindings and check.ok:
            check.fail("durable_objects.bindings", "at least one [[durable_objects.bindings]] entry")

    vars_table: dict[str, Any] = {}
    with check.guard():
        vars_table = check.table("vars", data.get("vars", {}))
    dev_vars_path = root / DEV_VARS
    dev_vars: dict[str, str] = {}
    if dev_vars_path.is_file():
        sources.append(dev_vars_path)
        dev_vars = _dev_vars(check, dev_vars_path)
    values, secrets = resolve_vars(check, vars_table, dev_vars, environ)
    binding_names = {b.name for b in bindings}
    for key in values:
        if key in binding_names:
            with check.guard():
                where = f"vars.{key}" if key not in secrets else f"vars.{key} (from {secrets[key]})"
                check.fail(where, "a var name that is not also a binding name", key)

    if replayed is not None:
        _check_deleted(check, data_dir, replayed)

    check.report()
    return Config(
        path=file,
        root=root,
        name=name,
        main=main,
        worker=worker,
        data_dir=data_dir,
        max_request_body=max_body,
        vars=MappingProxyType(values),
        bindings=bindings,
        migrations=replayed.migrations if replayed is not None else (),
        runtime=MappingProxyType(runtime),
        server=server,
        warnings=tuple(check.warnings),
        secrets=MappingProxyType(secrets),
        sources=tuple(sources),
    )


def _dev_vars(check: Checker, path: Path) -> dict[str, str]:
    """``.dev.vars`` problems are reported with the config's, naming that file."""
    own = Checker(path)
    values = read_dev_vars(own, path)
    check.errors.extend(own.errors)
    return values


def runtime_kwargs_from_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``Runtime`` keyword arguments as the config file at ``path`` gives them
    (what ``Runtime.from_config`` uses)."""
    return load_config(path).runtime_kwargs()
