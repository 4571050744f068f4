"""Rejected goods out of the site: back to the supplier, or destroyed, each a movement signed
by QA in the transaction that records it (migration 0020 refuses either unsigned).

The path a GSP QA manager expects of a rejected lot: it is kept apart in a quarantine area
(from a vehicle, the shipment's arrival moves it there), and leaves from there only, to the
supplier it came from or to destruction, with the party who took it and the signer's reason
on record. A lot still under quarantine (an open hold) leaves by neither: its decision is to
come first. Only a rejected lot is destroyed; an available or released one may go back to its
supplier (a recall, a commercial return), signed all the same.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from coldtrail.erp import outbox, signatures
from coldtrail.erp import queries as q
from coldtrail.erp.movements import Movement
from coldtrail.erp.signatures import Credentials, Meaning, Signature
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import RuleViolation

Exit = Literal["return_to_supplier", "destruction"]
EXITS: tuple[Exit, ...] = ("return_to_supplier", "destruction")


def leave(
    conn: Conn,
    session_user: str,
    lot_id: int,
    kind: Exit,
    quantity: Decimal | int,
    at: datetime,
    *,
    from_location: str,
    party: str,
    credentials: Credentials,
    meaning: Meaning,
    reason: str,
) -> tuple[Movement, Signature]:
    """Record the goods leaving and sign it. Call outside a transaction: a refused signature
    is audited in a transaction of its own."""
    if kind not in EXITS:
        raise RuleViolation(f"goods leave by {' or '.join(EXITS)}, not {kind}")
    if not party.strip():
        who = "supplier who takes them back" if kind == "return_to_supplier" else "destroyer"
        raise RuleViolation(f"a {kind.replace('_', ' ')} names the {who} (party)")
    signer = signatures.check_signer(conn, session_user, credentials, "lot", lot_id, kind, at)
    with acting(conn, signer.username):
        row = conn.execute(
            q.INSERT_MOVEMENT,
            {"lot": lot_id, "kind": kind, "from": from_location, "to": None,
             "qty": Decimal(quantity), "at": at, "shipment": None, "party": party.strip(),
             "by": signer.username},
        ).fetchone()  # fmt: skip
        if row is None:  # INSERT ... RETURNING returns its row
            raise RuntimeError("the movement was not recorded")
        movement = Movement(*row)
        record = {
            "movement": movement.id,
            "lot_id": lot_id,
            "kind": kind,
            "from_location": from_location,
            "quantity": str(movement.quantity),
            "at": at.isoformat(),
            "party": movement.party,
        }
        signature = signatures.add(
            conn, signer, meaning=meaning, reason=reason, signed_at=at,
            record_type="movement", record_id=movement.id, action=kind, record=record,
        )  # fmt: skip
        event = "lot.returned_to_supplier" if kind == "return_to_supplier" else "lot.destroyed"
        outbox.emit(conn, event, f"lot/{lot_id}", {**record, "signed_by": signer.username}, at)
    return movement, signature
