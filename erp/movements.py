"""Movements of lots between locations, where each lot was over time, and shipments.

The trigger on ``movements`` (migration 0005) keeps ``lot_stays`` and refuses what may not
happen: moving what is not there, moving a quarantined lot anywhere but a quarantine area,
rewriting a lot's history with a movement older than its last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from coldtrail.erp import queries as q
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import NotFound, RuleViolation

MovementKind = Literal[
    "receiving", "put_away", "transfer", "loading", "delivery", "return",
    # Signed by QA, through coldtrail.erp.disposal only:
    "return_to_supplier", "destruction",
]  # fmt: skip
SIGNED_KINDS = ("return_to_supplier", "destruction")
ShipmentState = Literal["planned", "in_transit", "delivered", "cancelled"]


@dataclass(frozen=True)
class Movement:
    id: int
    lot_id: int
    kind: MovementKind
    from_location: str | None
    to_location: str | None
    quantity: Decimal
    at: datetime
    shipment_id: str | None
    party: str | None
    recorded_by: str


@dataclass(frozen=True)
class Stay:
    """A lot (or part of it) in one location from ``since`` until ``until`` (None: still)."""

    lot_id: int
    gtin: str
    lot_number: str
    location_id: str
    quantity: Decimal
    since: datetime
    until: datetime | None


@dataclass(frozen=True)
class Shipment:
    id: str
    vehicle_id: str
    origin_site: str
    destination: str
    route: str
    state: ShipmentState
    departed_at: datetime | None
    arrived_at: datetime | None


@dataclass(frozen=True)
class ShipmentLot:
    lot_id: int
    gtin: str
    lot_number: str
    loaded: Decimal
    delivered: Decimal
    aboard: Decimal


def record_movement(
    conn: Conn,
    actor: str,
    lot_id: int,
    kind: MovementKind,
    quantity: Decimal | int,
    at: datetime,
    *,
    from_location: str | None = None,
    to_location: str | None = None,
    shipment_id: str | None = None,
    party: str | None = None,
) -> Movement:
    if kind in SIGNED_KINDS:
        raise RuleViolation(
            f"a {kind.replace('_', ' ')} is signed by QA: POST /api/v1/lots/{lot_id}/exit"
        )
    _check_shape(kind, from_location, to_location, shipment_id)
    with acting(conn, actor):
        row = conn.execute(
            q.INSERT_MOVEMENT,
            {
                "lot": lot_id,
                "kind": kind,
                "from": from_location,
                "to": to_location,
                "qty": Decimal(quantity),
                "at": at,
                "shipment": shipment_id,
                "party": party,
                "by": actor,
            },
        ).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns its row
    return Movement(*row)


def _check_shape(
    kind: MovementKind, src: str | None, dst: str | None, shipment: str | None
) -> None:
    # The same rules as the table's CHECK, said in words a user can act on.
    if kind in SIGNED_KINDS:
        if src is None or dst is not None:
            raise RuleViolation(f"a {kind} names where the goods leave from (from_location)")
    elif kind in ("receiving", "return"):
        if src is not None or dst is None:
            raise RuleViolation(f"a {kind} names where the goods go (to_location), not a source")
    elif kind == "delivery":
        if src is None or dst is not None:
            raise RuleViolation("a delivery names where the goods leave from (from_location)")
    elif src is None or dst is None or src == dst:
        raise RuleViolation(f"a {kind} names two different locations, from and to")
    if kind in ("loading", "delivery") and shipment is None:
        raise RuleViolation(f"a {kind} belongs to a shipment (shipment_id)")
    if shipment is not None and kind not in ("loading", "delivery", "transfer"):
        raise RuleViolation(f"a {kind} is not part of a shipment")


def lots_in_location(
    conn: Conn, location_id: str, start: datetime, end: datetime, *, with_children: bool = True
) -> list[Stay]:
    """Every stay of a lot in the location (and its compartments) overlapping [start, end),
    including lots that have moved on since."""
    if end <= start:
        raise RuleViolation("the end of the period must be after its start")
    rows = conn.execute(
        q.LOTS_IN_LOCATION,
        {"loc": location_id, "start": start, "end": end, "children": with_children},
    ).fetchall()
    return [Stay(*r) for r in rows]


@dataclass(frozen=True)
class Stock:
    """A lot (or part of it) lying in a place now."""

    lot_id: int
    gtin: str
    product: str
    lot_number: str
    status: str
    expiry: date | None
    location_id: str
    quantity: Decimal
    since: datetime


def stock_now(conn: Conn, limit: int = 5000) -> list[Stock]:
    """What lies where now, by place and lot."""
    return [Stock(*r) for r in conn.execute(q.STOCK_NOW, {"limit": limit})]


def lot_history(conn: Conn, lot_id: int) -> list[Stay]:
    return [Stay(*r) for r in conn.execute(q.LOT_STAYS, {"lot": lot_id})]


def lot_movements(conn: Conn, lot_id: int) -> list[Movement]:
    return [Movement(*r) for r in conn.execute(q.LOT_MOVEMENTS, {"lot": lot_id})]


def create_shipment(
    conn: Conn,
    actor: str,
    shipment_id: str,
    vehicle_id: str,
    origin_site: str,
    destination: str,
    route: str = "",
) -> Shipment:
    with acting(conn, actor):
        kind = conn.execute(q.LOCATION_KIND, {"id": vehicle_id}).fetchone()
        if kind is None:
            raise NotFound(f"no location {vehicle_id!r}")
        if kind[0] != "vehicle":
            raise RuleViolation(f"{vehicle_id} is a {kind[0]}, not a vehicle")
        conn.execute(
            q.INSERT_SHIPMENT,
            {
                "id": shipment_id,
                "vehicle": vehicle_id,
                "origin": origin_site,
                "destination": destination,
                "route": route,
            },
        )
    return get_shipment(conn, shipment_id)


def get_shipment(conn: Conn, shipment_id: str) -> Shipment:
    row = conn.execute(q.SHIPMENT, {"id": shipment_id}).fetchone()
    if row is None:
        raise NotFound(f"no shipment {shipment_id!r}")
    return Shipment(*row)


def depart(conn: Conn, actor: str, shipment_id: str, at: datetime) -> Shipment:
    with acting(conn, actor):
        current = _locked_shipment(conn, shipment_id)
        if current.state != "planned":
            raise RuleViolation(
                f"shipment {shipment_id} is {current.state}; only a planned one departs"
            )
        if not shipment_lots(conn, shipment_id):
            raise RuleViolation(f"shipment {shipment_id} has no lots loaded")
        conn.execute(q.DEPART_SHIPMENT, {"id": shipment_id, "at": at})
    return get_shipment(conn, shipment_id)


def arrive(
    conn: Conn, actor: str, shipment_id: str, at: datetime, *, quarantine_to: str | None = None
) -> Shipment:
    """Close the shipment; refused while a lot it carried is still on the vehicle.

    With ``quarantine_to`` (a quarantine area), the lots still aboard that are quarantined or
    rejected are first moved there, each by a transfer of the shipment at the time of
    arrival: goods no customer may take come back into quarantine. A lot fit to deliver
    still aboard is not moved: its delivery or transfer is recorded first."""
    with acting(conn, actor):
        current = _locked_shipment(conn, shipment_id)
        if current.state != "in_transit":
            raise RuleViolation(f"shipment {shipment_id} is {current.state}, not in transit")
        if current.departed_at is not None and at < current.departed_at:
            raise RuleViolation(f"shipment {shipment_id} departed at {current.departed_at}")
        if quarantine_to is not None:
            _unload_into_quarantine(conn, actor, current, quarantine_to, at)
        aboard = [
            f"{lot.lot_number} ({lot.aboard})"
            for lot in shipment_lots(conn, shipment_id)
            if lot.aboard > 0
        ]
        if aboard:
            raise RuleViolation(
                f"shipment {shipment_id} still carries lot(s) {', '.join(aboard)}: record "
                "their delivery or transfer first (lots under quarantine or rejected: arrive "
                "with quarantine_to, a quarantine area they are moved into)"
            )
        conn.execute(q.ARRIVE_SHIPMENT, {"id": shipment_id, "at": at})
    return get_shipment(conn, shipment_id)


def _unload_into_quarantine(
    conn: Conn, actor: str, ship: Shipment, area: str, at: datetime
) -> None:
    row = conn.execute(q.QUARANTINE_AREA, {"id": area}).fetchone()
    if row is None:
        raise NotFound(f"no location {area!r}")
    if not row[0]:
        raise RuleViolation(f"{area} is not a quarantine area")
    aboard = [lot.lot_id for lot in shipment_lots(conn, ship.id) if lot.aboard > 0]
    stays = conn.execute(q.HELD_ABOARD, {"vehicle": ship.vehicle_id, "lots": aboard}).fetchall()
    for lot_id, location, quantity in stays:
        conn.execute(
            q.INSERT_MOVEMENT,
            {"lot": lot_id, "kind": "transfer", "from": location, "to": area, "qty": quantity,
             "at": at, "shipment": ship.id, "party": None, "by": actor},
        )  # fmt: skip


def shipment_lots(conn: Conn, shipment_id: str) -> list[ShipmentLot]:
    return [ShipmentLot(*r) for r in conn.execute(q.SHIPMENT_LOTS, {"id": shipment_id})]


def _locked_shipment(conn: Conn, shipment_id: str) -> Shipment:
    row: tuple[Any, ...] | None = conn.execute(
        q.SHIPMENT + " FOR UPDATE", {"id": shipment_id}
    ).fetchone()
    if row is None:
        raise NotFound(f"no shipment {shipment_id!r}")
    return Shipment(*row)


def find_movements(
    conn: Conn,
    *,
    lot_id: int | None = None,
    shipment_id: str | None = None,
    location_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[Movement]:
    params = {"lot": lot_id, "shipment": shipment_id, "location": location_id, "since": since,
              "until": until, "after": after_id, "limit": limit}  # fmt: skip
    return [Movement(*r) for r in conn.execute(q.FIND_MOVEMENTS, params)]


def find_shipments(
    conn: Conn,
    *,
    state: str | None = None,
    vehicle_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: str = "",
    limit: int = 100,
) -> list[Shipment]:
    params = {"state": state, "vehicle": vehicle_id, "since": since, "until": until,
              "after": after_id, "limit": limit}  # fmt: skip
    return [Shipment(*r) for r in conn.execute(q.FIND_SHIPMENTS, params)]
