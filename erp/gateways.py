"""Edge gateways and their MQTT credentials (the broker's files come from here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from coldtrail.deploy.mosquitto import GatewayAccount, hash_password, new_password
from coldtrail.errors import NotFound, RecordError

Conn = psycopg.Connection[tuple[Any, ...]]

REGISTER = """
INSERT INTO gateways (id, site_id, name, mqtt_password_hash)
VALUES (%(id)s, %(site)s, %(name)s, %(hash)s)
"""
ROTATE = """
UPDATE gateways SET mqtt_password_hash = %(hash)s, rotated_at = now()
WHERE id = %(id)s
"""
SET_DISABLED = "UPDATE gateways SET disabled = %(disabled)s WHERE id = %(id)s"
MOVE = """
UPDATE gateways g SET site_id = %(site)s FROM gateways old
WHERE g.id = %(id)s AND old.id = g.id
RETURNING old.site_id
"""
# What a gateway did lately besides storing readings: what ingest kept aside from it, by rule,
# and its dead letters (the gateway is the topic's fourth level), over the last day.
LIST = """
SELECT g.id, g.site_id, g.name, g.disabled, g.created_at, g.rotated_at,
       (SELECT max(sl.received_at) FROM sensor_latest sl WHERE sl.gateway = g.id) AS last_seen,
       (SELECT count(*) FROM sensor_assignments a JOIN locations l ON l.id = a.location_id
        WHERE l.site_id = g.site_id AND upper_inf(a.valid)) AS sensors_placed,
       coalesce((SELECT jsonb_object_agg(rule, n) FROM (
           SELECT q.rule, count(*) AS n FROM quarantined_readings q
           WHERE q.gateway = g.id AND q.received_at > now() - interval '1 day'
             AND q.released_at IS NULL
           GROUP BY q.rule) k), '{}'::jsonb) AS kept_aside_24h,
       (SELECT count(*) FROM dead_letters d
        WHERE d.received_at > now() - interval '1 day'
          AND split_part(d.topic, '/', 4) = g.id) AS dead_letters_24h
FROM gateways g
WHERE %(gateway)s::text IS NULL OR g.id = %(gateway)s
ORDER BY g.site_id, g.id
"""
ACCOUNTS = """
SELECT id, site_id, mqtt_password_hash, disabled FROM gateways ORDER BY id
"""


class GatewayError(RecordError):
    """A registration that can't be done: unknown site or gateway, a name taken."""


@dataclass(frozen=True)
class Gateway:
    id: str
    site_id: str
    name: str
    disabled: bool
    created_at: datetime
    rotated_at: datetime
    last_seen: datetime | None
    sensors_placed: int
    """Sensors placed at a location of its site now: those it may report for."""
    kept_aside_24h: dict[str, int]
    """Its readings ingest kept aside over the last day (and not released), by rule."""
    dead_letters_24h: int


def register(conn: Conn, gateway_id: str, site_id: str, name: str) -> str:
    """Register a gateway; returns its MQTT password, which is not stored and not shown again."""
    password = new_password()
    params = {"id": gateway_id, "site": site_id, "name": name, "hash": hash_password(password)}
    try:
        with conn.transaction():
            conn.execute(REGISTER, params)
    except psycopg.errors.UniqueViolation as exc:
        raise GatewayError(f"gateway {gateway_id!r} is already registered") from exc
    except psycopg.errors.ForeignKeyViolation as exc:
        raise GatewayError(f"no site {site_id!r}") from exc
    except psycopg.errors.CheckViolation as exc:
        raise GatewayError(
            f"gateway id {gateway_id!r} or site {site_id!r} is not allowed "
            "(letters, digits, _ . - up to 64; not starting 'coldtrail-', which ColdTrail's "
            "own services use; site not 'events')"
        ) from exc
    return password


def rotate(conn: Conn, gateway_id: str) -> str:
    """A new password for the gateway; the old one stops working at the broker's next reload."""
    password = new_password()
    if conn.execute(ROTATE, {"id": gateway_id, "hash": hash_password(password)}).rowcount != 1:
        raise NotFound(f"no gateway {gateway_id!r}")
    return password


def set_disabled(conn: Conn, gateway_id: str, disabled: bool) -> None:
    if conn.execute(SET_DISABLED, {"id": gateway_id, "disabled": disabled}).rowcount != 1:
        raise NotFound(f"no gateway {gateway_id!r}")


def move(conn: Conn, gateway_id: str, site_id: str) -> str:
    """Move a gateway to another site; returns the site it was at. From then on it reports
    for the sensors placed there, under that site's topic."""
    try:
        with conn.transaction():
            row = conn.execute(MOVE, {"id": gateway_id, "site": site_id}).fetchone()
    except psycopg.errors.ForeignKeyViolation as exc:
        raise GatewayError(f"no site {site_id!r}") from exc
    except psycopg.errors.CheckViolation as exc:
        raise GatewayError(f"site {site_id!r} is not allowed for a gateway") from exc
    if row is None:
        raise NotFound(f"no gateway {gateway_id!r}")
    return str(row[0])


def list_all(conn: Conn, gateway_id: str | None = None) -> list[Gateway]:
    return [Gateway(*row) for row in conn.execute(LIST, {"gateway": gateway_id})]


def get(conn: Conn, gateway_id: str) -> Gateway:
    found = list_all(conn, gateway_id)
    if not found:
        raise NotFound(f"no gateway {gateway_id!r}")
    return found[0]


def accounts(conn: Conn) -> list[GatewayAccount]:
    """Every gateway's broker account, disabled ones too (marked so): enabling one is then a
    change the broker takes without a password."""
    return [GatewayAccount(*row) for row in conn.execute(ACCOUNTS)]


KEPT_ASIDE = """
SELECT id, received_at, topic, site_id, gateway, sensor_id, seq, ts, status::text,
       clock::text, temperature_c, humidity_pct, rule::text, reason, released_at
FROM quarantined_readings
WHERE (%(gateway)s::text IS NULL OR gateway = %(gateway)s)
  AND (%(rule)s::text IS NULL OR rule = %(rule)s::kept_aside_rule)
  AND (NOT %(pending)s OR released_at IS NULL)
  AND id < %(before)s
ORDER BY id DESC LIMIT %(limit)s
"""
DEAD_LETTERS = """
SELECT id, received_at, topic, reason, length(payload) AS bytes
FROM dead_letters
WHERE split_part(topic, '/', 4) = %(gateway)s
ORDER BY id DESC LIMIT %(limit)s
"""


@dataclass(frozen=True)
class KeptAside:
    """A reading ingest did not store, whole, with the rule that kept it aside."""

    id: int
    received_at: datetime
    topic: str
    site_id: str
    gateway: str
    sensor_id: str
    seq: int
    ts: datetime
    status: str
    clock: str
    temperature_c: float | None
    humidity_pct: float | None
    rule: str
    reason: str
    released_at: datetime | None


@dataclass(frozen=True)
class DeadLetter:
    id: int
    received_at: datetime
    topic: str
    reason: str
    bytes: int


def kept_aside(
    conn: Conn,
    *,
    gateway_id: str | None = None,
    rule: str | None = None,
    pending: bool = False,
    before: int = 2**63 - 1,
    limit: int = 100,
) -> list[KeptAside]:
    """Kept-aside readings, newest first; page with ``before`` (the last id seen)."""
    params = {
        "gateway": gateway_id, "rule": rule, "pending": pending, "before": before, "limit": limit,
    }  # fmt: skip
    return [KeptAside(*row) for row in conn.execute(KEPT_ASIDE, params)]


def dead_letters(conn: Conn, gateway_id: str, limit: int = 20) -> list[DeadLetter]:
    """A gateway's latest dead letters (their payloads stay in the database: they may be
    anything a gateway sent)."""
    rows = conn.execute(DEAD_LETTERS, {"gateway": gateway_id, "limit": limit})
    return [DeadLetter(*row) for row in rows]
