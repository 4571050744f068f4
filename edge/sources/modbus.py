"""Modbus TCP source (pymodbus >= 3.10): reads a profile's points with as few requests as it can."""

from __future__ import annotations

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from coldtrail.edge.config import DeviceConfig
from coldtrail.edge.profiles import DeviceProfile, ModbusMap, ModbusPoint
from coldtrail.edge.sources.base import Measurement
from coldtrail.errors import ConfigError, DeviceUnavailable

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


class ModbusTcpSource:
    def __init__(self, device: DeviceConfig, profile: DeviceProfile) -> None:
        if profile.modbus is None:
            raise ConfigError(f"sensor {device.sensor}: model {profile.model} has no Modbus map")
        self._map: ModbusMap = profile.modbus
        self._unit = device.unit if device.unit is not None else self._map.default_unit
        self._plan = plan_reads(self._map.points)
        # No background reconnect in pymodbus: the next poll reconnects, and a poll that
        # cannot is recorded as unavailable.
        self._client = AsyncModbusTcpClient(
            device.host,
            port=device.port,
            timeout=device.timeout_s,
            retries=0,
            reconnect_delay=0,
        )
        self._where = f"{device.host}:{device.port} unit {self._unit}"

    async def read(self) -> Measurement:
        try:
            if not self._client.connected and not await self._client.connect():
                raise DeviceUnavailable(f"{self._where}: cannot connect")
            values: dict[str, float | None] = {}
            for function, start, members in self._plan:
                count = max(p.address + p.width for p in members) - start
                reader = (
                    self._client.read_input_registers
                    if function == 4
                    else self._client.read_holding_registers
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
            self._client.close()
            raise DeviceUnavailable(f"{self._where}: {exc}") from exc
        return Measurement(values)

    async def close(self) -> None:
        self._client.close()
