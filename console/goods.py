"""Logistics at work: goods received (a lot registered from its label or a scan and put in a
place), moved, loaded onto a vehicle, taken on the road, delivered, and the shipment closed
(lots under quarantine or rejected carried into a quarantine area). What lies where now, and
the shipments planned and on the road.

Each form is read by the API's own request model and done through the ERP call the API
makes, as the same role: the database's rules (no quarantined lot delivered, no more taken
than lies there) refuse here as there.

No `from __future__ import annotations`: FastAPI reads these annotations at run time.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, Response

from coldtrail.api import models
from coldtrail.api.erp_routes import EVERYONE, LOGISTICS
from coldtrail.console.kit import Kit, LocalTimes, local_time, read, site_zone
from coldtrail.erp import masterdata, movements, products
from coldtrail.erp.movements import Stock
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import PayloadError

WHERE_GOODS_LIE = ("cold_room", "ambient_store")
SHOWN_STATES = ("planned", "in_transit")
MAX_STOCK_ROWS = 5000
"""A page shows at most this many lots-in-places, and says so when there are more."""
Text = Annotated[str, Form(max_length=500)]
Csrf = Annotated[str, Form(max_length=100)]


def stay(text: str) -> tuple[int, str]:
    """A lot where it lies, as a form names it: ``lot id|place``."""
    lot, _, place = text.partition("|")
    if not lot.isdigit() or not place:
        raise ValueError(f"not a lot in a place: {text!r}")
    return int(lot), place


def record(conn: Conn, actor: str, lot_id: int, form: dict[str, Any]) -> None:
    """A movement as the API records one (``POST /api/v1/movements``): the form read by the
    API's request model, then the ERP call."""
    body = read(models.MovementIn, {"lot_id": lot_id, **form})
    movements.record_movement(
        conn, actor, lot_id, body.kind, body.quantity, body.at,
        from_location=body.from_location, to_location=body.to_location,
        shipment_id=body.shipment_id, party=body.party,
    )  # fmt: skip


def register(app: FastAPI, kit: Kit, Db: Any) -> None:
    def when(conn: Conn) -> LocalTimes:
        return LocalTimes(site_zone(conn, None))

    def moved(request: Request, conn: Conn, csrf: str, call: Callable[[str], object]) -> Response:
        user = kit.checked(request, conn, csrf, LOGISTICS)
        return kit.act(
            request, user, lambda: call(user.username), "/goods", also=(ValueError, PayloadError)
        )

    @app.get("/goods", include_in_schema=False)
    def goods(request: Request, conn: Db) -> HTMLResponse:
        user = kit.who(request, conn, EVERYONE)
        places = masterdata.list_locations(conn)
        stock = movements.stock_now(conn, MAX_STOCK_ROWS + 1)
        cut = len(stock) > MAX_STOCK_ROWS
        stock = stock[:MAX_STOCK_ROWS]
        shipments = [
            s
            for state in SHOWN_STATES
            for s in movements.find_shipments(conn, state=state, limit=200)
        ]
        aboard = {s.id: movements.shipment_lots(conn, s.id) for s in shipments}
        on = {s.id: _on_vehicle(stock, s.vehicle_id, places) for s in shipments}
        t = when(conn)
        stores = [p for p in places if p.kind in WHERE_GOODS_LIE]
        store_ids = {p.id for p in stores}
        return kit.render(
            request,
            user,
            "goods.html",
            stock=stock,
            cut=cut,
            shipments=shipments,
            aboard=aboard,
            on=on,
            places={p.id: p for p in places},
            stores=stores,
            vehicles=[p for p in places if p.kind == "vehicle"],
            quarantine=[p for p in places if p.quarantine_area],
            in_store=[s for s in stock if s.location_id in store_ids],
            products=products.list_products(conn),
            sites=masterdata.list_sites(conn),
            when=t,
            now_local=f"{t.local(kit.clock.now()):%Y-%m-%dT%H:%M}",
        )

    @app.post("/goods/receive", include_in_schema=False)
    def receive(
        request: Request,
        conn: Db,
        quantity: Annotated[str, Form(max_length=40)],
        to_location: Annotated[str, Form(max_length=64)],
        at: Annotated[str, Form(max_length=40)],
        scan: Text = "",
        gtin: Annotated[str, Form(max_length=40)] = "",
        lot_number: Annotated[str, Form(max_length=40)] = "",
        expiry: Annotated[str, Form(max_length=40)] = "",
        party: Annotated[str, Form(max_length=200)] = "",
        csrf: Csrf = "",
    ) -> Response:
        """A lot registered (from its scan, or GTIN and number) and received into a place, in
        one transaction: a refused receipt registers nothing."""
        t = when(conn)

        def call(actor: str) -> None:
            lot = read(
                models.LotIn,
                {"scan": scan.strip()}
                if scan.strip()
                else {
                    "gtin": gtin.strip() or None,
                    "lot_number": lot_number.strip() or None,
                    "expiry": expiry.strip() or None,
                },
            )
            receipt = {
                "kind": "receiving",
                "quantity": quantity.strip(),
                "at": local_time(at, t),
                "to_location": to_location,
                "party": party.strip() or None,
            }
            with acting(conn, actor):
                got = (
                    products.register_scan(conn, actor, lot.scan)
                    if lot.scan
                    else products.register_lot(
                        conn, actor, lot.gtin or "", lot.lot_number or "", expiry=lot.expiry
                    )
                )
                record(conn, actor, got.id, receipt)

        return moved(request, conn, csrf, call)

    @app.post("/goods/move", include_in_schema=False)
    def move(
        request: Request,
        conn: Db,
        lot: Annotated[str, Form(max_length=100)],
        quantity: Annotated[str, Form(max_length=40)],
        to_location: Annotated[str, Form(max_length=64)],
        at: Annotated[str, Form(max_length=40)],
        kind: Annotated[str, Form(pattern="^(put_away|transfer)$")] = "transfer",
        csrf: Csrf = "",
    ) -> Response:
        t = when(conn)

        def call(actor: str) -> None:
            lot_id, place = stay(lot)
            record(conn, actor, lot_id, {
                "kind": kind, "quantity": quantity.strip(), "at": local_time(at, t),
                "from_location": place, "to_location": to_location,
            })  # fmt: skip

        return moved(request, conn, csrf, call)

    @app.post("/shipments", include_in_schema=False)
    def new_shipment(
        request: Request,
        conn: Db,
        shipment_id: Annotated[str, Form(max_length=100)],
        vehicle_id: Annotated[str, Form(max_length=64)],
        origin_site: Annotated[str, Form(max_length=64)],
        destination: Annotated[str, Form(max_length=600)],
        route: Annotated[str, Form(max_length=2100)] = "",
        csrf: Csrf = "",
    ) -> Response:
        def call(actor: str) -> None:
            body = read(
                models.ShipmentIn,
                {
                    "id": shipment_id.strip(),
                    "vehicle_id": vehicle_id,
                    "origin_site": origin_site,
                    "destination": destination.strip(),
                    "route": route.strip(),
                },
            )
            movements.create_shipment(
                conn,
                actor,
                body.id,
                body.vehicle_id,
                body.origin_site,
                body.destination,
                body.route,
            )

        return moved(request, conn, csrf, call)

    @app.post("/goods/load", include_in_schema=False)
    def load(
        request: Request,
        conn: Db,
        shipment_id: Annotated[str, Form(max_length=64)],
        lot: Annotated[str, Form(max_length=100)],
        quantity: Annotated[str, Form(max_length=40)],
        to_location: Annotated[str, Form(max_length=64)],
        at: Annotated[str, Form(max_length=40)],
        csrf: Csrf = "",
    ) -> Response:
        t = when(conn)

        def call(actor: str) -> None:
            lot_id, place = stay(lot)
            record(conn, actor, lot_id, {
                "kind": "loading", "quantity": quantity.strip(), "at": local_time(at, t),
                "from_location": place, "to_location": to_location, "shipment_id": shipment_id,
            })  # fmt: skip

        return moved(request, conn, csrf, call)

    @app.post("/shipments/{shipment_id}/depart", include_in_schema=False)
    def depart(
        request: Request,
        conn: Db,
        shipment_id: str,
        at: Annotated[str, Form(max_length=40)],
        csrf: Csrf = "",
    ) -> Response:
        t = when(conn)

        def call(actor: str) -> None:
            body = read(models.At, {"at": local_time(at, t)})
            movements.depart(conn, actor, shipment_id, body.at)

        return moved(request, conn, csrf, call)

    @app.post("/shipments/{shipment_id}/deliver", include_in_schema=False)
    def deliver(
        request: Request,
        conn: Db,
        shipment_id: str,
        lot: Annotated[str, Form(max_length=100)],
        quantity: Annotated[str, Form(max_length=40)],
        party: Annotated[str, Form(max_length=200)],
        at: Annotated[str, Form(max_length=40)],
        csrf: Csrf = "",
    ) -> Response:
        t = when(conn)

        def call(actor: str) -> None:
            lot_id, place = stay(lot)
            record(conn, actor, lot_id, {
                "kind": "delivery", "quantity": quantity.strip(), "at": local_time(at, t),
                "from_location": place, "shipment_id": shipment_id,
                "party": party.strip() or None,
            })  # fmt: skip

        return moved(request, conn, csrf, call)

    @app.post("/shipments/{shipment_id}/arrive", include_in_schema=False)
    def arrive(
        request: Request,
        conn: Db,
        shipment_id: str,
        at: Annotated[str, Form(max_length=40)],
        quarantine_to: Annotated[str, Form(max_length=64)] = "",
        csrf: Csrf = "",
    ) -> Response:
        t = when(conn)

        def call(actor: str) -> None:
            body = read(
                models.ArriveIn, {"at": local_time(at, t), "quarantine_to": quarantine_to or None}
            )
            movements.arrive(conn, actor, shipment_id, body.at, quarantine_to=body.quarantine_to)

        return moved(request, conn, csrf, call)


def _on_vehicle(stock: list[Stock], vehicle: str, places: list[masterdata.Location]) -> list[Stock]:
    """The lots lying on the vehicle or in its compartments now."""
    inside = {vehicle} | {p.id for p in places if p.parent_id == vehicle}
    return [s for s in stock if s.location_id in inside]
