"""``coldtrail dashboards provision | export | check``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from coldtrail.errors import ConfigError
from coldtrail.settings import Settings

if TYPE_CHECKING:
    from coldtrail.dashboards.provision import DataSource


def _datasource(settings: Settings, args: argparse.Namespace) -> DataSource:
    from coldtrail.dashboards.provision import DataSource

    secret = settings.grafana_db_url
    if secret is None:
        raise ConfigError(
            "COLDTRAIL_GRAFANA_DB_URL is not set: the read-only database URL as Grafana reaches "
            "it, e.g. postgresql://grafana:PASSWORD@timescaledb:5432/coldtrail?sslmode=disable"
        )
    parts = urlsplit(secret.get_secret_value())
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ConfigError("COLDTRAIL_GRAFANA_DB_URL must be postgresql://user:pass@host:port/db")
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    return DataSource(
        host=f"{parts.hostname}:{parts.port or 5432}",
        database=parts.path.lstrip("/") or "coldtrail",
        user=unquote(parts.username or "grafana"),
        password=unquote(parts.password or ""),
        sslmode=query.get("sslmode", "require"),
        timescaledb=args.timescaledb,
    )


def cmd_provision(settings: Settings, args: argparse.Namespace) -> None:
    from grafana_client.api import GrafanaApi

    from coldtrail.dashboards import boards
    from coldtrail.dashboards.provision import provision

    ds = _datasource(settings, args)
    token = settings.grafana_token.get_secret_value() if settings.grafana_token else None
    parts = urlsplit(args.grafana_url)
    credential: str | tuple[str, str] | None = token
    if credential is None and settings.grafana_password is not None:
        credential = (settings.grafana_user, settings.grafana_password.get_secret_value())
    if parts.username is not None:
        # Still honoured, but a command line is readable by every user of the machine.
        credential = (unquote(parts.username), unquote(parts.password or ""))
    if credential is None:
        raise ConfigError(
            "no Grafana credential: set COLDTRAIL_GRAFANA_TOKEN (a service account token) "
            "or COLDTRAIL_GRAFANA_PASSWORD (with COLDTRAIL_GRAFANA_USER, default admin)"
        )
    api = GrafanaApi.from_url(args.grafana_url, credential=credential, timeout=10.0)
    report = provision(api, ds, boards.ALL, update_password=args.update_password)
    print(json.dumps(dataclasses.asdict(report)))


def cmd_export(_: Settings, args: argparse.Namespace) -> None:
    from coldtrail.dashboards import boards
    from coldtrail.dashboards.grafana import to_json

    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for board in boards.ALL:
        path = args.out / f"{board.uid}.json"
        path.write_text(json.dumps(to_json(board), indent=2, ensure_ascii=False) + "\n")
        written.append(str(path))
    print(json.dumps({"written": written}))


def cmd_check(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.dashboards import boards
    from coldtrail.dashboards.check import run_all

    end = datetime.now(UTC)
    bad = 0
    ranges = args.range_hours or [1.0, 48.0, 840.0]
    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        for hours in ranges:
            role = args.role or None
            for run in run_all(conn, boards.ALL, end - timedelta(hours=hours), end, role):
                ok = run.columns_ok
                bad += not ok
                doc = {
                    "range_h": hours,
                    "dashboard": run.board,
                    "panel": run.panel.title,
                    "rows": len(run.rows),
                    "ms": round(run.seconds * 1000, 1),
                    "columns_ok": ok,
                }
                print(json.dumps(doc, ensure_ascii=False))
    if bad:
        raise SystemExit(1)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dash = sub.add_parser("dashboards", help="Grafana dashboards as code")
    dash_sub = dash.add_subparsers(dest="dashboards_command", required=True)
    prov = dash_sub.add_parser(
        "provision",
        help="create or update the data source, folder and dashboards in Grafana (idempotent)",
        description="The data source is COLDTRAIL_GRAFANA_DB_URL (a read-only database user); "
        "Grafana is reached with COLDTRAIL_GRAFANA_TOKEN or user:password in the URL.",
    )
    prov.add_argument("--grafana-url", required=True, help="e.g. http://grafana:3000")
    prov.add_argument("--timescaledb", action="store_true", help="the database has TimescaleDB")
    prov.add_argument(
        "--update-password", action="store_true", help="send the data source password again"
    )
    prov.set_defaults(func=cmd_provision)
    exp = dash_sub.add_parser("export", help="write each dashboard's Grafana JSON to a folder")
    exp.add_argument("--out", type=Path, required=True)
    exp.set_defaults(func=cmd_export)
    chk = dash_sub.add_parser(
        "check",
        help="run every panel's SQL on the database as the reporting role; JSON lines",
    )
    chk.add_argument(
        "--range-hours", type=float, action="append", help="repeatable (default: 1, 48, 840)"
    )
    chk.add_argument("--role", default="coldtrail_readonly", help="'' to run as yourself")
    chk.set_defaults(func=cmd_check)
