"""CAPA from opening to a signed close, on a real database."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from coldtrail.erp import audit
from coldtrail.erp.capa import (
    CloseSignature,
    NewCapa,
    Step,
    add_action,
    add_evidence,
    advance,
    complete_action,
    evidence_content,
    get_capa,
    open_capa,
    overdue,
)
from coldtrail.erp.signatures import Credentials
from coldtrail.errors import Conflict, RuleViolation, SignatureRefused
from tests.conftest import QA_PASSWORD, T0, make_erp

Conn = psycopg.Connection[tuple[Any, ...]]
D = timedelta(days=1)
TODAY = T0.date()
SIGN = CloseSignature("qa1", Credentials("qa1", QA_PASSWORD), "approval", "effective")


def _capa(conn: Conn) -> int:
    make_erp(conn)
    capa = open_capa(
        conn,
        "qa1",
        NewCapa(
            "Truck 01 compressor failure",
            owner="qa1",
            due_date=TODAY + timedelta(days=30),
            links=(("excursion", "17"), ("lot", "4")),
        ),
        T0,
    )
    return capa.id


def test_a_capa_runs_its_course_to_a_signed_close(conn: Conn) -> None:
    capa_id = _capa(conn)
    advance(conn, "qa1", capa_id, Step("investigation"), T0 + D)
    with pytest.raises(RuleViolation, match="root cause"):
        advance(conn, "qa1", capa_id, Step("actions"), T0 + 2 * D)
    advance(conn, "qa1", capa_id, Step("actions", root_cause="worn relay"), T0 + 2 * D)
    with pytest.raises(RuleViolation, match="has no actions to check"):
        advance(conn, "qa1", capa_id, Step("effectiveness_check"), T0 + 3 * D)
    relay = add_action(conn, "qa1", capa_id, "Replace relay", "logi1", TODAY + 7 * D)
    add_action(conn, "qa1", capa_id, "Add relay to PM plan", "qa1", TODAY + 14 * D)
    complete_action(conn, "logi1", capa_id, relay.id, "relay replaced, tested 4 h", T0 + 3 * D)
    with pytest.raises(RuleViolation, match="actions not done"):
        advance(conn, "qa1", capa_id, Step("effectiveness_check"), T0 + 4 * D)
    plan = get_capa(conn, capa_id).actions[1]
    complete_action(conn, "qa1", capa_id, plan.id, "PM plan rev. 3", T0 + 4 * D)
    advance(conn, "qa1", capa_id, Step("effectiveness_check"), T0 + 5 * D)
    with pytest.raises(RuleViolation, match="needs an electronic signature"):
        advance(conn, "qa1", capa_id, Step("closed", effectiveness="no repeat"), T0 + 30 * D)
    bad = CloseSignature("qa1", Credentials("qa1", "wrong-password!"), "approval", "x")
    with pytest.raises(SignatureRefused):
        advance(conn, "qa1", capa_id, Step("closed", effectiveness="ok"), T0 + 30 * D, bad)
    closed = advance(
        conn, "qa1", capa_id, Step("closed", effectiveness="no repeat in 30 days"), T0 + 30 * D,
        SIGN,
    )  # fmt: skip

    assert (closed.state, closed.closed_at, closed.root_cause) == (
        "closed", T0 + 30 * D, "worn relay",
    )  # fmt: skip
    assert [t.to_state for t in closed.transitions] == [
        "open", "investigation", "actions", "effectiveness_check", "closed",
    ]  # fmt: skip
    assert [(s.signer_name, s.action, s.meaning) for s in closed.signatures] == [
        ("Quinn Auditt", "close", "approval")
    ]
    assert closed.links == (("excursion", "17"), ("lot", "4"))
    with pytest.raises(RuleViolation, match="is closed"):
        add_action(conn, "qa1", capa_id, "late idea", "qa1", TODAY)
    kinds = [r[0] for r in conn.execute("SELECT kind FROM outbox_events ORDER BY id")]
    assert kinds == ["capa.opened"] + ["capa.advanced"] * 3 + ["capa.closed"]
    assert [e.action for e in audit.entries(conn, record_type="capa")] == ["signature_failed"]


def test_an_ineffective_check_goes_back_to_actions_with_a_reason(conn: Conn) -> None:
    capa_id = _capa(conn)
    advance(conn, "qa1", capa_id, Step("investigation"), T0)
    advance(conn, "qa1", capa_id, Step("actions", root_cause="door seal"), T0)
    action = add_action(conn, "qa1", capa_id, "New seal", "logi1", TODAY + D)
    complete_action(conn, "logi1", capa_id, action.id, "fitted", T0 + D)
    advance(conn, "qa1", capa_id, Step("effectiveness_check"), T0 + D)

    with pytest.raises(RuleViolation, match="why the actions were not effective"):
        advance(conn, "qa1", capa_id, Step("actions"), T0 + 2 * D)
    back = advance(conn, "qa1", capa_id, Step("actions", comment="leaks again"), T0 + 2 * D)
    assert back.state == "actions"
    with pytest.raises(RuleViolation, match="it can go to effectiveness_check"):
        advance(conn, "qa1", capa_id, Step("closed"), T0 + 3 * D, SIGN)


def test_a_stale_step_is_refused(conn: Conn) -> None:
    capa_id = _capa(conn)
    advance(conn, "qa1", capa_id, Step("investigation", expected_state="open"), T0)
    with pytest.raises(Conflict, match="is investigation now, not open"):
        advance(conn, "qa2", capa_id, Step("investigation", expected_state="open"), T0)


def test_evidence_is_kept_with_its_hash_and_never_changed(conn: Conn) -> None:
    capa_id = _capa(conn)
    content = b"%PDF-1.4 service report"
    ev = add_evidence(conn, "qa1", capa_id, "service-report.pdf", "application/pdf", content, T0)

    assert ev.sha256 == hashlib.sha256(content).hexdigest()
    meta, data = evidence_content(conn, capa_id, ev.id)
    assert (meta.filename, meta.size, data) == ("service-report.pdf", len(content), content)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE capa_evidence SET content = 'x'")
    [entry] = audit.entries(conn, record_type="capa_evidence")
    assert "content" not in entry.new_value
    with pytest.raises(RuleViolation):
        add_evidence(conn, "qa1", capa_id, "../etc/passwd", "text/plain", b"x", T0)


def test_overdue_capas_and_actions_are_reported(conn: Conn) -> None:
    capa_id = _capa(conn)
    advance(conn, "qa1", capa_id, Step("investigation"), T0)
    add_action(conn, "qa1", capa_id, "Check logger", "logi1", TODAY + 3 * D)

    assert overdue(conn, TODAY + 3 * D) == []
    late = overdue(conn, TODAY + 40 * D)
    assert [(o.what, o.days_late) for o in late] == [
        ("action 1: Check logger", 37),
        ("capa", 10),
    ]
