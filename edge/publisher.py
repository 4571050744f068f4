"""Publishes queued readings to MQTT with QoS 1; a reading leaves the queue only on a PUBACK
whose reason is success.

MQTT 5 lets the broker say more in its PUBACK than "got it". "No matching subscribers" (16)
means nobody will store the readings: a broker restarted without ingest's shared subscription
yet, or ingest not running. Any failure (the ACL, a quota) means the broker refused them. In
both cases the readings stay queued and are sent again after a backoff (1 s doubling to 60 s),
so the edge neither loses them nor hammers the broker.

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
from coldtrail.retry import Backoff

SUCCESS = 0
RETRY = Backoff(initial_s=1.0, maximum_s=60.0, deadline_s=None)

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
        self._refusals = 0
        """Telemetry PUBACKs in a row that were not success: the backoff's attempt number."""
        self.kept_back = 0
        """Readings the broker did not take (a PUBACK other than success), kept and resent."""
        self._hold_until = 0.0
        """Loop time before which no telemetry is sent (after a PUBACK that kept readings)."""

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
        # MQTT 3.1.1 has no reason: paho reports success.
        self._in_loop(self._puback, mid, rc.value, str(rc))

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

    def _puback(self, mid: int, code: int, reason: str) -> None:
        keys = self._inflight.pop(mid, None)
        if keys is None:
            return  # a status message
        if code == SUCCESS:
            self._queue.ack(keys)
            self._refusals = 0
            self._wake.set()
            return
        # Not stored by anyone: keep the readings, and wait before trying again.
        self._queue.release(keys)
        self.kept_back += len(keys)
        self._refusals += 1
        delay = RETRY.delay(self._refusals)
        if self._loop is not None:
            self._hold_until = max(self._hold_until, self._loop.time() + delay)
        log_at = log.warning if code < 0x80 else log.error
        log_at(
            "broker did not take %d readings on %s (%s); kept, sent again in %.1f s",
            len(keys),
            self.telemetry_topic,
            reason,
            delay,
        )

    def _held_s(self) -> float:
        """How long telemetry still waits after the broker last kept readings back."""
        if self._loop is None:
            return 0.0
        return max(0.0, self._hold_until - self._loop.time())

    def _publish_ready(self, client: paho.Client) -> None:
        if self._held_s() > 0:
            return
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
                held = self._held_s()
                wait_s = min(self._interval_s, held) if held > 0 else self._interval_s
                await first_of(self._wake.wait(), stop.wait(), at_most_s=wait_s)
        finally:
            if self.connected:
                info = self._publish_status("offline")
                await asyncio.to_thread(info.wait_for_publish, 2.0)
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
