"""An excursion holds exactly the lots that were in its place while it lasted."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import psycopg

from coldtrail.clock import ManualClock
from coldtrail.erp.capa import evidence_content, get_capa
from coldtrail.erp.holds import find_holds
from coldtrail.erp.movements import create_shipment, depart, record_movement
from coldtrail.erp.products import get_lot, register_lot
from coldtrail.rules.engine import RulesEngine
from coldtrail.rules.impact import Budget, CapaPolicy, lot_budget
from tests.conftest import GTIN, T0, make_erp
from tests.test_rules_event_time import _store

Conn = psycopg.Connection[tuple[Any, ...]]
H = timedelta(hours=1)


def test_an_excursion_in_the_truck_holds_only_the_lots_in_the_truck_then(
    conn: Conn, db_url: str, clock: ManualClock
) -> None:
    make_erp(conn)  # S1 in cold room CR, S2 in truck compartment TC, both 2-8 °C
    conn.execute("UPDATE locations SET alarm_delay_s = 300")

    def lot(number: str) -> int:
        lot_id = register_lot(conn, "logi1", GTIN, number).id
        record_movement(conn, "logi1", lot_id, "receiving", 10, T0, to_location="CR")
        return lot_id

    on_truck, stayed, later = lot("A"), lot("B"), lot("C")
    for ship in ("SH1", "SH2"):
        create_shipment(conn, "logi1", ship, "TRK", "s1", "Clinic")
    record_movement(conn, "logi1", on_truck, "loading", 10, T0 + H, from_location="CR",
                    to_location="TC", shipment_id="SH1")  # fmt: skip
    depart(conn, "logi1", "SH1", T0 + 1.2 * H)
    # Delivered after the excursion: it moved on, and is held all the same.
    record_movement(conn, "logi1", on_truck, "delivery", 10, T0 + 3 * H, from_location="TC",
                    shipment_id="SH1")  # fmt: skip
    record_movement(conn, "logi1", later, "loading", 10, T0 + 4 * H, from_location="CR",
                    to_location="TC", shipment_id="SH2")  # fmt: skip

    every_5_min = range(0, 6 * 60, 5)
    _store(conn, "S1", [(m, 5.0) for m in every_5_min])
    _store(conn, "S2", [(m, 12.0 if 120 <= m < 150 else 5.0) for m in every_5_min])
    clock.advance(6 * 3600)
    engine = RulesEngine(db_url, clock=clock, capa=CapaPolicy(owner="qa1"))
    engine.process_pending(conn)

    [exc] = conn.execute("SELECT id, location_id FROM location_excursions").fetchall()
    assert exc[1] == "TC"
    holds = find_holds(conn, state="open")
    assert [(h.lot_id, h.excursion_id, h.placed_by) for h in holds] == [
        (on_truck, exc[0], "system:rules")
    ]
    assert "excursion" in holds[0].reason
    assert [get_lot(conn, x).status for x in (on_truck, stayed, later)] == [
        "quarantined", "available", "available",
    ]  # fmt: skip
    # Exposed 30 minutes, on shipment SH1, charged to the lot's stability budget.
    assert conn.execute(
        "SELECT lot_id, shipment_id, minutes FROM excursion_impacts"
    ).fetchall() == [(on_truck, "SH1", 30.0)]
    assert lot_budget(conn, on_truck) == Budget(120, 30.0, None)
    # One CAPA to investigate it, linked to all of it, with the readings attached.
    [capa_id] = [r[0] for r in conn.execute("SELECT capa_id FROM location_excursions")]
    capa = get_capa(conn, capa_id)
    assert set(capa.links) == {
        ("excursion", str(exc[0])), ("lot", str(on_truck)), ("hold", str(holds[0].id)),
        ("shipment", "SH1"),
    }  # fmt: skip
    [evidence] = capa.evidence
    _, content = evidence_content(conn, capa_id, evidence.id)
    rows = list(csv.DictReader(io.StringIO(content.decode())))
    # The six readings out of range, with those of 15 minutes either side.
    temps = [float(r["temperature_c"]) for r in rows if r["sensor"] == "S2"]
    assert temps == [5.0] * 3 + [12.0] * 6 + [5.0] * 4
    # Judging again raises nothing twice.
    engine.judge_sensors(conn, {"S2": T0})
    assert len(find_holds(conn)) == 1
    kinds = [
        r[0]
        for r in conn.execute(
            "SELECT kind FROM outbox_events WHERE kind NOT LIKE 'alarm.%' ORDER BY id"
        )
    ]
    assert kinds == ["excursion.opened", "excursion.closed", "hold.placed", "capa.opened"]


def test_a_products_alarm_delay_applies_where_the_place_sets_none(
    conn: Conn, db_url: str, clock: ManualClock
) -> None:
    """The demo's 2-8 °C profile said 120 s, yet the first 8.1 °C reading held both insulin
    lots: every place defaulted to a delay of 0, and the shortest delay wins. Now a place's
    delay is unset unless set, and the product's applies."""
    make_erp(conn)  # the 2-8 profile: 300 s; cold room CR: no delay of its own
    conn.execute("UPDATE temperature_profiles SET alarm_delay_s = 120")
    lot_id = register_lot(conn, "logi1", GTIN, "D1").id
    record_movement(conn, "logi1", lot_id, "receiving", 10, T0, to_location="CR")
    # One minute at 8.1 °C: shorter than the product's 2 minutes.
    _store(conn, "S1", [(m, 8.1 if m == 10 else 5.0) for m in range(0, 30)])
    clock.advance(3600)
    engine = RulesEngine(db_url, clock=clock, capa=CapaPolicy(owner="qa1"))
    engine.process_pending(conn)
    assert conn.execute("SELECT count(*) FROM location_excursions").fetchone() == (0,)
    assert get_lot(conn, lot_id).status == "available"
    # Three minutes: past it, an excursion, and the lot held.
    _store(conn, "S1", [(m, 8.6 if 40 <= m < 43 else 5.0) for m in range(30, 60)])
    engine.process_pending(conn)
    assert conn.execute("SELECT count(*) FROM location_excursions").fetchone() == (1,)
    assert get_lot(conn, lot_id).status == "quarantined"
    # A delay set on the place, shorter, is the one that counts there.
    conn.execute("UPDATE locations SET alarm_delay_s = 0 WHERE id = 'CR'")
    _store(conn, "S1", [(m, 8.3 if m == 70 else 5.0) for m in range(60, 90)])
    engine.process_pending(conn)
    assert conn.execute("SELECT count(*) FROM location_excursions").fetchone() == (2,)


def test_the_texts_the_rules_wrote_follow_the_excursion_until_someone_acts(
    conn: Conn, db_url: str, clock: ManualClock
) -> None:
    """A hold's reason and a CAPA's description were frozen at detection ("8.1..8.1 °C ...
    (0 min)") while the excursion went on."""
    from coldtrail.erp import audit
    from coldtrail.erp.capa import get_capa
    from coldtrail.erp.holds import dispose
    from coldtrail.erp.signatures import Credentials
    from tests.conftest import QA_PASSWORD

    make_erp(conn)
    lot_id = register_lot(conn, "logi1", GTIN, "T1").id
    record_movement(conn, "logi1", lot_id, "receiving", 10, T0, to_location="CR")
    engine = RulesEngine(db_url, clock=clock, capa=CapaPolicy(owner="qa1"))
    _store(conn, "S1", [(m, 8.1 if m >= 10 else 5.0) for m in range(0, 20)])
    clock.advance(3600)
    engine.process_pending(conn)
    [hold] = find_holds(conn, state="open")
    assert "read 8.1..8.1 °C" in hold.reason
    assert hold.reason.endswith("so far 9 min")
    _store(conn, "S1", [(m, 9.9) for m in range(20, 40)])  # still going
    engine.process_pending(conn)
    [hold] = find_holds(conn, state="open")
    assert "read 8.1..9.9 °C" in hold.reason
    assert hold.reason.endswith("so far 29 min")
    [(capa_id,)] = conn.execute("SELECT capa_id FROM location_excursions").fetchall()
    assert "8.1..9.9 °C" in get_capa(conn, capa_id).description
    revisions = [
        e for e in audit.entries(conn, record_type="holds", limit=100) if e.action == "update"
    ]
    assert [e.actor for e in revisions] == ["system:rules"]
    # Signed for (rejected) while it goes on: what was signed stays as it was.
    dispose(conn, "qa1", hold.id, "reject", Credentials("qa1", QA_PASSWORD), "approval",
            "too warm too long", T0 + 2 * H)  # fmt: skip
    _store(conn, "S1", [(m, 12.0 if m < 50 else 5.0) for m in range(40, 60)])
    engine.process_pending(conn)
    assert conn.execute("SELECT count(*) FROM location_excursions").fetchone() == (1,)
    assert conn.execute("SELECT reason FROM holds WHERE id = %s", (hold.id,)).fetchone() == (
        hold.reason,
    )
