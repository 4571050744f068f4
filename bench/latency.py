"""Ingest latency: from a gateway's publish to the committed row, at a steady 20 000
readings/s (200 messages of 100 readings a second) through Mosquitto and one ingest worker.

The fleet, in its own process, records each message's wall-clock send time; each batch's
`committed_at` is taken just before its COMMIT. Prints p50/p99/max over all messages. The
reference is the worker's flush deadline (COLDTRAIL_INGEST_FLUSH_S, 0.2 s): ratio = p99 / it.

    .venv/bin/python -m bench.latency [--rate 20000] [--seconds 10] [--per-message 100]
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time
import uuid
from datetime import timedelta

import numpy as np
import psycopg

from bench._db import drop_database, make_database
from bench.ingest import MQTT, T0, Pace, _register, fleet
from coldtrail import mqtt
from coldtrail.ingest.worker import IngestWorker
from coldtrail.messages import Reading, encode_telemetry, telemetry_topic
from coldtrail.settings import MqttEndpoint

SENSORS = 2_000


def _payload(n: int, per_message: int) -> bytes:
    readings = [
        Reading(
            sensor=f"S{i % SENSORS:05d}",
            seq=i // SENSORS + 1,
            ts=T0 + timedelta(minutes=i // SENSORS),
            temperature_c=4.5,
        )
        for i in range(n * per_message, (n + 1) * per_message)
    ]
    return encode_telemetry("gw-bench", T0, readings)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rate", type=int, default=20_000, help="readings per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--per-message", type=int, default=100)
    args = p.parse_args()
    messages = int(args.rate * args.seconds / args.per_message)
    payloads = [_payload(n, args.per_message) for n in range(messages)]
    name = f"bench_latency_{uuid.uuid4().hex[:6]}"
    url = make_database(name)
    try:
        _register(url, SENSORS)
        root = f"bench{uuid.uuid4().hex[:8]}"
        options = mqtt.MqttOptions(endpoint=MqttEndpoint.parse(MQTT), protocol="5")
        worker = IngestWorker(database_url=url, options=options, topic_root=root, client_id=root)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        ctx = multiprocessing.get_context("spawn")
        sent = ctx.Array("d", messages)
        ready, go = ctx.Event(), ctx.Event()
        topic = telemetry_topic(root, "bench", "gw-bench")
        per_s = args.rate / args.per_message
        pace = Pace(per_s=per_s, sent=sent)
        publisher = ctx.Process(
            target=fleet, args=(options, f"pub-{root}", topic, payloads, pace, ready, go)
        )
        publisher.start()
        try:
            if not worker.subscribed.wait(10) or not ready.wait(30):
                raise RuntimeError("ingest or the fleet did not come up")
            go.set()
            pause = threading.Event()
            total = messages * args.per_message
            deadline = time.perf_counter() + args.seconds + 120
            while worker.stats.readings_stored < total and time.perf_counter() < deadline:
                pause.wait(0.05)
            publisher.join(30)
        finally:
            stop.set()
            thread.join(30)
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT r.sensor_id, r.seq, extract(epoch FROM b.committed_at)"
                " FROM readings r JOIN ingest_batches b ON b.id = r.batch_id"
            ).fetchall()
    finally:
        drop_database(name)
    committed = np.zeros(messages)
    for sensor, seq, at in rows:
        i = (seq - 1) * SENSORS + int(sensor[1:])
        n = i // args.per_message
        committed[n] = max(committed[n], float(at))
    if (committed == 0).any():
        raise RuntimeError(f"{int((committed == 0).sum())} messages never committed")
    latency_ms = (committed - np.array(sent[:])) * 1000
    p50, p99 = np.percentile(latency_ms, [50, 99])
    print(
        f"{messages} messages ({messages * args.per_message} readings) at {args.rate} readings/s: "
        f"publish -> committed p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {latency_ms.max():.0f} ms"
    )
    print(
        f"RESULT name=latency readings_per_s={args.rate} p50_ms={p50:.0f} p99_ms={p99:.0f} "
        f"reference=flush_deadline reference_ms=200 ratio={p99 / 200:.2f}"
    )


if __name__ == "__main__":
    main()
