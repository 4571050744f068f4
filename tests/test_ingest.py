"""Ingest on real Mosquitto and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from coldtrail.erp.masterdata import assign_sensor, upsert_sensor
from coldtrail.ingest.worker import release_quarantine
from coldtrail.messages import ClockState, Reading, encode_telemetry, telemetry_topic
from coldtrail.mqtt import MqttOptions
from tests.conftest import (
    T0,
    RunningIngest,
    count_readings,
    ingest_worker,
    make_site,
    publish,
    wait_for,
)

Conn = psycopg.Connection[tuple[Any, ...]]


def _dead_letters(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    return int(row[0]) if row else 0


def _message(*seqs: int, sensor: str = "S1", temp: float = 5.0) -> bytes:
    return encode_telemetry(
        "gw-1",
        T0,
        [
            Reading(sensor=sensor, seq=s, ts=T0.replace(minute=s % 60), temperature_c=temp)
            for s in seqs
        ],
    )


def test_duplicate_publish_stored_once(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    make_site(conn, {"S1": "CR"})
    topic = telemetry_topic(topic_root, "s1", "gw-1")
    worker = ingest_worker(db_url, mqtt_options, topic_root)
    with RunningIngest(worker):
        publish(mqtt_options, topic, _message(1, 2), _message(1, 2), _message(2, 3))
        wait_for(
            lambda: (
                worker.stats.messages == 3
                and worker.stats.batches >= 1
                and worker.stats.readings_stored + worker.stats.duplicates == 6
            ),
            what="three messages committed",
        )
    rows = conn.execute("SELECT seq FROM readings WHERE sensor_id = 'S1' ORDER BY seq").fetchall()
    assert rows == [(1,), (2,), (3,)]
    assert worker.stats.duplicates == 3
    latest = conn.execute("SELECT seq, temperature_c FROM sensor_latest").fetchall()
    assert latest == [(3, 5.0)]


def test_malformed_payload_dead_lettered_and_next_good_one_stored(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    make_site(conn, {"S1": "CR"})
    topic = telemetry_topic(topic_root, "s1", "gw-1")
    worker = ingest_worker(db_url, mqtt_options, topic_root)
    with RunningIngest(worker):
        publish(mqtt_options, topic, b"{not json", _message(1))
        wait_for(
            lambda: count_readings(conn) == 1 and _dead_letters(conn) == 1,
            what="one reading and one dead letter",
        )
    topic_seen, payload, reason = conn.execute(
        "SELECT topic, payload, reason FROM dead_letters"
    ).fetchone() or ("", b"", "")
    assert topic_seen == topic
    assert bytes(payload) == b"{not json"
    assert reason.startswith("not JSON")


def test_bad_readings_are_dead_lettered_and_unknown_sensors_quarantined_until_released(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    make_site(conn, {"S1": "CR"})
    topic = telemetry_topic(topic_root, "s1", "gw-1")
    mixed = json.dumps(
        {
            "gateway": "gw-1",
            "sent_at": "2026-11-22T10:00:05Z",
            "readings": [
                {"sensor": "S1", "seq": 1, "ts": "2026-11-22T10:00:00Z", "temperature_c": 5.1},
                {"sensor": "S1", "seq": 2, "ts": "2026-11-22T10:01:00Z", "temperature_c": 999},
                {"sensor": "NOPE", "seq": 1, "ts": "2026-11-22T10:00:00Z", "temperature_c": 4.0},
                {"sensor": "S1", "seq": 3, "ts": "2099-01-01T00:00:00Z", "temperature_c": 4.0},
            ],
        }
    ).encode()
    wrong_gateway = _message(3).replace(b'"gw-1"', b'"gw-2"')
    worker = ingest_worker(db_url, mqtt_options, topic_root)
    with RunningIngest(worker):
        publish(mqtt_options, topic, mixed, wrong_gateway)
        wait_for(lambda: _dead_letters(conn) == 3, what="three dead letters")
    assert conn.execute("SELECT sensor_id, seq FROM readings").fetchall() == [("S1", 1)]
    reasons = sorted(r[0] for r in conn.execute("SELECT reason FROM dead_letters"))
    assert reasons[0].startswith("gateway 'gw-2' does not match topic 'gw-1'")
    assert reasons[1].startswith("measured in the future: 2099-01-01")
    assert reasons[2].startswith("temperature_c:")
    held = conn.execute(
        "SELECT sensor_id, seq, temperature_c, reason FROM quarantined_readings"
    ).fetchall()
    assert held == [("NOPE", 1, 4.0, "unknown sensor 'NOPE'")]

    # Registered and placed later: released into readings as one batch the rules will judge.
    assert release_quarantine(db_url) == (0, 0)  # still unknown: stays held
    upsert_sensor(conn, "NOPE", "xy-md02", "SN-NOPE")
    assert release_quarantine(db_url) == (0, 0)  # registered, but placed nowhere yet
    assert conn.execute("SELECT rule::text, reason FROM quarantined_readings").fetchone() == (
        "not_at_site",
        "a gateway reports only for sensors placed at its site: 'NOPE' was nowhere at "
        "2026-11-22T10:00:00+00:00, not at site 's1'",
    )
    assign_sensor(conn, "NOPE", "CR", T0)
    assert release_quarantine(db_url) == (1, 1)
    assert release_quarantine(db_url) == (0, 0)
    assert conn.execute(
        "SELECT r.seq, r.temperature_c, b.readings FROM readings r"
        " JOIN ingest_batches b ON b.id = r.batch_id WHERE r.sensor_id = 'NOPE'"
    ).fetchall() == [(1, 4.0, 1)]


def test_reading_acked_only_after_commit(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    """A worker that receives a message but cannot commit never acknowledges it: the broker
    hands it to the next worker of the same session, which stores it."""
    make_site(conn, {"S1": "CR"})
    topic = telemetry_topic(topic_root, "s1", "gw-1")
    client_id = f"ingest-{topic_root}"
    # Nothing listens on port 1 of this host: every commit attempt fails, as in an outage.
    dead_db = psycopg.conninfo.make_conninfo(db_url, port="1", connect_timeout="1")
    down = ingest_worker(dead_db, mqtt_options, topic_root, client_id=client_id)
    with RunningIngest(down):
        publish(mqtt_options, topic, _message(1))
        wait_for(lambda: down.stats.messages == 1, what="the message to reach the worker")
    assert down.stats.batches == 0
    assert count_readings(conn) == 0

    up = ingest_worker(db_url, mqtt_options, topic_root, client_id=client_id)
    with RunningIngest(up):
        wait_for(lambda: count_readings(conn) == 1, what="redelivery after restart")


def test_clock_mark_from_the_edge_is_kept_with_the_reading(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    make_site(conn, {"S1": "CR"})
    readings = [
        Reading(sensor="S1", seq=1, ts=T0, temperature_c=5.0),
        Reading(
            sensor="S1",
            seq=2,
            ts=T0.replace(minute=1),
            temperature_c=5.1,
            clock=ClockState.UNSYNCED,
        ),
    ]
    worker = ingest_worker(db_url, mqtt_options, topic_root)
    with RunningIngest(worker):
        publish(
            mqtt_options,
            telemetry_topic(topic_root, "s1", "gw-1"),
            encode_telemetry("gw-1", T0, readings),
        )
        wait_for(lambda: count_readings(conn) == 2, what="two readings")
    rows = conn.execute("SELECT seq, clock::text FROM readings ORDER BY seq").fetchall()
    assert rows == [(1, "ok"), (2, "unsynced")]
    assert conn.execute("SELECT clock::text FROM sensor_latest").fetchall() == [("unsynced",)]
