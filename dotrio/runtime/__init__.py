"""The embedded runtime: actors, gates, eviction."""

from ._actor import ActorStatistics
from ._runtime import Runtime, RuntimeStatistics

__all__ = ["Runtime", "RuntimeStatistics", "ActorStatistics"]
