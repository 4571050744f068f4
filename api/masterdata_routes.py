"""Routes of master data (sites, locations, sensors with their placements and calibration
certificates) and the time-range lists of movements and shipments.

Single records answer with an ``ETag``; a change sent with ``If-Match`` is refused with 412
when someone changed the record in between.

No `from __future__ import annotations`: FastAPI reads these annotations at run time.
"""

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Response

from coldtrail.api import etag, models
from coldtrail.api.erp_routes import ADMIN, EVERYONE, LOGISTICS, PREFIX, QA, Deps
from coldtrail.erp import changes, movements
from coldtrail.erp import masterdata as md
from coldtrail.erp.people import User
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import NotFound, RuleViolation

Ident = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
SensorIdent = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
IfMatch = Annotated[str | None, Header(description=etag.IF_MATCH_DESCRIPTION)]
Since = Annotated[models.Instant | None, Query(alias="from", description="from (RFC 3339)")]
Until = Annotated[models.Instant | None, Query(alias="to", description="until, excluded")]
Limit = Annotated[int, Query(ge=1, le=1000)]


def register(app: FastAPI, deps: Deps) -> None:
    Db = Annotated[Conn, Depends(deps.db, scope="function")]
    Anyone = Annotated[User, Depends(deps.allow(EVERYONE))]
    Admin = Annotated[User, Depends(deps.allow(ADMIN))]
    Placer = Annotated[User, Depends(deps.allow(LOGISTICS))]
    Calibrator = Annotated[User, Depends(deps.allow(QA))]
    refusals: dict[int | str, dict[str, Any]] = {
        404: {"description": "a record named does not exist"},
        409: {"description": "the change would rewrite what the record depends on"},
        412: {"description": "If-Match names a version that is no longer current"},
    }

    # ------------------------------------------------------------------ sites

    @app.get(PREFIX + "/sites", tags=["master data"])
    def list_sites(conn: Db, _: Anyone) -> list[md.Site]:
        return md.list_sites(conn)

    @app.put(PREFIX + "/sites/{site_id}", tags=["master data"], responses=refusals)
    def put_site(
        site_id: Ident, body: models.SiteIn, conn: Db, user: Admin, response: Response,
        if_match: IfMatch = None,
    ) -> md.Site:  # fmt: skip
        with acting(conn, user.username):
            etag.check(if_match, md.get_site(conn, site_id, lock=True), f"site {site_id}")
            md.upsert_site(conn, site_id, body.name, body.timezone)
            site = md.get_site(conn, site_id)
        assert site is not None  # noqa: S101 - written just above
        etag.tagged(response, site)
        return site

    # ------------------------------------------------------------------ locations

    @app.get(PREFIX + "/locations", tags=["master data"])
    def list_locations(
        conn: Db,
        _: Anyone,
        site: str | None = None,
        kind: Annotated[
            str | None, Query(pattern="^(cold_room|ambient_store|vehicle|compartment)$")
        ] = None,
    ) -> list[md.Location]:
        return md.list_locations(conn, site, kind)

    @app.get(PREFIX + "/locations/{location_id}", tags=["master data"], responses=refusals)
    def get_location(location_id: str, conn: Db, _: Anyone, response: Response) -> md.Location:
        loc = md.get_location(conn, location_id)
        if loc is None:
            raise NotFound(f"no location {location_id}")
        etag.tagged(response, loc)
        return loc

    @app.put(PREFIX + "/locations/{location_id}", tags=["master data"], responses=refusals)
    def put_location(
        location_id: Ident, body: models.LocationIn, conn: Db, user: Admin, response: Response,
        if_match: IfMatch = None,
    ) -> md.Location:  # fmt: skip
        """Create a location, or change its name, range, area or volume. Its site, kind and
        vehicle stay: the record of what was measured there depends on them."""
        if (body.kind == "compartment") != (body.parent_id is not None):
            raise RuleViolation("a compartment names its vehicle (parent_id); nothing else does")
        new = md.Location(id=location_id, **body.model_dump())
        with acting(conn, user.username):
            old = md.get_location(conn, location_id, lock=True)
            etag.check(if_match, old, f"location {location_id}")
            if old is not None and (old.site_id, old.kind, old.parent_id) != (
                new.site_id, new.kind, new.parent_id,
            ):  # fmt: skip
                raise RuleViolation(
                    f"location {location_id} is a {old.kind} of site {old.site_id}"
                    + (f" in {old.parent_id}" if old.parent_id else "")
                    + ": register a new location instead of changing what this one is"
                )
            changes.refuse_edit("location", location_id, old, new,
                                f"{PREFIX}/locations/{location_id}/limits")  # fmt: skip
            md.upsert_location(conn, new)
            loc = md.get_location(conn, location_id)
        assert loc is not None  # noqa: S101 - written just above
        etag.tagged(response, loc)
        return loc

    # ------------------------------------------------------------------ sensors

    @app.get(PREFIX + "/sensors", tags=["master data"])
    def list_sensors(
        conn: Db,
        _: Anyone,
        after: Annotated[str, Query(description="return sensors after this id (paging)")] = "",
        limit: Limit = 100,
    ) -> list[md.Sensor]:
        return md.list_sensors(conn, after, limit)

    @app.get(PREFIX + "/sensors/{sensor_id}", tags=["master data"], responses=refusals)
    def get_sensor(sensor_id: str, conn: Db, _: Anyone, response: Response) -> md.Sensor:
        """The sensor with every placement and calibration certificate."""
        sensor = md.get_sensor(conn, sensor_id)
        if sensor is None:
            raise NotFound(f"no sensor {sensor_id}")
        etag.tagged(response, sensor)
        return sensor

    @app.put(PREFIX + "/sensors/{sensor_id}", tags=["master data"], responses=refusals)
    def put_sensor(
        sensor_id: SensorIdent, body: models.SensorIn, conn: Db, user: Admin,
        response: Response, if_match: IfMatch = None,
    ) -> md.Sensor:  # fmt: skip
        with acting(conn, user.username):
            old = md.get_sensor(conn, sensor_id, lock=True)
            etag.check(if_match, old, f"sensor {sensor_id}")
            if old is not None and (old.model, old.serial) != (body.model, body.serial):
                raise RuleViolation(
                    f"sensor {sensor_id} is {old.model} {old.serial}: a replaced logger is "
                    "registered as a new sensor, so the record keeps which one measured what"
                )
            if old is not None and old.kind != body.kind:
                raise RuleViolation(
                    f"sensor {sensor_id} is a {old.kind} sensor: another kind of device is "
                    "registered as a new sensor"
                )
            if old is None:
                md.upsert_sensor(conn, sensor_id, body.model, body.serial, kind=body.kind)
            sensor = md.get_sensor(conn, sensor_id)
        assert sensor is not None  # noqa: S101 - written just above
        etag.tagged(response, sensor)
        return sensor

    @app.post(
        PREFIX + "/sensors/{sensor_id}/placements", tags=["master data"], responses=refusals,
        status_code=201,
    )  # fmt: skip
    def place_sensor(
        sensor_id: str, body: models.PlacementIn, conn: Db, user: Placer, response: Response
    ) -> md.Sensor:
        """Place the sensor in a location from ``since`` on; its current placement ends then."""
        with acting(conn, user.username):
            sensor = md.place_sensor(conn, sensor_id, body.location_id, body.since,
                                     body.position, deps.clock.now())  # fmt: skip
        etag.tagged(response, sensor)
        return sensor

    @app.post(
        PREFIX + "/sensors/{sensor_id}/calibrations", tags=["master data"], responses=refusals,
        status_code=201,
    )  # fmt: skip
    def add_calibration(
        sensor_id: str, body: models.CertificateIn, conn: Db, user: Calibrator,
        response: Response,
    ) -> md.Sensor:  # fmt: skip
        """File a calibration certificate (append-only); the due date follows the latest
        passed one, and the record shows each value's calibration status from them."""
        with acting(conn, user.username):
            sensor = md.file_certificate(conn, sensor_id, **body.model_dump(),
                                         recorded_by=user.username)  # fmt: skip
        etag.tagged(response, sensor)
        return sensor

    # ------------------------------------------------------------------ time-range lists

    @app.get(PREFIX + "/movements", tags=["movements"])
    def list_movements(
        conn: Db,
        _: Anyone,
        lot_id: int | None = None,
        shipment_id: str | None = None,
        location: str | None = None,
        since: Since = None,
        until: Until = None,
        after: Annotated[int, Query(ge=0, description="return rows after this id")] = 0,
        limit: Limit = 100,
    ) -> list[movements.Movement]:
        """Movements by when the goods moved, oldest id first; page with ``after``."""
        return movements.find_movements(
            conn, lot_id=lot_id, shipment_id=shipment_id, location_id=location, since=since,
            until=until, after_id=after, limit=limit,
        )  # fmt: skip

    @app.get(PREFIX + "/shipments", tags=["shipments"])
    def list_shipments(
        conn: Db,
        _: Anyone,
        state: Annotated[
            str | None, Query(pattern="^(planned|in_transit|delivered|cancelled)$")
        ] = None,
        vehicle: str | None = None,
        since: Since = None,
        until: Until = None,
        after: Annotated[str, Query(description="return shipments after this id")] = "",
        limit: Limit = 100,
    ) -> list[movements.Shipment]:
        """Shipments whose journey overlaps [from, to) (planned ones: created in it)."""
        return movements.find_shipments(
            conn, state=state, vehicle_id=vehicle, since=since, until=until, after_id=after,
            limit=limit,
        )  # fmt: skip
