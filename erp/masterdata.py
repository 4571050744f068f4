"""Registering sites, locations and sensors, and placing sensors in locations over time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import psycopg

from coldtrail.errors import NotFound, RuleViolation

Conn = psycopg.Connection[tuple[Any, ...]]
LocationKind = Literal["cold_room", "ambient_store", "vehicle", "compartment"]
SensorKind = Literal["probe", "position", "door"]
"""probe: temperature (and humidity); position: a vehicle's GNSS unit; door: a door contact."""
CalibrationState = Literal["valid", "overdue", "none"]
"""As the record says it of a reading: a passed certificate covers the day (``valid``);
certificates are on file but none passed covers it (``overdue``); none on file (``none``)."""
MAX_PLACEMENT_AHEAD = timedelta(days=1)
EARLIEST_PLACEMENT = datetime(1970, 1, 1, tzinfo=UTC)
"""Before it a time is not one a placement can have: 0001-01-01 in a zone east of UTC is in
1 BC, which the database stores and Python can't read back."""


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


def file_certificate(
    conn: Conn,
    sensor_id: str,
    *,
    certificate_no: str,
    issuer: str,
    calibrated_on: date,
    valid_until: date,
    passed: bool,
    max_error_c: float | None,
    recorded_by: str,
) -> Sensor:
    """File a calibration certificate, append-only, as the API and the console take one:
    refused for a sensor not registered, a period that ends before it starts, or a number
    already on file for the sensor."""
    if valid_until <= calibrated_on:
        raise RuleViolation("valid_until must come after calibrated_on")
    sensor = get_sensor(conn, sensor_id, lock=True)
    if sensor is None:
        raise NotFound(f"no sensor {sensor_id}")
    if any(c.certificate_no == certificate_no for c in sensor.certificates):
        raise RuleViolation(f"certificate {certificate_no} is on file for {sensor_id} already")
    conn.execute(
        "INSERT INTO calibration_certificates (sensor_id, certificate_no, issuer, calibrated_on,"
        " valid_until, passed, max_error_c, recorded_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (sensor_id, certificate_no, issuer, calibrated_on, valid_until, passed, max_error_c,
         recorded_by),
    )  # fmt: skip
    # The sensor's due date follows its latest passed certificate.
    conn.execute(
        "UPDATE sensors SET calibration_due = (SELECT max(valid_until) FROM "
        "calibration_certificates WHERE sensor_id = %(id)s AND passed) WHERE id = %(id)s",
        {"id": sensor_id},
    )
    filed = get_sensor(conn, sensor_id)
    assert filed is not None  # noqa: S101 - locked and written just above
    return filed


def place_sensor(
    conn: Conn, sensor_id: str, location_id: str, since: datetime, position: str, now: datetime
) -> Sensor:
    """Place a sensor from ``since`` on, as the API and the console do: its current placement
    ends then. Refused for an unknown sensor or place, a start more than a day ahead (it would
    hold the sensor there for good) or not after the current placement's (the past placements
    are part of the record)."""
    current = get_sensor(conn, sensor_id, lock=True)
    if current is None:
        raise NotFound(f"no sensor {sensor_id}")
    if get_location(conn, location_id) is None:
        raise NotFound(f"no location {location_id}")
    if since < EARLIEST_PLACEMENT:
        raise RuleViolation(f"a placement starts in 1970 or later, not {since.isoformat()}")
    if since > now + MAX_PLACEMENT_AHEAD:
        raise RuleViolation(
            f"a placement starts at most {MAX_PLACEMENT_AHEAD.days} day ahead, not "
            f"{since.isoformat()}"
        )
    open_since = [p.since for p in current.placements if p.until is None]
    if open_since and since <= open_since[0]:
        raise RuleViolation(
            f"sensor {sensor_id} is placed since {open_since[0].isoformat()}: a new "
            "placement starts after that (past placements are part of the record)"
        )
    assign_sensor(conn, sensor_id, location_id, since, position)
    placed = get_sensor(conn, sensor_id)
    assert placed is not None  # noqa: S101 - locked just above
    return placed


@dataclass(frozen=True)
class SensorState:
    """A sensor as its list shows it: where it is now and its calibration on a day."""

    id: str
    kind: SensorKind
    model: str
    serial: str
    location_id: str | None
    position: str
    placed_since: datetime | None
    calibration: CalibrationState
    certificate_no: str | None
    """The passed certificate covering the day (the one lasting longest), if any."""
    valid_until: date | None
    """Until when that certificate covers; when none does, the end of the latest passed one."""

    def days_left(self, day: date) -> int | None:
        """Days the covering certificate still runs after ``day``."""
        if self.calibration != "valid" or self.valid_until is None:
            return None
        return (self.valid_until - day).days


# One row per sensor: its open placement, the passed certificate covering the day, and its
# certificates' count and latest passed end for a sensor that none covers.
_SENSOR_STATES = """
SELECT s.id, s.kind::text, s.model, s.serial, a.location_id, coalesce(a.position, ''),
       lower(a.valid), cov.certificate_no, coalesce(cov.valid_until, h.last_until), h.n
FROM sensors s
LEFT JOIN sensor_assignments a ON a.sensor_id = s.id AND upper_inf(a.valid)
LEFT JOIN LATERAL (
    SELECT certificate_no, valid_until FROM calibration_certificates c
    WHERE c.sensor_id = s.id AND c.passed
      AND c.calibrated_on <= %(day)s AND c.valid_until >= %(day)s
    ORDER BY c.valid_until DESC, c.id DESC LIMIT 1) cov ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS n, max(valid_until) FILTER (WHERE passed) AS last_until
    FROM calibration_certificates c WHERE c.sensor_id = s.id) h ON true
WHERE (%(kind)s::text IS NULL OR s.kind::text = %(kind)s)
  AND (%(id)s::text IS NULL OR s.id = %(id)s)
ORDER BY s.id
"""


def sensor_states(
    conn: Conn, day: date, kind: SensorKind | None = None, sensor_id: str | None = None
) -> list[SensorState]:
    """Every sensor (of ``kind``, or the one named), where it is now and its calibration on
    ``day``."""
    states = []
    for sid, k, model, serial, loc, pos, since, cert, until, n in conn.execute(
        _SENSOR_STATES, {"day": day, "kind": kind, "id": sensor_id}
    ):
        calibration: CalibrationState = "valid" if cert else "overdue" if n else "none"
        states.append(SensorState(sid, k, model, serial, loc, pos, since, calibration, cert,
                                  until))  # fmt: skip
    return states
