"""Replay ("what if") over a month of a fleet: how long QA waits for a rule change's answer.

Fills a database with S sensors x D days of 1-minute readings (default 1 000 x 30: 43.2 M
rows, generated inside the server) in ten cold rooms with a warm spell now and then, then
replays the whole period with a stricter profile (two helper connections fetching ahead of
the judging), and, in the same run, fetches the same rows the same way on one connection
and judges nothing: ratio = fetch alone / replay. Goal: the default run under 60 s.

    .venv/bin/python -m bench.replay [--sensors 1000] [--days 30]
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime, timedelta

import psycopg

from bench._db import drop_database, make_database
from coldtrail.erp.masterdata import Location, upsert_location, upsert_site
from coldtrail.erp.products import Product, Profile, upsert_product, upsert_profile
from coldtrail.rules.fetch import fetch, load_places
from coldtrail.rules.ranges import RangePatch
from coldtrail.rules.replay import CHUNK, replay

T0 = datetime(2026, 9, 1, tzinfo=UTC)
ROOMS = 10


def _fill(url: str, sensors: int, days: int) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT coldtrail_ensure_partitions(%s, %s)",
                     (T0, T0 + timedelta(days=days + 1)))  # fmt: skip
        upsert_site(conn, "b", "Bench")
        upsert_profile(conn, "admin", Profile("2-8", "2-8 °C", 2.0, 8.0, alarm_delay_s=300))
        upsert_product(conn, "admin", Product("09501101530003", "Vaccine", "2-8"))
        for r in range(ROOMS):
            upsert_location(conn, Location(f"CR{r}", "b", "cold_room", f"Room {r}", 2.0, 8.0))
        conn.execute("UPDATE locations SET alarm_delay_s = 300")
        conn.execute(
            "INSERT INTO sensors (id, model, serial) SELECT 'S' || lpad(g::text, 5, '0'),"
            " 'xy-md02', 'SN' || g FROM generate_series(0, %s - 1) g",
            (sensors,),
        )
        conn.execute(
            "INSERT INTO sensor_assignments (sensor_id, location_id, valid)"
            " SELECT 'S' || lpad(g::text, 5, '0'), 'CR' || (g %% %s), tstzrange(%s, NULL)"
            " FROM generate_series(0, %s - 1) g",
            (ROOMS, T0 - timedelta(days=1), sensors),
        )
        conn.execute("INSERT INTO ingest_batches (id, readings) VALUES (0, 0)")
        # 20 minutes at 9 °C every 6 hours (shifted per sensor), 5-5.4 °C otherwise.
        conn.execute(
            "INSERT INTO readings (sensor_id, seq, ts, gateway, status, temperature_c, batch_id)"
            " SELECT 'S' || lpad(s::text, 5, '0'), m + 1, %s + make_interval(mins => m), 'gw',"
            " 'ok', CASE WHEN (m + 7 * s) %% 360 < 20 THEN 9.0 ELSE 5.0 + (m %% 5) / 10.0 END, 0"
            " FROM generate_series(0, %s - 1) s, generate_series(0, %s - 1) m",
            (T0, sensors, days * 1440),
        )
        conn.execute("VACUUM ANALYZE readings")
    return sensors * days * 1440


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sensors", type=int, default=1000)
    p.add_argument("--days", type=int, default=30)
    args = p.parse_args()
    name = f"bench_replay_{os.getpid()}"
    url = make_database(name)
    try:
        start = time.perf_counter()
        n = _fill(url, args.sensors, args.days)
        fill_s = time.perf_counter() - start
        end = T0 + timedelta(days=args.days)
        with (
            psycopg.connect(url) as conn,
            psycopg.connect(url) as h1,
            psycopg.connect(url) as h2,
        ):
            start = time.perf_counter()
            places = load_places(conn)
            sensors = [f"S{i:05d}" for i in range(args.sensors)]
            fetched = 0
            for k in range(0, len(sensors), CHUNK):
                chunk = sensors[k : k + CHUNK]
                fetched += fetch(conn, chunk, [T0] * len(chunk), end, places).size
            fetch_s = time.perf_counter() - start
            conn.rollback()
            start = time.perf_counter()
            report = replay(conn, T0, end, profiles={"2-8": RangePatch(temp_max_c=7.5)},
                            with_lots=False, helpers=(h1, h2))  # fmt: skip
            replay_s = time.perf_counter() - start
    finally:
        drop_database(name)
    print(
        f"{n} readings ({args.sensors} sensors x {args.days} days) filled in {fill_s:.0f} s; "
        f"fetch alone on one connection {fetch_s:.1f} s ({fetched} rows); replay {replay_s:.1f} s: "
        f"{report.readings} readings, {len(report.excursions)} excursions would be raised "
        f"({len(report.new)} new, {len(report.not_raised)} recorded not raised)"
    )
    print(
        f"RESULT name=replay readings={report.readings} seconds={replay_s:.1f} "
        f"readings_per_s={report.readings / replay_s:.0f} reference=fetch_only "
        f"ratio={fetch_s / replay_s:.2f}"
    )


if __name__ == "__main__":
    main()
