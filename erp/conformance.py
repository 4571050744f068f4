"""Where a site falls short of its compliance profile, each finding with the rule it breaks and
the rule's source (see coldtrail.compliance).

Checked so far: probes per storeroom (by area) and per vehicle compartment (by volume),
calibration (a passed certificate covering today, no older than the rule allows), named alarm
contacts, clocks (a gateway whose clock is not synchronised), record intervals (each
probe's readings over the last days, counted by the profile's interval), and retention (a
TimescaleDB retention policy dropping records sooner than the profile keeps them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from coldtrail import compliance
from coldtrail.erp import kpi
from coldtrail.erp.tx import Conn
from coldtrail.errors import NotFound, RuleViolation

_SITES = """
SELECT id, coalesce(compliance_profile, %(default)s) FROM sites
WHERE %(site)s::text IS NULL OR id = %(site)s ORDER BY id
"""

# Places with the probes placed there now.
_PLACES = """
SELECT l.id, l.kind::text, l.area_m2, l.volume_m3,
       count(a.sensor_id) FILTER (WHERE s.kind = 'probe')
FROM locations l
LEFT JOIN sensor_assignments a ON a.location_id = l.id AND a.valid @> %(now)s::timestamptz
LEFT JOIN sensors s ON s.id = a.sensor_id
WHERE l.site_id = %(site)s AND NOT l.quarantine_area
GROUP BY l.id ORDER BY l.id
"""

# Each probe placed at the site now, with its newest passed certificate covering today.
_PROBES = """
SELECT s.id, a.location_id, c.certificate_no, c.calibrated_on, sl.clock::text
FROM sensors s
JOIN sensor_assignments a ON a.sensor_id = s.id AND a.valid @> %(now)s::timestamptz
JOIN locations l ON l.id = a.location_id
LEFT JOIN LATERAL (
    SELECT certificate_no, calibrated_on, valid_until FROM calibration_certificates c
    WHERE c.sensor_id = s.id AND c.passed AND c.calibrated_on <= %(today)s
      AND c.valid_until >= %(today)s
    ORDER BY c.calibrated_on DESC LIMIT 1) c ON true
LEFT JOIN sensor_latest sl ON sl.sensor_id = s.id
WHERE l.site_id = %(site)s AND s.kind = 'probe'
ORDER BY s.id
"""

# A TimescaleDB retention policy drops old chunks of a hypertable: shorter than the profile's
# retention, records go before their time. Plain PostgreSQL (and ColdTrail itself) deletes
# nothing: no policy, nothing to find.
_HAS_TIMESCALEDB = "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')"
_SHORT_RETENTION = """
SELECT j.hypertable_name, j.config->>'drop_after'
FROM timescaledb_information.jobs j
WHERE j.proc_name = 'policy_retention'
  AND (j.config->>'drop_after')::interval < make_interval(years => %(years)s)
ORDER BY 1
"""

_CONTACTS = """
SELECT count(DISTINCT target) FROM alarm_contacts
WHERE site_id = %(site)s OR site_id IS NULL
"""


@dataclass(frozen=True)
class Finding:
    site_id: str
    profile: str
    rule: str
    subject: str
    """What falls short: a place, a probe, the site."""
    found: str
    required: str
    text: str
    source: str


def check(
    conn: Conn,
    now: datetime,
    site: str | None = None,
    extra_profiles: Path | None = None,
    period: timedelta = timedelta(days=7),
) -> list[Finding]:
    """Every finding now; record intervals are judged over ``period`` back from now."""
    known = compliance.profiles(extra_profiles)
    sites = conn.execute(_SITES, {"site": site, "default": compliance.DEFAULT}).fetchall()
    if site is not None and not sites:
        raise NotFound(f"no site {site}")
    findings: list[Finding] = []
    for site_id, profile_id in sites:
        profile = known.get(profile_id)
        if profile is None:
            raise RuleViolation(
                f"site {site_id} names compliance profile {profile_id!r}; known: "
                + ", ".join(sorted(known))
            )
        findings += _site(conn, site_id, profile, now, period)
    return findings


def required_probes(rule: compliance.Rule, kind: str, area_m2: float | None) -> int:
    """The probes a storeroom needs: the rule's minimum, one more per full further step of
    area (a cold or freezer room's step where the rule gives one)."""
    step = rule.extra.get("cold_step_m2" if kind == "cold_room" else "step_m2")
    base = int(rule.value)
    if not step or area_m2 is None:
        return base
    return base + math.floor(max(area_m2 - float(step), 0.0) / float(step))


def required_compartment_probes(rule: compliance.Rule, volume_m3: float | None) -> int:
    step = rule.extra.get("step_m3")
    base = int(rule.value)
    if not step or volume_m3 is None:
        return base
    return base + math.floor(max(volume_m3 - float(step), 0.0) / float(step))


def _site(
    conn: Conn, site: str, profile: compliance.Profile, now: datetime, period: timedelta
) -> list[Finding]:
    out: list[Finding] = []

    def add(rule: compliance.Rule, subject: str, found: str, required: str) -> None:
        out.append(Finding(site, profile.id, rule.id, subject, found, required, rule.text,
                           rule.source))  # fmt: skip

    rooms = profile.rule("probes_per_room")
    compartments = profile.rule("probes_per_compartment")
    places = conn.execute(_PLACES, {"site": site, "now": now}).fetchall()
    for place, kind, area, volume, probes in places:
        if kind in ("cold_room", "ambient_store") and rooms is not None:
            need = required_probes(rooms, kind, area)
            if probes < need:
                where = f"{place} ({kind}, {area:g} m²)" if area else f"{place} ({kind})"
                add(rooms, where, _n(probes, "probe"), _n(need, "probe"))
        elif kind == "compartment" and compartments is not None:
            need = required_compartment_probes(compartments, volume)
            if probes < need:
                where = f"{place} ({volume:g} m³)" if volume else place
                add(compartments, where, _n(probes, "probe"), _n(need, "probe"))
    calibration = profile.rule("calibration")
    clock = profile.rule("time_synchronised")
    today = now.date()
    for probe, place, cert, calibrated, clock_state in conn.execute(
        _PROBES, {"site": site, "now": now, "today": today}
    ):
        if calibration is not None:
            oldest = today - timedelta(days=int(calibration.value))
            if cert is None:
                add(calibration, f"probe {probe} at {place}",
                    "no passed certificate covering today", "a passed certificate")  # fmt: skip
            elif calibrated < oldest:
                add(calibration, f"probe {probe} at {place}",
                    f"{cert} calibrated {calibrated.isoformat()}",
                    f"calibrated on or after {oldest.isoformat()}")  # fmt: skip
        if clock is not None and clock_state not in (None, "ok"):
            add(clock, f"probe {probe} at {place}", f"clock {clock_state}", "clock ok")
    storage = profile.rule("record_interval_storage")
    transport = profile.rule("record_interval_transport")
    if storage is not None or transport is not None:
        kinds: dict[str, str] = {r[0]: r[1] for r in places}
        steps = {
            "storage": int(storage.value) if storage else kpi.STORAGE_INTERVAL_S,
            "transport": int(transport.value) if transport else kpi.TRANSPORT_INTERVAL_S,
        }
        for c in kpi.record_completeness(
            conn, now - period, now, list(kinds), storage_s=steps["storage"],
            transport_s=steps["transport"],
        ):  # fmt: skip
            moving = kinds.get(c.location_id) in ("vehicle", "compartment")
            rule = transport if moving else storage
            if rule is None or c.intervals_recorded >= c.intervals_expected:
                continue
            step = steps["transport" if moving else "storage"] // 60
            add(rule, f"{c.location_id} over the last {period.days} days",
                f"{c.intervals_recorded} of {c.intervals_expected} {step}-minute intervals "
                f"recorded ({100 * (c.ratio or 0):.1f} %)",
                f"a valid reading in every {step}-minute interval of each probe")  # fmt: skip
    retention = profile.rule("retention")
    if retention is not None and _timescaledb(conn):
        years = int(retention.value)
        for table, after in conn.execute(_SHORT_RETENTION, {"years": years}):
            add(retention, f"table {table}", f"dropped after {after}",
                f"kept {_n(years, 'year')}")  # fmt: skip
    contacts = profile.rule("alarm_contacts")
    if contacts is not None:
        row = conn.execute(_CONTACTS, {"site": site}).fetchone()
        named = int(row[0]) if row else 0
        if named < contacts.value:
            add(contacts, f"site {site}", _n(named, "alarm contact"),
                _n(int(contacts.value), "alarm contact"))  # fmt: skip
    return out


def _timescaledb(conn: Conn) -> bool:
    row = conn.execute(_HAS_TIMESCALEDB).fetchone()
    return bool(row and row[0])


def _n(count: int, thing: str) -> str:
    return f"{count} {thing}" + ("" if count == 1 else "s")


_INSERT_CHECK = """
INSERT INTO conformance_checks (checked_at, site_id, profile, findings)
VALUES (%(at)s, %(site)s, %(profile)s, %(n)s) RETURNING id
"""
_INSERT_FINDING = """
INSERT INTO conformance_findings (check_id, rule, subject, found, required, source)
VALUES (%(check)s, %(rule)s, %(subject)s, %(found)s, %(required)s, %(source)s)
"""
_HISTORY = """
SELECT date_trunc('day', c.checked_at AT TIME ZONE %(zone)s) AS day, c.site_id, f.rule,
       max(n) AS findings
FROM conformance_checks c
JOIN LATERAL (SELECT rule, count(*) AS n FROM conformance_findings
              WHERE check_id = c.id GROUP BY rule) f ON true
WHERE c.checked_at >= %(since)s AND (%(site)s::text IS NULL OR c.site_id = %(site)s)
GROUP BY 1, 2, 3 ORDER BY 2, 3, 1
"""


def record(conn: Conn, now: datetime, extra_profiles: Path | None = None) -> int:
    """Check every site and keep what was found (a site with none too); the findings kept."""
    found = check(conn, now, None, extra_profiles)
    sites = conn.execute(_SITES, {"site": None, "default": compliance.DEFAULT}).fetchall()
    with conn.transaction():
        for site_id, profile in sites:
            mine = [f for f in found if f.site_id == site_id]
            row = conn.execute(
                _INSERT_CHECK, {"at": now, "site": site_id, "profile": profile, "n": len(mine)}
            ).fetchone()
            assert row is not None  # noqa: S101 - INSERT ... RETURNING returns its row
            for f in mine:
                conn.execute(
                    _INSERT_FINDING,
                    {"check": row[0], "rule": f.rule, "subject": f.subject, "found": f.found,
                     "required": f.required, "source": f.source},
                )  # fmt: skip
    return len(found)


@dataclass(frozen=True)
class DayCount:
    day: datetime
    """The day, in ``zone``, as a naive date-time at its start."""
    site_id: str
    rule: str
    findings: int
    """The most findings of the rule in one check that day."""


def history(
    conn: Conn, since: datetime, site: str | None = None, zone: str = "UTC"
) -> list[DayCount]:
    """Findings per rule and day since ``since``: each rule's KPI over time."""
    rows = conn.execute(_HISTORY, {"since": since, "site": site, "zone": zone}).fetchall()
    return [DayCount(*r) for r in rows]
