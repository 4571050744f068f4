"""Routes of the ERP core: products, lots, movements, shipments, holds with e-signatures,
CAPA, the audit trail, KPIs and the outbox's destinations.

No `from __future__ import annotations`: FastAPI reads these annotations at run time.
"""

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Header, Path, Query, Request, Response, UploadFile

from coldtrail.api import etag, models, web
from coldtrail.clock import Clock
from coldtrail.erp import (
    audit,
    capa,
    chain,
    changes,
    conformance,
    disposal,
    holds,
    kpi,
    movements,
    outbox,
    products,
)  # fmt: skip
from coldtrail.erp.people import Role, User
from coldtrail.erp.signatures import Credentials, Signature
from coldtrail.erp.tx import Conn
from coldtrail.errors import NotFound
from coldtrail.redact import redact_url

PREFIX = "/api/v1"
EVERYONE = frozenset(Role)
QA = frozenset({Role.ADMIN, Role.QA})
LOGISTICS = frozenset({Role.ADMIN, Role.LOGISTICS})
STOCK = frozenset({Role.ADMIN, Role.LOGISTICS, Role.QA})
OVERSIGHT = frozenset({Role.ADMIN, Role.QA, Role.AUDITOR})
ADMIN = frozenset({Role.ADMIN})
Page = Annotated[int, Query(ge=1, le=1000)]
After = Annotated[int, Query(ge=0, description="return rows after this id (paging)")]
IfMatch = Annotated[str | None, Header(description=etag.IF_MATCH_DESCRIPTION)]


@dataclass(frozen=True)
class Deps:
    db: Callable[[], AsyncIterator[Conn]]
    """The app's connection dependency."""
    allow: Callable[[frozenset[Role]], Callable[..., User]]
    clock: Clock


@dataclass(frozen=True)
class LotDetail:
    lot: products.Lot
    stays: list[movements.Stay]
    movements: list[movements.Movement]
    holds: list[holds.Hold]


@dataclass(frozen=True)
class LotExit:
    movement: movements.Movement
    signature: Signature


@dataclass(frozen=True)
class ShipmentDetail:
    shipment: movements.Shipment
    lots: list[movements.ShipmentLot]
    completeness: list[kpi.Completeness]


def verify_all(conn: Conn, since: datetime | None = None) -> models.ChainCheckOut:
    """The trail's chain, the readings' chain and the tables against the trail (shared by
    the API and the web console)."""
    trail = asdict(audit.verify(conn))
    readings = asdict(chain.verify_readings(conn, since=since))
    state = asdict(audit.verify_state(conn))
    trail["ok"] = trail["ok"] and readings["ok"] and state["ok"]
    return models.ChainCheckOut(**trail, readings=readings, state=state)


def register(app: FastAPI, deps: Deps) -> None:
    Db = Annotated[Conn, Depends(deps.db, scope="function")]
    Anyone = Annotated[User, Depends(deps.allow(EVERYONE))]
    Qa = Annotated[User, Depends(deps.allow(QA))]
    Logistics = Annotated[User, Depends(deps.allow(LOGISTICS))]
    Stock = Annotated[User, Depends(deps.allow(STOCK))]
    Oversight = Annotated[User, Depends(deps.allow(OVERSIGHT))]
    Admin = Annotated[User, Depends(deps.allow(ADMIN))]
    refusals: dict[int | str, dict[str, Any]] = {
        404: {"description": "a record named does not exist"},
        409: {"description": "a GxP rule or the record's state refuses it; detail says why"},
    }
    signed = {
        **refusals,
        403: {"description": "the signature was refused"},
        429: {"description": "too many password attempts from this address"},
    }

    # -------------------------------------------------------------- products and lots

    @app.get(PREFIX + "/profiles", tags=["products"])
    def list_profiles(conn: Db, _: Anyone) -> list[products.Profile]:
        return products.list_profiles(conn)

    @app.put(PREFIX + "/profiles/{profile_id}", tags=["products"], responses=refusals)
    def put_profile(
        profile_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")],
        body: models.ProfileIn,
        conn: Db,
        user: Qa,
        response: Response,
        if_match: IfMatch = None,
    ) -> products.Profile:
        profile = products.Profile(id=profile_id, **body.model_dump())
        try:
            current: products.Profile | None = products.get_profile(conn, profile_id)
        except NotFound:
            current = None
        if if_match is not None:
            etag.check(if_match, current, f"profile {profile_id}")
        changes.refuse_edit("temperature_profile", profile_id, current, profile,
                            f"{PREFIX}/profiles/{profile_id}/limits")  # fmt: skip
        saved = products.upsert_profile(conn, user.username, profile)
        etag.tagged(response, saved)
        return saved

    @app.get(PREFIX + "/profiles/{profile_id}", tags=["products"], responses=refusals)
    def get_profile(profile_id: str, conn: Db, _: Anyone, response: Response) -> products.Profile:
        profile = products.get_profile(conn, profile_id)
        etag.tagged(response, profile)
        return profile

    @app.get(PREFIX + "/products", tags=["products"])
    def list_products(conn: Db, _: Anyone) -> list[products.Product]:
        return products.list_products(conn)

    @app.put(PREFIX + "/products/{gtin}", tags=["products"], responses=refusals)
    def put_product(gtin: str, body: models.ProductIn, conn: Db, user: Qa) -> products.Product:
        products.check_gtin(gtin)
        products.get_profile(conn, body.profile_id)  # a 404 for a profile that does not exist
        new = products.Product(gtin, body.name, body.profile_id, body.serialised)
        changes.refuse_edit("product", gtin, products.find_product(conn, gtin), new,
                            f"{PREFIX}/products/{gtin}/profile")  # fmt: skip
        return products.upsert_product(conn, user.username, new)

    @app.get(PREFIX + "/lots", tags=["lots"])
    def list_lots(
        conn: Db,
        _: Anyone,
        lot_status: Annotated[
            str | None, Query(alias="status", pattern="^(available|quarantined|released|rejected)$")
        ] = None,
        gtin: str | None = None,
        after: After = 0,
        limit: Page = 100,
    ) -> list[products.Lot]:
        return products.find_lots(conn, status=lot_status, gtin=gtin, after_id=after, limit=limit)

    @app.post(PREFIX + "/lots", tags=["lots"], responses=refusals, status_code=201)
    def add_lot(body: models.LotIn, conn: Db, user: Stock) -> products.Lot:
        if body.scan is not None:
            return products.register_scan(conn, user.username, body.scan)
        assert body.gtin is not None  # noqa: S101 - LotIn asks for both without a scan
        assert body.lot_number is not None  # noqa: S101
        return products.register_lot(
            conn,
            user.username,
            body.gtin,
            body.lot_number,
            expiry=body.expiry,
            production_date=body.production_date,
            serials=tuple(body.serials),
        )

    @app.get(PREFIX + "/lots/{lot_id}", tags=["lots"], responses=refusals)
    def get_lot(lot_id: int, conn: Db, _: Anyone) -> LotDetail:
        return LotDetail(
            products.get_lot(conn, lot_id),
            movements.lot_history(conn, lot_id),
            movements.lot_movements(conn, lot_id),
            holds.find_holds(conn, lot_id=lot_id, limit=1000),
        )

    @app.post(PREFIX + "/lots/{lot_id}/exit", tags=["lots"], responses=signed, status_code=201)
    def lot_exit(
        lot_id: int, body: models.LotExitIn, conn: Db, user: Qa, request: Request
    ) -> LotExit:
        """Goods out of the site, signed (21 CFR 11.200): back to the supplier, or destroyed.
        A rejected lot leaves from a quarantine area only; only a rejected lot is destroyed;
        a lot under quarantine leaves by neither until QA decides."""
        request.app.state.password_guard(request)
        movement, signature = disposal.leave(
            conn, user.username, lot_id, body.kind, body.quantity, body.at,
            from_location=body.from_location, party=body.party,
            credentials=Credentials(body.username, body.password, web.client(request)),
            meaning=body.meaning, reason=body.reason,
        )  # fmt: skip
        return LotExit(movement, signature)

    # -------------------------------------------------------------- movements and shipments

    @app.post(PREFIX + "/movements", tags=["movements"], responses=refusals, status_code=201)
    def add_movement(body: models.MovementIn, conn: Db, user: Logistics) -> movements.Movement:
        return movements.record_movement(
            conn,
            user.username,
            body.lot_id,
            body.kind,
            body.quantity,
            body.at,
            from_location=body.from_location,
            to_location=body.to_location,
            shipment_id=body.shipment_id,
            party=body.party,
        )

    @app.get(
        PREFIX + "/locations/{location_id}/lots",
        tags=["movements"],
        responses={409: {"description": "the period ends before it starts"}},
    )
    def location_lots(
        location_id: str,
        conn: Db,
        _: Anyone,
        since: Annotated[datetime, Query(alias="from")],
        until: Annotated[datetime, Query(alias="to")],
        children: bool = True,
    ) -> list[movements.Stay]:
        """Every lot in the location (and its compartments) at any time in [from, to)."""
        return movements.lots_in_location(conn, location_id, since, until, with_children=children)

    @app.post(PREFIX + "/shipments", tags=["shipments"], responses=refusals, status_code=201)
    def add_shipment(body: models.ShipmentIn, conn: Db, user: Logistics) -> movements.Shipment:
        return movements.create_shipment(
            conn, user.username, body.id, body.vehicle_id, body.origin_site, body.destination,
            body.route,
        )  # fmt: skip

    @app.get(PREFIX + "/shipments/{shipment_id}", tags=["shipments"], responses=refusals)
    def get_shipment(shipment_id: str, conn: Db, _: Anyone) -> ShipmentDetail:
        return ShipmentDetail(
            movements.get_shipment(conn, shipment_id),
            movements.shipment_lots(conn, shipment_id),
            kpi.shipment_completeness(conn, shipment_id, deps.clock.now()),
        )

    @app.post(PREFIX + "/shipments/{shipment_id}/depart", tags=["shipments"], responses=refusals)
    def depart(shipment_id: str, body: models.At, conn: Db, user: Logistics) -> movements.Shipment:
        return movements.depart(conn, user.username, shipment_id, body.at)

    @app.post(PREFIX + "/shipments/{shipment_id}/arrive", tags=["shipments"], responses=refusals)
    def arrive(
        shipment_id: str, body: models.ArriveIn, conn: Db, user: Logistics
    ) -> movements.Shipment:
        return movements.arrive(
            conn, user.username, shipment_id, body.at, quarantine_to=body.quarantine_to
        )

    # -------------------------------------------------------------- holds

    @app.get(PREFIX + "/holds", tags=["holds"])
    def list_holds(
        conn: Db,
        _: Anyone,
        state: Annotated[str | None, Query(pattern="^(open|released|rejected)$")] = None,
        lot_id: int | None = None,
        after: After = 0,
        limit: Page = 100,
    ) -> list[holds.Hold]:
        return holds.find_holds(
            conn,
            state=state,  # type: ignore[arg-type]  # checked by the pattern
            lot_id=lot_id,
            after_id=after,
            limit=limit,
        )

    @app.post(PREFIX + "/holds", tags=["holds"], responses=refusals, status_code=201)
    def add_hold(body: models.HoldIn, conn: Db, user: Qa) -> holds.Hold:
        return holds.place_hold(conn, user.username, body.lot_id, body.reason, deps.clock.now())

    @app.get(PREFIX + "/holds/{hold_id}", tags=["holds"], responses=refusals)
    def get_hold(hold_id: int, conn: Db, _: Anyone, response: Response) -> holds.Hold:
        hold = holds.get_hold(conn, hold_id)
        etag.tagged(response, hold)
        return hold

    @app.post(
        PREFIX + "/holds/{hold_id}/disposition",
        tags=["holds"],
        responses=signed,
    )
    def dispose(
        hold_id: int, body: models.DispositionIn, conn: Db, user: Qa, response: Response,
        request: Request, if_match: IfMatch = None,
    ) -> holds.Hold:  # fmt: skip
        """Release or reject the lot, signed (21 CFR 11.200: user id and password again).
        With If-Match, refused if another signature or disposition came in since."""
        request.app.state.password_guard(request)
        if if_match is not None:
            etag.check(if_match, holds.get_hold(conn, hold_id), f"hold {hold_id}")
        hold = holds.dispose(
            conn,
            user.username,
            hold_id,
            body.disposition,
            Credentials(body.username, body.password, web.client(request)),
            body.meaning,
            body.reason,
            deps.clock.now(),
            open_excursions=body.open_excursions,
        )
        etag.tagged(response, hold)
        return hold

    # -------------------------------------------------------------- CAPA

    @app.get(PREFIX + "/capa", tags=["capa"])
    def list_capas(
        conn: Db,
        _: Anyone,
        state: Annotated[
            str | None, Query(pattern="^(open|investigation|actions|effectiveness_check|closed)$")
        ] = None,
        after: After = 0,
        limit: Page = 100,
    ) -> list[capa.Capa]:
        return capa.find_capas(conn, state=state, after_id=after, limit=limit)  # type: ignore[arg-type]

    @app.get(PREFIX + "/capa/overdue", tags=["capa"])
    def overdue_capas(conn: Db, _: Anyone) -> list[capa.Overdue]:
        return capa.overdue(conn, deps.clock.now().date())

    @app.post(PREFIX + "/capa", tags=["capa"], responses=refusals, status_code=201)
    def add_capa(body: models.CapaIn, conn: Db, user: Qa) -> capa.Capa:
        new = capa.NewCapa(
            body.title, body.owner, body.due_date, body.description, tuple(body.links)
        )
        return capa.open_capa(conn, user.username, new, deps.clock.now())

    @app.get(PREFIX + "/capa/{capa_id}", tags=["capa"], responses=refusals)
    def get_capa(capa_id: int, conn: Db, _: Anyone) -> capa.Capa:
        return capa.get_capa(conn, capa_id)

    @app.post(
        PREFIX + "/capa/{capa_id}/advance",
        tags=["capa"],
        responses=signed,
    )
    def advance_capa(
        capa_id: int, body: models.CapaStepIn, conn: Db, user: Qa, request: Request
    ) -> capa.Capa:
        sig = body.signature
        if sig is not None:
            request.app.state.password_guard(request)
        signature = (
            capa.CloseSignature(
                user.username,
                Credentials(sig.username, sig.password, web.client(request)),
                sig.meaning,
                sig.reason,
            )
            if sig is not None
            else None
        )
        step = capa.Step(
            body.to_state, body.comment, body.root_cause, body.effectiveness, body.expected_state
        )
        return capa.advance(conn, user.username, capa_id, step, deps.clock.now(), signature)

    @app.post(
        PREFIX + "/capa/{capa_id}/actions", tags=["capa"], responses=refusals, status_code=201
    )
    def add_capa_action(
        capa_id: int, body: models.CapaActionIn, conn: Db, user: Qa
    ) -> capa.CapaAction:
        return capa.add_action(
            conn, user.username, capa_id, body.description, body.owner, body.due_date
        )

    @app.post(
        PREFIX + "/capa/{capa_id}/actions/{action_id}/complete", tags=["capa"], responses=refusals
    )
    def complete_capa_action(
        capa_id: int, action_id: int, body: models.OutcomeIn, conn: Db, user: Stock
    ) -> capa.CapaAction:
        return capa.complete_action(
            conn, user.username, capa_id, action_id, body.outcome, deps.clock.now()
        )

    @app.post(PREFIX + "/capa/{capa_id}/links", tags=["capa"], responses=refusals)
    def link_capa(capa_id: int, body: models.LinkIn, conn: Db, user: Qa) -> capa.Capa:
        return capa.link(conn, user.username, capa_id, body.kind, body.ref)

    @app.post(
        PREFIX + "/capa/{capa_id}/evidence", tags=["capa"], responses=refusals, status_code=201
    )
    def add_capa_evidence(
        capa_id: int, file: Annotated[UploadFile, File()], conn: Db, user: Stock
    ) -> capa.Evidence:
        content = file.file.read(capa.MAX_EVIDENCE_BYTES + 1)
        return capa.add_evidence(
            conn,
            user.username,
            capa_id,
            file.filename or "evidence",
            file.content_type or "application/octet-stream",
            content,
            deps.clock.now(),
        )

    @app.get(
        PREFIX + "/capa/{capa_id}/evidence/{evidence_id}",
        tags=["capa"],
        responses={**refusals, 200: {"content": {"application/octet-stream": {}}}},
        response_class=Response,
    )
    def get_capa_evidence(capa_id: int, evidence_id: int, conn: Db, _: Anyone) -> Response:
        meta, content = capa.evidence_content(conn, capa_id, evidence_id)
        media_type, headers = web.download_headers(meta.filename, meta.media_type)
        return Response(
            content, media_type=media_type, headers={**headers, "ETag": f'"{meta.sha256}"'}
        )

    # -------------------------------------------------------------- audit trail and KPIs

    @app.get(PREFIX + "/audit", tags=["audit"])
    def audit_entries(
        conn: Db,
        _: Oversight,
        record_type: str | None = None,
        record_id: str | None = None,
        actor: str | None = None,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
        after: After = 0,
        limit: Page = 100,
    ) -> list[audit.AuditEntry]:
        return audit.entries(
            conn,
            record_type=record_type,
            record_id=record_id,
            actor=actor,
            since=since,
            until=until,
            after_id=after,
            limit=limit,
        )

    @app.get(PREFIX + "/audit/verify", tags=["audit"])
    def audit_verify(
        conn: Db,
        _: Oversight,
        since: Annotated[
            models.Instant | None,
            Query(description="check only the readings' links written from then on (RFC 3339)"),
        ] = None,
    ) -> models.ChainCheckOut:
        """Recompute the hash chain of the whole trail (names the first broken row), every
        link of the readings' chain from the rows (names the batch, sensor and seq), and
        each audited table against what the trail says its rows became."""
        return verify_all(conn, since)

    @app.get(
        PREFIX + "/kpi",
        tags=["audit"],
        responses={409: {"description": "the period ends before it starts"}},
    )
    def kpis(
        conn: Db,
        _: Oversight,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
    ) -> dict[str, Any]:
        end = until or deps.clock.now()
        return kpi.report(conn, since or end - timedelta(days=30), end)

    @app.get(
        PREFIX + "/conformance",
        tags=["audit"],
        responses={404: {"description": "no such site"},
                   409: {"description": "the site names a profile that does not exist"}},
    )  # fmt: skip
    def conformance_findings(
        conn: Db, _: Oversight, request: Request,
        site: Annotated[str | None, Query(max_length=64)] = None,
    ) -> list[conformance.Finding]:  # fmt: skip
        """Where each site (or one) falls short of its compliance profile now: each finding
        with the rule it breaks, what was found, what the rule requires and the rule's source
        (`unsourced` where none is known)."""
        return conformance.check(conn, deps.clock.now(), site, request.app.state.profiles_dir)

    # -------------------------------------------------------------- outbox

    @app.get(PREFIX + "/outbox/destinations", tags=["outbox"])
    def destinations(conn: Db, _: Admin) -> list[models.DestinationOut]:
        return [_destination(d) for d in outbox.list_destinations(conn)]

    @app.put(PREFIX + "/outbox/destinations/{name}", tags=["outbox"], responses=refusals)
    def put_destination(
        name: Annotated[str, Path(pattern=r"^[a-z0-9_.-]{1,64}$")],
        body: models.DestinationIn,
        conn: Db,
        user: Admin,
    ) -> models.DestinationOut:
        dest = outbox.Destination(
            name, body.kind, body.url, body.secret,
            tuple(body.kinds) if body.kinds is not None else None, body.enabled,
        )  # fmt: skip
        return _destination(outbox.add_destination(conn, user.username, dest))

    @app.get(PREFIX + "/outbox/dead", tags=["outbox"])
    def dead(conn: Db, _: Admin, limit: Page = 100) -> list[outbox.DeadDelivery]:
        return outbox.dead_deliveries(conn, limit)

    @app.post(
        PREFIX + "/outbox/dead/{destination}/{event_id}/retry", tags=["outbox"], responses=refusals
    )
    def retry(destination: str, event_id: uuid.UUID, conn: Db, user: Admin) -> dict[str, str]:
        outbox.retry_dead(conn, user.username, destination, event_id, deps.clock.now())
        return {"status": "queued"}


def _destination(d: outbox.Destination) -> models.DestinationOut:
    return models.DestinationOut(
        name=d.name,
        kind=d.kind,
        url=redact_url(d.url),  # a webhook's key in its query is the receiver's secret
        # An MQTT destination's secret is its broker password, not a signing key.
        signed=d.kind == "webhook" and d.secret is not None,
        kinds=list(d.kinds) if d.kinds is not None else None,
        enabled=d.enabled,
    )
