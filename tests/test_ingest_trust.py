"""The ingest trust boundary on real Mosquitto and PostgreSQL: a gateway reports only for the
sensors placed at its site when they measured, and a resend that disagrees with the record is
kept aside, never stored twice and never dropped silently."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from prometheus_client import generate_latest

from coldtrail.erp import gateways
from coldtrail.erp.masterdata import (
    Location,
    assign_sensor,
    upsert_location,
    upsert_sensor,
    upsert_site,
)
from coldtrail.ingest import queries as q
from coldtrail.ingest.copytext import copy_lines
from coldtrail.ingest.store import Envelope, Store
from coldtrail.ingest.worker import IngestWorker, release_quarantine
from coldtrail.messages import Reading, ReadingDoc, encode_telemetry, telemetry_topic
from coldtrail.mqtt import MqttOptions
from tests.conftest import T0, RunningIngest, count_readings, ingest_worker, publish, wait_for

Conn = psycopg.Connection[tuple[Any, ...]]
M = timedelta(minutes=1)


def _lines(readings: list[ReadingDoc]) -> list[str]:
    return copy_lines(readings, "gw-a", time.time_ns() // 1000)


def _two_sites(conn: Conn) -> None:
    """Site s1 with cold room CR1 (sensor S1) and site s2 with CR2 (sensor S2), both placed
    from T0."""
    for site, room, sensor in (("s1", "CR1", "S1"), ("s2", "CR2", "S2")):
        upsert_site(conn, site, f"Site {site}")
        upsert_location(conn, Location(room, site, "cold_room", f"Room {room}", 2.0, 8.0))
        upsert_sensor(conn, sensor, "xy-md02", f"SN-{sensor}")
        assign_sensor(conn, sensor, room, T0)


def _message(gateway: str, *readings: tuple[str, int, int, float]) -> bytes:
    """Readings as (sensor, seq, minutes after T0, temperature)."""
    return encode_telemetry(
        gateway,
        T0,
        [Reading(sensor=s, seq=n, ts=T0 + m * M, temperature_c=t) for s, n, m, t in readings],
    )


def _kept(conn: Conn) -> list[tuple[str, int, str]]:
    return [
        (r[0], r[1], r[2])
        for r in conn.execute(
            "SELECT sensor_id, seq, rule::text FROM quarantined_readings ORDER BY 1, 2, id"
        )
    ]


def _stored(conn: Conn) -> list[tuple[str, int, float]]:
    return [
        (r[0], r[1], r[2])
        for r in conn.execute("SELECT sensor_id, seq, temperature_c FROM readings ORDER BY 1, 2")
    ]


def _metric(worker: IngestWorker, rule: str) -> float:
    text = generate_latest(worker.metrics.registry).decode()
    line = f'coldtrail_ingest_kept_aside_total{{rule="{rule}"}}'
    found = [ln for ln in text.splitlines() if ln.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


def test_a_gateway_can_not_write_another_sites_record(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    """A gateway of site s1 sends a reading of S2, placed at site s2, at 30 °C: it is kept
    aside whole, and never becomes S2's latest value or reaches the rules; S1's reading in
    the same message is stored."""
    _two_sites(conn)
    worker = ingest_worker(db_url, mqtt_options, topic_root)
    with RunningIngest(worker):
        publish(
            mqtt_options,
            telemetry_topic(topic_root, "s1", "gw-a"),
            _message("gw-a", ("S1", 1, 0, 4.0), ("S2", 1, 0, 30.0)),
        )
        wait_for(lambda: worker.stats.messages == 1 and worker.stats.batches == 1)
    assert _stored(conn) == [("S1", 1, 4.0)]
    assert _kept(conn) == [("S2", 1, "not_at_site")]
    reason = conn.execute("SELECT reason FROM quarantined_readings").fetchone()
    assert reason == (
        "a gateway reports only for sensors placed at its site: 'S2' was at CR2 of site 's2' "
        "at 2026-11-22T10:00:00+00:00, not at site 's1'",
    )
    assert conn.execute("SELECT sensor_id FROM sensor_latest").fetchall() == [("S1",)]
    # The rules see ingest batches: the only one holds S1's reading alone.
    assert conn.execute("SELECT readings FROM ingest_batches").fetchall() == [(1,)]
    assert _metric(worker, "not_at_site") == 1


def test_a_reading_outside_the_sensors_placement_at_the_site_is_kept_aside(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    """S1 is at site s1 from T0 and moves to site s2 an hour later. From s1's gateway, its
    reading before T0 and after the move are kept aside; from s2's, the one after the move
    is stored."""
    _two_sites(conn)
    assign_sensor(conn, "S1", "CR2", T0 + 60 * M)
    worker = ingest_worker(db_url, mqtt_options, topic_root)
    with RunningIngest(worker):
        publish(
            mqtt_options,
            telemetry_topic(topic_root, "s1", "gw-a"),
            _message("gw-a", ("S1", 1, -1, 4.0), ("S1", 2, 30, 4.1), ("S1", 3, 61, 4.2)),
        )
        publish(
            mqtt_options,
            telemetry_topic(topic_root, "s2", "gw-b"),
            _message("gw-b", ("S1", 4, 62, 4.3)),
        )
        wait_for(lambda: worker.stats.messages == 2 and worker.stats.batches >= 1)
        wait_for(lambda: count_readings(conn) + len(_kept(conn)) == 4)
    assert _stored(conn) == [("S1", 2, 4.1), ("S1", 4, 4.3)]
    assert _kept(conn) == [("S1", 1, "not_at_site"), ("S1", 3, "not_at_site")]
    reasons = [
        r[0] for r in conn.execute("SELECT reason FROM quarantined_readings ORDER BY seq, id")
    ]
    assert "'S1' was nowhere at 2026-11-22T09:59:00+00:00" in reasons[0]
    assert "'S1' was at CR2 of site 's2' at 2026-11-22T11:01:00+00:00" in reasons[1]


def test_a_registered_gateway_publishing_under_another_site_or_disabled_is_kept_aside(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    """Where the broker's ACL does not hold the line (a broker set up without the shipped
    config), ingest still does: a registered gateway's topic must name its own site, and a
    disabled gateway's readings are not stored."""
    _two_sites(conn)
    gateways.register(conn, "gw-a", "s1", "A")
    gateways.register(conn, "gw-off", "s2", "Off")
    gateways.set_disabled(conn, "gw-off", True)
    worker = ingest_worker(db_url, mqtt_options, topic_root)
    with RunningIngest(worker):
        publish(  # gw-a of s1 pretending to be at s2, reporting s2's sensor
            mqtt_options,
            telemetry_topic(topic_root, "s2", "gw-a"),
            _message("gw-a", ("S2", 1, 0, 4.0)),
        )
        publish(
            mqtt_options,
            telemetry_topic(topic_root, "s2", "gw-off"),
            _message("gw-off", ("S2", 2, 1, 4.0)),
        )
        wait_for(lambda: len(_kept(conn)) == 2, what="both kept aside")
    assert count_readings(conn) == 0
    assert _kept(conn) == [("S2", 1, "gateway_site"), ("S2", 2, "gateway_disabled")]
    listed = {g.id: g for g in gateways.list_all(conn)}
    assert listed["gw-a"].kept_aside_24h == {"gateway_site": 1}
    assert listed["gw-off"].kept_aside_24h == {"gateway_disabled": 1}


def test_master_data_changes_reach_a_running_worker_and_release_stores_what_now_passes(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    _two_sites(conn)
    upsert_sensor(conn, "S3", "xy-md02", "SN-S3")  # registered, placed nowhere yet
    worker = ingest_worker(db_url, mqtt_options, topic_root)
    topic = telemetry_topic(topic_root, "s1", "gw-a")
    with RunningIngest(worker):
        publish(mqtt_options, topic, _message("gw-a", ("S3", 1, 0, 4.0)))
        wait_for(lambda: _kept(conn) == [("S3", 1, "not_at_site")])
        assign_sensor(conn, "S3", "CR1", T0)
        publish(mqtt_options, topic, _message("gw-a", ("S3", 2, 1, 4.1)))
        wait_for(lambda: count_readings(conn) == 1, what="the worker to see the placement")
    assert release_quarantine(db_url) == (1, 1)
    assert _stored(conn) == [("S3", 1, 4.0), ("S3", 2, 4.1)]
    assert conn.execute("SELECT released_at IS NOT NULL FROM quarantined_readings").fetchall() == [
        (True,)
    ]


def test_a_resend_that_disagrees_is_kept_aside_and_the_first_stays_the_record(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    _two_sites(conn)
    topic = telemetry_topic(topic_root, "s1", "gw-a")
    worker = ingest_worker(db_url, mqtt_options, topic_root)
    with RunningIngest(worker):
        publish(mqtt_options, topic, _message("gw-a", ("S1", 1, 0, 4.0), ("S1", 2, 1, 4.1)))
        wait_for(lambda: count_readings(conn) == 2)
        publish(mqtt_options, topic, _message("gw-a", ("S1", 1, 0, 4.0)))  # the same again
        publish(mqtt_options, topic, _message("gw-a", ("S1", 1, 5, 4.0)))  # another time
        publish(mqtt_options, topic, _message("gw-a", ("S1", 2, 1, 9.9)))  # another value
        # Twice in one message, disagreeing: the first is stored, the second kept aside.
        publish(mqtt_options, topic, _message("gw-a", ("S1", 3, 2, 4.2), ("S1", 3, 2, 4.3)))
        wait_for(lambda: worker.stats.messages == 5)
        wait_for(lambda: len(_kept(conn)) == 3, what="three conflicts")
    assert _stored(conn) == [("S1", 1, 4.0), ("S1", 2, 4.1), ("S1", 3, 4.2)]
    assert _kept(conn) == [
        ("S1", 1, "conflicting_resend"),
        ("S1", 2, "conflicting_resend"),
        ("S1", 3, "conflicting_resend"),
    ]
    reasons = [
        r[0] for r in conn.execute("SELECT reason FROM quarantined_readings ORDER BY seq, id")
    ]
    assert reasons[0] == (
        "conflicting resend: 'S1' seq 1 is stored as measured at 2026-11-22T10:00:00+00:00, "
        "this one says 2026-11-22T10:05:00+00:00; the first stays the record"
    )
    assert reasons[1] == (
        "conflicting resend: 'S1' seq 2 is stored with temperature_c 4.1, this one 9.9; the "
        "first stays the record"
    )
    assert worker.stats.duplicates == 1
    assert worker.stats.kept_aside == {"conflicting_resend": 3}
    assert _metric(worker, "conflicting_resend") == 3
    # Never released: the record already holds that (sensor, seq).
    assert release_quarantine(db_url) == (0, 0)


@pytest.mark.parametrize("minutes", [0, 3])
def test_two_workers_given_disagreeing_copies_at_once_store_one(
    db_url: str, conn: Conn, minutes: int
) -> None:
    """The first worker holds S1's row from the statement that records its numbers to its
    commit; the second waits there (or, for the same time, on the readings' key), then sees
    the first's numbers, undoes its writes and keeps its copy aside."""
    _two_sites(conn)

    def envelope(temp: float, at: int) -> Envelope:
        r: ReadingDoc = {"sensor": "S1", "seq": 7, "ts": T0 + at * M, "temperature_c": temp}
        return Envelope(
            "r/v1/s1/gw-a/telemetry",
            "s1",
            "gw-a",
            [r],
            _lines([r]),
        )

    first = psycopg.connect(db_url)
    second = psycopg.connect(db_url)
    done = threading.Event()
    outcome: list[Any] = []

    def other() -> None:
        outcome.append(Store().write(second, [envelope(9.0, minutes)]))
        done.set()

    try:
        with first.transaction():
            row = first.execute(q.NEW_BATCH).fetchone()
            assert row is not None
            with first.cursor().copy(q.COPY_READINGS) as copy:
                copy.write("".join(envelope(4.0, 0).lines).encode())
            span = {"first": T0 - timedelta(days=1), "last": T0 + timedelta(days=1)}
            assert first.execute(q.UPDATE_LATEST, {"batch_id": row[0], **span}).fetchall() == []
            thread = threading.Thread(target=other)
            thread.start()
            assert not done.wait(0.5)  # waiting on the first
        thread.join(10)
        assert done.is_set()
    finally:
        first.close()
        second.close()
    (out,) = outcome
    assert (out.stored, out.kept_aside) == (0, {"conflicting_resend": 1})
    assert _stored(conn) == [("S1", 7, 4.0)]
    assert conn.execute("SELECT seq, temperature_c FROM sensor_latest").fetchall() == [(7, 4.0)]


def test_a_resend_whose_reading_was_removed_behind_the_records_back_is_kept_aside(
    db_url: str, conn: Conn
) -> None:
    """A reading deleted with the triggers off leaves its number recorded: its resend is not
    stored in its place (someone removed a record), it is kept aside and says why."""
    _two_sites(conn)
    r: ReadingDoc = {"sensor": "S1", "seq": 1, "ts": T0, "temperature_c": 4.0}
    env = Envelope("r/v1/s1/gw-a/telemetry", "s1", "gw-a", [r], _lines([r]))
    with psycopg.connect(db_url) as c:
        Store().write(c, [env])
    conn.execute("ALTER TABLE readings DISABLE TRIGGER readings_no_update_delete")
    conn.execute("DELETE FROM readings")
    conn.execute("ALTER TABLE readings ENABLE TRIGGER readings_no_update_delete")
    again = Envelope("r/v1/s1/gw-a/telemetry", "s1", "gw-a", [r], _lines([r]))
    with psycopg.connect(db_url) as c:
        out = Store().write(c, [again])
    assert (out.stored, out.kept_aside) == (0, {"conflicting_resend": 1})
    reason = conn.execute("SELECT reason FROM quarantined_readings").fetchone()
    assert reason is not None
    assert "recorded as stored, but its reading is not in the record" in reason[0]


@pytest.mark.parametrize("releasing", [False, True])
def test_a_sequence_number_stored_without_its_claim_is_still_found(
    conn: Conn, db_url: str, releasing: bool
) -> None:
    """Readings written by other means than ingest (a migration, a restore) have no claim:
    a resend of one of them fails on the key and is then looked up like any suspect."""
    _two_sites(conn)
    conn.execute("INSERT INTO ingest_batches DEFAULT VALUES")
    conn.execute(
        "INSERT INTO readings (sensor_id, seq, ts, gateway, status, temperature_c, batch_id)"
        " VALUES ('S1', 1, %s, 'gw-a', 'ok', 4.0, 1)",
        (T0,),
    )
    r: ReadingDoc = {"sensor": "S1", "seq": 1, "ts": T0, "temperature_c": 4.0}
    s: ReadingDoc = {"sensor": "S1", "seq": 2, "ts": T0 + M, "temperature_c": 4.1}
    env = Envelope(
        "r/v1/s1/gw-a/telemetry",
        "s1",
        "gw-a",
        [r, s],
        _lines([r, s]),
    )
    with psycopg.connect(db_url) as c:
        out = Store().write(c, [env], releasing=releasing)
    assert (out.stored, out.duplicates) == (1, 1)
    assert _stored(conn) == [("S1", 1, 4.0), ("S1", 2, 4.1)]
