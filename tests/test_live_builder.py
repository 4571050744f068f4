"""The live document built from the sensors' kept parts: after every kind of change it is the
document a build from nothing gives, and it asks the database only for the sensors that
changed (real PostgreSQL)."""

from __future__ import annotations

import json
import threading
from datetime import date, timedelta
from typing import Any

import psycopg

from coldtrail.api.live import LiveBuilder
from coldtrail.erp.masterdata import Location, assign_sensor, upsert_location, upsert_sensor
from coldtrail.erp.movements import record_movement
from coldtrail.erp.products import register_lot
from tests.conftest import GTIN, T0, make_erp, make_site

Conn = psycopg.Connection[tuple[Any, ...]]
M = timedelta(minutes=1)
PLACED = {"P1": "CR", "P2": "CR", "P3": "CR", "P4": "TC"}


def _reading(conn: Conn, sensor: str, seq: int, ts: Any, temp: float | None = 5.0) -> None:
    conn.execute(
        "INSERT INTO sensor_latest (sensor_id, seq, ts, received_at, gateway, status,"
        " temperature_c) VALUES (%(s)s, %(seq)s, %(ts)s, %(ts)s, 'gw-1', 'ok', %(t)s)"
        " ON CONFLICT (sensor_id) DO UPDATE SET seq = excluded.seq, ts = excluded.ts,"
        " received_at = excluded.received_at, temperature_c = excluded.temperature_c",
        {"s": sensor, "seq": seq, "ts": ts, "t": temp},
    )


def _built(builder: LiveBuilder, db_url: str, site: str | None, now: Any) -> dict[str, Any]:
    with psycopg.connect(db_url, autocommit=True) as c:
        doc: dict[str, Any] = json.loads(builder.build(c, site, now))
        return doc


def _same_as_from_nothing(
    builder: LiveBuilder, db_url: str, now: Any, site: str | None = None
) -> int:
    """Builds with ``builder`` and with a new one; asserts both agree; how many sensors the
    kept builder asked the database for."""
    kept = _built(builder, db_url, site, now)
    assert kept == _built(LiveBuilder(builder.stale_after_s), db_url, site, now)
    return builder.asked


def test_each_change_asks_for_the_changed_sensors_only_and_gives_the_full_document(
    conn: Conn, db_url: str
) -> None:
    make_site(conn, PLACED, since=T0 - 60 * M)
    upsert_sensor(conn, "SPARE", "xy-md02", "SN-SPARE")  # placed nowhere
    for sensor in PLACED:
        _reading(conn, sensor, 1, T0 - M)
    builder = LiveBuilder()
    now = T0

    assert _same_as_from_nothing(builder, db_url, now) == 5  # the first build: all of them
    assert _same_as_from_nothing(builder, db_url, now) == 0  # nothing changed

    _reading(conn, "P1", 2, T0, temp=6.5)  # a new reading
    assert _same_as_from_nothing(builder, db_url, now) == 1
    sensors = {s["sensor"]: s for s in _built(builder, db_url, None, now)["sensors"]}
    assert sensors["P1"]["latest"]["temperature_c"] == 6.5

    # The place's name is in each of its sensors' parts.
    upsert_location(conn, Location("CR", "s1", "cold_room", "Cold room A", 2.0, 8.0, area_m2=50))
    assert _same_as_from_nothing(builder, db_url, now) == 3

    assign_sensor(conn, "P2", "TC", T0 - M, position="rear")  # moved
    assert _same_as_from_nothing(builder, db_url, now) == 1

    conn.execute(
        "INSERT INTO excursions (sensor_id, location_id, started_at, start_seq,"
        " limit_min_c, limit_max_c, min_c, max_c) VALUES ('P3', 'CR', %s, 1, 2, 8, 9, 9)",
        (T0 - M,),
    )
    assert _same_as_from_nothing(builder, db_url, now) == 1

    upsert_sensor(conn, "P4", "xy-md02", "SN-P4", calibration_due=date(2026, 11, 23))
    assert _same_as_from_nothing(builder, db_url, now) == 1

    # With time alone, the sensors whose last reading is older than the stale limit (5 min)
    # go offline; P3 stays in its excursion.
    later = T0 + 6 * M
    assert _same_as_from_nothing(builder, db_url, later) == 3
    states = {s["sensor"]: s["state"] for s in _built(builder, db_url, None, later)["sensors"]}
    assert states == {
        "P1": "offline",
        "P2": "offline",
        "P3": "excursion",
        "P4": "offline",
        "SPARE": "unassigned",
    }


def test_a_calibration_falling_due_with_time_alone_asks_for_that_sensor(
    conn: Conn, db_url: str
) -> None:
    make_site(conn, PLACED, since=T0 - 60 * M)
    upsert_sensor(conn, "P4", "xy-md02", "SN-P4", calibration_due=date(2026, 11, 23))
    for sensor in PLACED:
        _reading(conn, sensor, 1, T0 - M)
    builder = LiveBuilder(stale_after_s=7 * 86_400)  # nothing goes offline over these days
    assert _same_as_from_nothing(builder, db_url, T0) == 4
    assert _same_as_from_nothing(builder, db_url, T0 + timedelta(days=1)) == 0  # due today
    day_after = T0 + timedelta(days=2)
    assert _same_as_from_nothing(builder, db_url, day_after) == 1
    sensors = {s["sensor"]: s for s in _built(builder, db_url, None, day_after)["sensors"]}
    assert sensors["P4"]["calibration_overdue"]
    assert not sensors["P1"]["calibration_overdue"]


def test_a_site_build_shares_the_kept_parts_and_forgets_no_sensor_of_another_site(
    conn: Conn, db_url: str
) -> None:
    make_site(conn, PLACED, since=T0 - 60 * M)
    conn.execute("INSERT INTO sites (id, name) VALUES ('s2', 'Second site')")
    upsert_location(conn, Location("CR2", "s2", "cold_room", "Room two", 2.0, 8.0))
    upsert_sensor(conn, "Q1", "xy-md02", "SN-Q1")
    assign_sensor(conn, "Q1", "CR2", T0 - 60 * M)
    for sensor in (*PLACED, "Q1"):
        _reading(conn, sensor, 1, T0 - M)
    builder = LiveBuilder()

    only_s2 = _built(builder, db_url, "s2", T0)
    assert [s["sensor"] for s in only_s2["sensors"]] == ["Q1"]
    assert _same_as_from_nothing(builder, db_url, T0) == 4  # Q1's part was kept
    assert _same_as_from_nothing(builder, db_url, T0, site="s1") == 0
    assert _same_as_from_nothing(builder, db_url, T0, site="s2") == 0


def test_builds_on_several_threads_at_once_each_give_the_full_document(
    conn: Conn, db_url: str
) -> None:
    sensors = {f"P{i:02d}": "CR" for i in range(40)}
    make_site(conn, sensors, since=T0 - 60 * M)
    for n, sensor in enumerate(sensors):
        _reading(conn, sensor, 1, T0 - M, temp=float(n % 9))
    builder = LiveBuilder()
    expected = _built(LiveBuilder(), db_url, None, T0)
    docs: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            for _ in range(5):
                docs.append(_built(builder, db_url, None, T0))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(docs) == 20
    assert all(doc == expected for doc in docs)


def test_each_place_shows_the_range_and_alarm_delay_the_rules_judge_by_now(
    conn: Conn, db_url: str
) -> None:
    make_erp(conn)  # CR and TC 2-8 °C; the 2-8 profile alarms after 300 s
    conn.execute("UPDATE temperature_profiles SET temp_min_c = 3.0, alarm_delay_s = 600")

    def places() -> dict[str, Any]:
        doc = _built(LiveBuilder(), db_url, None, T0)
        compartments = {c["id"]: c for v in doc["vehicles"] for c in v["compartments"]}
        return {
            p["id"]: (p["alarm_delay_s"], p["effective"], compartments.get(p["id"], p)["effective"])
            for p in doc["locations"]
        }

    empty = {"temp_min_c": 2.0, "temp_max_c": 8.0, "alarm_delay_s": 0, "profiles": []}
    # Nothing stored, no delay of its own: a reading out of range is an excursion at once.
    assert places()["CR"] == (None, empty, empty)
    lot = register_lot(conn, "logi1", GTIN, "A-1").id
    record_movement(conn, "logi1", lot, "receiving", 10, T0 - 60 * M, to_location="CR")
    stored = {"temp_min_c": 3.0, "temp_max_c": 8.0, "alarm_delay_s": 600, "profiles": ["2-8"]}
    # The product's delay applies and its range narrows the room's; the truck is untouched.
    assert places()["CR"] == (None, stored, stored)
    assert places()["TC"][1] == empty
    # A delay of the room's own applies where it is the shorter one.
    conn.execute("UPDATE locations SET alarm_delay_s = 120 WHERE id IN ('CR', 'TC')")
    assert places()["CR"][1]["alarm_delay_s"] == 120
    assert places()["TC"][1]["alarm_delay_s"] == 120
    assert places()["TC"][2]["alarm_delay_s"] == 120  # as a vehicle's compartment too
    conn.execute("UPDATE locations SET alarm_delay_s = 3600 WHERE id = 'CR'")
    assert places()["CR"][1]["alarm_delay_s"] == 600
