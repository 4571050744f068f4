"""The XY-MD02 simulator and the edge's Modbus path, over real Modbus TCP."""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from coldtrail.clock import ManualClock
from coldtrail.edge.clockcheck import clock_state, kernel_clock_synced
from coldtrail.edge.config import DeviceConfig
from coldtrail.edge.coordinator import DeviceCoordinator, DeviceState
from coldtrail.edge.profiles import load_profile, shipped_models
from coldtrail.edge.queue import MemoryQueue
from coldtrail.edge.sequence import SequenceStore
from coldtrail.edge.sources import SourceContext, create_source
from coldtrail.errors import ConfigError
from coldtrail.messages import ClockState, Reading, ReadingStatus
from coldtrail.sim.modbus_server import ModbusSimServer
from coldtrail.sim.scenarios import CompressorFailure, Steady, parse_scenario
from coldtrail.sim.xymd02 import REG_TEMP_OFFSET, SimulatedXYMD02
from tests.conftest import T0


async def test_simulator_answers_with_the_datasheet_register_map(clock: ManualClock) -> None:
    device = SimulatedXYMD02(3, Steady(base_c=-18.24, humidity_pct=40.0, noise_c=0), clock.now())
    async with ModbusSimServer([device], clock) as server:
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
        await client.connect()
        try:
            regs = (await client.read_input_registers(1, count=2, device_id=3)).registers
            assert regs[0] == (-182) & 0xFFFF  # signed, x10: -18.2 °C
            assert 380 <= regs[1] <= 420  # 40 %RH x10, with its ripple
            holding = await client.read_holding_registers(0x101, count=2, device_id=3)
            assert holding.registers == [3, 1]  # own address, 9600 baud code
            # The device applies its own offset register, as the real one does.
            await client.write_register(REG_TEMP_OFFSET, 5, device_id=3)
            regs = (await client.read_input_registers(1, count=1, device_id=3)).registers
            assert regs[0] == (-177) & 0xFFFF
            assert (await client.read_input_registers(1, count=2, device_id=9)).isError()
        finally:
            client.close()


def test_scenarios_are_deterministic_and_parseable() -> None:
    failure = parse_scenario("compressor-failure:fail_at_s=10,recover_at_s=none")
    assert isinstance(failure, CompressorFailure)
    assert failure.recover_at_s is None
    assert failure.sample(5).temperature_c == pytest.approx(5.0, abs=0.1)
    assert failure.sample(600).temperature_c > 15.0
    assert failure.sample(600) == failure.sample(600)
    with pytest.raises(ValueError, match="unknown scenario"):
        parse_scenario("meltdown")
    with pytest.raises(ValueError, match="bad parameters"):
        parse_scenario("steady:colour=3")


def test_profile_decodes_signed_and_not_available_values() -> None:
    profile = load_profile("xy-md02")
    assert profile.modbus is not None
    temp, rh = profile.modbus.points
    assert profile.modbus.decode(temp, [0xFF4C]) == pytest.approx(-18.0)
    assert profile.modbus.decode(rh, [555]) == pytest.approx(55.5)
    na = type(temp)(**{**temp.__dict__, "not_available": 0x7FFF})
    assert profile.modbus.decode(na, [0x7FFF]) is None
    assert "xy-md02" in shipped_models()
    with pytest.raises(ConfigError, match="no device profile"):
        load_profile("no-such-logger")


def test_a_site_profile_file_adds_a_model_without_code(tmp_path: Path) -> None:
    (tmp_path / "acme-t1.toml").write_text(
        'model = "acme-t1"\n[modbus]\n[[modbus.points]]\nquantity = "temperature_c"\n'
        'function = 3\naddress = 0x10\ntype = "float32"\n'
    )
    profile = load_profile("acme-t1", (tmp_path,))
    assert profile.modbus is not None
    point = profile.modbus.points[0]
    assert profile.modbus.decode(point, [0x40A0, 0x0000]) == 5.0  # float32 5.0, big-endian


async def test_coordinator_marks_a_silent_device_unavailable_and_logs_once(
    clock: ManualClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    device = SimulatedXYMD02(1, Steady(base_c=4.0, noise_c=0), clock.now())
    async with ModbusSimServer([device], clock) as server, SourceContext(clock) as sources:
        cfg = DeviceConfig(
            sensor="S1",
            model="xy-md02",
            port=server.port,
            unit=1,
            poll_interval_s=10,
            timeout_s=0.5,
        )
        queue = MemoryQueue()
        seq = SequenceStore(tmp_path / "seq.sqlite3")
        coord = DeviceCoordinator(
            cfg, create_source(cfg, load_profile("xy-md02"), sources), queue, seq, clock
        )
        first = await coord.poll_once()
        assert (first.status, first.temperature_c, coord.state) == (
            ReadingStatus.OK,
            4.0,
            DeviceState.OK,
        )

        device.offline = True
        with caplog.at_level(logging.WARNING, logger="coldtrail.edge.coordinator"):
            silent = [await coord.poll_once(), await coord.poll_once()]
        assert [r.status for r in silent] == [ReadingStatus.UNAVAILABLE] * 2
        assert all(r.temperature_c is None for r in silent)
        assert coord.state is DeviceState.UNAVAILABLE
        assert len([r for r in caplog.records if "unavailable" in r.message]) == 1

        device.offline = False
        back = await coord.poll_once()
        assert back.status is ReadingStatus.OK
        assert [r.seq for r in queue.take(10)] == [1, 2, 3, 4]
        await coord.close()
        seq.close()


def test_sequence_survives_a_restart(tmp_path: Path) -> None:
    store = SequenceStore(tmp_path / "seq.sqlite3")
    assert [store.next("A"), store.next("A"), store.next("B")] == [1, 2, 1]
    store.close()
    again = SequenceStore(tmp_path / "seq.sqlite3")
    assert again.next("A") == 3
    again.close()


@pytest.mark.parametrize(
    ("kind", "poll_s", "ok"),
    [
        ("storage", 1800, True),
        ("storage", 1801, False),
        ("transport", 300, True),
        ("transport", 301, False),
    ],
)
def test_config_refuses_a_poll_interval_longer_than_gsp_allows(
    kind: str, poll_s: float, ok: bool
) -> None:
    from pydantic import ValidationError

    from coldtrail.edge.config import EdgeConfig

    doc = {
        "site": "s1",
        "gateway": "gw",
        "location_kind": kind,
        "devices": [{"sensor": "S1", "model": "xy-md02", "poll_interval_s": poll_s}],
    }
    if ok:
        EdgeConfig.model_validate(doc)
    else:
        with pytest.raises(ValidationError, match="cn-drug-gsp wants a record at least every"):
            EdgeConfig.model_validate(doc)


def test_the_sites_own_compliance_profile_bounds_the_poll_interval(tmp_path: Path) -> None:
    from coldtrail.edge.config import load_config

    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "house.toml").write_text(
        'id = "house"\n[rules.record_interval_storage]\nvalue = 600\nunit = "s"\n'
        'text = "a record every 10 minutes"\nsource = "SOP-17"\n'
        '[rules.record_interval_out_of_range]\nvalue = 60\nunit = "s"\n'
        'text = "every minute while out of range"\nsource = "SOP-17"\n',
        encoding="utf-8",
    )
    config = tmp_path / "edge.toml"
    body = ('site = "s1"\ngateway = "gw"\ncompliance_profile = "house"\n'
            'compliance_profiles_dir = "profiles"\n'
            '[[devices]]\nsensor = "S1"\nmodel = "xy-md02"\npoll_interval_s = {}\n')  # fmt: skip
    config.write_text(body.format(900), encoding="utf-8")
    with pytest.raises(ConfigError, match="house wants a record at least every 600 s"):
        load_config(config)
    config.write_text(body.format(600), encoding="utf-8")
    assert load_config(config).out_of_range_record_s == 60
    config.write_text(body.format(60).replace('"house"', '"mars"'), encoding="utf-8")
    with pytest.raises(ConfigError, match="no compliance profile mars; known: cn-device-gsp"):
        load_config(config)


async def test_out_of_range_records_every_two_minutes_and_raises_the_alarm(
    clock: ManualClock, tmp_path: Path
) -> None:
    # In range for 20 min, out of 2-8 °C from about 21 min to 45 min, then back.
    scenario = CompressorFailure(
        base_c=5.0, ambient_c=25.0, fail_at_s=1200, warm_tau_s=300, recover_at_s=2400, cool_tau_s=60
    )
    device = SimulatedXYMD02(1, scenario, clock.now())
    stop = asyncio.Event()

    class StopAfter(MemoryQueue):
        def put(self, reading: Reading) -> None:
            super().put(reading)
            if len(self) >= 30:
                stop.set()

    queue = StopAfter()
    alarms: list[Reading] = []
    async with ModbusSimServer([device], clock) as server, SourceContext(clock) as sources:
        cfg = DeviceConfig(
            sensor="S1",
            model="xy-md02",
            port=server.port,
            unit=1,
            poll_interval_s=600,
            temp_min_c=2.0,
            temp_max_c=8.0,
        )
        seq = SequenceStore(tmp_path / "seq.sqlite3")
        coord = DeviceCoordinator(
            cfg,
            create_source(cfg, load_profile("xy-md02"), sources),
            queue,
            seq,
            clock,
            on_out_of_range=alarms.append,
        )
        await coord.run(stop)  # the clock moves only as the coordinator sleeps
        seq.close()

    readings = queue.take(100)
    gaps = [(b.ts - a.ts).total_seconds() for a, b in itertools.pairwise(readings)]
    expected = [120.0 if cfg.out_of_range(a.temperature_c) else 600.0 for a in readings[:-1]]
    assert gaps == expected
    assert 120.0 in gaps  # it went out of range ...
    assert gaps[-1] == 600.0  # ... and came back
    assert alarms == [r for r in readings if cfg.out_of_range(r.temperature_c)]


PROFILE_CASES = [
    ("xy-md02", "xymd02", -18.24, 40.0),  # x10 registers: one decimal survives
    ("ee072", "ee072", -20.55, 87.25),  # x100 registers: two decimals survive
    ("ee072", "ee072", 31.07, 0.0),
    ("renke-rs-ws-n01", "renke", -25.3, 93.0),  # function 3, humidity first
]


def test_every_shipped_profile_has_a_simulated_device_or_advert_fixtures() -> None:
    fixtures = Path(__file__).parent / "fixtures" / "ble"
    for model in shipped_models():
        profile = load_profile(model)
        if profile.modbus is not None:
            assert model in {case[0] for case in PROFILE_CASES} | VEHICLE_PROFILES, model
        else:
            assert profile.ble is not None
            assert (fixtures / f"{profile.ble.format}.toml").is_file(), model


@pytest.mark.parametrize(("model", "make", "temp", "rh"), PROFILE_CASES)
async def test_each_profile_reads_engineering_values_from_its_device(
    clock: ManualClock, tmp_path: Path, model: str, make: str, temp: float, rh: float
) -> None:
    from coldtrail.sim.ee072 import SimulatedEE072
    from coldtrail.sim.modbus_server import SimulatedDevice
    from coldtrail.sim.renke import SimulatedRenke

    scenario = Steady(base_c=temp, humidity_pct=rh, noise_c=0)
    kinds = {"xymd02": SimulatedXYMD02, "ee072": SimulatedEE072, "renke": SimulatedRenke}
    device: SimulatedDevice = kinds[make](4, scenario, clock.now())
    # Steady's humidity ripple is deterministic: ask the scenario what the device holds.
    expected_rh = scenario.sample(0).humidity_pct
    async with ModbusSimServer([device], clock) as server, SourceContext(clock) as sources:
        cfg = DeviceConfig(sensor="S1", model=model, port=server.port, unit=4)
        source = create_source(cfg, load_profile(model), sources)
        measurement = await source.read()
        await source.close()
    step = 0.01 if model == "ee072" else 0.1
    assert measurement.values["temperature_c"] == pytest.approx(temp, abs=step / 2 + 1e-9)
    assert measurement.values["humidity_pct"] == pytest.approx(
        min(100.0, max(0.0, expected_rh)), abs=step / 2 + 1e-9
    )


VEHICLE_PROFILES = {"gnss-modbus", "door-contact"}


async def test_vehicle_profiles_read_position_speed_and_door_from_the_vehicles_bus(
    clock: ManualClock, tmp_path: Path
) -> None:
    from coldtrail.sim.vehicle import Compartment, SimulatedVehicle, parse_event

    # South and west of Greenwich: the signed 32-bit registers must come back negative.
    vehicle = SimulatedVehicle(
        "TRK-AR",
        (Compartment("chilled", 5.0), Compartment("frozen", -20.0)),
        clock.now(),
        events=(parse_event("door-opening@600+120:frozen"), parse_event("power-loss@900+60")),
        route=((-34.6037, -58.3816), (-34.9205, -57.9536)),
    )
    queue, seq = MemoryQueue(), SequenceStore(tmp_path / "seq.sqlite3")
    async with ModbusSimServer(vehicle.devices(), clock) as server, SourceContext(clock) as ctx:

        def coordinator(sensor: str, model: str, unit: int) -> DeviceCoordinator:
            cfg = DeviceConfig(sensor=sensor, model=model, port=server.port, unit=unit)
            source = create_source(cfg, load_profile(model), ctx)
            return DeviceCoordinator(
                cfg, source, queue, seq, clock, clock_check=lambda _: ClockState.OK
            )

        gps = coordinator("GPS-1", "gnss-modbus", vehicle.telematics.unit)
        doors = [
            coordinator(f"DOOR-{d.compartment}", "door-contact", d.unit) for d in vehicle.doors
        ]
        clock.advance(630)  # 10.5 minutes out, the frozen door open since 600 s
        fix = vehicle.position(clock.now())
        got = await gps.poll_once()
        assert got.status is ReadingStatus.OK
        assert got.latitude == pytest.approx(fix.lat, abs=1e-7)
        assert got.longitude == pytest.approx(fix.lon, abs=1e-7)
        assert got.latitude is not None
        assert got.latitude < -34.6
        assert got.speed_kmh == 0.0  # the driver stopped while the door is open
        assert [(await d.poll_once()).door_open for d in doors] == [False, True]
        clock.advance(300)  # no power at 930 s: the unit and the contacts are silent
        silent = await gps.poll_once()
        assert silent.status is ReadingStatus.UNAVAILABLE
        assert (silent.latitude, silent.door_open) == (None, None)
        clock.advance(120)
        moving = await gps.poll_once()
        assert moving.speed_kmh == 60.0
        assert [(await d.poll_once()).door_open for d in doors] == [False, False]
        for c in (gps, *doors):
            await c.close()
    seq.close()
    assert len(queue) == 7  # every poll queued, the silent one too


@pytest.mark.parametrize(
    ("now", "synced", "state"),
    [
        (T0, True, "ok"),
        (T0, None, "ok"),  # the kernel can't say: nothing to mark
        (T0, False, "unsynced"),
        (datetime(2000, 1, 1, tzinfo=UTC), True, "implausible"),  # booted without an RTC
        (datetime(2150, 1, 1, tzinfo=UTC), False, "implausible"),
    ],
)
def test_clock_state(now: datetime, synced: bool | None, state: str) -> None:
    assert clock_state(now, synced).value == state


def test_the_kernel_answers_whether_its_clock_is_synchronised() -> None:
    assert kernel_clock_synced() in (True, False)  # Linux: adjtimex always answers


async def test_coordinator_marks_readings_taken_on_an_untrusted_clock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(datetime(2000, 1, 1, tzinfo=UTC))  # a gateway that lost its time
    device = SimulatedXYMD02(1, Steady(base_c=4.0, noise_c=0), clock.now())
    async with ModbusSimServer([device], clock) as server, SourceContext(clock) as sources:
        cfg = DeviceConfig(sensor="S1", model="xy-md02", port=server.port, unit=1)
        seq = SequenceStore(tmp_path / "seq.sqlite3")
        coord = DeviceCoordinator(
            cfg,
            create_source(cfg, load_profile("xy-md02"), sources),
            MemoryQueue(),
            seq,
            clock,
            clock_check=lambda now: clock_state(now, True),
        )
        with caplog.at_level(logging.WARNING, logger="coldtrail.edge.coordinator"):
            marked = [await coord.poll_once(), await coord.poll_once()]
        await coord.close()
        seq.close()
    assert [r.clock.value for r in marked] == ["implausible", "implausible"]
    assert marked[0].temperature_c == 4.0  # the value is kept; only its time is in doubt
    assert len([r for r in caplog.records if "clock" in r.message]) == 1


def test_dumped_edge_config_loads_back_the_same(tmp_path: Path) -> None:
    from coldtrail.edge.config import EdgeConfig, dump_config, load_config

    config = EdgeConfig(
        site="s1",
        gateway="gw-1",
        location_kind="transport",
        state_dir=tmp_path / "state",
        queue_synchronous="NORMAL",
        publish_interval_s=0.5,
        ble_scanner="replay",
        ble_replay_file=tmp_path / 'adverts "1".jsonl',
        devices=(
            DeviceConfig(sensor="S1", model="xy-md02", port=1502, unit=3, temp_min_c=2.0),
            DeviceConfig(
                sensor="S2", source="modbus-rtu", model="ee072", serial_port="/dev/ttyUSB0",
                parity="E", stopbits=2,
            ),
            DeviceConfig(sensor="S3", source="ble", model="bthome", mac="a4:c1:38:00:00:01",
                         bindkey="00" * 16, stale_after_s=30),
        ),
    )  # fmt: skip
    path = tmp_path / "edge.toml"
    path.write_text(dump_config(config))
    assert load_config(path) == config
