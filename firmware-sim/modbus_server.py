"""A Modbus TCP server carrying simulated devices, as a TCP gateway to an RS-485 bus would."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from coldtrail.clock import Clock
from coldtrail.sim.serial_line import PtyNullModem


class SimulatedDevice(Protocol):
    unit: int

    def sim_device(self, clock: Clock) -> SimDevice: ...


class ScenarioRegisters:
    """What simulated devices share: registers computed from the scenario when they are read,
    and silence (a Modbus exception) while the device is ``offline``."""

    unit: int
    offline: bool
    read_functions: tuple[int, ...] = (4,)

    def register_device(
        self, clock: Clock, holding: list[SimData], inputs: list[SimData]
    ) -> SimDevice:
        """The pymodbus device: no coils or discrete inputs, these holding and input register
        blocks, every read and write answered through :meth:`action`."""
        bits = [SimData(0, datatype=DataType.BITS)]
        return SimDevice(
            id=self.unit,
            simdata=(bits, list(bits), holding, inputs),
            action=functools.partial(self.action, clock),
        )

    def registers_at(self, now: datetime) -> dict[int, int]:
        raise NotImplementedError

    def is_offline(self, now: datetime) -> bool:
        """Whether the device is silent at ``now``; a device whose state follows a timeline
        (a vehicle losing power) overrides this."""
        return self.offline

    def on_write(self, address: int, values: list[int]) -> None:
        """A master wrote registers (function 6 or 16); ignored unless the device overrides."""

    async def action(
        self,
        clock: Clock,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self.is_offline(clock.now()):
            return ExcCodes.DEVICE_BUSY
        if function_code in self.read_functions:
            for reg, value in self.registers_at(clock.now()).items():
                i = reg - start_address
                if 0 <= i < len(current_registers):
                    current_registers[i] = value
        elif function_code in (6, 16) and set_values is not None:
            self.on_write(address, [int(v) for v in set_values])
        return None


class ModbusSimServer:
    """A Modbus TCP server carrying one or more simulated devices (a TCP gateway to a bus)."""

    def __init__(
        self,
        devices: Sequence[SimulatedDevice],
        clock: Clock,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.devices = {d.unit: d for d in devices}
        self._server = ModbusTcpServer([d.sim_device(clock) for d in devices], address=(host, port))
        self.host = host
        self.port = port

    async def start(self) -> None:
        await self._server.serve_forever(background=True)
        transport: Any = self._server.transport
        self.port = transport.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self._server.shutdown()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> ModbusSimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_until(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()


class ModbusRtuSimServer:
    """Simulated devices on one RS-485 bus, answering Modbus RTU on the device end of ``line``.
    Only they are on the bus: a request for another unit goes unanswered (the master times
    out), as on a real bus; :meth:`disconnect` cuts one device off."""

    def __init__(
        self,
        devices: Sequence[SimulatedDevice],
        clock: Clock,
        line: PtyNullModem,
        baudrate: int = 9600,
    ) -> None:
        self.devices = {d.unit: d for d in devices}
        self._line = line
        line.present_units = set(self.devices)
        self._server = ModbusSerialServer(
            [d.sim_device(clock) for d in devices],
            port=line.device_port,
            baudrate=baudrate,
            ignore_missing_devices=True,
        )

    async def start(self) -> None:
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        await self._server.shutdown()  # type: ignore[no-untyped-call]

    def disconnect(self, unit: int) -> None:
        """The device's RS-485 pair is cut: it hears nothing and never answers."""
        if self._line.present_units is not None:
            self._line.present_units.discard(unit)

    async def __aenter__(self) -> ModbusRtuSimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
