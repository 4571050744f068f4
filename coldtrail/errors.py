"""The exceptions that cross stage boundaries.

Other libraries' errors (paho, psycopg, pymodbus) are wrapped with ``from`` where they
leave the code that called the library, so callers handle one small hierarchy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class ColdTrailError(Exception):
    """Base of every error ColdTrail raises on purpose."""


class ConfigError(ColdTrailError):
    """Settings or a configuration file are invalid; raised at start-up."""


class PayloadError(ColdTrailError):
    """A message could not be decoded or failed validation; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransportError(ColdTrailError):
    """A device, broker or network peer did not answer as it should."""


class DeviceUnavailable(TransportError):
    """A logger did not answer, or answered with a Modbus exception."""


class StoreError(ColdTrailError):
    """The database refused or lost a write."""


class RecordError(ColdTrailError):
    """The ERP core refused a request; the message is written for the person who made it."""


class NotFound(RecordError):
    """The record named does not exist."""


class Conflict(RecordError):
    """The record exists already, or changed since the caller read it."""


class PreconditionFailed(Conflict):
    """The record changed since the caller read it (If-Match names an older version)."""


class RuleViolation(RecordError):
    """A GxP rule forbids it: a quarantined lot moved, a disposition changed, a step skipped."""


class AccountLocked(RecordError):
    """Too many failed logins or signatures in a row: the account is locked for a while."""


class SignatureRefused(RecordError):
    """An electronic signature failed: wrong password, wrong signer, or not allowed to sign."""


def validation_problems(exc: ValidationError, name: Callable[[str], str] = str) -> str:
    """Pydantic's errors on one line, ``name(location): message`` joined by ``; ``, without
    the values (they may be secrets) or links."""
    return problems(exc.errors(include_url=False, include_input=False), name)


def problems(errors: Sequence[Mapping[str, Any]], name: Callable[[str], str] = str) -> str:
    """Validation errors (pydantic's, or FastAPI's of a request) on one line, each as
    ``name(location): message``; only locations and messages, never the values. An error on
    a list whose own item failed (``devices: should have at least 1 item``) only repeats that
    failure: left out."""
    locs = [".".join(str(p) for p in e["loc"]) for e in errors]
    shown = [
        f"{name(loc) if loc else 'the document'}: {e['msg'].removeprefix('Value error, ')}"
        for loc, e in zip(locs, errors, strict=True)
        if not any(other != loc and other.startswith(loc + ".") for other in locs)
    ]
    return "; ".join(shown)
