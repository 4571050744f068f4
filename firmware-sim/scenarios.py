"""What a simulated probe measures over time.

A scenario is a pure function of the seconds elapsed since it started, so a test that drives
the clock gets exactly the same values every run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Sample:
    temperature_c: float
    humidity_pct: float


class Scenario(Protocol):
    def sample(self, elapsed_s: float) -> Sample: ...


def _wobble(elapsed_s: float, amplitude: float, phase: float) -> float:
    """Small deterministic ripple so the values look measured, not constant."""
    return amplitude * (
        0.6 * math.sin(elapsed_s / 37.0 + phase) + 0.4 * math.sin(elapsed_s / 11.0 + 2 * phase)
    )


@dataclass(frozen=True)
class Steady:
    base_c: float = 5.0
    humidity_pct: float = 55.0
    noise_c: float = 0.1
    phase: float = 0.0

    def sample(self, elapsed_s: float) -> Sample:
        return Sample(
            self.base_c + _wobble(elapsed_s, self.noise_c, self.phase),
            self.humidity_pct + _wobble(elapsed_s, 1.0, self.phase + 1),
        )


@dataclass(frozen=True)
class Drift:
    """A probe or a room drifting steadily, e.g. a failing thermostat."""

    base_c: float = 5.0
    rate_c_per_h: float = 1.0
    humidity_pct: float = 55.0

    def sample(self, elapsed_s: float) -> Sample:
        return Sample(self.base_c + self.rate_c_per_h * elapsed_s / 3600.0, self.humidity_pct)


@dataclass(frozen=True)
class DoorOpening:
    """Every ``every_s`` the door stays open ``open_s``: warm air in, then the room recovers."""

    base_c: float = 5.0
    every_s: float = 600.0
    open_s: float = 60.0
    rise_c_per_min: float = 3.0
    recover_tau_s: float = 120.0
    humidity_pct: float = 55.0

    def sample(self, elapsed_s: float) -> Sample:
        t = elapsed_s % self.every_s
        peak = self.rise_c_per_min * self.open_s / 60.0
        if t < self.open_s:
            excess = self.rise_c_per_min * t / 60.0
        else:
            excess = peak * math.exp(-(t - self.open_s) / self.recover_tau_s)
        return Sample(self.base_c + excess, self.humidity_pct + 10.0 * excess / max(peak, 1e-9))


@dataclass(frozen=True)
class CompressorFailure:
    """Cooling stops at ``fail_at_s``: the box warms towards ambient; it restarts at
    ``recover_at_s`` (if given) and cools back. The cycle repeats every ``period_s`` if set."""

    base_c: float = 5.0
    ambient_c: float = 25.0
    fail_at_s: float = 60.0
    warm_tau_s: float = 600.0
    recover_at_s: float | None = 240.0
    cool_tau_s: float = 90.0
    period_s: float | None = None
    humidity_pct: float = 60.0

    def _warm(self, dt: float) -> float:
        return self.ambient_c - (self.ambient_c - self.base_c) * math.exp(-dt / self.warm_tau_s)

    def sample(self, elapsed_s: float) -> Sample:
        t = elapsed_s % self.period_s if self.period_s else elapsed_s
        if t < self.fail_at_s:
            temp = self.base_c
        elif self.recover_at_s is None or t < self.recover_at_s:
            temp = self._warm(t - self.fail_at_s)
        else:
            top = self._warm(self.recover_at_s - self.fail_at_s)
            temp = self.base_c + (top - self.base_c) * math.exp(
                -(t - self.recover_at_s) / self.cool_tau_s
            )
        return Sample(temp + _wobble(elapsed_s, 0.05, 0.3), self.humidity_pct)


SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "steady": Steady,
    "drift": Drift,
    "door-opening": DoorOpening,
    "compressor-failure": CompressorFailure,
}


def parse_scenario(text: str) -> Scenario:
    """``name`` or ``name:key=value,key=value``, e.g. ``compressor-failure:fail_at_s=30``."""
    name, _, params = text.partition(":")
    factory = SCENARIOS.get(name)
    if factory is None:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    kwargs: dict[str, float | None] = {}
    for item in filter(None, params.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"scenario parameter {item!r} is not key=value")
        kwargs[key.strip()] = None if value.strip() == "none" else float(value)
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad parameters for scenario {name!r}: {exc}") from exc
