"""What a location excursion touched, and what follows for each lot.

The lots in its place while it lasted (from the movement history, so lots that have moved on
since count), the shipment each travelled on there, and per lot: the minutes exposed charged
to the product's stability budget, a hold when the profile asks for one or when the budget is
spent, and one CAPA record per excursion to investigate it, linked to the excursion, its lots,
holds and shipments, with its readings attached. Working it out again (a revision, a longer
open excursion) changes what changed and raises nothing twice.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from coldtrail.erp import capa, outbox
from coldtrail.erp.holds import place_hold
from coldtrail.erp.movements import lots_in_location
from coldtrail.erp.tx import acting
from coldtrail.errors import RecordError
from coldtrail.rules.judge import bound

log = logging.getLogger(__name__)
Conn = psycopg.Connection[tuple[Any, ...]]
ACTOR = "system:rules"

_LOCATION_EXCURSION = """
SELECT location_id, started_at, coalesce(ended_at, last_seen_at), min_c, max_c, limit_min_c,
       limit_max_c, sensors, capa_id, state::text
FROM location_excursions WHERE id = %(id)s
"""

# The shipment of the movement that brought the lot to the place for this stay, if any.
_SHIPMENT_OF_STAY = """
SELECT m.shipment_id FROM movements m
WHERE m.lot_id = %(lot)s AND m.to_location = %(loc)s AND m.at <= %(since)s
ORDER BY m.at DESC, m.id DESC
LIMIT 1
"""

_UPSERT_IMPACT = """
INSERT INTO excursion_impacts (location_excursion_id, lot_id, shipment_id, exposed_from,
    exposed_to, minutes)
VALUES (%(le)s, %(lot)s, %(shipment)s, %(from)s, %(to)s, %(minutes)s)
ON CONFLICT (location_excursion_id, lot_id) DO UPDATE SET shipment_id = EXCLUDED.shipment_id,
    exposed_from = EXCLUDED.exposed_from, exposed_to = EXCLUDED.exposed_to,
    minutes = EXCLUDED.minutes
WHERE excursion_impacts.minutes IS DISTINCT FROM EXCLUDED.minutes
   OR excursion_impacts.shipment_id IS DISTINCT FROM EXCLUDED.shipment_id
"""

_LOT_POLICY = """
SELECT l.status::text, p.hold_on_excursion, p.stability_budget_min,
       coalesce((SELECT sum(i.minutes) FROM excursion_impacts i
                 JOIN location_excursions le ON le.id = i.location_excursion_id
                 WHERE i.lot_id = l.id AND le.state <> 'withdrawn'), 0),
       EXISTS (SELECT 1 FROM budget_exhaustions b WHERE b.lot_id = l.id)
FROM lots l
JOIN products pr ON pr.gtin = l.gtin
JOIN temperature_profiles p ON p.id = pr.profile_id
WHERE l.id = %(lot)s
"""

_EXHAUSTED = """
INSERT INTO budget_exhaustions (lot_id, exhausted_at, used_min, budget_min, hold_id)
VALUES (%(lot)s, %(at)s, %(used)s, %(budget)s, %(hold)s)
ON CONFLICT (lot_id) DO NOTHING
"""

_BUDGET = """
SELECT p.stability_budget_min,
       coalesce((SELECT sum(i.minutes) FROM excursion_impacts i
                 JOIN location_excursions le ON le.id = i.location_excursion_id
                 WHERE i.lot_id = l.id AND le.state <> 'withdrawn'), 0),
       b.exhausted_at
FROM lots l
JOIN products pr ON pr.gtin = l.gtin
JOIN temperature_profiles p ON p.id = pr.profile_id
LEFT JOIN budget_exhaustions b ON b.lot_id = l.id
WHERE l.id = %(lot)s
"""

_SET_CAPA = "UPDATE location_excursions SET capa_id = %(capa)s WHERE id = %(id)s"

_OWNER_EXISTS = "SELECT 1 FROM users WHERE username = %(user)s AND NOT disabled"

_CAPA_STATE = "SELECT state::text FROM capas WHERE id = %(id)s"

# The texts the rules wrote follow the excursion until a person acts on them: a hold's reason
# until someone signs for it, a CAPA's description until it leaves `open`. Each change is in
# the trail; what someone signed or started work on never changes.
_REFRESH_HOLD_REASON = """
UPDATE holds h SET reason = %(reason)s
WHERE h.id = %(id)s AND h.state = 'open' AND h.placed_by = %(actor)s
  AND h.reason IS DISTINCT FROM %(reason)s
  AND NOT EXISTS (SELECT 1 FROM signatures s
                  WHERE s.record_type = 'hold' AND s.record_id = h.id)
"""

_REFRESH_CAPA_DESCRIPTION = """
UPDATE capas SET description = %(text)s
WHERE id = %(id)s AND state = 'open' AND description IS DISTINCT FROM %(text)s
"""

_EVIDENCE_READINGS = """
SELECT r.sensor_id, r.seq, r.ts, r.received_at, r.status::text, r.temperature_c, r.humidity_pct
FROM readings r
WHERE r.sensor_id = ANY(%(sensors)s) AND r.ts >= %(start)s AND r.ts <= %(end)s
ORDER BY r.ts, r.sensor_id, r.seq
"""

EVIDENCE_MARGIN = timedelta(minutes=15)


@dataclass(frozen=True)
class CapaPolicy:
    owner: str = "admin"
    due_days: int = 30


@dataclass(frozen=True)
class Budget:
    budget_min: int | None
    used_min: float
    exhausted_at: datetime | None

    @property
    def remaining_min(self) -> float | None:
        return None if self.budget_min is None else self.budget_min - self.used_min


@dataclass(frozen=True)
class LotImpact:
    lot_id: int
    shipment_id: str | None
    exposed_from: datetime
    exposed_to: datetime
    minutes: float


def apply(
    conn: Conn, le_id: int, now: datetime, policy: CapaPolicy, *, revised: bool = False
) -> list[LotImpact]:
    """Charge, hold and investigate for every lot the location excursion touched."""
    row = conn.execute(_LOCATION_EXCURSION, {"id": le_id}).fetchone()
    if row is None or row[9] == "withdrawn":
        return []
    location, start, end, lo_seen, hi_seen, lo, hi, _, capa_id, state = row
    impacts = _impacts(conn, location, start, max(end, start + timedelta(seconds=1)))
    minutes = (end - start).total_seconds() / 60.0
    reason = (
        f"excursion {le_id} in {location} from {start.isoformat()}: read "
        f"{lo_seen:.1f}..{hi_seen:.1f} °C, allowed {bound(lo)}..{bound(hi)} °C, "
        f"{'for' if state == 'closed' else 'so far'} {minutes:.0f} min"
    )
    holds: list[int] = []
    for impact in impacts:
        conn.execute(
            _UPSERT_IMPACT,
            {"le": le_id, "lot": impact.lot_id, "shipment": impact.shipment_id,
             "from": impact.exposed_from, "to": impact.exposed_to, "minutes": impact.minutes},
        )  # fmt: skip
        hold = _hold_and_charge(conn, le_id, impact.lot_id, reason, now)
        if hold is not None:
            holds.append(hold)
    if impacts:
        _investigate(conn, le_id, capa_id, impacts, holds, now, policy, revised=revised)
    return impacts


def lot_budget(conn: Conn, lot_id: int) -> Budget:
    row = conn.execute(_BUDGET, {"lot": lot_id}).fetchone()
    if row is None:
        return Budget(None, 0.0, None)
    return Budget(row[0], float(row[1]), row[2])


def _impacts(conn: Conn, location: str, start: datetime, end: datetime) -> list[LotImpact]:
    per_lot: dict[int, LotImpact] = {}
    for stay in lots_in_location(conn, location, start, end, with_children=False):
        a = max(start, stay.since)
        b = min(end, stay.until) if stay.until is not None else end
        ship = conn.execute(
            _SHIPMENT_OF_STAY, {"lot": stay.lot_id, "loc": location, "since": stay.since}
        ).fetchone()
        minutes = max((b - a).total_seconds(), 0.0) / 60.0
        old = per_lot.get(stay.lot_id)
        if old is None:
            per_lot[stay.lot_id] = LotImpact(stay.lot_id, ship[0] if ship else None, a, b, minutes)
        else:  # a partial move split the stay: the lot was exposed over both parts
            per_lot[stay.lot_id] = LotImpact(
                stay.lot_id, old.shipment_id or (ship[0] if ship else None),
                min(old.exposed_from, a), max(old.exposed_to, b),
                (max(old.exposed_to, b) - min(old.exposed_from, a)).total_seconds() / 60.0,
            )  # fmt: skip
    return list(per_lot.values())


def _hold_and_charge(conn: Conn, le_id: int, lot: int, reason: str, now: datetime) -> int | None:
    row = conn.execute(_LOT_POLICY, {"lot": lot}).fetchone()
    if row is None:
        return None
    status, hold_on_excursion, budget, used, exhausted = row
    if status == "rejected":
        return None  # refused for good already: a hold changes nothing
    hold: int | None = None
    if hold_on_excursion:
        hold = place_hold(conn, ACTOR, lot, reason, now, excursion_id=le_id).id
        with acting(conn, ACTOR):
            conn.execute(_REFRESH_HOLD_REASON, {"id": hold, "reason": reason, "actor": ACTOR})
    if budget is not None and used > budget and not exhausted:
        spent = (
            f"stability budget spent: {used:.0f} of {budget} min out of range over the lot's "
            f"life, the last in excursion {le_id}"
        )
        if hold is None:
            hold = place_hold(conn, ACTOR, lot, spent, now, excursion_id=le_id).id
        conn.execute(
            _EXHAUSTED, {"lot": lot, "at": now, "used": used, "budget": budget, "hold": hold}
        )
        outbox.emit(conn, "lot.budget_exhausted", f"lot/{lot}",
                    {"lot": lot, "used_min": used, "budget_min": budget, "excursion": le_id,
                     "hold": hold}, now)  # fmt: skip
        log.warning("lot %d: %s", lot, spent)
    return hold


def _investigate(
    conn: Conn,
    le_id: int,
    capa_id: int | None,
    impacts: list[LotImpact],
    holds: list[int],
    now: datetime,
    policy: CapaPolicy,
    *,
    revised: bool,
) -> None:
    links: list[tuple[capa.LinkKind, str]] = [("excursion", str(le_id))]
    links += [("lot", str(i.lot_id)) for i in impacts]
    links += [("hold", str(h)) for h in holds]
    links += [("shipment", s) for s in sorted({i.shipment_id for i in impacts if i.shipment_id})]
    if capa_id is None:
        if conn.execute(_OWNER_EXISTS, {"user": policy.owner}).fetchone() is None:
            log.error("excursion %d: no CAPA opened, owner %r is not an active user",
                      le_id, policy.owner)  # fmt: skip
            return
        row = conn.execute(_LOCATION_EXCURSION, {"id": le_id}).fetchone()
        assert row is not None  # noqa: S101 - read above in this transaction
        title = f"Investigate excursion {le_id} in {row[0]} from {row[1]:%Y-%m-%d %H:%M} UTC"
        opened = capa.open_capa(
            conn, ACTOR,
            capa.NewCapa(title=title, owner=policy.owner,
                         due_date=now.date() + timedelta(days=policy.due_days),
                         description=_description(row, impacts), links=tuple(links)),
            now,
        )  # fmt: skip
        conn.execute(_SET_CAPA, {"capa": opened.id, "id": le_id})
        _attach_readings(conn, opened.id, le_id, now, "")
        return
    state = conn.execute(_CAPA_STATE, {"id": capa_id}).fetchone()
    if state is None or state[0] == "closed":
        log.warning("excursion %d changed after its CAPA %s closed", le_id, capa_id)
        return
    row = conn.execute(_LOCATION_EXCURSION, {"id": le_id}).fetchone()
    if row is not None:
        with acting(conn, ACTOR):
            conn.execute(
                _REFRESH_CAPA_DESCRIPTION, {"id": capa_id, "text": _description(row, impacts)}
            )
    try:
        known = set(capa.get_capa(conn, capa_id).links)
        for kind, ref in links:
            if (kind, ref) not in known:
                capa.link(conn, ACTOR, capa_id, kind, ref)
        if revised:
            _attach_readings(conn, capa_id, le_id, now, f"-as-of-{now:%Y%m%dT%H%M%S}")
    except RecordError as exc:
        log.warning("excursion %d: CAPA %d not updated: %s", le_id, capa_id, exc)


def _attach_readings(conn: Conn, capa_id: int, le_id: int, now: datetime, suffix: str) -> None:
    row = conn.execute(_LOCATION_EXCURSION, {"id": le_id}).fetchone()
    assert row is not None  # noqa: S101 - read above in this transaction
    _, start, end, *_rest = row
    sensors = row[7]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["sensor", "seq", "ts", "received_at", "status", "temperature_c",
                     "humidity_pct"])  # fmt: skip
    for r in conn.execute(
        _EVIDENCE_READINGS,
        {"sensors": sensors, "start": start - EVIDENCE_MARGIN, "end": end + EVIDENCE_MARGIN},
    ):
        writer.writerow([r[0], r[1], r[2].isoformat(), r[3].isoformat(), r[4], bound(r[5]),
                         bound(r[6])])  # fmt: skip
    capa.add_evidence(
        conn, ACTOR, capa_id, f"excursion-{le_id}-readings{suffix}.csv", "text/csv",
        out.getvalue().encode(), now,
    )  # fmt: skip


def _description(row: tuple[Any, ...], impacts: list[LotImpact]) -> str:
    location, start, end, lo_seen, hi_seen, lo, hi, sensors = row[:8]
    lots = ", ".join(f"lot {i.lot_id} ({i.minutes:.0f} min)" for i in impacts)
    return (
        f"Probes {', '.join(sensors)} in {location} read {lo_seen:.1f}..{hi_seen:.1f} °C "
        f"against {bound(lo)}..{bound(hi)} °C from {start.isoformat()} to {end.isoformat()}. "
        f"Lots exposed: {lots}. Opened by the rules engine; the readings are attached."
    )
