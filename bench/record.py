"""The continuous record of a 30-day shipment: 4 probes at 1-minute readings (172 800 rows).

Builds the record and renders each form (JSON, CSV, PDF, EPCIS) the way the API does, on the
local PostgreSQL in a database it creates and drops; each form 5 times after a warm-up,
median printed. Goals (issue 7): JSON and CSV under 1 s, PDF under 3 s. Reference: the
same readings as CSV straight from the server (COPY ... TO STDOUT), which has none of the
record's work (ranges, gaps, statistics, calibration, hash); ratio = our CSV / raw COPY.

    .venv/bin/python -m bench.record [--days 30] [--probes 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench._db import backend, drop_database, make_database
from coldtrail.api import record as rec
from coldtrail.erp.masterdata import (
    Location,
    assign_sensor,
    upsert_location,
    upsert_sensor,
    upsert_site,
)
from coldtrail.erp.movements import arrive, create_shipment, depart, record_movement
from coldtrail.erp.products import Product, Profile, register_lot, upsert_product, upsert_profile

T0 = datetime(2026, 10, 1, tzinfo=UTC)
GTIN = "09501101530003"


def _fill(conn: psycopg.Connection[Any], days: int, probes: int) -> datetime:
    upsert_site(conn, "s1", "Bench site")
    upsert_location(conn, Location("CR", "s1", "cold_room", "Cold room", 2.0, 8.0))
    upsert_location(conn, Location("TRK", "s1", "vehicle", "Truck", 2.0, 8.0))
    upsert_location(conn, Location("TC", "s1", "compartment", "Front", 2.0, 8.0, parent_id="TRK"))
    for i in range(probes):
        upsert_sensor(conn, f"P{i}", "xy-md02", f"SN{i}")
        # All in the compartment the lot rides in: a shipment's record is of its lots' places.
        assign_sensor(conn, f"P{i}", "TC", T0 - timedelta(days=1), position=f"probe {i + 1}")
    upsert_profile(conn, "bench", Profile("2-8", "2-8 °C", 2.0, 8.0))
    upsert_product(conn, "bench", Product(GTIN, "Vaccine", "2-8"))
    lot = register_lot(conn, "bench", GTIN, "L1").id
    record_movement(conn, "bench", lot, "receiving", 100, T0 - timedelta(hours=2), to_location="CR")
    create_shipment(conn, "bench", "SH1", "TRK", "s1", "Clinic")
    record_movement(conn, "bench", lot, "loading", 100, T0, from_location="CR",
                    to_location="TC", shipment_id="SH1")  # fmt: skip
    depart(conn, "bench", "SH1", T0 + timedelta(minutes=5))
    end = T0 + timedelta(days=days)
    conn.execute("SELECT coldtrail_ensure_partitions(%s, %s)", (T0, end))
    batch = conn.execute("INSERT INTO ingest_batches DEFAULT VALUES RETURNING id").fetchone()
    assert batch is not None
    minutes = days * 24 * 60
    cols = (
        "COPY readings (sensor_id, seq, ts, received_at, gateway, status, temperature_c,"
        " humidity_pct, batch_id) FROM STDIN"
    )
    with conn.cursor().copy(cols) as copy:
        for i in range(probes):
            for m in range(minutes):
                if i == 0 and 1000 <= m < 1100:
                    continue  # a gap in the record
                ts = T0 + timedelta(minutes=m)
                temp = 9.5 if i == 1 and 5000 <= m < 5030 else 4.0 + (m % 97) / 40
                copy.write_row((f"P{i}", m + 1, ts, ts, "gw", "ok", temp, 50.0, batch[0]))
    record_movement(conn, "bench", lot, "delivery", 100, end, from_location="TC",
                    shipment_id="SH1")  # fmt: skip
    arrive(conn, "bench", "SH1", end)
    conn.commit()
    conn.execute("ANALYZE")
    return end


def _median_s(work: Callable[[], object], runs: int = 5) -> float:
    work()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--probes", type=int, default=4)
    args = p.parse_args()
    name = f"bench_record_{os.getpid()}"
    url = make_database(name)
    try:
        with psycopg.connect(url) as conn:
            end = _fill(conn, args.days, args.probes)
        with psycopg.connect(url, autocommit=True) as conn:
            now = end + timedelta(hours=1)
            record = rec.shipment_record(conn, "SH1", now)
            forms: tuple[rec.Format, ...] = ("json", "csv", "pdf", "epcis")
            sizes = {f: len(rec.render(record, f)) for f in forms}
            build_s = _median_s(lambda: rec.shipment_record(conn, "SH1", now))

            def served(fmt: rec.Format) -> Callable[[], bytes]:
                return lambda: rec.render(rec.shipment_record(conn, "SH1", now), fmt)

            seconds = {f: _median_s(served(f)) for f in forms}

            def raw_copy() -> int:
                size = 0
                query = (
                    "COPY (SELECT sensor_id, seq, ts, received_at, status, temperature_c,"
                    " humidity_pct FROM readings WHERE ts >= %s AND ts < %s"
                    " ORDER BY sensor_id, ts, seq) TO STDOUT WITH (FORMAT csv, HEADER)"
                )
                with conn.cursor().copy(query, (T0, end)) as copy:
                    for block in copy:
                        size += len(block)
                return size

            copy_s = _median_s(raw_copy)
    finally:
        drop_database(name)
    readings = record.summary.readings
    print(
        f"{args.days}-day shipment, {args.probes} probes, {readings} readings, "
        f"{len(record.gaps)} gap(s); building the record alone: {build_s * 1000:.0f} ms"
    )
    for f, s in seconds.items():
        print(f"  {f:5s} {s * 1000:7.0f} ms  {sizes[f] / 1e6:6.1f} MB")
    print(f"  raw COPY of the same readings as CSV: {copy_s * 1000:.0f} ms")
    print(
        f"RESULT name=record backend={backend()} readings={readings} "
        f"json_s={seconds['json']:.3f} "
        f"csv_s={seconds['csv']:.3f} pdf_s={seconds['pdf']:.3f} epcis_s={seconds['epcis']:.3f} "
        f"reference=raw_copy_csv reference_s={copy_s:.3f} ratio={seconds['csv'] / copy_s:.2f}"
    )


if __name__ == "__main__":
    main()
