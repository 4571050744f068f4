"""One coordinator per device: it owns the device's polling and its state.

A read that fails becomes a reading with status ``unavailable`` (no values), so the record
shows the gap and rules can alarm on it; the error is logged once, when the state changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from coldtrail.clock import Clock, first_of
from coldtrail.edge.clockcheck import system_clock_check
from coldtrail.edge.config import OUT_OF_RANGE_RECORD_MAX_S, DeviceConfig
from coldtrail.edge.queue import ReadingQueue
from coldtrail.edge.sequence import SequenceStore
from coldtrail.edge.sources import Source
from coldtrail.errors import DeviceUnavailable
from coldtrail.messages import PLAUSIBLE, ClockState, Reading, ReadingStatus

log = logging.getLogger(__name__)


class DeviceState(StrEnum):
    UNKNOWN = "unknown"
    OK = "ok"
    UNAVAILABLE = "unavailable"


class DeviceCoordinator:
    def __init__(
        self,
        device: DeviceConfig,
        source: Source,
        queue: ReadingQueue,
        sequence: SequenceStore,
        clock: Clock,
        on_out_of_range: Callable[[Reading], None] | None = None,
        clock_check: Callable[[datetime], ClockState] = system_clock_check,
        out_of_range_record_s: float = OUT_OF_RANGE_RECORD_MAX_S,
    ) -> None:
        self.device = device
        self._out_of_range_record_s = out_of_range_record_s
        self._source = source
        self._queue = queue
        self._sequence = sequence
        self._clock = clock
        self._on_out_of_range = on_out_of_range
        self._clock_check = clock_check
        self.clock_state = ClockState.OK
        self.out_of_range = False
        self.state = DeviceState.UNKNOWN
        self._implausible: set[str] = set()

    async def poll_once(self) -> Reading:
        ts = self._clock.now()
        values: dict[str, float | None] = {}
        try:
            measurement = await self._source.read()
        except DeviceUnavailable as exc:
            status = ReadingStatus.UNAVAILABLE
            self._enter(DeviceState.UNAVAILABLE, str(exc))
        else:
            values = self._plausible(measurement.values)
            complete = measurement.complete and all(v is not None for v in values.values())
            status = ReadingStatus.OK if complete else ReadingStatus.NOT_AVAILABLE
            self._enter(DeviceState.OK, None)
        clock_state = self._clock_check(ts)
        if clock_state is not self.clock_state:
            if clock_state is not ClockState.OK:
                log.warning("gateway clock %s at %s: readings are marked", clock_state, ts)
            self.clock_state = clock_state
        with self._sequence.transaction():
            reading = Reading(
                sensor=self.device.sensor,
                seq=self._sequence.next(self.device.sensor),
                ts=ts,
                status=status,
                clock=clock_state,
                **{k: v for k, v in values.items() if v is not None},
            )
            self._queue.put(reading)
        self.out_of_range = self.device.out_of_range(reading.temperature_c)
        if self.out_of_range and self._on_out_of_range is not None:
            self._on_out_of_range(reading)
        return reading

    def _plausible(self, values: dict[str, float | None]) -> dict[str, float | None]:
        """Values a reading can't carry (an unplugged probe's -327.68 in a format with no
        not-available code) become not-available, logged once per quantity and episode."""
        out: dict[str, float | None] = {}
        for key, value in values.items():
            low, high = PLAUSIBLE.get(key, (float("-inf"), float("inf")))
            if value is not None and not low <= value <= high:
                if key not in self._implausible:
                    log.warning(
                        "sensor %s: %s %s is outside %s..%s: recorded as not available",
                        self.device.sensor,
                        key,
                        value,
                        low,
                        high,
                    )
                    self._implausible.add(key)
                out[key] = None
                continue
            self._implausible.discard(key)
            out[key] = value
        return out

    def _enter(self, state: DeviceState, error: str | None) -> None:
        if state == self.state:
            return
        if state == DeviceState.UNAVAILABLE:
            log.warning("sensor %s unavailable: %s", self.device.sensor, error)
        elif self.state == DeviceState.UNAVAILABLE:
            log.info("sensor %s answering again", self.device.sensor)
        self.state = state

    def next_interval(self) -> float:
        """Seconds to the next poll: the configured cadence, at most the compliance profile's
        out-of-range interval (GSP: 2 minutes) while the last value was out of range."""
        if self.out_of_range:
            return min(self.device.poll_interval_s, self._out_of_range_record_s)
        return self.device.poll_interval_s

    async def run(self, stop: asyncio.Event) -> None:
        """Poll on a fixed cadence (not drifting by the read time) until ``stop`` is set."""
        next_at = self._clock.monotonic()
        try:
            while not stop.is_set():
                await self.poll_once()
                next_at += self.next_interval()
                delay = next_at - self._clock.monotonic()
                if delay < 0:  # a slow read: skip the missed slots instead of bursting
                    next_at = self._clock.monotonic()
                    delay = 0
                await first_of(self._clock.sleep(delay), stop.wait())
        finally:
            await self.close()

    async def close(self) -> None:
        await self._source.close()
