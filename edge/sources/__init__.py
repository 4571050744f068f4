"""Sources: how the edge reads a logger. Each kind implements
:class:`~coldtrail.edge.sources.base.Source` and is listed in :data:`SOURCES` under the name a
config file uses (``source = "modbus-tcp"``): a new kind is one module and one line here.
"""

from __future__ import annotations

from coldtrail.edge.config import DeviceConfig
from coldtrail.edge.profiles import DeviceProfile
from coldtrail.edge.sources.base import Measurement, Source, SourceContext, SourceFactory
from coldtrail.errors import ConfigError

__all__ = ["SOURCES", "Measurement", "Source", "SourceContext", "SourceFactory", "create_source"]


def _modbus(device: DeviceConfig, profile: DeviceProfile, context: SourceContext) -> Source:
    from coldtrail.edge.sources.modbus import ModbusSource

    return ModbusSource(device, profile, context)


def _ble(device: DeviceConfig, profile: DeviceProfile, context: SourceContext) -> Source:
    # Imported when a BLE logger is configured: an agent without one never loads the parsers.
    from coldtrail.edge.sources.ble import BleSource

    return BleSource(device, profile, context)


SOURCES: dict[str, SourceFactory] = {
    "modbus-tcp": _modbus,
    "modbus-rtu": _modbus,
    "ble": _ble,
}


def create_source(device: DeviceConfig, profile: DeviceProfile, context: SourceContext) -> Source:
    factory = SOURCES.get(device.source)
    if factory is None:
        raise ConfigError(
            f"sensor {device.sensor}: unknown source {device.source!r}; "
            f"known: {', '.join(sorted(SOURCES))}"
        )
    return factory(device, profile, context)
