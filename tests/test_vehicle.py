"""A refrigerated vehicle's journey: two compartments, four probes on its RS-485 bus (RTU over
a pty pair), its cellular link through a relay that loses the network, and every event of the
timeline seen where it should be, on real Mosquitto and PostgreSQL."""

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
from coldtrail.messages import ReadingStatus
from coldtrail.mqtt import MqttOptions
from coldtrail.settings import MqttEndpoint
from coldtrail.sim.modbus_server import ModbusRtuSimServer
from coldtrail.sim.netcut import TcpRelay
from coldtrail.sim.serial_line import PtyNullModem
from coldtrail.sim.vehicle import Compartment, Event, SimulatedVehicle, parse_event
from tests.conftest import (
    MQTT_URL,
    RunningIngest,
    async_wait_for,
    count_readings,
    ingest_worker,
    make_site,
    publishing,
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
    broker = MqttEndpoint.parse(MQTT_URL)
    async with (
        PtyNullModem() as line,
        ModbusRtuSimServer(vehicle.probes, clock, line),
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
                    sensor=sensors[p.name],
                    source="modbus-rtu",
                    model="xy-md02",
                    serial_port=line.host_port,
                    unit=p.unit,
                    timeout_s=0.2,
                    poll_interval_s=STEP_S,
                )
                for p in vehicle.probes
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
                total = len(vehicle.probes) * (JOURNEY_S // STEP_S)
                await async_wait_for(lambda: len(agent.queue) == 0, limit_s=30, what="backlog")
                await async_wait_for(lambda: count_readings(conn) == total, what="all stored")
    assert relay.outages == 1
    assert backlog >= len(vehicle.probes) * 1200 // STEP_S - 1  # held on the edge, then sent

    rows = conn.execute(
        "SELECT sensor_id, seq, ts, status::text, temperature_c FROM readings"
        " ORDER BY sensor_id, seq"
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


def test_sim_vehicle_command_refuses_an_unknown_event() -> None:
    from tests.test_cli import _run

    done = _run("sim", "vehicle", "--event", "meteor@10+5")
    assert done.returncode == 2
    assert "unknown vehicle event" in done.stderr
