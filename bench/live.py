"""The live view through the API: ``GET /api/v1/live`` for 10 000 sensors, over real HTTP.

A scratch database holds one site with 200 cold rooms and 25 trucks of 2 compartments, 10 000
sensors placed in them, each with a latest reading, and 50 open excursions. While the API
runs, every sensor reports once a minute (167 new latest readings a second, written by a
thread of the bench's own), so each build finds sensors changed. The API runs as
``coldtrail api`` in a process of its own, twice:

- built for every request (``COLDTRAIL_LIVE_MAX_AGE_S=0``): 20 requests one after the other,
  after a warm-up; the median and the slowest, from request to the last byte of the JSON;
- as shipped (a document built at most every 2 s, served again in between and while the next
  is built): after one first request, which builds the first document and is timed apart,
  10 dashboards polling every second for 20 s, at once; the median, p99 and slowest.

Reference: the document built for every request (ratio = as shipped / built per request).
The builds alone through psycopg are printed too: from nothing (a new ``LiveBuilder``, as the
first build after start) and from the kept parts after 2 s of new readings (333 sensors
changed, the builds the API does in the background). Goal: under 100 ms.

    .venv/bin/python -m bench.live [--sensors 10000]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import psycopg

from bench._api import running_api
from bench._db import drop_database, make_database
from coldtrail.api.live import LiveBuilder

ROOMS = 200
TRUCKS = 25
RUNS = 20
DASHBOARDS = 10
POLL_S = 20.0


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


ADVANCE = """
UPDATE sensor_latest SET seq = seq + 1, ts = now(), received_at = now(),
                         temperature_c = 4.0 + (seq %% 10) / 10.0
WHERE sensor_id = ANY(%s)
"""


def _advance(conn: psycopg.Connection[Any], ids: list[str]) -> None:
    """New latest readings for ``ids``, as ingest writes them (one row per sensor)."""
    conn.execute(ADVANCE, (ids,))
    conn.commit()


@contextlib.contextmanager
def _reporting(url: str, sensors: int) -> Iterator[None]:
    """Every sensor reports once a minute while this runs, a tenth of a second's worth at a
    time, round the fleet."""
    stop = threading.Event()
    ids = [f"S{i:05d}" for i in range(sensors)]
    step = max(1, round(sensors / 600))

    def run() -> None:
        with psycopg.connect(url) as conn:
            at = 0
            while not stop.wait(0.1):
                _advance(conn, ids[at : at + step])
                at = (at + step) % sensors

    thread = threading.Thread(target=run, name="readings", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def _builds(url: str, sensors: int) -> tuple[float, float, int]:
    """Median ms of a build from nothing and of one from the kept parts after 2 s of new
    readings; and how many sensors each of the latter asked for."""
    ids = [f"S{i:05d}" for i in range(sensors)]
    changed = max(1, sensors // 30)  # 2 s of one reading a minute per sensor
    with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
        full: list[float] = []
        for n in range(RUNS + 1):
            start = time.perf_counter()
            LiveBuilder().build(conn, None, datetime.now(UTC))
            if n:
                full.append(time.perf_counter() - start)
        kept = LiveBuilder()
        kept.build(conn, None, datetime.now(UTC))
        runs: list[float] = []
        for n in range(RUNS):
            _advance(conn, ids[n * changed : (n + 1) * changed])
            start = time.perf_counter()
            kept.build(conn, None, datetime.now(UTC))
            runs.append(time.perf_counter() - start)
            assert kept.asked == changed, (kept.asked, changed)  # what it rebuilt: the changed
    return statistics.median(full) * 1000, statistics.median(runs) * 1000, changed


def _median_and_max(runs: list[float]) -> tuple[float, float]:
    return statistics.median(runs) * 1000, max(runs) * 1000


def _poll(url: str, headers: dict[str, str], seconds: float, offset: float) -> list[float]:
    """One dashboard: a request a second for ``seconds``, starting ``offset`` s in."""
    times: list[float] = []
    with httpx2.Client(base_url=url, timeout=60) as http:
        time.sleep(offset)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            http.get("/api/v1/live", headers=headers).raise_for_status()
            times.append(time.perf_counter() - start)
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - start)))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=10_000)
    args = parser.parse_args()
    name = f"bench_live_{uuid.uuid4().hex[:6]}"
    url = make_database(name)
    now = datetime.now(UTC)
    try:
        _fill(url, args.sensors, now)
        every = {"COLDTRAIL_LIVE_MAX_AGE_S": "0"}
        with (
            _reporting(url, args.sensors),
            running_api(url, settings=every) as api,
            httpx2.Client(base_url=api.url) as http,
        ):
            built_runs: list[float] = []
            body = b""
            for n in range(RUNS + 1):
                start = time.perf_counter()
                resp = http.get("/api/v1/live", headers=api.headers, timeout=60)
                body = resp.content
                if n:  # the first is the warm-up
                    built_runs.append(time.perf_counter() - start)
                resp.raise_for_status()
            doc = resp.json()
        with (
            _reporting(url, args.sensors),
            running_api(url) as api,
            ThreadPoolExecutor(DASHBOARDS) as pool,
        ):
            # The first request after start builds the first document: timed apart.
            with httpx2.Client(base_url=api.url, timeout=60) as http:
                start = time.perf_counter()
                http.get("/api/v1/live", headers=api.headers).raise_for_status()
                first_ms = (time.perf_counter() - start) * 1000
            polls = [
                pool.submit(_poll, api.url, api.headers, POLL_S, i / DASHBOARDS)
                for i in range(DASHBOARDS)
            ]
            served = sorted(t for p in polls for t in p.result())
        full_ms, kept_ms, changed = _builds(url, args.sensors)
    finally:
        drop_database(name)
    sensors = len(doc["sensors"])
    assert sensors == args.sensors  # the answer must be complete
    built_ms, built_max = _median_and_max(built_runs)
    p50, worst = _median_and_max(served)
    p99 = served[min(len(served) - 1, int(len(served) * 0.99))] * 1000
    print(
        f"live view, {sensors} sensors ({len(body) / 1e6:.1f} MB of JSON), each reporting once"
        f" a minute: built per request median {built_ms:.1f} ms (slowest {built_max:.1f});"
        f" as shipped, {DASHBOARDS} dashboards polling each second, {len(served)} requests:"
        f" p50 {p50:.1f} ms, p99 {p99:.1f} ms, slowest {worst:.1f} ms (after the first request"
        f" since start, which built the first document: {first_ms:.1f} ms). Builds alone:"
        f" from nothing {full_ms:.1f} ms, from the kept parts with {changed} sensors changed"
        f" {kept_ms:.1f} ms"
    )
    print(
        f"RESULT name=live sensors={sensors} api_ms={p50:.1f} api_p99_ms={p99:.1f} "
        f"api_max_ms={worst:.1f} first_ms={first_ms:.1f} body_mb={len(body) / 1e6:.2f} "
        f"build_ms={kept_ms:.1f} build_changed={changed} full_build_ms={full_ms:.1f} "
        f"reference=built_per_request reference_ms={built_ms:.1f} ratio={p50 / built_ms:.2f}"
    )


if __name__ == "__main__":
    main()
