"""Electronic signatures (21 CFR Part 11 §11.50, §11.70, §11.200).

Each signing asks for both components again, user id and password, whatever session the
signer is in; the signature stores the printed name, time and meaning, and a SHA-256 of
the record as signed, and can't be changed or removed afterwards.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from coldtrail.erp import audit, people
from coldtrail.erp import queries as q
from coldtrail.erp.people import Role, User
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import AccountLocked, SignatureRefused

Meaning = Literal["authorship", "review", "approval", "responsibility", "verification"]
SIGNER_ROLES = frozenset({Role.QA, Role.ADMIN})


@dataclass(frozen=True)
class Credentials:
    """What the signer types at the moment of signing."""

    username: str
    password: str
    client: str = "local"
    """Where they were typed (the client's address): failures lock the name there only."""


@dataclass(frozen=True)
class Signature:
    id: int
    signer: str
    signer_name: str
    signer_role: str
    meaning: Meaning
    reason: str
    signed_at: datetime
    record_type: str
    record_id: int
    action: str
    record_digest: str
    """Hex SHA-256 of the record as it stood when signed."""


def check_signer(
    conn: Conn,
    session_user: str,
    credentials: Credentials,
    record_type: str,
    record_id: int | str,
    action: str,
    now: datetime | None = None,
    roles: frozenset[Role] = SIGNER_ROLES,
) -> User:
    """The signer, if the credentials are right, belong to the person logged in, and that
    person may sign (holds one of ``roles``). A refusal is written to the audit trail in a
    transaction of its own (so call this outside any transaction) before SignatureRefused is
    raised."""
    reason: str | None = None
    locked: str | None = None
    try:
        # Failed signatures count towards the same lock-out as failed logins (11.300(d)).
        user = people.authenticate(
            conn, credentials.username, credentials.password, now, credentials.client
        )
    except AccountLocked as exc:
        user, locked = None, str(exc)
    if credentials.username != session_user:
        reason = f"sign as yourself: you are logged in as {session_user}"
    elif locked is not None:
        reason = f"signature refused: {locked}"
    elif user is None:
        reason = "signature refused: user id or password is wrong"
    elif user.role not in roles:
        reason = f"role {user.role.value} may not sign a {action}"
    if reason is not None or user is None:
        with acting(conn, session_user):
            audit.record(
                conn,
                session_user,
                "signature_failed",
                record_type,
                str(record_id),
                {"action": action, "as": credentials.username, "reason": reason},
            )
        raise SignatureRefused(reason or "signature refused")
    return user


def digest(record: dict[str, Any]) -> bytes:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).digest()


def add(
    conn: Conn,
    signer: User,
    *,
    meaning: Meaning,
    reason: str,
    signed_at: datetime,
    record_type: str,
    record_id: int,
    action: str,
    record: dict[str, Any],
) -> Signature:
    """Store a signature over ``record``, in the caller's transaction."""
    if not reason.strip():
        raise SignatureRefused("a signature needs a reason")
    signed = {
        "record": record,
        "action": action,
        "meaning": meaning,
        "reason": reason,
        "signer": signer.username,
        "signed_at": signed_at.isoformat(),
    }
    row = conn.execute(
        q.INSERT_SIGNATURE,
        {
            "signer": signer.username,
            "name": signer.full_name,
            "role": signer.role.value,
            "meaning": meaning,
            "reason": reason,
            "at": signed_at,
            "type": record_type,
            "id": record_id,
            "action": action,
            "digest": digest(signed),
        },
    ).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns its row
    return _signature(row)


def of_record(conn: Conn, record_type: str, record_id: int) -> list[Signature]:
    return of_records(conn, record_type, [record_id]).get(record_id, [])


def of_records(conn: Conn, record_type: str, record_ids: list[int]) -> dict[int, list[Signature]]:
    """The signatures of many records in one query, by record id, each list in signing order."""
    found: dict[int, list[Signature]] = {}
    for row in conn.execute(q.SIGNATURES_OF, {"type": record_type, "ids": record_ids}):
        sig = _signature(row)
        found.setdefault(sig.record_id, []).append(sig)
    return found


def _signature(row: tuple[Any, ...]) -> Signature:
    sid, signer, name, role, meaning, reason, at, rtype, rid, action, raw = row
    return Signature(
        sid, signer, name, role, meaning, reason, at, rtype, rid, action, bytes(raw).hex()
    )
