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

from coldtrail.errors import AccountLocked

_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps the timing the same.
_DUMMY_HASH = _hasher.hash("coldtrail-no-such-user")
MIN_PASSWORD_LENGTH = 12
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)


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


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
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
        (username, full_name, role.value, hash_password(password)),
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
) -> User | None:
    """The user, if the password is right. With ``now``, failures count towards a lock-out:
    MAX_FAILURES in a row lock the name for LOCKOUT (AccountLocked), unknown names alike so
    a lock-out tells nobody which names exist. Call outside a transaction that may roll
    back, or the count is lost with it.

    The attempt is counted as a failure before the password is checked, in one statement,
    and taken back if it was right: guesses made at once can't all pass a check made before
    any of them failed (60 parallel guesses used to get 11 checked, a right one among them
    succeeding)."""
    if now is not None:
        counted = conn.execute(
            _ATTEMPT, {"user": username, "now": now, "max": MAX_FAILURES, "until": now + LOCKOUT}
        ).fetchone()
        assert counted is not None  # noqa: S101 - INSERT ... RETURNING returns a row
        if counted[1] is not None and counted[1] > now:
            raise AccountLocked(
                f"account {username!r} is locked until {counted[1].isoformat()} after "
                f"{MAX_FAILURES} failed attempts; an administrator can unlock it sooner"
            )
    row = conn.execute(
        "SELECT username, full_name, role::text, password_hash FROM users "
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
        conn.execute("DELETE FROM login_failures WHERE username = %s", (username,))
    return User(row[0], row[1], Role(row[2]))


def unlock(conn: psycopg.Connection[tuple[Any, ...]], username: str) -> bool:
    """Lift a lock-out (and forget the failures); True if there was one."""
    done = conn.execute(
        "DELETE FROM login_failures WHERE username = %s RETURNING locked_until", (username,)
    ).fetchone()
    return done is not None and done[0] is not None


# One attempt more, counted before the password is checked. The attempt that reaches the
# limit locks the name (whatever its password) and starts the count again; attempts while
# it is locked change nothing. Returns the count and the lock.
_ATTEMPT = """
INSERT INTO login_failures AS f (username, failures, last_failed)
VALUES (%(user)s, 1, %(now)s)
ON CONFLICT (username) DO UPDATE SET
    failures = CASE WHEN f.locked_until > %(now)s THEN f.failures
                    WHEN f.failures + 1 > %(max)s THEN 0
                    ELSE f.failures + 1 END,
    locked_until = CASE WHEN f.locked_until > %(now)s THEN f.locked_until
                        WHEN f.failures + 1 > %(max)s THEN %(until)s
                        ELSE f.locked_until END,
    last_failed = %(now)s
RETURNING failures, locked_until
"""


def load_user(conn: psycopg.Connection[tuple[Any, ...]], username: str) -> User | None:
    row = conn.execute(
        "SELECT username, full_name, role::text FROM users WHERE username = %s AND NOT disabled",
        (username,),
    ).fetchone()
    return User(row[0], row[1], Role(row[2])) if row else None
