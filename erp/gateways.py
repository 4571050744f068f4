"""Edge gateways and their MQTT credentials (the broker's files come from here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from coldtrail.deploy.mosquitto import GatewayAccount, hash_password, new_password
from coldtrail.errors import RecordError

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
LIST = """
SELECT g.id, g.site_id, g.name, g.disabled, g.created_at, g.rotated_at,
       (SELECT max(sl.received_at) FROM sensor_latest sl WHERE sl.gateway = g.id) AS last_seen
FROM gateways g ORDER BY g.site_id, g.id
"""
ENABLED_ACCOUNTS = """
SELECT id, site_id, mqtt_password_hash FROM gateways WHERE NOT disabled ORDER BY id
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
            "(letters, digits, _ . - up to 64; site not 'events')"
        ) from exc
    return password


def rotate(conn: Conn, gateway_id: str) -> str:
    """A new password for the gateway; the old one stops working at the broker's next reload."""
    password = new_password()
    if conn.execute(ROTATE, {"id": gateway_id, "hash": hash_password(password)}).rowcount != 1:
        raise GatewayError(f"no gateway {gateway_id!r}")
    return password


def set_disabled(conn: Conn, gateway_id: str, disabled: bool) -> None:
    if conn.execute(SET_DISABLED, {"id": gateway_id, "disabled": disabled}).rowcount != 1:
        raise GatewayError(f"no gateway {gateway_id!r}")


def list_all(conn: Conn) -> list[Gateway]:
    return [Gateway(*row) for row in conn.execute(LIST)]


def enabled_accounts(conn: Conn) -> list[GatewayAccount]:
    return [GatewayAccount(gw, site, h) for gw, site, h in conn.execute(ENABLED_ACCOUNTS)]
