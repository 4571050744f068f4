"""Edge backfill: how fast a backlog in the durable queue drains to the broker.

Fills the SQLite queue with a backlog (as a long outage would leave it), then times the edge
publisher until the broker has acknowledged every reading. Reference, in the same run: raw
paho publishing of the same payloads with the same QoS and in-flight window, nothing else.
No subscriber is needed: the broker acknowledges QoS 1 messages on receipt.

    .venv/bin/python -m bench.backfill [--readings 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from coldtrail import mqtt
from coldtrail.clock import SystemClock
from coldtrail.edge.publisher import Publisher
from coldtrail.edge.sqlite_queue import SqliteQueue
from coldtrail.messages import Reading, encode_telemetry
from coldtrail.settings import MqttEndpoint

MQTT = os.environ.get("COLDTRAIL_BENCH_MQTT", "mqtt://127.0.0.1:1883")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 500
INFLIGHT = 10


def _readings(n: int, sensors: int = 50) -> list[Reading]:
    return [
        Reading(
            sensor=f"S{i % sensors:03d}",
            seq=i // sensors + 1,
            ts=T0 + timedelta(seconds=60 * (i // sensors)),
            temperature_c=5.0 + (i % 7) / 10,
            humidity_pct=50.0,
        )
        for i in range(n)
    ]


def _fill(queue: SqliteQueue, readings: list[Reading]) -> None:
    db = queue.connection
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO queue (sensor, seq, ts, reading) VALUES (?, ?, ?, ?)",
        ((r.sensor, r.seq, r.ts.isoformat(), r.model_dump_json()) for r in readings),
    )
    db.execute("COMMIT")


async def ours(path: Path, options: mqtt.MqttOptions, total: int) -> float:
    queue = SqliteQueue(path, synchronous="NORMAL")
    pub = Publisher(
        site="bench",
        gateway="gw-bench",
        topic_root=f"bench{uuid.uuid4().hex[:8]}",
        options=options,
        queue=queue,
        clock=SystemClock(),
        batch_max=BATCH,
        max_inflight=INFLIGHT,
        interval_s=1.0,
    )
    if len(queue) != total:
        raise RuntimeError(f"queue holds {len(queue)}, expected {total}")
    stop = asyncio.Event()
    task = asyncio.create_task(pub.run("bench-backfill", stop))
    await asyncio.wait_for(pub.wait_connected(), 10)
    start = time.perf_counter()
    # The queue shrinks as PUBACKs come in; it has no event to wait on.
    while len(queue):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    queue.close()
    return elapsed


def raw_publish(options: mqtt.MqttOptions, readings: list[Reading]) -> float:
    payloads = [
        encode_telemetry("gw-bench", T0, readings[i : i + BATCH])
        for i in range(0, len(readings), BATCH)
    ]
    client = mqtt.make_client(options, f"bench-raw-{uuid.uuid4().hex[:6]}", persistent=False)
    client.max_inflight_messages_set(INFLIGHT)
    done = threading.Event()
    acked = 0

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(payloads):
            done.set()

    client.on_publish = on_publish
    mqtt.connect(client, options, persistent=False)
    client.loop_start()
    start = time.perf_counter()
    for p in payloads:
        client.publish(f"bench/raw/{uuid.uuid4().hex[:4]}", p, qos=1)
    done.wait(600)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--readings", type=int, default=1_000_000)
    args = p.parse_args()
    options = mqtt.MqttOptions(endpoint=MqttEndpoint.parse(MQTT), protocol="5")
    readings = _readings(args.readings)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "queue.sqlite3"
        queue = SqliteQueue(path, synchronous="NORMAL")
        _fill(queue, readings)
        queue.close()
        size_mb = path.stat().st_size / 1e6
        our_s = asyncio.run(ours(path, options, len(readings)))
    ref_s = raw_publish(options, readings)
    rate, ref_rate = args.readings / our_s, args.readings / ref_s
    print(
        f"backlog: {args.readings} readings, {size_mb:.0f} MB of SQLite; batches of {BATCH}, "
        f"{INFLIGHT} messages in flight"
    )
    print(f"edge drain: {our_s:.1f} s; raw paho publish of the same payloads: {ref_s:.1f} s")
    print(
        f"RESULT name=backfill readings_per_s={rate:.0f} reference=raw_publish "
        f"reference_per_s={ref_rate:.0f} ratio={rate / ref_rate:.2f}"
    )


if __name__ == "__main__":
    main()
