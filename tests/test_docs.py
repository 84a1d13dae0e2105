"""The docs build (Sphinx + MyST + autodoc) with every warning an error and
every cross-reference checked (``-W -n``): a renamed API, a broken link
between pages or a docstring with bad markup fails here. A second build of a
deliberately broken copy shows that the check does catch those."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def build(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", str(source), str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )


def test_docs_build_without_warnings_or_broken_references(tmp_path: Path) -> None:
    done = build(DOCS, tmp_path / "html")
    assert done.returncode == 0, done.stdout + done.stderr
    for page in ("index", "quickstart", "tutorial/chat-room", "tutorial/agent", "testing", "concepts/gates",
                 "concepts/storage", "concepts/alarms", "concepts/hibernation", "concepts/durability",
                 "cloudflare", "reference/api", "reference/config", "operating", "design/index", "design/layers",
                 "design/gates", "design/commit-pipeline", "design/storage-layout", "design/alarms",
                 "design/front-end", "design/kernels"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
    api = (tmp_path / "html" / "reference" / "api.html").read_text()
    # Generated from docstrings, not hand-written.
    for name in ("dotrio.DurableObject", "dotrio.Runtime.from_config", "dotrio.testing.run_in_durable_object",
                 "dotrio.storage.ObjectStorage.set_alarm", "dotrio.Schedule"):
        assert f'id="{name}"' in api, name


def test_a_broken_reference_fails_the_build(tmp_path: Path) -> None:
    broken = tmp_path / "docs"
    shutil.copytree(DOCS, broken, ignore=shutil.ignore_patterns("_build"))
    with open(broken / "quickstart.md", "a") as f:
        f.write("\nSee {py:class}`dotrio.NoSuchClass` and [a page](no-such-page.md).\n")
    done = build(broken, tmp_path / "html")
    assert done.returncode != 0
    assert "dotrio.NoSuchClass" in done.stderr and "no-such-page" in done.stderr


def test_contributing_links_stay_inside_the_repository() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links, "CONTRIBUTING.md links the design pages"
    for link in links:
        assert "://" not in link and not link.startswith(".."), link
        assert (ROOT / link).exists(), f"CONTRIBUTING.md links {link}, which does not exist"
    # The paths it names as code to read exist too.
    for path in re.findall(r"`((?:dotrio|tests|benchmarks|docs)/[\w/.-]+\.(?:py|md))`", text):
        assert (ROOT / path).exists(), path


def test_design_pages_name_files_that_exist() -> None:
    # The design pages say where the code is; a module move must update them.
    for page in sorted((DOCS / "design").glob("*.md")):
        for path in re.findall(r"`((?:dotrio|tests|benchmarks)/[\w/.<>-]+)`", page.read_text()):
            if "<" in path:  # a pattern such as dotrio/_kernels/<kernel>/
                continue
            assert (ROOT / path.rstrip("/")).exists(), f"{page.name} names {path}, which does not exist"
