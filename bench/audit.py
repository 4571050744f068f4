"""The audit trail's price: GxP writes with the hash-chained trail against the same writes
without it, and how fast the chain is verified.

Writers register lots (one transaction each, as the API does) from two connections at
once, since the chain's head orders all writers. Reference, in the same run and on the same
tables: the same writes with triggers switched off (session_replication_role = replica), so
no audit row is written. Then the trail is grown in bulk and verified end to end.

    .venv/bin/python -m bench.audit [--lots 4000] [--writers 2] [--trail 300000]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bench._db import drop_database, make_database
from coldtrail.erp import audit
from coldtrail.erp.products import Product, Profile, register_lot, upsert_product, upsert_profile

GTIN = "09501101530003"


Conn = psycopg.Connection[tuple[Any, ...]]


def _writers(
    url: str, prefix: str, lots: int, writers: int, setup: Callable[[Conn], object]
) -> float:
    per = lots // writers
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers + 1)

    def write(n: int) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                setup(conn)
                barrier.wait()
                for i in range(per):
                    register_lot(conn, "bench", GTIN, f"{prefix}{n}-{i}")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return per * writers / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lots", type=int, default=4000)
    p.add_argument("--trail", type=int, default=300_000)
    p.add_argument("--writers", type=int, default=2)
    args = p.parse_args()
    name = f"bench_audit_{os.getpid()}"
    url = make_database(name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            upsert_profile(conn, "bench", Profile("2-8", "2-8 °C", 2.0, 8.0))
            upsert_product(conn, "bench", Product(GTIN, "Bench product", "2-8"))
        untouched = lambda conn: None  # noqa: E731
        no_triggers = lambda conn: conn.execute(  # noqa: E731
            "SET session_replication_role = replica"
        )
        # Alternate, so neither side gets the warmer cache throughout.
        ours, reference = [], []
        for round_ in range(2):
            ours.append(_writers(url, f"A{round_}-", args.lots, args.writers, untouched))
            reference.append(_writers(url, f"R{round_}-", args.lots, args.writers, no_triggers))
        with psycopg.connect(url, autocommit=True) as conn:
            start = time.perf_counter()
            conn.execute(
                "INSERT INTO audit_log (actor, action, record_type, record_id, new_value) "
                "SELECT 'bench', 'export', 'report', g::text, jsonb_build_object('n', g) "
                "FROM generate_series(1, %s) g",
                (args.trail,),
            )
            append_s = time.perf_counter() - start
            start = time.perf_counter()
            check = audit.verify(conn)
            verify_s = time.perf_counter() - start
        assert check.ok, check.reason
    finally:
        drop_database(name)
    ours_rate, ref_rate = max(ours), max(reference)
    print(
        f"lot registrations, {args.writers} writers: {ours_rate:.0f}/s with the audit trail, "
        f"{ref_rate:.0f}/s without (best of 2 each)\n"
        f"bulk append: {args.trail / append_s:.0f} audit rows/s; "
        f"verify: {check.rows} rows in {verify_s:.2f} s"
    )
    print(
        f"RESULT name=audit gxp_writes_per_s={ours_rate:.0f} reference=no_audit_trail "
        f"ratio={ours_rate / ref_rate:.2f} verify_rows_per_s={check.rows / verify_s:.0f} "
        f"append_rows_per_s={args.trail / append_s:.0f}"
    )


if __name__ == "__main__":
    main()
