"""dotrio.toml: every error names file + key + expectation; migrations keep
renamed classes' objects and guard deleted classes' data; the CLI's exit codes."""

from __future__ import annotations

import shutil
import textwrap
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

import dotrio
from dotrio._config import find_config, load_config
from dotrio.server._cli import main as cli

APP = """
import dotrio

class A(dotrio.DurableObject):
    async def increment(self, by=1):
        n = (await self.ctx.storage.get("n") or 0) + by
        await self.ctx.storage.put("n", n)
        return n

    async def value(self):
        return await self.ctx.storage.get("n")

class B(A):
    pass

class Other(dotrio.DurableObject):
    async def fetch(self, request):
        return dotrio.Response("other")

class Worker(dotrio.WorkerEntrypoint):
    async def fetch(self, request):
        return dotrio.Response("w")

class Worker2(dotrio.WorkerEntrypoint):
    async def fetch(self, request):
        return dotrio.Response("w2")

class NoFetch(dotrio.WorkerEntrypoint):
    pass

NOT_A_CLASS = 3
"""


class Project:
    """A folder with a uniquely named app module (modules are cached per
    process, so each test needs its own name) and a config file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mod = "cfgapp_" + uuid.uuid4().hex[:10]
        (root / f"{self.mod}.py").write_text(APP)

    def write(self, text: str, name: str = "dotrio.toml") -> Path:
        path = self.root / name
        path.write_text(textwrap.dedent(text).replace("MOD", self.mod))
        return path


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


BINDING = """
[[durable_objects.bindings]]
name = "C"
class_name = "MOD:A"
"""

# (config text, the key the message must name, a fragment of the expectation)
ERRORS = [
    ("name = [1\n", None, "valid TOML"),
    ("nmae = 'x'\n" + BINDING, "nmae", "a known key"),
    ("name = 3\n" + BINDING, "name", "a non-empty string"),
    ("main = 'no_such_module_xyz'\n" + BINDING, "main", "an importable module"),
    ("main = 'MOD:Nope'\n" + BINDING, "main", "has no attribute 'Nope'"),
    ("main = 'MOD:NOT_A_CLASS'\n" + BINDING, "main", "WorkerEntrypoint subclass"),
    ("main = 'MOD:A'\n" + BINDING, "main", "WorkerEntrypoint subclass"),
    ("main = 'MOD:NoFetch'\n" + BINDING, "main", "defines async fetch"),
    ("main = 'MOD'\n" + BINDING, "main", "several WorkerEntrypoint subclasses"),
    ("main = 'missing/entry.py'\n" + BINDING, "main", "a Python file"),
    ("main = 'bad name!'\n" + BINDING, "main", "a module name"),
    ("data_dir = 5\n" + BINDING, "data_dir", "a non-empty string"),
    ("max_request_body = -1\n" + BINDING, "max_request_body", "an integer >= 0"),
    ("max_request_body = true\n" + BINDING, "max_request_body", "an integer >= 0"),
    ("max_request_body = '32MiB'\n" + BINDING, "max_request_body", "an integer >= 0"),
    ("runtime = 3\n" + BINDING, "runtime", "a table"),
    ("[runtime]\nidle_timeout = -1\n" + BINDING, "runtime.idle_timeout", "a positive number of seconds"),
    ("[runtime]\nhibernation_timeout = 'ten'\n" + BINDING, "runtime.hibernation_timeout", "a positive number"),
    ("[runtime]\nmax_queue = 0\n" + BINDING, "runtime.max_queue", "an integer >= 1"),
    ("[runtime]\nmax_queue = 1.5\n" + BINDING, "runtime.max_queue", "an integer >= 1"),
    ("[runtime]\ndurability = 'disk'\n" + BINDING, "runtime.durability", "'process' or 'power'"),
    ("[runtime]\nidle_timeut = 3\n" + BINDING, "runtime.idle_timeut", "a known key"),
    ("[server]\nport = 70000\n" + BINDING, "server.port", "a port number"),
    ("[server]\nserver = 'uvicorn'\n" + BINDING, "server.server", "'fast' or 'hypercorn'"),
    ("[server]\naccess_log = 'yes'\n" + BINDING, "server.access_log", "true or false"),
    ("[server]\nmax_connections = 0\n" + BINDING, "server.max_connections", "a positive whole number"),
    ("[vars]\nC = 'clash'\n" + BINDING, "vars.C", "not also a binding name"),
    ("vars = 'x'\n" + BINDING, "vars", "a table"),
    ("name = 'x'\n", "durable_objects.bindings", "at least one"),
    ("durable_objects = {}\n", "durable_objects.bindings", "at least one"),
    ("[durable_objects]\nbinding = []\n", "durable_objects.binding", "a known key"),
    (BINDING + "[[durable_objects.bindings]]\nname = 'D'\nclass_name = 'MOD:Nope'\n",
     "durable_objects.bindings[1].class_name", "has no attribute 'Nope'"),
    (BINDING + "[[durable_objects.bindings]]\nname = 'D'\nclass_name = 'no_such_module_xyz:A'\n",
     "durable_objects.bindings[1].class_name", "an importable module"),
    (BINDING + "[[durable_objects.bindings]]\nname = 'D'\nclass_name = 'MOD:Worker'\n",
     "durable_objects.bindings[1].class_name", "a dotrio.DurableObject subclass"),
    (BINDING + "[[durable_objects.bindings]]\nname = 'D'\n",
     "durable_objects.bindings[1].class_name", "'module:Class'"),
    (BINDING + "[[durable_objects.bindings]]\nname = 'D'\nclass_name = 'Other'\n",
     "durable_objects.bindings[1].class_name", "needs a main module"),
    (BINDING + "[[durable_objects.bindings]]\nname = 'C'\nclass_name = 'MOD:Other'\n",
     "durable_objects.bindings[1].name", "unique"),
    ("[[durable_objects.bindings]]\nname = 'my-binding'\nclass_name = 'MOD:A'\n",
     "durable_objects.bindings[0].name", "a Python identifier"),
    ("[[durable_objects.bindings]]\nname = '_dotrio'\nclass_name = 'MOD:A'\n",
     "durable_objects.bindings[0].name", "reserved"),
    ("[[durable_objects.bindings]]\nname = 'C'\nclass_name = 'MOD:A'\nscript_name = 'other'\n",
     "durable_objects.bindings[0].script_name", "no script_name"),
    (BINDING + "[[migrations]]\nnew_sqlite_classes = ['A']\n", "migrations[0].tag", "a tag"),
    (BINDING + "[[migrations]]\ntag = 'v1'\nnew_sqlite_classes = ['A']\n[[migrations]]\ntag = 'v1'\n",
     "migrations[1].tag", "unique"),
    (BINDING + "[[migrations]]\ntag = 'v1'\nnew_sqlite_classes = ['A']\n"
     "[[migrations]]\ntag = 'v2'\nnew_classes = ['A']\n",
     "migrations[1].new_classes[0]", "a class that does not exist yet"),
    (BINDING + "[[migrations]]\ntag = 'v1'\nnew_sqlite_classes = 'A'\n",
     "migrations[0].new_sqlite_classes", "an array of class names"),
    (BINDING + "[[migrations]]\ntag = 'v1'\nrenamed_classes = [{from = 'Q', to = 'A'}]\n",
     "migrations[0].renamed_classes[0].from", "a class created by an earlier migration"),
    (BINDING + "[[migrations]]\ntag = 'v1'\nnew_sqlite_classes = ['A']\nrenamed_classes = [{from = 'A'}]\n",
     "migrations[0].renamed_classes[0]", "both 'from' and 'to'"),
    (BINDING + "[[migrations]]\ntag = 'v1'\ndeleted_classes = ['Q']\n",
     "migrations[0].deleted_classes[0]", "a class that exists"),
    (BINDING + "[[migrations]]\ntag = 'v1'\ntransferred_classes = []\n",
     "migrations[0].transferred_classes", "no transferred_classes"),
    (BINDING + "[[migrations]]\ntag = 'v1'\nnew_sqlite_class = ['A']\n",
     "migrations[0].new_sqlite_class", "a known key"),
    (BINDING + "[[migrations]]\ntag = 'v1'\nnew_sqlite_classes = ['Other']\n",
     "durable_objects.bindings[0].class_name", "a class created by a migration"),
    (BINDING + "[[migrations]]\ntag = 'v1'\nnew_sqlite_classes = ['A']\n"
     "[[migrations]]\ntag = 'v2'\ndeleted_classes = ['A']\n",
     "durable_objects.bindings[0].class_name", "a class created by a migration"),
    # B keeps A's namespace after the rename: a new class named A would share it.
    ("[[durable_objects.bindings]]\nname = 'C'\nclass_name = 'MOD:B'\n"
     "[[migrations]]\ntag = 'v1'\nnew_sqlite_classes = ['A']\n"
     "[[migrations]]\ntag = 'v2'\nrenamed_classes = [{from = 'A', to = 'B'}]\n"
     "[[migrations]]\ntag = 'v3'\nnew_sqlite_classes = ['A']\n",
     "migrations[2].new_sqlite_classes[0]", "not used as a storage namespace"),
]


@pytest.mark.parametrize(("text", "key", "expected"), ERRORS, ids=[e[1] or "toml" for e in ERRORS])
def test_every_error_names_file_key_and_expectation(
    project: Project, text: str, key: str | None, expected: str
) -> None:
    path = project.write(text)
    with pytest.raises(dotrio.ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    if key is not None:
        assert f": {key}: expected " in message, message
    assert expected in message, message
    assert "expected" in message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(dotrio.ConfigError, match="absent.toml: cannot read"):
        load_config(path)


def test_a_full_config_loads(project: Project) -> None:
    path = project.write(
        """
        name = "agents"
        main = "MOD:Worker"
        data_dir = "state"
        max_request_body = 1000
        compatibility_date = "2024-09-23"
        [runtime]
        idle_timeout = 30
        hibernation_timeout = 2.5
        max_queue = 10
        durability = "power"
        [server]
        port = 9999
        server = "hypercorn"
        shutdown_grace = 3
        max_connections = 50000
        [vars]
        GREETING = "hi"
        LIMITS = { a = 1 }
        [[durable_objects.bindings]]
        name = "C"
        class_name = "MOD:A"
        [[durable_objects.bindings]]
        name = "O"
        class_name = "Other"
        [[migrations]]
        tag = "v1"
        new_sqlite_classes = ["A"]
        new_classes = ["Other"]
        """
    )
    cfg = load_config(path)
    assert cfg.name == "agents"
    assert cfg.worker is not None and cfg.worker.__name__ == "Worker"
    assert cfg.data_dir == (project.root / "state").resolve()
    assert cfg.max_request_body == 1000
    assert cfg.server.port == 9999 and cfg.server.server == "hypercorn" and cfg.server.shutdown_grace == 3.0
    assert cfg.server.max_connections == 50000
    # Wrangler-only keys warn (naming file and key) instead of failing.
    assert cfg.warnings == (f"{path}: compatibility_date: only wrangler uses this key; dotrio ignores it",)
    kwargs = cfg.runtime_kwargs()
    assert [(n, c.__name__) for n, c in kwargs["bindings"].items()] == [("C", "A"), ("O", "Other")]
    assert kwargs["vars"] == {"GREETING": "hi", "LIMITS": {"a": 1}}
    assert (kwargs["idle_timeout"], kwargs["hibernation_timeout"], kwargs["max_queue"], kwargs["durability"]) == (
        30.0, 2.5, 10, "power")
    assert "namespace_names" not in kwargs
    rt = dotrio.Runtime(**kwargs)
    assert rt.idle_timeout == 30.0 and rt.max_queue == 10 and rt.backend.durability == "power"


def test_defaults(project: Project) -> None:
    cfg = load_config(project.write(BINDING))
    assert cfg.data_dir == (project.root / ".dotrio").resolve()
    assert cfg.max_request_body == 32 * 1024 * 1024
    assert cfg.worker is None and cfg.main is None and cfg.migrations == ()
    assert cfg.runtime_kwargs() == {"bindings": {"C": cfg.bindings[0].cls}, "data_dir": cfg.data_dir, "vars": {}}
    memory = load_config(project.write("data_dir = ':memory:'\n" + BINDING))
    assert memory.data_dir is None


def test_wrangler_toml_for_python_reads_the_same(tmp_path: Path) -> None:
    # Cloudflare's Python Workers layout: main is a file, the entry is Default,
    # class_name is bare and resolved against main's module.
    mod = "entry_" + uuid.uuid4().hex[:10]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / f"{mod}.py").write_text(
        "import dotrio\n"
        "class Room(dotrio.DurableObject):\n    pass\n"
        "class Default(dotrio.WorkerEntrypoint):\n"
        "    async def fetch(self, request):\n        return dotrio.Response('d')\n"
    )
    (tmp_path / "wrangler.toml").write_text(
        f'name = "py"\nmain = "src/{mod}.py"\ncompatibility_flags = ["python_workers"]\n'
        'compatibility_date = "2024-12-01"\n'
        '[[durable_objects.bindings]]\nname = "ROOMS"\nclass_name = "Room"\n'
        '[[migrations]]\ntag = "v1"\nnew_sqlite_classes = ["Room"]\n'
    )
    assert find_config(tmp_path) == tmp_path / "wrangler.toml"
    cfg = load_config(tmp_path / "wrangler.toml")
    assert cfg.worker is not None and cfg.worker.__name__ == "Default"
    assert cfg.bindings[0].cls.__name__ == "Room"
    assert len(cfg.warnings) == 2
    (tmp_path / "dotrio.toml").write_text("")
    assert find_config(tmp_path) == tmp_path / "dotrio.toml"


def test_same_module_name_from_another_folder_is_refused(tmp_path: Path, project: Project) -> None:
    load_config(project.write(BINDING))
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / f"{project.mod}.py").write_text(APP)
    (other / "dotrio.toml").write_text(BINDING.replace("MOD", project.mod))
    with pytest.raises(dotrio.ConfigError, match="already imported from"):
        load_config(other / "dotrio.toml")


def test_runtime_from_config_raises_at_once_and_takes_overrides(project: Project) -> None:
    with pytest.raises(dotrio.ConfigError, match=r"runtime\.max_queue: expected"):
        dotrio.Runtime.from_config(project.write("[runtime]\nmax_queue = 0\n" + BINDING))
    rt = dotrio.Runtime.from_config(project.write("[runtime]\nmax_queue = 7\n" + BINDING), data_dir=None)
    assert rt.max_queue == 7 and rt.data_dir is None


V1 = """
[[durable_objects.bindings]]
name = "COUNTER"
class_name = "MOD:A"
[[migrations]]
tag = "v1"
new_sqlite_classes = ["A"]
"""

RENAMED = """
[[durable_objects.bindings]]
name = "COUNTER"
class_name = "MOD:B"
[[migrations]]
tag = "v1"
new_sqlite_classes = ["A"]
[[migrations]]
tag = "v2"
renamed_classes = [{from = "A", to = "B"}]
"""

# The same code without the rename: B is a new class with its own namespace.
NOT_RENAMED = """
[[durable_objects.bindings]]
name = "COUNTER"
class_name = "MOD:B"
[[migrations]]
tag = "v1"
new_sqlite_classes = ["A"]
[[migrations]]
tag = "v2"
new_sqlite_classes = ["B"]
"""


async def test_renamed_class_keeps_its_objects(project: Project) -> None:
    async with dotrio.Runtime.from_config(project.write(V1)) as rt:
        stub = rt.env.COUNTER.get_by_name("x")
        assert await stub.increment(5) == 5
        old_id = str(stub.id)

    cfg = load_config(project.write(RENAMED))
    assert cfg.bindings[0].namespace == "A"
    assert cfg.runtime_kwargs()["namespace_names"] == {"B": "A"}
    async with dotrio.Runtime.from_config(project.write(RENAMED)) as rt:
        stub = rt.env.COUNTER.get_by_name("x")
        assert type(rt.env.COUNTER.cls).__name__ and rt.env.COUNTER.cls.__name__ == "B"
        assert str(stub.id) == old_id
        assert await stub.value() == 5
        assert await stub.increment() == 6
    # Nothing moved on disk: B's objects live in A's folder.
    assert (project.root / ".dotrio" / "A").is_dir()
    assert not (project.root / ".dotrio" / "B").exists()

    # Control: without the rename migration the same name reaches nothing.
    async with dotrio.Runtime.from_config(project.write(NOT_RENAMED)) as rt:
        assert await rt.env.COUNTER.get_by_name("x").value() is None


async def test_deleted_class_refuses_to_start_while_its_data_exists(project: Project) -> None:
    both = """
    [[durable_objects.bindings]]
    name = "COUNTER"
    class_name = "MOD:A"
    [[durable_objects.bindings]]
    name = "OTHER"
    class_name = "MOD:Other"
    [[migrations]]
    tag = "v1"
    new_sqlite_classes = ["A", "Other"]
    """
    async with dotrio.Runtime.from_config(project.write(both)) as rt:
        await rt.env.COUNTER.get_by_name("x").increment()

    deleted = """
    [[durable_objects.bindings]]
    name = "OTHER"
    class_name = "MOD:Other"
    [[migrations]]
    tag = "v1"
    new_sqlite_classes = ["A", "Other"]
    [[migrations]]
    tag = "v2"
    deleted_classes = ["A"]
    """
    path = project.write(deleted)
    with pytest.raises(dotrio.ConfigError) as info:
        dotrio.Runtime.from_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: migrations[1].deleted_classes[0]: expected no stored objects")
    assert str(project.root / ".dotrio" / "A") in message

    shutil.rmtree(project.root / ".dotrio" / "A")
    async with dotrio.Runtime.from_config(path) as rt:
        assert "COUNTER" not in rt.env


def test_deleting_a_class_that_never_stored_anything_is_fine(project: Project) -> None:
    path = project.write(
        """
        [[durable_objects.bindings]]
        name = "OTHER"
        class_name = "MOD:Other"
        [[migrations]]
        tag = "v1"
        new_sqlite_classes = ["A", "Other"]
        [[migrations]]
        tag = "v2"
        deleted_classes = ["A"]
        """
    )
    assert load_config(path).migrations[1].deleted_classes == ("A",)


# ---- CLI -----------------------------------------------------------------------------


def test_cli_check_prints_a_summary(project: Project) -> None:
    path = project.write("name = 'demo'\nmain = 'MOD:Worker'\n[vars]\nG = 1\n" + RENAMED.replace("MOD", project.mod))
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert "name:     demo" in result.stdout
    assert f"worker:   {project.mod}.Worker" in result.stdout
    assert f"COUNTER -> {project.mod}.B, stored as 'A'" in result.stdout
    assert result.stdout.rstrip().endswith("ok")


@pytest.mark.parametrize("command", ["check", "serve"])
def test_cli_bad_config_exits_2_with_the_message_and_no_traceback(project: Project, command: str) -> None:
    path = project.write("[runtime]\ndurability = 'disk'\n" + BINDING)
    result = CliRunner().invoke(cli, [command, str(path)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"dotrio: error: {path}: runtime.durability: expected 'process' or 'power', got str 'disk'\n"
    )
    assert "Traceback" not in result.output


def test_cli_without_a_config_file_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 2
    assert "looked for ./dotrio.toml, ./wrangler.jsonc, ./wrangler.json and ./wrangler.toml" in result.stderr


def test_cli_finds_dotrio_toml_in_the_working_directory(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.write(BINDING)
    monkeypatch.chdir(project.root)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 0, result.output
    assert f"config:   {project.root / 'dotrio.toml'}" in result.stdout


def test_cli_tls_needs_hypercorn(project: Project) -> None:
    path = project.write(BINDING)
    cert = project.root / "c.pem"
    cert.write_text("x")
    result = CliRunner().invoke(cli, ["serve", str(path), "--certfile", str(cert), "--keyfile", str(cert)])
    assert result.exit_code == 2
    assert "TLS needs --server hypercorn" in result.output
