"""A refrigerated vehicle's journey: two compartments, four probes, a GNSS unit and two door
contacts on its RS-485 bus (RTU over a pty pair), its cellular link through a relay that loses
the network, and every event of the timeline seen where it should be, on real Mosquitto and
PostgreSQL, down to the API's live view of the vehicle."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coldtrail.clock import ManualClock
from coldtrail.edge.agent import EdgeAgent
from coldtrail.edge.config import DeviceConfig, EdgeConfig
from coldtrail.erp.masterdata import Location, assign_sensor, upsert_location, upsert_sensor
from coldtrail.messages import ReadingStatus
from coldtrail.mqtt import MqttOptions
from coldtrail.rules.engine import RulesEngine
from coldtrail.settings import MqttEndpoint
from coldtrail.sim.modbus_server import ModbusRtuSimServer
from coldtrail.sim.netcut import TcpRelay
from coldtrail.sim.serial_line import PtyNullModem
from coldtrail.sim.vehicle import Compartment, Event, SimulatedVehicle, parse_event
from tests.conftest import (
    MQTT_URL,
    T0,
    RunningIngest,
    api_client,
    async_wait_for,
    count_readings,
    ingest_worker,
    make_site,
    publishing,
    token,
)

Conn = psycopg.Connection[tuple[Any, ...]]

STEP_S = 60
JOURNEY_S = 4200
EVENTS = (
    parse_event("door-opening@600+120:chilled"),
    parse_event("compressor-failure@1200+900:frozen"),
    parse_event("network-outage@1800+1200"),  # 20 minutes without a link
    parse_event("power-loss@2400+600"),
    parse_event("sensor-unplugged@3300+300:chilled-2"),
)


def _vehicle(clock: ManualClock) -> SimulatedVehicle:
    return SimulatedVehicle(
        "TRK-7",
        (Compartment("chilled", 5.0), Compartment("frozen", -20.0, humidity_pct=40.0)),
        clock.now(),
        events=EVENTS,
    )


def test_vehicle_physics_follow_the_timeline(clock: ManualClock) -> None:
    v = _vehicle(clock)
    chilled, frozen = v.compartments
    assert v.air_temperature(chilled, 590) == pytest.approx(5.0)
    assert v.air_temperature(chilled, 720) > 10.0  # two minutes with the door open
    assert v.air_temperature(chilled, 1190) < v.air_temperature(chilled, 720)  # recovering
    assert v.air_temperature(frozen, 1190) == pytest.approx(-20.0, abs=0.01)  # its door stayed shut
    assert v.air_temperature(frozen, 2100) > -10.0  # 15 minutes without its compressor
    assert 5.0 < v.air_temperature(chilled, 2100) < 6.0  # back in range, still settling
    assert not v.powered(2400)
    assert v.powered(3000)
    assert [p.name for p in v.probes] == ["chilled-1", "chilled-2", "frozen-1", "frozen-2"]
    moving, parked = v.position(clock.now() + timedelta(seconds=300)), None
    assert moving.speed_kmh == 60.0
    parked = v.position(clock.now() + timedelta(seconds=2500))
    assert parked.speed_kmh == 0.0
    later = v.position(clock.now() + timedelta(seconds=2900))
    assert (later.lat, later.lon) == (parked.lat, parked.lon)  # no power, no driving
    journal = v.journal(clock.now(), clock.now() + timedelta(seconds=JOURNEY_S))
    assert [(j["event"], j["state"]) for j in journal][:2] == [
        ("door-opening", "start"),
        ("door-opening", "end"),
    ]
    with pytest.raises(ValueError, match="known"):
        SimulatedVehicle(
            "X", (Compartment("a", 5.0),), clock.now(), (Event("door-opening", 1, 1, "b"),)
        )
    with pytest.raises(ValueError, match="unknown vehicle event"):
        parse_event("meteor@1+1")


async def test_vehicle_journey_every_reading_arrives_and_each_event_shows_where_it_should(
    conn: Conn,
    db_url: str,
    mqtt_options: MqttOptions,
    topic_root: str,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    vehicle = _vehicle(clock)
    sensors = {p.name: f"V-{p.name.upper()}" for p in vehicle.probes}
    make_site(conn, {s: "TC" for s in sensors.values()})
    # The vehicle's other devices: its GNSS unit, and a door contact on the chilled
    # compartment (TC) and on the frozen one (TF).
    upsert_location(
        conn, Location("TF", "s1", "compartment", "Truck rear", -25.0, -15.0, parent_id="TRK")
    )
    upsert_sensor(conn, "V-GPS", "gnss-modbus", "IMEI-1", kind="position")
    assign_sensor(conn, "V-GPS", "TRK", T0 - timedelta(days=1))
    doors = {"chilled": ("V-DOOR-C", "TC"), "frozen": ("V-DOOR-F", "TF")}
    for sensor, place in doors.values():
        upsert_sensor(conn, sensor, "door-contact", f"SN-{sensor}", kind="door")
        assign_sensor(conn, sensor, place, T0 - timedelta(days=1), "rear door")
    conn.commit()
    devices = [
        *((sensors[p.name], "xy-md02", p.unit) for p in vehicle.probes),
        ("V-GPS", "gnss-modbus", vehicle.telematics.unit),
        *((doors[d.compartment][0], "door-contact", d.unit) for d in vehicle.doors),
    ]
    broker = MqttEndpoint.parse(MQTT_URL)
    async with (
        PtyNullModem() as line,
        ModbusRtuSimServer(vehicle.devices(), clock, line),
        TcpRelay(broker.host, broker.port) as relay,
    ):
        config = EdgeConfig(
            site="s1",
            gateway="gw-trk7",
            location_kind="transport",
            state_dir=tmp_path / "edge",
            publish_interval_s=0.05,
            devices=tuple(
                DeviceConfig(
                    sensor=sensor,
                    source="modbus-rtu",
                    model=model,
                    serial_port=line.host_port,
                    unit=unit,
                    timeout_s=0.2,
                    poll_interval_s=STEP_S,
                )
                for sensor, model, unit in devices
            ),
        )
        via_relay = MqttOptions(
            endpoint=MqttEndpoint.parse(f"mqtt://127.0.0.1:{relay.port}"), protocol="5"
        )
        agent = EdgeAgent(config, via_relay, topic_root, clock)
        with RunningIngest(ingest_worker(db_url, mqtt_options, topic_root)):
            backlog = 0
            async with publishing(agent, f"edge-{topic_root}"):
                for _ in range(JOURNEY_S // STEP_S):
                    link = vehicle.network_up(vehicle.elapsed(clock.now()))
                    if link and not relay.up:
                        backlog = len(agent.queue)  # what the outage held back
                    relay.set_up(link)
                    for coordinator in agent.coordinators:
                        await coordinator.poll_once()
                    agent.publisher.wake()
                    clock.advance(STEP_S)
                relay.set_up(True)
                total = len(devices) * (JOURNEY_S // STEP_S)
                await async_wait_for(lambda: len(agent.queue) == 0, limit_s=30, what="backlog")
                await async_wait_for(lambda: count_readings(conn) == total, what="all stored")
    assert relay.outages == 1
    assert backlog >= len(devices) * 1200 // STEP_S - 1  # held on the edge, then sent

    rows = conn.execute(
        "SELECT sensor_id, seq, ts, status::text, temperature_c FROM readings"
        " WHERE sensor_id = ANY(%s) ORDER BY sensor_id, seq",
        (list(sensors.values()),),
    ).fetchall()
    by_sensor = {s: list(g) for s, g in itertools.groupby(rows, key=lambda r: r[0])}
    assert len(by_sensor) == 4
    for readings in by_sensor.values():
        assert [r[1] for r in readings] == list(range(1, len(readings) + 1))  # no gap in seq
        assert len(readings) == JOURNEY_S // STEP_S

    def at(sensor: str, t: int) -> tuple[str, float | None]:
        row = by_sensor[sensors[sensor]][t // STEP_S]
        assert row[2] == vehicle.started_at + timedelta(seconds=t)
        return row[3], row[4]

    def temp(sensor: str, t: int) -> float:
        status, value = at(sensor, t)
        assert status == ReadingStatus.OK.value
        assert value is not None
        return float(value)

    assert temp("chilled-1", 540) == pytest.approx(4.85, abs=0.06)  # before the door opens
    assert temp("chilled-1", 720) > 10.0  # the door was open two minutes
    assert temp("frozen-1", 720) < -19.0  # not its door
    assert temp("frozen-2", 2100) > -10.0  # its compressor failed at 1200 s
    assert 5.0 < temp("chilled-2", 2100) < 7.0
    # The network outage (1800-3000 s) lost nothing: those readings are all ok and stored.
    assert all(at(p, t)[0] == ReadingStatus.OK.value for p in sensors for t in (1800, 2340))
    # No power (2400-3000 s): every probe is silent, and the record says so.
    for probe in sensors:
        for t in range(2400, 3000, STEP_S):
            assert at(probe, t) == (ReadingStatus.UNAVAILABLE.value, None)
        assert at(probe, 3000)[0] == ReadingStatus.OK.value
    # One probe unplugged (3300-3600 s): only that one.
    assert at("chilled-2", 3300) == (ReadingStatus.UNAVAILABLE.value, None)
    assert at("chilled-1", 3300)[0] == ReadingStatus.OK.value

    # The chilled door was open 600-720 s, the frozen one never; no power, no state.
    door: dict[int, bool | None] = dict(
        conn.execute(
            "SELECT extract(epoch FROM ts - %s)::int, door_open FROM readings"
            " WHERE sensor_id = 'V-DOOR-C'",
            (vehicle.started_at,),
        ).fetchall()
    )
    assert [t for t, is_open in door.items() if is_open] == [600, 660]
    assert all(door[t] is None for t in range(2400, 3000, STEP_S))
    assert not conn.execute(
        "SELECT count(*) FILTER (WHERE door_open) FROM readings WHERE sensor_id = 'V-DOOR-F'"
    ).fetchone()[0]  # type: ignore[index]
    # The track: each fix where the vehicle was then, standing still without power.
    track = conn.execute(
        "SELECT ts, latitude, longitude, speed_kmh, status::text FROM readings"
        " WHERE sensor_id = 'V-GPS' ORDER BY ts"
    ).fetchall()
    assert len(track) == JOURNEY_S // STEP_S
    for ts, lat, lon, speed, status in track:
        if not vehicle.powered(vehicle.elapsed(ts)):
            assert (status, lat, lon, speed) == ("unavailable", None, None, None)
            continue
        fix = vehicle.position(ts)
        assert (lat, lon, speed) == (
            pytest.approx(fix.lat, abs=1e-7),
            pytest.approx(fix.lon, abs=1e-7),
            fix.speed_kmh,
        )

    # The rules judge the probes only: position and door readings hold no temperature, and
    # are neither excursions nor gaps.
    with psycopg.connect(db_url) as rules_conn:
        RulesEngine(db_url).process_pending(rules_conn)
    judged = conn.execute("SELECT DISTINCT sensor_id FROM excursions ORDER BY 1").fetchall()
    assert {r[0] for r in judged} <= set(sensors.values())
    assert conn.execute(
        "SELECT count(*) FROM alarms WHERE sensor_id IN ('V-GPS', 'V-DOOR-C', 'V-DOOR-F')"
    ).fetchone() == (0,)

    # The live view: the vehicle where the last fix put it, both doors shut.
    with api_client(db_url, clock) as client:
        live = client.get("/api/v1/live", headers=token(client, "admin", "admin-password-123"))
    assert live.status_code == 200, live.text
    (truck,) = live.json()["vehicles"]
    last = vehicle.position(track[-1][0])
    assert truck["position"]["sensor"] == "V-GPS"
    assert truck["position"]["latitude"] == pytest.approx(last.lat, abs=1e-7)
    assert [(c["id"], [d["open"] for d in c["doors"]]) for c in truck["compartments"]] == [
        ("TC", [False]),
        ("TF", [False]),
    ]


def test_sim_vehicle_command_refuses_an_unknown_event() -> None:
    from tests.test_cli import _run

    done = _run("sim", "vehicle", "--event", "meteor@10+5")
    assert done.returncode == 2
    assert "unknown vehicle event" in done.stderr
