"""IQ: what is installed, recorded and checked against what this release expects.

The record names the package, Python and the libraries that touch the data, PostgreSQL and
TimescaleDB, the broker, every migration with its checksum, the configuration (secrets
redacted), the compliance profiles (with the SHA-256 of each file) and every placed probe
with its calibration certificate. Each expectation is a check with what it observed; a
failed one is a deviation in the pack.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import sys
import threading
import uuid
from datetime import date
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from pydantic import SecretStr

from coldtrail import __version__, db, mqtt
from coldtrail.compliance import DEFAULT, Profile
from coldtrail.redact import redact_url
from coldtrail.settings import Settings
from coldtrail.validation.harness import Check

LIBRARIES = ("psycopg", "fastapi", "pydantic", "paho-mqtt", "pymodbus", "numpy", "reportlab")
ROLES = ("coldtrail_app", "coldtrail_readonly")
MIN_POSTGRES = 14
SECRET_WORDS = ("password", "secret", "token", "key")

_PROBES = """
SELECT s.id, s.model, s.serial, a.location_id, l.site_id, c.certificate_no, c.issuer,
       c.calibrated_on, c.valid_until, c.passed
FROM sensors s
JOIN sensor_assignments a ON a.sensor_id = s.id AND upper_inf(a.valid)
JOIN locations l ON l.id = a.location_id
LEFT JOIN LATERAL (
    SELECT certificate_no, issuer, calibrated_on, valid_until, passed
    FROM calibration_certificates WHERE sensor_id = s.id
    ORDER BY valid_until DESC, id DESC LIMIT 1
) c ON true
WHERE %(site)s::text IS NULL OR l.site_id = %(site)s
ORDER BY s.id
"""


def record(
    conn: psycopg.Connection[tuple[Any, ...]],
    settings: Settings,
    options: mqtt.MqttOptions | None,
    profiles: dict[str, Profile],
    site: str | None,
    today: date,
) -> dict[str, Any]:
    """The installation record with its checks (``checks``) and verdict (``passed``)."""
    checks: list[Check] = []

    def expect(passed: bool, text: str, observed: object) -> None:
        checks.append(Check(text, bool(passed), str(observed)))

    installed: dict[str, Any] = {
        "coldtrail": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in LIBRARIES},
    }
    expect(sys.version_info >= (3, 11), "Python 3.11 or later", installed["python"])
    missing = [n for n, v in installed["libraries"].items() if v is None]
    expect(not missing, "every library installed", ", ".join(missing) or "all")

    server = conn.execute("SHOW server_version_num").fetchone()
    version_num = int(server[0]) if server else 0
    installed["postgresql"] = _one(conn, "SHOW server_version")
    expect(version_num >= MIN_POSTGRES * 10000, f"PostgreSQL {MIN_POSTGRES} or later",
           installed["postgresql"])  # fmt: skip
    installed["timescaledb"] = _one(
        conn, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    )
    roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                        (list(ROLES),))}  # fmt: skip
    expect(roles == set(ROLES), "the database roles of the services exist",
           ", ".join(sorted(roles)) or "none")  # fmt: skip

    shipped = {m.version: m for m in db.migrations()}
    schema = _one(conn, "SELECT to_regclass('schema_migrations')::text") is not None
    applied: dict[int, tuple[str, str]] = {}
    if schema:
        applied = {
            int(v): (str(name), str(sha))
            for v, name, sha in conn.execute(
                "SELECT version, name, sha256 FROM schema_migrations ORDER BY version"
            )
        }
    installed["migrations"] = [
        {"version": v, "name": name, "sha256": sha} for v, (name, sha) in sorted(applied.items())
    ]
    not_applied = [f"{v:04d}" for v in shipped if v not in applied]
    expect(not not_applied, f"all {len(shipped)} migrations of this release applied",
           (", ".join(not_applied) if schema else "no ColdTrail schema: run `coldtrail db upgrade`")
           if not_applied else f"{len(applied)} applied")  # fmt: skip
    differing = [
        f"{v:04d}" for v, (_, sha) in applied.items()
        if v in shipped and sha != shipped[v].sha256
        and sha not in db.REVISED.get(v, frozenset())
    ]  # fmt: skip
    expect(not differing, "every applied migration's checksum is the shipped file's",
           ", ".join(differing) or "all equal")  # fmt: skip
    installed["schema_features"] = (
        [r[0] for r in conn.execute("SELECT name FROM schema_features ORDER BY name")]
        if schema else []
    )  # fmt: skip

    installed["broker"] = _broker_version(options) if options else None
    expect(installed["broker"] is not None, "the MQTT broker answers",
           installed["broker"] or "not reached")  # fmt: skip

    installed["configuration"] = configuration(settings)
    installed["profiles"] = {
        p.id: {"name": p.name, "file": p.path.name, "sha256": _sha256(p.path),
               "rules": sorted(p.rules), "unsourced": sorted(
                   r.id for r in p.rules.values() if not r.sourced)}
        for p in profiles.values()
    }  # fmt: skip
    sites = (
        conn.execute(
            "SELECT id, coalesce(compliance_profile, %s) FROM sites "
            "WHERE %s::text IS NULL OR id = %s ORDER BY id",
            (DEFAULT, site, site),
        ).fetchall()
        if not not_applied
        else []
    )
    installed["sites"] = {s: p for s, p in sites}
    unknown = [f"{s}: {p}" for s, p in sites if p not in profiles]
    expect(bool(sites) and not unknown, "each site names a compliance profile that is installed",
           ", ".join(unknown) or ", ".join(f"{s}: {p}" for s, p in sites) or "no site")  # fmt: skip

    probes = []
    uncalibrated = []
    found = conn.execute(_PROBES, {"site": site}).fetchall() if not not_applied else []
    for sensor, model, serial, place, site_id, cert, issuer, on, until, ok in found:
        probes.append({
            "sensor": sensor, "model": model, "serial": serial, "location": place,
            "site": site_id, "certificate": cert, "issuer": issuer,
            "calibrated_on": on.isoformat() if on else None,
            "valid_until": until.isoformat() if until else None, "passed": ok,
        })  # fmt: skip
        if cert is None or not ok or until < today:
            uncalibrated.append(sensor)
    installed["probes"] = probes
    expect(not uncalibrated, "every placed probe has a passed calibration certificate valid today",
           f"{len(probes)} probes; without: {', '.join(uncalibrated[:10]) or 'none'}"
           + (f" and {len(uncalibrated) - 10} more" if len(uncalibrated) > 10 else ""))  # fmt: skip
    return {
        "installed": installed,
        "checks": [c.__dict__ for c in checks],
        "passed": all(c.passed for c in checks),
    }


def configuration(settings: Settings) -> dict[str, Any]:
    """The settings as they stand, each secret shown only as set or not, URLs without their
    passwords. A secret is a ``SecretStr`` field, or one whose name says it is."""
    shown: dict[str, Any] = {}
    for name, value in settings.model_dump().items():
        secret = isinstance(value, SecretStr) or (
            isinstance(value, str)
            and any(w in name for w in SECRET_WORDS)
            and not name.endswith(("_file", "_user"))
        )
        if secret:
            plain = value.get_secret_value() if isinstance(value, SecretStr) else value
            shown[name] = "(set)" if plain else None
        elif isinstance(value, str) and "://" in value:
            shown[name] = redact_url(value)
        elif isinstance(value, Path):
            shown[name] = str(value)
        else:
            shown[name] = value
    return shown


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _one(conn: psycopg.Connection[tuple[Any, ...]], query: LiteralString) -> str | None:
    row = conn.execute(query).fetchone()
    return str(row[0]) if row and row[0] is not None else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _broker_version(options: mqtt.MqttOptions, wait_s: float = 5.0) -> str | None:
    """What the broker says it is (``$SYS/broker/version``, retained by Mosquitto); its
    address if it answers but keeps that to itself; None if it can't be reached."""
    got = threading.Event()
    found: list[str] = []
    client = mqtt.make_client(options, f"iq-{uuid.uuid4().hex[:8]}", persistent=False)

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        found.append(message.payload.decode("utf-8", "replace"))
        got.set()

    def on_connect(c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if not reason.is_failure:
            found.append("")
            c.subscribe("$SYS/broker/version")

    client.on_message = on_message
    client.on_connect = on_connect
    try:
        mqtt.connect(client, options, persistent=False)
    except Exception:  # noqa: BLE001 - any failure to connect is "not reached"
        return None
    client.loop_start()
    try:
        got.wait(wait_s)
    finally:
        client.disconnect()
        client.loop_stop()
    named = [f for f in found if f]
    if named:
        return named[0]
    return f"{options.endpoint.host}:{options.endpoint.port}" if found else None
