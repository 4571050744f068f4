"""Change control: what the rules judge goods by changes only as a signed change.

A place's range and alarm delay, a storage profile's limits, the profile a product is stored
under and a site's compliance regime are changed by QA alone, each change with its reason and
an e-signature (password again, meaning) made in the same transaction; the database refuses
the application's role any other change of them (migration 0023). Each change keeps the
values before and after, so a validation pack can list what changed since the last one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg import sql
from psycopg.types.json import Jsonb

from coldtrail.erp import outbox, signatures
from coldtrail.erp.people import Role
from coldtrail.erp.signatures import Credentials, Meaning, Signature
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import NotFound, RuleViolation

Subject = Literal["location", "temperature_profile", "product", "site"]

CONTROLLED: dict[Subject, tuple[str, ...]] = {
    "location": ("temp_min_c", "temp_max_c", "rh_min_pct", "rh_max_pct", "alarm_delay_s"),
    "temperature_profile": (
        "temp_min_c", "temp_max_c", "rh_min_pct", "rh_max_pct", "alarm_delay_s",
        "stability_budget_min", "mkt_max_c", "hold_on_excursion", "release_signatures",
    ),
    "product": ("profile_id",),
    "site": ("compliance_profile",),
}  # fmt: skip
_TABLES: dict[Subject, str] = {
    "location": "locations",
    "temperature_profile": "temperature_profiles",
    "product": "products",
    "site": "sites",
}
_KEY: dict[Subject, str] = {"product": "gtin"}
"""Each table's key column where it is not ``id``."""
_SITE: dict[Subject, str] = {
    "location": "site_id", "temperature_profile": "NULL", "product": "NULL", "site": "id",
}  # fmt: skip
SIGNERS = frozenset({Role.QA})

_INSERT = """
INSERT INTO changes (subject, subject_id, site_id, before, after, reason, changed_by, changed_at)
VALUES (%(subject)s, %(id)s, %(site)s, %(before)s, %(after)s, %(reason)s, %(by)s, %(at)s)
RETURNING id
"""
_LIST = """
SELECT id, subject, subject_id, site_id, before, after, reason, changed_by, changed_at
FROM changes
WHERE (%(since)s::timestamptz IS NULL OR changed_at > %(since)s)
  AND (%(site)s::text IS NULL OR site_id = %(site)s OR site_id IS NULL)
  AND (%(subject)s::text IS NULL OR (subject = %(subject)s AND subject_id = %(subject_id)s))
ORDER BY changed_at, id
LIMIT %(limit)s
"""


@dataclass(frozen=True)
class Change:
    id: int
    subject: str
    subject_id: str
    site_id: str | None
    before: dict[str, Any]
    after: dict[str, Any]
    reason: str
    changed_by: str
    changed_at: datetime
    signatures: tuple[Signature, ...]

    @property
    def changed(self) -> dict[str, tuple[Any, Any]]:
        """Each value that moved: (before, after)."""
        before = self.before
        return {k: (before.get(k), v) for k, v in self.after.items() if before.get(k) != v}


def change(
    conn: Conn,
    session_user: str,
    subject: Subject,
    subject_id: str,
    values: dict[str, Any],
    *,
    credentials: Credentials,
    meaning: Meaning,
    reason: str,
    at: datetime,
    known_profiles: set[str] | None = None,
) -> Change:
    """Change ``values`` (controlled fields of one record) as a change signed by QA. Call
    outside a transaction: a refused signature is audited in a transaction of its own."""
    fields = CONTROLLED[subject]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise RuleViolation(f"not under change control for a {subject}: {', '.join(unknown)}")
    if not values:
        raise RuleViolation("a change names at least one value")
    if not reason.strip():
        raise RuleViolation("a change gives its reason")
    profile = values.get("compliance_profile")
    if profile is not None and known_profiles is not None and profile not in known_profiles:
        raise RuleViolation(
            f"no compliance profile {profile}; known: {', '.join(sorted(known_profiles))}"
        )
    action = f"change {subject.replace('_', ' ')} {subject_id}"
    signer = signatures.check_signer(
        conn, session_user, credentials, subject, subject_id, action, at, roles=SIGNERS
    )
    table = sql.Identifier(_TABLES[subject])
    key = sql.Identifier(_KEY.get(subject, "id"))
    with acting(conn, signer.username):
        row = conn.execute(
            sql.SQL("SELECT {}, {} FROM {} WHERE {} = %s FOR UPDATE").format(
                sql.SQL(_SITE[subject]),
                sql.SQL(", ").join(map(sql.Identifier, fields)),
                table,
                key,
            ),
            (subject_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no {subject.replace('_', ' ')} {subject_id}")
        site_id, before = row[0], dict(zip(fields, row[1:], strict=True))
        after = {**before, **values}
        if after == before:
            raise RuleViolation(f"{action}: every value is already so")
        _check_range(after, "temp_min_c", "temp_max_c")
        _check_range(after, "rh_min_pct", "rh_max_pct")
        conn.execute(
            sql.SQL("UPDATE {} SET {} WHERE {} = %(id)s").format(
                table,
                sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in values
                ),
                key,
            ),
            {**values, "id": subject_id},
        )
        inserted = conn.execute(
            _INSERT,
            {"subject": subject, "id": subject_id, "site": site_id, "before": Jsonb(before),
             "after": Jsonb(after), "reason": reason.strip(), "by": signer.username, "at": at},
        ).fetchone()  # fmt: skip
        assert inserted is not None  # noqa: S101 - INSERT ... RETURNING returns its row
        change_id = int(inserted[0])
        record = {"change": change_id, "subject": subject, "subject_id": subject_id,
                  "before": before, "after": after}  # fmt: skip
        signature = signatures.add(
            conn, signer, meaning=meaning, reason=reason, signed_at=at,
            record_type="change", record_id=change_id, action=action, record=record,
        )  # fmt: skip
        event = {**record, "reason": reason.strip(), "signed_by": signer.username}
        outbox.emit(conn, "change.signed", f"{subject}/{subject_id}", event, at)
    return Change(change_id, subject, subject_id, site_id, before, after, reason.strip(),
                  signer.username, at, (signature,))  # fmt: skip


def _check_range(values: dict[str, Any], low: str, high: str) -> None:
    lo, hi = values.get(low), values.get(high)
    if lo is not None and hi is not None and lo >= hi:
        raise RuleViolation(f"{low} {lo} must be below {high} {hi}")


def list_changes(
    conn: Conn,
    since: datetime | None = None,
    site: str | None = None,
    limit: int = 1000,
    *,
    of: tuple[Subject, str] | None = None,
) -> list[Change]:
    """Changes made after ``since`` (all if None), of ``site`` and of what no site owns, or
    of one record (``of``: subject and id)."""
    subject, subject_id = of or (None, None)
    rows = conn.execute(
        _LIST,
        {"since": since, "site": site, "limit": limit, "subject": subject,
         "subject_id": subject_id},
    ).fetchall()  # fmt: skip
    signed = signatures.of_records(conn, "change", [int(r[0]) for r in rows])
    return [
        Change(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8],
               tuple(signed.get(int(r[0]), [])))
        for r in rows
    ]  # fmt: skip


def refuse_edit(
    subject: Subject, subject_id: str, old: object | None, new: object, route: str
) -> None:
    """An ordinary edit of ``old`` into ``new`` (dataclasses) moves no controlled value: else
    the refusal names ``route``, where the change is made as a signed change."""
    if old is None:
        return
    before, after = asdict(old), asdict(new)  # type: ignore[call-overload]
    moved = [k for k in CONTROLLED[subject] if k in after and before.get(k) != after[k]]
    if moved:
        raise RuleViolation(
            f"{subject.replace('_', ' ')} {subject_id}: {', '.join(moved)} change under change "
            f"control: PUT {route}, signed by QA with a reason"
        )
