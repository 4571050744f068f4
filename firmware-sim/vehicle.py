"""A refrigerated vehicle: compartments with their own cooling and probes, a door per
compartment, a GPS track, and a timeline of events (door openings, compressor failure, power
loss, a probe unplugged, a network outage).

Everything is a pure function of the seconds since departure, so a test that drives the clock
gets the same journey every run. A compartment's air follows Newton's law piecewise: towards
its set point while cooled, towards the ambient air while the cooling is off, and faster while
its door is open. Each probe is an XY-MD02 on the vehicle's RS-485 bus (unit numbers from 1),
so the edge reads it like any other logger. On the same bus: the telematics unit (unit 20,
profile ``gnss-modbus``) with the GPS position, and a door contact per compartment (units 30
on, profile ``door-contact``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pymodbus.simulator import DataType, SimData, SimDevice

from coldtrail.clock import Clock
from coldtrail.sim.modbus_server import ScenarioRegisters, SimulatedDevice
from coldtrail.sim.scenarios import Sample
from coldtrail.sim.xymd02 import SimulatedXYMD02

TELEMATICS_UNIT = 20
FIRST_DOOR_UNIT = 30

EventKind = Literal[
    "door-opening", "compressor-failure", "power-loss", "sensor-unplugged", "network-outage"
]
EVENT_KINDS: tuple[EventKind, ...] = (
    "door-opening",
    "compressor-failure",
    "power-loss",
    "sensor-unplugged",
    "network-outage",
)


@dataclass(frozen=True)
class Event:
    kind: EventKind
    at_s: float
    duration_s: float
    target: str | None = None
    """The compartment (door, compressor) or probe (unplugged) it concerns; None = the vehicle."""

    def active(self, t: float) -> bool:
        return self.at_s <= t < self.at_s + self.duration_s


@dataclass(frozen=True)
class Compartment:
    name: str
    setpoint_c: float
    probes: int = 2
    """GSP: at least two probes per refrigerated compartment."""
    cool_tau_s: float = 600.0
    warm_tau_s: float = 1800.0
    door_tau_s: float = 240.0
    humidity_pct: float = 70.0


@dataclass(frozen=True)
class Fix:
    """One GPS position."""

    ts: datetime
    lat: float
    lon: float
    speed_kmh: float


@dataclass
class SimulatedVehicle:
    vehicle_id: str
    compartments: Sequence[Compartment]
    started_at: datetime
    events: Sequence[Event] = ()
    ambient_c: float = 28.0
    route: Sequence[tuple[float, float]] = ((31.2304, 121.4737), (31.3200, 120.6200))
    speed_kmh: float = 60.0
    probes: list[VehicleProbe] = field(default_factory=list, init=False)
    telematics: VehicleTelematics = field(init=False)
    doors: list[DoorContact] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.compartments]
        if len(set(names)) != len(names):
            raise ValueError("compartment names repeat")
        unit = 1
        for c in self.compartments:
            for i in range(c.probes):
                # Probes sit in different spots (GSP: the warmest and the coldest): a fixed
                # offset each, deterministic.
                offset = (i - (c.probes - 1) / 2) * 0.3
                self.probes.append(VehicleProbe(unit, self, c, f"{c.name}-{i + 1}", offset))
                unit += 1
        self.telematics = VehicleTelematics(TELEMATICS_UNIT, self)
        self.doors = [
            DoorContact(FIRST_DOOR_UNIT + i, self, c.name) for i, c in enumerate(self.compartments)
        ]
        known = {*names, *(p.name for p in self.probes)}
        for e in self.events:
            if e.target is not None and e.target not in known:
                raise ValueError(f"event {e.kind} names {e.target!r}; known: {sorted(known)}")

    # -- timeline ----------------------------------------------------------------------------

    def elapsed(self, now: datetime) -> float:
        return (now - self.started_at).total_seconds()

    def _active(self, kind: EventKind, t: float, target: str | None = None) -> bool:
        return any(
            e.kind == kind and e.active(t) and (e.target is None or e.target == target)
            for e in self.events
        )

    def powered(self, t: float) -> bool:
        return not self._active("power-loss", t)

    def network_up(self, t: float) -> bool:
        return not self._active("network-outage", t)

    def door_open(self, compartment: str, t: float) -> bool:
        return self._active("door-opening", t, compartment)

    def cooling(self, compartment: str, t: float) -> bool:
        return self.powered(t) and not self._active("compressor-failure", t, compartment)

    def probe_connected(self, probe: str, t: float) -> bool:
        return self.powered(t) and not self._active("sensor-unplugged", t, probe)

    # -- physics -----------------------------------------------------------------------------

    def air_temperature(self, compartment: Compartment, t: float) -> float:
        """Piecewise exponential approach, segment by segment between event edges."""
        edges = sorted(
            {0.0, t}
            | {e.at_s for e in self.events if 0 < e.at_s < t}
            | {e.at_s + e.duration_s for e in self.events if 0 < e.at_s + e.duration_s < t}
        )
        temp = compartment.setpoint_c
        for a, b in itertools.pairwise(edges):
            mid = (a + b) / 2
            if self.door_open(compartment.name, mid):
                target, tau = self.ambient_c, compartment.door_tau_s
            elif self.cooling(compartment.name, mid):
                target, tau = compartment.setpoint_c, compartment.cool_tau_s
            else:
                target, tau = self.ambient_c, compartment.warm_tau_s
            temp = target + (temp - target) * math.exp(-(b - a) / tau)
        return temp

    # -- GPS ---------------------------------------------------------------------------------

    def position(self, now: datetime) -> Fix:
        """Along the route at constant speed, standing still while the power is off (the
        driver stops) and at the last waypoint once there."""
        t = self.elapsed(now)
        moving_s = t - sum(
            max(0.0, min(t, e.at_s + e.duration_s) - e.at_s)
            for e in self.events
            if e.kind in ("power-loss", "door-opening") and e.at_s < t
        )
        travelled_km = self.speed_kmh * max(0.0, moving_s) / 3600.0
        for (lat1, lon1), (lat2, lon2) in zip(self.route, self.route[1:], strict=False):
            leg = _km(lat1, lon1, lat2, lon2)
            if travelled_km <= leg:
                f = travelled_km / leg if leg else 0.0
                speed = self.speed_kmh if self._moving(t) else 0.0
                return Fix(now, lat1 + (lat2 - lat1) * f, lon1 + (lon2 - lon1) * f, speed)
            travelled_km -= leg
        lat, lon = self.route[-1]
        return Fix(now, lat, lon, 0.0)

    def devices(self) -> list[SimulatedDevice]:
        """Everything on the vehicle's bus: probes, the telematics unit, the door contacts."""
        return [*self.probes, self.telematics, *self.doors]

    def _moving(self, t: float) -> bool:
        return self.powered(t) and not any(
            e.kind == "door-opening" and e.active(t) for e in self.events
        )

    def journal(self, start: datetime, end: datetime) -> list[dict[str, object]]:
        """Door, power, cooling, probe and network changes between ``start`` and ``end``, as
        the vehicle's own event log would keep them."""
        t0, t1 = self.elapsed(start), self.elapsed(end)
        out: list[dict[str, object]] = []
        for e in sorted(self.events, key=lambda e: e.at_s):
            for edge, state in ((e.at_s, "start"), (e.at_s + e.duration_s, "end")):
                if t0 <= edge < t1:
                    ts = self.started_at + timedelta(seconds=edge)
                    out.append(
                        {
                            "ts": ts.isoformat(),
                            "vehicle": self.vehicle_id,
                            "event": e.kind,
                            "state": state,
                            "target": e.target,
                        }
                    )
        return sorted(out, key=lambda d: str(d["ts"]))


@dataclass
class _CompartmentScenario:
    vehicle: SimulatedVehicle
    compartment: Compartment
    offset_c: float

    def sample(self, elapsed_s: float) -> Sample:
        temp = self.vehicle.air_temperature(self.compartment, elapsed_s) + self.offset_c
        return Sample(temp, self.compartment.humidity_pct)


class VehicleProbe(SimulatedXYMD02):
    """A probe in a compartment: silent while the vehicle has no power or it is unplugged."""

    def __init__(
        self,
        unit: int,
        vehicle: SimulatedVehicle,
        compartment: Compartment,
        name: str,
        offset_c: float,
    ) -> None:
        super().__init__(
            unit, _CompartmentScenario(vehicle, compartment, offset_c), vehicle.started_at
        )
        self.vehicle = vehicle
        self.compartment = compartment
        self.name = name

    def is_offline(self, now: datetime) -> bool:
        return self.offline or not self.vehicle.probe_connected(
            self.name, self.vehicle.elapsed(now)
        )


def _s32(value: int) -> list[int]:
    """A signed 32-bit value as two registers, high word first."""
    raw = value & 0xFFFFFFFF
    return [raw >> 16, raw & 0xFFFF]


class _VehicleDevice(ScenarioRegisters):
    """A device powered by the vehicle: silent while the power is off."""

    def __init__(self, unit: int, vehicle: SimulatedVehicle, n_registers: int) -> None:
        self.unit = unit
        self.vehicle = vehicle
        self.offline = False
        self._n = n_registers

    def is_offline(self, now: datetime) -> bool:
        return self.offline or not self.vehicle.powered(self.vehicle.elapsed(now))

    def sim_device(self, clock: Clock) -> SimDevice:
        inputs = [SimData(0, values=[0] * self._n, datatype=DataType.REGISTERS)]
        return self.register_device(clock, [SimData(0, datatype=DataType.REGISTERS)], inputs)


class VehicleTelematics(_VehicleDevice):
    """The GNSS unit (profile ``gnss-modbus``): input registers 0-1 latitude and 2-3
    longitude, signed, in 1e-7 degrees; 4 speed in 0.1 km/h."""

    def __init__(self, unit: int, vehicle: SimulatedVehicle) -> None:
        super().__init__(unit, vehicle, 5)

    def registers_at(self, now: datetime) -> dict[int, int]:
        fix = self.vehicle.position(now)
        regs = [*_s32(round(fix.lat * 1e7)), *_s32(round(fix.lon * 1e7)), round(fix.speed_kmh * 10)]
        return dict(enumerate(regs))


class DoorContact(_VehicleDevice):
    """A compartment's door contact (profile ``door-contact``): input register 0 is 1 while
    the door is open."""

    def __init__(self, unit: int, vehicle: SimulatedVehicle, compartment: str) -> None:
        super().__init__(unit, vehicle, 1)
        self.compartment = compartment

    def registers_at(self, now: datetime) -> dict[int, int]:
        return {0: int(self.vehicle.door_open(self.compartment, self.vehicle.elapsed(now)))}


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine), km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def parse_event(text: str) -> Event:
    """``KIND@AT_S+DURATION_S[:TARGET]``, e.g. ``door-opening@600+90:chilled`` or
    ``network-outage@300+600``."""
    head, _, target = text.partition(":")
    kind, _, times = head.partition("@")
    at, _, duration = times.partition("+")
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown vehicle event {kind!r}; known: {', '.join(EVENT_KINDS)}")
    try:
        return Event(kind, float(at), float(duration), target or None)
    except ValueError as exc:
        raise ValueError(f"vehicle event {text!r}: want KIND@AT_S+DURATION_S[:TARGET]") from exc
