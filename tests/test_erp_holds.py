"""Holds and their signed disposition (21 CFR Part 11), on a real database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest

from coldtrail.clock import ManualClock
from coldtrail.erp import audit
from coldtrail.erp.holds import dispose, find_holds, place_hold
from coldtrail.erp.movements import record_movement
from coldtrail.erp.products import get_lot, register_lot
from coldtrail.erp.signatures import Credentials, digest
from coldtrail.errors import RuleViolation, SignatureRefused
from coldtrail.rules.engine import RulesEngine
from coldtrail.rules.impact import CapaPolicy
from tests.conftest import GTIN, QA_PASSWORD, T0, make_erp
from tests.test_rules_event_time import _store

Conn = psycopg.Connection[tuple[Any, ...]]
H = timedelta(hours=1)
QA1 = Credentials("qa1", QA_PASSWORD)
QA2 = Credentials("qa2", QA_PASSWORD)


def _held_lot(conn: Conn) -> tuple[int, int]:
    lot = register_lot(conn, "logi1", GTIN, "H1")
    record_movement(conn, "logi1", lot.id, "receiving", 10, T0, to_location="CR")
    hold = place_hold(conn, "qa1", lot.id, "cold room at 9.4 °C for 42 min", T0 + H)
    return lot.id, hold.id


def _events(conn: Conn) -> list[tuple[str, str]]:
    return [
        (r[0], r[1]) for r in conn.execute("SELECT kind, subject FROM outbox_events ORDER BY id")
    ]


def test_release_without_a_valid_signature_fails_and_is_audited(conn: Conn) -> None:
    make_erp(conn)
    lot, hold = _held_lot(conn)

    def release(session: str, creds: Credentials) -> None:
        dispose(conn, session, hold, "release", creds, "approval", "stable", T0 + 2 * H)

    with pytest.raises(SignatureRefused, match="user id or password is wrong"):
        release("qa1", Credentials("qa1", "not-the-password"))
    with pytest.raises(SignatureRefused, match="sign as yourself"):
        release("qa1", QA2)
    with pytest.raises(SignatureRefused, match="role logistics may not sign"):
        release("logi1", Credentials("logi1", QA_PASSWORD))

    assert get_lot(conn, lot).status == "quarantined"
    failures = audit.entries(conn, record_type="hold", record_id=str(hold))
    assert [(e.actor, e.action, e.new_value["as"]) for e in failures] == [
        ("qa1", "signature_failed", "qa1"),
        ("qa1", "signature_failed", "qa2"),
        ("logi1", "signature_failed", "logi1"),
    ]
    assert conn.execute("SELECT count(*) FROM signatures").fetchone() == (0,)


def test_release_with_a_signature_frees_the_lot_and_is_audited(conn: Conn) -> None:
    make_erp(conn)
    lot, hold = _held_lot(conn)

    done = dispose(
        conn, "qa1", hold, "release", QA1, "approval", "MKT 5.9 °C, within stability data",
        T0 + 2 * H,
    )  # fmt: skip

    assert done.state == "released"
    assert done.disposed_at == T0 + 2 * H
    [sig] = done.signatures
    assert (sig.signer, sig.signer_name, sig.meaning, sig.signed_at, sig.action) == (
        "qa1", "Quinn Auditt", "approval", T0 + 2 * H, "release",
    )  # fmt: skip
    assert len(sig.record_digest) == 64
    assert get_lot(conn, lot).status == "released"
    trail = audit.entries(conn, record_type="holds", record_id=str(hold))
    assert [(e.actor, e.action) for e in trail] == [("qa1", "insert"), ("qa1", "update")]
    assert (trail[1].old_value["state"], trail[1].new_value["state"]) == ("open", "released")
    [signed] = audit.entries(conn, record_type="signatures")
    assert signed.new_value["signer_name"] == "Quinn Auditt"
    assert [e.new_value["status"] for e in audit.entries(conn, record_type="lots")][-1] == (
        "released"
    )
    assert _events(conn) == [("hold.placed", f"lot/{lot}"), ("hold.released", f"lot/{lot}")]
    # A released lot moves again.
    record_movement(
        conn, "logi1", lot, "transfer", 10, T0 + 3 * H, from_location="CR", to_location="QZ"
    )


def test_a_two_signer_release_needs_two_different_people(conn: Conn) -> None:
    make_erp(conn, release_signatures=2)
    lot, hold = _held_lot(conn)

    first = dispose(conn, "qa1", hold, "release", QA1, "review", "data reviewed", T0 + 2 * H)
    assert first.state == "open"
    assert get_lot(conn, lot).status == "quarantined"
    with pytest.raises(SignatureRefused, match="must come from someone else"):
        dispose(conn, "qa1", hold, "release", QA1, "approval", "again", T0 + 2 * H)
    second = dispose(conn, "qa2", hold, "release", QA2, "approval", "approved", T0 + 3 * H)

    assert second.state == "released"
    assert [(s.signer_name, s.meaning) for s in second.signatures] == [
        ("Quinn Auditt", "review"),
        ("Mara Manager", "approval"),
    ]
    assert [k for k, _ in _events(conn)] == ["hold.placed", "hold.signed", "hold.released"]


def test_a_rejection_is_final(conn: Conn) -> None:
    make_erp(conn)
    lot, hold = _held_lot(conn)
    dispose(conn, "qa1", hold, "reject", QA1, "responsibility", "above 8 °C for 6 h", T0 + 2 * H)

    assert get_lot(conn, lot).status == "rejected"
    with pytest.raises(RuleViolation, match="was rejected already"):
        dispose(conn, "qa2", hold, "release", QA2, "approval", "changed my mind", T0 + 3 * H)
    with pytest.raises(RuleViolation, match="is rejected already"):
        place_hold(conn, "qa1", lot, "another one", T0 + 3 * H)
    with pytest.raises(RuleViolation, match="is rejected"):
        record_movement(
            conn, "logi1", lot, "transfer", 10, T0 + 3 * H, from_location="CR", to_location="TC"
        )
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="GxP record"):
        conn.execute("UPDATE signatures SET reason = 'edited'")


def test_one_excursion_holds_a_lot_once(conn: Conn) -> None:
    make_erp(conn)
    lot = register_lot(conn, "logi1", GTIN, "E1")
    exc = conn.execute(
        "INSERT INTO location_excursions (location_id, started_at, last_seen_at, sensors, "
        "limit_min_c, limit_max_c, min_c, max_c, duration_s, degree_minutes, detected_at) "
        "VALUES ('CR', %s, %s, '{S1}', 2, 8, 9, 9, 0, 0, %s) RETURNING id",
        (T0, T0, T0),
    ).fetchone()
    assert exc is not None
    one = place_hold(conn, "system:rules", lot.id, "excursion", T0, excursion_id=exc[0])
    two = place_hold(conn, "system:rules", lot.id, "excursion", T0 + H, excursion_id=exc[0])

    assert one == two
    assert [h.id for h in find_holds(conn, lot_id=lot.id)] == [one.id]
    assert [k for k, _ in _events(conn)] == ["hold.placed"]


def test_a_lot_is_not_released_while_its_excursion_is_still_open(
    conn: Conn, db_url: str, clock: ManualClock
) -> None:
    """Released at 9.9 °C, the room went on to 14.7 °C and the lot stayed released: a release
    now waits for the excursion to close, or names it, signed."""
    make_erp(conn)
    lot = register_lot(conn, "logi1", GTIN, "OPEN1")
    record_movement(conn, "logi1", lot.id, "receiving", 10, T0, to_location="CR")
    _store(conn, "S1", [(m, 5.0 if m < 60 else 9.9) for m in range(0, 90, 5)])
    clock.advance(2 * 3600)
    engine = RulesEngine(db_url, clock=clock, capa=CapaPolicy(owner="qa1"))
    engine.process_pending(conn)
    [hold] = find_holds(conn, state="open")
    [exc] = [r[0] for r in conn.execute("SELECT id FROM location_excursions WHERE state = 'open'")]

    def release(*named: int) -> Any:
        return dispose(
            conn, "qa1", hold.id, "release", QA1, "approval",
            "stability data cover 48 h at 15 °C; patient waiting", T0 + 2 * H,
            open_excursions=named,
        )  # fmt: skip

    with pytest.raises(RuleViolation, match=f"still open \\({exc} at CR since"):
        release()
    with pytest.raises(RuleViolation, match="still open"):
        release(exc + 1)  # not the one that is open
    assert get_lot(conn, lot.id).status == "quarantined"
    assert conn.execute("SELECT count(*) FROM signatures").fetchone() == (0,)
    # Named, it is released; what was signed says so.
    done = release(exc)
    assert done.state == "released"
    [sig] = done.signatures
    row = conn.execute("SELECT record_digest FROM signatures").fetchone()
    assert row is not None
    signed = {
        "record": {**hold.record(), "released_during_open_excursions": [exc]},
        "action": "release",
        "meaning": "approval",
        "reason": "stability data cover 48 h at 15 °C; patient waiting",
        "signer": "qa1",
        "signed_at": (T0 + 2 * H).isoformat(),
    }
    assert bytes(row[0]).hex() == sig.record_digest == digest(signed).hex()


def test_a_lot_is_released_plainly_once_its_excursion_closed(
    conn: Conn, db_url: str, clock: ManualClock
) -> None:
    make_erp(conn)
    lot = register_lot(conn, "logi1", GTIN, "CLOSED1")
    record_movement(conn, "logi1", lot.id, "receiving", 10, T0, to_location="CR")
    _store(conn, "S1", [(m, 9.9 if 30 <= m < 60 else 5.0) for m in range(0, 120, 5)])
    clock.advance(3 * 3600)
    RulesEngine(db_url, clock=clock, capa=CapaPolicy(owner="qa1")).process_pending(conn)
    [hold] = find_holds(conn, state="open")
    done = dispose(
        conn, "qa1", hold.id, "release", QA1, "approval", "MKT within stability", T0 + 3 * H
    )
    assert done.state == "released"
