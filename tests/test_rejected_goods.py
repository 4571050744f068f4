"""Rejected goods have a way out: into quarantine off the truck, then back to the supplier or
to destruction, each signed by QA; on a real database."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from coldtrail.erp import audit
from coldtrail.erp.disposal import leave
from coldtrail.erp.holds import dispose, place_hold
from coldtrail.erp.movements import (
    arrive,
    create_shipment,
    depart,
    lot_history,
    lot_movements,
    record_movement,
    shipment_lots,
)
from coldtrail.erp.products import get_lot, register_lot
from coldtrail.erp.signatures import Credentials, of_record
from coldtrail.errors import RuleViolation, SignatureRefused
from tests.conftest import GTIN, QA_PASSWORD, T0, make_erp

Conn = psycopg.Connection[tuple[Any, ...]]
H = timedelta(hours=1)
QA1 = Credentials("qa1", QA_PASSWORD)


def _lot(conn: Conn, number: str, qty: int = 10) -> int:
    lot = register_lot(conn, "logi1", GTIN, number).id
    record_movement(conn, "logi1", lot, "receiving", qty, T0, to_location="CR", party="Acme")
    return lot


def _reject(conn: Conn, lot: int, at: Any) -> None:
    hold = place_hold(conn, "qa1", lot, "compartment at 14.7 °C for 3 h", at)
    dispose(conn, "qa1", hold.id, "reject", QA1, "responsibility", "beyond stability data", at)


def _out(conn: Conn, lot: int, kind: Any, qty: int, at: Any, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "from_location": "QZ", "party": "Acme Pharma 退货部", "credentials": QA1,
        "meaning": "approval", "reason": "rejected after excursion", **kw,
    }  # fmt: skip
    session = args.pop("session", "qa1")
    return leave(conn, session, lot, kind, qty, at, **args)


def test_a_shipment_arrives_carrying_its_rejected_lot_into_quarantine(conn: Conn) -> None:
    make_erp(conn)
    bad, good = _lot(conn, "R1"), _lot(conn, "G1")
    create_shipment(conn, "logi1", "SH1", "TRK", "s1", "Clinic 5")
    for lot in (bad, good):
        record_movement(conn, "logi1", lot, "loading", 10, T0 + H, from_location="CR",
                        to_location="TC", shipment_id="SH1")  # fmt: skip
    depart(conn, "logi1", "SH1", T0 + 2 * H)
    _reject(conn, bad, T0 + 3 * H)

    # Rejected: no customer takes it, and it goes nowhere but quarantine.
    with pytest.raises(RuleViolation, match="lot 1 is rejected: it goes to a quarantine area"):
        record_movement(conn, "logi1", bad, "delivery", 10, T0 + 4 * H, from_location="TC",
                        shipment_id="SH1")  # fmt: skip
    with pytest.raises(RuleViolation, match="arrive with quarantine_to"):
        arrive(conn, "logi1", "SH1", T0 + 5 * H)
    with pytest.raises(RuleViolation, match="CR is not a quarantine area"):
        arrive(conn, "logi1", "SH1", T0 + 5 * H, quarantine_to="CR")
    # A lot fit to deliver is not swept into quarantine: it is delivered (or moved) first.
    with pytest.raises(RuleViolation, match=r"still carries lot\(s\) G1 \(10\)"):
        arrive(conn, "logi1", "SH1", T0 + 5 * H, quarantine_to="QZ")
    record_movement(conn, "logi1", good, "delivery", 10, T0 + 4 * H, from_location="TC",
                    shipment_id="SH1", party="Clinic 5")  # fmt: skip

    done = arrive(conn, "logi1", "SH1", T0 + 5 * H, quarantine_to="QZ")
    assert done.state == "delivered"
    assert [(s.location_id, s.quantity, s.until) for s in lot_history(conn, bad)][-1] == (
        "QZ", Decimal(10), None,
    )  # fmt: skip
    last = lot_movements(conn, bad)[-1]
    assert (last.kind, last.from_location, last.to_location, last.shipment_id, last.at) == (
        "transfer", "TC", "QZ", "SH1", T0 + 5 * H,
    )  # fmt: skip
    assert all(x.aboard == 0 for x in shipment_lots(conn, "SH1"))


def test_a_rejected_lot_leaves_quarantine_to_its_supplier_and_to_destruction_signed(
    conn: Conn,
) -> None:
    make_erp(conn)
    lot = _lot(conn, "R2")
    _reject(conn, lot, T0 + H)
    # Not from the cold room: rejected goods wait in quarantine.
    with pytest.raises(RuleViolation, match="it leaves from a quarantine area, not from CR"):
        _out(conn, lot, "destruction", 10, T0 + 2 * H, from_location="CR")
    record_movement(conn, "logi1", lot, "transfer", 10, T0 + 2 * H, from_location="CR",
                    to_location="QZ")  # fmt: skip

    # Never unsigned, never signed by the wrong person or password; each refusal audited.
    with pytest.raises(RuleViolation, match="is signed by QA"):
        record_movement(conn, "logi1", lot, "destruction", 10, T0 + 3 * H, from_location="QZ")
    with pytest.raises(SignatureRefused, match="user id or password is wrong"):
        _out(conn, lot, "destruction", 10, T0 + 3 * H, credentials=Credentials("qa1", "nope"))
    with pytest.raises(SignatureRefused, match="role logistics may not sign"):
        _out(conn, lot, "destruction", 10, T0 + 3 * H, session="logi1",
             credentials=Credentials("logi1", QA_PASSWORD))  # fmt: skip
    with pytest.raises(RuleViolation, match="names the destroyer"):
        _out(conn, lot, "destruction", 10, T0 + 3 * H, party="  ")
    failed = audit.entries(conn, record_type="lot", record_id=str(lot))
    assert [(e.actor, e.action) for e in failed if e.action == "signature_failed"] == [
        ("qa1", "signature_failed"), ("logi1", "signature_failed"),
    ]  # fmt: skip

    back, signed = _out(conn, lot, "return_to_supplier", 4, T0 + 3 * H)
    assert (back.kind, back.quantity, back.party, back.recorded_by) == (
        "return_to_supplier", Decimal(4), "Acme Pharma 退货部", "qa1",
    )  # fmt: skip
    assert (signed.record_type, signed.record_id, signed.action) == (
        "movement", back.id, "return_to_supplier",
    )  # fmt: skip
    gone, _ = _out(conn, lot, "destruction", 6, T0 + 4 * H, party="医疗废物处置中心 (witness: qa2)")
    assert [s.action for s in of_record(conn, "movement", gone.id)] == ["destruction"]
    # Nothing of it is anywhere now; its history says where every part went.
    assert [s for s in lot_history(conn, lot) if s.until is None] == []
    assert [m.kind for m in lot_movements(conn, lot)][-2:] == ["return_to_supplier", "destruction"]
    events = conn.execute("SELECT kind FROM outbox_events ORDER BY id").fetchall()
    assert [e[0] for e in events][-2:] == ["lot.returned_to_supplier", "lot.destroyed"]
    # More than is left can't go.
    with pytest.raises(RuleViolation):
        _out(conn, lot, "destruction", 1, T0 + 5 * H)


def test_goods_under_quarantine_wait_for_the_decision_and_good_goods_are_not_destroyed(
    conn: Conn,
) -> None:
    make_erp(conn)
    held, fine = _lot(conn, "Q3"), _lot(conn, "A3")
    place_hold(conn, "qa1", held, "cold room at 9.4 °C", T0 + H)
    record_movement(conn, "logi1", held, "transfer", 10, T0 + 2 * H, from_location="CR",
                    to_location="QZ")  # fmt: skip
    for kind in ("return_to_supplier", "destruction"):
        with pytest.raises(RuleViolation, match="is quarantined"):
            _out(conn, held, kind, 10, T0 + 3 * H)
    with pytest.raises(RuleViolation, match="only a rejected lot is destroyed"):
        _out(conn, fine, "destruction", 10, T0 + 3 * H, from_location="CR")
    # A recall: available goods go back to the supplier, signed all the same.
    back, _ = _out(conn, fine, "return_to_supplier", 10, T0 + 3 * H, from_location="CR")
    assert back.from_location == "CR"
    assert get_lot(conn, fine).status == "available"


def test_the_database_refuses_goods_leaving_without_a_signature(conn: Conn) -> None:
    make_erp(conn)
    lot = _lot(conn, "R4")
    _reject(conn, lot, T0 + H)
    record_movement(conn, "logi1", lot, "transfer", 10, T0 + 2 * H, from_location="CR",
                    to_location="QZ")  # fmt: skip
    insert = (
        "INSERT INTO movements (lot_id, kind, from_location, quantity, at, party, recorded_by)"
        " VALUES (%s, 'destruction', 'QZ', 10, %s, %s, 'logi1')"
    )

    def unsigned(party: str) -> None:
        with conn.transaction():
            conn.execute("SELECT set_config('coldtrail.actor', 'logi1', true)")
            conn.execute(insert, (lot, T0 + 3 * H, party))

    with pytest.raises(psycopg.errors.RaiseException, match="is signed by QA in the same"):
        unsigned("someone")  # refused at commit, when its signature would be there
    with pytest.raises(psycopg.errors.CheckViolation):
        unsigned(" ")
    assert [s.location_id for s in lot_history(conn, lot) if s.until is None] == ["QZ"]
