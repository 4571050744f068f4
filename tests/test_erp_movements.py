"""Where lots were and when, and what may not move: on a real database."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from coldtrail.erp.holds import place_hold
from coldtrail.erp.movements import (
    arrive,
    create_shipment,
    depart,
    lot_history,
    lots_in_location,
    record_movement,
    shipment_lots,
)
from coldtrail.erp.products import register_lot
from coldtrail.errors import NotFound, RuleViolation
from tests.conftest import GTIN, T0, make_erp

Conn = psycopg.Connection[tuple[Any, ...]]
H = timedelta(hours=1)


def _receive(conn: Conn, number: str, qty: int, at: Any, where: str = "CR") -> int:
    lot = register_lot(conn, "logi1", GTIN, number)
    record_movement(conn, "logi1", lot.id, "receiving", qty, at, to_location=where, party="Acme")
    return lot.id


def _numbers(stays: list[Any]) -> list[str]:
    return sorted({s.lot_number for s in stays})


def test_lots_in_a_place_include_those_that_moved_on(conn: Conn) -> None:
    make_erp(conn)
    a = _receive(conn, "A1", 10, T0)
    _receive(conn, "B1", 5, T0 + H)
    create_shipment(conn, "logi1", "SH1", "TRK", "s1", "Pharmacy Mitte")
    record_movement(
        conn, "logi1", a, "loading", 10, T0 + 2 * H, from_location="CR", to_location="TC",
        shipment_id="SH1",
    )  # fmt: skip

    assert _numbers(lots_in_location(conn, "CR", T0, T0 + H / 2)) == ["A1"]
    assert _numbers(lots_in_location(conn, "CR", T0 + 3 * H, T0 + 4 * H)) == ["B1"]
    # A1 left the cold room at 2 h, but it was there during the excursion at 1.5-2.5 h.
    assert _numbers(lots_in_location(conn, "CR", T0 + 1.5 * H, T0 + 2.5 * H)) == ["A1", "B1"]
    # The truck's compartments count as the truck.
    assert _numbers(lots_in_location(conn, "TRK", T0, T0 + 2 * H)) == []
    in_truck = lots_in_location(conn, "TRK", T0 + 2 * H, T0 + 3 * H)
    assert [(s.lot_number, s.location_id, s.since) for s in in_truck] == [("A1", "TC", T0 + 2 * H)]


def test_a_partial_move_splits_the_lot_across_places(conn: Conn) -> None:
    make_erp(conn)
    lot = _receive(conn, "P1", 100, T0)
    record_movement(
        conn, "logi1", lot, "transfer", 30, T0 + H, from_location="CR", to_location="QZ"
    )

    history = [(s.location_id, s.quantity, s.since, s.until) for s in lot_history(conn, lot)]
    assert history == [
        ("CR", Decimal(100), T0, T0 + H),
        ("CR", Decimal(70), T0 + H, None),
        ("QZ", Decimal(30), T0 + H, None),
    ]


def test_moving_what_is_not_there_is_refused(conn: Conn) -> None:
    make_erp(conn)
    lot = _receive(conn, "M1", 10, T0)
    with pytest.raises(RuleViolation, match="has only 10 in location CR, not 11"):
        record_movement(
            conn, "logi1", lot, "transfer", 11, T0 + H, from_location="CR", to_location="QZ"
        )
    with pytest.raises(RuleViolation, match="is not in location TC"):
        record_movement(
            conn, "logi1", lot, "transfer", 1, T0 + H, from_location="TC", to_location="QZ"
        )
    with pytest.raises(NotFound, match="no record with"):
        record_movement(conn, "logi1", 999, "receiving", 1, T0, to_location="CR")
    with pytest.raises(RuleViolation, match="names two different locations"):
        record_movement(conn, "logi1", lot, "transfer", 1, T0 + H, from_location="CR")


def test_a_movement_before_the_last_one_is_refused(conn: Conn) -> None:
    make_erp(conn)
    lot = _receive(conn, "O1", 10, T0 + H)
    with pytest.raises(RuleViolation, match="would rewrite its history"):
        record_movement(conn, "logi1", lot, "transfer", 5, T0, from_location="CR", to_location="QZ")


def test_a_quarantined_lot_goes_nowhere_but_a_quarantine_area(conn: Conn) -> None:
    make_erp(conn)
    lot = _receive(conn, "Q1", 10, T0)
    create_shipment(conn, "logi1", "SH1", "TRK", "s1", "Clinic")
    place_hold(conn, "qa1", lot, "probe reading 9.1 °C", T0 + H)

    with pytest.raises(RuleViolation, match="is quarantined: it may only be transferred"):
        record_movement(
            conn, "logi1", lot, "loading", 10, T0 + 2 * H, from_location="CR",
            to_location="TC", shipment_id="SH1",
        )  # fmt: skip
    with pytest.raises(RuleViolation, match="is quarantined"):
        record_movement(
            conn, "logi1", lot, "transfer", 10, T0 + 2 * H, from_location="CR", to_location="TC"
        )
    record_movement(
        conn, "logi1", lot, "transfer", 10, T0 + 2 * H, from_location="CR", to_location="QZ"
    )
    assert [s.location_id for s in lot_history(conn, lot) if s.until is None] == ["QZ"]


def test_the_status_of_a_lot_changes_only_through_holds(conn: Conn) -> None:
    make_erp(conn)
    lot = _receive(conn, "S1", 10, T0)
    with pytest.raises(psycopg.errors.RaiseException, match="only through holds"):
        conn.execute("UPDATE lots SET status = 'released' WHERE id = %s", (lot,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="GxP record"):
        conn.execute("DELETE FROM movements")


def test_a_shipment_departs_loaded_and_arrives_empty(conn: Conn) -> None:
    make_erp(conn)
    lot = _receive(conn, "D1", 10, T0)
    ship = create_shipment(conn, "logi1", "SH1", "TRK", "s1", "Hospital Nord", "A7 north")
    with pytest.raises(RuleViolation, match="no lots loaded"):
        depart(conn, "logi1", ship.id, T0 + H)
    with pytest.raises(RuleViolation, match="is not on vehicle TRK"):
        record_movement(
            conn, "logi1", lot, "loading", 10, T0 + H, from_location="CR", to_location="QZ",
            shipment_id="SH1",
        )  # fmt: skip
    record_movement(
        conn, "logi1", lot, "loading", 10, T0 + H, from_location="CR", to_location="TC",
        shipment_id="SH1",
    )  # fmt: skip
    with pytest.raises(RuleViolation, match="delivered while it is in transit"):
        record_movement(
            conn, "logi1", lot, "delivery", 4, T0 + H, from_location="TC", shipment_id="SH1"
        )
    depart(conn, "logi1", "SH1", T0 + 2 * H)
    record_movement(
        conn, "logi1", lot, "delivery", 4, T0 + 3 * H, from_location="TC", shipment_id="SH1",
        party="Hospital Nord",
    )  # fmt: skip
    with pytest.raises(RuleViolation, match=r"still carries lot\(s\) D1 \(6\)"):
        arrive(conn, "logi1", "SH1", T0 + 4 * H)
    record_movement(
        conn, "logi1", lot, "delivery", 6, T0 + 3.5 * H, from_location="TC", shipment_id="SH1"
    )
    done = arrive(conn, "logi1", "SH1", T0 + 4 * H)

    assert (done.state, done.departed_at, done.arrived_at) == ("delivered", T0 + 2 * H, T0 + 4 * H)
    [carried] = shipment_lots(conn, "SH1")
    assert (carried.lot_number, carried.loaded, carried.delivered, carried.aboard) == (
        "D1", Decimal(10), Decimal(10), Decimal(0),
    )  # fmt: skip
    with pytest.raises(RuleViolation, match="is a compartment, not a vehicle"):
        create_shipment(conn, "logi1", "SH2", "TC", "s1", "x")


def test_two_shipments_on_one_vehicle_are_counted_apart(conn: Conn) -> None:
    make_erp(conn)
    lot = _receive(conn, "V1", 20, T0)
    for ship in ("SH1", "SH2"):
        create_shipment(conn, "logi1", ship, "TRK", "s1", "Clinic")
    record_movement(
        conn, "logi1", lot, "loading", 5, T0 + H, from_location="CR", to_location="TC",
        shipment_id="SH1",
    )  # fmt: skip
    record_movement(
        conn, "logi1", lot, "loading", 7, T0 + H, from_location="CR", to_location="TC",
        shipment_id="SH2",
    )  # fmt: skip
    depart(conn, "logi1", "SH1", T0 + 2 * H)
    record_movement(
        conn, "logi1", lot, "delivery", 5, T0 + 3 * H, from_location="TC", shipment_id="SH1"
    )
    # SH2's goods are still on the truck; SH1 is empty and may close.
    assert arrive(conn, "logi1", "SH1", T0 + 4 * H).state == "delivered"
    [on_two] = shipment_lots(conn, "SH2")
    assert (on_two.loaded, on_two.aboard) == (Decimal(7), Decimal(7))
    # Unloading back into the store under the shipment takes it off the count.
    record_movement(
        conn, "logi1", lot, "transfer", 7, T0 + 5 * H, from_location="TC", to_location="CR",
        shipment_id="SH2",
    )  # fmt: skip
    [after] = shipment_lots(conn, "SH2")
    assert (after.delivered, after.aboard) == (Decimal(0), Decimal(0))
