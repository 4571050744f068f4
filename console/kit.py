"""What the console's page modules share (no `from __future__ import annotations`: the
routes that take it are read by FastAPI at run time)."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError

from coldtrail.api.record.pdf import Times
from coldtrail.clock import Clock
from coldtrail.erp import masterdata
from coldtrail.erp.people import Role, User
from coldtrail.erp.tx import Conn
from coldtrail.errors import NotFound, RecordError, SignatureRefused, validation_problems

MEANINGS = ("approval", "review", "responsibility", "verification", "authorship")
MEANING = "^(" + "|".join(MEANINGS) + ")$"


@dataclass(frozen=True)
class Kit:
    """What every page module of the console uses: who is asking (signed in, allowed), a
    posted form's check (CSRF), drawing a page, and a refusal as a page."""

    who: Callable[..., User]
    checked: Callable[[Request, Conn, str, frozenset[Role]], User]
    render: Callable[..., HTMLResponse]
    problem: Callable[..., HTMLResponse]
    clock: Clock
    guard: Callable[[Request], None]

    def act(
        self, request: Request, user: User, call: Callable[[], object], then: str,
        also: tuple[type[Exception], ...] = (),
    ) -> Response:  # fmt: skip
        """A form's ERP call: done, back to ``then``; a refused signature a 403 page, a
        record named that does not exist a 404 page, a record's refusal (or one of ``also``)
        a 409 page with the reason."""
        refused: tuple[type[Exception], ...] = (RecordError, *also)
        try:
            call()
        except SignatureRefused as exc:
            return self.problem(request, user, exc, status=403)
        except NotFound as exc:
            return self.problem(request, user, exc, status=404)
        except refused as exc:
            return self.problem(request, user, exc)
        return RedirectResponse(then, status_code=303)


class LocalTimes(Times):
    """Times of a page in the site's zone; ``short`` for the dense tables of the board."""

    def short(self, at: str | datetime | None) -> str:
        if not at:
            return "—"
        t = datetime.fromisoformat(at) if isinstance(at, str) else at
        return f"{self.local(t):%m-%d %H:%M:%S}"


def site_zone(conn: Conn, site: str | None) -> str:
    """The site's time zone (the first site's when none is named)."""
    sites = masterdata.list_sites(conn)
    chosen = [x for x in sites if x.id == site] or sites
    return chosen[0].timezone if chosen else "UTC"


def number(text: str) -> float | None:
    """A limit as typed: blank is none; anything else must be a finite number."""
    if not text.strip():
        return None
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"not a temperature: {text!r}")
    return value


def delay(text: str) -> int | None:
    """An alarm delay in seconds as typed: blank is none (the products' delays apply)."""
    if not text.strip():
        return None
    value = int(text)
    if not 0 <= value <= 86_400:
        raise ValueError(f"an alarm delay is 0 to 86400 s, not {text!r}")
    return value


def local_time(text: str, when: LocalTimes) -> datetime:
    """A time typed in a form (``2026-11-22T21:30``, a browser's datetime-local) in the
    site's zone; one with its own offset is taken as it says."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a time: {text!r}") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=when.tz)


M = TypeVar("M", bound=BaseModel)


def read(model: type[M], data: dict[str, Any]) -> M:
    """A form as the API's request model reads it; its refusal in one line (a ValueError,
    which a form's call turns into a page), no value quoted back."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(validation_problems(exc)) from None
