"""The one way the ERP core writes: a transaction that names who acts, so the audit trail's
triggers attribute each change, and that turns the database's refusals into RecordErrors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg

from coldtrail.errors import Conflict, NotFound, RuleViolation

Conn = psycopg.Connection[tuple[Any, ...]]


@contextmanager
def acting(conn: Conn, actor: str) -> Iterator[Conn]:
    """A transaction (or a savepoint inside one) in which ``actor`` is recorded as the doer.

    Triggers refuse with a sentence meant for the user (RAISE EXCEPTION, SQLSTATE P0001);
    it comes out as RuleViolation with that sentence.
    """
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('coldtrail.actor', %s, true)", (actor,))
            yield conn
    except pg.RaiseException as exc:
        raise RuleViolation(_primary(exc)) from exc
    except pg.UniqueViolation as exc:
        raise Conflict(_primary(exc)) from exc
    except pg.ForeignKeyViolation as exc:
        raise NotFound(_missing(exc)) from exc
    except (pg.CheckViolation, pg.ExclusionViolation, pg.NotNullViolation) as exc:
        raise RuleViolation(_primary(exc)) from exc
    except pg.InsufficientPrivilege as exc:
        raise RuleViolation(_primary(exc)) from exc


def _primary(exc: psycopg.Error) -> str:
    diag = exc.diag
    return diag.message_primary or str(exc)


def _missing(exc: psycopg.Error) -> str:
    # "Key (gtin)=(0950...) is not present in table "products"." says what is missing.
    detail = exc.diag.message_detail
    return detail.replace("Key ", "no record with ", 1) if detail else _primary(exc)
