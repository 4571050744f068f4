"""``coldtrail report shipment ID`` and ``coldtrail report location ID --from --to``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coldtrail.errors import ConfigError
from coldtrail.settings import Settings


def _write(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.api import record as rec
    from coldtrail.clock import SystemClock

    now = SystemClock().now()
    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        if args.report_kind == "shipment":
            record = rec.shipment_record(conn, args.id, now)
        else:
            record = rec.location_record(conn, args.id, args.since, args.until, now)
    if str(args.out) == "-":
        for chunk in rec.chunks(record, args.format):
            sys.stdout.buffer.write(chunk)
        return
    size = 0
    try:
        with args.out.open("wb") as out:
            for chunk in rec.chunks(record, args.format):
                size += out.write(chunk)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out}: {exc.strerror}") from exc
    print(
        json.dumps(
            {"file": str(args.out), "format": args.format, "bytes": size,
             "data_sha256": record.data_sha256}
        )
    )  # fmt: skip


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from coldtrail.cli import _timestamp

    report = sub.add_parser("report", help="the continuous temperature record")
    kinds = report.add_subparsers(dest="report_kind", required=True)
    kinds_help = (
        ("shipment", "a shipment, loading to delivery"),
        ("location", "a storeroom, vehicle or compartment over a period"),
    )
    for kind, what in kinds_help:
        p = kinds.add_parser(kind, help=what)
        p.add_argument("id")
        if kind == "location":
            p.add_argument("--from", dest="since", type=_timestamp, required=True)
            p.add_argument("--to", dest="until", type=_timestamp, required=True)
        p.add_argument("--format", choices=["json", "csv", "pdf", "epcis"], default="json")
        p.add_argument("-o", "--out", type=Path, required=True, help="file to write ('-': stdout)")
        p.set_defaults(func=_write)
