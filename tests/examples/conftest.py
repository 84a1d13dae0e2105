"""Fixtures for the example app's tests.

The dotrio.testing fixtures are imported here rather than loaded as a plugin
so that these tests run the same whether or not dotrio's pytest11 entry point
is installed (conftest fixtures take precedence over the plugin's). Tests that
want virtual time ask for pytest-trio's ``autojump_clock`` themselves, since
the plugin's hook that would choose it may not be loaded."""

from __future__ import annotations

from pathlib import Path

from dotrio.testing import dotrio_data_dir, dotrio_runtime_factory

__all__ = ["EXAMPLE_DIR", "EXAMPLE_CONFIG", "dotrio_data_dir", "dotrio_runtime_factory"]

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "agents"
EXAMPLE_CONFIG = EXAMPLE_DIR / "dotrio.toml"
