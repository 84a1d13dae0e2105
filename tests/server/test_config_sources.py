"""Config sources beyond one TOML file: wrangler.jsonc/json, .dev.vars,
DOTRIO_VAR_* and { env = "NAME" } secrets; every error reported at once with
"did you mean"; the layering of Runtime.from_config."""

from __future__ import annotations

import ast
import json
import textwrap
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

import dotrio
from dotrio._config import find_config, load_config, parse_jsonc
from dotrio.server._cli import main as cli

APP = """
import dotrio

class Room(dotrio.DurableObject):
    async def fetch(self, request):
        return dotrio.Response(self.env.GREETING)

class Default(dotrio.WorkerEntrypoint):
    async def fetch(self, request):
        return dotrio.Response(self.env.API_KEY)
"""

SECRET = "sk-live-" + "7" * 24


@pytest.fixture
def mod(tmp_path: Path) -> str:
    name = "srcapp_" + uuid.uuid4().hex[:10]
    (tmp_path / f"{name}.py").write_text(APP)
    return name


def jsonc(mod: str) -> str:
    return textwrap.dedent(
        f"""\
        // wrangler.jsonc as Cloudflare's templates write it
        {{
          "$schema": "node_modules/wrangler/config-schema.json",
          "name": "rooms", /* the app */
          "main": "{mod}.py",
          "compatibility_date": "2025-01-01",
          "vars": {{ "GREETING": "hi // not a comment", "API_KEY": {{ "env": "ROOMS_API_KEY" }}, }},
          "durable_objects": {{
            "bindings": [
              {{ "name": "ROOMS", "class_name": "Room" }},  // trailing comma next
            ],
          }},
          "migrations": [{{ "tag": "v1", "new_sqlite_classes": ["Room"] }}],
        }}
        """
    )


def test_parse_jsonc_keeps_strings_and_positions() -> None:
    assert parse_jsonc('{"a": "x // y /* z */", /* c */ "b": [1, 2,], // end\n}') == {
        "a": "x // y /* z */", "b": [1, 2]}
    assert parse_jsonc('{"a": "q\\"//", "b": 1}') == {"a": 'q"//', "b": 1}
    with pytest.raises(json.JSONDecodeError) as info:
        parse_jsonc('// one\n{\n  "a": 1\n  "b": 2\n}')
    assert info.value.lineno == 4


def test_discovery_order(tmp_path: Path) -> None:
    assert find_config(tmp_path) is None
    for name in ("wrangler.toml", "wrangler.json", "wrangler.jsonc", "dotrio.toml"):
        (tmp_path / name).write_text("")
        assert find_config(tmp_path) == tmp_path / name


def test_wrangler_jsonc_with_dev_vars(tmp_path: Path, mod: str) -> None:
    (tmp_path / "wrangler.jsonc").write_text(jsonc(mod))
    (tmp_path / ".dev.vars").write_text(f'# local secrets\nAPI_KEY="{SECRET}"\nexport EXTRA = plain # note\n')
    cfg = load_config(tmp_path / "wrangler.jsonc", environ={})
    assert cfg.name == "rooms" and cfg.worker is not None and cfg.worker.__name__ == "Default"
    assert cfg.bindings[0].name == "ROOMS"
    assert dict(cfg.vars) == {"GREETING": "hi // not a comment", "API_KEY": SECRET, "EXTRA": "plain"}
    assert dict(cfg.secrets) == {"API_KEY": ".dev.vars", "EXTRA": ".dev.vars"}
    assert tmp_path / ".dev.vars" in cfg.sources
    assert SECRET not in repr(cfg)
    assert [w.split(": ", 1)[1] for w in cfg.warnings] == [
        "$schema: only wrangler uses this key; dotrio ignores it",
        "compatibility_date: only wrangler uses this key; dotrio ignores it",
    ]


def test_env_form_and_dotrio_var_overrides(tmp_path: Path, mod: str) -> None:
    path = tmp_path / "dotrio.toml"
    path.write_text(
        f'main = "{mod}"\n[vars]\nGREETING = "hi"\nINTERVAL = 60\nAPI_KEY = {{ env = "ROOMS_API_KEY" }}\n'
        '[[durable_objects.bindings]]\nname = "ROOMS"\nclass_name = "Room"\n'
    )
    cfg = load_config(path, environ={"ROOMS_API_KEY": SECRET, "DOTRIO_VAR_INTERVAL": "5", "DOTRIO_VAR_NEW": "n"})
    assert dict(cfg.vars) == {"GREETING": "hi", "INTERVAL": 5, "API_KEY": SECRET, "NEW": "n"}
    assert set(cfg.secrets) == {"API_KEY", "INTERVAL", "NEW"}
    # DOTRIO_VAR_ beats .dev.vars, which beats the file.
    (tmp_path / ".dev.vars").write_text("GREETING=dev\nAPI_KEY=from-dev\n")
    cfg = load_config(path, environ={"DOTRIO_VAR_GREETING": "env"})
    assert cfg.vars["GREETING"] == "env" and cfg.vars["API_KEY"] == "from-dev"
    # An unset variable is an error, unless another source gives the var.
    (tmp_path / ".dev.vars").unlink()
    with pytest.raises(dotrio.ConfigError) as info:
        load_config(path, environ={"DOTRIO_VAR_INTERVAL": "soon"})
    message = str(info.value)
    assert f"{path}: vars.API_KEY: expected environment variable ROOMS_API_KEY to be set" in message
    assert "environment variable DOTRIO_VAR_INTERVAL: expected a int like the value in the config file" in message


def test_bad_dev_vars_line_names_file_and_line_not_value(tmp_path: Path, mod: str) -> None:
    path = tmp_path / "dotrio.toml"
    path.write_text(f'[[durable_objects.bindings]]\nname = "ROOMS"\nclass_name = "{mod}:Room"\n')
    (tmp_path / ".dev.vars").write_text(f"OK=1\n{SECRET}\nBAD-NAME={SECRET}\n")
    with pytest.raises(dotrio.ConfigError) as info:
        load_config(path, environ={})
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{tmp_path / '.dev.vars'}: line 2: expected NAME=value")
    assert lines[1].startswith(f"{tmp_path / '.dev.vars'}: line 3: expected NAME=value")
    assert "sk-live" not in str(info.value)


def test_every_error_at_once_with_did_you_mean(tmp_path: Path, mod: str) -> None:
    path = tmp_path / "dotrio.toml"
    path.write_text(
        "nmae = 'x'\nmax_request_body = -1\n[runtime]\nidle_timeut = 3\nmax_queue = 0\n"
        "[server]\nprot = 80\n"
        f"[[durable_objects.bindings]]\nname = 'A'\nclass_name = '{mod}:Nope'\nclas_name = 1\n"
        f"[[durable_objects.bindings]]\nname = 'my-b'\nclass_name = '{mod}:Room'\n"
        "[[migrations]]\ntag = 'v1'\nnew_sqlite_class = ['Room']\n"
    )
    with pytest.raises(dotrio.ConfigError) as info:
        load_config(path, environ={})
    lines = str(info.value).splitlines()
    keys = [line.split(": ")[1] for line in lines]
    assert keys == [
        "nmae", "max_request_body", "runtime.idle_timeut", "runtime.max_queue", "server.prot",
        "migrations[0].new_sqlite_class",
        "durable_objects.bindings[0].clas_name", "durable_objects.bindings[0].class_name",
        "durable_objects.bindings[1].name",
    ], lines
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert "did you mean 'name'?" in lines[0]
    assert "did you mean 'idle_timeout'?" in lines[2]
    assert "did you mean 'port'?" in lines[4]
    assert "did you mean 'new_sqlite_classes'?" in lines[5]
    assert "did you mean 'class_name'?" in lines[6]
    # The CLI prints them all and exits 2.
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"dotrio: error: {line}" for line in lines]
    # Wrangler-only keys are suggested too.
    path.write_text(f"compatability_date = '2025-01-01'\n[[durable_objects.bindings]]\nname = 'A'\n"
                    f"class_name = '{mod}:Room'\n")
    with pytest.raises(dotrio.ConfigError, match="did you mean 'compatibility_date'"):
        load_config(path, environ={})


def test_check_output_never_shows_secrets(tmp_path: Path, mod: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wrangler.jsonc").write_text(jsonc(mod))
    monkeypatch.setenv("ROOMS_API_KEY", SECRET)
    monkeypatch.setenv("DOTRIO_VAR_GREETING", SECRET + "g")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output and SECRET not in result.stderr
    assert "API_KEY (secret: environment variable ROOMS_API_KEY)" in result.output
    assert "GREETING (secret: environment variable DOTRIO_VAR_GREETING)" in result.output


async def test_runtime_from_config_reads_jsonc_and_secrets(tmp_path: Path, mod: str) -> None:
    (tmp_path / "wrangler.jsonc").write_text(jsonc(mod).replace('"main"', '"data_dir": ":memory:", "main"'))
    (tmp_path / ".dev.vars").write_text(f"API_KEY={SECRET}\n")
    async with dotrio.Runtime.from_config(tmp_path / "wrangler.jsonc") as rt:
        assert rt.env.API_KEY == SECRET
        assert SECRET not in repr(rt.env)


def test_runtime_does_not_import_the_config_layer() -> None:
    """The runtime never reads files: no import (lazy or type-only) of the
    config layer from dotrio/runtime/, and the config layer does not import
    the runtime either (the package wires them together)."""
    root = Path(dotrio.__file__).parent

    def imported(folder: Path) -> set[str]:
        names: set[str] = set()
        for file in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.ImportFrom):
                    names.add("." * node.level + (node.module or ""))
                elif isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
        return names

    assert not {n for n in imported(root / "runtime") if "_config" in n}
    assert not {n for n in imported(root / "_config") if "runtime" in n}


def test_dev_vars_syntax(tmp_path: Path, mod: str) -> None:
    path = tmp_path / "dotrio.toml"
    path.write_text(f'[[durable_objects.bindings]]\nname = "ROOMS"\nclass_name = "{mod}:Room"\n')
    (tmp_path / ".dev.vars").write_text(
        "PLAIN = a b  # comment\n"
        "SINGLE='x # not a comment \\\\n'\n"
        'DOUBLE="line\\nnext \\"q\\" é"\n'
        "EQUALS=a=b=c\n"
        "export EXPORTED=1\n"
        "EMPTY=\n"
        "   # indented comment\n"
    )
    cfg = load_config(path, environ={})
    assert dict(cfg.vars) == {
        "PLAIN": "a b", "SINGLE": "x # not a comment \\\\n", "DOUBLE": 'line\nnext "q" é',
        "EQUALS": "a=b=c", "EXPORTED": "1", "EMPTY": "",
    }
