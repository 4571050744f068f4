"""Location excursions: a place is out of range while any of its probes is.

The probes' excursions in one place that overlap (or touch) make one location excursion.
After the probes' excursions change, the place's location excursions are brought in line:
the one a group carries on from is updated (revised if it had closed or its start moved),
one no group supports any more is withdrawn, a new group is recorded. What follows from
an excursion (holds, CAPA, budget, alarm, events) hangs on the location excursion.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg

from coldtrail.rules.judge import same

Conn = psycopg.Connection[tuple[Any, ...]]
Change = Literal["opened", "closed", "revised", "extended", "withdrawn"]

# An excursion confirmed this long before the rules saw it is marked late (an edge backlog).
LATE_AFTER = timedelta(minutes=5)

_PROBE_EXCURSIONS = """
SELECT id, sensor_id, started_at, ended_at, last_seen_at, late, limit_min_c, limit_max_c,
       min_c, max_c, duration_s, degree_minutes, mkt_c, location_excursion_id
FROM excursions
WHERE location_id = %(loc)s AND state <> 'withdrawn'
  AND coalesce(ended_at, 'infinity') >= %(since)s
ORDER BY started_at, id
"""

# Recorded location excursions reaching into the span being regrouped; the span widens to
# the earliest start among them so a group is never cut in two.
_RECORDED = """
SELECT id, started_at, ended_at, last_seen_at, state::text, late, sensors, limit_min_c,
       limit_max_c, min_c, max_c, duration_s, degree_minutes, mkt_c
FROM location_excursions
WHERE location_id = %(loc)s AND state <> 'withdrawn'
  AND coalesce(ended_at, 'infinity') >= %(since)s
ORDER BY started_at, id
FOR UPDATE
"""

_INSERT = """
INSERT INTO location_excursions (location_id, started_at, ended_at, last_seen_at, state, late,
    sensors, limit_min_c, limit_max_c, min_c, max_c, duration_s, degree_minutes, mkt_c,
    detected_at)
VALUES (%(loc)s, %(started_at)s, %(ended_at)s, %(last_seen_at)s, %(state)s, %(late)s,
    %(sensors)s, %(limit_min_c)s, %(limit_max_c)s, %(min_c)s, %(max_c)s, %(duration_s)s,
    %(degree_minutes)s, %(mkt_c)s, %(now)s)
RETURNING id
"""

_UPDATE = """
UPDATE location_excursions SET started_at = %(started_at)s, ended_at = %(ended_at)s,
    last_seen_at = %(last_seen_at)s, state = %(state)s, sensors = %(sensors)s,
    limit_min_c = %(limit_min_c)s, limit_max_c = %(limit_max_c)s, min_c = %(min_c)s,
    max_c = %(max_c)s, duration_s = %(duration_s)s, degree_minutes = %(degree_minutes)s,
    mkt_c = %(mkt_c)s, revision = revision + %(revised)s::int,
    revised_at = CASE WHEN %(revised)s THEN %(now)s ELSE revised_at END
WHERE id = %(id)s
"""

_WITHDRAW = """
UPDATE location_excursions SET state = 'withdrawn', revision = revision + 1, revised_at = %(now)s
WHERE id = %(id)s
"""

_LINK = """
UPDATE excursions SET location_excursion_id = %(le)s
WHERE id = ANY(%(ids)s) AND location_excursion_id IS DISTINCT FROM %(le)s
"""


@dataclass(frozen=True)
class Summary:
    """What a location excursion says, worked out from its probes' excursions."""

    started_at: datetime
    ended_at: datetime | None
    last_seen_at: datetime
    state: str
    sensors: list[str]
    limit_min_c: float | None
    limit_max_c: float | None
    min_c: float
    max_c: float
    duration_s: float
    degree_minutes: float
    mkt_c: float | None


@dataclass(frozen=True)
class Outcome:
    id: int
    location_id: str
    change: Change
    summary: Summary
    late: bool


def regroup(conn: Conn, location: str, since: datetime, now: datetime) -> list[Outcome]:
    """Bring the place's location excursions from ``since`` in line with its probes'."""
    recorded = conn.execute(_RECORDED, {"loc": location, "since": since}).fetchall()
    if recorded:
        since = min(since, recorded[0][1])
    probes = conn.execute(_PROBE_EXCURSIONS, {"loc": location, "since": since}).fetchall()
    by_id = {r[0]: r for r in recorded}
    outcomes: list[Outcome] = []
    claimed: set[int] = set()
    for group in _groups(probes):
        summary = _summarise(group)
        # The group carries on the location excursion most of its probes' excursions had.
        previous = [p[13] for p in group if p[13] in by_id and p[13] not in claimed]
        le_id = min(previous, key=lambda x: (-previous.count(x), x)) if previous else None
        values = {f.name: getattr(summary, f.name) for f in fields(Summary)}
        if le_id is None:
            late = all(p[5] for p in group)
            row = conn.execute(
                _INSERT, {**values, "loc": location, "late": late, "now": now}
            ).fetchone()
            assert row is not None  # noqa: S101 - INSERT ... RETURNING returns its row
            le_id = int(row[0])
            outcomes.append(Outcome(le_id, location, "opened", summary, late))
        else:
            claimed.add(le_id)
            old = by_id[le_id]
            change = _change(old, summary)
            if change is not None:
                revised = change == "revised"
                conn.execute(_UPDATE, {**values, "id": le_id, "revised": revised, "now": now})
                outcomes.append(Outcome(le_id, location, change, summary, bool(old[5])))
        conn.execute(_LINK, {"le": le_id, "ids": [p[0] for p in group]})
    for le_id, old in by_id.items():
        if le_id not in claimed and not any(o.id == le_id for o in outcomes):
            conn.execute(_WITHDRAW, {"id": le_id, "now": now})
            outcomes.append(Outcome(le_id, location, "withdrawn", _recorded(old), bool(old[5])))
    return outcomes


def _groups(probes: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    groups: list[list[tuple[Any, ...]]] = []
    reach: datetime | None = None  # the latest end so far in the group; None: open
    for p in probes:
        if groups and (reach is None or p[2] <= reach):
            groups[-1].append(p)
            reach = None if reach is None or p[3] is None else max(reach, p[3])
        else:
            groups.append([p])
            reach = p[3]
    return groups


def _summarise(group: list[tuple[Any, ...]]) -> Summary:
    started = min(p[2] for p in group)
    still_open = any(p[3] is None for p in group)
    ended = None if still_open else max(p[3] for p in group)
    last_seen = max(p[4] for p in group)
    first = min(group, key=lambda p: (p[2], p[0]))
    mkts = [p[12] for p in group if p[12] is not None]
    return Summary(
        started_at=started,
        ended_at=ended,
        last_seen_at=last_seen,
        state="open" if still_open else "closed",
        sensors=sorted({p[1] for p in group}),
        limit_min_c=first[6],
        limit_max_c=first[7],
        min_c=min(p[8] for p in group),
        max_c=max(p[9] for p in group),
        duration_s=((ended or last_seen) - started).total_seconds(),
        degree_minutes=max(p[11] or 0.0 for p in group),
        mkt_c=max(mkts) if mkts else None,
    )


def _recorded(row: tuple[Any, ...]) -> Summary:
    return Summary(
        started_at=row[1],
        ended_at=row[2],
        last_seen_at=row[3],
        state=row[4],
        sensors=list(row[6]),
        limit_min_c=row[7],
        limit_max_c=row[8],
        min_c=row[9],
        max_c=row[10],
        duration_s=row[11],
        degree_minutes=row[12],
        mkt_c=row[13],
    )


def _change(old: tuple[Any, ...], new: Summary) -> Change | None:
    before = _recorded(old)
    if before == new or all(
        same(getattr(before, f.name), getattr(new, f.name)) for f in fields(Summary)
    ):
        return None
    if before.state == "closed" or before.started_at != new.started_at:
        return "revised"
    return "closed" if new.state == "closed" else "extended"
