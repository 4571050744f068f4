"""BLE loggers: each format's documented examples through the real decoders, the simulator's
adverts through the edge's BLE path, and on to PostgreSQL over real MQTT."""

from __future__ import annotations

import asyncio
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coldtrail.clock import ManualClock
from coldtrail.edge.agent import EdgeAgent
from coldtrail.edge.ble.advert import BTHOME_UUID, Advert, UndecodableAdvert
from coldtrail.edge.ble.decode import DecoderOptions, create_decoder, decode_hex
from coldtrail.edge.ble.scanner import ReplayScanner
from coldtrail.edge.config import DeviceConfig, EdgeConfig
from coldtrail.edge.coordinator import DeviceState
from coldtrail.edge.sources.ble import BleHub
from coldtrail.messages import ReadingStatus
from coldtrail.mqtt import MqttOptions
from coldtrail.sim.ble import (
    SimFormat,
    SimulatedAirwaves,
    SimulatedBleLogger,
    advert_to_json,
    bthome_service_data,
)
from coldtrail.sim.scenarios import Steady
from tests.conftest import (
    RunningIngest,
    async_wait_for,
    count_readings,
    ingest_worker,
    make_site,
    publishing,
)
from tests.test_cli import _run

FIXTURES = Path(__file__).parent / "fixtures" / "ble"
Conn = psycopg.Connection[tuple[Any, ...]]


def _cases(kind: str) -> list[Any]:
    cases = []
    for path in sorted(FIXTURES.glob("*.toml")):
        doc = tomllib.loads(path.read_text())
        cases += [
            pytest.param(path.stem, case, id=f"{path.stem}: {case['name']}")
            for case in doc.get(kind, [])
        ]
    return cases


@pytest.mark.parametrize(("fmt", "case"), _cases("example"))
def test_documented_example_decodes_to_its_values(fmt: str, case: dict[str, Any]) -> None:
    # Decoded twice: as the bare payload (format guessed) and with the format named.
    for given in (None, fmt):
        decoded = decode_hex(case["hex"], given).as_json()
        for key, want in case["expect"].items():
            if isinstance(want, str):
                assert decoded[key] == want
            else:
                # ruuvitag-ble rounds to 0.01: its documented 163.835 arrives as 163.84.
                assert decoded[key] == pytest.approx(want, abs=0.0051), key
        for key in case.get("not_available", []):
            assert key in decoded
            assert decoded[key] is None, key
        for key in case.get("absent", []):
            assert key not in decoded


@pytest.mark.parametrize(("fmt", "case"), _cases("refused"))
def test_undecodable_payload_is_refused_with_its_reason(fmt: str, case: dict[str, Any]) -> None:
    with pytest.raises(UndecodableAdvert, match=case["reason"]):
        decode_hex(case["hex"])


def test_bare_payload_two_formats_read_is_refused_as_ambiguous() -> None:
    # 13 bytes that are both a BTHome v2 advert (0x40 ...) and an atc1441 frame.
    payload = "40" + "02ca09" + "03bf13" + "0164" + "0005" + "2e23"
    with pytest.raises(UndecodableAdvert, match="ambiguous"):
        decode_hex(payload)
    assert decode_hex(payload, "bthome").values["temperature_c"] == 25.06


def test_decode_ble_command_prints_the_contract_keys() -> None:
    done = _run(
        "decode", "ble", "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F", "--rssi", "-71"
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["format"] == "ruuvi"
    assert doc["temperature_c"] == 24.3
    assert doc["pressure_pa"] == 100044
    assert doc["rssi_dbm"] == -71
    assert doc["mac"] == "CB:B8:33:4C:88:4F"
    refused = _run("decode", "ble", "not-hex")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "not a hex string" in refused.stderr


def test_encrypted_bthome_decodes_only_with_its_bindkey() -> None:
    key = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
    mac = "54:48:E6:8F:80:A5"
    data = bthome_service_data(4.37, 61.2, 80, 12, bindkey=key, mac=mac, counter=7)
    advert = Advert(mac=mac, service_data={BTHOME_UUID: data})
    decoded = create_decoder("bthome", DecoderOptions(bindkey=key)).decode(advert)
    assert decoded.values["temperature_c"] == 4.37
    assert decoded.values["humidity_pct"] == 61.2
    with pytest.raises(UndecodableAdvert, match="bindkey"):
        create_decoder("bthome").decode(advert)
    wrong = bytes(16)
    with pytest.raises(UndecodableAdvert):
        create_decoder("bthome", DecoderOptions(bindkey=wrong)).decode(advert)
    done = _run("decode", "ble", "d2fc" + data.hex(), "--mac", mac, "--bindkey", key.hex())
    assert json.loads(done.stdout)["temperature_c"] == 4.37


@pytest.mark.parametrize("fmt", ["bthome", "ruuvi", "atc1441", "pvvx"])
def test_simulated_logger_adverts_decode_to_the_scenario(clock: ManualClock, fmt: str) -> None:
    scenario = Steady(base_c=-18.5, humidity_pct=35.0, noise_c=0.0)
    logger = SimulatedBleLogger("a4:c1:38:01:02:03", fmt, scenario, clock.now())  # type: ignore[arg-type]
    advert = logger.advert_at(clock.now())
    assert advert is not None
    decoder = create_decoder("atc" if fmt in ("atc1441", "pvvx") else fmt)
    decoded = decoder.decode(advert)
    want = scenario.sample(0)
    step = {"atc1441": 0.1}.get(fmt, 0.01)
    assert decoded.values["temperature_c"] == pytest.approx(want.temperature_c, abs=step / 2)
    assert decoded.values["humidity_pct"] == pytest.approx(
        want.humidity_pct, abs=1.0 if fmt == "atc1441" else 0.01
    )
    assert decoded.format == ("bthome" if fmt == "bthome" else "ruuvi" if fmt == "ruuvi" else fmt)


def _ble_config(tmp_path: Path, *devices: DeviceConfig) -> EdgeConfig:
    return EdgeConfig(
        site="s1",
        gateway="gw-ble",
        location_kind="transport",
        state_dir=tmp_path,
        publish_interval_s=0.05,
        devices=devices,
    )


async def test_ble_loggers_reach_the_database_with_status_for_unplugged_and_silent(
    conn: Conn,
    db_url: str,
    mqtt_options: MqttOptions,
    topic_root: str,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    sensors: dict[str, tuple[SimFormat, str, str]] = {
        "B-BTH": ("bthome", "bthome", "A4:C1:38:00:00:01"),
        "B-RUU": ("ruuvi", "ruuvitag", "CB:B8:33:00:00:02"),
        "B-ATC": ("atc1441", "lywsd03mmc-atc", "A4:C1:38:00:00:03"),
        "B-PVX": ("pvvx", "lywsd03mmc-atc", "A4:C1:38:00:00:04"),
        "B-UNP": ("ruuvi", "ruuvitag", "CB:B8:33:00:00:05"),
        "B-SIL": ("bthome", "bthome", "A4:C1:38:00:00:06"),
    }
    make_site(conn, {s: "TC" for s in sensors})
    loggers = {
        sensor: SimulatedBleLogger(
            mac,
            fmt,
            Steady(base_c=4.0 + i, noise_c=0.0),
            clock.now(),
            measure_every_s=10,
        )
        for i, (sensor, (fmt, _, mac)) in enumerate(sensors.items())
    }
    loggers["B-UNP"].unplugged = True
    loggers["B-SIL"].silent = True
    # A stranger's logger next door: heard, and ignored.
    stranger = SimulatedBleLogger("A4:C1:38:99:99:99", "bthome", Steady(), clock.now())
    airwaves = SimulatedAirwaves([*loggers.values(), stranger], clock)
    config = _ble_config(
        tmp_path,
        *(
            DeviceConfig(
                sensor=s,
                source="ble",
                model=model,
                mac=mac.lower(),
                poll_interval_s=60,
                timeout_s=0.05,  # how long a read waits for a logger never heard yet
            )
            for s, (_, model, mac) in sensors.items()
        ),
    )
    agent = EdgeAgent(config, mqtt_options, topic_root, clock, ble_scanner=airwaves)
    hub = agent.sources.resource("ble")
    assert isinstance(hub, BleHub)
    with RunningIngest(ingest_worker(db_url, mqtt_options, topic_root)):
        async with publishing(agent, f"edge-{topic_root}"):
            for _ in range(3):
                airwaves.broadcast(hub.feed)
                for coordinator in agent.coordinators:
                    await coordinator.poll_once()
                clock.advance(60)
            agent.publisher.wake()
            await async_wait_for(lambda: count_readings(conn) == 18, what="18 readings stored")
    states = {c.device.sensor: c.state for c in agent.coordinators}
    assert states["B-SIL"] is DeviceState.UNAVAILABLE
    assert states["B-UNP"] is DeviceState.OK  # it answers, with its not-available codes
    rows = conn.execute(
        "SELECT sensor_id, status::text, temperature_c, humidity_pct, battery_pct"
        " FROM readings WHERE seq = (SELECT min(seq) FROM readings r2"
        " WHERE r2.sensor_id = readings.sensor_id)"
    ).fetchall()
    by_sensor = {r[0]: r[1:] for r in rows}
    assert by_sensor["B-BTH"][:2] == ("ok", 4.0)
    assert by_sensor["B-BTH"][3] == 87.0
    assert by_sensor["B-RUU"][:2] == ("ok", 5.0)
    assert by_sensor["B-RUU"][3] is None  # Ruuvi sends volts, not a percentage
    assert by_sensor["B-ATC"][:2] == ("ok", 6.0)
    assert by_sensor["B-PVX"][:2] == ("ok", 7.0)
    assert by_sensor["B-UNP"] == (ReadingStatus.NOT_AVAILABLE.value, None, None, None)
    assert by_sensor["B-SIL"] == (ReadingStatus.UNAVAILABLE.value, None, None, None)


async def test_ble_logger_not_heard_for_stale_after_s_is_unavailable(
    clock: ManualClock, tmp_path: Path, mqtt_options: MqttOptions, topic_root: str
) -> None:
    logger = SimulatedBleLogger("A4:C1:38:00:00:01", "pvvx", Steady(noise_c=0.0), clock.now())
    airwaves = SimulatedAirwaves([logger], clock)
    device = DeviceConfig(
        sensor="B1", source="ble", model="lywsd03mmc-atc", mac=logger.mac, stale_after_s=90
    )
    agent = EdgeAgent(
        _ble_config(tmp_path, device), mqtt_options, topic_root, clock, ble_scanner=airwaves
    )
    hub = agent.sources.resource("ble")
    coordinator = agent.coordinators[0]
    airwaves.broadcast(hub.feed)
    assert (await coordinator.poll_once()).status is ReadingStatus.OK
    clock.advance(90)
    assert (await coordinator.poll_once()).status is ReadingStatus.OK  # 90 s old: still fresh
    clock.advance(1)
    assert (await coordinator.poll_once()).status is ReadingStatus.UNAVAILABLE
    airwaves.broadcast(hub.feed)
    assert (await coordinator.poll_once()).status is ReadingStatus.OK
    agent.close()


async def test_replay_scanner_feeds_advert_lines_from_a_fifo(
    clock: ManualClock, tmp_path: Path
) -> None:
    fifo = tmp_path / "adverts"
    os.mkfifo(fifo)
    logger = SimulatedBleLogger(
        "CB:B8:33:4C:88:4F", "ruuvi", Steady(base_c=3.3, noise_c=0.0), clock.now()
    )
    heard: list[Advert] = []
    stop = asyncio.Event()
    scanner = ReplayScanner(fifo, clock)
    task = asyncio.create_task(scanner.run(heard.append, stop))

    def write() -> None:
        with fifo.open("w") as f:
            advert = logger.advert_at(clock.now())
            assert advert is not None
            f.write("this is not an advert\n")
            f.write(advert_to_json(advert, clock.now()) + "\n")

    await asyncio.to_thread(write)
    await async_wait_for(lambda: len(heard) == 1, what="the advert line read")
    stop.set()
    await task
    decoded = create_decoder("ruuvi").decode(heard[0])
    assert decoded.values["temperature_c"] == 3.3
    assert decoded.mac == "CB:B8:33:4C:88:4F"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"source": "ble", "model": "ruuvitag"}, "needs mac"),
        ({"source": "ble", "model": "ruuvitag", "mac": "CB:B8:33"}, "not a MAC"),
        (
            {"source": "ble", "model": "bthome", "mac": "CB:B8:33:4C:88:4F", "bindkey": "abc"},
            "bindkey",
        ),
        ({"source": "modbus-rtu", "model": "xy-md02"}, "needs serial_port"),
    ],
)
def test_device_config_refuses_incomplete_transport(fields: dict[str, Any], message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        DeviceConfig(sensor="S1", **fields)


async def test_value_no_reading_can_carry_is_recorded_as_not_available(
    clock: ManualClock, tmp_path: Path, mqtt_options: MqttOptions, topic_root: str
) -> None:
    # BTHome has no not-available code: a broken probe can send the coldest s16, -327.68 °C.
    logger = SimulatedBleLogger("A4:C1:38:00:00:01", "bthome", Steady(noise_c=0.0), clock.now())
    device = DeviceConfig(sensor="B1", source="ble", model="bthome", mac=logger.mac)
    agent = EdgeAgent(
        _ble_config(tmp_path, device), mqtt_options, topic_root, clock, ble_scanner=None
    )
    hub = agent.sources.resource("ble")
    broken = bthome_service_data(-327.68, 50.0, 80, 1)
    hub.feed(Advert(mac=logger.mac, service_data={BTHOME_UUID: broken}, received=clock.monotonic()))
    reading = await agent.coordinators[0].poll_once()
    assert reading.status is ReadingStatus.NOT_AVAILABLE
    assert reading.temperature_c is None
    assert reading.humidity_pct == 50.0  # the rest of the reading is kept
    agent.close()


def test_sim_ble_command_streams_adverts_the_edge_decodes() -> None:
    from coldtrail.edge.ble.scanner import advert_from_json

    done = _run(
        "sim", "ble", "--count", "1", "--interval", "0.01",
        "--device", "A4:C1:38:00:00:01:pvvx:steady:base_c=-18",
        "--device", "CB:B8:33:4C:88:4F:ruuvi:steady",
        "--device", "A4:C1:38:00:00:02:bthome:drift",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    formats = {"A4:C1:38:00:00:01": "atc", "CB:B8:33:4C:88:4F": "ruuvi"}
    for line in lines:
        advert = advert_from_json(line, 0.0)
        decoded = create_decoder(formats.get(advert.mac or "", "bthome")).decode(advert)
        assert decoded.values["temperature_c"] is not None
    first = create_decoder("atc").decode(advert_from_json(lines[0], 0.0))
    assert first.values["temperature_c"] == pytest.approx(-18.0, abs=0.15)
    bad = _run("sim", "ble", "--device", "A4:C1:38:00:00:01:eddystone:steady")
    assert bad.returncode == 2
    assert "unknown BLE format" in bad.stderr


async def test_first_read_after_start_waits_for_the_loggers_first_advert(
    clock: ManualClock, tmp_path: Path, mqtt_options: MqttOptions, topic_root: str
) -> None:
    logger = SimulatedBleLogger("A4:C1:38:00:00:01", "atc1441", Steady(noise_c=0.0), clock.now())
    device = DeviceConfig(
        sensor="B1", source="ble", model="lywsd03mmc-atc", mac=logger.mac, timeout_s=5
    )
    agent = EdgeAgent(_ble_config(tmp_path, device), mqtt_options, topic_root, clock)
    hub = agent.sources.resource("ble")
    loop = asyncio.get_running_loop()
    advert = logger.advert_at(clock.now(), clock.monotonic())
    assert advert is not None
    loop.call_soon(hub.feed, advert)  # heard just after the read began
    reading = await agent.coordinators[0].poll_once()
    assert reading.status is ReadingStatus.OK
    assert reading.temperature_c == 5.0
    agent.close()
