"""The live view through the API: ``GET /api/v1/live`` for 10 000 sensors, over real HTTP.

A scratch database holds one site with 200 cold rooms and 25 trucks of 2 compartments, 10 000
sensors placed in them, each with a latest reading, and 50 open excursions. The API runs as
``coldtrail api`` in a process of its own; this process asks for the live view 20 times after
a warm-up and prints the median and the slowest, from request to the last byte of the JSON.
Reference: the same live query alone through psycopg (ratio = API / query), i.e. what
authenticating and sending the answer cost on top of building it. Goal: under 100 ms.

    .venv/bin/python -m bench.live [--sensors 10000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx2
import psycopg

from bench._api import running_api
from bench._db import drop_database, make_database
from coldtrail.api import queries as api_q
from coldtrail.api.app import live_params

ROOMS = 200
TRUCKS = 25
RUNS = 20


def _fill(url: str, sensors: int, now: datetime) -> None:
    places = [f"CR{i:03d}" for i in range(ROOMS)]
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO sites (id, name) VALUES ('dc1', 'Bench DC')")
        with conn.cursor().copy(
            "COPY locations (id, site_id, parent_id, kind, name, temp_min_c, temp_max_c) FROM STDIN"
        ) as copy:
            for p in places:
                copy.write_row((p, "dc1", None, "cold_room", f"Cold room {p}", 2.0, 8.0))
            for t in range(TRUCKS):
                copy.write_row((f"TRK{t:02d}", "dc1", None, "vehicle", f"Truck {t}", None, None))
                for c in "AB":
                    comp = f"TRK{t:02d}-{c}"
                    copy.write_row((comp, "dc1", f"TRK{t:02d}", "compartment", comp, 2.0, 8.0))
                    places.append(comp)
        with conn.cursor().copy("COPY sensors (id, model, serial) FROM STDIN") as copy:
            for i in range(sensors):
                copy.write_row((f"S{i:05d}", "xy-md02", f"SN{i:05d}"))
        with conn.cursor().copy(
            "COPY sensor_assignments (sensor_id, location_id, position, valid) FROM STDIN"
        ) as copy:
            since = now - timedelta(days=30)
            for i in range(sensors):
                copy.write_row((f"S{i:05d}", places[i % len(places)], "", f"[{since},)"))
        with conn.cursor().copy(
            "COPY sensor_latest (sensor_id, seq, ts, received_at, gateway, status, temperature_c,"
            " humidity_pct, battery_pct) FROM STDIN"
        ) as copy:
            for i in range(sensors):
                ts = now - timedelta(seconds=i % 90)
                copy.write_row((f"S{i:05d}", 1000 + i, ts, ts, "gw-1", "ok", 4.5, 55.0, 90))
        for i in range(0, sensors, sensors // 50):
            conn.execute(
                "INSERT INTO excursions (sensor_id, location_id, started_at, start_seq,"
                " limit_min_c, limit_max_c, min_c, max_c)"
                " VALUES (%s, %s, %s, 1, 2, 8, 9, 9.5)",
                (f"S{i:05d}", places[i % len(places)], now - timedelta(minutes=20)),
            )
        conn.commit()
        conn.execute("ANALYZE")


def _median_and_max(runs: list[float]) -> tuple[float, float]:
    return statistics.median(runs) * 1000, max(runs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=10_000)
    args = parser.parse_args()
    name = f"bench_live_{uuid.uuid4().hex[:6]}"
    url = make_database(name)
    now = datetime.now(UTC)
    try:
        _fill(url, args.sensors, now)
        with running_api(url) as api, httpx2.Client(base_url=api.url, timeout=60) as http:
            api_runs: list[float] = []
            body = b""
            for n in range(RUNS + 1):
                start = time.perf_counter()
                resp = http.get("/api/v1/live", headers=api.headers)
                body = resp.content
                if n:  # the first is the warm-up
                    api_runs.append(time.perf_counter() - start)
                resp.raise_for_status()
            doc = resp.json()
        with psycopg.connect(url) as conn:
            sql_runs: list[float] = []
            for n in range(RUNS + 1):
                start = time.perf_counter()
                row = conn.execute(api_q.LIVE, live_params(now)).fetchone()
                if n:
                    sql_runs.append(time.perf_counter() - start)
    finally:
        drop_database(name)
    sensors = len(doc["sensors"])
    assert row is not None
    # The answer must be complete, and the query alone gives the same document.
    assert sensors == len(json.loads(row[0])) == args.sensors
    api_ms, api_max = _median_and_max(api_runs)
    sql_ms, sql_max = _median_and_max(sql_runs)
    print(
        f"live view, {sensors} sensors ({len(body) / 1e6:.1f} MB of JSON): median {api_ms:.1f} ms"
        f" through the API (slowest {api_max:.1f}), {sql_ms:.1f} ms for the query alone"
        f" (slowest {sql_max:.1f})"
    )
    print(
        f"RESULT name=live sensors={sensors} api_ms={api_ms:.1f} api_max_ms={api_max:.1f} "
        f"body_mb={len(body) / 1e6:.2f} reference=live_query_only reference_ms={sql_ms:.1f} "
        f"ratio={api_ms / sql_ms:.2f}"
    )


if __name__ == "__main__":
    main()
