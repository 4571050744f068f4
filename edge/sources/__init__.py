"""Sources: how the edge reads a logger. Each kind implements
:class:`~coldtrail.edge.sources.base.Source` and is listed in :data:`SOURCES` under the name a
config file uses (``source = "modbus-tcp"``): a new kind is one module and one line here.
"""

from __future__ import annotations

from coldtrail.edge.config import DeviceConfig
from coldtrail.edge.profiles import DeviceProfile
from coldtrail.edge.sources import modbus
from coldtrail.edge.sources.base import Measurement, Source, SourceFactory
from coldtrail.errors import ConfigError

__all__ = ["SOURCES", "Measurement", "Source", "SourceFactory", "create_source"]

SOURCES: dict[str, SourceFactory] = {
    "modbus-tcp": modbus.ModbusTcpSource,
}


def create_source(device: DeviceConfig, profile: DeviceProfile) -> Source:
    factory = SOURCES.get(device.source)
    if factory is None:
        raise ConfigError(
            f"sensor {device.sensor}: unknown source {device.source!r}; "
            f"known: {', '.join(sorted(SOURCES))}"
        )
    return factory(device, profile)
