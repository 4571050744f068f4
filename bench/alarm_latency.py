"""Alarm latency: from a gateway's publish of an out-of-range reading to the
``excursion.opened`` event on MQTT, while the fleet publishes 20 000 readings/s.

The whole chain runs: Mosquitto, one ingest worker, the rules worker (LISTEN/NOTIFY), the
outbox dispatcher with an MQTT destination, and a subscriber on ``coldtrail/v1/events/#``.
2 000 sensors; 40 of them, each in a place of its own (2-8 °C, no alarm delay), send one
reading at 12 °C at a moment spread over the run. Each event is timed against the wall-clock
send time of the message that carried its reading. Reference: the goal, p99 < 2 s.

    .venv/bin/python -m bench.alarm_latency [--rate 20000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg

from bench._db import drop_database, make_database
from bench.ingest import MQTT, Pace, _register, fleet
from coldtrail import mqtt
from coldtrail.erp.masterdata import Location, upsert_location, upsert_site
from coldtrail.erp.outbox import EVENT_TOPIC_ROOT, Destination, OutboxDispatcher, add_destination
from coldtrail.ingest.worker import IngestWorker
from coldtrail.messages import Reading, encode_telemetry, telemetry_topic
from coldtrail.rules.engine import RulesEngine
from coldtrail.settings import MqttEndpoint

SENSORS = 2_000
HOT = 40


def _payloads(
    messages: int, per_message: int, seconds: float
) -> tuple[list[bytes], dict[str, int]]:
    """The messages, and for each hot sensor the message carrying its one warm reading.
    Measurement times start now and keep pace with the sending, as a live fleet's do (the
    rules would rightly call sensors whose newest reading is months old offline)."""
    rounds = messages * per_message // SENSORS
    t0 = datetime.now(UTC).replace(microsecond=0)
    step = timedelta(seconds=seconds / rounds)
    warm_round = {f"S{k:05d}": int((k + 1) * rounds / (HOT + 1)) for k in range(HOT)}
    carried: dict[str, int] = {}
    payloads = []
    for n in range(messages):
        readings = []
        for i in range(n * per_message, (n + 1) * per_message):
            sensor, round_ = f"S{i % SENSORS:05d}", i // SENSORS
            hot = warm_round.get(sensor) == round_
            if hot:
                carried[sensor] = n
            readings.append(Reading(sensor=sensor, seq=round_ + 1,
                                    ts=t0 + step * round_,
                                    temperature_c=12.0 if hot else 4.5))  # fmt: skip
        payloads.append(encode_telemetry("gw-bench", t0, readings))
    return payloads, carried


def _places(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        upsert_site(conn, "bench", "Bench")
        upsert_location(conn, Location("CR", "bench", "cold_room", "Cold room", 2.0, 8.0))
        for k in range(HOT):
            upsert_location(conn, Location(f"F{k}", "bench", "cold_room", f"Fridge {k}", 2.0, 8.0))
        conn.execute(
            "INSERT INTO sensor_assignments (sensor_id, location_id, valid)"
            " SELECT id, CASE WHEN substr(id, 2)::int < %s THEN 'F' || substr(id, 2)::int"
            " ELSE 'CR' END, tstzrange(%s, NULL) FROM sensors",
            # Assigned just now: a sensor assigned long ago that never reported is offline.
            (HOT, datetime.now(UTC) - timedelta(seconds=60)),
        )
        add_destination(conn, "bench", Destination("bus", "mqtt", MQTT))


def _stages(url: str) -> dict[str, tuple[float, float]]:
    """Per hot sensor: when ingest took its warm reading, and when the rules recorded it."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT s.sensor, extract(epoch FROM r.received_at)::float8,"
            " extract(epoch FROM e.created_at)::float8"
            " FROM outbox_events e, jsonb_array_elements_text(e.payload->'sensors') s(sensor)"
            " JOIN readings r ON r.sensor_id = s.sensor AND r.temperature_c > 8"
            " WHERE e.kind = 'excursion.opened'"
        ).fetchall()
    return {s: (a, b) for s, a, b in rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rate", type=int, default=20_000, help="readings per second")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--per-message", type=int, default=100)
    args = p.parse_args()
    messages = int(args.rate * args.seconds / args.per_message)
    payloads, carried = _payloads(messages, args.per_message, args.seconds)
    name = f"bench_alarm_{uuid.uuid4().hex[:6]}"
    url = make_database(name)
    received: dict[str, float] = {}
    try:
        _register(url, SENSORS, place=False)
        _places(url)
        root = f"bench{uuid.uuid4().hex[:8]}"
        options = mqtt.MqttOptions(endpoint=MqttEndpoint.parse(MQTT), protocol="5")
        listener = mqtt.make_client(options, f"events-{root}", persistent=False)

        def on_message(_c: object, _u: object, msg: object) -> None:
            doc = json.loads(msg.payload)  # type: ignore[attr-defined]
            for sensor in doc["data"].get("sensors", []):
                received.setdefault(sensor, time.time())

        listener.on_message = on_message
        mqtt.connect(listener, options, persistent=False)
        listener.subscribe(f"{EVENT_TOPIC_ROOT}/excursion/opened/#", qos=1)
        listener.loop_start()
        stop = threading.Event()
        worker = IngestWorker(database_url=url, options=options, topic_root=root, client_id=root)
        services = [
            threading.Thread(target=worker.run, args=(stop,)),
            threading.Thread(target=RulesEngine(url).run, args=(stop,)),
            threading.Thread(target=OutboxDispatcher(url).run, args=(stop,)),
        ]
        for t in services:
            t.start()
        ctx = multiprocessing.get_context("spawn")
        sent = ctx.Array("d", messages)
        ready, go = ctx.Event(), ctx.Event()
        topic = telemetry_topic(root, "bench", "gw-bench")
        pace = Pace(per_s=args.rate / args.per_message, sent=sent)
        publisher = ctx.Process(
            target=fleet, args=(options, f"pub-{root}", topic, payloads, pace, ready, go)
        )
        publisher.start()
        try:
            if not worker.subscribed.wait(10) or not ready.wait(30):
                raise RuntimeError("ingest or the fleet did not come up")
            go.set()
            pause = threading.Event()
            deadline = time.perf_counter() + args.seconds + 60
            while len(received) < HOT and time.perf_counter() < deadline:
                pause.wait(0.05)
            publisher.join(30)
        finally:
            stop.set()
            for t in services:
                t.join(30)
            listener.disconnect()
            listener.loop_stop()
        stages = _stages(url)
    finally:
        drop_database(name)
    missing = sorted(set(carried) - set(received))
    if missing:
        raise RuntimeError(f"no excursion.opened for {len(missing)} sensors: {missing[:5]}")
    latency = np.array([received[s] - sent[carried[s]] for s in carried]) * 1000
    p50, p99 = np.percentile(latency, [50, 99])
    # Where the time goes: the hot reading's ingest transaction, then the rules transaction
    # that recorded the excursion, then the event's arrival on MQTT.
    parts: dict[str, list[float]] = {"ingest": [], "rules": [], "dispatch": []}
    for s, (ingested, judged) in stages.items():
        if s in carried and s in received:
            parts["ingest"].append(ingested - sent[carried[s]])
            parts["rules"].append(judged - ingested)
            parts["dispatch"].append(received[s] - judged)
    print(
        "stage p50/p99 (ms): "
        + ", ".join(
            f"{k} {np.percentile(v, 50) * 1000:.0f}/{np.percentile(v, 99) * 1000:.0f}"
            for k, v in parts.items()
            if v
        )
    )
    print(
        f"{HOT} excursions among {messages * args.per_message} readings at {args.rate}/s: "
        f"publish -> excursion.opened on MQTT p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
        f"max {latency.max():.0f} ms"
    )
    print(
        f"RESULT name=alarm_latency readings_per_s={args.rate} p50_ms={p50:.0f} p99_ms={p99:.0f} "
        f"reference=goal reference_ms=2000 ratio={p99 / 2000:.2f}"
    )


if __name__ == "__main__":
    main()
