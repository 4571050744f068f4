"""Compliance KPIs: how complete the temperature record is, how fast excursions are
answered, how long CAPAs take, and how many lots can be traced from their receipt."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from coldtrail.erp import queries as q
from coldtrail.erp.movements import get_shipment
from coldtrail.erp.tx import Conn
from coldtrail.errors import RuleViolation

# China GSP (DOMAIN.md): a record at least every 30 min in storage, every 5 min in transport.
STORAGE_INTERVAL_S = 1800
TRANSPORT_INTERVAL_S = 300


@dataclass(frozen=True)
class Completeness:
    """Of the GSP recording intervals in the period, per sensor placed in the location, how
    many hold at least one valid reading."""

    location_id: str
    sensors: int
    intervals_expected: int
    intervals_recorded: int

    @property
    def ratio(self) -> float | None:
        if self.intervals_expected == 0:
            return None
        return self.intervals_recorded / self.intervals_expected


@dataclass(frozen=True)
class Durations:
    count: int
    median_s: float | None
    p90_s: float | None
    max_s: float | None


@dataclass(frozen=True)
class ExcursionResponse:
    excursions: int
    acknowledged: Durations
    """raised → acknowledged"""
    unacknowledged: int
    disposed: Durations
    """raised → last disposition of the lots it put on hold"""
    holds_open: int


@dataclass(frozen=True)
class CapaCycle:
    closed: Durations
    open: int
    overdue: int


@dataclass(frozen=True)
class Traceability:
    lots: int
    traced_from_receipt: int
    """Lots whose history starts with a receiving: the movement trigger leaves no hole after."""
    without_movements: int

    @property
    def ratio(self) -> float | None:
        moved = self.lots - self.without_movements
        return self.traced_from_receipt / moved if moved else None


def record_completeness(
    conn: Conn,
    start: datetime,
    end: datetime,
    location_ids: list[str] | None = None,
    *,
    storage_s: int = STORAGE_INTERVAL_S,
    transport_s: int = TRANSPORT_INTERVAL_S,
) -> list[Completeness]:
    """``storage_s``/``transport_s``: the recording intervals to count by (a compliance
    profile's; GSP's by default)."""
    _period(start, end)
    rows = conn.execute(
        q.KPI_COMPLETENESS,
        {
            "start": start,
            "end": end,
            "locs": location_ids,
            "storage_s": storage_s,
            "transport_s": transport_s,
        },
    ).fetchall()
    return [Completeness(*r) for r in rows]


def shipment_completeness(conn: Conn, shipment_id: str, now: datetime) -> list[Completeness]:
    """Completeness over the shipment's journey, for the vehicle and each compartment."""
    ship = get_shipment(conn, shipment_id)
    if ship.departed_at is None:
        return []
    end = ship.arrived_at or now
    locations = [r[0] for r in conn.execute(q.VEHICLE_LOCATIONS, {"vehicle": ship.vehicle_id})]
    if end <= ship.departed_at:
        return []
    return record_completeness(conn, ship.departed_at, end, locations)


def excursion_response(conn: Conn, start: datetime, end: datetime) -> ExcursionResponse:
    _period(start, end)
    row = conn.execute(q.KPI_EXCURSION_RESPONSE, {"start": start, "end": end}).fetchone()
    assert row is not None  # noqa: S101 - an aggregate returns one row
    total, unacked, ack_n, ack_med, ack_p90, ack_max, d_n, d_med, d_p90, d_max, open_ = row
    return ExcursionResponse(
        total,
        Durations(ack_n, ack_med, ack_p90, ack_max),
        unacked,
        Durations(d_n, d_med, d_p90, d_max),
        open_,
    )


def capa_cycle(conn: Conn, start: datetime, end: datetime) -> CapaCycle:
    _period(start, end)
    row = conn.execute(q.KPI_CAPA_CYCLE, {"start": start, "end": end}).fetchone()
    assert row is not None  # noqa: S101 - an aggregate returns one row
    n, med, p90, longest, open_, overdue = row
    return CapaCycle(Durations(n, med, p90, longest), open_, overdue)


def traceability(conn: Conn) -> Traceability:
    row = conn.execute(q.KPI_TRACEABILITY).fetchone()
    assert row is not None  # noqa: S101 - an aggregate returns one row
    return Traceability(*row)


def _period(start: datetime, end: datetime) -> None:
    if end <= start:
        raise RuleViolation("the end of the period must be after its start")


def report(conn: Conn, start: datetime, end: datetime) -> dict[str, object]:
    """Every KPI over one period, as JSON-ready data."""
    completeness = record_completeness(conn, start, end)
    traced = traceability(conn)
    return {
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "record_completeness": [{**asdict(c), "ratio": c.ratio} for c in completeness],
        "excursion_response": asdict(excursion_response(conn, start, end)),
        "capa_cycle": asdict(capa_cycle(conn, start, end)),
        "traceability": {**asdict(traced), "ratio": traced.ratio},
    }
