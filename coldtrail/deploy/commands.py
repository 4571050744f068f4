"""``coldtrail gateways ...``, ``coldtrail mosquitto-auth``, ``coldtrail tls self-signed``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from coldtrail.errors import ConfigError
from coldtrail.settings import Settings


def _print(doc: object) -> None:
    print(json.dumps(doc, default=str, ensure_ascii=False))


def cmd_gateway_add(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.erp import gateways

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        password = gateways.register(conn, args.gateway, args.site, args.name or args.gateway)
    _print(
        {
            "gateway": args.gateway,
            "site": args.site,
            "mqtt_username": args.gateway,
            "mqtt_password": password,
            "topic": f"{settings.mqtt_topic_root}/v1/{args.site}/{args.gateway}/telemetry",
            "note": "the password is shown once; run `coldtrail mosquitto-auth` and reload "
            "the broker (SIGHUP) for it to take effect",
        }
    )


def cmd_gateway_rotate(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.erp import gateways

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        password = gateways.rotate(conn, args.gateway)
    _print({"gateway": args.gateway, "mqtt_password": password})


def cmd_gateway_enable(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.erp import gateways

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        gateways.set_disabled(conn, args.gateway, args.disabled)
    _print({"gateway": args.gateway, "disabled": args.disabled})


def cmd_gateway_list(settings: Settings, _: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.erp import gateways

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        found = gateways.list_all(conn)
    _print([dataclasses.asdict(g) for g in found])


def cmd_mosquitto_auth(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.deploy import mosquitto
    from coldtrail.erp import gateways

    passwords = {
        role: secret.get_secret_value()
        for role, secret in (
            ("ingest", settings.mqtt_ingest_password),
            ("outbox", settings.mqtt_outbox_password),
            ("api", settings.mqtt_api_password),
        )
        if secret is not None
    }
    if not passwords:
        raise ConfigError(
            "no service account: set COLDTRAIL_MQTT_INGEST_PASSWORD (and _OUTBOX_, _API_)"
        )
    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        gws = gateways.enabled_accounts(conn)
    root = settings.mqtt_topic_root
    accounts = mosquitto.service_accounts(root, passwords)
    accounts += [mosquitto.gateway_account(root, gw) for gw in gws]
    try:
        passwd = mosquitto.render_passwd(accounts)
        acl = mosquitto.render_acl(accounts)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    args.out.mkdir(parents=True, exist_ok=True)
    changed = mosquitto.write_atomically(args.out / "passwd", passwd)
    changed |= mosquitto.write_atomically(args.out / "acl", acl)
    _print(
        {
            "passwd": str(args.out / "passwd"),
            "acl": str(args.out / "acl"),
            "services": sorted(passwords),
            "gateways": len(gws),
            "changed": changed,
        }
    )


def cmd_tls_self_signed(_: Settings, args: argparse.Namespace) -> None:
    from coldtrail.deploy.tls import self_signed

    files = self_signed(args.out, args.host, days=args.days)
    _print({k: str(v) for k, v in dataclasses.asdict(files).items()})


RULES_LAG = """
SELECT coalesce(extract(epoch FROM now() - min(committed_at)), 0)::float8
FROM ingest_batches WHERE processed_at IS NULL
"""


def cmd_health(settings: Settings, args: argparse.Namespace) -> None:
    """For a container health check: the database answers and the rules keep up."""
    from coldtrail import db

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        row = conn.execute(RULES_LAG).fetchone()
    lag = float(row[0]) if row else 0.0
    _print({"rules_lag_s": round(lag, 1), "max_s": args.max_rules_lag_s})
    if lag > args.max_rules_lag_s:
        raise SystemExit(1)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    health = sub.add_parser(
        "health", help="exit 1 if the rules engine lags (oldest unjudged batch) too far behind"
    )
    health.add_argument("--max-rules-lag-s", type=float, default=300.0)
    health.set_defaults(func=cmd_health)

    gw = sub.add_parser("gateways", help="edge gateways and their MQTT credentials")
    gw_sub = gw.add_subparsers(dest="gateways_command", required=True)
    add = gw_sub.add_parser("add", help="register a gateway; prints its MQTT password once")
    add.add_argument("gateway", help="gateway id: its MQTT user name and topic level")
    add.add_argument("--site", required=True)
    add.add_argument("--name", default=None)
    add.set_defaults(func=cmd_gateway_add)
    rotate = gw_sub.add_parser("rotate", help="a new MQTT password (printed once)")
    rotate.add_argument("gateway")
    rotate.set_defaults(func=cmd_gateway_rotate)
    for name, disabled in (("disable", True), ("enable", False)):
        p = gw_sub.add_parser(name, help=f"{name} a gateway's MQTT account")
        p.add_argument("gateway")
        p.set_defaults(func=cmd_gateway_enable, disabled=disabled)
    gw_sub.add_parser(
        "list", help="registered gateways, with when each was last heard"
    ).set_defaults(func=cmd_gateway_list)

    auth = sub.add_parser(
        "mosquitto-auth",
        help="write Mosquitto's password and ACL files from the registered gateways",
        description="Service accounts (coldtrail-ingest, -outbox, -api) get the passwords in "
        "COLDTRAIL_MQTT_{INGEST,OUTBOX,API}_PASSWORD; each enabled gateway may publish only "
        "under its own topic. Files are replaced atomically; reload Mosquitto with SIGHUP.",
    )
    auth.add_argument("--out", type=Path, required=True, help="folder for passwd and acl")
    auth.set_defaults(func=cmd_mosquitto_auth)

    tls = sub.add_parser("tls", help="TLS certificates for the broker")
    tls_sub = tls.add_subparsers(dest="tls_command", required=True)
    ss = tls_sub.add_parser(
        "self-signed", help="a private CA and a server certificate (ca.crt, server.crt/.key)"
    )
    ss.add_argument("--out", type=Path, required=True)
    ss.add_argument(
        "--host", action="append", required=True, help="name or address clients use (repeatable)"
    )
    ss.add_argument("--days", type=int, default=825)
    ss.set_defaults(func=cmd_tls_self_signed)
