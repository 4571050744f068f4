"""Ingest keeps every reading exactly once through crashes: a worker killed with -9 and
restarted, two workers sharing the stream, PostgreSQL restarted mid-stream. Real Mosquitto,
real PostgreSQL, real `coldtrail ingest` processes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from coldtrail import db, mqtt
from coldtrail.ingest.worker import IngestWorker
from coldtrail.messages import Reading, encode_telemetry, telemetry_topic
from coldtrail.mqtt import MqttOptions
from coldtrail.settings import MqttEndpoint
from tests.conftest import (
    MQTT_URL,
    T0,
    PrivatePostgres,
    RunningIngest,
    count_readings,
    ingest_worker,
    make_site,
    wait_for,
)
from tests.test_cli import COLDTRAIL

Conn = psycopg.Connection[tuple[Any, ...]]
SENSORS = ("S-1", "S-2", "S-3", "S-4")
PER_MESSAGE = 10


def _message(n: int) -> bytes:
    """Message n: readings n*10 .. n*10+9, spread over the sensors (seq counts per sensor)."""
    readings = []
    for i in range(n * PER_MESSAGE, (n + 1) * PER_MESSAGE):
        sensor = SENSORS[i % len(SENSORS)]
        seq = i // len(SENSORS) + 1
        readings.append(
            Reading(sensor=sensor, seq=seq, ts=T0 + timedelta(minutes=seq), temperature_c=4.0)
        )
    return encode_telemetry("gw-1", T0, readings)


class Fleet:
    sent = 0


@contextmanager
def _stream(
    options: MqttOptions, topic: str, messages: int, paced: threading.Event
) -> Iterator[Fleet]:
    """Publish ``messages`` in order (QoS 1) while ``paced`` is set."""
    client = mqtt.make_client(options, f"pub-{topic}", persistent=False)
    mqtt.connect(client, options, persistent=False)
    client.loop_start()
    done = threading.Event()
    fleet = Fleet()

    def run() -> None:
        for n in range(messages):
            paced.wait()
            client.publish(topic, _message(n), qos=1).wait_for_publish(10)
            fleet.sent = n + 1
            done.wait(0.002)  # a fleet's pace, so the stream spans the crash

    thread = threading.Thread(target=run, name="fleet")
    thread.start()
    try:
        yield fleet
    finally:
        paced.set()
        thread.join(60)
        client.disconnect()
        client.loop_stop()


def _every_reading_exactly_once(conn: Conn, messages: int) -> None:
    total = messages * PER_MESSAGE
    rows = conn.execute(
        "SELECT sensor_id, count(*), count(DISTINCT seq), min(seq), max(seq) FROM readings"
        " GROUP BY sensor_id ORDER BY sensor_id"
    ).fetchall()
    per_sensor = total // len(SENSORS)
    assert rows == [(s, per_sensor, per_sensor, 1, per_sensor) for s in SENSORS]
    assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    # Every stored reading belongs to a committed batch that counts it.
    assert conn.execute("SELECT sum(readings) FROM ingest_batches").fetchone() == (total,)


def _ingest_process(db_url: str, topic_root: str, client_id: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDTRAIL_")}
    env |= {
        "COLDTRAIL_DATABASE_URL": db_url,
        "COLDTRAIL_MQTT_URL": MQTT_URL,
        "COLDTRAIL_MQTT_TOPIC_ROOT": topic_root,
        "COLDTRAIL_INGEST_FLUSH_S": "0.05",
    }
    return subprocess.Popen(
        [COLDTRAIL, "ingest", "--client-id", client_id],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill(proc: subprocess.Popen[Any]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def _until_subscribed(conn: Conn, options: MqttOptions, topic: str) -> None:
    """A worker process is up once the broker routes to it: probe with message 0 (the stream
    sends it again, and it is stored once) until it is stored."""
    client = mqtt.make_client(options, f"probe-{topic}", persistent=False)
    mqtt.connect(client, options, persistent=False)
    client.loop_start()
    try:

        def stored() -> bool:
            client.publish(topic, _message(0), qos=1).wait_for_publish(10)
            return count_readings(conn) > 0

        wait_for(stored, timeout=30, what="the ingest process subscribed")
    finally:
        client.disconnect()
        client.loop_stop()


def test_worker_killed_mid_stream_and_restarted_stores_every_reading_once(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    make_site(conn, dict.fromkeys(SENSORS, "CR"))
    messages = 300
    topic = telemetry_topic(topic_root, "s1", "gw-1")
    worker = _ingest_process(db_url, topic_root, "ingest-a")
    paced = threading.Event()
    try:
        _until_subscribed(conn, mqtt_options, topic)
        with _stream(mqtt_options, topic, messages, paced) as fleet:
            paced.set()
            wait_for(lambda: count_readings(conn) >= 500, timeout=30, what="a first part")
            _kill(worker)  # mid-stream, with messages received and not yet committed
            down_at = fleet.sent
            wait_for(lambda: fleet.sent >= down_at + 30, what="messages sent while it is down")
            worker = _ingest_process(db_url, topic_root, "ingest-a")
        wait_for(
            lambda: count_readings(conn) == messages * PER_MESSAGE,
            timeout=60,
            what="every reading after the restart",
        )
    finally:
        _stop(worker)
    _every_reading_exactly_once(conn, messages)


def test_two_workers_share_the_stream_and_one_killed_loses_nothing(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    make_site(conn, dict.fromkeys(SENSORS, "CR"))
    messages = 300
    topic = telemetry_topic(topic_root, "s1", "gw-1")
    a = _ingest_process(db_url, topic_root, "ingest-a")
    b = _ingest_process(db_url, topic_root, "ingest-b")
    paced = threading.Event()
    try:
        _until_subscribed(conn, mqtt_options, topic)
        with _stream(mqtt_options, topic, messages, paced):
            paced.set()
            wait_for(lambda: count_readings(conn) >= 500, timeout=30, what="a first part")
            _kill(a)
            a = _ingest_process(db_url, topic_root, "ingest-a")
        wait_for(
            lambda: count_readings(conn) == messages * PER_MESSAGE,
            timeout=60,
            what="every reading",
        )
        workers = conn.execute(
            "SELECT DISTINCT worker FROM ingest_batches WHERE readings > 0 ORDER BY worker"
        ).fetchall()
        assert workers == [("coldtrail-ingest/ingest-a",), ("coldtrail-ingest/ingest-b",)]
    finally:
        _stop(a)
        _stop(b)
    _every_reading_exactly_once(conn, messages)


def test_postgres_restarted_mid_stream_the_worker_recovers_by_itself(
    private_postgres: PrivatePostgres, mqtt_options: MqttOptions, topic_root: str
) -> None:
    url = private_postgres.url
    db.upgrade(url)
    with psycopg.connect(url) as conn:
        make_site(conn, dict.fromkeys(SENSORS, "CR"))
        conn.commit()
    messages = 200
    topic = telemetry_topic(topic_root, "s1", "gw-1")
    paced = threading.Event()
    with RunningIngest(ingest_worker(url, mqtt_options, topic_root)) as running:
        with _stream(mqtt_options, topic, messages, paced) as fleet:
            paced.set()
            wait_for(lambda: running.worker.stats.readings_stored >= 300, what="a first part")
            private_postgres.stop()
            # The worker holds what it received unacknowledged and retries; the broker
            # keeps the rest for it.
            down_at = fleet.sent
            wait_for(lambda: fleet.sent >= down_at + 30, what="messages sent while it is down")
            private_postgres.start()
        wait_for(
            lambda: running.worker.stats.readings_stored == messages * PER_MESSAGE,
            timeout=60,
            what="every reading after the restart",
        )
        assert running.thread.is_alive()
    with psycopg.connect(url) as conn:
        _every_reading_exactly_once(conn, messages)


def test_ingest_process_serves_prometheus_metrics_and_logs_json(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    import json

    import httpx2 as httpx

    from coldtrail.net import free_port

    make_site(conn, dict.fromkeys(SENSORS, "CR"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDTRAIL_")}
    env |= {
        "COLDTRAIL_DATABASE_URL": db_url,
        "COLDTRAIL_MQTT_URL": MQTT_URL,
        "COLDTRAIL_MQTT_TOPIC_ROOT": topic_root,
        "COLDTRAIL_INGEST_METRICS_BIND": f"127.0.0.1:{port}",
        "COLDTRAIL_LOG_FORMAT": "json",
    }
    topic = telemetry_topic(topic_root, "s1", "gw-1")
    proc = subprocess.Popen(
        [COLDTRAIL, "ingest", "--client-id", "ingest-m"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _until_subscribed(conn, mqtt_options, topic)
        client = mqtt.make_client(mqtt_options, f"pub-{topic_root}", persistent=False)
        mqtt.connect(client, mqtt_options, persistent=False)
        client.loop_start()
        client.publish(topic, b"not json", qos=1).wait_for_publish(10)
        client.publish(topic, _message(1), qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()
        wait_for(lambda: count_readings(conn) == 2 * PER_MESSAGE, what="message 1 stored")

        def scrape() -> dict[str, float] | None:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            values = {
                line.split(" ")[0]: float(line.split(" ")[1])
                for line in text.splitlines()
                if line.startswith("coldtrail_ingest_") and " " in line
            }
            return values if values.get("coldtrail_ingest_dead_letters_total") == 1 else None

        metrics = wait_for(scrape, what="the dead letter counted")
        assert metrics["coldtrail_ingest_readings_stored_total"] == 2 * PER_MESSAGE
        assert metrics["coldtrail_ingest_messages_total"] >= 3
        assert metrics["coldtrail_ingest_commit_seconds_count"] >= 1
        assert "coldtrail_ingest_inbox_messages" in metrics
    finally:
        _stop(proc)
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stderr.close()
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any(d["level"] == "WARNING" and "dead letters" in d["message"] for d in lines)
    assert all({"ts", "level", "logger", "message"} <= d.keys() for d in lines)


def test_a_worker_that_cannot_reach_the_broker_says_so_at_once_and_once(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from coldtrail.net import free_port

    dead = MqttOptions(endpoint=MqttEndpoint.parse(f"mqtt://127.0.0.1:{free_port()}"))
    worker = IngestWorker(
        database_url=db_url, options=dead, topic_root="nobroker", client_id="ingest-nobroker"
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    with caplog.at_level(logging.WARNING, logger="coldtrail.ingest.worker"):
        thread.start()
        try:
            said = wait_for(
                lambda: [r for r in caplog.records if "cannot reach the broker" in r.message],
                what="the warning",
            )
        finally:
            stop.set()
            thread.join(10)
    assert len(said) == 1
    assert f"127.0.0.1:{dead.endpoint.port}" in said[0].message
