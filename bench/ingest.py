"""Ingest throughput: MQTT -> committed rows, against a raw COPY of the same rows.

Runs against the local services (COLDTRAIL_BENCH_PG, default the test server; COLDTRAIL_BENCH_MQTT,
default 127.0.0.1:1883) in databases it creates and drops. Ends with one RESULT line.

    .venv/bin/python -m bench.ingest [--readings 200000] [--per-message 100] [--workers 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray
from multiprocessing.synchronize import Event

import numpy as np
import psycopg

from bench._db import backend, drop_database, make_database
from coldtrail import mqtt
from coldtrail.ingest.worker import IngestWorker
from coldtrail.messages import Reading, encode_telemetry, telemetry_topic
from coldtrail.settings import MqttEndpoint

MQTT = os.environ.get("COLDTRAIL_BENCH_MQTT", "mqtt://127.0.0.1:1883")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BROKER_BACKLOG = 400


def _register(url: str, sensors: int, *, place: bool = True) -> None:
    """Register the fleet's sensors; with ``place``, in a cold room of site ``bench`` (the
    topic's), from long before the readings: ingest stores only readings of sensors placed at
    the gateway's site."""
    with psycopg.connect(url) as conn:
        with conn.cursor().copy("COPY sensors (id, model, serial) FROM STDIN") as copy:
            for i in range(sensors):
                copy.write_row((f"S{i:05d}", "xy-md02", f"SN{i:05d}"))
        if place:
            conn.execute("INSERT INTO sites (id, name) VALUES ('bench', 'Bench')")
            conn.execute(
                "INSERT INTO locations (id, site_id, kind, name) "
                "VALUES ('BENCH-CR', 'bench', 'cold_room', 'Cold room')"
            )
            conn.execute(
                "INSERT INTO sensor_assignments (sensor_id, location_id, valid) "
                "SELECT id, 'BENCH-CR', tstzrange('2000-01-01', NULL) FROM sensors"
            )


def _readings(n: int, sensors: int) -> list[Reading]:
    rng = np.random.default_rng(7)
    temps = np.round(rng.normal(5.0, 1.5, n), 2)
    rh = np.round(rng.uniform(30, 70, n), 1)
    return [
        Reading(
            sensor=f"S{i % sensors:05d}",
            seq=i // sensors + 1,
            ts=T0 + timedelta(minutes=i // sensors),
            temperature_c=float(temps[i]),
            humidity_pct=float(rh[i]),
        )
        for i in range(n)
    ]


def raw_copy(url: str, readings: list[Reading]) -> float:
    """Reference: one COPY of the same rows straight into a readings table like ours."""
    with psycopg.connect(url) as conn:
        batch = conn.execute("INSERT INTO ingest_batches DEFAULT VALUES RETURNING id").fetchone()
        assert batch is not None
        start = time.perf_counter()
        with conn.cursor().copy(
            "COPY readings (sensor_id, seq, ts, gateway, status, temperature_c, humidity_pct, "
            "battery_pct, batch_id) FROM STDIN"
        ) as copy:
            for r in readings:
                copy.write_row(
                    (
                        r.sensor,
                        r.seq,
                        r.ts,
                        "gw-bench",
                        "ok",
                        r.temperature_c,
                        r.humidity_pct,
                        None,
                        batch[0],
                    )
                )
        conn.commit()
        return time.perf_counter() - start


@dataclass(frozen=True)
class Pace:
    """How the fleet paces itself: behind the worker by at most ``backlog`` messages (the
    worker's taken count in ``consumed``), or at ``per_s`` messages a second. ``sent`` gets
    each message's wall-clock send time, if given."""

    consumed: Synchronized[int] | None = None
    per_s: float | None = None
    sent: SynchronizedArray[float] | None = None


def fleet(
    options: mqtt.MqttOptions,
    client_id: str,
    topic: str,
    payloads: list[bytes],
    pace: Pace,
    ready: Event,
    go: Event,
) -> None:
    """The fleet, in a process of its own as gateways are: it must not take the ingest
    worker's interpreter lock. Connects, says ``ready``, publishes from ``go``."""
    pub = mqtt.make_client(options, client_id, persistent=False)
    pub.max_inflight_messages_set(1000)
    mqtt.connect(pub, options, persistent=False)
    pub.loop_start()
    pause = threading.Event()
    ready.set()
    go.wait()
    start = time.perf_counter()
    try:
        for n, payload in enumerate(payloads):
            if pace.consumed is not None:
                # Mosquitto drops QoS 1 messages queued for a client beyond
                # max_queued_messages (1000 by default): keep the backlog under it, as a real
                # fleet's pace would.
                while n - pace.consumed.value > BROKER_BACKLOG:
                    pause.wait(0.0005)
            if pace.per_s is not None:
                due = start + n / pace.per_s
                while (ahead := due - time.perf_counter()) > 0:
                    pause.wait(ahead)
            if pace.sent is not None:
                pace.sent[n] = time.time()
            pub.publish(topic, payload, qos=1)
        pause.wait(1.0)  # the last PUBACKs
    finally:
        pub.disconnect()
        pub.loop_stop()


@dataclass(frozen=True)
class Counters:
    """What each worker process has done, one slot per worker: messages taken, readings
    stored, commits, seconds writing and committing."""

    messages: SynchronizedArray[int]
    stored: SynchronizedArray[int]
    commits: SynchronizedArray[int]
    commit_s: SynchronizedArray[float]


def worker(
    url: str,
    options: mqtt.MqttOptions,
    root: str,
    slot: int,
    counters: Counters,
    subscribed: Event,
    stop: Event,
) -> None:
    """One ingest worker in a process of its own, as `coldtrail ingest` runs: workers share
    the subscription, and each has its own interpreter lock."""
    ingest = IngestWorker(
        database_url=url,
        options=options,
        topic_root=root,
        client_id=f"ingest-{root}-{slot}",
        batch_max_readings=20_000,
    )
    halt = threading.Event()
    thread = threading.Thread(target=ingest.run, args=(halt,))
    thread.start()
    if ingest.subscribed.wait(10):
        subscribed.set()
    while not stop.wait(0.001):
        s = ingest.stats
        counters.messages[slot] = s.messages
        counters.stored[slot] = s.readings_stored
        counters.commits[slot] = s.batches
        counters.commit_s[slot] = s.commit_s
    halt.set()
    thread.join(30)


def ours(
    url: str, readings: list[Reading], per_message: int, workers: int
) -> tuple[float, Counters]:
    """MQTT publish (QoS 1) -> ingest workers -> committed rows, timed end to end."""
    root = f"bench{uuid.uuid4().hex[:8]}"
    options = mqtt.MqttOptions(endpoint=MqttEndpoint.parse(MQTT), protocol="5")
    payloads = [
        encode_telemetry("gw-bench", T0, readings[i : i + per_message])
        for i in range(0, len(readings), per_message)
    ]
    ctx = multiprocessing.get_context("spawn")
    counters = Counters(
        ctx.Array("q", workers),
        ctx.Array("q", workers),
        ctx.Array("q", workers),
        ctx.Array("d", workers),
    )
    stop = ctx.Event()
    subscribed = [ctx.Event() for _ in range(workers)]
    procs = [
        ctx.Process(
            target=worker, args=(url, options, root, slot, counters, subscribed[slot], stop)
        )
        for slot in range(workers)
    ]
    for proc in procs:
        proc.start()
    consumed = ctx.Value("q", 0)
    topic = telemetry_topic(root, "bench", "gw-bench")
    ready, go = ctx.Event(), ctx.Event()
    publisher = ctx.Process(
        target=fleet,
        args=(options, f"pub-{root}", topic, payloads, Pace(consumed=consumed), ready, go),
    )
    publisher.start()
    try:
        if not ready.wait(30) or not all(s.wait(30) for s in subscribed):
            raise RuntimeError("ingest did not subscribe, or the fleet did not connect")
        pause = threading.Event()
        start = time.perf_counter()
        go.set()
        while sum(counters.stored[:]) < len(readings):
            consumed.value = sum(counters.messages[:])
            pause.wait(0.001)
            if time.perf_counter() - start > 300:
                raise RuntimeError(
                    f"only {sum(counters.stored[:])} of {len(readings)} readings stored "
                    "after 5 minutes (did the broker drop messages?)"
                )
        elapsed = time.perf_counter() - start
    finally:
        publisher.join(30)
        stop.set()
        for proc in procs:
            proc.join(30)
    return elapsed, counters


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--readings", type=int, default=200_000)
    p.add_argument("--per-message", type=int, default=100)
    p.add_argument("--sensors", type=int, default=2_000)
    p.add_argument(
        "--workers", type=int, default=1, help="ingest worker processes sharing the subscription"
    )
    args = p.parse_args()
    readings = _readings(args.readings, args.sensors)
    tag = f"{os.getpid()}"
    ref_dbs, our_db = (f"bench_ref_{tag}_a", f"bench_ref_{tag}_b"), f"bench_ours_{tag}"
    made: list[str] = []
    try:
        # The reference runs before and after ours, each into a fresh table, and the faster
        # is kept: the machine's pace drifts within a run, and the ratio should not flatter.
        refs = []
        for i, name in enumerate((ref_dbs[0], our_db, ref_dbs[1])):
            url = make_database(name)
            made.append(name)
            _register(url, args.sensors)
            if i == 1:
                our_s, counters = ours(url, readings, args.per_message, args.workers)
            else:
                refs.append(raw_copy(url, readings))
        ref_s = min(refs)
    finally:
        for name in made:
            drop_database(name)
    ref_rate, our_rate = args.readings / ref_s, args.readings / our_s
    print(f"raw COPY: {args.readings} rows in {refs[0]:.2f} s before ours, {refs[1]:.2f} s after")
    print(
        f"ingest:   {args.readings} readings in {args.readings // args.per_message} messages "
        f"in {our_s:.2f} s by {args.workers} worker(s); {sum(counters.commits[:])} commits, "
        f"{args.readings / max(sum(counters.commits[:]), 1):.0f} readings per commit, "
        f"{sum(counters.commit_s[:]):.2f} s of it writing and committing"
    )
    print(
        f"RESULT name=ingest backend={backend()} readings_per_s={our_rate:.0f} "
        f"per_message={args.per_message} workers={args.workers} "
        f"reference=raw_copy reference_per_s={ref_rate:.0f} ratio={our_rate / ref_rate:.2f}"
    )


if __name__ == "__main__":
    main()
