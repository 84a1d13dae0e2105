"""Sphinx configuration for the dotrio docs.

Built with ``sphinx-build -W -n -b html docs docs/_build/html``: every warning
is an error and every cross-reference must resolve (nitpicky mode), which is
what tests/test_docs.py checks. Pages are Markdown (MyST); the API reference
is generated from docstrings with autodoc.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A checkout that is not pip-installed still documents its own code.
sys.path.insert(0, str(ROOT))

project = "dotrio"
author = "the dotrio authors"
copyright = "the dotrio authors"  # noqa: A001 - Sphinx's name

import dotrio  # noqa: E402 - after the path tweak above

release = dotrio.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "tutorial/*.py"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "show-inheritance": False}

nitpicky = True
# Names outside dotrio: there is no network here to fetch other projects'
# inventories (intersphinx), so these are named but not linked. Everything
# inside dotrio must resolve.
nitpick_ignore_regex = [
    (r"py:.*", r"(trio|outcome|apsw|httpx|pytest|_pytest|pluggy|orjson)(\..*)?"),
    (r"py:.*", r"(datetime|collections\.abc|typing|pathlib|os|types|contextlib|enum)\..*"),
    # Type variables of generic signatures.
    (r"py:class", r"(dotrio\.[\w.]+\.)?T"),
]
# Internal types that appear only in the signatures of constructors the
# runtime calls (users receive these objects, they never build them).
nitpick_ignore = [
    ("py:class", name)
    for name in (
        "Actor",
        "dotrio.runtime._actor.Actor",
        "dotrio.runtime._actor.Event",
        "IdFactory",
        "dotrio._ids.IdFactory",
        "StorageEngine",
        "dotrio.storage._sql.SqlHost",
        "dotrio.storage._object.StorageEngine",
        # The Protocols through which user-facing objects reach the runtime.
        "dotrio._object.ObjectHost",
        "dotrio._namespace.ObjectDelivery",
        "dotrio.storage._object.GateHolder",
        "datetime",
        "StorageBackend",
        "HeadersInit",
    )
]

html_theme = os.environ.get("DOTRIO_DOCS_THEME", "furo")
html_title = f"dotrio {release}"
html_static_path: list[str] = []
