"""People: accounts, roles and passwords (argon2). Signing (erp.signatures) and the API's
login both check passwords here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps the timing the same.
_DUMMY_HASH = _hasher.hash("coldtrail-no-such-user")
MIN_PASSWORD_LENGTH = 12


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
    conn: psycopg.Connection[tuple[Any, ...]], username: str, password: str
) -> User | None:
    row = conn.execute(
        "SELECT username, full_name, role::text, password_hash FROM users "
        "WHERE username = %s AND NOT disabled",
        (username,),
    ).fetchone()
    try:
        _hasher.verify(row[3] if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return User(row[0], row[1], Role(row[2])) if row else None


def load_user(conn: psycopg.Connection[tuple[Any, ...]], username: str) -> User | None:
    row = conn.execute(
        "SELECT username, full_name, role::text FROM users WHERE username = %s AND NOT disabled",
        (username,),
    ).fetchone()
    return User(row[0], row[1], Role(row[2])) if row else None
