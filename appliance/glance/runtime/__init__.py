"""SAM runtimes: the interface and the factory (implementations load lazily)."""

from appliance.glance.runtime.base import SamRuntime
from appliance.glance.runtime.factory import RUNTIMES, build_runtime

__all__ = ["RUNTIMES", "SamRuntime", "build_runtime"]
