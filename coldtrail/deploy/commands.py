"""``coldtrail gateways ...``, ``coldtrail mosquitto-auth``, ``coldtrail tls self-signed``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from coldtrail.errors import ConfigError, TransportError
from coldtrail.settings import Settings


def _print(doc: object) -> None:
    print(json.dumps(doc, default=str, ensure_ascii=False))


def _broker(settings: Settings, commands: list[dict[str, object]]) -> str:
    """Send a gateway change to the running broker as its admin, when one is set up; says
    what happened, for the command's output (the change is in the database either way)."""
    from coldtrail.deploy import dynsec
    from coldtrail.services import admin_mqtt_options

    options = admin_mqtt_options(settings)
    if options is None:
        return (
            "not told: set COLDTRAIL_MQTT_URL and COLDTRAIL_MQTT_ADMIN_PASSWORD, or run "
            "`coldtrail mosquitto-auth` and restart the broker"
        )
    try:
        dynsec.send(options, commands)
    except TransportError as exc:
        return f"not told ({exc}): run `coldtrail mosquitto-auth` and restart the broker"
    return "updated"


def cmd_gateway_add(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.deploy import dynsec
    from coldtrail.deploy.mosquitto import GatewayAccount
    from coldtrail.erp import gateways

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        password = gateways.register(conn, args.gateway, args.site, args.name or args.gateway)
    account = GatewayAccount(args.gateway, args.site, "")
    broker = _broker(settings, dynsec.add_gateway(settings.mqtt_topic_root, account, password))
    _print(
        {
            "gateway": args.gateway,
            "site": args.site,
            "mqtt_username": args.gateway,
            "mqtt_client_id": args.gateway,
            "mqtt_password": password,
            "topic": f"{settings.mqtt_topic_root}/v1/{args.site}/{args.gateway}/telemetry",
            "broker": broker,
            "note": "the password is shown once; the gateway connects with its id as both "
            "user name and client id",
        }
    )


def cmd_gateway_rotate(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.deploy import dynsec
    from coldtrail.erp import gateways

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        password = gateways.rotate(conn, args.gateway)
    broker = _broker(settings, dynsec.set_password(args.gateway, password))
    _print({"gateway": args.gateway, "mqtt_password": password, "broker": broker})


def cmd_gateway_enable(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.deploy import dynsec
    from coldtrail.erp import gateways

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        gateways.set_disabled(conn, args.gateway, args.disabled)
    broker = _broker(settings, dynsec.set_disabled(args.gateway, args.disabled))
    _print({"gateway": args.gateway, "disabled": args.disabled, "broker": broker})


def cmd_gateway_move(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.deploy import dynsec
    from coldtrail.erp import gateways

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        old = gateways.move(conn, args.gateway, args.site)
    root = settings.mqtt_topic_root
    broker = _broker(settings, dynsec.move_gateway(root, args.gateway, old, args.site))
    _print(
        {
            "gateway": args.gateway,
            "site": args.site,
            "was": old,
            "topic": f"{root}/v1/{args.site}/{args.gateway}/telemetry",
            "broker": broker,
        }
    )


def cmd_gateway_list(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.erp import gateways

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        found = gateways.list_all(conn, args.gateway)
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
            ("admin", settings.mqtt_admin_password),
        )
        if secret is not None
    }
    if not passwords:
        raise ConfigError(
            "no service account: set COLDTRAIL_MQTT_INGEST_PASSWORD (and _OUTBOX_, _API_, _ADMIN_)"
        )
    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        gws = gateways.accounts(conn)
    root = settings.mqtt_topic_root
    accounts = mosquitto.service_accounts(root, passwords)
    accounts += [mosquitto.gateway_account(root, gw) for gw in gws]
    try:
        config = mosquitto.render_dynsec(accounts)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / mosquitto.DYNSEC_FILE
    # The broker's own user must write it too: the plugin keeps live changes in it.
    changed = mosquitto.write_atomically(path, config, mode=0o660)
    _print(
        {
            "dynamic_security": str(path),
            "services": sorted(passwords),
            "gateways": sum(not g.disabled for g in gws),
            "disabled_gateways": sum(g.disabled for g in gws),
            "changed": changed,
        }
    )


def cmd_env_init(_: Settings, args: argparse.Namespace) -> None:
    """A deployment's ``.env`` from the example, each placeholder replaced by a new random
    secret. The file is written once (mode 600); the secrets are never printed."""
    import os
    import secrets

    from coldtrail.settings import PLACEHOLDER

    if not args.example.is_file():
        raise ConfigError(f"no example file at {args.example}")
    generated: list[str] = []
    lines = []
    for line in args.example.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and PLACEHOLDER.search(value):
            # URL-safe: the values end up in URLs (the compose file's database and MQTT URLs).
            value = secrets.token_urlsafe(48 if "SECRET_KEY" in key else 32)
            generated.append(key.strip())
        lines.append(f"{key}{sep}{value}")
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(
            f"{args.out} exists: not overwritten (its secrets may be in use)"
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    _print({"written": str(args.out), "generated": generated})


def cmd_tls_self_signed(_: Settings, args: argparse.Namespace) -> None:
    from coldtrail.deploy.tls import self_signed

    try:
        files = self_signed(args.out, args.host, ca_dir=args.ca_out, days=args.days)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
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
    move = gw_sub.add_parser(
        "move", help="move a gateway to another site: it reports for the sensors placed there"
    )
    move.add_argument("gateway")
    move.add_argument("--site", required=True)
    move.set_defaults(func=cmd_gateway_move)
    ls = gw_sub.add_parser(
        "list",
        help="registered gateways: site, when last heard, sensors placed at their site, and "
        "what ingest kept aside from them or dead-lettered over the last day",
    )
    ls.add_argument("gateway", nargs="?", default=None)
    ls.set_defaults(func=cmd_gateway_list)

    auth = sub.add_parser(
        "mosquitto-auth",
        help="write the broker's dynamic-security file from the registered gateways",
        description="Service accounts (coldtrail-ingest, -outbox, -api, -admin) get the "
        "passwords in COLDTRAIL_MQTT_{INGEST,OUTBOX,API,ADMIN}_PASSWORD; each gateway may "
        "connect only as itself, publish only under its own topics and subscribe to nothing. "
        "The file is replaced atomically and read when the broker starts; with an admin "
        "account, `coldtrail gateways` changes a running broker directly.",
    )
    auth.add_argument("--out", type=Path, required=True, help="folder for dynamic-security.json")
    auth.set_defaults(func=cmd_mosquitto_auth)

    env = sub.add_parser(
        "env-init",
        help="write a deployment's .env from the example, every placeholder a new secret",
    )
    env.add_argument("--out", type=Path, default=Path(".env"))
    env.add_argument("--example", type=Path, default=Path("deploy/env.example"))
    # Needs no settings: it makes them (an unedited .env must not stop it).
    env.set_defaults(func=cmd_env_init, settings_free=True)

    tls = sub.add_parser("tls", help="TLS certificates for the broker")
    tls_sub = tls.add_subparsers(dest="tls_command", required=True)
    ss = tls_sub.add_parser(
        "self-signed", help="a private CA and a server certificate (ca.crt, server.crt/.key)"
    )
    ss.add_argument("--out", type=Path, required=True, help="the folder the broker mounts")
    ss.add_argument(
        "--ca-out",
        type=Path,
        default=None,
        help="where the CA's key goes (default: OUT-ca beside OUT); keep it off the broker",
    )
    ss.add_argument(
        "--host", action="append", required=True, help="name or address clients use (repeatable)"
    )
    ss.add_argument("--days", type=int, default=825)
    ss.set_defaults(func=cmd_tls_self_signed)
