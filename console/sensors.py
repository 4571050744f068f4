"""Probes and their calibration: every sensor, where it is and whether a passed certificate
covers today; a sensor's placements and certificates; QA files a certificate and logistics
places a sensor, each through the ERP call the API makes, the form read by the API's own
request model.

No `from __future__ import annotations`: FastAPI reads these annotations at run time.
"""

from datetime import date
from typing import Annotated, Any, get_args

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, Response

from coldtrail.api import models
from coldtrail.api.erp_routes import EVERYONE, LOGISTICS, QA
from coldtrail.console.kit import Kit, LocalTimes, local_time, read, site_zone
from coldtrail.erp import masterdata
from coldtrail.erp.masterdata import SensorKind, SensorState
from coldtrail.erp.tx import acting
from coldtrail.errors import NotFound

DUE_SOON_DAYS = 30
"""A certificate running out within this many days is shown as due: a probe's calibration
is booked weeks ahead."""
SHOWS = ("all", "attention")
KINDS: tuple[str, ...] = get_args(SensorKind)


def needs_attention(s: SensorState, today: date) -> bool:
    """A probe no passed certificate covers today, or whose certificate runs out soon."""
    if s.kind != "probe":
        return False
    left = s.days_left(today)
    return s.calibration != "valid" or (left is not None and left <= DUE_SOON_DAYS)


def register(app: FastAPI, kit: Kit, Db: Any) -> None:
    @app.get("/sensors", include_in_schema=False)
    def sensors_page(request: Request, conn: Db, show: str = "all", kind: str = "") -> HTMLResponse:
        user = kit.who(request, conn, EVERYONE)
        show = show if show in SHOWS else "all"
        chosen: Any = kind if kind in KINDS else None
        when = LocalTimes(site_zone(conn, None))
        today = when.local(kit.clock.now()).date()
        states = masterdata.sensor_states(conn, today, chosen)
        attention = [s for s in states if needs_attention(s, today)]
        return kit.render(
            request, user, "sensors.html", sensors=attention if show == "attention" else states,
            show=show, shows=SHOWS, kind=chosen or "", kinds=KINDS, today=today,
            attention=len(attention), due_days=DUE_SOON_DAYS, when=when,
            places={p.id: p.name for p in masterdata.list_locations(conn)},
        )  # fmt: skip

    @app.get("/sensors/{sensor_id}", include_in_schema=False)
    def sensor_page(request: Request, conn: Db, sensor_id: str) -> HTMLResponse:
        user = kit.who(request, conn, EVERYONE)
        sensor = masterdata.get_sensor(conn, sensor_id)
        if sensor is None:
            return kit.problem(request, user, NotFound(f"no sensor {sensor_id}"), status=404)
        when = LocalTimes(site_zone(conn, None))
        today = when.local(kit.clock.now()).date()
        [state] = masterdata.sensor_states(conn, today, sensor_id=sensor_id)
        return kit.render(
            request, user, "sensor.html", sensor=sensor, state=state, today=today, when=when,
            due_days=DUE_SOON_DAYS, attention=needs_attention(state, today),
            places=masterdata.list_locations(conn),
            now_local=f"{when.local(kit.clock.now()):%Y-%m-%dT%H:%M}",
        )  # fmt: skip

    @app.post("/sensors/{sensor_id}/calibrations", include_in_schema=False)
    def file_certificate(
        request: Request,
        conn: Db,
        sensor_id: str,
        certificate_no: Annotated[str, Form(max_length=200)],
        issuer: Annotated[str, Form(max_length=400)],
        calibrated_on: Annotated[str, Form(max_length=40)],
        valid_until: Annotated[str, Form(max_length=40)],
        passed: Annotated[str, Form(pattern="^(true|false)$")],
        max_error_c: Annotated[str, Form(max_length=40)] = "",
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        """A certificate as the API files it (``POST /api/v1/sensors/{id}/calibrations``)."""
        user = kit.checked(request, conn, csrf, QA)

        def file() -> None:
            cert = read(models.CertificateIn, {
                "certificate_no": certificate_no.strip(), "issuer": issuer.strip(),
                "calibrated_on": calibrated_on, "valid_until": valid_until,
                "passed": passed == "true", "max_error_c": max_error_c.strip() or None,
            })  # fmt: skip
            with acting(conn, user.username):
                masterdata.file_certificate(conn, sensor_id, **cert.model_dump(),
                                            recorded_by=user.username)  # fmt: skip

        return kit.act(request, user, file, f"/sensors/{sensor_id}", also=(ValueError,))

    @app.post("/sensors/{sensor_id}/placements", include_in_schema=False)
    def place(
        request: Request,
        conn: Db,
        sensor_id: str,
        location_id: Annotated[str, Form(max_length=64)],
        since: Annotated[str, Form(max_length=40)],
        position: Annotated[str, Form(max_length=400)] = "",
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        """A placement as the API makes it, from a time typed in the site's zone."""
        user = kit.checked(request, conn, csrf, LOGISTICS)
        when = LocalTimes(site_zone(conn, None))

        def move() -> None:
            body = read(models.PlacementIn, {
                "location_id": location_id, "since": local_time(since, when),
                "position": position.strip(),
            })  # fmt: skip
            with acting(conn, user.username):
                masterdata.place_sensor(conn, sensor_id, body.location_id, body.since,
                                        body.position, kit.clock.now())  # fmt: skip

        return kit.act(request, user, move, f"/sensors/{sensor_id}", also=(ValueError,))
