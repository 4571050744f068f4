"""Advert scanners: where adverts come from. The decoding never depends on which.

- ``bleak``: the radio, through bleak's passive-or-active scanner (a thin layer: it turns each
  detection into an :class:`Advert` and hands it on);
- ``replay``: JSON lines (``coldtrail sim ble`` writes them) read from a file or FIFO, for
  gateways that get adverts from elsewhere (an ESPHome proxy, a recorded trace) and for tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from coldtrail.clock import Clock, first_of
from coldtrail.edge.ble.advert import Advert, normalise_mac
from coldtrail.edge.config import EdgeConfig
from coldtrail.errors import ConfigError, PayloadError, TransportError

log = logging.getLogger(__name__)

OnAdvert = Callable[[Advert], None]


class AdvertScanner(Protocol):
    async def run(self, on_advert: OnAdvert, stop: asyncio.Event) -> None:
        """Hand every advert heard to ``on_advert`` until ``stop`` is set."""
        ...

    async def close(self) -> None: ...


class BleakAdvertScanner:
    def __init__(self, clock: Clock, adapter: str | None = None) -> None:
        self._clock = clock
        self._adapter = adapter

    async def run(self, on_advert: OnAdvert, stop: asyncio.Event) -> None:
        from bleak import BleakScanner
        from bleak.exc import BleakError

        def detected(device: Any, data: Any) -> None:
            on_advert(
                Advert(
                    mac=device.address.upper(),
                    service_data=dict(data.service_data),
                    manufacturer_data=dict(data.manufacturer_data),
                    rssi=data.rssi,
                    received=self._clock.monotonic(),
                )
            )

        kwargs: dict[str, Any] = {"detection_callback": detected}
        if self._adapter is not None:
            kwargs["bluez"] = {"adapter": self._adapter}
        try:
            async with BleakScanner(**kwargs):
                await stop.wait()
        except (BleakError, OSError) as exc:
            raise TransportError(
                f"Bluetooth scanner ({self._adapter or 'default'}): {exc}"
            ) from exc

    async def close(self) -> None:
        return None


def advert_from_json(line: str, received: float) -> Advert:
    try:
        doc = json.loads(line)
        return Advert(
            mac=normalise_mac(doc["mac"]) if doc.get("mac") else None,
            service_data={
                k.lower(): bytes.fromhex(v) for k, v in doc.get("service_data", {}).items()
            },
            manufacturer_data={
                int(k): bytes.fromhex(v) for k, v in doc.get("manufacturer_data", {}).items()
            },
            rssi=doc.get("rssi"),
            received=received,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PayloadError(f"not an advert line: {exc}") from exc


class ReplayScanner:
    """Follows a file of advert lines (like ``tail -f``), or reads a FIFO as it is written."""

    def __init__(self, path: Path, clock: Clock, poll_s: float = 0.2) -> None:
        self._path = path
        self._clock = clock
        self._poll_s = poll_s

    async def run(self, on_advert: OnAdvert, stop: asyncio.Event) -> None:
        try:
            # The file is opened non-blocking-ish: a FIFO blocks until a writer appears, so it
            # is opened in a worker thread.
            stream = await asyncio.to_thread(self._path.open, "r", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"BLE replay file {self._path}: {exc}") from exc
        with stream:
            pending = ""
            while not stop.is_set():
                chunk = await asyncio.to_thread(stream.readline)
                if not chunk:
                    await first_of(self._clock.sleep(self._poll_s), stop.wait())
                    continue
                pending += chunk
                if not pending.endswith("\n"):
                    continue  # half a line: the writer is mid-way
                line, pending = pending.strip(), ""
                if not line:
                    continue
                try:
                    on_advert(advert_from_json(line, self._clock.monotonic()))
                except PayloadError as exc:
                    log.warning("%s: skipped a line: %s", self._path, exc.reason)

    async def close(self) -> None:
        return None


def _bleak(config: EdgeConfig, clock: Clock) -> AdvertScanner:
    return BleakAdvertScanner(clock, config.ble_adapter)


def _replay(config: EdgeConfig, clock: Clock) -> AdvertScanner:
    if config.ble_replay_file is None:
        raise ConfigError("ble_scanner = 'replay' needs ble_replay_file")
    return ReplayScanner(config.ble_replay_file, clock)


SCANNERS: dict[str, Callable[[EdgeConfig, Clock], AdvertScanner]] = {
    "bleak": _bleak,
    "replay": _replay,
}
"""Scanner name (the agent config's ``ble_scanner``) -> factory."""
