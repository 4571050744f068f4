"""A Modbus TCP server carrying simulated devices, as a TCP gateway to an RS-485 bus would."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimDevice

from coldtrail.clock import Clock


class SimulatedDevice(Protocol):
    unit: int

    def sim_device(self, clock: Clock) -> SimDevice: ...


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
