"""Modbus RTU over a serial line (a pty pair: real tty paths, real RTU frames with CRC), many
devices of different models on one bus, and many units behind one TCP gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coldtrail.clock import ManualClock
from coldtrail.edge.config import DeviceConfig
from coldtrail.edge.coordinator import DeviceCoordinator, DeviceState
from coldtrail.edge.profiles import load_profile
from coldtrail.edge.queue import MemoryQueue
from coldtrail.edge.sequence import SequenceStore
from coldtrail.edge.sources import SourceContext, create_source
from coldtrail.errors import ConfigError
from coldtrail.messages import ReadingStatus
from coldtrail.sim.ee072 import SimulatedEE072
from coldtrail.sim.modbus_server import ModbusRtuSimServer, ModbusSimServer, SimulatedDevice
from coldtrail.sim.renke import SimulatedRenke
from coldtrail.sim.scenarios import Steady
from coldtrail.sim.serial_line import PtyNullModem
from coldtrail.sim.xymd02 import SimulatedXYMD02


def _rtu(sensor: str, model: str, unit: int, port: str) -> DeviceConfig:
    return DeviceConfig(
        sensor=sensor,
        source="modbus-rtu",
        model=model,
        serial_port=port,
        unit=unit,
        timeout_s=0.3,
    )


async def test_three_models_share_one_rtu_bus_and_only_the_silent_or_busy_ones_are_unavailable(
    clock: ManualClock, tmp_path: Path
) -> None:
    devices: list[SimulatedDevice] = [
        SimulatedXYMD02(1, Steady(base_c=4.3, noise_c=0), clock.now()),
        SimulatedEE072(2, Steady(base_c=-19.87, noise_c=0), clock.now()),
        SimulatedRenke(3, Steady(base_c=-2.5, noise_c=0), clock.now()),
        SimulatedXYMD02(4, Steady(base_c=6.0, noise_c=0), clock.now()),
        SimulatedRenke(5, Steady(base_c=2.2, noise_c=0), clock.now()),
    ]
    busy = devices[2]
    assert isinstance(busy, SimulatedRenke)
    busy.offline = True  # it answers, with a Modbus exception
    wiring = [
        ("R1", "xy-md02", 1),
        ("R2", "ee072", 2),
        ("R3", "renke-rs-ws-n01", 3),
        ("R4", "xy-md02", 4),
        ("R5", "renke-rs-ws-n01", 5),
        ("R9", "xy-md02", 9),  # configured, but nothing at that address
    ]
    async with PtyNullModem() as line, ModbusRtuSimServer(devices, clock, line) as bus:
        bus.disconnect(4)  # its RS-485 pair is cut: it never answers
        configs = [_rtu(sensor, model, unit, line.host_port) for sensor, model, unit in wiring]
        queue = MemoryQueue()
        seq = SequenceStore(tmp_path / "seq.sqlite3")
        async with SourceContext(clock) as sources:
            coordinators = [
                DeviceCoordinator(
                    c, create_source(c, load_profile(c.model), sources), queue, seq, clock
                )
                for c in configs
            ]
            # All at once, as the agent's tasks would: the bus makes them take turns.
            readings = await asyncio.gather(*(c.poll_once() for c in coordinators))
            assert sources.resource(("rtu", line.host_port)).client.connected
        seq.close()
    got = {r.sensor: r for r in readings}
    assert (got["R1"].status, got["R1"].temperature_c) == (ReadingStatus.OK, 4.3)
    assert (got["R2"].status, got["R2"].temperature_c) == (ReadingStatus.OK, -19.87)
    assert (got["R5"].status, got["R5"].temperature_c) == (ReadingStatus.OK, 2.2)
    assert got["R5"].humidity_pct == pytest.approx(Steady().sample(0).humidity_pct, abs=0.05)
    for silent in ("R3", "R4", "R9"):
        assert got[silent].status is ReadingStatus.UNAVAILABLE
        assert got[silent].temperature_c is None
    states = {c.device.sensor: c.state for c in coordinators}
    assert states == {
        "R1": DeviceState.OK,
        "R2": DeviceState.OK,
        "R3": DeviceState.UNAVAILABLE,
        "R4": DeviceState.UNAVAILABLE,
        "R5": DeviceState.OK,
        "R9": DeviceState.UNAVAILABLE,
    }


async def test_rtu_device_answering_again_is_read_again(clock: ManualClock, tmp_path: Path) -> None:
    device = SimulatedXYMD02(1, Steady(base_c=5.0, noise_c=0), clock.now())
    async with PtyNullModem() as line, ModbusRtuSimServer([device], clock, line):
        cfg = _rtu("R1", "xy-md02", 1, line.host_port)
        seq = SequenceStore(tmp_path / "seq.sqlite3")
        async with SourceContext(clock) as sources:
            coordinator = DeviceCoordinator(
                cfg, create_source(cfg, load_profile("xy-md02"), sources), MemoryQueue(), seq, clock
            )
            device.offline = True
            assert (await coordinator.poll_once()).status is ReadingStatus.UNAVAILABLE
            device.offline = False
            back = await coordinator.poll_once()
        seq.close()
    assert (back.status, back.temperature_c, coordinator.state) == (
        ReadingStatus.OK,
        5.0,
        DeviceState.OK,
    )


async def test_devices_on_one_line_must_agree_on_its_settings(clock: ManualClock) -> None:
    first = _rtu("R1", "xy-md02", 1, "/dev/ttyUSB7")
    second = first.model_copy(update={"sensor": "R2", "unit": 2, "baudrate": 19200})
    async with SourceContext(clock) as sources:
        create_source(first, load_profile("xy-md02"), sources)
        with pytest.raises(ConfigError, match="same settings"):
            create_source(second, load_profile("xy-md02"), sources)


async def test_units_behind_one_tcp_gateway_share_its_connection(clock: ManualClock) -> None:
    devices: list[SimulatedDevice] = [
        SimulatedXYMD02(1, Steady(base_c=3.1, noise_c=0), clock.now()),
        SimulatedRenke(7, Steady(base_c=-21.4, noise_c=0), clock.now()),
    ]
    async with ModbusSimServer(devices, clock) as server, SourceContext(clock) as sources:
        a = DeviceConfig(sensor="T1", model="xy-md02", port=server.port, unit=1)
        b = DeviceConfig(sensor="T2", model="renke-rs-ws-n01", port=server.port, unit=7)
        sa = create_source(a, load_profile(a.model), sources)
        sb = create_source(b, load_profile(b.model), sources)
        ma, mb = await asyncio.gather(sa.read(), sb.read())
    assert ma.values["temperature_c"] == 3.1
    assert mb.values["temperature_c"] == -21.4
