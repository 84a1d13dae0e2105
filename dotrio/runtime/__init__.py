"""The embedded runtime: actors, gates, eviction."""

from ._actor import ActorStatistics
from ._runtime import ConfigReader, Runtime, RuntimeStatistics, set_config_reader

__all__ = ["Runtime", "RuntimeStatistics", "ActorStatistics", "ConfigReader", "set_config_reader"]
