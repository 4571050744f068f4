"""Publishes queued readings to MQTT with QoS 1; a reading leaves the queue only on PUBACK.

paho runs its network loop in its own thread; every callback is handed to the asyncio loop,
so the queue is only ever touched from one thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from coldtrail import mqtt
from coldtrail.clock import Clock, first_of
from coldtrail.edge.queue import Key, ReadingQueue
from coldtrail.messages import encode_status, encode_telemetry, status_topic, telemetry_topic

log = logging.getLogger(__name__)


class Publisher:
    def __init__(
        self,
        *,
        site: str,
        gateway: str,
        topic_root: str,
        options: mqtt.MqttOptions,
        queue: ReadingQueue,
        clock: Clock,
        batch_max: int = 500,
        max_inflight: int = 10,
        interval_s: float = 5.0,
        status_interval_s: float = 60.0,
    ) -> None:
        self._gateway = gateway
        self._options = options
        self._queue = queue
        self._clock = clock
        self._batch_max = batch_max
        self._max_inflight = max_inflight
        self._interval_s = interval_s
        self.telemetry_topic = telemetry_topic(topic_root, site, gateway)
        self.status_topic = status_topic(topic_root, site, gateway)
        self._inflight: dict[int, list[Key]] = {}
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connect_failures = 0
        self._client: paho.Client | None = None
        self._status_at = 0.0
        self._status_interval_s = status_interval_s

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def connect_failures(self) -> int:
        """Failed attempts to reach the broker since the last successful connection."""
        return self._connect_failures

    @property
    def inflight_messages(self) -> int:
        return len(self._inflight)

    def wake(self) -> None:
        """Publish now rather than at the next interval (e.g. a reading out of range)."""
        self._wake.set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    # paho thread -> asyncio loop
    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            log.error("broker refused gateway %s: %s", self._gateway, rc)
            return
        self._in_loop(self._set_connected, True)

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self._in_loop(self._set_connected, False)
        if rc.is_failure:
            log.warning("gateway %s lost the broker: %s", self._gateway, rc)

    def _on_connect_fail(self, _c: paho.Client, _u: Any) -> None:
        self._in_loop(self._connect_failed)

    def _connect_failed(self) -> None:
        if self._connect_failures == 0:
            log.warning("gateway %s cannot reach the broker; readings stay queued", self._gateway)
        self._connect_failures += 1

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        self._in_loop(self._puback, mid, rc.is_failure, str(rc))

    def _in_loop(self, fn: Callable[..., None], *args: object) -> None:
        if self._loop is None:
            raise RuntimeError("publisher callback before run() started")
        self._loop.call_soon_threadsafe(fn, *args)

    def _status(self, state: Literal["online", "offline"]) -> bytes:
        usage = self._queue.usage()
        if usage.alarm:
            # Loud on every status refresh while it lasts: the readings are still kept.
            log.error(
                "gateway %s: edge queue uses %.0f of %.0f MB of its disk budget (%d readings);"
                " bring the broker back or give it more space",
                self._gateway,
                (usage.bytes_used or 0) / 1e6,
                (usage.budget_bytes or 0) / 1e6,
                usage.readings,
            )
        return encode_status(
            state,
            self._clock.now(),
            queued=usage.readings,
            oldest_queued=usage.oldest_ts,
            queue_bytes=usage.bytes_used,
            queue_alarm=usage.alarm,
        )

    def _publish_status(self, state: Literal["online", "offline"]) -> paho.MQTTMessageInfo:
        if self._client is None:
            raise RuntimeError("status published before run() made the client")
        self._status_at = asyncio.get_running_loop().time()
        return self._client.publish(self.status_topic, self._status(state), qos=1, retain=True)

    def _set_connected(self, up: bool) -> None:
        if up:
            self._publish_status("online")
            self._connect_failures = 0
            self._connected.set()
            self._wake.set()
        else:
            self._connected.clear()

    def _puback(self, mid: int, failed: bool, reason: str) -> None:
        keys = self._inflight.pop(mid, None)
        if keys is None:
            return  # a status message
        if failed:
            # The broker took the packet but refused the message (e.g. ACL): keep the readings.
            log.error(
                "broker refused %d readings on %s: %s", len(keys), self.telemetry_topic, reason
            )
            self._queue.release(keys)
        else:
            self._queue.ack(keys)
        self._wake.set()

    def _publish_ready(self, client: paho.Client) -> None:
        while self.connected and len(self._inflight) < self._max_inflight:
            batch = self._queue.take(self._batch_max)
            if not batch:
                return
            info = client.publish(
                self.telemetry_topic,
                encode_telemetry(self._gateway, self._clock.now(), batch),
                qos=1,
            )
            if info.rc != paho.MQTT_ERR_SUCCESS and info.rc != paho.MQTT_ERR_NO_CONN:
                self._queue.release((r.sensor, r.seq) for r in batch)
                log.error("publish failed: %s", paho.error_string(info.rc))
                return
            # NO_CONN: paho holds the message and sends it on reconnect with the same mid.
            self._inflight[info.mid] = [(r.sensor, r.seq) for r in batch]

    async def run(self, client_id: str, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        client = mqtt.make_client(self._options, client_id, persistent=False)
        client.will_set(self.status_topic, encode_status("offline", None), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        self._client = client
        mqtt.connect(client, self._options, persistent=False, background=True)
        client.loop_start()
        try:
            while not stop.is_set():
                self._publish_ready(client)
                if self.connected and (
                    asyncio.get_running_loop().time() - self._status_at >= self._status_interval_s
                ):
                    self._publish_status("online")  # the backlog figures, kept current
                self._wake.clear()
                await first_of(self._wake.wait(), stop.wait(), at_most_s=self._interval_s)
        finally:
            if self.connected:
                info = self._publish_status("offline")
                await asyncio.to_thread(info.wait_for_publish, 2.0)
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
