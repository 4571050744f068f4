"""The edge agent: one coordinator per configured device, one publisher, one queue."""

from __future__ import annotations

import asyncio
import logging

from coldtrail import mqtt
from coldtrail.clock import Clock
from coldtrail.edge.ble.scanner import SCANNERS, AdvertScanner
from coldtrail.edge.config import EdgeConfig
from coldtrail.edge.coordinator import DeviceCoordinator
from coldtrail.edge.profiles import load_profile
from coldtrail.edge.publisher import Publisher
from coldtrail.edge.queue import MemoryQueue, ReadingQueue
from coldtrail.edge.sequence import SequenceStore
from coldtrail.edge.sources import SourceContext, create_source
from coldtrail.edge.sqlite_queue import SqliteQueue

log = logging.getLogger(__name__)


class EdgeAgent:
    def __init__(
        self,
        config: EdgeConfig,
        options: mqtt.MqttOptions,
        topic_root: str,
        clock: Clock,
        queue: ReadingQueue | None = None,
        ble_scanner: AdvertScanner | None = None,
    ) -> None:
        self.config = config
        self._sqlite: SqliteQueue | None = None
        if queue is None and config.queue == "sqlite":
            self._sqlite = SqliteQueue(
                config.state_dir / "queue.sqlite3",
                synchronous=config.queue_synchronous,
                budget_bytes=int(config.queue_budget_mb * 1_000_000),
            )
        self.queue: ReadingQueue
        if queue is not None:
            self.queue = queue
        elif self._sqlite is not None:
            self.queue = self._sqlite
        else:
            self.queue = MemoryQueue()
        self.sequence = (
            SequenceStore(connection=self._sqlite.connection)
            if self._sqlite is not None
            else SequenceStore(config.state_dir / "sequence.sqlite3")
        )
        self.publisher = Publisher(
            site=config.site,
            gateway=config.gateway,
            topic_root=topic_root,
            options=options,
            queue=self.queue,
            clock=clock,
            batch_max=config.batch_max_readings,
            max_inflight=config.max_inflight_messages,
            interval_s=config.publish_interval_s,
            status_interval_s=config.status_interval_s,
        )
        self.sources = SourceContext(
            clock,
            ble_scanner=(
                (lambda: ble_scanner)
                if ble_scanner is not None
                else lambda: SCANNERS[config.ble_scanner](config, clock)
            ),
        )
        self.coordinators = [
            DeviceCoordinator(
                d,
                create_source(d, load_profile(d.model, config.profile_dirs), self.sources),
                self.queue,
                self.sequence,
                clock,
                # An out-of-range reading leaves now, not at the next publish interval.
                on_out_of_range=lambda _reading: self.publisher.wake(),
                out_of_range_record_s=config.out_of_range_record_s,
            )
            for d in config.devices
        ]

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "edge %s/%s: %d devices", self.config.site, self.config.gateway, len(self.coordinators)
        )
        try:
            async with asyncio.TaskGroup() as tg:
                for c in self.coordinators:
                    tg.create_task(c.run(stop))
                # The broker binds a gateway's account to its own id as client id.
                tg.create_task(self.publisher.run(self.config.gateway, stop))
                tg.create_task(self.sources.run(stop))
        finally:
            await self.sources.close()
            self.close()

    def close(self) -> None:
        self.sequence.close()
        if self._sqlite is not None:
            self._sqlite.close()
