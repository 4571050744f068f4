"""The audit trail (21 CFR 11.10(e)): explicit entries for what no table change shows
(logins, failed logins, signatures, exports), and the check of its hash chain.

Changes to GxP tables are written by triggers (migration 0005), whoever makes them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from coldtrail.erp import queries as q
from coldtrail.erp.tx import Conn

GENESIS = bytes(32)


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    record_type: str
    record_id: str | None
    old_value: Any
    new_value: Any


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    rows: int
    head: str
    """Hex SHA-256 of the newest row: write it down elsewhere to anchor the chain."""
    first_broken_id: int | None = None
    reason: str | None = None


def record(
    conn: Conn,
    actor: str,
    action: str,
    record_type: str,
    record_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append an entry that no table change carries (login, signature, export ...), inside
    ``erp.tx.acting(conn, actor)``: the database refuses an entry naming anyone but the user
    the transaction acts as."""
    conn.execute(
        q.AUDIT_RECORD,
        {
            "actor": actor,
            "action": action,
            "type": record_type,
            "id": record_id,
            "details": Jsonb(details) if details is not None else None,
        },
    )


def entries(
    conn: Conn,
    *,
    record_type: str | None = None,
    record_id: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[AuditEntry]:
    params = {"after": after_id}
    return _found(conn, q.AUDIT_ENTRIES, record_type, record_id, actor, since, until, limit, params)


def latest(
    conn: Conn,
    *,
    record_type: str | None = None,
    record_id: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int = 2**63 - 1,
    limit: int = 100,
) -> list[AuditEntry]:
    """Like :func:`entries`, newest first: a screen shows what happened last."""
    params = {"before": before_id}
    return _found(conn, q.AUDIT_LATEST, record_type, record_id, actor, since, until, limit, params)


def _found(
    conn: Conn, query: str, record_type: str | None, record_id: str | None, actor: str | None,
    since: datetime | None, until: datetime | None, limit: int, paging: dict[str, int],
) -> list[AuditEntry]:  # fmt: skip
    rows = conn.execute(
        query,
        {"type": record_type, "id": record_id, "actor": actor, "since": since, "until": until,
         "limit": limit, **paging},
    ).fetchall()  # fmt: skip
    return [AuditEntry(*r) for r in rows]


def message(prev_hash: bytes, fields: tuple[str, ...]) -> bytes:
    """The bytes a row's hash covers; the same as coldtrail_audit_message() in SQL."""
    parts = [prev_hash]
    for f in fields:
        data = f.encode("utf-8")
        parts.append(f"{len(data)}:".encode() + data)
    return b"".join(parts)


def verify(conn: Conn, batch: int = 5000) -> ChainCheck:
    """Recompute the chain from the first row; name the first row that does not fit."""
    expected_prev = GENESIS
    rows = 0
    last_id = 0
    with conn.transaction(), conn.cursor(name="coldtrail_audit_verify") as cur:
        cur.itersize = batch
        cur.execute(q.AUDIT_CHAIN)
        for rid, at, actor, action, rtype, rec, old, new, prev, digest in cur:
            rows += 1
            prev, digest = bytes(prev), bytes(digest)
            if prev != expected_prev:
                return ChainCheck(
                    False,
                    rows,
                    expected_prev.hex(),
                    rid,
                    f"row {rid} does not follow row {last_id}: a row before it was removed, "
                    "inserted or changed",
                )
            fields = (str(rid), _utc(at), actor, action, rtype, rec or "", old or "", new or "")
            if hashlib.sha256(message(prev, fields)).digest() != digest:
                return ChainCheck(
                    False, rows, expected_prev.hex(), rid, f"row {rid} was changed after writing"
                )
            expected_prev, last_id = digest, rid
    head = conn.execute(q.AUDIT_HEAD).fetchone()
    if head is None or (int(head[0]), bytes(head[1])) != (last_id, expected_prev):
        return ChainCheck(
            False,
            rows,
            expected_prev.hex(),
            last_id or None,
            f"the chain ends at row {last_id} but its head names row {head[0] if head else '?'}:"
            " rows at the end were removed",
        )
    return ChainCheck(True, rows, expected_prev.hex())


@dataclass(frozen=True)
class StateCheck:
    ok: bool
    tables: int
    records: int
    findings: list[str]
    """The records whose row differs from what the trail says it became (at most 20)."""
    reason: str | None = None


def verify_state(conn: Conn, limit: int = 20) -> StateCheck:
    """Each audited table's rows against the trail: every row must be what the latest entry
    of its record says it became (compared on the columns that entry holds), every record the
    trail says exists must have its row, and no row may exist the trail never saw. A row
    changed, added or removed with the triggers off is named."""
    findings: list[str] = []
    records = 0
    audited = conn.execute(q.AUDITED_TABLES).fetchall()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for table, args in audited:
            keys, _, hidden = bytes(args).decode().rstrip("\x00").partition("\x00")
            stmt = sql.SQL(q.STATE_AGAINST_TRAIL).format(table=sql.Identifier(table))
            params = {
                "type": table,
                "keys": keys.split(","),
                "hidden": [h for h in hidden.split(",") if h],
                "limit": limit,
            }
            count = sql.SQL(q.COUNT_ROWS_OF).format(table=sql.Identifier(table))
            n, *_ = conn.execute(count).fetchone() or (0,)
            records += int(n)
            for record_id, problem, columns in conn.execute(stmt, params):
                if problem == "changed":
                    findings.append(
                        f"{table} {record_id}: {', '.join(columns)} differ from the trail"
                    )
                elif problem == "added":
                    findings.append(f"{table} {record_id}: a row the trail never recorded")
                else:
                    findings.append(f"{table} {record_id}: the trail has it, the table not")
            if len(findings) >= limit:
                break
    if findings:
        return StateCheck(
            False,
            len(audited),
            records,
            findings[:limit],
            f"{findings[0]} (changed without the triggers)",
        )
    return StateCheck(True, len(audited), records, [])


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
