"""An E+E EE072 humidity/temperature probe over Modbus, as its register map gives it.

The same registers answer function 3 and function 4: temperature at 0x0FA1 and relative
humidity at 0x0FAA as integers x100 (temperature signed), and as 32-bit floats at 0x03EA and
0x03FC (big-endian words here; check a real unit before relying on the float registers).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime

from pymodbus.simulator import DataType, SimData, SimDevice

from coldtrail.clock import Clock
from coldtrail.sim.modbus_server import ScenarioRegisters
from coldtrail.sim.scenarios import Scenario
from coldtrail.sim.xymd02 import s16

REG_TEMPERATURE_X100 = 0x0FA1
REG_HUMIDITY_X100 = 0x0FAA
REG_TEMPERATURE_F32 = 0x03EA
REG_HUMIDITY_F32 = 0x03FC


def _f32(value: float) -> tuple[int, int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return hi, lo


@dataclass
class SimulatedEE072(ScenarioRegisters):
    unit: int
    scenario: Scenario
    started_at: datetime
    offline: bool = False
    read_functions: tuple[int, ...] = (3, 4)
    _blocks: tuple[tuple[int, int], ...] = field(
        default=((REG_TEMPERATURE_F32, 0x03FD), (REG_TEMPERATURE_X100, REG_HUMIDITY_X100)),
        init=False,
    )

    def registers_at(self, now: datetime) -> dict[int, int]:
        sample = self.scenario.sample((now - self.started_at).total_seconds())
        rh = min(100.0, max(0.0, sample.humidity_pct))
        t_hi, t_lo = _f32(sample.temperature_c)
        rh_hi, rh_lo = _f32(rh)
        return {
            REG_TEMPERATURE_X100: s16(sample.temperature_c * 100),
            REG_HUMIDITY_X100: round(rh * 100),
            REG_TEMPERATURE_F32: t_hi,
            REG_TEMPERATURE_F32 + 1: t_lo,
            REG_HUMIDITY_F32: rh_hi,
            REG_HUMIDITY_F32 + 1: rh_lo,
        }

    def sim_device(self, clock: Clock) -> SimDevice:
        def block() -> list[SimData]:
            return [
                SimData(start, values=[0] * (end - start + 1), datatype=DataType.REGISTERS)
                for start, end in self._blocks
            ]

        return self.register_device(clock, block(), block())
