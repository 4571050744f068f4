"""Holds (quarantine) on lots and their disposition by signed release or rejection.

A lot's status follows from its holds (a trigger keeps ``lots.status``); nothing else
changes it. A release needs as many signatures from different people as the product's
profile says (1 or 2); a rejection needs one and is final.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from coldtrail.erp import outbox, signatures
from coldtrail.erp import queries as q
from coldtrail.erp.signatures import Credentials, Meaning, Signature
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import NotFound, RuleViolation, SignatureRefused

HoldState = Literal["open", "released", "rejected"]
Disposition = Literal["release", "reject"]


@dataclass(frozen=True)
class Hold:
    id: int
    lot_id: int
    gtin: str
    lot_number: str
    reason: str
    excursion_id: int | None
    placed_by: str
    placed_at: datetime
    state: HoldState
    disposed_at: datetime | None
    signatures: tuple[Signature, ...] = ()

    def record(self) -> dict[str, Any]:
        """The fields a signature vouches for."""
        return {
            "hold": self.id,
            "lot": self.lot_id,
            "gtin": self.gtin,
            "lot_number": self.lot_number,
            "reason": self.reason,
            "excursion": self.excursion_id,
            "placed_by": self.placed_by,
            "placed_at": self.placed_at.isoformat(),
        }

    def event(self) -> dict[str, Any]:
        return {
            **self.record(),
            "state": self.state,
            "disposed_at": self.disposed_at.isoformat() if self.disposed_at else None,
            "signatures": [
                {
                    "signer": s.signer,
                    "name": s.signer_name,
                    "meaning": s.meaning,
                    "action": s.action,
                    "reason": s.reason,
                    "signed_at": s.signed_at.isoformat(),
                }
                for s in self.signatures
            ],
        }


def place_hold(
    conn: Conn,
    actor: str,
    lot_id: int,
    reason: str,
    at: datetime,
    *,
    excursion_id: int | None = None,
) -> Hold:
    """Quarantine a lot. For an excursion, a second call returns the first hold unchanged."""
    if not reason.strip():
        raise RuleViolation("a hold needs a reason")
    with acting(conn, actor):
        row = conn.execute(
            q.INSERT_HOLD,
            {"lot": lot_id, "reason": reason, "excursion": excursion_id, "by": actor, "at": at},
        ).fetchone()
        if row is None:  # this excursion holds this lot already
            existing = conn.execute(
                q.HOLD_FOR_EXCURSION, {"lot": lot_id, "excursion": excursion_id}
            ).fetchone()
            assert existing is not None  # noqa: S101 - the conflict names it
            return get_hold(conn, existing[0])
        hold = get_hold(conn, row[0])
        outbox.emit(conn, "hold.placed", f"lot/{lot_id}", hold.event(), at)
        return hold


def dispose(
    conn: Conn,
    session_user: str,
    hold_id: int,
    disposition: Disposition,
    credentials: Credentials,
    meaning: Meaning,
    reason: str,
    at: datetime,
    *,
    open_excursions: Sequence[int] = (),
) -> Hold:
    """Sign a release or a rejection of an open hold. Call outside a transaction: a refused
    signature is audited in a transaction of its own.

    A lot is not released while an excursion that touched it is still open (it may go on,
    as the compartment went from 9.9 to 14.7 °C after one such release): unless the signer
    names every such excursion in ``open_excursions``, and the signed record then says so."""
    signer = signatures.check_signer(
        conn, session_user, credentials, "hold", hold_id, disposition, at
    )
    with acting(conn, signer.username):
        state = conn.execute(q.HOLD_LOCK, {"id": hold_id}).fetchone()
        if state is None:
            raise NotFound(f"no hold {hold_id}")
        hold = get_hold(conn, hold_id)
        if hold.state != "open":
            raise RuleViolation(f"hold {hold_id} was {hold.state} already at {hold.disposed_at}")
        needed = 1
        record = hold.record()
        if disposition == "release":
            still_open = conn.execute(q.OPEN_EXCURSIONS_OF_LOT, {"lot": hold.lot_id}).fetchall()
            ids = sorted(int(r[0]) for r in still_open)
            if ids and sorted(set(open_excursions)) != ids:
                shown = "; ".join(
                    f"{r[0]} at {r[1]} since {r[2].isoformat()}, {r[3]:.1f} °C so far"
                    for r in still_open
                )
                raise RuleViolation(
                    f"lot {hold.lot_id} was touched by excursion(s) still open ({shown}): "
                    "release it once they close, or name each in open_excursions and say why "
                    "in the reason"
                )
            if ids:
                record = {**record, "released_during_open_excursions": ids}
            row = conn.execute(q.RELEASE_SIGNATURES_NEEDED, {"id": hold_id}).fetchone()
            needed = int(row[0]) if row else 1
            prior = [s for s in hold.signatures if s.action == "release"]
            if any(s.signer == signer.username for s in prior):
                raise SignatureRefused(
                    f"you signed the release of hold {hold_id} already; the second signature "
                    "must come from someone else"
                )
            done = len(prior) + 1 >= needed
        else:
            done = True
        signatures.add(
            conn,
            signer,
            meaning=meaning,
            reason=reason,
            signed_at=at,
            record_type="hold",
            record_id=hold_id,
            action=disposition,
            record=record,
        )
        if done:
            new_state = "released" if disposition == "release" else "rejected"
            conn.execute(q.DISPOSE_HOLD, {"id": hold_id, "state": new_state, "at": at})
        hold = get_hold(conn, hold_id)
        kind = f"hold.{hold.state}" if done else "hold.signed"
        outbox.emit(conn, kind, f"lot/{hold.lot_id}", {**hold.event(), "needed": needed}, at)
        return hold


def get_hold(conn: Conn, hold_id: int) -> Hold:
    row = conn.execute(q.HOLD, {"id": hold_id}).fetchone()
    if row is None:
        raise NotFound(f"no hold {hold_id}")
    return _hold(row, signatures.of_record(conn, "hold", hold_id))


def find_holds(
    conn: Conn,
    *,
    state: HoldState | None = None,
    lot_id: int | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[Hold]:
    rows = conn.execute(
        q.HOLDS, {"state": state, "lot": lot_id, "after": after_id, "limit": limit}
    ).fetchall()
    signed = signatures.of_records(conn, "hold", [r[0] for r in rows])
    return [_hold(r, signed.get(r[0], [])) for r in rows]


def _hold(row: tuple[Any, ...], signed: list[Signature]) -> Hold:
    (hold_id, lot_id, gtin, number, reason, excursion, by, at, state, disposed) = row
    return Hold(
        hold_id, lot_id, gtin, number, reason, excursion, by, at, state, disposed, tuple(signed)
    )  # fmt: skip
