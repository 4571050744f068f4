"""Logistics' day in the console: goods received from a scan, moved, loaded, taken on the
road, delivered and the shipment closed with its held lot carried into quarantine; each form
refused as the API refuses it, and no one else's to use."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx2
import psycopg
import pytest

from coldtrail.erp.holds import place_hold
from coldtrail.erp.movements import create_shipment, record_movement
from coldtrail.erp.products import register_scan
from tests.conftest import GTIN, QA_PASSWORD, T0
from tests.test_console import (  # noqa: F401 - the fixtures
    Site,
    _login,
    _page,
    _serious,
    _shot,
    _signed_in,
    browser,
    needs_browser,
    site,
)
from tests.test_record import shipped  # noqa: F401 - the fixture site needs

EN = {"Accept-Language": "en"}
SCAN = f"(01){GTIN}(17)271231(10)LOT-77"
SUPPLIER = "国药控股上海有限公司"
HOSPITAL = "北京协和医院药房"


def _stays(db_url: str, lot_number: str) -> dict[str, Decimal]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT s.location_id, s.quantity FROM lot_stays s JOIN lots l ON l.id = s.lot_id"
            " WHERE l.lot_number = %s AND upper_inf(s.during)",
            (lot_number,),
        ).fetchall()
    return dict(rows)


def _lot_id(db_url: str, lot_number: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT id FROM lots WHERE lot_number = %s", (lot_number,)).fetchone()
    assert row is not None
    return int(row[0])


def test_logistics_receives_moves_loads_delivers_and_closes_a_shipment_into_quarantine(
    site: Site,  # noqa: F811
) -> None:
    with httpx2.Client(base_url=site.url, follow_redirects=False, headers=EN) as http:
        csrf = _signed_in(http, "logi1", QA_PASSWORD)

        def post(path: str, **form: str) -> httpx2.Response:
            resp = http.post(path, data={**form, "csrf": csrf})
            assert resp.status_code == 303, (path, resp.status_code, resp.text)
            return resp

        post("/goods/receive", scan=SCAN, quantity="20", to_location="CR", party=SUPPLIER,
             at="2026-11-22T21:00")  # fmt: skip
        lot = _lot_id(site.db_url, "LOT-77")
        assert _stays(site.db_url, "LOT-77") == {"CR": 20}
        post("/goods/move", lot=f"{lot}|CR", quantity="5", to_location="QZ", kind="transfer",
             at="2026-11-22T21:10")  # fmt: skip
        post("/shipments", shipment_id="SH2", vehicle_id="TRK", origin_site="s1",
             destination=HOSPITAL, route="G2 北京方向")  # fmt: skip
        too_much = http.post("/goods/load", data={"shipment_id": "SH2",
            "lot": f"{lot}|CR", "quantity": "100", "to_location": "TC",
            "at": "2026-11-22T21:20", "csrf": csrf})  # fmt: skip
        assert too_much.status_code == 409
        aside = {"shipment_id": "SH2", "lot": f"{lot}|CR", "quantity": "1", "to_location": "QZ",
                 "at": "2026-11-22T21:20", "csrf": csrf}  # fmt: skip
        elsewhere = http.post("/goods/load", data=aside)
        assert elsewhere.status_code == 409
        assert "location QZ is not on vehicle TRK of shipment SH2" in elsewhere.text
        post("/goods/load", shipment_id="SH2", lot=f"{lot}|CR", quantity="10", to_location="TC",
             at="2026-11-22T21:20")  # fmt: skip
        page = http.get("/goods").text
        assert 'action="/shipments/SH2/depart"' in page
        post("/shipments/SH2/depart", at="2026-11-22T21:30")
        post("/shipments/SH2/deliver", lot=f"{lot}|TC", quantity="6", party=HOSPITAL,
             at="2026-11-22T21:40")  # fmt: skip
        with psycopg.connect(site.db_url, autocommit=True) as conn:
            held_at = T0 + timedelta(hours=3, minutes=45)
            place_hold(conn, "qa1", lot, "在途温度偏差。待评估", held_at)
        still = http.post("/shipments/SH2/arrive", data={"at": "2026-11-22T21:50", "csrf": csrf})
        assert still.status_code == 409
        assert "still carries lot(s) LOT-77 (4)" in still.text
        post("/shipments/SH2/arrive", at="2026-11-22T21:50", quarantine_to="QZ")
        page = http.get("/goods").text
    assert _stays(site.db_url, "LOT-77") == {"CR": 5, "QZ": 9}
    with psycopg.connect(site.db_url) as conn:
        moves = conn.execute(
            "SELECT kind::text, from_location, to_location, quantity, party, recorded_by,"
            " to_char(at AT TIME ZONE 'Asia/Shanghai', 'HH24:MI') FROM movements"
            " WHERE lot_id = %s ORDER BY at, id",
            (lot,),
        ).fetchall()
        assert conn.execute("SELECT state::text FROM shipments WHERE id = 'SH2'").fetchone() == (
            "delivered",
        )
    assert moves == [
        ("receiving", None, "CR", 20, SUPPLIER, "logi1", "21:00"),
        ("transfer", "CR", "QZ", 5, None, "logi1", "21:10"),
        ("loading", "CR", "TC", 10, None, "logi1", "21:20"),
        ("delivery", "TC", None, 6, HOSPITAL, "logi1", "21:40"),
        ("transfer", "TC", "QZ", 4, None, "logi1", "21:50"),
    ]
    # The stock table lists the lot in both places, quarantined.
    rows = re.findall(r"<tr><td>[^<]*\((CR|QZ)\)</td>\s*<td><a href=\"/lots/\d+\">LOT-77</a>", page)
    assert sorted(rows) == ["CR", "QZ"]
    assert "No shipment planned or on the road." in page


def test_a_receipt_refused_registers_nothing_and_says_why(site: Site) -> None:  # noqa: F811
    good = {"scan": SCAN, "quantity": "20", "to_location": "CR", "at": "2026-11-22T21:00"}
    refused = [
        ({"quantity": "nan"}, "quantity"),
        ({"quantity": "1e400"}, "quantity"),
        ({"quantity": "0"}, "greater than 0"),
        ({"quantity": "-3"}, "greater than 0"),
        ({"quantity": "二十"}, "quantity"),
        ({"at": "yesterday"}, "not a time"),
        ({"scan": f"(01){GTIN}"}, "(01) GTIN and (10) lot"),
        ({"scan": "", "gtin": "", "lot_number": ""}, "give either scan, or gtin and lot_number"),
        ({"scan": "", "gtin": GTIN, "lot_number": "批号1"}, "lot_number"),
        ({"to_location": "NOWHERE"}, "NOWHERE"),
    ]
    with httpx2.Client(base_url=site.url, follow_redirects=False, headers=EN) as http:
        csrf = _signed_in(http, "logi1", QA_PASSWORD)
        for change, message in refused:
            resp = http.post("/goods/receive", data={**good, **change, "csrf": csrf})
            assert resp.status_code in (404, 409), (change, resp.status_code, resp.text)
            assert message in resp.text, (change, resp.text)
        bad_lot = http.post("/goods/move", data={"lot": "x|CR", "quantity": "1",
                                                 "to_location": "QZ", "at": "2026-11-22T21:00",
                                                 "csrf": csrf})  # fmt: skip
        assert bad_lot.status_code == 409
        assert "not a lot in a place" in bad_lot.text
    with psycopg.connect(site.db_url) as conn:
        # The receipt into a place that does not exist registered no lot either.
        assert conn.execute("SELECT count(*) FROM lots WHERE lot_number = 'LOT-77'").fetchone() == (
            0,
        )


def test_only_logistics_and_admins_get_the_goods_forms(site: Site) -> None:  # noqa: F811
    form = {"scan": SCAN, "quantity": "20", "to_location": "CR", "at": "2026-11-22T21:00"}
    for user in ("qa1", "audi1"):
        with httpx2.Client(base_url=site.url, follow_redirects=False, headers=EN) as http:
            csrf = _signed_in(http, user, QA_PASSWORD)
            page = http.get("/goods")
            assert page.status_code == 200
            assert 'action="/goods/receive"' not in page.text
            assert http.post("/goods/receive", data={**form, "csrf": csrf}).status_code == 403
            assert http.post("/shipments", data={"shipment_id": "X", "vehicle_id": "TRK",
                                                 "origin_site": "s1", "destination": "x",
                                                 "csrf": csrf}).status_code == 403  # fmt: skip
    with psycopg.connect(site.db_url) as conn:
        assert conn.execute("SELECT count(*) FROM lots WHERE lot_number = 'LOT-77'").fetchone() == (
            0,
        )


@needs_browser
def test_logistics_loads_a_lot_in_the_browser_and_the_page_has_no_serious_violation(
    browser: Any,  # noqa: F811
    site: Site,  # noqa: F811
) -> None:
    from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]
    from playwright.sync_api import expect

    with psycopg.connect(site.db_url, autocommit=True) as conn:
        lot = register_scan(conn, "logi1", SCAN).id
        record_movement(conn, "logi1", lot, "receiving", 20, T0 + timedelta(hours=3),
                        to_location="CR", party=SUPPLIER)  # fmt: skip
        create_shipment(conn, "logi1", "SH2", "TRK", "s1", HOSPITAL)
    for lang in ("en", "zh"):
        page = _page(browser, site, lang)
        _login(page, "logi1")
        page.goto("/goods")
        assert _serious(Axe().run(page).response) == []
        _shot(page, site, f"goods-{lang}")
    page.select_option("#ld-sh", "SH2")
    page.select_option("#ld-lot", f"{lot}|CR")
    page.fill("#ld-q", "12")
    page.select_option("#ld-to", "TC")
    page.click("form[action='/goods/load'] button[type=submit]")
    page.wait_for_load_state()
    expect(page.locator("#sh-SH2")).to_be_visible()
    assert _stays(site.db_url, "LOT-77") == {"CR": 8, "TC": 12}
    with psycopg.connect(site.db_url) as conn:
        # The browser's local time field, in the site's zone: the clock's 22:00 in Shanghai.
        assert conn.execute(
            "SELECT to_char(at AT TIME ZONE 'Asia/Shanghai', 'HH24:MI') FROM movements"
            " WHERE kind = 'loading' AND shipment_id = 'SH2'"
        ).fetchone() == ("22:00",)


def test_a_warehouse_with_more_lots_than_a_page_shows_says_so(
    site: Site,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from coldtrail.console import goods

    monkeypatch.setattr(goods, "MAX_STOCK_ROWS", 1)
    with psycopg.connect(site.db_url, autocommit=True) as conn:
        for number in ("LOT-1", "LOT-2"):
            lot = register_scan(conn, "logi1", f"(01){GTIN}(10){number}").id
            record_movement(conn, "logi1", lot, "receiving", 5, T0 + timedelta(hours=3),
                            to_location="CR")  # fmt: skip
    with httpx2.Client(base_url=site.url, follow_redirects=False, headers=EN) as http:
        _signed_in(http, "audi1", QA_PASSWORD)
        page = http.get("/goods").text
    assert "Only the first lots are shown: 1." in page
    assert ">LOT-1</a>" in page
    assert ">LOT-2</a>" not in page
