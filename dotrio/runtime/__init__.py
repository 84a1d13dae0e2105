"""The embedded runtime: actors, gates, eviction."""

from .._util import fixup_module_metadata as _fixup_module_metadata
from ._actor import ActorStatistics
from ._runtime import ConfigReader, Runtime, RuntimeStatistics, set_config_reader

__all__ = ["Runtime", "RuntimeStatistics", "ActorStatistics", "ConfigReader", "set_config_reader"]

_fixup_module_metadata(__name__, globals(), ["RuntimeStatistics", "ActorStatistics"])
