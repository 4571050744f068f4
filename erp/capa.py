"""CAPA: corrective and preventive action, from opening to a signed close.

open → investigation → actions → effectiveness_check → closed; an effectiveness check that
fails sends the CAPA back to actions. Each step checks what it needs (a root cause before
actions, every action done before the check, a signed approval to close) and is recorded
in ``capa_transitions`` for cycle times, and in the audit trail.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from coldtrail.erp import outbox, signatures
from coldtrail.erp import queries as q
from coldtrail.erp.signatures import Credentials, Meaning, Signature
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import Conflict, NotFound, RuleViolation

CapaState = Literal["open", "investigation", "actions", "effectiveness_check", "closed"]
LinkKind = Literal["excursion", "lot", "hold", "shipment"]
NEXT: dict[str, frozenset[str]] = {
    "open": frozenset({"investigation"}),
    "investigation": frozenset({"actions"}),
    "actions": frozenset({"effectiveness_check"}),
    "effectiveness_check": frozenset({"closed", "actions"}),
    "closed": frozenset(),
}
MAX_EVIDENCE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class CapaAction:
    id: int
    description: str
    owner: str
    due_date: date
    done_at: datetime | None
    done_by: str | None
    outcome: str | None


@dataclass(frozen=True)
class Evidence:
    id: int
    filename: str
    media_type: str
    sha256: str
    size: int
    added_by: str
    added_at: datetime


@dataclass(frozen=True)
class Transition:
    from_state: CapaState | None
    to_state: CapaState
    at: datetime
    by_user: str
    comment: str


@dataclass(frozen=True)
class Capa:
    id: int
    title: str
    description: str
    state: CapaState
    owner: str
    due_date: date
    opened_by: str
    opened_at: datetime
    root_cause: str | None
    effectiveness: str | None
    closed_at: datetime | None
    actions: tuple[CapaAction, ...] = ()
    links: tuple[tuple[LinkKind, str], ...] = ()
    evidence: tuple[Evidence, ...] = ()
    transitions: tuple[Transition, ...] = ()
    signatures: tuple[Signature, ...] = ()

    def summary(self) -> dict[str, Any]:
        return {
            "capa": self.id,
            "title": self.title,
            "state": self.state,
            "owner": self.owner,
            "due_date": self.due_date.isoformat(),
            "links": [{"kind": k, "ref": r} for k, r in self.links],
        }


@dataclass(frozen=True)
class Overdue:
    capa_id: int
    title: str
    owner: str
    what: str
    """'capa', or 'action <id>: <description>'"""
    due_date: date
    days_late: int


@dataclass(frozen=True)
class NewCapa:
    title: str
    owner: str
    due_date: date
    description: str = ""
    links: tuple[tuple[LinkKind, str], ...] = field(default_factory=tuple)


def open_capa(conn: Conn, actor: str, new: NewCapa, at: datetime) -> Capa:
    with acting(conn, actor):
        row = conn.execute(
            q.INSERT_CAPA,
            {
                "title": new.title,
                "description": new.description,
                "owner": new.owner,
                "due": new.due_date,
                "by": actor,
                "at": at,
            },
        ).fetchone()
        assert row is not None  # noqa: S101 - INSERT ... RETURNING returns its row
        capa_id = int(row[0])
        conn.execute(
            q.INSERT_TRANSITION,
            {"capa": capa_id, "from": None, "to": "open", "at": at, "by": actor, "comment": ""},
        )
        for kind, ref in new.links:
            conn.execute(q.INSERT_CAPA_LINK, {"capa": capa_id, "kind": kind, "ref": ref})
        capa = get_capa(conn, capa_id)
        outbox.emit(conn, "capa.opened", f"capa/{capa_id}", capa.summary(), at)
        return capa


def link(conn: Conn, actor: str, capa_id: int, kind: LinkKind, ref: str) -> Capa:
    with acting(conn, actor):
        _state(conn, capa_id, writable=True)
        conn.execute(q.INSERT_CAPA_LINK, {"capa": capa_id, "kind": kind, "ref": ref})
        return get_capa(conn, capa_id)


def add_action(
    conn: Conn, actor: str, capa_id: int, description: str, owner: str, due_date: date
) -> CapaAction:
    with acting(conn, actor):
        state = _state(conn, capa_id, writable=True)
        if state not in ("investigation", "actions"):
            raise RuleViolation(
                f"CAPA {capa_id} is {state}: actions are planned during investigation or actions"
            )
        row = conn.execute(
            q.INSERT_CAPA_ACTION,
            {"capa": capa_id, "description": description, "owner": owner, "due": due_date},
        ).fetchone()
        assert row is not None  # noqa: S101 - INSERT ... RETURNING returns its row
        return CapaAction(*row)


def complete_action(
    conn: Conn, actor: str, capa_id: int, action_id: int, outcome: str, at: datetime
) -> CapaAction:
    if not outcome.strip():
        raise RuleViolation("say what the action achieved (outcome)")
    with acting(conn, actor):
        state = _state(conn, capa_id, writable=True)
        if state != "actions":
            raise RuleViolation(f"CAPA {capa_id} is {state}: actions are completed in 'actions'")
        row = conn.execute(
            q.COMPLETE_CAPA_ACTION,
            {"capa": capa_id, "id": action_id, "by": actor, "at": at, "outcome": outcome},
        ).fetchone()
        if row is None:
            raise Conflict(f"action {action_id} of CAPA {capa_id} does not exist or is done")
        return CapaAction(*row)


def add_evidence(
    conn: Conn,
    actor: str,
    capa_id: int,
    filename: str,
    media_type: str,
    content: bytes,
    at: datetime,
) -> Evidence:
    if len(content) > MAX_EVIDENCE_BYTES:
        raise RuleViolation(f"evidence files are limited to {MAX_EVIDENCE_BYTES} bytes")
    with acting(conn, actor):
        _state(conn, capa_id, writable=True)
        row = conn.execute(
            q.INSERT_EVIDENCE,
            {
                "capa": capa_id,
                "filename": filename,
                "media_type": media_type,
                "sha256": hashlib.sha256(content).digest(),
                "content": content,
                "by": actor,
                "at": at,
            },
        ).fetchone()
        assert row is not None  # noqa: S101 - INSERT ... RETURNING returns its row
        return _evidence(row)


def evidence_content(conn: Conn, capa_id: int, evidence_id: int) -> tuple[Evidence, bytes]:
    row = conn.execute(q.EVIDENCE_CONTENT, {"capa": capa_id, "id": evidence_id}).fetchone()
    if row is None:
        raise NotFound(f"no evidence {evidence_id} on CAPA {capa_id}")
    return _evidence(row[:-1]), bytes(row[-1])


@dataclass(frozen=True)
class Step:
    to_state: CapaState
    comment: str = ""
    root_cause: str | None = None
    effectiveness: str | None = None
    expected_state: CapaState | None = None
    """The state the caller saw; if it changed meanwhile the step is refused (Conflict)."""


@dataclass(frozen=True)
class CloseSignature:
    session_user: str
    credentials: Credentials
    meaning: Meaning
    reason: str


def advance(
    conn: Conn,
    actor: str,
    capa_id: int,
    step: Step,
    at: datetime,
    signature: CloseSignature | None = None,
) -> Capa:
    """Move the CAPA one step. Closing needs an e-signature; call that outside a transaction
    (a refused signature is audited in a transaction of its own)."""
    signer = None
    _check_transition(capa_id, _state(conn, capa_id, writable=True), step)
    if step.to_state == "closed":
        if signature is None:
            raise RuleViolation("closing a CAPA needs an electronic signature")
        signer = signatures.check_signer(
            conn, signature.session_user, signature.credentials, "capa", capa_id, "close", at
        )
        actor = signer.username
    with acting(conn, actor):
        state = _state(conn, capa_id, writable=True)  # locked: checked again
        _check_transition(capa_id, state, step)
        capa = get_capa(conn, capa_id)
        _check_step(capa, step)
        conn.execute(
            q.ADVANCE_CAPA,
            {
                "id": capa_id,
                "to": step.to_state,
                "root_cause": step.root_cause,
                "effectiveness": step.effectiveness,
                "closed_at": at if step.to_state == "closed" else None,
            },
        )
        conn.execute(
            q.INSERT_TRANSITION,
            {
                "capa": capa_id,
                "from": state,
                "to": step.to_state,
                "at": at,
                "by": actor,
                "comment": step.comment,
            },
        )
        if signer is not None and signature is not None:
            signatures.add(
                conn,
                signer,
                meaning=signature.meaning,
                reason=signature.reason,
                signed_at=at,
                record_type="capa",
                record_id=capa_id,
                action="close",
                record={**capa.summary(), "root_cause": capa.root_cause,
                        "effectiveness": step.effectiveness or capa.effectiveness},
            )  # fmt: skip
        capa = get_capa(conn, capa_id)
        kind = "capa.closed" if step.to_state == "closed" else "capa.advanced"
        outbox.emit(conn, kind, f"capa/{capa_id}", {**capa.summary(), "from": state}, at)
        return capa


def _check_transition(capa_id: int, state: CapaState, step: Step) -> None:
    if step.expected_state is not None and step.expected_state != state:
        raise Conflict(f"CAPA {capa_id} is {state} now, not {step.expected_state}")
    if step.to_state not in NEXT[state]:
        allowed = ", ".join(sorted(NEXT[state])) or "nothing"
        raise RuleViolation(f"CAPA {capa_id} is {state}: it can go to {allowed}")


def _check_step(capa: Capa, step: Step) -> None:
    root_cause = (step.root_cause or capa.root_cause or "").strip()
    if step.to_state == "actions" and capa.state == "investigation" and not root_cause:
        raise RuleViolation("state the root cause before planning actions")
    rework = step.to_state == "actions" and capa.state == "effectiveness_check"
    if rework and not step.comment.strip():
        raise RuleViolation("say why the actions were not effective (comment)")
    if step.to_state == "effectiveness_check":
        if not capa.actions:
            raise RuleViolation(f"CAPA {capa.id} has no actions to check")
        pending = [a.id for a in capa.actions if a.done_at is None]
        if pending:
            raise RuleViolation(f"CAPA {capa.id} has actions not done: {pending}")
    if step.to_state == "closed" and not (step.effectiveness or capa.effectiveness or "").strip():
        raise RuleViolation("record the result of the effectiveness check before closing")


def get_capa(conn: Conn, capa_id: int) -> Capa:
    row = conn.execute(q.CAPA, {"id": capa_id}).fetchone()
    if row is None:
        raise NotFound(f"no CAPA {capa_id}")
    actions = tuple(CapaAction(*r) for r in conn.execute(q.CAPA_ACTIONS, {"capa": capa_id}))
    links = tuple((r[0], r[1]) for r in conn.execute(q.CAPA_LINKS, {"capa": capa_id}))
    evidence = tuple(_evidence(r) for r in conn.execute(q.CAPA_EVIDENCE, {"capa": capa_id}))
    steps = tuple(Transition(*r) for r in conn.execute(q.CAPA_TRANSITIONS, {"capa": capa_id}))
    signed = tuple(signatures.of_record(conn, "capa", capa_id))
    cid, title, text, state, owner, due, by, at, cause, effect, closed = row
    return Capa(
        cid, title, text, state, owner, due, by, at, cause, effect, closed,
        actions, links, evidence, steps, signed,
    )  # fmt: skip


def find_capas(
    conn: Conn, *, state: CapaState | None = None, after_id: int = 0, limit: int = 100
) -> list[Capa]:
    ids = [
        r[0] for r in conn.execute(q.CAPA_IDS, {"state": state, "after": after_id, "limit": limit})
    ]
    return [get_capa(conn, i) for i in ids]


def overdue(conn: Conn, today: date) -> list[Overdue]:
    """CAPAs not closed by their due date, and their actions not done by theirs."""
    return [Overdue(*r) for r in conn.execute(q.CAPA_OVERDUE, {"today": today})]


def _state(conn: Conn, capa_id: int, *, writable: bool) -> CapaState:
    row = conn.execute(q.CAPA_LOCK, {"id": capa_id}).fetchone()
    if row is None:
        raise NotFound(f"no CAPA {capa_id}")
    state: CapaState = row[0]
    if writable and state == "closed":
        raise RuleViolation(f"CAPA {capa_id} is closed; open a new one to act again")
    return state


def _evidence(row: tuple[Any, ...]) -> Evidence:
    eid, name, media, digest, size, by, at = row
    return Evidence(eid, name, media, bytes(digest).hex(), size, by, at)
