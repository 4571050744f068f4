"""Registering sites, locations and sensors, and placing sensors in locations over time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import psycopg

from coldtrail.errors import RuleViolation

Conn = psycopg.Connection[tuple[Any, ...]]
LocationKind = Literal["cold_room", "ambient_store", "vehicle", "compartment"]
SensorKind = Literal["probe", "position", "door"]
"""probe: temperature (and humidity); position: a vehicle's GNSS unit; door: a door contact."""


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
    alarm_delay_s: int | None = None
    """Out of range this long before it is an excursion; unset: the products' delays apply
    (the shortest of those set)."""
    quarantine_area: bool = False
    """Quarantined and rejected goods may be put only here."""


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
                               temp_min_c, temp_max_c, alarm_delay_s, quarantine_area)
        VALUES (%(id)s, %(site_id)s, %(parent_id)s, %(kind)s, %(name)s, %(area_m2)s,
                %(volume_m3)s, %(temp_min_c)s, %(temp_max_c)s, %(alarm_delay_s)s,
                %(quarantine_area)s)
        ON CONFLICT (id) DO UPDATE SET
            name = excluded.name, area_m2 = excluded.area_m2, volume_m3 = excluded.volume_m3,
            temp_min_c = excluded.temp_min_c, temp_max_c = excluded.temp_max_c,
            alarm_delay_s = excluded.alarm_delay_s, quarantine_area = excluded.quarantine_area
        """,
        loc.__dict__,
    )


def upsert_sensor(
    conn: Conn,
    sensor_id: str,
    model: str,
    serial: str,
    calibration_due: date | None = None,
    kind: SensorKind = "probe",
) -> None:
    conn.execute(
        "INSERT INTO sensors (id, model, serial, calibration_due, kind) "
        "VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET calibration_due = excluded.calibration_due",
        (sensor_id, model, serial, calibration_due, kind),
    )


def assign_sensor(
    conn: Conn, sensor_id: str, location_id: str, since: datetime, position: str = ""
) -> None:
    """Place a sensor in a location from ``since`` on, ending its current placement there.

    Placing it again where it already is changes nothing.
    """
    current = conn.execute(
        "SELECT location_id, position, lower(valid) FROM sensor_assignments "
        "WHERE sensor_id = %s AND upper_inf(valid) FOR UPDATE",
        (sensor_id,),
    ).fetchone()
    if current is not None and current[:2] == (location_id, position):
        return
    if current is not None and current[2] is not None and since < current[2]:
        raise RuleViolation(
            f"sensor {sensor_id} is in {current[0]} since {current[2].isoformat()}: a new "
            "placement starts after that"
        )
    try:
        # One savepoint for both: a refused placement leaves the current one as it was.
        with conn.transaction():
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
    except psycopg.errors.CheckViolation as exc:
        # The kinds that may go together are the schema's rule (a trigger), stated once.
        diag = exc.diag.message_primary or str(exc)
        raise RuleViolation(f"sensor {sensor_id} can't be placed in {location_id}: {diag}") from exc


# ------------------------------------------------------------------ reading master data back


@dataclass(frozen=True)
class Site:
    id: str
    name: str
    timezone: str


@dataclass(frozen=True)
class Placement:
    location_id: str
    position: str
    since: datetime
    until: datetime | None


@dataclass(frozen=True)
class Certificate:
    id: int
    certificate_no: str
    issuer: str
    calibrated_on: date
    valid_until: date
    passed: bool
    max_error_c: float | None
    recorded_by: str
    recorded_at: datetime


@dataclass(frozen=True)
class Sensor:
    id: str
    model: str
    serial: str
    calibration_due: date | None
    kind: SensorKind = "probe"
    placements: tuple[Placement, ...] = ()
    certificates: tuple[Certificate, ...] = ()


_SITE = "SELECT id, name, timezone FROM sites WHERE id = %s"
_SITE_FOR_UPDATE = _SITE + " FOR UPDATE"
_SENSOR = "SELECT id, model, serial, calibration_due, kind::text FROM sensors WHERE id = %s"
_SENSOR_FOR_UPDATE = _SENSOR + " FOR UPDATE"


def list_sites(conn: Conn) -> list[Site]:
    return [Site(*r) for r in conn.execute("SELECT id, name, timezone FROM sites ORDER BY id")]


def get_site(conn: Conn, site_id: str, *, lock: bool = False) -> Site | None:
    row = conn.execute(_SITE_FOR_UPDATE if lock else _SITE, (site_id,)).fetchone()
    return Site(*row) if row else None


_LOCATION_COLUMNS = (
    "id, site_id, kind::text, name, temp_min_c, temp_max_c, parent_id, area_m2, volume_m3,"
    " alarm_delay_s, quarantine_area"
)


def list_locations(
    conn: Conn, site_id: str | None = None, kind: str | None = None
) -> list[Location]:
    rows = conn.execute(
        f"SELECT {_LOCATION_COLUMNS} FROM locations "  # noqa: S608 - a constant column list
        "WHERE (%(site)s::text IS NULL OR site_id = %(site)s) "
        "AND (%(kind)s::text IS NULL OR kind::text = %(kind)s) ORDER BY id",
        {"site": site_id, "kind": kind},
    )
    return [Location(*r) for r in rows]


def get_location(conn: Conn, location_id: str, *, lock: bool = False) -> Location | None:
    row = conn.execute(
        f"SELECT {_LOCATION_COLUMNS} FROM locations WHERE id = %s"  # noqa: S608 - constant
        + (" FOR UPDATE" if lock else ""),
        (location_id,),
    ).fetchone()
    return Location(*row) if row else None


def list_sensors(conn: Conn, after: str = "", limit: int = 100) -> list[Sensor]:
    rows = conn.execute(
        "SELECT id, model, serial, calibration_due, kind::text FROM sensors WHERE id > %s "
        "ORDER BY id LIMIT %s",
        (after, limit),
    )
    return [Sensor(*r) for r in rows]


def get_sensor(conn: Conn, sensor_id: str, *, lock: bool = False) -> Sensor | None:
    row = conn.execute(_SENSOR_FOR_UPDATE if lock else _SENSOR, (sensor_id,)).fetchone()
    if row is None:
        return None
    placements = conn.execute(
        "SELECT location_id, position, lower(valid), upper(valid) FROM sensor_assignments "
        "WHERE sensor_id = %s ORDER BY lower(valid)",
        (sensor_id,),
    ).fetchall()
    certificates = conn.execute(
        "SELECT id, certificate_no, issuer, calibrated_on, valid_until, passed, max_error_c, "
        "recorded_by, recorded_at FROM calibration_certificates WHERE sensor_id = %s "
        "ORDER BY calibrated_on, id",
        (sensor_id,),
    ).fetchall()
    return Sensor(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        placements=tuple(Placement(*p) for p in placements),
        certificates=tuple(Certificate(*c) for c in certificates),
    )


def add_certificate(
    conn: Conn,
    sensor_id: str,
    certificate_no: str,
    issuer: str,
    calibrated_on: date,
    valid_until: date,
    passed: bool,
    max_error_c: float | None,
    recorded_by: str,
) -> None:
    """File a calibration certificate; the sensor's due date follows its latest passed one."""
    conn.execute(
        "INSERT INTO calibration_certificates (sensor_id, certificate_no, issuer, calibrated_on,"
        " valid_until, passed, max_error_c, recorded_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (sensor_id, certificate_no, issuer, calibrated_on, valid_until, passed, max_error_c,
         recorded_by),
    )  # fmt: skip
    conn.execute(
        "UPDATE sensors SET calibration_due = (SELECT max(valid_until) FROM "
        "calibration_certificates WHERE sensor_id = %(id)s AND passed) WHERE id = %(id)s",
        {"id": sensor_id},
    )
