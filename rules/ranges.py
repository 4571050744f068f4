"""One sensor's readings as the rules judge them, with each reading's effective range.

A place's effective range at a moment is the strictest of its own setting (when it has a
range of its own) and the profiles of the products stored there then: the highest lower
limit, the lowest upper limit and the shortest alarm delay. Humidity likewise. A place with
neither a range nor products has nothing to judge by.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from coldtrail.rules.judge import Window


@dataclass(frozen=True)
class ProductSpan:
    """A product profile in force in one place over [start, end) (epoch seconds)."""

    start: float
    end: float
    lo: float  # nan: no lower limit
    hi: float
    delay_s: float
    rh_lo: float
    rh_hi: float


@dataclass(frozen=True)
class SensorData:
    """Everything the rules look at in one sensor's window, ascending by measurement time."""

    sensor: str
    temperature: Window
    humidity: Window
    status_ok: np.ndarray  # bool: the logger answered
    battery: np.ndarray  # float, nan without a value
    kinds: list[str | None]  # the kind of place of each reading

    @property
    def epoch_s(self) -> np.ndarray:
        return self.temperature.epoch_s


def spans_by_location(rows: Iterable[Sequence[Any]]) -> dict[str, list[ProductSpan]]:
    spans: dict[str, list[ProductSpan]] = {}
    for loc, start, end, lo, hi, delay, rh_lo, rh_hi in rows:
        spans.setdefault(loc, []).append(
            ProductSpan(start, end, _f(lo), _f(hi), float(delay), _f(rh_lo), _f(rh_hi))
        )
    return spans


def build(
    sensor: str, rows: Sequence[Sequence[Any]], spans: dict[str, list[ProductSpan]]
) -> SensorData:
    """A window from the rows of ``WINDOW_READINGS`` of one sensor, narrowed by products."""
    cols = list(zip(*rows, strict=True))
    epoch = np.array(cols[1], dtype=float)
    location: list[str | None] = list(cols[5])
    lo, hi = _floats(cols[6]), _floats(cols[7])
    rh_lo, rh_hi = _floats(cols[13]), _floats(cols[14])
    own_range = ~(np.isnan(lo) & np.isnan(hi))
    delay = np.where(own_range, np.array(cols[8], dtype=float), np.inf)
    for loc, loc_spans in spans.items():
        here = np.fromiter((x == loc for x in location), bool, len(location))
        if not here.any():
            continue
        for span in loc_spans:
            i0, i1 = np.searchsorted(epoch, (span.start, span.end), side="left")
            if i0 == i1:
                continue
            m = here[i0:i1]
            _tighten(lo, i0, i1, m, span.lo, np.fmax)
            _tighten(hi, i0, i1, m, span.hi, np.fmin)
            _tighten(delay, i0, i1, m, span.delay_s, np.fmin)
            _tighten(rh_lo, i0, i1, m, span.rh_lo, np.fmax)
            _tighten(rh_hi, i0, i1, m, span.rh_hi, np.fmin)
    delay = np.where(np.isinf(delay), 0.0, delay)
    seq = np.array(cols[2], dtype=np.int64)
    status_ok = np.array(cols[9], dtype=bool)
    humidity = _floats(cols[10])
    return SensorData(
        sensor=sensor,
        temperature=Window(
            epoch_s=epoch,
            seq=seq,
            ok=np.array(cols[3], dtype=bool),
            temp=_floats(cols[4]),
            lo=lo,
            hi=hi,
            location=location,
            delay_s=delay,
        ),
        humidity=Window(
            epoch_s=epoch,
            seq=seq,
            ok=status_ok & ~np.isnan(humidity),
            temp=humidity,
            lo=rh_lo,
            hi=rh_hi,
            location=location,
            delay_s=delay,
        ),
        status_ok=status_ok,
        battery=_floats(cols[11]),
        kinds=list(cols[12]),
    )


def _tighten(
    values: np.ndarray, i0: int, i1: int, mask: np.ndarray, limit: float, pick: np.ufunc
) -> None:
    if np.isnan(limit):
        return
    part = values[i0:i1]
    part[mask] = pick(part[mask], limit)


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _f(value: Any) -> float:
    return float("nan") if value is None else float(value)
