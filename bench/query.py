"""Read paths of the record: the live view's latest value for 10 000 sensors, and one sensor's
30 days at 1-minute resolution (43 200 readings), among other sensors' readings.

Uses the API's own live view builder, building from nothing (a new ``LiveBuilder`` each
time: the first build after start), and a plain range read of readings (partitioned by
month), on the local PostgreSQL in databases it creates and drops. Each runs 20 times after a
warm-up; the median is printed. Reference: the same build's cost per sensor over a 1 000-sensor
fleet in a database of its own (ratio = per-sensor cost at 10 000 / at 1 000: 1.0 is linear).

    .venv/bin/python -m bench.query [--sensors 10000] [--background 500000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench._db import backend, drop_database, make_database
from coldtrail.api import queries as api_q
from coldtrail.api.live import LiveBuilder, live_params

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)

SERIES = """
SELECT ts, seq, status::text, temperature_c, humidity_pct
FROM readings
WHERE sensor_id = %(sensor)s AND ts >= %(start)s AND ts < %(end)s
ORDER BY ts, seq
"""


def _server_ms(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> float:
    """The database's own execution time (EXPLAIN ANALYZE), without the client's decoding."""
    plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, params).fetchone()
    assert plan is not None
    return float(plan[0][0]["Execution Time"])


def _timed(
    conn: psycopg.Connection[Any],
    query: str,
    params: dict[str, Any],
) -> tuple[float, int]:
    conn.execute(query, params).fetchall()  # warm-up
    runs = []
    rows: list[Any] = []
    for _ in range(20):
        start = time.perf_counter()
        rows = conn.execute(query, params).fetchall()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs) * 1000, len(rows)


def _live_from_nothing(url: str) -> tuple[float, float, int]:
    """Median ms of a build from nothing, in the client and in the database (its two queries
    under EXPLAIN ANALYZE), and the number of sensors in the document."""
    with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
        doc = LiveBuilder().build(conn, None, NOW)  # warm-up
        runs = []
        for _ in range(20):
            start = time.perf_counter()
            LiveBuilder().build(conn, None, NOW)
            runs.append(time.perf_counter() - start)
        params = live_params(NOW)
        # The two queries of a build from nothing (it asks for every sensor's JSON).
        in_db = _server_ms(conn, api_q.LIVE_FRAME, params) + _server_ms(
            conn, api_q.LIVE_SITE_SENSORS, params
        )
    return statistics.median(runs) * 1000, in_db, len(json.loads(doc)["sensors"])


def _fill(url: str, sensors: int, background: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("SELECT set_config('coldtrail.ingest_batch', '0', false)")
        conn.execute(
            "SELECT coldtrail_ensure_partitions(%s::timestamptz - interval '60 days', %s)",
            (NOW, NOW),
        )
        with conn.cursor().copy("COPY sensors (id, model, serial) FROM STDIN") as copy:
            for i in range(sensors):
                copy.write_row((f"S{i:05d}", "xy-md02", f"SN{i:05d}"))
        with conn.cursor().copy(
            "COPY sensor_latest (sensor_id, seq, ts, received_at, gateway, status, temperature_c)"
            " FROM STDIN"
        ) as copy:
            for i in range(sensors):
                copy.write_row((f"S{i:05d}", 1, NOW, NOW, "gw-bench", "ok", 4.5))
        cols = "COPY readings (sensor_id, seq, ts, gateway, status, temperature_c) FROM STDIN"
        with conn.cursor().copy(cols) as copy:
            for m in range(30 * 24 * 60):  # the sensor under study: every minute for 30 days
                copy.write_row(("S00000", m + 1, NOW - timedelta(minutes=m), "gw-1", "ok", 5.0))
            per_sensor = max(1, background // max(sensors - 1, 1))
            n = 0
            for i in range(1, sensors):
                for k in range(per_sensor):
                    if n >= background:
                        break
                    ts = NOW - timedelta(minutes=3 * k)
                    copy.write_row((f"S{i:05d}", k + 1, ts, "gw-2", "ok", 4.0))
                    n += 1
        conn.commit()
        conn.execute("ANALYZE")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sensors", type=int, default=10_000)
    p.add_argument("--background", type=int, default=500_000)
    args = p.parse_args()
    name = f"bench_query_{os.getpid()}"
    small = f"bench_query_small_{os.getpid()}"
    url = make_database(name)
    small_url = make_database(small)
    try:
        _fill(url, args.sensors, args.background)
        _fill(small_url, 1000, 0)
        live_ms, live_db, live_rows = _live_from_nothing(url)
        small_ms, _, small_rows = _live_from_nothing(small_url)
        with psycopg.connect(url) as conn:
            series = {
                "sensor": "S00000",
                "start": NOW - timedelta(days=30),
                "end": NOW + timedelta(1),
            }
            series_ms, series_rows = _timed(conn, SERIES, series)
            series_db = _server_ms(conn, SERIES, series)
    finally:
        drop_database(name)
        drop_database(small)
    print(
        f"live view from nothing, {live_rows} sensors: median {live_ms:.1f} ms in the client, "
        f"{live_db:.1f} ms in the database ({small_rows} sensors: {small_ms:.1f} ms)"
    )
    print(
        f"one sensor's 30 days, {series_rows} readings: median {series_ms:.1f} ms in the "
        f"client, {series_db:.1f} ms in the database"
    )
    ratio = (live_ms / live_rows) / (small_ms / small_rows)
    print(
        f"RESULT name=query backend={backend()} live_sensors={live_rows} "
        f"live_ms={live_ms:.1f} "
        f"live_db_ms={live_db:.1f} series_readings={series_rows} series_ms={series_ms:.1f} "
        f"series_db_ms={series_db:.1f} "
        f"reference=live_1000_sensors reference_ms={small_ms:.1f} ratio={ratio:.2f}"
    )


if __name__ == "__main__":
    main()
