"""``coldtrail validate``: IQ, OQ and the signed pack, from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coldtrail.errors import ConfigError
from coldtrail.settings import Settings

Handler = Callable[[Settings, argparse.Namespace], None]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = sub.add_parser(
        "validate",
        help="IQ, OQ and the validation pack (exit 1 when anything deviates)",
        description="IQ records and checks what is installed; OQ runs the OQ cases of "
        "COMPLIANCE.md on simulated probes and a driven clock, each on a scratch database of "
        "its own (or on --database); pack does both, keeps the pack in the database to be "
        "signed (POST /api/v1/validation/{id}/signatures) and writes its JSON and PDF.",
    )
    vsub = validate.add_subparsers(dest="validate_command", required=True)

    iq = vsub.add_parser("iq", help="what is installed, checked against this release")
    _common(iq)
    iq.set_defaults(func=cmd_iq)

    oq = vsub.add_parser("oq", help="run the OQ cases")
    _common(oq)
    _oq_options(oq)
    oq.set_defaults(func=cmd_oq)

    pack = vsub.add_parser("pack", help="IQ and OQ, kept in the database, as JSON and PDF")
    _common(pack)
    _oq_options(pack)
    pack.add_argument("--run-by", default="coldtrail", help="who runs it (named in the pack)")
    pack.set_defaults(func=cmd_pack)

    show = vsub.add_parser("show", help="a stored pack with its signatures, as JSON and PDF")
    show.add_argument("run", type=int)
    show.add_argument("--out", type=Path, default=Path("."), help="folder for the files")
    show.set_defaults(func=cmd_show)

    listed = vsub.add_parser("list", help="the stored packs, newest first (JSON lines)")
    listed.set_defaults(func=cmd_list)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--site", default=None, help="the site validated (default: every site)")
    p.add_argument("--profiles", type=Path, default=None, help="a folder of the site's profiles")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the files written")


def _oq_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--case", action="append", help="only these cases (repeatable): OQ-01 ...")
    p.add_argument(
        "--database",
        default=None,
        help="run on this database (a validation instance) instead of scratch copies; its "
        "site (--site) gives the contacts and profile",
    )
    p.add_argument("--profile", default=None, help="compliance profile (default: the site's)")
    p.add_argument(
        "--verbose", action="store_true", help="the stages' own log lines too (alarms raised...)"
    )


def cmd_iq(settings: Settings, args: argparse.Namespace) -> None:
    found = _installed(settings, args)
    _write(args.out / "iq.json", json.dumps(found, ensure_ascii=False, indent=1, default=str))
    for check in found["checks"]:
        print(f"{'pass' if check['passed'] else 'FAIL'}  {check['text']}: {check['observed']}")
    if not found["passed"]:
        raise SystemExit(1)


def cmd_oq(settings: Settings, args: argparse.Namespace) -> None:
    results, _ = _oq(settings, args)
    _write(args.out / "oq.json", json.dumps([r.__dict__ for r in results], ensure_ascii=False,
                                            indent=1, default=str))  # fmt: skip
    if not all(r.passed for r in results):
        raise SystemExit(1)


def cmd_pack(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.erp import changes
    from coldtrail.validation import pack

    started = datetime.now(UTC)
    installed = _installed(settings, args)
    results, target = _oq(settings, args)
    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        since = pack.last_validated(conn, args.site)
        changed = changes.list_changes(conn, since, args.site)
        doc = pack.document(
            iq=installed, oq=results, target=target, started=started,
            finished=datetime.now(UTC), run_by=args.run_by, changes_since=since, changed=changed,
        )  # fmt: skip
        run_id, sha = pack.store(conn, doc, args.run_by)
    _files(args.out, run_id, doc, sha, [])
    print(f"validation run {run_id}: {'passed' if doc['passed'] else 'DEVIATIONS'} "
          f"({len(doc['deviations'])}); SHA-256 {sha}")  # fmt: skip
    if not doc["passed"]:
        raise SystemExit(1)


def cmd_show(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.validation import pack

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        doc, sha, signed = pack.load(conn, args.run)
    _files(args.out, args.run, doc, sha, signed)


def cmd_list(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.validation import pack

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        for run in pack.runs(conn):
            print(json.dumps(run, default=str))


def _files(out: Path, run_id: int, doc: dict[str, Any], sha: str, signed: list[Any]) -> None:
    from coldtrail.validation import pack

    _write(out / f"validation-{run_id}.json", pack.as_json(doc, sha, signed, run_id).decode())
    _write(out / f"validation-{run_id}.pdf", pack.render(doc, sha, signed, run_id))


def _installed(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """The IQ record of the installation the settings name."""
    from coldtrail import db, services
    from coldtrail.validation import iq

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        return iq.record(conn, settings, _mqtt(settings, services), _profiles(settings, args),
                         args.site, datetime.now(UTC).date())  # fmt: skip


def _oq(settings: Settings, args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    """The cases' results, and what they ran against (for the pack)."""
    from coldtrail import db, services
    from coldtrail.compliance import DEFAULT
    from coldtrail.rules.notifiers import build_notifiers
    from coldtrail.validation import oq
    from coldtrail.validation.harness import Target

    url = settings.require_database_url()
    found = _profiles(settings, args)
    chosen = args.profile
    if chosen is None and args.site:
        with db.connect(args.database or url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT coalesce(compliance_profile, %s) FROM sites WHERE id = %s",
                (DEFAULT, args.site),
            ).fetchone()
        if row is None:
            raise ConfigError(f"no site {args.site} in the database")
        chosen = row[0]
    chosen = chosen or DEFAULT
    if chosen not in found:
        raise ConfigError(f"no compliance profile {chosen}; known: {', '.join(sorted(found))}")
    if args.database and not args.site:
        raise ConfigError("--database needs --site: the site whose contacts the cases call")
    options = _mqtt(settings, services)
    if options is None:
        raise ConfigError("COLDTRAIL_MQTT_URL is not set: the OQ runs through the broker")
    with tempfile.TemporaryDirectory(prefix="coldtrail-oq-") as work:
        target = Target(
            database_url=args.database or url, mqtt=options, topic_root="ctoq", site=args.site
            or "oq", profile=found[chosen],
            notifiers=build_notifiers(services.notifier_settings(settings)), workdir=Path(work),
            scratch=args.database is None, admin_url=url,
        )  # fmt: skip
        stages = logging.getLogger("coldtrail")
        level = stages.level
        if not args.verbose:
            # The cases raise alarms and cut links on purpose: their log lines are expected.
            stages.setLevel(logging.ERROR)
        try:
            return oq.run_cases(target, args.case, report=_said), oq.target_summary(target)
        finally:
            stages.setLevel(level)


def _said(result: Any) -> None:
    print(f"{'pass' if result.passed else 'FAIL'}  {result.id}  {result.seconds:6.1f} s  "
          f"{result.title}", flush=True)  # fmt: skip
    for deviation in result.deviations:
        print(f"      {deviation}", flush=True)


def _profiles(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from coldtrail.compliance import profiles

    return profiles(args.profiles or settings.compliance_profiles_dir)


def _mqtt(settings: Settings, services: Any) -> Any:
    return services.mqtt_options(settings) if settings.mqtt_url else None


def _write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else (data + "\n").encode())
    print(f"wrote {path}", file=sys.stderr)
