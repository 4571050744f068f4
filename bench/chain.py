"""How fast `audit verify` checks the readings' hash chain, against the server printing the
same rows and nothing else.

Stores ``--readings`` readings through ingest's own store (Store.write: the trust checks, the
COPY, the latest values, the link), ``--per-batch`` to a batch, in a database it creates and
drops. Then, alternating twice: verify end to end (every link recomputed from the rows), and the
reference, one ``COPY`` of every reading as its canonical line read to the end. Ends with one
RESULT line.

    .venv/bin/python -m bench.chain [--readings 2000000] [--per-batch 10000]
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from bench._db import backend, drop_database, make_database
from bench.ingest import _register
from coldtrail import readingchain as rc
from coldtrail.erp.chain import verify_readings
from coldtrail.ingest.copytext import copy_lines
from coldtrail.ingest.store import Envelope, Store
from coldtrail.messages import ReadingDoc

T0 = datetime(2026, 1, 1, tzinfo=UTC)
Conn = psycopg.Connection[tuple[Any, ...]]


def _fill(conn: Conn, readings: int, per_batch: int, sensors: int) -> float:
    """Readings of ``sensors`` sensors, registered and placed as bench.ingest does."""
    rng = np.random.default_rng(7)
    store = Store()
    start = time.perf_counter()
    for first in range(0, readings, per_batch):
        n = min(per_batch, readings - first)
        temps = np.round(rng.normal(5.0, 1.5, n), 2)
        docs: list[ReadingDoc] = [
            {
                "sensor": f"S{(first + i) % sensors:05d}",
                "seq": (first + i) // sensors + 1,
                "ts": T0 + timedelta(minutes=(first + i) // sensors),
                "temperature_c": float(temps[i]),
                "humidity_pct": 45.5,
            }
            for i in range(n)
        ]
        lines = copy_lines(docs, "gw-bench", time.time_ns() // 1000)
        env = Envelope("bench/v1/bench/gw-bench/telemetry", "bench", "gw-bench", docs, lines)
        out = store.write(conn, [env])
        conn.commit()
        if out.stored != n:
            raise RuntimeError(f"stored {out.stored} of {n}: {out}")
    return time.perf_counter() - start


def _print_all(conn: Conn) -> tuple[float, int]:
    """The reference: the server prints every reading as its canonical line, read to the end."""
    start = time.perf_counter()
    size = 0
    with conn.transaction():
        for stmt in rc.SESSION:
            conn.execute(stmt)
        with conn.cursor().copy(f"COPY (SELECT {rc.COLUMNS} FROM readings) TO STDOUT") as copy:  # noqa: S608
            for data in copy:
                size += len(data)
    return time.perf_counter() - start, size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--readings", type=int, default=2_000_000)
    p.add_argument("--per-batch", type=int, default=10_000)
    p.add_argument("--sensors", type=int, default=2_000)
    args = p.parse_args()
    name = f"bench_chain_{os.getpid()}"
    url = make_database(name)
    try:
        _register(url, args.sensors)
        with psycopg.connect(url) as conn:
            fill_s = _fill(conn, args.readings, args.per_batch, args.sensors)
        ours, reference = [], []
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(2):
                start = time.perf_counter()
                check = verify_readings(conn)
                ours.append(time.perf_counter() - start)
                if not check.ok or check.readings != args.readings:
                    raise RuntimeError(f"verify: {check}")
                took, size = _print_all(conn)
                reference.append(took)
    finally:
        drop_database(name)
    verify_s, ref_s = min(ours), min(reference)
    print(
        f"stored {args.readings} readings in {args.readings // args.per_batch} batches through "
        f"ingest's store in {fill_s:.1f} s\n"
        f"verify: {check.links} links, {check.readings} readings in {verify_s:.2f} s "
        f"(best of 2); the server printing them alone: {ref_s:.2f} s, {size / 1e6:.0f} MB"
    )
    print(
        f"RESULT name=chain_verify backend={backend()} "
        f"readings_per_s={args.readings / verify_s:.0f} "
        f"reference=server_print reference_per_s={args.readings / ref_s:.0f} "
        f"ratio={ref_s / verify_s:.2f}"
    )


if __name__ == "__main__":
    main()
