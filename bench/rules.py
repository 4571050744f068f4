"""Rule evaluation over stored readings: how fast the rules engine judges them.

Fills a database with S sensors x M minutes of 1-minute readings in one cold room (2-8 °C,
5-minute alarm delay), with a warm spell now and then, and times ``judge_sensors`` over all
of it from the start: the database fetch, the judging and the excursions it records. In the
same run it times the fetch alone (the same rows, same query shape) and the judging alone,
so the ratio says what judging adds to reading the rows.

    .venv/bin/python -m bench.rules [--sensors 200] [--minutes 1440]
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime, timedelta

import psycopg

from bench._db import drop_database, make_database
from coldtrail.erp.masterdata import Location, assign_sensor, upsert_location, upsert_site
from coldtrail.rules.conditions import Limits, find_conditions
from coldtrail.rules.engine import RulesEngine
from coldtrail.rules.fetch import fetch, load_places
from coldtrail.rules.judge import find_runs
from coldtrail.rules.ranges import with_ranges

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def _fill(url: str, sensors: int, minutes: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("SELECT set_config('coldtrail.ingest_batch', '0', false)")
        upsert_site(conn, "b", "Bench")
        upsert_location(conn, Location("CR", "b", "cold_room", "Cold room", 2.0, 8.0))
        conn.execute("UPDATE locations SET alarm_delay_s = 300")
        with conn.cursor().copy("COPY sensors (id, model, serial) FROM STDIN") as copy:
            for i in range(sensors):
                copy.write_row((f"S{i:04d}", "xy-md02", f"SN{i:04d}"))
        for i in range(sensors):
            assign_sensor(conn, f"S{i:04d}", "CR", T0 - timedelta(days=1))
        cols = "COPY readings (sensor_id, seq, ts, gateway, status, temperature_c) FROM STDIN"
        with conn.cursor().copy(cols) as copy:
            for i in range(sensors):
                for m in range(minutes):
                    # 20 minutes at 9-10 °C every 3 hours, a 2-minute door blip every hour.
                    warm = (m + 7 * i) % 180 < 20
                    blip = m % 60 in (30, 31)
                    t = 9.0 + (m % 10) / 10 if warm else (8.6 if blip else 5.0 + (m % 5) / 10)
                    copy.write_row((f"S{i:04d}", m + 1, T0 + timedelta(minutes=m), "gw", "ok", t))
        conn.commit()
        conn.execute("ANALYZE")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sensors", type=int, default=200)
    p.add_argument("--minutes", type=int, default=1440)
    args = p.parse_args()
    name = f"bench_rules_{os.getpid()}"
    url = make_database(name)
    try:
        _fill(url, args.sensors, args.minutes)
        sensors = [f"S{i:04d}" for i in range(args.sensors)]
        with psycopg.connect(url) as conn:
            start = time.perf_counter()
            cols = fetch(conn, sensors, [T0] * len(sensors), None, load_places(conn))
            fetch_s = time.perf_counter() - start
            start = time.perf_counter()
            data = with_ranges(cols, {})
            runs = len(find_runs(data.temperature, confirmed_only=True))
            find_conditions(data, Limits())
            judge_s = time.perf_counter() - start
            conn.rollback()
            engine = RulesEngine(url)
            start = time.perf_counter()
            with conn.transaction():
                engine.judge_sensors(conn, dict.fromkeys(sensors, T0))
            full_s = time.perf_counter() - start
            recorded = conn.execute("SELECT count(*) FROM excursions").fetchone()
    finally:
        drop_database(name)
    n = cols.size
    print(
        f"{n} readings of {args.sensors} sensors: fetch {fetch_s:.2f} s, judging alone "
        f"{judge_s:.2f} s ({n / judge_s:.0f}/s, {runs} excursions), whole engine {full_s:.2f} s "
        f"({recorded[0] if recorded else '?'} excursions recorded)"
    )
    print(
        f"RESULT name=rules readings_per_s={n / full_s:.0f} judge_only_per_s={n / judge_s:.0f} "
        f"reference=fetch_only ratio={fetch_s / full_s:.2f}"
    )


if __name__ == "__main__":
    main()
