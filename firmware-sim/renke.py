"""A Renke RS-WS-N01 temperature/humidity transmitter (RS-485, Modbus RTU), as its manual maps
it: holding registers (function 3) 0x0000 humidity x10, 0x0001 temperature x10 in two's
complement; 0x07D0 device address, 0x07D1 baud code (0 = 2400, 1 = 4800, 2 = 9600)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pymodbus.simulator import DataType, SimData, SimDevice

from coldtrail.clock import Clock
from coldtrail.sim.modbus_server import ScenarioRegisters
from coldtrail.sim.scenarios import Scenario
from coldtrail.sim.xymd02 import s16

REG_HUMIDITY = 0x0000
REG_TEMPERATURE = 0x0001
REG_ADDRESS = 0x07D0
REG_BAUD = 0x07D1
BAUD_4800 = 1


@dataclass
class SimulatedRenke(ScenarioRegisters):
    unit: int
    scenario: Scenario
    started_at: datetime
    offline: bool = False
    read_functions: tuple[int, ...] = (3,)

    def registers_at(self, now: datetime) -> dict[int, int]:
        sample = self.scenario.sample((now - self.started_at).total_seconds())
        rh = min(100.0, max(0.0, sample.humidity_pct))
        return {
            REG_HUMIDITY: round(rh * 10),
            REG_TEMPERATURE: s16(sample.temperature_c * 10),
            REG_ADDRESS: self.unit,
            REG_BAUD: BAUD_4800,
        }

    def sim_device(self, clock: Clock) -> SimDevice:
        holding = [
            SimData(REG_HUMIDITY, values=[0, 0], datatype=DataType.REGISTERS),
            SimData(REG_ADDRESS, values=[self.unit, BAUD_4800], datatype=DataType.REGISTERS),
        ]
        return self.register_device(clock, holding, [SimData(0, datatype=DataType.REGISTERS)])
