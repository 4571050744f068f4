"""The edge publisher against a real broker."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import uuid
from pathlib import Path
from typing import Any

import pytest

from coldtrail import mqtt
from coldtrail.clock import ManualClock
from coldtrail.edge.publisher import Publisher
from coldtrail.edge.queue import MemoryQueue, ReadingQueue
from coldtrail.edge.sqlite_queue import SqliteQueue
from coldtrail.messages import Reading
from coldtrail.settings import MqttEndpoint
from tests.conftest import T0, async_wait_for


def _publisher(options: mqtt.MqttOptions, root: str, q: ReadingQueue) -> Publisher:
    return Publisher(
        site="s1",
        gateway="gw-1",
        topic_root=root,
        options=options,
        queue=q,
        clock=ManualClock(T0),
        interval_s=0.05,
    )


def _watch(options: mqtt.MqttOptions, topic: str) -> tuple[Any, queue.Queue[tuple[bytes, bool]]]:
    seen: queue.Queue[tuple[bytes, bool]] = queue.Queue()
    client = mqtt.make_client(options, f"watch-{uuid.uuid4().hex[:8]}", persistent=False)
    client.on_message = lambda _c, _u, m: seen.put((bytes(m.payload), bool(m.retain)))
    mqtt.connect(client, options, persistent=False)
    client.subscribe(topic, qos=1)
    client.loop_start()
    return client, seen


async def _first_status(options: mqtt.MqttOptions, pub: Publisher, client_id: str) -> bytes:
    """Run the publisher until its first status message reaches a watcher, then stop it."""
    watcher, seen = _watch(options, pub.status_topic)
    stop = asyncio.Event()
    task = asyncio.create_task(pub.run(client_id, stop))
    try:
        payload, _ = await asyncio.to_thread(seen.get, True, 10)
    finally:
        stop.set()
        await task
        watcher.disconnect()
        watcher.loop_stop()
    return payload


async def test_status_is_retained_online_then_offline_on_stop(
    mqtt_options: mqtt.MqttOptions, topic_root: str
) -> None:
    q = MemoryQueue()
    pub = _publisher(mqtt_options, topic_root, q)
    stop = asyncio.Event()
    task = asyncio.create_task(pub.run(f"edge-{topic_root}", stop))
    await asyncio.wait_for(pub.wait_connected(), 10)
    stop.set()
    await task

    # A client that arrives later still learns the gateway's last state: it is retained.
    watcher, seen = _watch(mqtt_options, pub.status_topic)
    try:
        payload, retained = await asyncio.to_thread(seen.get, True, 10)
    finally:
        watcher.disconnect()
        watcher.loop_stop()
    assert retained
    assert json.loads(payload) == {
        "state": "offline",
        "ts": "2026-11-22T10:00:00.000Z",
        "queued": 0,
        "oldest_queued": None,
        "queue_alarm": False,
    }


async def test_status_reports_the_backlog_held_at_the_edge(
    mqtt_options: mqtt.MqttOptions, topic_root: str
) -> None:
    q = MemoryQueue()
    for seq in (1, 2, 3):
        q.put(Reading(sensor="S1", seq=seq, ts=T0.replace(minute=seq), temperature_c=5.0))
    pub = _publisher(mqtt_options, topic_root, q)
    payload = await _first_status(mqtt_options, pub, f"edge-{topic_root}")
    # Published on connecting, before the backlog is sent: what was waiting, since when.
    assert json.loads(payload) == {
        "state": "online",
        "ts": "2026-11-22T10:00:00.000Z",
        "queued": 3,
        "oldest_queued": "2026-11-22T10:01:00.000Z",
        "queue_alarm": False,
    }


async def test_readings_stay_queued_while_the_broker_is_unreachable(topic_root: str) -> None:
    q = MemoryQueue()
    q.put(Reading(sensor="S1", seq=1, ts=T0, temperature_c=5.0))
    nowhere = mqtt.MqttOptions(endpoint=MqttEndpoint.parse("mqtt://127.0.0.1:1"))
    pub = _publisher(nowhere, topic_root, q)
    stop = asyncio.Event()
    task = asyncio.create_task(pub.run(f"edge-{topic_root}", stop))
    await async_wait_for(lambda: pub.connect_failures >= 2, what="two failed connects")
    stop.set()
    await task
    assert not pub.connected
    assert len(q) == 1
    assert [r.seq for r in q.take(5)] == [1]  # not taken: nothing was in flight


async def test_readings_leave_the_queue_only_after_puback(
    mqtt_options: mqtt.MqttOptions, topic_root: str
) -> None:
    q = MemoryQueue()
    for seq in (1, 2, 3):
        q.put(Reading(sensor="S1", seq=seq, ts=T0, temperature_c=5.0))
    pub = _publisher(mqtt_options, topic_root, q)
    watcher, seen = _watch(mqtt_options, pub.telemetry_topic)
    stop = asyncio.Event()
    task = asyncio.create_task(pub.run(f"edge-{topic_root}", stop))
    try:
        await asyncio.wait_for(pub.wait_connected(), 10)
        await async_wait_for(lambda: len(q) == 0, what="PUBACK")
        assert pub.inflight_messages == 0
        assert seen.get(timeout=10)
    finally:
        stop.set()
        await task
        watcher.disconnect()
        watcher.loop_stop()


async def test_readings_nobody_subscribes_to_stay_queued_until_someone_does(
    mqtt_options: mqtt.MqttOptions, topic_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    """MQTT 5 PUBACK 16, "no matching subscribers": the broker took the message but nobody
    will store it (ingest not subscribed yet, e.g. a broker restarted without its shared
    subscription). The readings stay queued, are sent again after a backoff, and leave the
    queue once a subscriber has them."""
    q = MemoryQueue()
    for seq in (1, 2, 3):
        q.put(Reading(sensor="S1", seq=seq, ts=T0, temperature_c=5.0))
    pub = _publisher(mqtt_options, topic_root, q)
    stop = asyncio.Event()
    task = asyncio.create_task(pub.run(f"edge-{topic_root}", stop))
    try:
        await asyncio.wait_for(pub.wait_connected(), 10)
        await async_wait_for(
            lambda: "No matching subscribers" in caplog.text, what="a PUBACK with reason 16"
        )
        assert len(q) == 3
        watcher, seen = _watch(mqtt_options, pub.telemetry_topic)
        try:
            body = json.loads((await asyncio.to_thread(seen.get, True, 70))[0])
            assert [r["seq"] for r in body["readings"]] == [1, 2, 3]
            await async_wait_for(lambda: len(q) == 0, what="PUBACK success")
        finally:
            watcher.disconnect()
            watcher.loop_stop()
    finally:
        stop.set()
        await task


async def test_queue_near_its_disk_budget_alarms_loudly_and_keeps_every_reading(
    mqtt_options: mqtt.MqttOptions,
    topic_root: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A budget a few hundred readings fill; the status on connecting reports it.
    q = SqliteQueue(tmp_path / "queue.sqlite3", budget_bytes=60_000)
    for seq in range(1, 501):
        q.put(Reading(sensor="S1", seq=seq, ts=T0, temperature_c=5.0))
    usage = q.usage()
    assert usage.alarm
    assert usage.bytes_used is not None
    assert usage.bytes_used >= 54_000

    pub = _publisher(mqtt_options, topic_root, q)
    with caplog.at_level(logging.ERROR, logger="coldtrail.edge.publisher"):
        payload = await _first_status(mqtt_options, pub, f"edge-{topic_root}")
    status = json.loads(payload)
    assert status["queue_alarm"] is True
    assert status["queued"] == 500
    assert any("disk budget" in r.message for r in caplog.records)
    q.close()
