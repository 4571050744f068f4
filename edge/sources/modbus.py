"""Modbus sources (pymodbus >= 3.10), over TCP and over a serial line (RTU).

Devices that share a transport (units on one RS-485 bus, or behind one TCP gateway) share one
:class:`ModbusBus`: one connection, one request at a time, as the bus allows. Each device reads
its profile's points with as few requests as it can.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from coldtrail.edge.config import DeviceConfig
from coldtrail.edge.profiles import DeviceProfile, ModbusMap, ModbusPoint
from coldtrail.edge.sources.base import Measurement, SourceContext
from coldtrail.errors import ConfigError, DeviceUnavailable

log = logging.getLogger(__name__)

MAX_REGISTERS_PER_READ = 125  # Modbus PDU limit for function 3/4


def plan_reads(points: tuple[ModbusPoint, ...]) -> list[tuple[int, int, list[ModbusPoint]]]:
    """Group points into (function, start, points) runs that one request each can cover."""
    runs: list[tuple[int, int, list[ModbusPoint]]] = []
    for p in sorted(points, key=lambda p: (p.function, p.address)):
        if runs:
            fn, start, members = runs[-1]
            end = max(m.address + m.width for m in members)
            if (
                fn == p.function
                and p.address + p.width - start <= MAX_REGISTERS_PER_READ
                and p.address <= end + 8
            ):
                members.append(p)
                continue
        runs.append((p.function, p.address, [p]))
    return runs


class ModbusBus:
    """One Modbus connection and the lock that makes its users take turns."""

    def __init__(
        self, kind: Literal["tcp", "rtu"], client: Any, where: str, settings: tuple[Any, ...]
    ) -> None:
        self.kind = kind
        self.client = client
        self.where = where
        self.settings = settings
        """The line settings it was opened with; every device on it must agree."""
        self.lock = asyncio.Lock()

    @classmethod
    def tcp(cls, device: DeviceConfig) -> ModbusBus:
        # No background reconnect in pymodbus: the next poll reconnects, and a poll that
        # cannot is recorded as unavailable.
        client = AsyncModbusTcpClient(
            device.host, port=device.port, timeout=device.timeout_s, retries=0, reconnect_delay=0
        )
        return cls("tcp", client, f"{device.host}:{device.port}", cls.tcp_settings(device))

    @staticmethod
    def tcp_settings(device: DeviceConfig) -> tuple[Any, ...]:
        return (device.timeout_s,)

    @staticmethod
    def serial_settings(device: DeviceConfig) -> tuple[Any, ...]:
        return (device.baudrate, device.parity, device.stopbits, device.timeout_s)

    @classmethod
    def serial(cls, device: DeviceConfig) -> ModbusBus:
        assert device.serial_port is not None  # noqa: S101 - the config validator made sure
        client = AsyncModbusSerialClient(
            device.serial_port,
            baudrate=device.baudrate,
            parity=device.parity,
            stopbits=device.stopbits,
            bytesize=8,
            timeout=device.timeout_s,
            retries=0,
            reconnect_delay=0,
        )
        return cls("rtu", client, device.serial_port, cls.serial_settings(device))

    async def run(self, stop: asyncio.Event) -> None:
        return None

    async def close(self) -> None:
        self.client.close()


class ModbusSource:
    def __init__(
        self, device: DeviceConfig, profile: DeviceProfile, context: SourceContext
    ) -> None:
        if profile.modbus is None:
            raise ConfigError(f"sensor {device.sensor}: model {profile.model} has no Modbus map")
        self._map: ModbusMap = profile.modbus
        self._unit = device.unit if device.unit is not None else self._map.default_unit
        self._plan = plan_reads(self._map.points)
        if device.source == "modbus-rtu":
            key: tuple[Any, ...] = ("rtu", device.serial_port)
            self._bus = context.shared(key, lambda: ModbusBus.serial(device))
            wanted = ModbusBus.serial_settings(device)
        else:
            key = ("tcp", device.host, device.port)
            self._bus = context.shared(key, lambda: ModbusBus.tcp(device))
            wanted = ModbusBus.tcp_settings(device)
        if self._bus.settings != wanted:
            raise ConfigError(
                f"sensor {device.sensor}: {self._bus.where} is already opened with "
                f"{self._bus.settings}; devices on one line must use the same settings"
            )
        self._where = f"{self._bus.where} unit {self._unit}"

    async def read(self) -> Measurement:
        client = self._bus.client
        async with self._bus.lock:
            try:
                if not client.connected and not await client.connect():
                    raise DeviceUnavailable(f"{self._where}: cannot connect")
                values: dict[str, float | None] = {}
                for function, start, members in self._plan:
                    count = max(p.address + p.width for p in members) - start
                    reader = (
                        client.read_input_registers
                        if function == 4
                        else client.read_holding_registers
                    )
                    resp = await reader(start, count=count, device_id=self._unit)
                    if resp.isError():
                        raise DeviceUnavailable(f"{self._where}: Modbus error response {resp}")
                    for p in members:
                        offset = p.address - start
                        values[p.quantity] = self._map.decode(
                            p, resp.registers[offset : offset + p.width]
                        )
            except ModbusException as exc:
                # On a shared TCP connection a timeout leaves the stream out of step: start
                # over. A serial line has no stream state to lose, and the other units on
                # it still answer, so it stays open.
                if self._bus.kind == "tcp":
                    client.close()
                raise DeviceUnavailable(f"{self._where}: {exc}") from exc
        return Measurement(values)

    async def close(self) -> None:
        return None  # the bus is the context's; it closes it
