"""The walking skeleton: simulated XY-MD02 -> Modbus TCP -> edge -> Mosquitto -> ingest ->
PostgreSQL -> rules -> API, all real, with the clock driven by the test."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from coldtrail.clock import ManualClock
from coldtrail.edge.agent import EdgeAgent
from coldtrail.edge.config import DeviceConfig, EdgeConfig
from coldtrail.mqtt import MqttOptions
from coldtrail.rules.engine import RulesEngine
from coldtrail.sim.modbus_server import ModbusSimServer
from coldtrail.sim.scenarios import CompressorFailure
from coldtrail.sim.xymd02 import SimulatedXYMD02
from tests.conftest import (
    T0,
    RunningIngest,
    api_client,
    async_wait_for,
    count_readings,
    ingest_worker,
    make_site,
    publishing,
    token,
    wait_for,
)

Conn = psycopg.Connection[tuple[Any, ...]]


async def test_reading_travels_from_logger_to_live_view_and_opens_then_closes_an_excursion(
    conn: Conn,
    db_url: str,
    mqtt_options: MqttOptions,
    topic_root: str,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    make_site(conn, {"S-TC-1": "TC"})
    # Cooling fails at 60 s; the compartment reads 8.6 °C at 120 s (out of 2-8 °C), peaks
    # near 16 °C at 300 s when cooling restarts, and is back at 6.5 °C at 360 s.
    scenario = CompressorFailure(
        base_c=5.0, ambient_c=25.0, fail_at_s=60, warm_tau_s=300, recover_at_s=300, cool_tau_s=30
    )
    device = SimulatedXYMD02(1, scenario, clock.now())
    async with ModbusSimServer([device], clock) as server:
        config = EdgeConfig(
            site="s1",
            gateway="gw-t",
            location_kind="transport",
            state_dir=tmp_path,
            publish_interval_s=0.05,
            devices=(
                DeviceConfig(
                    sensor="S-TC-1", model="xy-md02", port=server.port, unit=1, poll_interval_s=60
                ),
            ),
        )
        agent = EdgeAgent(config, mqtt_options, topic_root, clock)
        worker = ingest_worker(db_url, mqtt_options, topic_root)
        rules = RulesEngine(db_url)
        rules_stop = threading.Event()
        rules_thread = threading.Thread(target=rules.run, args=(rules_stop,))
        with RunningIngest(worker):
            rules_thread.start()
            async with publishing(agent, f"edge-{topic_root}"):
                for _ in range(9):  # 0, 60, ..., 480 s
                    await agent.coordinators[0].poll_once()
                    clock.advance(60)
                agent.publisher.wake()
                await async_wait_for(lambda: len(agent.queue) == 0, what="PUBACK of all")
                await async_wait_for(lambda: count_readings(conn) == 9, what="9 readings stored")
            wait_for(
                lambda: conn.execute(
                    "SELECT 1 FROM excursions WHERE ended_at IS NOT NULL"
                ).fetchone(),
                what="rules to close the excursion",
            )
            rules_stop.set()
            rules_thread.join(10)

    excursions = conn.execute(
        "SELECT sensor_id, location_id, started_at, start_seq, ended_at, end_seq, min_c, max_c "
        "FROM excursions"
    ).fetchall()
    assert len(excursions) == 1
    sensor, location, started, start_seq, ended, end_seq, lo, hi = excursions[0]
    assert (sensor, location) == ("S-TC-1", "TC")
    assert (started, start_seq) == (T0 + timedelta(seconds=120), 3)
    assert (ended, end_seq) == (T0 + timedelta(seconds=360), 7)
    assert lo == 8.6
    assert 15.5 < hi < 16.5
    # Both ends of the excursion went into the outbox with the change, timed by measurement.
    events = conn.execute(
        "SELECT kind, subject, occurred_at, payload->'sensors'->>0 FROM outbox_events"
        " WHERE kind LIKE 'excursion.%' ORDER BY id"
    ).fetchall()
    assert events == [
        ("excursion.opened", "location/TC", started, "S-TC-1"),
        ("excursion.closed", "location/TC", ended, "S-TC-1"),
    ]

    with api_client(db_url, clock) as client:
        headers = token(client, "admin", "admin-password-123")
        live = client.get("/api/v1/live", headers=headers)
        assert live.status_code == 200
        [entry] = live.json()["sensors"]
        assert entry["sensor"] == "S-TC-1"
        assert entry["location"]["id"] == "TC"
        assert entry["location"]["site_id"] == "s1"
        assert entry["latest"]["seq"] == 9
        assert entry["latest"]["ts"].startswith("2026-11-22T10:08:00")
        assert entry["latest"]["gateway"] == "gw-t"
        assert entry["state"] == "ok"
        listed = client.get("/api/v1/excursions?state=closed", headers=headers).json()
        assert [e["sensor"] for e in listed] == ["S-TC-1"]


async def test_live_view_shows_an_open_excursion_and_a_silent_logger(
    conn: Conn,
    db_url: str,
    mqtt_options: MqttOptions,
    topic_root: str,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    make_site(conn, {"S-HOT": "CR", "S-GONE": "CR"})
    hot = SimulatedXYMD02(
        1, CompressorFailure(fail_at_s=0, warm_tau_s=10, recover_at_s=None), clock.now()
    )
    gone = SimulatedXYMD02(2, CompressorFailure(fail_at_s=1e9), clock.now(), offline=True)
    async with ModbusSimServer([hot, gone], clock) as server:
        config = EdgeConfig(
            site="s1",
            gateway="gw-r",
            state_dir=tmp_path,
            publish_interval_s=0.05,
            devices=tuple(
                DeviceConfig(
                    sensor=s,
                    model="xy-md02",
                    port=server.port,
                    unit=u,
                    poll_interval_s=60,
                    timeout_s=0.5,
                )
                for s, u in (("S-HOT", 1), ("S-GONE", 2))
            ),
        )
        agent = EdgeAgent(config, mqtt_options, topic_root, clock)
        worker = ingest_worker(db_url, mqtt_options, topic_root)
        with RunningIngest(worker):
            async with publishing(agent, f"edge-{topic_root}"):
                clock.advance(60)
                for c in agent.coordinators:
                    await c.poll_once()
                agent.publisher.wake()
                await async_wait_for(lambda: count_readings(conn) == 2, what="2 readings stored")
    with psycopg.connect(db_url) as rules_conn:
        RulesEngine(db_url).process_pending(rules_conn)

    with api_client(db_url, clock) as client:
        headers = token(client, "admin", "admin-password-123")
        sensors = {
            s["sensor"]: s for s in client.get("/api/v1/live", headers=headers).json()["sensors"]
        }
        assert sensors["S-HOT"]["state"] == "excursion"
        assert sensors["S-HOT"]["open_excursion_id"] is not None
        assert sensors["S-GONE"]["state"] == "unavailable"
        assert sensors["S-GONE"]["latest"]["status"] == "unavailable"
        assert sensors["S-GONE"]["latest"]["temperature_c"] is None
        clock.advance(3600)  # nothing heard for an hour
        later = {
            s["sensor"]: s["state"]
            for s in client.get(
                "/api/v1/live", headers=token(client, "admin", "admin-password-123")
            ).json()["sensors"]
        }
        assert later == {"S-HOT": "excursion", "S-GONE": "offline"}
