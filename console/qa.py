"""QA's pages beyond the excursion: a lot (its stays, holds, a hold placed, rejected goods out
with a signature), the CAPA board and a CAPA through every step with its evidence, and the
compliance KPIs. Each form goes through the ERP call the API makes.

No `from __future__ import annotations`: FastAPI reads these annotations at run time.
"""

import re
from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from pydantic import TypeAdapter, ValidationError

from coldtrail.api import models, web
from coldtrail.api.erp_routes import OVERSIGHT, QA, STOCK
from coldtrail.console.kit import (
    MEANING,
    MEANINGS,
    Kit,
    LocalTimes,
    delay,
    number,
    read,
    site_zone,
)
from coldtrail.erp import (
    capa,
    changes,
    conformance,
    disposal,
    holds,
    kpi,
    masterdata,
    movements,
    products,
    signatures,
)  # fmt: skip
from coldtrail.erp.signatures import Credentials
from coldtrail.errors import RecordError
from coldtrail.validation import pack

CAPA_STEPS = ("investigation", "actions", "effectiveness_check", "closed")
NEXT_STEP = {"open": "investigation", "investigation": "actions",
             "actions": "effectiveness_check", "effectiveness_check": "closed"}  # fmt: skip
QUANTITY: TypeAdapter[Decimal] = TypeAdapter(models.Quantity)
STEP = "^(investigation|actions|effectiveness_check|closed)$"


def register(app: FastAPI, kit: Kit, Db: Any) -> None:
    def signed_change(
        request: Request, conn: Any, user: Any, subject: changes.Subject, subject_id: str,
        values: dict[str, Any], signer: tuple[str, str, str, str], back: str,
    ) -> Response:  # fmt: skip
        """A change under change control from a form: QA signs it (user name, password,
        meaning, reason), back to ``back``; refusals as every signed form's."""
        username, password, meaning, reason = signer
        return kit.act(
            request, user,
            lambda: changes.change(
                conn, user.username, subject, subject_id, values,
                credentials=Credentials(username, password, web.client(request)),
                meaning=meaning, reason=reason, at=kit.clock.now(),  # type: ignore[arg-type]
            ),
            back,
        )  # fmt: skip

    # ---------------------------------------------------------------- lots

    @app.get("/lots/{lot_id}", include_in_schema=False)
    def lot(request: Request, conn: Db, lot_id: int) -> HTMLResponse:
        user = kit.who(request, conn)
        try:
            found = products.get_lot(conn, lot_id)
        except RecordError as exc:
            return kit.problem(request, user, exc, status=404)
        stays = movements.lot_history(conn, lot_id)
        here = [x for x in stays if x.until is None]
        areas = [p.id for p in masterdata.list_locations(conn) if p.quarantine_area]
        return kit.render(
            request, user, "lot.html", lot=found, stays=stays, here=here, areas=areas,
            moves=movements.lot_movements(conn, lot_id),
            holds=holds.find_holds(conn, lot_id=lot_id, limit=1000),
            when=LocalTimes(site_zone(conn, None)),
        )  # fmt: skip

    @app.post("/lots/{lot_id}/hold", include_in_schema=False)
    def place_hold(
        request: Request,
        conn: Db,
        lot_id: int,
        reason: Annotated[str, Form(min_length=1, max_length=2000)],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        user = kit.checked(request, conn, csrf, QA)
        return kit.act(
            request, user,
            lambda: holds.place_hold(conn, user.username, lot_id, reason, kit.clock.now()),
            f"/lots/{lot_id}",
        )  # fmt: skip

    @app.post("/places/{location_id}/limits", include_in_schema=False)
    def change_limits(
        request: Request,
        conn: Db,
        location_id: str,
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=1024)],
        meaning: Annotated[str, Form(pattern=MEANING)],
        reason: Annotated[str, Form(min_length=1, max_length=2000)],
        temp_min_c: Annotated[str, Form(max_length=20)] = "",
        temp_max_c: Annotated[str, Form(max_length=20)] = "",
        alarm_delay_s: Annotated[str, Form(max_length=20)] = "",
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        """A place's range or alarm delay, changed as a change QA signs (change control)."""
        user = kit.checked(request, conn, csrf, QA)
        kit.guard(request)
        try:
            values = {"temp_min_c": number(temp_min_c), "temp_max_c": number(temp_max_c),
                      "alarm_delay_s": delay(alarm_delay_s)}  # fmt: skip
        except ValueError as exc:
            return kit.problem(request, user, exc)
        signer = (username, password, meaning, reason)
        return signed_change(request, conn, user, "location", location_id, values, signer,
                             f"/places/{location_id}")  # fmt: skip

    @app.post("/lots/{lot_id}/exit", include_in_schema=False)
    def lot_exit(
        request: Request,
        conn: Db,
        lot_id: int,
        kind: Annotated[str, Form(pattern="^(return_to_supplier|destruction)$")],
        quantity: Annotated[str, Form(max_length=30)],
        from_location: Annotated[str, Form(max_length=64)],
        party: Annotated[str, Form(min_length=1, max_length=200)],
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=1024)],
        meaning: Annotated[str, Form(pattern=MEANING)],
        reason: Annotated[str, Form(min_length=1, max_length=2000)],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        user = kit.checked(request, conn, csrf, QA)
        kit.guard(request)
        try:  # the API's own bounds: NaN, Infinity, 1e400 or 0 is no quantity
            amount = QUANTITY.validate_python(quantity.strip())
        except ValidationError:
            return kit.problem(request, user, ValueError(f"not a quantity: {quantity!r}"))
        return kit.act(
            request, user,
            lambda: disposal.leave(
                conn, user.username, lot_id, kind, amount, kit.clock.now(),  # type: ignore[arg-type]
                from_location=from_location, party=party,
                credentials=Credentials(username, password, web.client(request)),
                meaning=meaning, reason=reason,  # type: ignore[arg-type]
            ),
            f"/lots/{lot_id}",
        )  # fmt: skip

    # ---------------------------------------------------------------- CAPA

    @app.get("/capa", include_in_schema=False)
    def capa_board(request: Request, conn: Db) -> HTMLResponse:
        user = kit.who(request, conn)
        found = capa.find_capas(conn, limit=1000)
        columns = {state: [c for c in found if c.state == state]
                   for state in ("open", *CAPA_STEPS)}  # fmt: skip
        late = {o.capa_id for o in capa.overdue(conn, kit.clock.now().date())}
        return kit.render(request, user, "capa_board.html", columns=columns, late=late)

    @app.get("/capa/{capa_id}", include_in_schema=False)
    def capa_page(request: Request, conn: Db, capa_id: int) -> HTMLResponse:
        user = kit.who(request, conn)
        try:
            found = capa.get_capa(conn, capa_id)
        except RecordError as exc:
            return kit.problem(request, user, exc, status=404)
        return kit.render(request, user, "capa.html", c=found, next_step=NEXT_STEP.get(found.state),
                          today=kit.clock.now().date(),
                          when=LocalTimes(site_zone(conn, None)))  # fmt: skip

    @app.post("/capa/{capa_id}/advance", include_in_schema=False)
    def capa_advance(
        request: Request,
        conn: Db,
        capa_id: int,
        to_state: Annotated[str, Form(pattern=STEP)],
        expected_state: Annotated[str, Form(max_length=30)],
        comment: Annotated[str, Form(max_length=5000)] = "",
        root_cause: Annotated[str, Form(max_length=20_000)] = "",
        effectiveness: Annotated[str, Form(max_length=20_000)] = "",
        username: Annotated[str, Form(max_length=64)] = "",
        password: Annotated[str, Form(max_length=1024)] = "",
        meaning: Annotated[str, Form(max_length=30)] = "approval",
        reason: Annotated[str, Form(max_length=2000)] = "",
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        user = kit.checked(request, conn, csrf, QA)
        signature = None
        if to_state == "closed":
            kit.guard(request)
            signature = capa.CloseSignature(
                user.username, Credentials(username, password, web.client(request)),
                meaning, reason,  # type: ignore[arg-type]
            )  # fmt: skip
        step = capa.Step(to_state, comment, root_cause or None, effectiveness or None,  # type: ignore[arg-type]
                         expected_state)  # type: ignore[arg-type]  # fmt: skip
        return kit.act(
            request, user,
            lambda: capa.advance(conn, user.username, capa_id, step, kit.clock.now(), signature),
            f"/capa/{capa_id}",
        )  # fmt: skip

    @app.post("/capa/{capa_id}/actions", include_in_schema=False)
    def capa_action(
        request: Request,
        conn: Db,
        capa_id: int,
        description: Annotated[str, Form(min_length=1, max_length=2000)],
        owner: Annotated[str, Form(max_length=64)],
        due_date: Annotated[date, Form()],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        user = kit.checked(request, conn, csrf, QA)
        return kit.act(
            request, user,
            lambda: capa.add_action(conn, user.username, capa_id, description, owner, due_date),
            f"/capa/{capa_id}",
        )  # fmt: skip

    @app.post("/capa/{capa_id}/actions/{action_id}/complete", include_in_schema=False)
    def capa_action_done(
        request: Request,
        conn: Db,
        capa_id: int,
        action_id: int,
        outcome: Annotated[str, Form(min_length=1, max_length=5000)],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        user = kit.checked(request, conn, csrf, STOCK)
        return kit.act(
            request, user,
            lambda: capa.complete_action(conn, user.username, capa_id, action_id, outcome,
                                         kit.clock.now()),
            f"/capa/{capa_id}",
        )  # fmt: skip

    @app.post("/capa/{capa_id}/evidence", include_in_schema=False)
    def capa_evidence(
        request: Request,
        conn: Db,
        capa_id: int,
        file: Annotated[UploadFile, File()],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        user = kit.checked(request, conn, csrf, STOCK)
        content = file.file.read(capa.MAX_EVIDENCE_BYTES + 1)
        return kit.act(
            request, user,
            lambda: capa.add_evidence(
                conn, user.username, capa_id, file.filename or "evidence",
                file.content_type or "application/octet-stream", content, kit.clock.now(),
            ),
            f"/capa/{capa_id}",
        )  # fmt: skip

    # ---------------------------------------------------------------- storage profiles

    @app.get("/profiles", include_in_schema=False)
    def profiles_page(request: Request, conn: Db) -> HTMLResponse:
        """The storage profiles and the products kept under them, each change signed by QA."""
        user = kit.who(request, conn, OVERSIGHT)
        return kit.render(
            request, user, "profiles.html", profiles=products.list_profiles(conn),
            products=products.list_products(conn), meanings=MEANINGS,
            changed=[c for c in changes.list_changes(conn)
                     if c.subject in ("temperature_profile", "product")],
            when=LocalTimes(site_zone(conn, None)),
        )  # fmt: skip

    @app.post("/profiles", include_in_schema=False)
    def new_profile(
        request: Request,
        conn: Db,
        profile_id: Annotated[str, Form(max_length=100)],
        name: Annotated[str, Form(max_length=400)],
        temp_min_c: Annotated[str, Form(max_length=40)] = "",
        temp_max_c: Annotated[str, Form(max_length=40)] = "",
        alarm_delay_s: Annotated[str, Form(max_length=40)] = "0",
        stability_budget_min: Annotated[str, Form(max_length=40)] = "",
        release_signatures: Annotated[str, Form(pattern="^[12]$")] = "1",
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        """A new storage profile, read by the API's request model (``PUT /profiles/{id}``)."""
        user = kit.checked(request, conn, csrf, QA)

        def add() -> None:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", profile_id.strip()):
                raise ValueError(
                    f"a profile's id is 1 to 64 letters, digits, _ . -: {profile_id!r}"
                )
            body = read(models.ProfileIn, {
                "name": name.strip(), "temp_min_c": temp_min_c.strip() or None,
                "temp_max_c": temp_max_c.strip() or None,
                "alarm_delay_s": alarm_delay_s.strip() or 0,
                "stability_budget_min": stability_budget_min.strip() or None,
                "release_signatures": int(release_signatures),
            })  # fmt: skip
            profile = products.Profile(id=profile_id.strip(), **body.model_dump())
            products.add_profile(conn, user.username, profile)

        return kit.act(request, user, add, "/profiles", also=(ValueError,))

    @app.post("/products", include_in_schema=False)
    def new_product(
        request: Request,
        conn: Db,
        gtin: Annotated[str, Form(max_length=40)],
        name: Annotated[str, Form(max_length=400)],
        profile_id: Annotated[str, Form(max_length=100)],
        serialised: Annotated[bool, Form()] = False,
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        """A new product under a storage profile (``PUT /products/{gtin}``)."""
        user = kit.checked(request, conn, csrf, QA)

        def add() -> None:
            body = read(models.ProductIn, {"name": name.strip(), "profile_id": profile_id,
                                           "serialised": serialised})  # fmt: skip
            product = products.Product(gtin.strip(), body.name, body.profile_id, body.serialised)
            products.add_product(conn, user.username, product)

        return kit.act(request, user, add, "/profiles", also=(ValueError,))

    @app.post("/profiles/{profile_id}/limits", include_in_schema=False)
    def change_profile(
        request: Request,
        conn: Db,
        profile_id: str,
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=1024)],
        meaning: Annotated[str, Form(pattern=MEANING)],
        reason: Annotated[str, Form(min_length=1, max_length=2000)],
        temp_min_c: Annotated[str, Form(max_length=20)] = "",
        temp_max_c: Annotated[str, Form(max_length=20)] = "",
        alarm_delay_s: Annotated[str, Form(max_length=20)] = "",
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        user = kit.checked(request, conn, csrf, QA)
        kit.guard(request)
        try:
            values: dict[str, Any] = {"temp_min_c": number(temp_min_c),
                                      "temp_max_c": number(temp_max_c)}  # fmt: skip
            if alarm_delay_s.strip():  # a profile always has a delay: blank keeps it
                values["alarm_delay_s"] = delay(alarm_delay_s)
        except ValueError as exc:
            return kit.problem(request, user, exc)
        signer = (username, password, meaning, reason)
        return signed_change(request, conn, user, "temperature_profile", profile_id, values,
                             signer, "/profiles")  # fmt: skip

    @app.post("/products/{gtin}/profile", include_in_schema=False)
    def change_product(
        request: Request,
        conn: Db,
        gtin: str,
        profile_id: Annotated[str, Form(max_length=64)],
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=1024)],
        meaning: Annotated[str, Form(pattern=MEANING)],
        reason: Annotated[str, Form(min_length=1, max_length=2000)],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        user = kit.checked(request, conn, csrf, QA)
        kit.guard(request)
        signer = (username, password, meaning, reason)
        return signed_change(request, conn, user, "product", gtin, {"profile_id": profile_id},
                             signer, "/profiles")  # fmt: skip

    # ---------------------------------------------------------------- validation

    @app.get("/validation", include_in_schema=False)
    def validation_page(request: Request, conn: Db) -> HTMLResponse:
        """The validation packs kept, with their signatures and the signing dialog."""
        user = kit.who(request, conn, OVERSIGHT)
        runs = pack.runs(conn)
        signed = signatures.of_records(conn, "validation_run", [r["id"] for r in runs])
        # What changed since the last pack that passed: what a re-validation has to cover.
        since = pack.last_validated(conn, None)
        return kit.render(
            request, user, "validation.html", runs=runs, signed=signed, since=since,
            changed=changes.list_changes(conn, since), when=LocalTimes(site_zone(conn, None)),
        )  # fmt: skip

    @app.post("/validation/{run_id}/sign", include_in_schema=False)
    def sign_validation(
        request: Request,
        conn: Db,
        run_id: int,
        role: Annotated[str, Form(pattern="^(execution|review)$")],
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=1024)],
        reason: Annotated[str, Form(min_length=1, max_length=2000)],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        user = kit.checked(request, conn, csrf, QA)
        kit.guard(request)
        return kit.act(
            request, user,
            lambda: pack.sign(
                conn, user.username, run_id, role,
                credentials=Credentials(username, password, web.client(request)),
                reason=reason, at=kit.clock.now(),
            ),
            "/validation",
        )  # fmt: skip

    # ---------------------------------------------------------------- conformance

    @app.get("/conformance", include_in_schema=False)
    def conformance_page(request: Request, conn: Db) -> HTMLResponse:
        user = kit.who(request, conn, OVERSIGHT)
        try:
            found = conformance.check(conn, kit.clock.now(), None, request.app.state.profiles_dir)
        except RecordError as exc:
            return kit.problem(request, user, exc)
        # Each kind of finding over the last two weeks, by day in the site's zone.
        zone = site_zone(conn, None)
        today = kit.clock.now().astimezone(ZoneInfo(zone)).date()
        days = [today - timedelta(days=n) for n in range(13, -1, -1)]
        trend: dict[tuple[str, str], dict[date, int]] = {}
        for d in conformance.history(conn, kit.clock.now() - timedelta(days=14), zone=zone):
            trend.setdefault((d.site_id, d.rule), {})[d.day.date()] = d.findings
        return kit.render(request, user, "conformance.html", findings=found, days=days,
                          trend=sorted(trend.items()))  # fmt: skip

    # ---------------------------------------------------------------- KPIs

    @app.get("/kpi", include_in_schema=False)
    def kpis(request: Request, conn: Db, days: int = 30) -> HTMLResponse:
        user = kit.who(request, conn, OVERSIGHT)
        days = min(max(days, 1), 400)
        end = kit.clock.now()
        report = kpi.report(conn, end - timedelta(days=days), end)
        return kit.render(request, user, "kpi.html", report=report, days=days)
