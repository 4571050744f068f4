"""One adapter over the Home Assistant Bluetooth parsers built on ``sensor-state-data``
(bthome-ble, ruuvitag-ble, and the others with the same ``BluetoothData`` interface).

A parser is fed a ``BluetoothServiceInfoBleak`` built from our :class:`Advert` and answers with
entity values keyed by device class; they are mapped here onto our quantity names and units.
The parser objects keep per-device state (BTHome packet ids, encryption counters), so each
device gets its own instance.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coldtrail.edge.ble.advert import Advert, Decoded, UndecodableAdvert
from coldtrail.errors import ConfigError

_NO_ADDRESS = "00:00:00:00:00:00"

# device class -> (our key, {unit: factor to our unit})
_QUANTITIES: dict[str, tuple[str, dict[str, float]]] = {
    "temperature": ("temperature_c", {"°C": 1.0}),
    "humidity": ("humidity_pct", {"%": 1.0}),
    "battery": ("battery_pct", {"%": 1.0}),
    "voltage": ("battery_v", {"V": 1.0, "mV": 0.001}),
    "pressure": ("pressure_pa", {"Pa": 1.0, "hPa": 100.0, "mbar": 100.0, "kPa": 1000.0}),
    "packet_id": ("packet_id", {"": 1.0}),
}


def _convert(device_class: str, unit: str | None, value: Any) -> tuple[str, float | int | None]:
    key, factors = _QUANTITIES[device_class]
    if value is None:
        return key, None
    if device_class == "temperature" and unit == "°F":
        return key, round((float(value) - 32) * 5 / 9, 3)
    factor = factors.get(unit or "")
    if factor is None:
        raise UndecodableAdvert(f"{device_class} in unit {unit!r}: no conversion to {key}")
    if key == "packet_id":
        return key, int(value)
    return key, round(float(value) * factor, 6)


def service_info(advert: Advert) -> Any:
    """The Home Assistant view of an advert (habluetooth's BluetoothServiceInfoBleak)."""
    from bleak.backends.device import BLEDevice
    from habluetooth.models import BluetoothServiceInfoBleak

    address = advert.mac or _NO_ADDRESS
    return BluetoothServiceInfoBleak(
        "",
        address,
        advert.rssi if advert.rssi is not None else -127,
        dict(advert.manufacturer_data),
        dict(advert.service_data),
        list(advert.service_data),
        "coldtrail",
        BLEDevice(address, None, None),
        None,
        False,
        advert.received,
        None,
    )


@dataclass(frozen=True)
class HassParser:
    """Where a parser lives; imported when first used so an edge without BLE never loads it."""

    module: str
    cls: str
    package: str

    def create(self, **kwargs: Any) -> Any:
        try:
            mod = importlib.import_module(self.module)
        except ImportError as exc:
            raise ConfigError(f"BLE parser {self.package} is not installed: {exc}") from exc
        return getattr(mod, self.cls)(**kwargs)


class SensorStateDataDecoder:
    def __init__(
        self,
        name: str,
        parser: Any,
        matches: Callable[[Advert], bool],
        check: Callable[[Advert], None] | None = None,
        extras: Callable[[Advert], Mapping[str, float | int | None]] | None = None,
        mac: Callable[[Advert], str | None] | None = None,
    ) -> None:
        self.name = name
        self._parser = parser
        self._matches = matches
        self._check = check
        self._extras = extras
        self._mac = mac

    def matches(self, advert: Advert) -> bool:
        return self._matches(advert)

    def decode(self, advert: Advert) -> Decoded:
        if not self._matches(advert):
            raise UndecodableAdvert(f"not a {self.name} advert")
        if self._check is not None:
            self._check(advert)
        info = service_info(advert)
        try:
            if not self._parser.supported(info):
                raise UndecodableAdvert(f"the {self.name} parser does not take this advert")
            update = self._parser.update(info)
        except (ValueError, TypeError, IndexError, KeyError, struct.error) as exc:
            raise UndecodableAdvert(f"{self.name}: {exc}") from exc
        values: dict[str, float | int | None] = {}
        for entity, value in update.entity_values.items():
            description = update.entity_descriptions.get(entity)
            device_class = str(getattr(description, "device_class", "") or entity.key)
            if device_class not in _QUANTITIES:
                continue
            key, converted = _convert(
                device_class,
                getattr(description, "native_unit_of_measurement", None),
                value.native_value,
            )
            # A device with several probes names the first one plainly ("temperature"), the
            # others with a suffix: the plain one is the logger's own reading.
            if key not in values or entity.key == device_class:
                values[key] = converted
        if self._extras is not None:
            values.update(self._extras(advert))
        if not any(k in values for k in ("temperature_c", "humidity_pct")):
            raise UndecodableAdvert(f"{self.name} advert carries no temperature or humidity")
        if advert.rssi is not None:
            values["rssi_dbm"] = advert.rssi
        mac = self._mac(advert) if self._mac is not None else None
        return Decoded(format=self.name, values=values, mac=mac or advert.mac)
