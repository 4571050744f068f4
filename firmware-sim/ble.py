"""Simulated BLE loggers: adverts in each supported byte format, built from a scenario.

The encoders write the formats as their own documents give them (bthome.io, docs.ruuvi.com,
pvvx/ATC_MiThermometer), so what the edge decodes in tests and in the demo is the real byte
layout. :class:`SimulatedAirwaves` is what a radio would hear from a set of loggers: it
implements the edge's advert-scanner contract, driven by the injected clock.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from coldtrail.clock import Clock, first_of
from coldtrail.edge.ble.advert import (
    BTHOME_UUID,
    ENVIRONMENTAL_SENSING_UUID,
    RUUVI_COMPANY_ID,
    Advert,
    mac_to_bytes,
    normalise_mac,
)
from coldtrail.sim.scenarios import Scenario, parse_scenario

SimFormat = Literal["bthome", "ruuvi", "atc1441", "pvvx"]
SIM_FORMATS: tuple[SimFormat, ...] = ("bthome", "ruuvi", "atc1441", "pvvx")


def _clamp(value: float, low: int, high: int) -> int:
    return max(low, min(high, round(value)))


def bthome_service_data(
    temperature_c: float | None,
    humidity_pct: float | None,
    battery_pct: int | None,
    packet_id: int,
    *,
    bindkey: bytes | None = None,
    mac: str | None = None,
    counter: int = 0,
) -> bytes:
    """BTHome v2 service data: device info byte, then objects in id order (packet id 0x00,
    battery 0x01, temperature 0x02 s16 x0.01, humidity 0x03 u16 x0.01). With ``bindkey`` the
    objects are AES-CCM encrypted (nonce: MAC, UUID, device info, counter; 4-byte MIC)."""
    objects = bytes([0x00, packet_id & 0xFF])
    if battery_pct is not None:
        objects += bytes([0x01, _clamp(battery_pct, 0, 100)])
    if temperature_c is not None:
        objects += b"\x02" + struct.pack("<h", _clamp(temperature_c * 100, -32768, 32767))
    if humidity_pct is not None:
        objects += b"\x03" + struct.pack("<H", _clamp(humidity_pct * 100, 0, 10000))
    if bindkey is None:
        return bytes([0x40]) + objects
    if mac is None:
        raise ValueError("an encrypted BTHome advert needs the sender's MAC for its nonce")
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    info = 0x41
    count = struct.pack("<I", counter)
    nonce = mac_to_bytes(mac) + b"\xd2\xfc" + bytes([info]) + count
    sealed = AESCCM(bindkey, tag_length=4).encrypt(nonce, objects, None)
    return bytes([info]) + sealed[:-4] + count + sealed[-4:]


def ruuvi_rawv2(
    temperature_c: float | None,
    humidity_pct: float | None,
    pressure_pa: float | None,
    battery_mv: int | None,
    sequence: int | None,
    mac: str | None,
    *,
    tx_power_dbm: int = 4,
    movement: int = 0,
    acceleration_mg: tuple[int, int, int] = (0, 0, 1000),
) -> bytes:
    """Ruuvi data format 5 (RAWv2), manufacturer data after the company id. None becomes the
    format's not-available code (0x8000 for signed fields, all ones for unsigned)."""
    temp = 0x8000 if temperature_c is None else _clamp(temperature_c / 0.005, -32767, 32767)
    hum = 0xFFFF if humidity_pct is None else _clamp(humidity_pct / 0.0025, 0, 40000)
    pres = 0xFFFF if pressure_pa is None else _clamp(pressure_pa - 50000, 0, 65534)
    if battery_mv is None:
        power = 0xFFFF
    else:
        power = (_clamp(battery_mv - 1600, 0, 2046) << 5) | _clamp((tx_power_dbm + 40) / 2, 0, 30)
    seq = 0xFFFF if sequence is None else sequence % 0xFFFF
    mac_bytes = b"\xff" * 6 if mac is None else mac_to_bytes(mac)
    return (
        struct.pack(
            ">BHHHhhhHBH", 5, temp & 0xFFFF, hum, pres, *acceleration_mg, power, movement, seq
        )
        + mac_bytes
    )


def atc1441_service_data(
    mac: str,
    temperature_c: float,
    humidity_pct: float,
    battery_pct: int,
    battery_mv: int,
    counter: int,
) -> bytes:
    return mac_to_bytes(mac) + struct.pack(
        ">hBBHB",
        _clamp(temperature_c * 10, -32768, 32767),
        _clamp(humidity_pct, 0, 100),
        _clamp(battery_pct, 0, 100),
        battery_mv,
        counter & 0xFF,
    )


def pvvx_service_data(
    mac: str,
    temperature_c: float,
    humidity_pct: float,
    battery_pct: int,
    battery_mv: int,
    counter: int,
    flags: int = 0,
) -> bytes:
    return mac_to_bytes(mac)[::-1] + struct.pack(
        "<hHHBBB",
        _clamp(temperature_c * 100, -32768, 32767),
        _clamp(humidity_pct * 100, 0, 10000),
        battery_mv,
        _clamp(battery_pct, 0, 100),
        counter & 0xFF,
        flags,
    )


@dataclass
class SimulatedBleLogger:
    """A logger that takes a measurement every ``measure_every_s`` and advertises it until the
    next. ``silent`` stops its adverts (out of range, battery out); ``unplugged`` makes a Ruuvi
    send its not-available codes and the others stop measuring."""

    mac: str
    format: SimFormat
    scenario: Scenario
    started_at: datetime
    measure_every_s: float = 10.0
    battery_pct: int = 87
    battery_mv: int = 2950
    rssi_dbm: int = -67
    bindkey: bytes | None = None
    silent: bool = False
    unplugged: bool = False

    def __post_init__(self) -> None:
        self.mac = normalise_mac(self.mac)

    def advert_at(self, now: datetime, received: float = 0.0) -> Advert | None:
        if self.silent:
            return None
        elapsed = (now - self.started_at).total_seconds()
        n = int(elapsed // self.measure_every_s)
        sample = self.scenario.sample(n * self.measure_every_s)
        temp: float | None = sample.temperature_c
        hum: float | None = min(100.0, max(0.0, sample.humidity_pct))
        if self.unplugged:
            if self.format != "ruuvi":
                return None
            temp = hum = None
        service: dict[str, bytes] = {}
        manufacturer: dict[int, bytes] = {}
        if self.format == "bthome":
            service[BTHOME_UUID] = bthome_service_data(
                temp, hum, self.battery_pct, n, bindkey=self.bindkey, mac=self.mac, counter=n
            )
        elif self.format == "ruuvi":
            manufacturer[RUUVI_COMPANY_ID] = ruuvi_rawv2(
                temp, hum, 101_325.0, self.battery_mv, n, self.mac
            )
        elif temp is None or hum is None:
            return None  # ATC firmware has no not-available code: an unplugged probe is silent
        else:
            encode = atc1441_service_data if self.format == "atc1441" else pvvx_service_data
            service[ENVIRONMENTAL_SENSING_UUID] = encode(
                self.mac, temp, hum, self.battery_pct, self.battery_mv, n
            )
        return Advert(
            mac=self.mac,
            service_data=service,
            manufacturer_data=manufacturer,
            rssi=self.rssi_dbm,
            received=received,
        )


def advert_to_json(advert: Advert, ts: datetime) -> str:
    """One line of an advert stream (``coldtrail sim ble``; the edge's ``replay`` scanner)."""
    return json.dumps(
        {
            "ts": ts.isoformat(),
            "mac": advert.mac,
            "rssi": advert.rssi,
            "service_data": {k: v.hex() for k, v in advert.service_data.items()},
            "manufacturer_data": {str(k): v.hex() for k, v in advert.manufacturer_data.items()},
        }
    )


@dataclass
class SimulatedAirwaves:
    """What a radio hears from ``loggers``: every ``advert_every_s`` each one advertises its
    latest measurement. It is an advert scanner for the edge (no radio needed)."""

    loggers: Sequence[SimulatedBleLogger]
    clock: Clock
    advert_every_s: float = 2.0

    async def run(self, on_advert: Callable[[Advert], None], stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.broadcast(on_advert)
            await first_of(self.clock.sleep(self.advert_every_s), stop.wait())

    def broadcast(self, on_advert: Callable[[Advert], None]) -> None:
        now, received = self.clock.now(), self.clock.monotonic()
        for logger in self.loggers:
            advert = logger.advert_at(now, received)
            if advert is not None:
                on_advert(advert)

    async def close(self) -> None:
        return None


def parse_device(spec: str, started_at: datetime) -> SimulatedBleLogger:
    """``MAC:FORMAT:SCENARIO`` (scenario as ``coldtrail sim modbus`` takes it)."""
    parts = spec.split(":")
    if len(parts) < 8:
        raise ValueError(f"--device wants MAC:FORMAT:SCENARIO, got {spec!r}")
    mac, fmt, scenario = ":".join(parts[:6]), parts[6], ":".join(parts[7:])
    if fmt not in SIM_FORMATS:
        raise ValueError(f"unknown BLE format {fmt!r}; known: {', '.join(SIM_FORMATS)}")
    return SimulatedBleLogger(mac, fmt, parse_scenario(scenario), started_at)
