"""Storage on both backends. Plain PostgreSQL: monthly partitions made ahead; TimescaleDB: a
hypertable of 7-day chunks with compression. On both, existing readings carried over by
`db upgrade`, and the 5-minute / 1-hour rollups equal to aggregating the readings directly,
late and repeated readings included, with no refresh in between."""

from __future__ import annotations

import random
import re
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from coldtrail import db
from coldtrail.api import record as rec
from coldtrail.messages import Reading, encode_telemetry, telemetry_topic
from coldtrail.mqtt import MqttOptions
from coldtrail.rules.engine import RulesEngine
from tests.conftest import (
    T0,
    TIMESCALEDB,
    RunningIngest,
    count_readings,
    ingest_worker,
    make_site,
    needs_timescaledb,
    plain_only,
    publish,
    store_readings,
    wait_for,
)

Conn = psycopg.Connection[tuple[Any, ...]]

DIRECT = """
SELECT sensor_id, {bucket} AS bucket, count(*), count(temperature_c), min(temperature_c),
       max(temperature_c), avg(temperature_c)
FROM readings GROUP BY 1, 2 ORDER BY 1, 2
"""
BUCKETS = {
    "readings_5m": "date_bin('5 minutes', ts, timestamptz '2000-01-01 00:00:00+00')",
    "readings_1h": "date_trunc('hour', ts, 'UTC')",
}


@plain_only
def test_readings_are_partitioned_by_month_three_months_ahead(conn: Conn) -> None:
    parts = [
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'readings'::regclass ORDER BY 1"
        )
    ]
    assert "readings_default" in parts
    months = [p for p in parts if p != "readings_default"]
    assert len(months) >= 4  # last month, this month, and three ahead
    created = conn.execute(
        "SELECT coldtrail_ensure_partitions(now() - interval '2 years', now())"
    ).fetchone()
    assert created is not None
    assert created[0] >= 20  # the months back to two years ago
    conn.commit()
    make_site(conn, {"S1": "CR"})
    old = T0.replace(year=T0.year - 1)
    store_readings(conn, [("S1", 1, old, 4.0)])
    where = conn.execute(
        "SELECT tableoid::regclass::text FROM readings WHERE sensor_id = 'S1'"
    ).fetchone()
    assert where == (f"readings_{old:%Y_%m}",)


@needs_timescaledb
def test_readings_are_a_compressed_hypertable_of_week_chunks(conn: Conn) -> None:
    row = conn.execute(
        "SELECT d.time_interval FROM timescaledb_information.dimensions d "
        "WHERE d.hypertable_name = 'readings' AND d.column_name = 'ts'"
    ).fetchone()
    assert row == (timedelta(days=7),)
    jobs = {
        (r[0], r[1])
        for r in conn.execute(
            "SELECT proc_name, hypertable_name FROM timescaledb_information.jobs "
            "WHERE hypertable_name IS NOT NULL"
        )
    }
    assert ("policy_compression", "readings") in jobs
    realtime = conn.execute(
        "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates "
        "ORDER BY 1"
    ).fetchall()
    assert realtime == [("readings_1h", False), ("readings_5m", False)]


def test_rollups_equal_aggregating_the_readings_late_and_repeated_ones_included(
    conn: Conn, db_url: str
) -> None:
    make_site(conn, {"S1": "CR", "S2": "CR"})
    if TIMESCALEDB:
        # This test makes the refreshes itself. TimescaleDB 2.28 fails a refresh whose window
        # overlaps one its policy job is making (LockNotAvailable: CI met it), so this
        # database's job scheduler stops first; stopping waits for a job in flight to end.
        assert conn.execute("SELECT _timescaledb_functions.stop_background_workers()").fetchone()
    rng = random.Random(7)
    rows = []
    for i in range(600):
        sensor = ("S1", "S2")[i % 2]
        # Inside 2-8 °C: this test is about the rollups, not excursions.
        temp = None if rng.random() < 0.05 else round(rng.uniform(2.5, 7.5), 2)
        rows.append((sensor, i // 2 + 1, T0 + timedelta(seconds=37 * (i // 2)), temp))
    # Stored in shuffled batches: late readings land in buckets already rolled up.
    rng.shuffle(rows)
    engine = RulesEngine(db_url)
    for start in range(0, len(rows), 97):
        store_readings(conn, rows[start : start + 97])
        if TIMESCALEDB and start == 97 * 3:
            # A refresh half-way, as the policy's job makes one whenever it runs: the later
            # batches' late readings fall into buckets already materialised.
            for view in BUCKETS:
                conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
        with psycopg.connect(db_url) as rules_conn:
            engine.process_pending(rules_conn)
    with psycopg.connect(db_url) as rules_conn:
        assert engine.process_pending(rules_conn) == 0  # nothing is rolled up twice
    if TIMESCALEDB:
        # Late readings in buckets a refresh already materialised (TimescaleDB's job may run
        # one at any time) count from the next refresh, which its policy runs every minute.
        for view in BUCKETS:
            conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
    for view, bucket in BUCKETS.items():
        direct = conn.execute(DIRECT.format(bucket=bucket)).fetchall()
        rolled = conn.execute(
            f"SELECT sensor_id, bucket, readings, n_c, min_c, max_c, mean_c FROM {view}"  # noqa: S608
            " ORDER BY 1, 2"
        ).fetchall()
        assert len(rolled) == len(direct)
        for got, want in zip(rolled, direct, strict=True):
            assert got[:6] == want[:6]
            assert got[6] == pytest.approx(want[6], rel=1e-12)


def test_existing_readings_move_into_partitions_or_chunks_and_rollups(
    empty_db_url: str,
) -> None:
    db.upgrade(empty_db_url, target=3)
    with psycopg.connect(empty_db_url) as conn:
        # Master data as it was written at migration 3 (make_site writes today's columns).
        conn.execute("INSERT INTO sites (id, name) VALUES ('s1', 'Test site')")
        conn.execute(
            "INSERT INTO locations (id, site_id, kind, name, temp_min_c, temp_max_c)"
            " VALUES ('CR', 's1', 'cold_room', 'Cold room', 2, 8)"
        )
        conn.execute("INSERT INTO sensors (id, model, serial) VALUES ('S1', 'xy-md02', 'SN-S1')")
        conn.execute(
            "INSERT INTO sensor_assignments (sensor_id, location_id, valid)"
            " VALUES ('S1', 'CR', tstzrange(%s, NULL))",
            (T0,),
        )
        batch = store_readings(
            conn, [("S1", n, T0 + timedelta(minutes=n), 5.0 + n) for n in range(1, 4)]
        )
        conn.execute("UPDATE ingest_batches SET processed_at = now() WHERE id = %s", (batch,))
        conn.commit()
    db.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute(
            "SELECT count(*), count(DISTINCT tableoid) FROM readings"
        ).fetchone() == (3, 1)
        if TIMESCALEDB:
            # Moving them into a chunk truncates the table, which readings' immutability
            # refused: every upgrade of a database holding readings failed.
            assert conn.execute(
                "SELECT count(*) FROM timescaledb_information.chunks "
                "WHERE hypertable_name = 'readings'"
            ).fetchone() == (1,)
        else:
            assert conn.execute(
                "SELECT relkind FROM pg_class WHERE relname = 'readings'"
            ).fetchone() == ("p",)
        assert conn.execute("SELECT sum(readings), max(max_c) FROM readings_1h").fetchone() == (
            3,
            8.0,
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM readings")


@needs_timescaledb
def test_compressed_chunks_take_late_readings_store_resends_once_and_read_the_same(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    """Chunks compressed (as the policy does after 30 days), then a backlog arrives into them
    and a gateway re-sends old messages: the late readings are stored, the re-sent ones once,
    and the record and the rules read compressed and uncompressed chunks alike."""
    start = T0 - timedelta(days=21)
    make_site(conn, {"S1": "CR"}, since=start - timedelta(days=1))
    late = set(range(300, 310))
    readings = [
        Reading(
            sensor="S1",
            seq=i,
            ts=start + timedelta(minutes=30 * i),
            temperature_c=9.5 if 100 <= i < 106 else 4.0 + (i % 9) / 4,
        )
        for i in range(1, 673)
    ]
    topic = telemetry_topic(topic_root, "s1", "gw-1")

    def send(batch: list[Reading]) -> None:
        for part in range(0, len(batch), 100):
            publish(mqtt_options, topic, encode_telemetry("gw-1", T0, batch[part : part + 100]))

    with RunningIngest(ingest_worker(db_url, mqtt_options, topic_root)):
        send([r for r in readings if r.seq not in late])
        wait_for(lambda: count_readings(conn) == 662, what="the first 662 readings")
        RulesEngine(db_url).process_pending(conn)
        compressed = conn.execute(
            "SELECT count(compress_chunk(c)) FROM show_chunks('readings') c"
        ).fetchone()
        assert compressed is not None
        assert compressed[0] >= 2
        send([r for r in readings if r.seq in late] + readings[:100])  # backlog, then a resend
        wait_for(lambda: count_readings(conn) == 672, what="the late readings")
        RulesEngine(db_url).process_pending(conn)
    stored = conn.execute(
        "SELECT count(*), count(DISTINCT seq) FROM readings WHERE seq <= 100"
    ).fetchone()
    assert stored == (100, 100)
    assert conn.execute(
        "SELECT count(*) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'readings' AND is_compressed"
    ).fetchone() == (compressed[0],)
    end = start + timedelta(days=15)
    on_compressed = rec.render(rec.location_record(conn, "CR", start, end, T0), "csv")
    conn.execute("SELECT count(decompress_chunk(c, true)) FROM show_chunks('readings') c")
    assert rec.render(rec.location_record(conn, "CR", start, end, T0), "csv") == on_compressed
    assert on_compressed.count(b"\n") == 1 + 672
    [excursion] = conn.execute("SELECT started_at, max_c FROM excursions").fetchall()
    assert excursion == (start + timedelta(minutes=30 * 100), 9.5)


@needs_timescaledb
def test_a_batch_is_looked_up_in_the_chunks_of_its_time_span_only(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    """Ingest and the rules look a batch's readings up by batch_id; on a hypertable that read
    every chunk's index, compressed ones' metadata too, a cost growing with the history. The
    batch now records the span of its readings' times, and the lookup is bounded by it."""
    make_site(conn, {"S1": "CR"}, since=T0 - timedelta(days=80))
    store_readings(conn, [("S1", n, T0 - timedelta(days=n), 5.0) for n in range(1, 71)])
    conn.execute("SELECT count(compress_chunk(c)) FROM show_chunks('readings') c")
    topic = telemetry_topic(topic_root, "s1", "gw-1")
    fresh = [Reading(sensor="S1", seq=100 + i, ts=T0 + timedelta(minutes=i), temperature_c=4.0)
             for i in range(3)]  # fmt: skip
    with RunningIngest(ingest_worker(db_url, mqtt_options, topic_root)):
        publish(mqtt_options, topic, encode_telemetry("gw-1", T0, fresh))
        wait_for(lambda: count_readings(conn) == 73, what="the new batch")
    batch = conn.execute(
        "SELECT id, first_ts, last_ts FROM ingest_batches WHERE readings = 3"
    ).fetchone()
    assert batch is not None
    assert (batch[1], batch[2]) == (T0, T0 + timedelta(minutes=2))

    def chunks_read(query: str, *params: Any) -> int:
        plan = [r[0] for r in conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {query}",
                                           params)]  # fmt: skip
        return len({m for line in plan if "never executed" not in line
                    for m in re.findall(r"(?<!compress)_hyper_\d+_\d+_chunk", line)})  # fmt: skip

    lookup = "SELECT sensor_id FROM readings WHERE batch_id = %s"
    assert chunks_read(lookup, batch[0]) >= 10
    assert chunks_read(lookup + " AND ts BETWEEN %s AND %s", *batch) == 1
