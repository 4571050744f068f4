"""Registering sites, locations and sensors, and placing sensors in locations over time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import psycopg

Conn = psycopg.Connection[tuple[Any, ...]]
LocationKind = Literal["cold_room", "ambient_store", "vehicle", "compartment"]


@dataclass(frozen=True)
class Location:
    id: str
    site_id: str
    kind: LocationKind
    name: str
    temp_min_c: float | None = None
    temp_max_c: float | None = None
    parent_id: str | None = None
    area_m2: float | None = None
    volume_m3: float | None = None


def upsert_site(conn: Conn, site_id: str, name: str, timezone: str = "UTC") -> None:
    conn.execute(
        "INSERT INTO sites (id, name, timezone) VALUES (%s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name, timezone = excluded.timezone",
        (site_id, name, timezone),
    )


def upsert_location(conn: Conn, loc: Location) -> None:
    conn.execute(
        """
        INSERT INTO locations (id, site_id, parent_id, kind, name, area_m2, volume_m3,
                               temp_min_c, temp_max_c)
        VALUES (%(id)s, %(site_id)s, %(parent_id)s, %(kind)s, %(name)s, %(area_m2)s,
                %(volume_m3)s, %(temp_min_c)s, %(temp_max_c)s)
        ON CONFLICT (id) DO UPDATE SET
            name = excluded.name, area_m2 = excluded.area_m2, volume_m3 = excluded.volume_m3,
            temp_min_c = excluded.temp_min_c, temp_max_c = excluded.temp_max_c
        """,
        loc.__dict__,
    )


def upsert_sensor(
    conn: Conn, sensor_id: str, model: str, serial: str, calibration_due: date | None = None
) -> None:
    conn.execute(
        "INSERT INTO sensors (id, model, serial, calibration_due) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET calibration_due = excluded.calibration_due",
        (sensor_id, model, serial, calibration_due),
    )


def assign_sensor(
    conn: Conn, sensor_id: str, location_id: str, since: datetime, position: str = ""
) -> None:
    """Place a sensor in a location from ``since`` on, ending its current placement there.

    Placing it again where it already is changes nothing.
    """
    current = conn.execute(
        "SELECT location_id, position FROM sensor_assignments "
        "WHERE sensor_id = %s AND upper_inf(valid) FOR UPDATE",
        (sensor_id,),
    ).fetchone()
    if current == (location_id, position):
        return
    conn.execute(
        "UPDATE sensor_assignments SET valid = tstzrange(lower(valid), %s, '[)') "
        "WHERE sensor_id = %s AND upper_inf(valid)",
        (since, sensor_id),
    )
    conn.execute(
        "INSERT INTO sensor_assignments (sensor_id, location_id, position, valid) "
        "VALUES (%s, %s, %s, tstzrange(%s, NULL, '[)'))",
        (sensor_id, location_id, position, since),
    )
