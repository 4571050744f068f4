"""Products, their temperature profiles, and lots (with serials where tracked)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from coldtrail.erp import queries as q
from coldtrail.erp.gs1 import decode_gs1
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import Conflict, NotFound, PayloadError, RuleViolation

LotStatus = str  # available | quarantined | released | rejected (lot_status in SQL)


@dataclass(frozen=True)
class Profile:
    id: str
    name: str
    temp_min_c: float | None
    temp_max_c: float | None
    rh_min_pct: float | None = None
    rh_max_pct: float | None = None
    alarm_delay_s: int = 0
    stability_budget_min: int | None = None
    """Minutes out of range a lot may spend over its life, summed over every place."""
    mkt_max_c: float | None = None
    hold_on_excursion: bool = True
    release_signatures: int = 1
    """1, or 2 when a second, different person must approve each release."""


@dataclass(frozen=True)
class Product:
    gtin: str
    name: str
    profile_id: str
    serialised: bool = False


@dataclass(frozen=True)
class Lot:
    id: int
    gtin: str
    lot_number: str
    expiry: date | None
    production_date: date | None
    status: LotStatus
    serials: tuple[str, ...] = ()


def upsert_profile(conn: Conn, actor: str, profile: Profile) -> Profile:
    with acting(conn, actor):
        conn.execute(q.UPSERT_PROFILE, asdict(profile))
    return profile


def upsert_product(conn: Conn, actor: str, product: Product) -> Product:
    with acting(conn, actor):
        conn.execute(q.UPSERT_PRODUCT, asdict(product))
    return product


def check_gtin(gtin: str) -> None:
    if not (len(gtin) == 14 and gtin.isdigit()):
        raise RuleViolation("a GTIN here has 14 digits (pad GTIN-8/12/13 with zeros)")


def add_profile(conn: Conn, actor: str, profile: Profile) -> Profile:
    """A new storage profile; one that exists changes its range or delay only by a change
    QA signs (change control), and the rest through the API's edit."""
    with acting(conn, actor):
        if conn.execute(q.PROFILE, {"id": profile.id}).fetchone() is not None:
            raise RuleViolation(f"profile {profile.id} exists already")
        return upsert_profile(conn, actor, profile)


def add_product(conn: Conn, actor: str, product: Product) -> Product:
    """A new product kept under an existing storage profile."""
    check_gtin(product.gtin)
    with acting(conn, actor):
        if find_product(conn, product.gtin) is not None:
            raise RuleViolation(f"product {product.gtin} exists already")
        get_profile(conn, product.profile_id)  # refused: a profile that does not exist
        return upsert_product(conn, actor, product)


def get_profile(conn: Conn, profile_id: str) -> Profile:
    row = conn.execute(q.PROFILE, {"id": profile_id}).fetchone()
    if row is None:
        raise NotFound(f"no temperature profile {profile_id!r}")
    return Profile(*row)


def list_profiles(conn: Conn) -> list[Profile]:
    return [Profile(*r) for r in conn.execute(q.PROFILES)]


def list_products(conn: Conn) -> list[Product]:
    return [Product(*r) for r in conn.execute(q.PRODUCTS)]


def find_product(conn: Conn, gtin: str) -> Product | None:
    row = conn.execute(q.PRODUCT, {"gtin": gtin}).fetchone()
    return Product(*row) if row else None


def register_lot(
    conn: Conn,
    actor: str,
    gtin: str,
    lot_number: str,
    *,
    expiry: date | None = None,
    production_date: date | None = None,
    serials: tuple[str, ...] = (),
) -> Lot:
    """Register a lot, or return the one already registered under this GTIN and number
    (adding serials); a second scan that disagrees on the dates is refused, not merged."""
    with acting(conn, actor):
        row = conn.execute(q.LOT_BY_NUMBER, {"gtin": gtin, "lot": lot_number}).fetchone()
        if row is None:
            row = conn.execute(
                q.INSERT_LOT,
                {"gtin": gtin, "lot": lot_number, "expiry": expiry, "production": production_date},
            ).fetchone()
        assert row is not None  # noqa: S101 - INSERT ... RETURNING returns its row
        lot_id, known_expiry, known_production = row
        for name, given, known in (
            ("expiry", expiry, known_expiry),
            ("production date", production_date, known_production),
        ):
            if given is not None and known is not None and given != known:
                raise Conflict(
                    f"lot {lot_number} of {gtin} is registered with {name} {known}, not {given}"
                )
        if serials:
            serialised = conn.execute(q.PRODUCT_SERIALISED, {"gtin": gtin}).fetchone()
            if serialised is not None and not serialised[0]:
                raise Conflict(f"product {gtin} is not serialised: a serial number is unexpected")
            with conn.cursor() as cur:
                cur.executemany(q.INSERT_SERIAL, [{"lot": lot_id, "serial": s} for s in serials])
        return get_lot(conn, lot_id)


def register_scan(conn: Conn, actor: str, text: str) -> Lot:
    """Register the lot a GS1 barcode or UDI names: (01) GTIN and (10) lot are required."""
    data = decode_gs1(text)
    if data.gtin is None or data.lot is None:
        raise PayloadError("a lot needs both (01) GTIN and (10) lot in the scan")
    return register_lot(
        conn,
        actor,
        data.gtin,
        data.lot,
        expiry=data.expiry,
        production_date=data.production_date,
        serials=(data.serial,) if data.serial else (),
    )


def get_lot(conn: Conn, lot_id: int) -> Lot:
    row = conn.execute(q.LOT, {"id": lot_id}).fetchone()
    if row is None:
        raise NotFound(f"no lot {lot_id}")
    return _lot(row)


def find_lots(
    conn: Conn,
    *,
    status: str | None = None,
    gtin: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[Lot]:
    rows = conn.execute(
        q.LOTS, {"status": status, "gtin": gtin, "after": after_id, "limit": limit}
    ).fetchall()
    return [_lot(r) for r in rows]


def _lot(row: tuple[Any, ...]) -> Lot:
    lot_id, gtin, number, expiry, production, status, serials = row
    return Lot(lot_id, gtin, number, expiry, production, status, tuple(serials or ()))
