"""Master data over the API, time-range lists, and versions (ETag / If-Match)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from coldtrail.clock import ManualClock
from coldtrail.erp.holds import place_hold
from coldtrail.erp.movements import create_shipment, depart, record_movement
from coldtrail.erp.people import Role, create_user
from coldtrail.erp.products import register_lot
from tests.conftest import GTIN, QA_PASSWORD, T0, api_client, make_erp, token

Conn = psycopg.Connection[tuple[Any, ...]]
ADMIN_PW = "admin-password-123"


@pytest.fixture
def client(conn: Conn, db_url: str, clock: ManualClock) -> Iterator[Any]:
    make_erp(conn, release_signatures=2)
    with api_client(db_url, clock) as c:
        c.admin = token(c, "admin", ADMIN_PW)
        c.qa1 = token(c, "qa1", QA_PASSWORD)
        c.qa2 = token(c, "qa2", QA_PASSWORD)
        yield c


def test_a_location_edited_by_two_admins_refuses_the_stale_change(client: Any) -> None:
    body = {"site_id": "s1", "kind": "cold_room", "name": "Cold room 2", "temp_min_c": 2,
            "temp_max_c": 8, "area_m2": 80}  # fmt: skip
    created = client.put("/api/v1/locations/CR2", json=body, headers=client.admin)
    assert created.status_code == 200, created.text
    read = client.get("/api/v1/locations/CR2", headers=client.qa1)
    version = read.headers["ETag"]
    assert version == created.headers["ETag"]
    first = client.put("/api/v1/locations/CR2", json={**body, "area_m2": 90},
                       headers={**client.admin, "If-Match": version})  # fmt: skip
    assert first.status_code == 200
    assert first.headers["ETag"] != version
    second = client.put("/api/v1/locations/CR2", json={**body, "name": "Renamed"},
                        headers={**client.admin, "If-Match": version})  # fmt: skip
    assert second.status_code == 412
    assert "changed since you read it" in second.json()["detail"]
    assert client.get("/api/v1/locations/CR2", headers=client.qa1).json()["area_m2"] == 90
    # What the record depends on stays.
    moved = client.put("/api/v1/locations/CR2", json={**body, "kind": "ambient_store"},
                       headers=client.admin)  # fmt: skip
    assert moved.status_code == 409
    assert "register a new location" in moved.json()["detail"]
    orphan = client.put("/api/v1/locations/C9", json={**body, "kind": "compartment"},
                        headers=client.admin)  # fmt: skip
    assert orphan.status_code == 409
    missing = client.put("/api/v1/locations/NEW", json=body,
                         headers={**client.admin, "If-Match": version})  # fmt: skip
    assert missing.status_code == 412


def test_sensor_placements_and_calibration_certificates(client: Any, clock: ManualClock) -> None:
    new = client.put("/api/v1/sensors/S9", json={"model": "xy-md02", "serial": "X-9"},
                     headers=client.admin)  # fmt: skip
    assert new.status_code == 200, new.text
    swapped = client.put("/api/v1/sensors/S9", json={"model": "xy-md02", "serial": "X-10"},
                         headers=client.admin)  # fmt: skip
    assert swapped.status_code == 409
    place = {"location_id": "CR", "since": "2026-11-22T11:00:00Z", "position": "door"}
    logi = token(client, "logi1", QA_PASSWORD)
    placed = client.post("/api/v1/sensors/S9/placements", json=place, headers=logi)
    assert placed.status_code == 201, placed.text
    back = client.post("/api/v1/sensors/S9/placements",
                       json={**place, "location_id": "TC", "since": "2026-11-22T10:00:00Z"},
                       headers=logi)  # fmt: skip
    assert back.status_code == 409
    assert "past placements are part of the record" in back.json()["detail"]
    moved = client.post("/api/v1/sensors/S9/placements",
                        json={**place, "location_id": "TC", "since": "2026-11-22T12:00:00Z"},
                        headers=logi)  # fmt: skip
    assert [(p["location_id"], p["until"]) for p in moved.json()["placements"]] == [
        ("CR", "2026-11-22T12:00:00Z"), ("TC", None),
    ]  # fmt: skip
    cert = {"certificate_no": "CAL-1", "issuer": "NIM", "calibrated_on": "2026-01-05",
            "valid_until": "2027-01-04", "passed": True, "max_error_c": 0.2}  # fmt: skip
    filed = client.post("/api/v1/sensors/S9/calibrations", json=cert, headers=client.qa1)
    assert filed.status_code == 201, filed.text
    assert filed.json()["calibration_due"] == "2027-01-04"
    failed = {**cert, "certificate_no": "CAL-2", "valid_until": "2028-01-04", "passed": False}
    assert client.post("/api/v1/sensors/S9/calibrations", json=failed,
                       headers=client.qa1).json()["calibration_due"] == "2027-01-04"  # fmt: skip
    again = client.post("/api/v1/sensors/S9/calibrations", json=cert, headers=client.qa1)
    assert again.status_code == 409
    backwards = {**cert, "certificate_no": "CAL-3", "valid_until": "2025-01-01"}
    assert client.post("/api/v1/sensors/S9/calibrations", json=backwards,
                       headers=client.qa1).status_code == 409  # fmt: skip
    assert client.post("/api/v1/sensors/NOPE/calibrations", json=cert,
                       headers=client.qa1).status_code == 404  # fmt: skip
    listed = client.get("/api/v1/sensors", params={"after": "S2", "limit": 5},
                        headers=client.qa1).json()  # fmt: skip
    assert [s["id"] for s in listed] == ["S9"]


def test_second_signer_working_from_a_stale_hold_gets_412(client: Any, conn: Conn) -> None:
    lot = register_lot(conn, "logi1", GTIN, "L-7").id
    record_movement(conn, "logi1", lot, "receiving", 5, T0, to_location="CR")
    hold = place_hold(conn, "qa1", lot, "door left open", T0).id
    url = f"/api/v1/holds/{hold}"
    seen = client.get(url, headers=client.qa2).headers["ETag"]
    sign = {"disposition": "release", "username": "qa1", "password": QA_PASSWORD,
            "meaning": "approval", "reason": "within budget"}  # fmt: skip
    first = client.post(url + "/disposition", json=sign, headers={**client.qa1, "If-Match": seen})
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "open"  # two signatures needed
    reject = {**sign, "username": "qa2", "disposition": "reject"}
    stale = client.post(url + "/disposition", json=reject, headers={**client.qa2, "If-Match": seen})
    assert stale.status_code == 412
    fresh = client.get(url, headers=client.qa2).headers["ETag"]
    done = client.post(url + "/disposition", json={**sign, "username": "qa2"},
                       headers={**client.qa2, "If-Match": fresh})  # fmt: skip
    assert done.json()["state"] == "released"


def test_profiles_carry_versions_too(client: Any) -> None:
    read = client.get("/api/v1/profiles/2-8", headers=client.qa1)
    body = {k: v for k, v in read.json().items() if k != "id"}
    ok = client.put("/api/v1/profiles/2-8", json={**body, "name": "Fridge"},
                    headers={**client.qa1, "If-Match": read.headers["ETag"]})  # fmt: skip
    assert ok.status_code == 200, ok.text
    late = client.put("/api/v1/profiles/2-8", json={**body, "name": "Cool"},
                      headers={**client.qa2, "If-Match": read.headers["ETag"]})  # fmt: skip
    assert late.status_code == 412
    anyway = client.put("/api/v1/profiles/2-8", json={**body, "name": "Cool"},
                        headers={**client.qa2, "If-Match": "*"})  # fmt: skip
    assert anyway.status_code == 200
    # Its limits are under change control: not through an edit, through a signed change.
    limits = client.put("/api/v1/profiles/2-8", json={**body, "alarm_delay_s": 60},
                        headers={**client.qa2, "If-Match": "*"})  # fmt: skip
    assert limits.status_code == 409
    assert "/api/v1/profiles/2-8/limits, signed by QA" in limits.json()["detail"]


def test_movements_and_shipments_filter_by_time_and_page(client: Any, conn: Conn) -> None:
    create_user(conn, "aud1", "Ada Auditor", Role.AUDITOR, QA_PASSWORD)
    aud = token(client, "aud1", QA_PASSWORD)
    h = timedelta(hours=1)
    lots = [register_lot(conn, "logi1", GTIN, f"L{i}").id for i in range(3)]
    for i, lot in enumerate(lots):
        record_movement(conn, "logi1", lot, "receiving", 5, T0 + i * h, to_location="CR")
    for ship, at in (("A", T0 + h), ("B", T0 + 5 * h)):
        create_shipment(conn, "logi1", ship, "TRK", "s1", "Clinic")
        record_movement(conn, "logi1", lots[0], "loading", 1, at, from_location="CR",
                        to_location="TC", shipment_id=ship)  # fmt: skip
        depart(conn, "logi1", ship, at)
    period = {"from": (T0 + h).isoformat(), "to": (T0 + 3 * h).isoformat(), "location": "CR"}
    got = client.get("/api/v1/movements", headers=aud, params=period).json()
    assert [(m["kind"], m["at"]) for m in got] == [
        ("receiving", "2026-11-22T11:00:00Z"),
        ("receiving", "2026-11-22T12:00:00Z"),
        ("loading", "2026-11-22T11:00:00Z"),
    ]  # fmt: skip  (by id: as keyed in)
    first = client.get("/api/v1/movements", headers=aud, params={"limit": 2}).json()
    rest = client.get("/api/v1/movements", headers=aud,
                      params={"after": first[-1]["id"]}).json()  # fmt: skip
    assert len(first) + len(rest) == 5
    assert {m["id"] for m in first}.isdisjoint(m["id"] for m in rest)
    ships = client.get("/api/v1/shipments", headers=aud,
                       params={"to": (T0 + 2 * h).isoformat()}).json()  # fmt: skip
    assert [s["id"] for s in ships] == ["A"]
    naive = client.get("/api/v1/shipments", headers=aud, params={"from": "2026-11-22T08:00:00"})
    assert naive.status_code == 422


def test_a_nul_character_in_a_filter_is_a_422_not_a_500(client: Any) -> None:
    resp = client.get("/api/v1/location-excursions", params={"location": "a\x00b"},
                      headers=client.qa1)  # fmt: skip
    assert resp.status_code == 422
    assert "NUL" in resp.json()["detail"][0]["msg"]


def test_a_locations_alarm_delay_and_quarantine_area_are_set_through_the_api(
    client: Any,
) -> None:
    body = {"site_id": "s1", "kind": "cold_room", "name": "Quarantine cage 2", "temp_min_c": 2,
            "temp_max_c": 8, "alarm_delay_s": 600}  # fmt: skip
    made = client.put("/api/v1/locations/QZ2", json=body, headers=client.admin).json()
    assert (made["alarm_delay_s"], made["quarantine_area"]) == (600, False)
    done = client.put("/api/v1/locations/QZ2", json={**body, "quarantine_area": True},
                      headers=client.admin)  # fmt: skip
    assert done.status_code == 200, done.text
    # The delay of a place in use changes only as a change QA signs.
    edit = client.put("/api/v1/locations/QZ2", json={**body, "alarm_delay_s": 900},
                      headers=client.admin)  # fmt: skip
    assert edit.status_code == 409
    assert "alarm_delay_s change under change control" in edit.json()["detail"]
    sign = {"username": "qa1", "password": QA_PASSWORD, "meaning": "approval",
            "reason": "door alarms: 15 min per the new SOP"}  # fmt: skip
    changed = client.put("/api/v1/locations/QZ2/limits", json={"alarm_delay_s": 900, **sign},
                         headers=client.qa1)  # fmt: skip
    assert changed.status_code == 200, changed.text
    assert changed.json()["before"]["alarm_delay_s"] == 600
    assert changed.json()["after"]["alarm_delay_s"] == 900
    read = client.get("/api/v1/locations/QZ2", headers=client.qa1).json()
    assert (read["alarm_delay_s"], read["quarantine_area"]) == (900, True)
    bad = client.put("/api/v1/locations/QZ2/limits", json={"alarm_delay_s": -1, **sign},
                     headers=client.qa1)  # fmt: skip
    assert bad.status_code == 422
    unknown = client.put("/api/v1/locations/QZ2/limits", json={"name": "x", **sign},
                         headers=client.qa1)  # fmt: skip
    assert unknown.status_code == 422  # the request model refuses a field it does not know
    listed = client.get("/api/v1/changes", params={"site": "s1"}, headers=client.qa2).json()
    assert [(c["subject_id"], c["changed_by"], c["signatures"][0]["meaning"]) for c in listed] == [
        ("QZ2", "qa1", "approval")
    ]
