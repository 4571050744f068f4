"""Auth and roles of the API, on a real database."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.routing import APIRoute

from coldtrail.api import examples, models
from coldtrail.clock import ManualClock
from coldtrail.erp import gateways
from coldtrail.erp.capa import NewCapa, Step, add_action, add_evidence, advance, open_capa
from coldtrail.erp.holds import place_hold
from coldtrail.erp.masterdata import Location, assign_sensor, upsert_location, upsert_sensor
from coldtrail.erp.movements import create_shipment, depart, record_movement
from coldtrail.erp.outbox import Destination, add_destination
from coldtrail.erp.people import Role, create_user
from coldtrail.erp.products import Product, Profile, register_lot, upsert_product, upsert_profile
from coldtrail.mqtt import MqttOptions
from coldtrail.settings import MqttEndpoint
from tests.conftest import (
    GTIN,
    MQTT_URL,
    SECRET,
    T0,
    api_client,
    database_from,
    make_site,
    template_from,
    token,
    wait_for,
)

Conn = psycopg.Connection[tuple[Any, ...]]
PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="module")
def api_template(template_db: str) -> Iterator[str]:
    """People, an excursion and one of each ERP record, made once and copied per test."""
    with template_from(template_db, "ct_api") as (name, url):
        with psycopg.connect(url, autocommit=True) as conn:
            make_site(conn, {"S1": "CR"})
            for role in Role:
                if role is not Role.ADMIN:
                    create_user(
                        conn, f"{role.value}1", f"{role.value.title()} User", role, PASSWORD
                    )
            create_user(conn, "admin", "Administrator", Role.ADMIN, "admin-password-123")
            create_user(conn, "locked1", "Locked Out", Role.LOGISTICS, PASSWORD)
            conn.execute(
                "INSERT INTO login_failures (username, client, failures, last_failed, "
                "locked_until) VALUES ('locked1', 'testclient', 0, %s, %s)",
                (T0, T0 + timedelta(1)),
            )
            create_user(conn, "gone1", "Gone Away", Role.QA, PASSWORD)
            conn.execute("UPDATE users SET disabled = true WHERE username = 'gone1'")
            conn.execute(
                "INSERT INTO excursions (sensor_id, location_id, started_at, start_seq, "
                "limit_min_c, limit_max_c, min_c, max_c) VALUES ('S1', 'CR', %s, 1, 2, 8, 9, 9)",
                (T0,),
            )
            IDS.update(_erp_records(conn))
        yield name


@pytest.fixture
def db_url(api_template: str) -> Iterator[str]:
    with database_from(api_template) as url:
        yield url


@pytest.fixture
def client(db_url: str, clock: ManualClock, mqtt_options: MqttOptions, topic_root: str) -> Any:
    with api_client(db_url, clock, mqtt_options, topic_root) as c:
        c.ids = IDS
        yield c


@pytest.fixture(scope="module")
def reader(api_template: str) -> Iterator[Any]:
    """One client on one copy of the records for the module's requests that change nothing
    (reads, and writes refused before anything is read): a database and an app each for
    ~200 of them was half the suite's time."""
    options = MqttOptions(endpoint=MqttEndpoint.parse(MQTT_URL), protocol="5")
    with (
        database_from(api_template) as url,
        api_client(url, ManualClock(T0), options, f"cttest{uuid.uuid4().hex[:10]}") as c,
    ):
        c.ids = IDS
        yield c


IDS: dict[str, Any] = {}


def _erp_records(conn: Conn) -> dict[str, Any]:
    """One of each ERP record, so every route has something to act on: lot 1 in CR and on
    hold 1, shipment SH1 loaded and SH2 in transit and empty, CAPA 1 open, CAPA 2 in actions
    with action 1 and evidence 1, and a dead delivery to destination ``erp``."""
    m = timedelta(minutes=1)
    upsert_location(conn, Location("QZ", "s1", "cold_room", "Quarantine", 2.0, 8.0))
    conn.execute("UPDATE locations SET quarantine_area = true WHERE id = 'QZ'")
    add_destination(conn, "admin", Destination("erp", "webhook", "http://127.0.0.1:9/x"))
    upsert_profile(conn, "admin", Profile("2-8", "2-8 °C", 2.0, 8.0))
    upsert_profile(conn, "admin", Profile("15-25", "15-25 °C", 15.0, 25.0))
    upsert_product(conn, "admin", Product(GTIN, "Vaccine", "2-8"))
    lot = register_lot(conn, "admin", GTIN, "L1").id
    record_movement(conn, "admin", lot, "receiving", 100, T0 - 120 * m, to_location="CR")
    for ship in ("SH1", "SH2"):
        create_shipment(conn, "admin", ship, "TRK", "s1", "Clinic")
    record_movement(
        conn, "admin", lot, "loading", 5, T0 - 50 * m, from_location="CR", to_location="TC",
        shipment_id="SH2",
    )  # fmt: skip
    depart(conn, "admin", "SH2", T0 - 40 * m)
    record_movement(conn, "admin", lot, "delivery", 5, T0 - 35 * m, from_location="TC",
                    shipment_id="SH2")  # fmt: skip
    record_movement(
        conn, "admin", lot, "loading", 10, T0 - 30 * m, from_location="CR", to_location="TC",
        shipment_id="SH1",
    )  # fmt: skip
    place_hold(conn, "admin", lot, "probe at 9 °C", T0 - 20 * m)
    spare = register_lot(conn, "admin", GTIN, "L2").id  # available: it may go back, signed
    record_movement(conn, "admin", spare, "receiving", 20, T0 - 120 * m, to_location="CR")
    open_capa(conn, "admin", NewCapa("First", "qa1", T0.date()), T0)
    second = open_capa(conn, "admin", NewCapa("Second", "qa1", T0.date()), T0).id
    advance(conn, "admin", second, Step("investigation"), T0)
    advance(conn, "admin", second, Step("actions", root_cause="seal"), T0)
    add_action(conn, "admin", second, "New seal", "logistics1", T0.date())
    add_evidence(conn, "admin", second, "photo.jpg", "image/jpeg", b"\xff\xd8", T0)
    conn.execute(
        "INSERT INTO location_excursions (location_id, started_at, last_seen_at, sensors, min_c,"
        " max_c, duration_s, degree_minutes, detected_at)"
        " VALUES ('TC', %s, %s, '{S2}', 9, 9, 0, 0, %s)",
        (T0 - 25 * m, T0 - 20 * m, T0 - 20 * m),
    )
    conn.execute("INSERT INTO sensors (id, model, serial) VALUES ('S2', 'xy-md02', 'SN-S2')")
    conn.execute(
        "INSERT INTO excursions (sensor_id, location_id, started_at, start_seq, limit_min_c,"
        " limit_max_c, min_c, max_c, location_excursion_id) VALUES ('S2', 'TC', %s, 1, 2, 8, 9,"
        " 9, 1)",
        (T0 - 25 * m,),
    )
    conn.execute(
        "INSERT INTO alarms (key, kind, location_id, location_excursion_id, started_at, message,"
        " raised_at) VALUES ('excursion:1', 'excursion', 'TC', 1, %s, 'TC out of range', %s)",
        (T0 - 25 * m, T0 - 20 * m),
    )
    conn.execute("UPDATE outbox_deliveries SET dead_at = %s", (T0,))
    gateways.register(conn, "gw-1", "s1", "Cold room gateway")
    conn.execute(
        "INSERT INTO quarantined_readings (topic, site_id, gateway, sensor_id, seq, ts, status,"
        " clock, temperature_c, rule, reason) VALUES ('coldtrail/v1/s1/gw-1/telemetry', 's1',"
        " 'gw-1', 'S9', 1, %s, 'ok', 'ok', 4.5, 'unknown_sensor', 'unknown sensor S9')",
        (T0 - m,),
    )
    conn.execute(
        "INSERT INTO dead_letters (topic, payload, reason) VALUES"
        " ('coldtrail/v1/s1/gw-1/telemetry', %s, 'not JSON: Expecting value')",
        (b"{",),
    )
    event = conn.execute("SELECT event_id FROM outbox_events").fetchone()
    assert event is not None
    run_id = _validation_run(conn)
    return {
        "run_id": run_id,
        "excursion_id": 1, "lot_id": lot, "hold_id": 1, "capa_id": second, "action_id": 1,
        "evidence_id": 1, "shipment_id": "SH1", "location_id": "CR", "profile_id": "2-8",
        "gtin": GTIN, "name": "erp", "destination": "erp", "event_id": event[0], "alarm_id": 1,
        "username": "locked1", "sensor_id": "S1", "site_id": "s1", "gateway_id": "gw-1",
    }  # fmt: skip


def _validation_run(conn: Conn) -> int:
    """A validation pack kept as ``coldtrail validate pack`` keeps one (IQ only, no OQ)."""
    from coldtrail.compliance import profiles
    from coldtrail.settings import Settings
    from coldtrail.validation import iq, pack

    installed = iq.record(conn, Settings.model_construct(), None, profiles(), None, T0.date())
    doc = pack.document(
        iq=installed, oq=[], target={"site": "s1", "profile": "cn-drug-gsp"}, started=T0,
        finished=T0, run_by="admin", changes_since=None, changed=[],
    )  # fmt: skip
    return pack.store(conn, doc, "admin")[0]


def _password(role: Role) -> str:
    return "admin-password-123" if role is Role.ADMIN else PASSWORD


def _username(role: Role) -> str:
    return "admin" if role is Role.ADMIN else f"{role.value}1"


def _headers(client: Any, role: Role) -> dict[str, str]:
    return token(client, _username(role), _password(role))


def _signed(role: Role) -> dict[str, Any]:
    return {
        "json": {
            "disposition": "release",
            "username": _username(role),
            "password": _password(role),
            "meaning": "approval",
            "reason": "within stability data",
        }
    }


def _exit(role: Role) -> dict[str, Any]:
    return {
        "url": "/api/v1/lots/2/exit",
        "json": {
            "kind": "return_to_supplier",
            "quantity": 5,
            "at": SOON,
            "from_location": "CR",
            "party": "Supplier 供应商",
            "username": _username(role),
            "password": _password(role),
            "meaning": "approval",
            "reason": "recalled by the supplier",
        },
    }


def _change(role: Role, url: str, **values: Any) -> dict[str, Any]:
    return {
        "url": url,
        "json": {
            **values,
            "username": _username(role),
            "password": _password(role),
            "meaning": "approval",
            "reason": "re-mapped; 冷库重新验证",
        },
    }


EVERYONE = frozenset(Role)
QA_ONLY = frozenset({Role.QA})
WRITERS = frozenset({Role.ADMIN, Role.LOGISTICS, Role.QA})
QA = frozenset({Role.ADMIN, Role.QA})
LOGISTICS = frozenset({Role.ADMIN, Role.LOGISTICS})
OVERSIGHT = frozenset({Role.ADMIN, Role.QA, Role.AUDITOR})
ADMIN = frozenset({Role.ADMIN})
SOON = "2026-11-22T10:00:00Z"
Kwargs = dict[str, Any] | Callable[[Role], dict[str, Any]]

# Every route, with the roles that may call it and a request they may make. A route added
# without a line here fails test_every_route_is_in_the_matrix.
MATRIX: dict[tuple[str, str], tuple[frozenset[Role], Kwargs]] = {
    ("GET", "/api/v1/users/me"): (EVERYONE, {}),
    ("GET", "/api/v1/live"): (EVERYONE, {}),
    ("GET", "/api/v1/stream"): (EVERYONE, {"params": {"max_events": 1}}),
    ("GET", "/api/v1/excursions"): (EVERYONE, {}),
    ("POST", "/api/v1/excursions/{excursion_id}/acknowledge"): (
        WRITERS,
        {"json": {"comment": "door shut"}},
    ),
    ("POST", "/api/v1/users/{username}/unlock"): (ADMIN, {}),
    ("GET", "/api/v1/users"): (ADMIN, {}),
    ("PUT", "/api/v1/auth/password"): (
        EVERYONE,
        lambda role: {"json": {"current_password": _password(role),
                               "new_password": "七月冷库-blue-lantern"}},
    ),
    ("POST", "/api/v1/auth/revoke"): (EVERYONE, {}),
    ("POST", "/api/v1/users/{username}/password"): (ADMIN, {"json": {"password": "amber-桥-57-x"}}),
    ("POST", "/api/v1/users/{username}/revoke"): (ADMIN, {}),
    ("POST", "/api/v1/users/{username}/disable"): (ADMIN, {}),
    ("POST", "/api/v1/users/{username}/enable"): (ADMIN, {"url": "/api/v1/users/gone1/enable"}),
    ("POST", "/api/v1/users"): (
        ADMIN,
        {
            "json": {
                "username": "new.user",
                "full_name": "New User",
                "role": "auditor",
                "password": "a-long-enough-password",
            }
        },
    ),
    ("GET", "/api/v1/profiles"): (EVERYONE, {}),
    ("GET", "/api/v1/profiles/{profile_id}"): (EVERYONE, {}),
    ("GET", "/api/v1/sites"): (EVERYONE, {}),
    ("PUT", "/api/v1/sites/{site_id}"): (ADMIN, {"json": {"name": "Test site"}}),
    ("GET", "/api/v1/locations"): (EVERYONE, {"params": {"site": "s1"}}),
    ("GET", "/api/v1/locations/{location_id}"): (EVERYONE, {}),
    ("PUT", "/api/v1/locations/{location_id}"): (ADMIN, {"json": {
        "site_id": "s1", "kind": "cold_room", "name": "Cold room", "temp_min_c": 2,
        "temp_max_c": 8, "area_m2": 50}}),
    ("GET", "/api/v1/sensors"): (EVERYONE, {}),
    ("GET", "/api/v1/sensors/{sensor_id}"): (EVERYONE, {}),
    ("PUT", "/api/v1/sensors/{sensor_id}"): (ADMIN, {"json": {"model": "xy-md02",
                                                               "serial": "SN-S1"}}),
    ("POST", "/api/v1/sensors/{sensor_id}/placements"): (LOGISTICS, {"json": {
        "location_id": "CR", "since": "2026-11-22T11:00:00Z", "position": "top"}}),
    ("POST", "/api/v1/sensors/{sensor_id}/calibrations"): (QA, {"json": {
        "certificate_no": "C-1", "issuer": "Lab", "calibrated_on": "2026-01-02",
        "valid_until": "2027-01-01", "passed": True}}),
    ("GET", "/api/v1/movements"): (EVERYONE, {"params": {"from": "2026-11-22T08:00:00Z"}}),
    ("GET", "/api/v1/shipments"): (EVERYONE, {"params": {"state": "in_transit"}}),
    # A new name only: the limits change by a signed change (below).
    ("PUT", "/api/v1/profiles/{profile_id}"): (
        QA,
        {"json": {"name": "Refrigerated 2-8 °C", "temp_min_c": 2, "temp_max_c": 8}},
    ),
    ("PUT", "/api/v1/profiles/{profile_id}/limits"): (
        QA_ONLY, lambda role: _change(role, "/api/v1/profiles/2-8/limits", alarm_delay_s=600)
    ),
    ("PUT", "/api/v1/locations/{location_id}/limits"): (
        QA_ONLY, lambda role: _change(role, "/api/v1/locations/CR/limits", temp_max_c=7.5)
    ),
    ("PUT", "/api/v1/sites/{site_id}/compliance-profile"): (
        QA_ONLY,
        lambda role: _change(role, "/api/v1/sites/s1/compliance-profile",
                             compliance_profile="eu-gdp"),
    ),
    ("PUT", "/api/v1/products/{gtin}/profile"): (
        QA_ONLY, lambda role: _change(role, f"/api/v1/products/{GTIN}/profile", profile_id="15-25")
    ),
    ("GET", "/api/v1/changes"): (OVERSIGHT, {"params": {"site": "s1"}}),
    ("GET", "/api/v1/validation"): (OVERSIGHT, {}),
    ("GET", "/api/v1/validation/{run_id}"): (OVERSIGHT, {"params": {"format": "json"}}),
    ("POST", "/api/v1/validation/{run_id}/signatures"): (
        QA, lambda role: {"json": {"role": "execution", "username": _username(role),
                                   "password": _password(role), "reason": "ran it myself"}}
    ),
    ("GET", "/api/v1/products"): (EVERYONE, {}),
    ("PUT", "/api/v1/products/{gtin}"): (
        QA, {"json": {"name": "Vaccine 10 ml", "profile_id": "2-8"}}
    ),
    ("GET", "/api/v1/lots"): (EVERYONE, {"params": {"status": "quarantined"}}),
    ("POST", "/api/v1/lots"): (WRITERS, {"json": {"scan": f"(01){GTIN}(17)270131(10)NEW1"}}),
    ("GET", "/api/v1/lots/{lot_id}"): (EVERYONE, {}),
    ("POST", "/api/v1/movements"): (
        LOGISTICS,
        {"json": {"lot_id": 1, "kind": "transfer", "quantity": "1", "at": SOON,
                  "from_location": "CR", "to_location": "QZ"}},
    ),
    ("GET", "/api/v1/locations/{location_id}/lots"): (
        EVERYONE, {"params": {"from": "2026-11-22T08:00:00Z", "to": SOON}}
    ),
    ("POST", "/api/v1/shipments"): (
        LOGISTICS,
        {"json": {"id": "SH9", "vehicle_id": "TRK", "origin_site": "s1", "destination": "X"}},
    ),
    ("GET", "/api/v1/shipments/{shipment_id}"): (EVERYONE, {}),
    ("GET", "/api/v1/shipments/{shipment_id}/record"): (EVERYONE, {"params": {"format": "csv"}}),
    ("GET", "/api/v1/locations/{location_id}/record"): (
        EVERYONE, {"params": {"from": "2026-11-22T08:00:00Z", "to": SOON, "format": "pdf"}}
    ),
    ("POST", "/api/v1/shipments/{shipment_id}/depart"): (LOGISTICS, {"json": {"at": SOON}}),
    ("POST", "/api/v1/shipments/{shipment_id}/arrive"): (
        LOGISTICS, {"json": {"at": SOON}, "url": "/api/v1/shipments/SH2/arrive"}
    ),
    ("GET", "/api/v1/holds"): (EVERYONE, {"params": {"state": "open"}}),
    ("POST", "/api/v1/holds"): (QA, {"json": {"lot_id": 1, "reason": "investigation"}}),
    ("GET", "/api/v1/holds/{hold_id}"): (EVERYONE, {}),
    ("POST", "/api/v1/holds/{hold_id}/disposition"): (QA, _signed),
    ("POST", "/api/v1/lots/{lot_id}/exit"): (QA, _exit),
    ("GET", "/api/v1/conformance"): (OVERSIGHT, {"params": {"site": "s1"}}),
    ("GET", "/api/v1/capa"): (EVERYONE, {}),
    ("GET", "/api/v1/capa/overdue"): (EVERYONE, {}),
    ("POST", "/api/v1/capa"): (
        QA, {"json": {"title": "Door alarms", "owner": "qa1", "due_date": "2026-12-31",
                      "links": [["excursion", "1"]]}}
    ),
    ("GET", "/api/v1/capa/{capa_id}"): (EVERYONE, {}),
    ("POST", "/api/v1/capa/{capa_id}/advance"): (
        QA, {"json": {"to_state": "investigation"}, "url": "/api/v1/capa/1/advance"}
    ),
    ("POST", "/api/v1/capa/{capa_id}/actions"): (
        QA, {"json": {"description": "Train staff", "owner": "qa1", "due_date": "2026-12-01"}}
    ),
    ("POST", "/api/v1/capa/{capa_id}/actions/{action_id}/complete"): (
        WRITERS, {"json": {"outcome": "seal fitted"}}
    ),
    ("POST", "/api/v1/capa/{capa_id}/links"): (QA, {"json": {"kind": "lot", "ref": "1"}}),
    ("POST", "/api/v1/capa/{capa_id}/evidence"): (
        WRITERS, {"files": {"file": ("log.csv", b"ts,t\n", "text/csv")}}
    ),
    ("GET", "/api/v1/capa/{capa_id}/evidence/{evidence_id}"): (EVERYONE, {}),
    ("GET", "/api/v1/audit"): (OVERSIGHT, {"params": {"record_type": "lots"}}),
    ("GET", "/api/v1/audit/verify"): (OVERSIGHT, {}),
    ("GET", "/api/v1/kpi"): (OVERSIGHT, {}),
    ("GET", "/api/v1/outbox/destinations"): (ADMIN, {}),
    ("PUT", "/api/v1/outbox/destinations/{name}"): (
        ADMIN, {"json": {"kind": "webhook", "url": "http://127.0.0.1:9/y"}}
    ),
    ("GET", "/api/v1/outbox/dead"): (ADMIN, {}),
    ("GET", "/api/v1/location-excursions"): (EVERYONE, {"params": {"state": "open"}}),
    ("GET", "/api/v1/location-excursions/{excursion_id}"): (EVERYONE, {}),
    ("GET", "/api/v1/alarms"): (EVERYONE, {"params": {"active": "true"}}),
    ("POST", "/api/v1/alarms/{alarm_id}/acknowledge"): (WRITERS, {"json": {"comment": "seen"}}),
    ("POST", "/api/v1/alarm-contacts"): (
        ADMIN, {"json": {"name": "Night", "channel": "webhook", "target": "http://127.0.0.1:9/s"}}
    ),
    ("GET", "/api/v1/lots/{lot_id}/budget"): (EVERYONE, {}),
    ("POST", "/api/v1/rules/replay"): (
        OVERSIGHT, {"json": {"since": "2026-11-22T08:00:00Z", "until": SOON}}
    ),
    ("POST", "/api/v1/outbox/dead/{destination}/{event_id}/retry"): (ADMIN, {}),
    ("GET", "/api/v1/gateways"): (ADMIN, {}),
    ("GET", "/api/v1/gateways/{gateway_id}"): (ADMIN, {}),
    ("PUT", "/api/v1/gateways/{gateway_id}"): (ADMIN, {"json": {"disabled": False}}),
    ("GET", "/api/v1/kept-aside"): (ADMIN, {"params": {"gateway": "gw-1"}}),
}  # fmt: skip
PUBLIC = {("GET", "/api/v1/health"), ("POST", "/api/v1/auth/token")}
# Pages outside the OpenAPI document: the Swagger UI (test_docs_load_nothing_from_outside_the_api)
# and the web console's (tests/test_console.py).
PAGES = {("GET", "/docs")} | {
    (method, path)
    for method, paths in (
        ("GET", ("/login", "/", "/board", "/excursions", "/excursions/{excursion_id}",
                 "/fonts/cjk.ttf", "/records", "/shipments/{shipment_id}", "/audit",
                 "/lots/{lot_id}", "/capa", "/capa/{capa_id}", "/kpi", "/admin", "/conformance",
                 "/places/{location_id}", "/validation", "/profiles", "/sensors",
                 "/sensors/{sensor_id}", "/goods")),
        ("POST", ("/login", "/logout", "/language", "/alarms/{alarm_id}/acknowledge",
                  "/holds/{hold_id}/disposition", "/audit/verify", "/lots/{lot_id}/hold",
                  "/lots/{lot_id}/exit", "/capa/{capa_id}/advance", "/capa/{capa_id}/actions",
                  "/capa/{capa_id}/actions/{action_id}/complete", "/capa/{capa_id}/evidence",
                  "/admin/users", "/admin/users/{username}/disabled", "/admin/contacts",
                  "/admin/locations/{location_id}", "/admin/gateways/{gateway_id}",
                  "/places/{location_id}/limits",
                  "/validation/{run_id}/sign", "/profiles/{profile_id}/limits",
                  "/products/{gtin}/profile", "/sensors/{sensor_id}/calibrations",
                  "/sensors/{sensor_id}/placements", "/goods/receive", "/goods/move",
                  "/profiles", "/products", "/shipments", "/goods/load",
                  "/shipments/{shipment_id}/depart", "/shipments/{shipment_id}/deliver",
                  "/shipments/{shipment_id}/arrive")),
    )
    for path in paths
}  # fmt: skip


# POSTs that write nothing: an auditor may make them.
READ_ONLY_POSTS = {("POST", "/api/v1/rules/replay")}
# Writes on one's own account only: an auditor keeps its password and tokens.
OWN_ACCOUNT = {("PUT", "/api/v1/auth/password"), ("POST", "/api/v1/auth/revoke")}


def test_an_auditor_writes_nothing() -> None:
    """Part 11: the auditor's role reads the record and checks it; every route that changes
    something refuses it (the matrix test holds the routes to these roles)."""
    writes = [
        route
        for route, (roles, _) in MATRIX.items()
        if route[0] != "GET"
        and route not in READ_ONLY_POSTS | OWN_ACCOUNT
        and Role.AUDITOR in roles
    ]
    assert writes == []


def test_every_route_is_in_the_matrix(client: Any) -> None:
    routes = {
        (m, r.path) for r in client.app.routes if isinstance(r, APIRoute) for m in r.methods or ()
    }
    assert routes == set(MATRIX) | PUBLIC | PAGES


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_each_role_gets_exactly_what_it_should(
    request: pytest.FixtureRequest, reader: Any, role: Role, route: tuple[str, str]
) -> None:
    method, path = route
    allowed, given = MATRIX[route]
    # A write that goes through gets a database of its own; the rest share one.
    writes = method != "GET" and role in allowed
    client = request.getfixturevalue("client") if writes else reader
    kwargs = dict(given(role) if callable(given) else given)
    url = kwargs.pop("url", None) or path.format(**client.ids)
    anonymous = client.request(method, url, **kwargs)
    assert anonymous.status_code == 401
    resp = client.request(method, url, headers=_headers(client, role), **kwargs)
    if role in allowed:
        assert resp.status_code in (200, 201), resp.text
    else:
        assert resp.status_code == 403
        assert role.value in resp.json()["detail"]


def test_health_needs_no_token(client: Any) -> None:
    body = client.get("/api/v1/health").json()
    assert body["status"] == "ok"
    assert body["schema_version"] >= 1


def test_wrong_password_and_unknown_user_get_the_same_401(client: Any) -> None:
    for user, pw in (("qa1", "wrong-password-here"), ("nobody", PASSWORD)):
        resp = client.post("/api/v1/auth/token", data={"username": user, "password": pw})
        assert resp.status_code == 401
        assert resp.json() == {"detail": "incorrect username or password"}


def test_live_view_shows_each_sensor_state_with_its_colour(client: Any, db_url: str) -> None:
    m = timedelta(minutes=1)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO sites (id, name) VALUES ('s2', 'Second site')")
        conn.execute(
            "INSERT INTO locations (id, site_id, kind, name, temp_min_c, temp_max_c)"
            " VALUES ('CR2', 's2', 'cold_room', 'Room two', 2, 8)"
        )
        for sensor, place, due, latest in (
            ("L-OK", "CR", "2027-01-01", (T0 - m, "ok", 4.5)),
            ("L-OLD", "CR", "2026-11-21", (T0 - 10 * m, "ok", 4.0)),  # and calibration overdue
            ("L-DEAD", "CR", None, (T0 - m, "unavailable", None)),
            ("L-QUIET", "CR2", None, None),
            ("L-SPARE", None, None, None),
        ):
            conn.execute(
                "INSERT INTO sensors (id, model, serial, calibration_due)"
                " VALUES (%s, 'xy-md02', %s, %s)",
                (sensor, f"SN-{sensor}", due),
            )
            if place:
                conn.execute(
                    "INSERT INTO sensor_assignments (sensor_id, location_id, position, valid)"
                    " VALUES (%s, %s, 'top', tstzrange(%s, NULL))",
                    (sensor, place, T0 - 60 * m),
                )
            if latest:
                conn.execute(
                    "INSERT INTO sensor_latest (sensor_id, seq, ts, received_at, gateway, status,"
                    " temperature_c) VALUES (%s, 7, %s, %s, 'gw-1', %s, %s)",
                    (sensor, latest[0], latest[0], latest[1], latest[2]),
                )
        conn.execute(
            "INSERT INTO sensor_latest (sensor_id, seq, ts, received_at, gateway, status,"
            " temperature_c) VALUES ('S1', 3, %s, %s, 'gw-1', 'ok', 9.0)",
            (T0, T0),
        )
    headers = _headers(client, Role.AUDITOR)
    resp = client.get("/api/v1/live", headers=headers)
    assert resp.status_code == 200
    doc = models.Live.model_validate_json(resp.content)  # the document keeps its own schema
    assert doc.generated_at == T0
    got = {s.sensor: (s.state, s.colour) for s in doc.sensors if s.sensor.startswith(("L-", "S1"))}
    assert got == {
        "S1": ("excursion", "red"),
        "L-OK": ("ok", "green"),
        "L-OLD": ("offline", "amber"),
        "L-DEAD": ("unavailable", "amber"),
        "L-QUIET": ("no_data", "grey"),
        "L-SPARE": ("unassigned", "grey"),
    }
    by_id = {s.sensor: s for s in doc.sensors}
    assert by_id["L-OLD"].calibration_overdue
    assert not by_id["L-OK"].calibration_overdue
    placed, newest = by_id["L-OK"].location, by_id["L-OK"].latest
    assert placed is not None
    assert placed.position == "top"
    assert newest is not None
    assert newest.ts == T0 - m
    assert by_id["S1"].open_excursion_since == T0
    # Sites first, then places, then sensors, in code order; sensors placed nowhere last.
    order = [(s.location.site_id, s.location.id) if s.location else ("~", "") for s in doc.sensors]
    assert order == sorted(order)
    only = client.get("/api/v1/live", headers=headers, params={"site": "s2"}).json()
    assert [s["sensor"] for s in only["sensors"]] == ["L-QUIET"]


UnitReading = tuple[str, int, Any, str, float | None, float | None, float | None, bool | None]


def _store_unit_readings(conn: Conn, gateway: str, readings: list[UnitReading]) -> None:
    """Readings (sensor, seq, ts, status, latitude, longitude, speed, door) as ingest stores
    them, each sensor's newest one its latest."""
    for sensor, seq, ts, status, lat, lon, speed, door in readings:
        conn.execute(
            "INSERT INTO readings (sensor_id, seq, ts, gateway, status, latitude, longitude,"
            " speed_kmh, door_open, batch_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 0)",
            (sensor, seq, ts, gateway, status, lat, lon, speed, door),
        )
    conn.execute(
        "INSERT INTO sensor_latest (sensor_id, seq, ts, received_at, gateway, status, clock,"
        " latitude, longitude, speed_kmh, door_open)"
        " SELECT DISTINCT ON (sensor_id) sensor_id, seq, ts, ts, gateway, status, clock,"
        " latitude, longitude, speed_kmh, door_open FROM readings"
        " WHERE sensor_id = ANY(%s) ORDER BY sensor_id, ts DESC",
        (sorted({r[0] for r in readings}),),
    )


def test_live_view_shows_vehicles_with_last_known_position_doors_and_worst_state(
    client: Any, db_url: str
) -> None:
    m = timedelta(minutes=1)
    admin = _headers(client, Role.ADMIN)
    # A GNSS unit and a door contact are sensors of their own kind, placed like probes.
    for sensor, model, kind in (
        ("GPS-1", "gnss-modbus", "position"),
        ("DOOR-1", "door-contact", "door"),
        ("P-TC", "xy-md02", "probe"),
    ):
        body = {"model": model, "serial": f"SN-{sensor}", "kind": kind}
        assert client.put(f"/api/v1/sensors/{sensor}", json=body, headers=admin).status_code == 200

    def place(sensor: str, location: str, position: str = "", since: int = 60) -> Any:
        body = {
            "location_id": location,
            "since": (T0 - since * m).isoformat(),
            "position": position,
        }
        return client.post(f"/api/v1/sensors/{sensor}/placements", json=body, headers=admin)

    refused = place("GPS-1", "CR")
    assert refused.status_code == 409
    assert "position unit is placed in a vehicle" in refused.json()["detail"]
    assert place("DOOR-1", "TRK").status_code == 409  # a vehicle's doors are its compartments'
    assert (
        client.put(
            "/api/v1/sensors/GPS-1",
            json={"model": "gnss-modbus", "serial": "SN-GPS-1"},
            headers=admin,
        ).status_code
        == 409
    )  # another kind of device is another sensor
    for sensor, location, position in (("GPS-1", "TRK", "cab"), ("DOOR-1", "TC", "rear door"),
                                       ("P-TC", "TC", "top")):  # fmt: skip
        assert place(sensor, location, position).status_code == 201
    # A refused move leaves the contact where it was, its placement still open.
    assert place("DOOR-1", "TRK", since=30).status_code == 409
    placed = client.get("/api/v1/sensors/DOOR-1", headers=admin).json()["placements"]
    assert [(p["location_id"], p["until"]) for p in placed] == [("TC", None)]

    with psycopg.connect(db_url, autocommit=True) as conn:
        readings = [
            # The door: shut, then open twice; the second opening is the one still going.
            ("DOOR-1", 1, T0 - 12 * m, "ok", None, None, None, False),
            ("DOOR-1", 2, T0 - 10 * m, "ok", None, None, None, True),
            ("DOOR-1", 3, T0 - 8 * m, "ok", None, None, None, False),
            ("DOOR-1", 4, T0 - 6 * m, "ok", None, None, None, True),
            ("DOOR-1", 5, T0 - 5 * m, "unavailable", None, None, None, None),
            ("DOOR-1", 6, T0 - 1 * m, "ok", None, None, None, True),
            # The GNSS unit: two fixes, then silent (no power): its last fix is kept.
            ("GPS-1", 1, T0 - 6 * m, "ok", 31.2304, 121.4737, 55.0, None),
            ("GPS-1", 2, T0 - 4 * m, "ok", 31.2401, 121.4650, 0.0, None),
            ("GPS-1", 3, T0 - 1 * m, "unavailable", None, None, None, None),
            ("P-TC", 1, T0 - 1 * m, "unavailable", None, None, None, None),
        ]
        _store_unit_readings(conn, "gw-t", readings)
        conn.execute(
            "INSERT INTO sensor_latest (sensor_id, seq, ts, received_at, gateway, status,"
            " temperature_c) VALUES ('S1', 3, %s, %s, 'gw-1', 'ok', 9.0)",
            (T0, T0),
        )
        conn.execute(
            "INSERT INTO shipments (id, vehicle_id, origin_site, destination, state, departed_at,"
            " arrived_at) VALUES ('SH-ON', 'TRK', 's1', 'City Hospital', 'in_transit', %s, NULL),"
            " ('SH-DONE', 'TRK', 's1', 'Clinic', 'delivered', %s, %s)",
            (T0 - 30 * m, T0 - 90 * m, T0 - 70 * m),
        )
    resp = client.get("/api/v1/live", headers=_headers(client, Role.LOGISTICS))
    assert resp.status_code == 200
    doc = models.Live.model_validate_json(resp.content)
    (truck,) = doc.vehicles
    assert (truck.id, truck.state, truck.colour) == ("TRK", "unavailable", "amber")  # P-TC's
    assert truck.position is not None
    assert truck.position.state == "unavailable"  # silent now ...
    assert (truck.position.ts, truck.position.latitude, truck.position.longitude) == (
        T0 - 4 * m, 31.2401, 121.4650,
    )  # ... and where it was last seen  # fmt: skip
    (front,) = truck.compartments
    assert (front.id, front.state) == ("TC", "unavailable")
    (contact,) = front.doors
    assert (contact.sensor, contact.position, contact.open, contact.ts) == (
        "DOOR-1",
        "rear door",
        True,
        T0 - m,
    )
    assert contact.open_since == T0 - 6 * m  # not the first opening, closed at -8 min
    shipments = [s.id for s in truck.shipments]
    assert "SH-ON" in shipments  # the fixture's own shipment may be under way too
    assert "SH-DONE" not in shipments
    places = {p.id: p for p in doc.locations}
    assert (places["CR"].state, places["CR"].colour, places["CR"].probes) == ("excursion", "red", 1)
    assert places["CR"].open_location_excursion_id is None  # the fixture's is the truck's
    assert places["TC"].open_location_excursion_id is not None
    assert places["TC"].doors == front.doors
    by_id = {s.sensor: s for s in doc.sensors}
    assert by_id["GPS-1"].kind == "position"
    assert by_id["DOOR-1"].latest is not None
    assert by_id["DOOR-1"].latest.door_open is True
    other = client.get(
        "/api/v1/live", headers=_headers(client, Role.LOGISTICS), params={"site": "s-none"}
    ).json()
    assert (other["sensors"], other["locations"], other["vehicles"]) == ([], [], [])


def test_token_expires_on_the_clock(client: Any, clock: ManualClock) -> None:
    headers = _headers(client, Role.QA)
    assert client.get("/api/v1/live", headers=headers).status_code == 200
    clock.advance(901)
    assert client.get("/api/v1/live", headers=headers).status_code == 401


@pytest.mark.parametrize("bad", ["Bearer nonsense", "Bearer ", "Basic cWE6cXE="])
def test_garbage_tokens_get_401_not_500(client: Any, bad: str) -> None:
    assert client.get("/api/v1/live", headers={"Authorization": bad}).status_code == 401


def test_acknowledge_errors_are_4xx_with_a_reason(client: Any, conn: Conn) -> None:
    qa = _headers(client, Role.QA)
    short = client.post("/api/v1/excursions/1/acknowledge", json={"comment": "x"}, headers=qa)
    assert short.status_code == 422
    missing = client.post(
        "/api/v1/excursions/999/acknowledge", json={"comment": "checked"}, headers=qa
    )
    assert (missing.status_code, missing.json()) == (404, {"detail": "no excursion 999"})
    assert (
        client.post(
            "/api/v1/excursions/1/acknowledge", json={"comment": "door shut"}, headers=qa
        ).status_code
        == 200
    )
    again = client.post("/api/v1/excursions/1/acknowledge", json={"comment": "again"}, headers=qa)
    assert again.status_code == 409
    row = conn.execute(
        "SELECT acknowledged_by, ack_comment FROM excursions WHERE id = 1"
    ).fetchone()
    assert row == ("qa1", "door shut")


def _login(client: Any, user: str, password: str) -> Any:
    return client.post("/api/v1/auth/token", data={"username": user, "password": password})


@pytest.mark.parametrize("user", ["qa1", "no-such-user"])
def test_five_failed_logins_lock_the_name_for_15_minutes(
    client: Any, clock: ManualClock, user: str
) -> None:
    for _ in range(5):
        assert _login(client, user, "wrong-password-here").status_code == 401
    refused = _login(client, user, PASSWORD)
    assert refused.status_code == 401
    # Unknown names lock the same way: the lock-out tells nobody which names exist.
    assert (
        "is locked for this address until 2026-11-22T10:15:00+00:00 after 5 failed"
        in (refused.json()["detail"])
    )
    clock.advance(15 * 60 + 1)
    assert _login(client, user, PASSWORD).status_code == (200 if user == "qa1" else 401)


def test_a_login_that_succeeds_starts_the_count_again(client: Any) -> None:
    for _ in range(2):
        for _ in range(4):
            assert _login(client, "qa1", "wrong-password-here").status_code == 401
        assert _login(client, "qa1", PASSWORD).status_code == 200


def test_failed_signatures_count_towards_the_lock_out_and_admin_unlocks(
    client: Any, conn: Conn
) -> None:
    qa = _headers(client, Role.QA)
    body = {"disposition": "release", "username": "qa1", "password": "not-my-password",
            "meaning": "approval", "reason": "checked"}  # fmt: skip
    url = f"/api/v1/holds/{client.ids['hold_id']}/disposition"
    for _ in range(5):
        assert client.post(url, json=body, headers=qa).status_code == 403
    locked = client.post(url, json={**body, "password": PASSWORD}, headers=qa)
    assert locked.status_code == 403
    assert "locked for this address until" in locked.json()["detail"]
    assert _login(client, "qa1", PASSWORD).status_code == 401
    admin = _headers(client, Role.ADMIN)
    assert client.post("/api/v1/users/qa1/unlock", headers=admin).status_code == 200
    assert client.post("/api/v1/users/qa1/unlock", headers=admin).status_code == 404
    assert client.post(url, json={**body, "password": PASSWORD}, headers=qa).status_code == 200
    trail = conn.execute(
        "SELECT action FROM audit_log WHERE record_id = 'qa1' AND action = 'unlock'"
    ).fetchall()
    assert trail == [("unlock",)]


def test_duplicate_user_and_weak_password_are_refused(client: Any) -> None:
    admin = _headers(client, Role.ADMIN)
    body = {
        "username": "qa1",
        "full_name": "Dup",
        "role": "qa",
        "password": "a-long-enough-password",
    }
    assert client.post("/api/v1/users", json=body, headers=admin).status_code == 409
    weak = {**body, "username": "weak", "password": "short"}
    assert client.post("/api/v1/users", json=weak, headers=admin).status_code == 422


def test_qa_releases_a_lot_by_signature_and_the_trail_shows_it(client: Any) -> None:
    qa = _headers(client, Role.QA)
    logi = _headers(client, Role.LOGISTICS)
    move = {"lot_id": 1, "kind": "transfer", "quantity": "5", "at": SOON,
            "from_location": "CR", "to_location": "TC"}  # fmt: skip

    refused = client.post("/api/v1/movements", json=move, headers=_headers(client, Role.ADMIN))
    assert refused.status_code == 409
    assert "lot 1 is quarantined" in refused.json()["detail"]
    wrong = {**_signed(Role.QA)["json"], "password": "not-my-password"}
    bad = client.post("/api/v1/holds/1/disposition", json=wrong, headers=qa)
    assert (bad.status_code, bad.json()["detail"]) == (
        403, "signature refused: user id or password is wrong",
    )  # fmt: skip
    done = client.post("/api/v1/holds/1/disposition", json=_signed(Role.QA)["json"], headers=qa)
    assert done.status_code == 200, done.text
    [sig] = done.json()["signatures"]
    assert (sig["signer_name"], sig["meaning"], sig["signed_at"]) == (
        "Qa User", "approval", "2026-11-22T10:00:00Z",
    )  # fmt: skip
    assert client.get("/api/v1/lots/1", headers=qa).json()["lot"]["status"] == "released"
    move = {**move, "at": "2026-11-22T10:05:00Z"}
    moved = client.post("/api/v1/movements", json=move, headers=_headers(client, Role.ADMIN))
    assert moved.status_code == 201, moved.text
    assert client.post("/api/v1/movements", json=move, headers=logi).status_code == 201

    trail = client.get(
        "/api/v1/audit", params={"record_type": "hold", "record_id": "1"}, headers=qa
    ).json()
    assert [(e["actor"], e["action"]) for e in trail] == [("qa1", "signature_failed")]
    logins = client.get("/api/v1/audit", params={"record_type": "user"}, headers=qa).json()
    assert ("qa1", "login") in {(e["actor"], e["action"]) for e in logins}
    verify = client.get("/api/v1/audit/verify", headers=_headers(client, Role.AUDITOR)).json()
    assert verify["ok"] is True
    assert verify["state"]["ok"] is True
    assert verify["state"]["tables"] >= 20
    assert verify["readings"]["ok"] is True


def test_erp_refusals_are_4xx_with_a_reason(client: Any) -> None:
    admin = _headers(client, Role.ADMIN)
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("GET", "/api/v1/lots/999", {}, 404, "no lot 999"),
        ("GET", "/api/v1/shipments/NOPE", {}, 404, "no shipment 'NOPE'"),
        ("POST", "/api/v1/lots", {"json": {"scan": "(01)09501101530004(10)X"}}, 422,
         "not a valid GTIN"),
        ("POST", "/api/v1/lots", {"json": {"gtin": GTIN}}, 422, "give either scan"),
        ("POST", "/api/v1/lots", {"json": {"x": 1}}, 422, "x"),
        ("POST", "/api/v1/movements", {"json": {"lot_id": 1, "kind": "receiving",
         "quantity": "1", "at": SOON, "to_location": "NOWHERE"}}, 404, "no record with"),
        ("POST", "/api/v1/movements", {"json": {"lot_id": 1, "kind": "receiving",
         "quantity": "1", "at": "2026-11-22T10:00:00"}}, 422, "RFC 3339 with its offset"),
        ("POST", "/api/v1/shipments/SH2/arrive", {"json": {"at": "2026-11-22T08:00:00Z"}}, 409,
         "departed at"),
        ("POST", "/api/v1/capa/1/advance", {"json": {"to_state": "closed"}}, 409,
         "it can go to investigation"),
        ("PUT", "/api/v1/products/123", {"json": {"name": "x", "profile_id": "2-8"}}, 409,
         "14 digits"),
        ("PUT", "/api/v1/products/" + GTIN, {"json": {"name": "x", "profile_id": "none"}}, 404,
         "no temperature profile 'none'"),
        ("PUT", "/api/v1/outbox/destinations/x", {"json": {"kind": "pigeon", "url": "x"}}, 422,
         "unknown destination kind"),
        ("PUT", "/api/v1/outbox/destinations/x", {"json": {"kind": "webhook", "url": "ftp://x"}},
         409, "URL must be http(s)"),
        ("GET", "/api/v1/kpi", {"params": {"from": SOON, "to": SOON}}, 409, "end of the period"),
    ]  # fmt: skip
    for method, url, kwargs, code, text in cases:
        resp = client.request(method, url, headers=admin, **kwargs)
        assert resp.status_code == code, (url, resp.text)
        assert text in str(resp.json()["detail"]), (url, resp.text)


def test_rules_refusals_are_4xx_with_a_reason(client: Any) -> None:
    qa = _headers(client, Role.QA)
    admin = _headers(client, Role.ADMIN)
    [open_one] = client.get("/api/v1/location-excursions?state=open", headers=qa).json()
    detail = client.get(f"/api/v1/location-excursions/{open_one['id']}", headers=qa).json()
    assert [a["kind"] for a in detail["alarms"]] == ["excursion"]
    # The probes' own excursions that make up the place's, linked both ways.
    assert [p["sensor"] for p in detail["probes"]] == open_one["sensors"]
    assert {p["location_excursion_id"] for p in detail["probes"]} == {open_one["id"]}
    assert client.get("/api/v1/location-excursions/999", headers=qa).status_code == 404
    blank = client.post("/api/v1/alarms/1/acknowledge", json={"comment": "  "}, headers=qa)
    assert blank.status_code == 409
    assert "needs a comment" in blank.json()["detail"]
    assert client.post("/api/v1/alarms/1/acknowledge", json={"comment": "ok"},
                       headers=qa).status_code == 200  # fmt: skip
    again = client.post("/api/v1/alarms/1/acknowledge", json={"comment": "ok"}, headers=qa)
    assert again.status_code == 409
    missing = client.post("/api/v1/alarms/77/acknowledge", json={"comment": "ok"}, headers=qa)
    assert missing.status_code == 404
    pager = client.post("/api/v1/alarm-contacts", headers=admin,
                        json={"name": "x", "channel": "pager", "target": "1"})  # fmt: skip
    assert pager.status_code == 409
    assert "unknown channel" in pager.json()["detail"]
    assert client.get("/api/v1/lots/999/budget", headers=qa).status_code == 404
    a_year = {"since": "2025-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    year = client.post("/api/v1/rules/replay", headers=qa, json=a_year)
    assert year.status_code == 409
    assert "coldtrail replay" in year.json()["detail"]
    naive = client.post("/api/v1/rules/replay", headers=qa,
                        json={"since": "2026-11-22T08:00:00", "until": SOON})  # fmt: skip
    assert naive.status_code == 422


# -------------------------------------------------------------------- OpenAPI examples

EXAMPLES_PATH = Path(examples.__file__).parent / examples.EXAMPLES_FILE
# The record in the form its example is most use in (the matrix asks for CSV and PDF).
EXAMPLE_REQUESTS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/api/v1/shipments/{shipment_id}/record"): {"params": {"format": "json"}},
    ("GET", "/api/v1/locations/{location_id}/record"): {
        "params": {"from": "2026-11-22T08:00:00Z", "to": SOON, "format": "json"}
    },
    ("GET", "/api/v1/health"): {},
    ("POST", "/api/v1/auth/token"): {"data": {"username": "qa1", "password": PASSWORD}},
}
TEXT_EXAMPLE_CHARS = 1500


def _truck_on_the_road(conn: Conn) -> None:
    """The fixture's truck with a GNSS unit and a door contact, for the live view's example."""
    m = timedelta(minutes=1)
    upsert_sensor(conn, "GPS-TRK", "gnss-modbus", "SN-GPS-TRK", kind="position")
    assign_sensor(conn, "GPS-TRK", "TRK", T0 - 60 * m, "cab")
    upsert_sensor(conn, "DOOR-TC", "door-contact", "SN-DOOR-TC", kind="door")
    assign_sensor(conn, "DOOR-TC", "TC", T0 - 60 * m, "rear door")
    _store_unit_readings(
        conn,
        "gw-trk",
        [
            ("GPS-TRK", 1, T0 - 2 * m, "ok", 31.2304, 121.4737, 48.5, None),
            ("DOOR-TC", 1, T0 - 5 * m, "ok", None, None, None, False),
            ("DOOR-TC", 2, T0 - 1 * m, "ok", None, None, None, True),
        ],
    )


EXAMPLE_SETUP: dict[tuple[str, str], Callable[[Conn], None]] = {
    ("GET", "/api/v1/live"): _truck_on_the_road,
}


TOKEN_PLACEHOLDER = "<a signed JWT: header.claims.signature, each base64url>"


def _record_example(client: Any, route: tuple[str, str]) -> dict[str, Any]:
    method, path = route
    given = EXAMPLE_REQUESTS[route] if route in EXAMPLE_REQUESTS else MATRIX[route][1]
    # As an administrator, or as QA where only QA may (a signed change).
    role = Role.QA if route in MATRIX and Role.ADMIN not in MATRIX[route][0] else Role.ADMIN
    kwargs = dict(given(role) if callable(given) else given)
    url = kwargs.pop("url", None) or path.format(**client.ids)
    resp = client.request(method, url, headers=_headers(client, role), **kwargs)
    assert resp.status_code in (200, 201), f"{method} {url}: {resp.text}"
    media = resp.headers["content-type"].split(";")[0]
    example: dict[str, Any] = {"status": resp.status_code, "media_type": media}
    if isinstance(kwargs.get("json"), dict):
        example["request"] = kwargs["json"]
    if media == "application/json":
        example["response"] = resp.json()
        if isinstance(example["response"], dict) and "access_token" in example["response"]:
            # A real token, even expired and signed with the tests' key, does not belong in a
            # published document: its shape does.
            example["response"]["access_token"] = TOKEN_PLACEHOLDER
    elif media.startswith("text/"):
        example["response"] = resp.text[:TEXT_EXAMPLE_CHARS]
    return example  # a binary answer (a PDF, a photo) gets no example


def _schema_errors(openapi: dict[str, Any], key: str, example: dict[str, Any]) -> list[str]:
    """What in ``example`` breaks the schemas its operation documents."""
    from jsonschema import Draft202012Validator

    method, _, path = key.partition(" ")
    operation = openapi["paths"][path][method.lower()]
    found = []
    checks = []
    if "request" in example:
        checks.append(("request", operation["requestBody"]["content"]["application/json"]))
    if example["media_type"] == "application/json":
        answer = operation["responses"][str(example["status"])]["content"]["application/json"]
        checks.append(("response", answer))
    for part, media in checks:
        validator = Draft202012Validator({**media["schema"], "components": openapi["components"]})
        found += [f"{key} {part}: {e.message}" for e in validator.iter_errors(example[part])]
    return found


EXAMPLE_PARTS = ("reads", "writes-1", "writes-2")


@pytest.mark.parametrize("part", EXAMPLE_PARTS)
def test_openapi_examples_are_recorded_answers_that_keep_to_their_schemas(
    api_template: str, clock: ManualClock, mqtt_options: MqttOptions, topic_root: str, part: str
) -> None:
    """Every route's example is a real request and answer of the test fixture, each write on
    a fresh copy of it (the reads on one). ``COLDTRAIL_RECORD_EXAMPLES=1`` writes them to the
    file the OpenAPI document takes them from (record with one worker: ``-p no:xdist``);
    without it, the stored ones must cover every route and, like the fresh ones, keep to the
    document's schemas. In three parts, so two workers share the ~45 fresh copies."""
    fresh: dict[str, Any] = {}
    routes = sorted(set(MATRIX) | PUBLIC)
    # Reads change nothing: they share one copy (a copy per route was half of this test).
    reads = [r for r in routes if r[0] == "GET" and r not in EXAMPLE_SETUP]
    writes = [r for r in routes if r not in reads]
    mine = {"reads": reads, "writes-1": writes[::2], "writes-2": writes[1::2]}[part]
    if part == "reads":
        with (
            database_from(api_template) as url,
            api_client(url, clock, mqtt_options, topic_root) as c,
        ):
            c.ids = IDS
            for route in mine:
                fresh[f"{route[0]} {route[1]}"] = _record_example(c, route)
    # A write gets a fresh copy, and an app without a broker: only the stream (a read) needs
    # one, and connecting an app's push stream for each write was a third of this test.
    for route in mine if part != "reads" else []:
        with database_from(api_template) as url, api_client(url, clock) as c:
            if route in EXAMPLE_SETUP:
                with psycopg.connect(url, autocommit=True) as conn:
                    EXAMPLE_SETUP[route](conn)
            c.ids = IDS
            fresh[f"{route[0]} {route[1]}"] = _record_example(c, route)
    if os.environ.get("COLDTRAIL_RECORD_EXAMPLES") == "1":
        kept = {k: v for k, v in examples.load().items() if k in {f"{m} {p}" for m, p in routes}}
        kept.update(fresh)
        EXAMPLES_PATH.write_text(
            json.dumps(dict(sorted(kept.items())), indent=1, ensure_ascii=False) + "\n", "utf-8"
        )
    stored = {k: v for k, v in examples.load().items()
              if k in {f"{m} {p}" for m, p in mine}}  # fmt: skip
    with database_from(api_template) as url, api_client(url, clock) as c:
        openapi = c.get("/openapi.json").json()
    assert sorted(stored) == sorted(fresh), "run with COLDTRAIL_RECORD_EXAMPLES=1 to record"
    if part == "reads":  # the stored examples are those of today's routes, no more
        assert sorted(examples.load()) == sorted(f"{m} {p}" for m, p in routes)
    errors = [
        e for k, ex in [*stored.items(), *fresh.items()] for e in _schema_errors(openapi, k, ex)
    ]
    assert errors == []
    # The document carries them: each answer with JSON or text, each JSON request body.
    for key, example in stored.items():
        method, _, path = key.partition(" ")
        operation = openapi["paths"][path][method.lower()]
        if "response" in example:
            answer = operation["responses"][str(example["status"])]["content"]
            assert answer[example["media_type"]]["example"] == example["response"], key
        if "request" in example:
            body = operation["requestBody"]["content"]["application/json"]
            assert "example" in body or "examples" in body["schema"], key


def test_live_view_is_served_again_while_young_and_built_anew_after(
    client: Any, db_url: str, clock: ManualClock
) -> None:
    headers = _headers(client, Role.LOGISTICS)

    def latest_of_s1() -> tuple[Any, str, str]:
        resp = client.get("/api/v1/live", headers=headers)
        assert resp.status_code == 200
        doc = resp.json()
        (s1,) = [s for s in doc["sensors"] if s["sensor"] == "S1"]
        return s1["latest"], doc["generated_at"], resp.headers["age"]

    first, built, age = latest_of_s1()
    assert (first, age) == (None, "0")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO sensor_latest (sensor_id, seq, ts, received_at, gateway, status,"
            " temperature_c) VALUES ('S1', 3, %s, %s, 'gw-1', 'ok', 9.0)",
            (T0, T0),
        )
    clock.advance(1.5)
    assert latest_of_s1() == (None, built, "1")  # the same document, and it says how old
    other_site = client.get("/api/v1/live", headers=headers, params={"site": "s1"}).json()
    assert [s["latest"]["seq"] for s in other_site["sensors"] if s["sensor"] == "S1"] == [3]
    clock.advance(0.5)
    # Too old now: served once more while the next is built in the background.
    assert latest_of_s1() == (None, built, "2")

    def rebuilt_one() -> tuple[Any, str, str] | None:
        got = latest_of_s1()
        return got if got[1] != built else None

    now, rebuilt, age = wait_for(rebuilt_one, what="the document built in the background")
    assert (now["seq"], age) == (3, "0")
    assert rebuilt > built


def test_live_snapshots_build_once_for_requests_that_arrive_together() -> None:
    from concurrent.futures import ThreadPoolExecutor
    from threading import Event

    from coldtrail.api.live import LiveSnapshots

    clock = ManualClock(T0)
    entered, release = Event(), Event()
    builds: list[Any] = []

    def build(now: Any) -> bytes:
        builds.append(now)
        entered.set()
        release.wait(10)
        return b"{}"

    snapshots = LiveSnapshots(clock, max_age_s=2.0)
    with ThreadPoolExecutor(5) as pool:
        calls = [pool.submit(snapshots.get, None, build) for _ in range(5)]
        assert entered.wait(10)
        release.set()
        answers = [c.result(10) for c in calls]
    assert builds == [T0]
    assert answers == [(b"{}", T0)] * 5
    never = LiveSnapshots(clock, max_age_s=0)
    for _ in range(2):
        never.get(None, build)
    assert len(builds) == 3  # max age 0: built for every call


def test_live_snapshots_serve_the_kept_document_while_the_next_is_built() -> None:
    from concurrent.futures import ThreadPoolExecutor
    from threading import Event

    from coldtrail.api.live import LiveSnapshots

    entered, release = Event(), Event()

    def slow(name: bytes) -> Callable[..., bytes]:
        def build(*_: Any) -> bytes:
            entered.set()
            release.wait(10)
            return name

        return build

    # In the background (as the API runs it): the old one at once, the new one after.
    clock = ManualClock(T0)
    later = T0 + timedelta(seconds=3)
    snapshots = LiveSnapshots(clock, max_age_s=2.0, rebuild=slow(b"second"))
    assert snapshots.get(None, lambda now: b"first") == (b"first", T0)
    clock.advance(3)
    assert snapshots.get(None, lambda now: b"never") == (b"first", T0)  # no waiting
    assert entered.wait(10)
    assert snapshots.get(None, lambda now: b"never") == (b"first", T0)  # one build at a time
    release.set()
    snapshots.close()
    assert snapshots.get(None, lambda now: b"never") == (b"second", later)
    clock.advance(20)  # nobody asked for 20 s (10 times the maximum age): not served
    assert snapshots.get(None, lambda now: b"third") == (b"third", later + timedelta(seconds=20))

    # Without a background builder, the request that finds it old builds; the others
    # meanwhile get the kept one.
    entered.clear()
    release.clear()
    clock = ManualClock(T0)
    snapshots = LiveSnapshots(clock, max_age_s=2.0)
    snapshots.get(None, lambda now: b"first")
    clock.advance(3)
    with ThreadPoolExecutor(1) as pool:
        rebuilding = pool.submit(snapshots.get, None, slow(b"second"))
        assert entered.wait(10)
        assert snapshots.get(None, lambda now: b"never") == (b"first", T0)
        release.set()
        assert rebuilding.result(10) == (b"second", later)


JSON_ROUTES = sorted(
    route
    for route, (_, given) in MATRIX.items()
    if not callable(given) and "json" in given and isinstance(given["json"], dict)
)


def test_a_field_the_api_does_not_know_is_refused_by_name(client: Any) -> None:
    """A client that sends a field the API ignores believes it set something (PUT /locations
    dropped `alarm_delay_s` without a word): every request body refuses unknown fields. One
    client for every route: the body is refused before anything is read or written."""
    admin = _headers(client, Role.ADMIN)
    accepted = []
    for method, path in JSON_ROUTES:
        given = MATRIX[(method, path)][1]
        assert isinstance(given, dict)
        kwargs = dict(given)
        body = {**kwargs.pop("json"), "no_such_field": 1}
        url = kwargs.pop("url", None) or path.format(**client.ids)
        resp = client.request(method, url, json=body, headers=admin, **kwargs)
        errors = resp.json()["detail"] if resp.status_code == 422 else []
        if not any(
            e["loc"][-1] == "no_such_field" and e["msg"] == "Extra inputs are not permitted"
            for e in errors
        ):
            accepted.append((method, path, resp.status_code))
    assert accepted == []
    assert len(JSON_ROUTES) >= 25


@pytest.mark.parametrize(
    ("body", "field", "msg"),
    [
        (b'{"name": "x", "temp_min_c": 2, "temp_max_c": 8, "mkt_max_c": NaN}', "mkt_max_c",
         "Input should be a finite number"),
        (b'{"name": "x", "temp_min_c": -Infinity, "temp_max_c": 8}', "temp_min_c",
         "Input should be a finite number"),
        (b'{"name": "x\\ud800", "temp_min_c": 2, "temp_max_c": 8}', "name",
         "Input should be a valid string, unable to parse raw data as a unicode string"),
    ],
)  # fmt: skip
def test_nan_infinity_and_a_lone_surrogate_in_a_body_are_a_422_not_a_500(
    client: Any, body: bytes, field: str, msg: str
) -> None:
    headers = {**_headers(client, Role.ADMIN), "content-type": "application/json"}
    resp = client.put("/api/v1/profiles/p9", content=body, headers=headers)
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["detail"]
    assert (error["loc"][-1], error["msg"]) == (field, msg)
    assert client.get("/api/v1/profiles/p9", headers=headers).status_code == 404


@pytest.mark.parametrize("value", ["0.5", "1700000000", "2026-11-22T10:00:00", "yesterday"])
def test_a_time_is_rfc_3339_with_its_offset_and_nothing_else(client: Any, value: str) -> None:
    resp = client.get(
        "/api/v1/movements", params={"from": value}, headers=_headers(client, Role.ADMIN)
    )
    assert resp.status_code == 422, resp.text
    assert "RFC 3339" in str(resp.json()["detail"])


def test_a_site_time_zone_must_be_one_the_world_uses(client: Any) -> None:
    admin = _headers(client, Role.ADMIN)
    bad = client.put("/api/v1/sites/s9", json={"name": "Mars", "timezone": "Mars/Olympus"},
                     headers=admin)  # fmt: skip
    assert bad.status_code == 422
    assert "not an IANA time zone" in str(bad.json()["detail"])
    good = client.put("/api/v1/sites/s9", json={"name": "上海", "timezone": "Asia/Shanghai"},
                      headers=admin)  # fmt: skip
    assert good.status_code == 200, good.text


def test_a_placement_far_ahead_is_refused_so_it_cant_hold_the_sensor_for_good(
    client: Any,
) -> None:
    admin = _headers(client, Role.ADMIN)
    body = {"location_id": "CR", "since": "9999-12-31T00:00:00Z"}
    resp = client.post("/api/v1/sensors/S1/placements", json=body, headers=admin)
    assert resp.status_code == 409
    assert "at most 1 day ahead" in resp.json()["detail"]


def test_a_placement_before_1970_is_refused_not_stored_in_1_bc(client: Any) -> None:
    """0001-01-01 at +08:00 is in 1 BC in UTC: stored, it could not be read back."""
    admin = _headers(client, Role.ADMIN)
    new = {"model": "xy-md02", "serial": "SN-NEW-1"}
    assert client.put("/api/v1/sensors/S9", json=new, headers=admin).status_code == 200
    body = {"location_id": "CR", "since": "0001-01-01T00:00:00+08:00"}
    resp = client.post("/api/v1/sensors/S9/placements", json=body, headers=admin)
    assert resp.status_code == 409, resp.text
    assert "1970 or later" in resp.json()["detail"]
    assert client.get("/api/v1/sensors/S9", headers=admin).json()["placements"] == []


def test_evidence_with_a_chinese_name_downloads_and_a_page_is_sent_as_bytes(client: Any) -> None:
    qa = _headers(client, Role.QA)
    url = f"/api/v1/capa/{client.ids['capa_id']}/evidence"
    files = {
        "report": ("报告 温度.pdf", b"%PDF-1.4\n", "application/pdf"),
        "page": ("page.html", b"<script>alert(1)</script>", "text/html"),
    }
    got = {}
    for key, (name, content, kind) in files.items():
        up = client.post(url, files={"file": (name, content, kind)}, headers=qa)
        assert up.status_code == 201, up.text
        got[key] = client.get(f"{url}/{up.json()['id']}", headers=qa)
    report, page = got["report"], got["page"]
    assert report.status_code == 200
    assert report.headers["content-type"] == "application/pdf"
    assert report.headers["content-disposition"] == (
        'attachment; filename="download.pdf"; '
        "filename*=UTF-8''%E6%8A%A5%E5%91%8A%20%E6%B8%A9%E5%BA%A6.pdf"
    )
    assert report.headers["x-content-type-options"] == "nosniff"
    assert page.headers["content-type"] == "application/octet-stream"
    assert page.content == b"<script>alert(1)</script>"


@pytest.mark.parametrize("exp", ["soon", float("inf"), float("nan"), True, None])
def test_a_token_whose_expiry_is_not_a_number_is_refused(client: Any, exp: Any) -> None:
    import jwt

    claims: dict[str, Any] = {"sub": "admin", "role": "admin", "exp": exp}
    if exp is None:
        del claims["exp"]
    forged = jwt.encode(claims, SECRET, algorithm="HS256")
    resp = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {forged}"})
    assert resp.status_code == 401


def test_guesses_made_at_once_are_counted_before_any_is_checked(db_url: str) -> None:
    """Ten guesses at once: five are checked, the other five find the name locked without
    being checked. Before, every one passed the lock-out's check before any had failed
    (60 at once checked 11, and a right password 11th got in)."""
    import threading

    from coldtrail.erp import people
    from coldtrail.errors import AccountLocked

    start = threading.Barrier(10)
    outcomes: list[str] = []

    def guess() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            start.wait()
            try:
                user = people.authenticate(conn, "qa1", "wrong-password-here", T0)
                outcomes.append("checked" if user is None else "in")
            except AccountLocked:
                outcomes.append("locked")

    threads = [threading.Thread(target=guess) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["checked"] * 5 + ["locked"] * 5
    with psycopg.connect(db_url) as conn, pytest.raises(AccountLocked):
        people.authenticate(conn, "qa1", PASSWORD, T0)  # the right one, too late


def test_one_address_guessing_many_names_is_slowed_down(db_url: str, clock: ManualClock) -> None:
    from fastapi.testclient import TestClient

    from coldtrail.api.app import ApiConfig, create_app

    config = ApiConfig(database_url=db_url, secret_key=SECRET, admin_password="admin-password-123")
    with TestClient(create_app(config, clock)) as c:
        for n in range(10):  # a name each: the lock-out of one name does not come into it
            assert _login(c, f"guess{n}", "wrong-password-here").status_code == 401
        slowed = _login(c, "guess10", "wrong-password-here")
        assert slowed.status_code == 429
        assert slowed.headers["retry-after"] == "6"
        clock.advance(6)
        assert _login(c, "qa1", PASSWORD).status_code == 200


def test_a_name_no_account_can_have_is_refused_before_the_database(client: Any, conn: Conn) -> None:
    huge = "x" * 1_000_000
    before = conn.execute("SELECT count(*) FROM login_failures").fetchone()
    for name in (huge, "Robert'); DROP TABLE users;--", "名字"):
        resp = _login(client, name, "whatever-it-is-12")
        assert resp.status_code == 401, resp.text
        assert resp.json() == {"detail": "incorrect username or password"}
    assert conn.execute("SELECT count(*) FROM login_failures").fetchone() == before
    tried = conn.execute(
        "SELECT record_id FROM audit_log WHERE action = 'login_failed' ORDER BY id"
    ).fetchall()
    assert tried[0] == ("x" * 64,)  # the trail keeps the start of what was tried


def test_a_body_over_a_megabyte_is_refused_413_before_it_is_read_whole(
    client: Any, conn: Conn
) -> None:
    """A 50 MB body used to be read, parsed and held; one CAPA with 8 MB of links held the
    audit trail's head for 31 s. Said or not (chunked), a body over 1 MiB is a 413."""
    qa = _headers(client, Role.QA)
    before = conn.execute("SELECT count(*) FROM capas").fetchone()
    big = json.dumps(
        {
            "title": "门",
            "owner": "qa1",
            "due_date": "2026-12-31",
            "links": [["lot", "L" * 2_000_000]],
        }
    ).encode()
    said = client.post(
        "/api/v1/capa", content=big, headers={**qa, "content-type": "application/json"}
    )

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    unsaid = client.post(
        "/api/v1/capa", content=chunks(), headers={**qa, "content-type": "application/json"}
    )
    for resp in (said, unsaid):
        assert resp.status_code == 413, resp.text
        assert resp.json() == {"detail": "request body over 1048576 bytes: the limit"}
    assert "content-length" not in unsaid.request.headers
    assert conn.execute("SELECT count(*) FROM capas").fetchone() == before


def test_a_list_over_a_thousand_is_refused_by_name(client: Any, conn: Conn) -> None:
    qa = _headers(client, Role.QA)
    body = {"title": "Door", "owner": "qa1", "due_date": "2026-12-31"}
    many = client.post("/api/v1/capa", json={**body, "links": [["lot", "L1"]] * 1001}, headers=qa)
    assert many.status_code == 422
    (error,) = many.json()["detail"]
    assert error["loc"] == ["body", "links"]
    assert "at most 1000" in error["msg"]
    replay = client.post(
        "/api/v1/rules/replay",
        json={
            "since": "2026-01-01T00:00:00Z",
            "until": "2026-01-02T00:00:00Z",
            "sensors": [f"S{i}" for i in range(20_001)],
        },
        headers=_headers(client, Role.ADMIN),
    )
    assert replay.status_code == 422, replay.text
    assert replay.json()["detail"][0]["loc"] == ["body", "sensors"]


def test_evidence_may_be_larger_than_a_json_body_but_not_without_end(client: Any) -> None:
    qa = _headers(client, Role.QA)
    url = f"/api/v1/capa/{client.ids['capa_id']}/evidence"
    scan = b"%PDF-1.4\n" + b"0" * (3 * 1024 * 1024)
    up = client.post(url, files={"file": ("扫描.pdf", scan, "application/pdf")}, headers=qa)
    assert up.status_code == 201, up.text
    back = client.get(f"{url}/{up.json()['id']}", headers=qa)
    assert back.content == scan
    film = b"0" * (26 * 1024 * 1024)
    refused = client.post(url, files={"file": ("film.mp4", film, "video/mp4")}, headers=qa)
    assert refused.status_code == 413
    assert refused.json() == {"detail": "request body over 26214400 bytes: the limit"}


def test_docs_load_nothing_from_outside_the_api(client: Any) -> None:
    """Swagger UI from the package: at a site without internet /docs still works, and no
    CDN learns who reads it."""
    import re

    page = client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets
    assert all(a.startswith("/docs-assets/") for a in assets), assets
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 1000 or asset.endswith(".png")
    assert "cdn" not in page.text.lower()
    assert client.get("/redoc").status_code == 404  # it would load from a CDN
