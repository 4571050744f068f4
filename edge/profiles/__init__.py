"""Device profiles as data: one TOML file per logger model, loaded into frozen dataclasses.

Adding a model is adding a file here (and a fixture for its tests), not code.
"""

from __future__ import annotations

import struct
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from coldtrail.errors import ConfigError

Quantity = Literal[
    "temperature_c", "humidity_pct", "battery_pct", "latitude", "longitude", "speed_kmh",
    "door_open",
]  # fmt: skip
RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32"]
_QUANTITIES = (
    "temperature_c", "humidity_pct", "battery_pct", "latitude", "longitude", "speed_kmh",
    "door_open",
)  # fmt: skip
SWITCHES = frozenset({"door_open"})
"""Quantities that are a contact's state: any raw value but zero reads as true (1.0), whatever
the module sends for it (1, 0xFF00)."""
_WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f"}


@dataclass(frozen=True)
class ModbusPoint:
    quantity: Quantity
    function: Literal[3, 4]
    address: int
    type: RegisterType
    scale: float = 1.0
    offset: float = 0.0
    not_available: int | None = None
    """Raw value the device sends when it has no measurement (e.g. probe unplugged)."""

    @property
    def width(self) -> int:
        return _WIDTH[self.type]


@dataclass(frozen=True)
class ModbusMap:
    points: tuple[ModbusPoint, ...]
    default_unit: int = 1
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    address_register: int | None = None

    def decode(self, point: ModbusPoint, registers: Sequence[int]) -> float | None:
        """Turn a point's raw registers into its value in units; None for not-available."""
        words = list(registers[: point.width])
        if self.word_order == "little":
            words.reverse()
        order = ">" if self.byte_order == "big" else "<"
        raw_bytes = b"".join(struct.pack(f"{order}H", w & 0xFFFF) for w in words)
        raw: float = struct.unpack(f"{order}{_STRUCT[point.type]}", raw_bytes)[0]
        if point.not_available is not None and raw == point.not_available:
            return None
        if point.quantity in SWITCHES:
            return 1.0 if raw else 0.0
        return round(raw * point.scale + point.offset, 7)


@dataclass(frozen=True)
class BleSpec:
    format: str
    """A BLE decoder name (:data:`coldtrail.edge.ble.decode.FORMATS`)."""


@dataclass(frozen=True)
class DeviceProfile:
    model: str
    description: str
    modbus: ModbusMap | None = None
    ble: BleSpec | None = None


def _point(p: dict[str, Any]) -> ModbusPoint:
    if p["quantity"] not in _QUANTITIES:
        raise ValueError(f"unknown quantity {p['quantity']!r}")
    if p["type"] not in _WIDTH:
        raise ValueError(f"unknown register type {p['type']!r}")
    if p["function"] not in (3, 4):
        raise ValueError(f"function must be 3 or 4, got {p['function']!r}")
    return ModbusPoint(**p)


def _modbus_map(m: dict[str, Any]) -> ModbusMap:
    m = dict(m)
    points = tuple(_point(p) for p in m.pop("points"))
    if not points:
        raise ValueError("a Modbus profile needs at least one point")
    return ModbusMap(points=points, **m)


def _ble(b: dict[str, Any]) -> BleSpec:
    from coldtrail.edge.ble.decode import FORMATS

    if b.get("format") not in FORMATS:
        raise ValueError(f"unknown BLE format {b.get('format')!r}; known: {', '.join(FORMATS)}")
    return BleSpec(**b)


def _build(doc: dict[str, Any], origin: str) -> DeviceProfile:
    try:
        modbus = _modbus_map(doc["modbus"]) if "modbus" in doc else None
        ble = _ble(doc["ble"]) if "ble" in doc else None
        profile = DeviceProfile(
            model=doc["model"], description=doc.get("description", ""), modbus=modbus, ble=ble
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"device profile {origin}: {exc!r}") from exc
    if modbus is None and ble is None:
        raise ConfigError(f"device profile {origin}: it needs a [modbus] or a [ble] table")
    return profile


def load_profile(model: str, extra_dirs: tuple[Path, ...] = ()) -> DeviceProfile:
    """The profile of ``model``: from ``extra_dirs`` first (site-specific models), then shipped."""
    for d in extra_dirs:
        path = d / f"{model}.toml"
        if path.is_file():
            return _build(tomllib.loads(path.read_text()), str(path))
    shipped = resources.files(__name__).joinpath(f"{model}.toml")
    if not shipped.is_file():
        raise ConfigError(f"no device profile for model {model!r}; known: {shipped_models()}")
    return _build(tomllib.loads(shipped.read_text()), f"{model}.toml")


def shipped_models() -> list[str]:
    return sorted(
        e.name.removesuffix(".toml")
        for e in resources.files(__name__).iterdir()
        if e.name.endswith(".toml")
    )
