"""What an excursion touched: the lots that were in its location while it lasted (including
those that have moved on since), put on hold when their product's profile says so."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import psycopg

from coldtrail.erp.holds import place_hold
from coldtrail.erp.movements import lots_in_location

log = logging.getLogger(__name__)
ACTOR = "system:rules"

EXCURSION = """
SELECT e.location_id, e.started_at, coalesce(e.ended_at, e.last_seen_at), e.min_c, e.max_c,
       e.limit_min_c, e.limit_max_c, e.sensor_id
FROM excursions e WHERE e.id = %(id)s AND e.state <> 'withdrawn'
"""

HOLD_POLICY = """
SELECT p.hold_on_excursion FROM lots l
JOIN products pr ON pr.gtin = l.gtin JOIN temperature_profiles p ON p.id = pr.profile_id
WHERE l.id = %(lot)s
"""


def hold_affected_lots(
    conn: psycopg.Connection[tuple[Any, ...]], excursion_id: int, now: datetime
) -> list[int]:
    """Hold every lot the excursion touched whose profile asks for it; returns the lots held.
    Safe to call again for the same excursion (after a revision): each lot is held once."""
    row = conn.execute(EXCURSION, {"id": excursion_id}).fetchone()
    if row is None:
        return []
    location, start, end, lo_seen, hi_seen, lo, hi, sensor = row
    if end <= start:
        return []
    held: list[int] = []
    for stay in lots_in_location(conn, location, start, end, with_children=False):
        if stay.lot_id in held:
            continue
        policy = conn.execute(HOLD_POLICY, {"lot": stay.lot_id}).fetchone()
        if policy is None or not policy[0]:
            continue
        status = conn.execute("SELECT status FROM lots WHERE id = %s", (stay.lot_id,)).fetchone()
        if status is not None and status[0] == "rejected":
            continue  # already refused for good: a new hold changes nothing
        reason = (
            f"excursion {excursion_id} in {location} from {start.isoformat()}: sensor {sensor} "
            f"read {lo_seen:.1f}..{hi_seen:.1f} °C, allowed {lo}..{hi} °C"
        )
        place_hold(conn, ACTOR, stay.lot_id, reason, now, excursion_id=excursion_id)
        held.append(stay.lot_id)
    if held:
        log.warning("excursion %d: lots %s on hold", excursion_id, held)
    return held
