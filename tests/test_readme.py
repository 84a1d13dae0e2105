"""The README leads in: its Python example runs as pasted, its serve command
installs (and serving imports) only what serving needs, its test command is
exactly what CI runs, it points to the docs, and nothing a user reads refers
to issues or to files outside the repository."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

import dotrio

REPO = Path(dotrio.__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

#: Import names of the packages in the optional extras: serving needs none of them.
OPTIONAL_MODULES = ("httpx", "sphinx", "myst_parser", "furo", "pytest", "hypothesis", "watchfiles", "matplotlib")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block is not None, "the README starts with its two commands"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 2, lines
    return lines


def test_python_example_runs_as_pasted(tmp_path: Path) -> None:
    block = re.search(r"```python\n(.*?)```", README, re.S)
    assert block is not None
    (tmp_path / "example.py").write_text(block.group(1))
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "2\n"
    assert (tmp_path / ".dotrio").is_dir()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    serve, test = _commands()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test in ci
    assert "pytest" in test and "dotrio serve" in serve
    # Everything the suite imports is in the extras the test command installs.
    extras = set(re.search(r"-e '\.\[([a-z,]+)\]'", test).group(1).split(","))  # type: ignore[union-attr]
    assert extras == {"test", "dev", "docs", "examples"}
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])


def test_serve_command_installs_only_what_serving_needs() -> None:
    serve, _ = _commands()
    assert "pip install -e . " in serve, "the serve command installs no extra"
    core = " ".join(PYPROJECT["project"]["dependencies"]).lower()
    for name in ("httpx", "sphinx", "myst", "furo", "pytest", "hypothesis", "watchfiles", "matplotlib"):
        assert name not in core, name
    optional = PYPROJECT["project"]["optional-dependencies"]
    assert {"sphinx", "myst-parser", "furo"} <= {re.split(r"[<>=]", d)[0] for d in optional["docs"]}
    assert [re.split(r"[<>=]", d)[0] for d in optional["examples"]] == ["httpx"]
    assert not any(re.split(r"[<>=]", d)[0] in ("sphinx", "myst-parser", "furo") for d in optional["test"])


BLOCKER = """
import sys
from importlib.abc import MetaPathFinder

class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is an optional extra: serving must not import it")
        return None

sys.meta_path.insert(0, Block())
from dotrio.server._cli import main
main(["serve", {config!r}, "--port", "0"], prog_name="dotrio")
"""


def test_serving_the_example_imports_no_optional_package(tmp_path: Path) -> None:
    example = tmp_path / "agents"
    shutil.copytree(REPO / "examples" / "agents", example, ignore=shutil.ignore_patterns(".dotrio", "__pycache__"))
    log_path = tmp_path / "serve.log"
    code = BLOCKER.format(blocked=set(OPTIONAL_MODULES), config=str(example / "dotrio.toml"))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, env=_env(),
                                cwd=example)
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"serving \S+ on (http://\S+)", log_path.read_text())
            url = found.group(1) if found else None
            time.sleep(0.05)
        assert url is not None, log_path.read_text()
        request = urllib.request.Request(url + "/agents/ada/prompt", data=b'{"message": "hello"}', method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_readme_points_to_the_docs() -> None:
    for target in ("docs/quickstart.md", "docs/tutorial/chat-room.md", "docs/tutorial/agent.md",
                   "examples/agents/README.md", "docs/operating.md"):
        assert f"]({target})" in README, target
    assert "python -m sphinx docs docs/_build/html" in README
    layout = re.search(r"## Layout\n+```\n(.*?)```", README, re.S)
    assert layout is not None and re.search(r"(?m)^docs/\s", layout.group(1))
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if "://" not in link:
            assert (REPO / link).exists(), f"README links {link}, which does not exist"


#: What a user must never read: issue numbers, the project's private notes.
FORBIDDEN = re.compile(r"\bissues? #?\d|\(issue\b|\bAPI\.md\b|\bDESIGN\.md\b|\.\./shared", re.I)
#: In files also the workspace's own paths (help output may show the checkout's real path).
FORBIDDEN_IN_FILES = re.compile(FORBIDDEN.pattern + r"|/work/", re.I)


def _user_facing_files() -> list[Path]:
    files = [REPO / "README.md"]
    files += sorted((REPO / "dotrio").rglob("*.py")) + sorted((REPO / "dotrio").rglob("*.pyi"))
    files += [p for p in sorted((REPO / "docs").rglob("*")) if p.is_file() and "_build" not in p.parts
              and p.suffix in (".md", ".py", ".toml", ".txt", ".rst")]
    files += [p for p in sorted((REPO / "examples").rglob("*")) if p.is_file() and ".dotrio" not in p.parts
              and p.suffix in (".md", ".py", ".toml", ".jsonc")]
    files += [p for p in (REPO / "CONTRIBUTING.md", REPO / "Dockerfile") if p.exists()]
    return files


def test_nothing_user_facing_refers_to_issues_or_outside_files() -> None:
    found = []
    for path in _user_facing_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if FORBIDDEN_IN_FILES.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("command", [[], ["serve"], ["dev"], ["check"], ["bench"]])
def test_cli_help_refers_to_no_issue(command: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "dotrio", *command, "--help"], env=_env(), capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert not FORBIDDEN.search(done.stdout), done.stdout
