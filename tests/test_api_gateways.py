"""The gateway routes: what an admin sees of each gateway's behaviour, and what they may set
(its site, whether it may connect). Real ingest on real Mosquitto fills what they show."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from coldtrail.clock import ManualClock
from coldtrail.erp import gateways
from coldtrail.erp.masterdata import (
    Location,
    assign_sensor,
    upsert_location,
    upsert_sensor,
    upsert_site,
)
from coldtrail.messages import Reading, encode_telemetry, telemetry_topic
from coldtrail.mqtt import MqttOptions
from tests.conftest import (
    T0,
    RunningIngest,
    api_client,
    ingest_worker,
    make_site,
    publish,
    token,
    wait_for,
)

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def admin_client(db_url: str, clock: ManualClock) -> Any:
    with api_client(db_url, clock) as c:
        c.headers.update(token(c, "admin", "admin-password-123"))
        yield c


def test_an_admin_sees_what_a_gateway_sent_that_ingest_kept_aside(
    conn: Conn,
    db_url: str,
    mqtt_options: MqttOptions,
    topic_root: str,
    admin_client: Any,
) -> None:
    make_site(conn, {"S1": "CR"})
    upsert_site(conn, "s2", "Other site")
    upsert_location(conn, Location("CR2", "s2", "cold_room", "Their room", 2.0, 8.0))
    upsert_sensor(conn, "S2", "xy-md02", "SN-S2")
    assign_sensor(conn, "S2", "CR2", T0)
    gateways.register(conn, "gw-1", "s1", "Cold room gateway")
    readings = [
        Reading(sensor="S1", seq=1, ts=T0, temperature_c=4.0),
        Reading(sensor="S2", seq=1, ts=T0, temperature_c=30.0),  # another site's sensor
    ]
    worker = ingest_worker(db_url, mqtt_options, topic_root)
    with RunningIngest(worker):
        topic = telemetry_topic(topic_root, "s1", "gw-1")
        publish(mqtt_options, topic, encode_telemetry("gw-1", T0, readings), b"not json")
        wait_for(lambda: worker.stats.messages == 2 and worker.stats.batches >= 1)
        wait_for(lambda: worker.stats.dead_letters == 1 and worker.stats.quarantined == 1)

    listed = admin_client.get("/api/v1/gateways").json()
    assert [(g["id"], g["site_id"], g["sensors_placed"]) for g in listed] == [("gw-1", "s1", 1)]
    assert listed[0]["kept_aside_24h"] == {"not_at_site": 1}
    assert listed[0]["dead_letters_24h"] == 1
    detail = admin_client.get("/api/v1/gateways/gw-1").json()
    assert [(k["sensor_id"], k["rule"]) for k in detail["kept_aside"]] == [("S2", "not_at_site")]
    assert detail["dead_letters"][0]["reason"].startswith("not JSON")
    assert detail["dead_letters"][0]["bytes"] == len(b"not json")
    kept = admin_client.get("/api/v1/kept-aside", params={"rule": "not_at_site"}).json()
    assert [(k["gateway"], k["sensor_id"], k["temperature_c"]) for k in kept] == [
        ("gw-1", "S2", 30.0)
    ]
    assert admin_client.get("/api/v1/kept-aside", params={"rule": "gateway_site"}).json() == []


def test_an_admin_moves_and_disables_a_gateway_and_the_record_says_who(
    conn: Conn, admin_client: Any
) -> None:
    make_site(conn, {"S1": "CR"})
    upsert_site(conn, "s2", "Other site")
    gateways.register(conn, "gw-1", "s1", "Cold room gateway")
    moved = admin_client.put("/api/v1/gateways/gw-1", json={"site": "s2", "disabled": True})
    assert moved.status_code == 200, moved.text
    body = moved.json()
    assert (body["gateway"]["site_id"], body["gateway"]["disabled"]) == ("s2", True)
    # No broker admin account in this API: the change is recorded, the broker not told.
    assert body["broker"].startswith("not told")
    audit = conn.execute(
        "SELECT actor FROM audit_log WHERE record_type = 'gateways' AND action = 'update'"
    ).fetchall()
    assert {a[0] for a in audit} == {"admin"}


@pytest.mark.parametrize(
    ("path", "body", "code", "detail"),
    [
        ("/api/v1/gateways/gw-9", {"disabled": True}, 404, "no gateway 'gw-9'"),
        ("/api/v1/gateways/gw-1", {"site": "nowhere"}, 409, "no site 'nowhere'"),
        ("/api/v1/gateways/gw-1", {"site": "s1", "password": "x"}, 422, "Extra inputs"),
        ("/api/v1/gateways/gw-1", {"site": "s/1"}, 422, "pattern"),
    ],
)
def test_gateway_changes_that_cant_be_made_are_4xx_with_a_reason(
    conn: Conn, admin_client: Any, path: str, body: dict[str, Any], code: int, detail: str
) -> None:
    make_site(conn, {})
    gateways.register(conn, "gw-1", "s1", "Cold room gateway")
    resp = admin_client.put(path, json=body)
    assert resp.status_code == code, resp.text
    assert detail in str(resp.json()["detail"])
