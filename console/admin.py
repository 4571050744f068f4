"""The administrator's pages: people and their roles, gateways (last heard, what ingest kept
aside or dead-lettered), alarm contacts, places (ranges, delays, quarantine areas), products
and their profiles. Every form goes through the ERP call the API makes, as the same role.

No `from __future__ import annotations`: FastAPI reads these annotations at run time.
"""

from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, Response

from coldtrail.api.erp_routes import ADMIN
from coldtrail.api.gateway_routes import GatewayChanged, GatewayIn
from coldtrail.console.kit import Kit, read
from coldtrail.erp import gateways, masterdata, people, products
from coldtrail.erp.people import Role
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import NotFound
from coldtrail.redact import redact_url
from coldtrail.rules import alarms
from coldtrail.rules.notifiers import NOTIFIERS

ROLE = "^(admin|logistics|qa|auditor)$"


def register(
    app: FastAPI,
    kit: Kit,
    Db: Any,
    change_gateway: Callable[[Conn, str, str, GatewayIn], GatewayChanged],
) -> None:
    @app.get("/admin", include_in_schema=False)
    def admin(request: Request, conn: Db) -> HTMLResponse:
        user = kit.who(request, conn, ADMIN)
        contacts = [(i, c, redact_url(c.target)) for i, c in alarms.contacts(conn)]
        return kit.render(
            request, user, "admin.html",
            accounts=people.accounts(conn, kit.clock.now()), gateways=gateways.list_all(conn),
            contacts=contacts, channels=sorted(NOTIFIERS), places=masterdata.list_locations(conn),
            sites=masterdata.list_sites(conn), products=products.list_products(conn),
            profiles=products.list_profiles(conn), roles=[r.value for r in Role],
        )  # fmt: skip

    def done(request: Request, user: Any, call: Any) -> Response:
        # A number typed wrong (float("x")) is a refusal like the record's own.
        return kit.act(request, user, call, "/admin", also=(ValueError,))

    @app.post("/admin/users", include_in_schema=False)
    def add_user(
        request: Request,
        conn: Db,
        username: Annotated[str, Form(pattern=r"^[a-z0-9_.-]{1,64}$")],
        full_name: Annotated[str, Form(min_length=1, max_length=200)],
        role: Annotated[str, Form(pattern=ROLE)],
        password: Annotated[str, Form(min_length=1, max_length=1024)],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        user = kit.checked(request, conn, csrf, ADMIN)

        def create() -> None:
            with acting(conn, user.username):
                people.create_user(conn, username, full_name, Role(role), password)

        return done(request, user, create)

    @app.post("/admin/users/{username}/disabled", include_in_schema=False)
    def set_disabled(
        request: Request,
        conn: Db,
        username: str,
        disabled: Annotated[bool, Form()],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        user = kit.checked(request, conn, csrf, ADMIN)

        def change() -> None:
            with acting(conn, user.username):
                people.set_disabled(conn, username, disabled, user.username)

        return done(request, user, change)

    @app.post("/admin/contacts", include_in_schema=False)
    def add_contact(
        request: Request,
        conn: Db,
        name: Annotated[str, Form(min_length=1, max_length=200)],
        channel: Annotated[str, Form(max_length=40)],
        target: Annotated[str, Form(min_length=1, max_length=500)],
        level: Annotated[int, Form(ge=0, le=10)] = 0,
        after_min: Annotated[int, Form(ge=0, le=10_080)] = 0,
        site_id: Annotated[str, Form(max_length=64)] = "",
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        user = kit.checked(request, conn, csrf, ADMIN)
        contact = alarms.Contact(name, channel, target, level, after_min, site_id or None)
        return done(
            request, user, lambda: alarms.add_contact(conn, user.username, contact, set(NOTIFIERS))
        )

    @app.post("/admin/locations/{location_id}", include_in_schema=False)
    def edit_location(
        request: Request,
        conn: Db,
        location_id: str,
        quarantine_area: Annotated[bool, Form()] = False,
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        """Whether a place is a quarantine area; its range and delay change only as a change
        QA signs, on the place's page."""
        user = kit.checked(request, conn, csrf, ADMIN)

        def change() -> None:
            with acting(conn, user.username):
                old = masterdata.get_location(conn, location_id, lock=True)
                if old is None:
                    raise NotFound(f"no location {location_id}")
                masterdata.upsert_location(conn, replace(old, quarantine_area=quarantine_area))

        return done(request, user, change)

    @app.post("/admin/gateways/{gateway_id}", include_in_schema=False)
    def edit_gateway(
        request: Request,
        conn: Db,
        gateway_id: str,
        site: Annotated[str, Form(max_length=100)],
        disabled: Annotated[bool, Form()] = False,
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        """A gateway moved to another site, or disabled or enabled, as the API changes it;
        the page says whether the broker was told at once."""
        user = kit.checked(request, conn, csrf, ADMIN)
        told: list[str] = []

        def change() -> None:
            body = read(GatewayIn, {"site": site, "disabled": disabled})
            told.append(change_gateway(conn, user.username, gateway_id, body).broker)

        done = kit.act(request, user, change, "/admin", also=(ValueError,))
        if told and told[0] != "updated":
            # Recorded, but a connected gateway keeps its old rights until the broker hears.
            return kit.render(request, user, "notice.html", message=f"{gateway_id}: {told[0]}")
        return done
