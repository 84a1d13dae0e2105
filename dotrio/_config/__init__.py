"""The config layer: ``dotrio.toml`` and wrangler files, read into a ``Config``.

* ``_schema``: the keys, their types and ranges, the ``Config`` dataclasses
  and the error collector (no I/O);
* ``_migrations``: the replay of ``[[migrations]]`` (no I/O);
* ``_loader``: discovery, TOML/JSONC parsing, vars and secrets, importing the
  classes a file names, and the deleted-class data check.

The layer sits beside the runtime, not under it: it builds ``Runtime``
keyword arguments (``Config.runtime_kwargs()``) and imports nothing from
``dotrio.runtime``. ``Runtime.from_config`` reaches it through the reader
that ``dotrio/__init__.py`` installs, so the runtime itself never opens a
file. The server (above both) uses ``load_config`` directly.
"""

from ._loader import (
    DEV_VARS,
    VAR_ENV_PREFIX,
    find_config,
    load_config,
    parse_jsonc,
    runtime_kwargs_from_file,
)
from ._schema import (
    CONFIG_NAMES,
    DEFAULT_MAX_REQUEST_BODY,
    RESERVED_PREFIX,
    BindingConfig,
    Config,
    MigrationConfig,
    ServerSettings,
)

__all__ = [
    "CONFIG_NAMES",
    "DEFAULT_MAX_REQUEST_BODY",
    "DEV_VARS",
    "RESERVED_PREFIX",
    "VAR_ENV_PREFIX",
    "BindingConfig",
    "Config",
    "MigrationConfig",
    "ServerSettings",
    "find_config",
    "load_config",
    "parse_jsonc",
    "runtime_kwargs_from_file",
]
