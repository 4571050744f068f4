"""The console's pages and forms.

No `from __future__ import annotations`: FastAPI reads these annotations at run time.
"""

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from markupsafe import Markup
from starlette.exceptions import HTTPException

from coldtrail.api import auth, web
from coldtrail.api.erp_routes import EVERYONE, LOGISTICS, OVERSIGHT, QA, STOCK, verify_all
from coldtrail.api.gateway_routes import GatewayChanged, GatewayIn
from coldtrail.api.record.build import Channel, Record, location_record, shipment_record
from coldtrail.api.record.pdf import STATES
from coldtrail.api.rules_routes import excursion_detail, location_excursions
from coldtrail.clock import Clock
from coldtrail.console import admin, charts, fonts, goods, i18n, qa, sensors
from coldtrail.console import session as s
from coldtrail.console.board import Boards
from coldtrail.console.kit import MEANING, MEANINGS, Kit, LocalTimes, site_zone
from coldtrail.erp import audit, changes, holds, masterdata, movements, people
from coldtrail.erp.people import Role, User
from coldtrail.erp.signatures import Credentials
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import NotFound, RecordError, problems
from coldtrail.rules import alarms, texts

STATIC = Path(__file__).resolve().parent / "static"
API_PREFIX = "/api/"
INBOX_FILTERS = ("open", "late", "revised", "withdrawn", "all")


@dataclass(frozen=True)
class ConsoleDeps:
    db: Callable[[], AsyncIterator[Conn]]
    clock: Clock
    secret_key: str
    token_ttl_s: int
    sign_in: Callable[[Request, Conn, str, str], User]
    """The API's login: audited, throttled, raises its 401 or 429."""
    live: Callable[[Conn, str | None], bytes]
    """The live document the API serves (``GET /api/v1/live``)."""
    password_guard: Callable[[Request], None]
    change_gateway: Callable[[Conn, str, str, GatewayIn], GatewayChanged]
    """The API's gateway change (``PUT /api/v1/gateways/{id}``): recorded, and the broker
    told when the API has its admin account."""


class NeedsLogin(Exception):
    pass


class NotAllowed(Exception):
    def __init__(self, user: User, message: str) -> None:
        super().__init__(message)
        self.user = user


def register(app: FastAPI, deps: ConsoleDeps) -> None:
    Db = Annotated[Conn, Depends(deps.db, scope="function")]
    app.mount("/static", StaticFiles(directory=STATIC), name="console-static")

    def language(request: Request) -> str:
        return i18n.choose(request.cookies.get(s.LANGUAGE_COOKIE),
                           request.headers.get("accept-language"))  # fmt: skip

    def viewer(request: Request, conn: Conn) -> User | None:
        return auth.user_of(
            conn, request.cookies.get(auth.SESSION_COOKIE), deps.secret_key, deps.clock.now()
        )

    def who(request: Request, conn: Conn, roles: frozenset[Role] = EVERYONE) -> User:
        user = viewer(request, conn)
        if user is None:
            raise NeedsLogin
        if user.role not in roles:
            raise NotAllowed(user, f"role {user.role.value} may not do this")
        return user

    def render(
        request: Request, user: User | None, template: str, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        lang = language(request)
        session = request.cookies.get(auth.SESSION_COOKIE)
        body = i18n.environment(lang).get_template(template).render(
            request=request, user=user, lang=lang, languages=i18n.LANGUAGES,
            csrf=s.csrf_token(deps.secret_key, session) if session and user else "",
            states=STATES, can=_abilities(user), **ctx,
        )  # fmt: skip
        response = HTMLResponse(body, status_code=status, headers=dict(s.SECURITY_HEADERS))
        if user is not None and session:
            _renew(request, response, user, session)
        return response

    def _renew(request: Request, response: Response, user: User, token: str) -> None:
        """A page used in the second half of the session's life gets a fresh one."""
        expires = auth.token_expiry(token, deps.secret_key)
        now = deps.clock.now()
        if expires is not None and (expires - now).total_seconds() < deps.token_ttl_s / 2:
            fresh = auth.issue_token(user, deps.secret_key, now, deps.token_ttl_s)
            s.set_session(response, request, fresh, deps.token_ttl_s)

    def checked(request: Request, conn: Conn, csrf: str, roles: frozenset[Role]) -> User:
        """The person posting a form: signed in, allowed, and the form theirs (CSRF)."""
        user = who(request, conn, roles)
        if not s.csrf_ok(deps.secret_key, request.cookies.get(auth.SESSION_COOKIE), csrf):
            raise HTTPException(403, "this form did not come from your session: reload the page")
        return user

    def _problem_page(
        request: Request, user: User, exc: Exception, status: int = 409
    ) -> HTMLResponse:
        return render(request, user, "problem.html", status=status, message=str(exc))

    _problem = _problem_page
    kit = Kit(who, checked, render, _problem_page, deps.clock, deps.password_guard)
    qa.register(app, kit, Db)
    admin.register(app, kit, Db, deps.change_gateway)
    sensors.register(app, kit, Db)
    goods.register(app, kit, Db)

    @app.get("/fonts/cjk.ttf", include_in_schema=False)
    def cjk_font() -> Response:
        # Asked for only by a browser whose machine has none of the CJK fonts named before
        # it in the stylesheet (a kiosk, a server's headless browser): pages show Chinese
        # from the package's own font, never as boxes.
        return Response(fonts.cjk_ttf(), media_type="font/ttf",
                        headers={"Cache-Control": "public, max-age=604800"})  # fmt: skip

    @app.exception_handler(NotAllowed)
    async def _not_allowed(request: Request, exc: Exception) -> Response:
        user = exc.user if isinstance(exc, NotAllowed) else None
        return render(request, user, "problem.html", status=403, message=str(exc))

    @app.exception_handler(NeedsLogin)
    async def _login_first(request: Request, _: Exception) -> Response:
        target = request.url.path if request.method == "GET" else "/"
        return RedirectResponse(f"/login?next={target}", status_code=303)

    api_refused = app.exception_handlers.get(RequestValidationError)

    @app.exception_handler(RequestValidationError)
    async def _form_refused(request: Request, exc: Exception) -> Response:
        """A field of a page or form out of its bounds (a number too large, a text too long)
        answers as the console's page saying which and why, not as the API's JSON; values
        are not quoted back (a password may be one). The API's routes keep their answer."""
        if api_refused is not None and request.url.path.startswith(API_PREFIX):
            answer = api_refused(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        # A location is where the field came from, then its name: "body.level" says "level".
        said = problems(errors, name=lambda loc: loc.partition(".")[2] or loc)
        async with contextlib.asynccontextmanager(deps.db)() as conn:
            user = await run_in_threadpool(viewer, request, conn)
            page: Response = await run_in_threadpool(
                render, request, user, "problem.html", 422, message=said
            )
            return page

    # ---------------------------------------------------------------- session

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request, next: str = "/") -> HTMLResponse:
        token = s.new_login_token()
        response = render(request, None, "login.html", login_csrf=token, next=_local(next))
        s.set_login_token(response, request, token)
        return response

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request,
        conn: Db,
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=1024)],
        csrf: Annotated[str, Form(max_length=100)] = "",
        next: Annotated[str, Form(max_length=200)] = "/",
    ) -> Response:
        _ = i18n.gettext_for(language(request))
        if not s.login_csrf_ok(request, csrf):
            token = s.new_login_token()
            response = render(request, None, "login.html", status=403, login_csrf=token,
                              next=_local(next),
                              error=_("The form expired: please sign in again."))  # fmt: skip
            s.set_login_token(response, request, token)
            return response
        try:
            user = deps.sign_in(request, conn, username, password)
        except HTTPException as exc:
            token = s.new_login_token()
            message = (
                _("Too many attempts from this address: wait a minute.")
                if exc.status_code == 429
                else _("Wrong user name or password.")
            )
            response = render(request, None, "login.html", status=exc.status_code,
                              login_csrf=token, next=_local(next), error=message,
                              username=username)  # fmt: skip
            s.set_login_token(response, request, token)
            return response
        done = RedirectResponse(_local(next), status_code=303)
        token = auth.issue_token(user, deps.secret_key, deps.clock.now(), deps.token_ttl_s)
        s.set_session(done, request, token, deps.token_ttl_s)
        chosen = people.language(conn, user.username)
        if chosen is not None:  # the person's language, on this browser too
            s.set_language(done, request, chosen)
        return done

    @app.post("/logout", include_in_schema=False)
    def logout(
        request: Request, conn: Db, csrf: Annotated[str, Form(max_length=100)] = ""
    ) -> Response:
        user = checked(request, conn, csrf, EVERYONE)
        with acting(conn, user.username):
            audit.record(conn, user.username, "logout", "user", user.username)
        response = RedirectResponse("/login", status_code=303)
        s.end_session(response)
        return response

    @app.post("/language", include_in_schema=False)
    def choose_language(
        request: Request,
        conn: Db,
        language_code: Annotated[str, Form(alias="language", pattern="^(en|zh)$")],
        back: Annotated[str, Form(max_length=200)] = "/",
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        """Signed in, the choice is the person's (kept with their account, the form checked
        like any other); before signing in, this browser's."""
        user = viewer(request, conn)
        if user is not None:
            checked(request, conn, csrf, EVERYONE)
            with acting(conn, user.username):
                people.set_language(conn, user.username, language_code)
        response = RedirectResponse(_local(back), status_code=303)
        s.set_language(response, request, language_code)
        return response

    @app.get("/", include_in_schema=False)
    def home(request: Request, conn: Db) -> Response:
        user = who(request, conn)
        start = {Role.QA: "/excursions", Role.AUDITOR: "/records"}.get(user.role, "/board")
        return RedirectResponse(start, status_code=303)

    # ---------------------------------------------------------------- logistics

    boards = Boards()

    @app.get("/board", include_in_schema=False)
    def board(request: Request, conn: Db, site: str | None = None) -> HTMLResponse:
        user = who(request, conn)
        lang = language(request)
        label = i18n.translations_cached(lang)
        zone_name = site_zone(conn, site)
        drawn = boards.get(
            site, lang, deps.live(conn, site),
            lambda state: label.pgettext("live", state).replace("_", " "), zone_name,
        )  # fmt: skip
        active = alarms.find_alarms(conn, active=True, limit=200)
        rows = {place: Markup(html) for place, html in drawn.rows.items()}  # noqa: S704 - escaped in Board
        when = LocalTimes(zone_name)
        return render(request, user, "board.html", doc=drawn.doc, rows=rows, alarms=active,
                      when=when, now=deps.clock.now(),
                      said=lambda a: _said(a, lang, when))  # fmt: skip

    @app.post("/alarms/{alarm_id}/acknowledge", include_in_schema=False)
    def acknowledge(
        request: Request,
        conn: Db,
        alarm_id: int,
        comment: Annotated[str, Form(max_length=2000)],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        user = checked(request, conn, csrf, STOCK)
        return kit.act(
            request, user,
            lambda: alarms.acknowledge(conn, alarm_id, user.username, comment, deps.clock.now()),
            "/board",
        )  # fmt: skip

    # ---------------------------------------------------------------- QA

    @app.get("/excursions", include_in_schema=False)
    def inbox(request: Request, conn: Db, show: str = "open") -> HTMLResponse:
        user = who(request, conn)
        show = show if show in INBOX_FILTERS else "open"
        state = {"open": "open", "withdrawn": "withdrawn"}.get(show)
        found = location_excursions(conn, state, None, 0, 1000)
        if show == "late":
            found = [e for e in found if e.late]
        elif show == "revised":
            found = [e for e in found if e.revision > 1]
        found.sort(key=lambda e: e.started_at, reverse=True)
        return render(request, user, "excursions.html", excursions=found, show=show,
                      filters=INBOX_FILTERS, when=LocalTimes(site_zone(conn, None)))  # fmt: skip

    @app.get("/excursions/{excursion_id}", include_in_schema=False)
    def excursion(request: Request, conn: Db, excursion_id: int) -> HTMLResponse:
        user = who(request, conn)
        detail = excursion_detail(conn, excursion_id)
        e = detail.excursion
        now = deps.clock.now()
        margin = timedelta(hours=1)
        end = min(e.ended_at + margin if e.ended_at else now, now)
        start = e.started_at - margin
        record = location_record(
            conn, e.location_id, start, max(end, start + timedelta(minutes=1)), now
        )
        held = {h.id: h for h in holds.find_holds(conn, limit=1000)
                if h.excursion_id == excursion_id}  # fmt: skip
        return record_page(request, user, record, "excursion.html", x=detail, e=e, holds=held,
                           meanings=MEANINGS)  # fmt: skip

    def record_page(
        request: Request, user: User, record: Record, template: str = "record.html",
        **extra: Any,
    ) -> HTMLResponse:  # fmt: skip
        """A page drawing a record's charts, its times in the record's site's zone."""
        when = LocalTimes(record.subject.timezone)
        drawn = [charts.chart(c, record, when) for c in record.channels]
        return render(request, user, template, r=record, charts=drawn, when=when,
                      calibration=_calibration,
                      svg=lambda c: Markup(c.svg), **extra)  # noqa: S704 - our own SVG, values escaped  # fmt: skip

    @app.post("/holds/{hold_id}/disposition", include_in_schema=False)
    def dispose(
        request: Request,
        conn: Db,
        hold_id: int,
        disposition: Annotated[str, Form(pattern="^(release|reject)$")],
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=1024)],
        meaning: Annotated[str, Form(pattern=MEANING)],
        reason: Annotated[str, Form(min_length=1, max_length=2000)],
        csrf: Annotated[str, Form(max_length=100)] = "",
        open_excursions: Annotated[str, Form(max_length=200)] = "",
        back: Annotated[str, Form(max_length=200)] = "/excursions",
    ) -> Response:
        user = checked(request, conn, csrf, QA)
        deps.password_guard(request)
        named = [int(x) for x in open_excursions.replace(",", " ").split() if x.isdigit()]
        return kit.act(
            request, user,
            lambda: holds.dispose(
                conn, user.username, hold_id, disposition,  # type: ignore[arg-type]
                Credentials(username, password, web.client(request)), meaning,  # type: ignore[arg-type]
                reason, deps.clock.now(), open_excursions=named,
            ),
            _local(back),
        )  # fmt: skip

    # ---------------------------------------------------------------- auditors

    @app.get("/records", include_in_schema=False)
    def records(request: Request, conn: Db) -> HTMLResponse:
        user = who(request, conn)
        shipments = movements.find_shipments(conn, limit=200)
        places = masterdata.list_locations(conn)
        now = deps.clock.now()
        return render(request, user, "records.html", shipments=shipments, places=places,
                      period_from=_z(now - timedelta(days=30)), period_to=_z(now))  # fmt: skip

    @app.get("/shipments/{shipment_id}", include_in_schema=False)
    def shipment(request: Request, conn: Db, shipment_id: str) -> HTMLResponse:
        user = who(request, conn)
        try:
            record = shipment_record(conn, shipment_id, deps.clock.now())
        except NotFound as exc:
            return _problem(request, user, exc, status=404)
        except RecordError as exc:
            return _problem(request, user, exc)
        return record_page(request, user, record)

    @app.get("/places/{location_id}", include_in_schema=False)
    def place(
        request: Request,
        conn: Db,
        location_id: str,
        hours: int = 6,
        since: str | None = None,
        until: str | None = None,
    ) -> HTMLResponse:
        """A storeroom's or vehicle's last hours, or the days an auditor names (``since`` to
        ``until``, both included, in the place's zone; up to 400 days), as its record."""
        user = who(request, conn)
        now = deps.clock.now()
        place = masterdata.get_location(conn, location_id)
        if place is None:
            return _problem(request, user, NotFound(f"no location {location_id}"), status=404)
        when = LocalTimes(site_zone(conn, place.site_id))
        shown: int | None = min(max(hours, 1), 400 * 24)
        start, end = now - timedelta(hours=shown or 0), now
        if since or until:
            shown = None
            try:
                first = _day(since, when)
                last = _day(until or f"{when.local(now):%Y-%m-%d}", when, after=True)
            except ValueError:
                bad = ValueError(f"a day is written 2026-03-01, not {since or until!r}")
                return _problem(request, user, bad, status=422)
            if first is None or last is None:
                return _problem(request, user, ValueError("a period names its first day"), 422)
            start, end = first, min(last, now)
        try:
            record = location_record(conn, location_id, start, end, now)
        except RecordError as exc:
            return _problem(request, user, exc)
        return record_page(request, user, record, hours=shown, since=since or "",
                           until=until or "", period={"from": _z(start), "to": _z(end)},
                           place=place, meanings=MEANINGS,
                           place_changes=changes.list_changes(
                               conn, of=("location", location_id)))  # fmt: skip

    @app.get("/audit", include_in_schema=False)
    def trail(
        request: Request,
        conn: Db,
        record_type: str | None = None,
        record_id: str | None = None,
        actor: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> HTMLResponse:
        user = who(request, conn, OVERSIGHT)
        when = LocalTimes(site_zone(conn, None))
        try:
            start = _day(since, when)
            end = _day(until, when, after=True)
        except ValueError as exc:
            return _problem(request, user, exc, status=422)
        rows = audit.latest(conn, record_type=record_type or None, record_id=record_id or None,
                            actor=actor or None, since=start, until=end, limit=500)  # fmt: skip
        return render(request, user, "audit.html", rows=rows, record_type=record_type or "",
                      record_id=record_id or "", actor=actor or "", since=since or "",
                      until=until or "", when=when)  # fmt: skip

    @app.post("/audit/verify", include_in_schema=False)
    def verify(
        request: Request, conn: Db, csrf: Annotated[str, Form(max_length=100)] = ""
    ) -> HTMLResponse:
        user = checked(request, conn, csrf, OVERSIGHT)
        return render(request, user, "verify.html", check=verify_all(conn))


def _calibration(c: Channel) -> tuple[str, int]:
    """As the PDF says it: no certificate at all, readings no certificate covers, or valid."""
    if np.count_nonzero(c.calibration == 2):
        return "none", 0
    overdue = int(np.count_nonzero(c.calibration == 1))
    return ("overdue", overdue) if overdue else ("valid", 0)


def _said(alarm: alarms.Alarm, lang: str, when: LocalTimes) -> str:
    """An alarm's message as a page in ``lang`` says it (the rules' English otherwise)."""
    if lang != "zh":
        return alarm.message
    said = texts.Said(alarm.kind, alarm.detail, alarm.location_id, alarm.sensor_id,
                      alarm.started_at, when.tz)  # fmt: skip
    return texts.chinese(said) or alarm.message


def _abilities(user: User | None) -> dict[str, bool]:
    """What the page offers; the server checks each again when it is used."""
    role = user.role if user else None
    return {
        "acknowledge": role in STOCK,
        "sign": role in QA,
        "audit": role in OVERSIGHT,
        "admin": role == Role.ADMIN,
        "change": role == Role.QA,
        "place": role in LOGISTICS,
        "move": role in LOGISTICS,
    }


def _day(text: str | None, when: LocalTimes, *, after: bool = False) -> datetime | None:
    """A day typed in the site's zone: its start (or, ``after``, the next day's start)."""
    if not text:
        return None
    day = date.fromisoformat(text)
    if after:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=when.tz)


def _z(at: datetime) -> str:
    # In UTC: an offset's "+" in a link's query would be read back as a space.
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _local(target: str) -> str:
    """Only a path of this site: never a redirect elsewhere."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
