"""dotrio's version: the one place it is written.

pyproject.toml reads it (``[tool.setuptools.dynamic]``) for the package
metadata, and ``dotrio.__version__`` re-exports it.
"""

__version__ = "0.1.0"
