"""Peak memory of serving a record of a million readings: a 174-day shipment, 4 probes at
1-minute readings (1 002 140 rows).

Each form is produced in a fresh process (spawned, so nothing is shared with this one) the
way the API sends it, chunk by chunk to /dev/null, and that process's peak resident set is
read from the kernel (ru_maxrss). Two references in the same run: a process that only imports
ColdTrail and connects (the floor), and the same form built whole in memory (what the API did
before records were streamed). Goal (issue 22, row 6): memory flat in the size of the record,
so that a few auditors downloading a year at once can't take the API down.

    .venv/bin/python -m bench.record_memory [--days 174] [--probes 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import time
from datetime import timedelta
from typing import Any

import psycopg

from bench._db import backend, drop_database, make_database
from bench.record import _fill
from coldtrail.api import record as rec

FORMS: tuple[rec.Format, ...] = ("json", "csv", "epcis", "pdf")


def _child(url: str, fmt: str, mode: str, now: Any, out: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        start = time.perf_counter()
        size = 0
        if mode != "floor":
            record = rec.shipment_record(conn, "SH1", now)
            with open(os.devnull, "wb") as sink:
                if mode == "whole":
                    body = b"".join(rec.chunks(record, fmt))  # type: ignore[arg-type]
                    size = len(body)
                    sink.write(body)
                else:
                    for chunk in rec.chunks(record, fmt):  # type: ignore[arg-type]
                        size += len(chunk)
                        sink.write(chunk)
        seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.put((peak_kb / 1024, size, seconds))


def _measure(url: str, fmt: str, mode: str, now: Any) -> tuple[float, int, float]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_child, args=(url, fmt, mode, now, results))
    proc.start()
    got: tuple[float, int, float] = results.get(timeout=600)
    proc.join(60)
    return got


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--days", type=int, default=174)
    p.add_argument("--probes", type=int, default=4)
    args = p.parse_args()
    name = f"bench_record_memory_{os.getpid()}"
    url = make_database(name)
    try:
        with psycopg.connect(url) as conn:
            end = _fill(conn, args.days, args.probes)
        now = end + timedelta(hours=1)
        floor_mb, _, _ = _measure(url, "csv", "floor", now)
        rows = []
        for fmt in FORMS:
            streamed = _measure(url, fmt, "streamed", now)
            whole = _measure(url, fmt, "whole", now)
            rows.append((fmt, streamed, whole))
    finally:
        drop_database(name)
    readings = args.days * 24 * 60 * args.probes - 100
    print(f"{args.days}-day shipment, {args.probes} probes, about {readings} readings")
    print(f"  floor (imports and a connection): {floor_mb:.0f} MB")
    for fmt, (s_mb, size, s_s), (w_mb, _, w_s) in rows:
        print(
            f"  {fmt:5s} {size / 1e6:7.1f} MB sent: streamed peak {s_mb:6.0f} MB ({s_s:5.1f} s), "
            f"whole peak {w_mb:6.0f} MB ({w_s:5.1f} s)"
        )
        print(
            f"RESULT name=record_memory backend={backend()} format={fmt} readings={readings} "
            f"bytes={size} peak_rss_mb={s_mb:.0f} above_floor_mb={s_mb - floor_mb:.0f} "
            f"seconds={s_s:.2f} reference=whole_in_memory reference_peak_rss_mb={w_mb:.0f} "
            f"ratio={(s_mb - floor_mb) / max(1.0, w_mb - floor_mb):.2f}"
        )


if __name__ == "__main__":
    main()
