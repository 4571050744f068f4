"""Who may report what: the ingest trust boundary.

The model: **a gateway reports for the sensors placed at a location of its site.** A reading
arriving on ``{root}/v1/{site}/{gateway}/telemetry`` is stored only if, at its measurement
time, its sensor was placed (``sensor_assignments``) at a location whose site is ``{site}``.
The broker lets a gateway publish only under its own site and name (the shipped Mosquitto
config), so a gateway of one site can't write another site's record, and a sensor moved to
another site is reported by that site's gateways from the moment of the move. Where the
gateway is registered (``coldtrail gateways``), its registered site must be the topic's and it
must not be disabled: a broker left without the shipped ACL can't be used to cross sites.

Readings that fail a rule are kept aside whole in ``quarantined_readings`` with the rule that
kept them; ``coldtrail ingest --release-quarantine`` stores those that pass once the master
data is put right (a sensor registered, a placement recorded).

The worker holds the rules in memory (:class:`Trust`) and reloads them whenever
``ingest_trust_version`` moves; every change to sensors, placements, locations' sites and
gateways moves it in the changing transaction (migration 0012).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Literal

import psycopg

Rule = Literal[
    "unknown_sensor", "not_at_site", "gateway_site", "gateway_disabled", "conflicting_resend"
]
Span = tuple[datetime | None, datetime | None]
"""A placement's [since, until); None for no bound."""

VERSION = "SELECT version FROM ingest_trust_version"
PLACEMENTS = """
SELECT s.id, l.site_id, a.location_id, lower(a.valid), upper(a.valid)
FROM sensors s
LEFT JOIN sensor_assignments a ON a.sensor_id = s.id
LEFT JOIN locations l ON l.id = a.location_id
ORDER BY s.id, lower(a.valid)
"""
GATEWAYS = "SELECT id, site_id, disabled FROM gateways"


@dataclass(frozen=True)
class Refusal:
    rule: Rule
    reason: str


@dataclass
class Trust:
    """The rules as the database stated them at ``version``."""

    version: int = -1
    by_site: dict[str, dict[str, tuple[Span, ...]]] = field(default_factory=dict)
    """site -> sensor -> when it was placed at a location of that site."""
    placements: dict[str, tuple[tuple[str, str, Span], ...]] = field(default_factory=dict)
    """Every registered sensor -> (site, location, span) of each placement, for reasons."""
    gateways: dict[str, tuple[str, bool]] = field(default_factory=dict)
    """Registered gateway -> (site, disabled)."""
    _in_zone: dict[tuple[str, tzinfo], dict[str, tuple[Span, ...]]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def load(cls, conn: psycopg.Connection[tuple[Any, ...]], version: int) -> Trust:
        by_site: dict[str, dict[str, list[Span]]] = defaultdict(lambda: defaultdict(list))
        placements: dict[str, list[tuple[str, str, Span]]] = {}
        for sensor, site, location, since, until in conn.execute(PLACEMENTS):
            where = placements.setdefault(sensor, [])
            if site is not None:
                by_site[site][sensor].append((since, until))
                where.append((site, location, (since, until)))
        return cls(
            version,
            {site: {s: tuple(v) for s, v in sensors.items()} for site, sensors in by_site.items()},
            {s: tuple(v) for s, v in placements.items()},
            {gw: (site, disabled) for gw, site, disabled in conn.execute(GATEWAYS)},
        )

    def gateway_refusal(self, gateway: str, site: str) -> Refusal | None:
        registered = self.gateways.get(gateway)
        if registered is None:
            return None
        home, disabled = registered
        if disabled:
            return Refusal("gateway_disabled", f"gateway {gateway!r} is disabled")
        if home != site:
            return Refusal(
                "gateway_site",
                f"gateway {gateway!r} is registered at site {home!r}, not {site!r} as its "
                "topic says",
            )
        return None

    def sensors_at(self, site: str, zone: tzinfo | None = None) -> dict[str, tuple[Span, ...]]:
        """The placements at ``site``, their times in ``zone`` if given. Python compares two
        datetimes sharing one tzinfo object without asking either for its offset, several
        times faster; pydantic gives every reading of one offset the same object."""
        spans = self.by_site.get(site, {})
        if zone is None:
            return spans
        key = (site, zone)
        found = self._in_zone.get(key)
        if found is None:
            found = {s: tuple((_in(a, zone), _in(b, zone)) for a, b in v) for s, v in spans.items()}
            if len(self._in_zone) < 64:  # a gateway sending odd offsets gets no cache
                self._in_zone[key] = found
        return found

    def sensor_refusal(self, sensor: str, ts: datetime, site: str) -> Refusal:
        """Why a reading that :func:`placed` found not placed is refused (the slow path)."""
        where = self.placements.get(sensor)
        if where is None:
            return Refusal("unknown_sensor", f"unknown sensor {sensor!r}")
        then = [(s, loc) for s, loc, span in where if _within(ts, span)]
        place = f"at {then[0][1]} of site {then[0][0]!r}" if then else "nowhere"
        return Refusal(
            "not_at_site",
            f"a gateway reports only for sensors placed at its site: {sensor!r} was {place} "
            f"at {ts.isoformat()}, not at site {site!r}",
        )


def placed(spans: tuple[Span, ...], first: datetime, last: datetime) -> bool:
    """Whether one placement covers every time from ``first`` to ``last``."""
    # The usual case: one placement, open-ended.
    for since, until in spans:
        if (since is None or since <= first) and (until is None or last < until):
            return True
    return False


def _in(t: datetime | None, zone: tzinfo) -> datetime | None:
    if t is None:
        return None
    try:
        return t.astimezone(zone)
    except OverflowError:  # a bound at the end of the calendar: compared as it is
        return t


def _within(ts: datetime, span: Span) -> bool:
    return placed((span,), ts, ts)
