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


@dataclass(frozen=True)
class RangePatch:
    """A changed setting to try (replay): what is None stays as it is."""

    temp_min_c: float | None = None
    temp_max_c: float | None = None
    alarm_delay_s: float | None = None


def spans_by_location(
    rows: Iterable[Sequence[Any]], patches: dict[str, RangePatch] | None = None
) -> dict[str, list[ProductSpan]]:
    """From the rows of ``PRODUCT_RANGES``, with profile settings patched by profile id."""
    spans: dict[str, list[ProductSpan]] = {}
    for loc, start, end, lo, hi, delay, rh_lo, rh_hi, profile in rows:
        patch = (patches or {}).get(profile)
        if patch is not None:
            lo = lo if patch.temp_min_c is None else patch.temp_min_c
            hi = hi if patch.temp_max_c is None else patch.temp_max_c
            delay = delay if patch.alarm_delay_s is None else patch.alarm_delay_s
        spans.setdefault(loc, []).append(
            ProductSpan(start, end, _f(lo), _f(hi), float(delay), _f(rh_lo), _f(rh_hi))
        )
    return spans


@dataclass(frozen=True)
class Columns:
    """One sensor's readings column by column, each reading with its place's own settings."""

    epoch_s: np.ndarray
    seq: np.ndarray
    ok: np.ndarray  # status ok and a temperature
    temp: np.ndarray
    location: list[str | None]
    lo: np.ndarray
    hi: np.ndarray
    delay_s: np.ndarray
    status_ok: np.ndarray
    humidity: np.ndarray
    battery: np.ndarray
    kinds: list[str | None]
    rh_lo: np.ndarray
    rh_hi: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]]) -> Columns:
        """From the rows of ``WINDOW_READINGS`` of one sensor."""
        c = list(zip(*rows, strict=True))
        return cls(
            epoch_s=np.array(c[1], dtype=float),
            seq=np.array(c[2], dtype=np.int64),
            ok=np.array(c[3], dtype=bool),
            temp=_floats(c[4]),
            location=list(c[5]),
            lo=_floats(c[6]),
            hi=_floats(c[7]),
            delay_s=np.array(c[8], dtype=float),
            status_ok=np.array(c[9], dtype=bool),
            humidity=_floats(c[10]),
            battery=_floats(c[11]),
            kinds=list(c[12]),
            rh_lo=_floats(c[13]),
            rh_hi=_floats(c[14]),
        )


def build(
    sensor: str, rows: Sequence[Sequence[Any]], spans: dict[str, list[ProductSpan]]
) -> SensorData:
    return build_columns(sensor, Columns.from_rows(rows), spans)


def build_columns(sensor: str, cols: Columns, spans: dict[str, list[ProductSpan]]) -> SensorData:
    """The sensor's window with each reading's range narrowed by the products stored."""
    epoch = cols.epoch_s
    location = cols.location
    lo, hi = cols.lo.copy(), cols.hi.copy()
    rh_lo, rh_hi = cols.rh_lo.copy(), cols.rh_hi.copy()
    own_range = ~(np.isnan(lo) & np.isnan(hi))
    delay = np.where(own_range, cols.delay_s, np.inf)
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
    return SensorData(
        sensor=sensor,
        temperature=Window(
            epoch_s=epoch,
            seq=cols.seq,
            ok=cols.ok,
            temp=cols.temp,
            lo=lo,
            hi=hi,
            location=location,
            delay_s=delay,
        ),
        humidity=Window(
            epoch_s=epoch,
            seq=cols.seq,
            ok=cols.status_ok & ~np.isnan(cols.humidity),
            temp=cols.humidity,
            lo=rh_lo,
            hi=rh_hi,
            location=location,
            delay_s=delay,
        ),
        status_ok=cols.status_ok,
        battery=cols.battery,
        kinds=cols.kinds,
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
