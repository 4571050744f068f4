"""One received BLE advertisement, and what a decoder made of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coldtrail.errors import PayloadError

BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"


def uuid16(short: int) -> str:
    """The 128-bit form of a 16-bit Bluetooth UUID, as bleak and Home Assistant key them."""
    return f"0000{short:04x}{BASE_UUID_SUFFIX}"


BTHOME_UUID = uuid16(0xFCD2)
ENVIRONMENTAL_SENSING_UUID = uuid16(0x181A)  # ATC/pvvx custom firmware
RUUVI_COMPANY_ID = 0x0499

DECODED_KEYS = (
    "temperature_c",
    "humidity_pct",
    "battery_pct",
    "battery_v",
    "packet_id",
    "pressure_pa",
    "rssi_dbm",
)
"""The quantities a decoded advert may carry (CONTRACTS.md, ``coldtrail decode``)."""


def normalise_mac(mac: str) -> str:
    hexdigits = mac.replace(":", "").replace("-", "").upper()
    if len(hexdigits) != 12 or any(c not in "0123456789ABCDEF" for c in hexdigits):
        raise ValueError(f"not a MAC address: {mac!r}")
    return ":".join(hexdigits[i : i + 2] for i in range(0, 12, 2))


def mac_to_bytes(mac: str) -> bytes:
    return bytes.fromhex(normalise_mac(mac).replace(":", ""))


def mac_from_bytes(raw: bytes) -> str:
    return ":".join(f"{b:02X}" for b in raw)


@dataclass(frozen=True)
class Advert:
    """The parts of an advertisement the decoders read. ``received`` is the monotonic time the
    scanner got it, so a source can tell a stale value from a fresh one."""

    mac: str | None = None
    service_data: Mapping[str, bytes] = field(default_factory=dict)
    manufacturer_data: Mapping[int, bytes] = field(default_factory=dict)
    rssi: int | None = None
    received: float = 0.0


@dataclass(frozen=True)
class Decoded:
    """A decoded advert. ``values`` holds only the quantities the format carries; a value the
    device marked not-available is there as None."""

    format: str
    values: Mapping[str, float | int | None]
    mac: str | None = None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"format": self.format}
        doc.update({k: self.values[k] for k in DECODED_KEYS if k in self.values})
        if self.mac is not None:
            doc["mac"] = self.mac
        return doc


class UndecodableAdvert(PayloadError):
    """The advert is not in the expected format, or carries no measurement we can read."""
