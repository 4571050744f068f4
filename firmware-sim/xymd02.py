"""An XY-MD02 (SHT20) temperature/humidity transmitter over Modbus, as its datasheet maps it.

Input registers (function 4): 0x0001 temperature, signed, x10; 0x0002 humidity, x10.
Holding registers (function 3/6): 0x0101 device address, 0x0102 baud code,
0x0103 temperature offset (signed, x10), 0x0104 humidity offset (signed, x10).
The offsets are applied by the device, as on the real one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pymodbus.simulator import DataType, SimData, SimDevice

from coldtrail.clock import Clock
from coldtrail.sim.modbus_server import ScenarioRegisters
from coldtrail.sim.scenarios import Scenario

REG_TEMPERATURE = 0x0001
REG_HUMIDITY = 0x0002
REG_ADDRESS = 0x0101
REG_BAUD = 0x0102
REG_TEMP_OFFSET = 0x0103
REG_RH_OFFSET = 0x0104
BAUD_9600 = 1


def s16(value: float) -> int:
    """A value as the 16-bit two's-complement register a device would send."""
    raw = round(value)
    return max(-32768, min(32767, raw)) & 0xFFFF


def _froms16(reg: int) -> int:
    return reg - 0x10000 if reg & 0x8000 else reg


@dataclass
class SimulatedXYMD02(ScenarioRegisters):
    unit: int
    scenario: Scenario
    started_at: datetime
    offline: bool = False
    """While true the device stays silent, as one with a broken RS-485 pair would."""

    def __post_init__(self) -> None:
        self.holding = {
            REG_ADDRESS: self.unit,
            REG_BAUD: BAUD_9600,
            REG_TEMP_OFFSET: 0,
            REG_RH_OFFSET: 0,
        }

    def registers_at(self, now: datetime) -> dict[int, int]:
        sample = self.scenario.sample((now - self.started_at).total_seconds())
        t_off = _froms16(self.holding[REG_TEMP_OFFSET]) / 10.0
        rh_off = _froms16(self.holding[REG_RH_OFFSET]) / 10.0
        rh = min(100.0, max(0.0, sample.humidity_pct + rh_off))
        return {
            REG_TEMPERATURE: s16((sample.temperature_c + t_off) * 10),
            REG_HUMIDITY: round(rh * 10),
        }

    def sim_device(self, clock: Clock) -> SimDevice:
        return self.register_device(
            clock,
            [
                SimData(
                    REG_ADDRESS, values=[self.unit, BAUD_9600, 0, 0], datatype=DataType.REGISTERS
                )
            ],
            [SimData(REG_TEMPERATURE, values=[0, 0], datatype=DataType.REGISTERS)],
        )

    def on_write(self, address: int, values: list[int]) -> None:
        for i, value in enumerate(values):
            if address + i in self.holding:
                self.holding[address + i] = value
