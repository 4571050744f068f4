"""BLE source: a logger heard over the air, matched by its MAC from the config.

BLE loggers broadcast; nobody polls them. One :class:`BleHub` per agent runs the scanner and
keeps each configured logger's latest decoded advert; the device's coordinator reads that on its
own cadence, like any other source. No fresh advert within ``stale_after_s`` is a read that
failed (status ``unavailable``), so a logger out of range or out of battery shows as a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from coldtrail.clock import Clock
from coldtrail.edge.ble.advert import Advert, Decoded, UndecodableAdvert
from coldtrail.edge.ble.decode import AdvertDecoder, DecoderOptions, create_decoder
from coldtrail.edge.ble.scanner import AdvertScanner
from coldtrail.edge.config import DeviceConfig
from coldtrail.edge.profiles import DeviceProfile
from coldtrail.edge.sources.base import Measurement, SourceContext
from coldtrail.errors import ConfigError, DeviceUnavailable

log = logging.getLogger(__name__)

_READING_KEYS = ("temperature_c", "humidity_pct", "battery_pct")


@dataclass
class _Heard:
    decoder: AdvertDecoder
    heard: asyncio.Event = field(default_factory=asyncio.Event)
    latest: Decoded | None = None
    at: float = 0.0
    undecodable: int = 0
    last_reason: str | None = None


class BleHub:
    def __init__(self, scanner: AdvertScanner, clock: Clock) -> None:
        self._scanner = scanner
        self._clock = clock
        self._by_mac: dict[str, _Heard] = {}

    def register(self, mac: str, decoder: AdvertDecoder) -> None:
        if mac in self._by_mac:
            raise ConfigError(f"BLE logger {mac} is listed twice")
        self._by_mac[mac] = _Heard(decoder)

    def feed(self, advert: Advert) -> None:
        heard = self._by_mac.get(advert.mac or "")
        if heard is None or not heard.decoder.matches(advert):
            return  # someone else's device, or another of its advert kinds
        try:
            decoded = heard.decoder.decode(advert)
        except UndecodableAdvert as exc:
            # Repeats of the same packet and adverts without a measurement are normal; a
            # logger whose every advert fails shows up as unavailable, with this reason.
            heard.undecodable += 1
            if exc.reason != heard.last_reason:
                log.debug("BLE %s: advert not used: %s", advert.mac, exc.reason)
                heard.last_reason = exc.reason
            return
        heard.latest, heard.at = decoded, advert.received
        heard.heard.set()

    async def wait_first(self, mac: str, timeout_s: float) -> None:
        """Until the logger's first advert is decoded, or ``timeout_s`` of real time: right
        after start the radio has not heard everyone yet, and that is no gap in the record."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._by_mac[mac].heard.wait(), timeout_s)

    def latest(self, mac: str, max_age_s: float) -> Decoded:
        heard = self._by_mac[mac]
        if heard.latest is None:
            why = f" (adverts not usable: {heard.last_reason})" if heard.last_reason else ""
            raise DeviceUnavailable(f"BLE {mac}: no advert heard yet{why}")
        age = self._clock.monotonic() - heard.at
        if age > max_age_s:
            raise DeviceUnavailable(f"BLE {mac}: last advert {age:.0f} s ago")
        return heard.latest

    async def run(self, stop: asyncio.Event) -> None:
        await self._scanner.run(self.feed, stop)

    async def close(self) -> None:
        await self._scanner.close()


class BleSource:
    def __init__(
        self, device: DeviceConfig, profile: DeviceProfile, context: SourceContext
    ) -> None:
        if profile.ble is None:
            raise ConfigError(f"sensor {device.sensor}: model {profile.model} is not a BLE logger")
        assert device.mac is not None  # noqa: S101 - the config validator made sure
        self._mac = device.mac
        self._max_age_s = device.stale_after_s
        self._first_wait_s = device.timeout_s
        bindkey = bytes.fromhex(device.bindkey) if device.bindkey else None
        decoder = create_decoder(profile.ble.format, DecoderOptions(bindkey=bindkey))

        def hub() -> BleHub:
            if context.ble_scanner is None:
                raise ConfigError(f"sensor {device.sensor}: this agent has no BLE scanner")
            return BleHub(context.ble_scanner(), context.clock)

        self._hub = context.shared("ble", hub)
        self._hub.register(self._mac, decoder)

    async def read(self) -> Measurement:
        await self._hub.wait_first(self._mac, self._first_wait_s)
        decoded = self._hub.latest(self._mac, self._max_age_s)
        return Measurement(
            {k: _as_float(decoded.values[k]) for k in _READING_KEYS if k in decoded.values}
        )

    async def close(self) -> None:
        return None


def _as_float(value: float | int | None) -> float | None:
    return None if value is None else float(value)
