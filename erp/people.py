"""People: accounts, roles and passwords (argon2). Signing (erp.signatures) and the API's
login both check passwords here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from coldtrail.errors import AccountLocked, NotFound, RuleViolation
from coldtrail.passwords import password_problem

_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps the timing the same.
_DUMMY_HASH = _hasher.hash("coldtrail-no-such-user")


def use_password_hasher(hasher: PasswordHasher) -> None:
    """Hash new passwords with ``hasher``'s argon2 parameters (the tests use argon2's
    cheapest profile: a check costs 0.03 ms instead of 130 ms, over a thousand sign-ins).
    A hash carries its own parameters, so each verifies the other's."""
    global _hasher, _DUMMY_HASH
    _hasher = hasher
    _DUMMY_HASH = hasher.hash("coldtrail-no-such-user")


MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
"""The first lock-out; each one after it in a row, from the same client, doubles."""
MAX_LOCKOUT_DOUBLINGS = 6
"""15 min doubled at most six times: 16 h."""
FORGET_FAILURES = timedelta(days=1)
"""A client that has not failed for a day starts again from nothing."""


class Role(StrEnum):
    ADMIN = "admin"
    LOGISTICS = "logistics"
    QA = "qa"
    AUDITOR = "auditor"


@dataclass(frozen=True)
class User:
    username: str
    full_name: str
    role: Role
    token_generation: int = 0
    """Tokens issued under an older generation are refused (a password change, a disable or
    a revocation moves it)."""


def hash_password(password: str, *context: str) -> str:
    problem = password_problem(password, *context)
    if problem is not None:
        raise ValueError(problem)
    return _hasher.hash(password)


def create_user(
    conn: psycopg.Connection[tuple[Any, ...]],
    username: str,
    full_name: str,
    role: Role,
    password: str,
) -> User:
    conn.execute(
        "INSERT INTO users (username, full_name, role, password_hash) VALUES (%s, %s, %s, %s)",
        (username, full_name, role.value, hash_password(password, username, full_name)),
    )
    return User(username, full_name, role)


def ensure_admin(conn: psycopg.Connection[tuple[Any, ...]], password: str) -> bool:
    """Create the bootstrap ``admin`` account unless it exists; True if it was created."""
    if conn.execute("SELECT 1 FROM users WHERE username = 'admin'").fetchone():
        return False
    create_user(conn, "admin", "Administrator", Role.ADMIN, password)
    return True


def authenticate(
    conn: psycopg.Connection[tuple[Any, ...]],
    username: str,
    password: str,
    now: datetime | None = None,
    client: str = "local",
) -> User | None:
    """The user, if the password is right. With ``now``, failures count towards a lock-out:
    MAX_FAILURES in a row from one ``client`` (its address) lock the name for that client
    (AccountLocked), for LOCKOUT and twice as long each time again; unknown names alike, so
    a lock-out tells nobody which names exist. Per client, so that nobody can lock the
    administrator out from elsewhere. Call outside a transaction that may roll back, or the
    count is lost with it.

    The attempt is counted as a failure before the password is checked, in one statement,
    and taken back if it was right: guesses made at once can't all pass a check made before
    any of them failed (60 parallel guesses used to get 11 checked, a right one among them
    succeeding)."""
    if now is not None:
        counted = conn.execute(
            _ATTEMPT,
            {
                "user": username,
                "client": client[:64],
                "now": now,
                "max": MAX_FAILURES,
                "base": LOCKOUT,
                "doublings": MAX_LOCKOUT_DOUBLINGS,
                "forget": now - FORGET_FAILURES,
            },
        ).fetchone()
        assert counted is not None  # noqa: S101 - INSERT ... RETURNING returns a row
        if counted[1] is not None and counted[1] > now:
            raise AccountLocked(
                f"account {username!r} is locked for this address until "
                f"{counted[1].isoformat()} after {MAX_FAILURES} failed attempts; an "
                "administrator can unlock it sooner"
            )
    row = conn.execute(
        "SELECT username, full_name, role::text, password_hash, token_generation FROM users "
        "WHERE username = %s AND NOT disabled",
        (username,),
    ).fetchone()
    try:
        _hasher.verify(row[3] if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None  # the attempt stays counted
    if row is None:
        return None
    if now is not None:
        conn.execute(
            "DELETE FROM login_failures WHERE username = %s AND client = %s",
            (username, client[:64]),
        )
    return User(row[0], row[1], Role(row[2]), row[4])


def unlock(conn: psycopg.Connection[tuple[Any, ...]], username: str) -> bool:
    """Lift the name's lock-outs, from every client (and forget the failures); True if
    there was one."""
    done = conn.execute(
        "DELETE FROM login_failures WHERE username = %s RETURNING locked_until", (username,)
    ).fetchall()
    return any(until is not None for (until,) in done)


# One attempt more from one client, counted before the password is checked. The attempt
# past the limit locks the name for that client (whatever its password), for twice as long
# as the lock-out before it, and starts the count again; attempts while it is locked change
# nothing; a day without failures forgets them all. Returns the count and the lock.
_ATTEMPT = """
INSERT INTO login_failures AS f (username, client, failures, lockouts, last_failed)
VALUES (%(user)s, %(client)s, 1, 0, %(now)s)
ON CONFLICT (username, client) DO UPDATE SET
    failures = CASE WHEN f.locked_until > %(now)s THEN f.failures
                    WHEN f.last_failed < %(forget)s THEN 1
                    WHEN f.failures + 1 > %(max)s THEN 0
                    ELSE f.failures + 1 END,
    lockouts = CASE WHEN f.locked_until > %(now)s THEN f.lockouts
                    WHEN f.last_failed < %(forget)s THEN 0
                    WHEN f.failures + 1 > %(max)s THEN f.lockouts + 1
                    ELSE f.lockouts END,
    locked_until = CASE WHEN f.locked_until > %(now)s THEN f.locked_until
                        WHEN f.last_failed < %(forget)s THEN NULL
                        WHEN f.failures + 1 > %(max)s
                        THEN %(now)s + %(base)s * power(2, least(f.lockouts, %(doublings)s))
                        ELSE f.locked_until END,
    last_failed = CASE WHEN f.locked_until > %(now)s THEN f.last_failed ELSE %(now)s END
RETURNING failures, locked_until
"""


def language(conn: psycopg.Connection[tuple[Any, ...]], username: str) -> str | None:
    """The console language the person chose (None: not chosen)."""
    row = conn.execute("SELECT language FROM users WHERE username = %s", (username,)).fetchone()
    return None if row is None else row[0]


def set_language(conn: psycopg.Connection[tuple[Any, ...]], username: str, lang: str) -> None:
    """Keep the person's console language (call inside ``erp.tx.acting`` as that person)."""
    conn.execute(
        "UPDATE users SET language = %s WHERE username = %s AND language IS DISTINCT FROM %s",
        (lang, username, lang),
    )


def load_user(conn: psycopg.Connection[tuple[Any, ...]], username: str) -> User | None:
    row = conn.execute(
        "SELECT username, full_name, role::text, token_generation FROM users "
        "WHERE username = %s AND NOT disabled",
        (username,),
    ).fetchone()
    return User(row[0], row[1], Role(row[2]), row[3]) if row else None


@dataclass(frozen=True)
class Account:
    username: str
    full_name: str
    role: Role
    disabled: bool
    locked_clients: int
    """Clients (addresses) the name is locked out for now."""
    created_at: datetime


def accounts(conn: psycopg.Connection[tuple[Any, ...]], now: datetime) -> list[Account]:
    rows = conn.execute(
        "SELECT u.username, u.full_name, u.role::text, u.disabled, "
        "  (SELECT count(*) FROM login_failures f "
        "   WHERE f.username = u.username AND f.locked_until > %s), u.created_at "
        "FROM users u ORDER BY u.username",
        (now,),
    ).fetchall()
    return [Account(r[0], r[1], Role(r[2]), r[3], r[4], r[5]) for r in rows]


def set_password(conn: psycopg.Connection[tuple[Any, ...]], username: str, password: str) -> User:
    """A new password for ``username``; every token issued before stops working. In the
    caller's transaction (and its actor, for the trail)."""
    row = conn.execute("SELECT full_name FROM users WHERE username = %s", (username,)).fetchone()
    if row is None:
        raise NotFound(f"no user {username!r}")
    hashed = hash_password(password, username, row[0])
    changed = conn.execute(
        "UPDATE users SET password_hash = %s, token_generation = token_generation + 1 "
        "WHERE username = %s RETURNING username, full_name, role::text, token_generation",
        (hashed, username),
    ).fetchone()
    assert changed is not None  # noqa: S101 - the row was just read, in this transaction
    return User(changed[0], changed[1], Role(changed[2]), changed[3])


def revoke_tokens(conn: psycopg.Connection[tuple[Any, ...]], username: str) -> int:
    """Refuse every token issued to ``username`` so far; the new generation."""
    row = conn.execute(
        "UPDATE users SET token_generation = token_generation + 1 WHERE username = %s "
        "RETURNING token_generation",
        (username,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no user {username!r}")
    return int(row[0])


def set_disabled(
    conn: psycopg.Connection[tuple[Any, ...]], username: str, disabled: bool, by: str
) -> None:
    """Disable (every token and stream of the user ends) or enable an account. Nobody
    disables their own account, and the last enabled administrator stays."""
    if disabled and username == by:
        raise RuleViolation("you can't disable your own account")
    row = conn.execute(
        "SELECT role::text, disabled FROM users WHERE username = %s FOR UPDATE", (username,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no user {username!r}")
    if row[1] == disabled:
        raise RuleViolation(f"user {username!r} is already {'disabled' if disabled else 'enabled'}")
    if disabled and row[0] == Role.ADMIN.value:
        others = conn.execute(
            "SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled AND username <> %s",
            (username,),
        ).fetchone()
        if others is None or others[0] == 0:
            raise RuleViolation(f"{username!r} is the last enabled administrator")
    conn.execute(
        "UPDATE users SET disabled = %s, token_generation = token_generation + 1 "
        "WHERE username = %s",
        (disabled, username),
    )
