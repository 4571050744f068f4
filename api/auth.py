"""Short-lived bearer tokens (JWT, HS256) for the people of coldtrail.erp.people."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from coldtrail.erp import people
from coldtrail.erp.people import User

SESSION_COOKIE = "ct_session"
"""The web console keeps its session's token here (HttpOnly, SameSite=Strict)."""


def user_of(conn: Any, token: str | None, secret: str, now: datetime) -> User | None:
    """The person a presented token stands for now: None for a bad or expired token, or one
    from before a password change, a disable or a revocation (its generation is gone)."""
    subject = token_subject(token or "", secret, now)
    user = people.load_user(conn, subject[0]) if subject else None
    if user is None or subject is None or user.token_generation != subject[1]:
        return None
    return user


def issue_token(user: User, secret: str, now: datetime, ttl_s: int) -> str:
    claims = {
        "sub": user.username,
        "role": user.role.value,
        "gen": user.token_generation,
        "iat": now,
        "exp": now + timedelta(seconds=ttl_s),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def token_subject(token: str, secret: str, now: datetime) -> tuple[str, int] | None:
    """The username a valid, unexpired token names, and the generation of that user's
    tokens it was issued under; None for anything else."""
    claims = _claims(token, secret)
    if claims is None or float(claims["exp"]) <= now.timestamp():
        return None
    return str(claims["sub"]), int(claims["gen"])


def token_expiry(token: str, secret: str) -> datetime | None:
    """When a valid token stops being accepted (a push stream closes then)."""
    claims = _claims(token, secret)
    return None if claims is None else datetime.fromtimestamp(float(claims["exp"]), UTC)


def _claims(token: str, secret: str) -> dict[str, Any] | None:
    try:
        # Callers check expiry against the injected clock, not the machine's.
        claims = (
            jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                options={"verify_exp": False, "require": ["sub", "exp", "gen"]},
            )
            if token
            else None
        )
    except jwt.PyJWTError:
        return None
    if claims is None or not isinstance(claims.get("sub"), str):
        return None
    gen = claims.get("gen")
    # Tokens from before generations (a release ago) have none: refused, their users sign in.
    if isinstance(gen, bool) or not isinstance(gen, int) or gen < 0:
        return None
    exp = claims.get("exp")
    # Only someone holding the key can sign a token, but a number is what every check of
    # expiry below relies on: "soon" would fail them, infinity or NaN would never expire.
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return None
    return claims
