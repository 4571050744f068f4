"""Sensors' readings as the rules judge them, with each reading's effective range.

A place's effective range at a moment is the strictest of its own setting (when it has a
range of its own) and the profiles of the products stored there then: the highest lower
limit, the lowest upper limit and the shortest alarm delay. Humidity likewise. A place with
neither a range nor products has nothing to judge by.

Places are numbered (code 0: in no place) so that every per-reading attribute is a numpy
array and nothing is done reading by reading in Python.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from coldtrail.errors import RuleViolation
from coldtrail.rules.judge import Window, group_bounds

TRANSPORT = ("vehicle", "compartment")


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
class RangePatch:
    """A changed setting to try (replay): what is None stays as it is."""

    temp_min_c: float | None = None
    temp_max_c: float | None = None
    alarm_delay_s: float | None = None


@dataclass(frozen=True)
class Places:
    """Every place's own settings, by code; code 0 is "in no place" and judges nothing."""

    ids: list[str | None]
    lo: np.ndarray
    hi: np.ndarray
    delay_s: np.ndarray
    rh_lo: np.ndarray
    rh_hi: np.ndarray
    transport: np.ndarray  # bool: readings there must be recorded at the transport interval
    record_s: np.ndarray
    """Longest time between records there by the site's compliance profile (storage or
    transport); NaN: the rules' own limits."""
    out_of_range_s: np.ndarray
    """The same while out of range; NaN: the rules' own limits."""

    @cached_property
    def code(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.ids) if p is not None}

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[Sequence[Any]],
        patches: dict[str, RangePatch] | None = None,
        intervals: Mapping[str, RecordIntervals] | None = None,
    ) -> Places:
        """From rows of (id, temp min, temp max, alarm delay, kind, rh min, rh max[, the
        site's compliance profile]), with the settings of some places patched (replay) and
        the record intervals of each profile (``intervals``, by profile id)."""
        patches = patches or {}
        intervals = intervals or {}
        table: list[tuple[Any, ...]] = [(None, None, None, None, None, None, None)]
        record: list[float] = [math.nan]
        out_of_range: list[float] = [math.nan]
        for loc, lo, hi, delay, kind, rh_lo, rh_hi, *site_profile in rows:
            ruled = intervals.get(site_profile[0]) if site_profile else None
            if ruled is None:
                record.append(math.nan)
                out_of_range.append(math.nan)
            else:
                record.append(ruled.transport_s if kind in TRANSPORT else ruled.storage_s)
                out_of_range.append(ruled.out_of_range_s)
            patch = patches.get(loc)
            if patch is not None:
                lo = lo if patch.temp_min_c is None else patch.temp_min_c
                hi = hi if patch.temp_max_c is None else patch.temp_max_c
                delay = delay if patch.alarm_delay_s is None else patch.alarm_delay_s
            table.append((loc, lo, hi, delay, kind, rh_lo, rh_hi))
        unknown = set(patches) - {t[0] for t in table}
        if unknown:
            raise RuleViolation(f"no location {', '.join(sorted(unknown))}")
        c = list(zip(*table, strict=True))
        return cls(
            ids=list(c[0]),
            lo=_floats(c[1]),
            hi=_floats(c[2]),
            delay_s=_floats(c[3]),  # NaN: unset, the products' delays apply
            rh_lo=_floats(c[5]),
            rh_hi=_floats(c[6]),
            transport=np.array([k in TRANSPORT for k in c[4]], dtype=bool),
            record_s=np.array(record, dtype=float),
            out_of_range_s=np.array(out_of_range, dtype=float),
        )


@dataclass(frozen=True)
class RecordIntervals:
    """A compliance profile's longest times between records (seconds; NaN: none given)."""

    storage_s: float
    transport_s: float
    out_of_range_s: float


def spans_by_location(
    rows: Iterable[Sequence[Any]],
    patches: dict[str, RangePatch] | None = None,
    history: Sequence[RangeChange] = (),
    moves: Sequence[RangeChange] = (),
    profiles: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, list[ProductSpan]]:
    """From the rows of ``PRODUCT_RANGES``, with profile settings patched by profile id, and
    each span as it was in force: split where its product was moved to another profile
    (``moves``, by GTIN: before a move, the profile it came from, whose values ``profiles``
    gives by id) and where a profile was changed (``history``: before a change, the values it
    changed from)."""
    by_subject: dict[str, list[RangeChange]] = {}
    for change in sorted([*history, *moves], key=lambda c: c.at_s):
        by_subject.setdefault(change.subject, []).append(change)
    spans: dict[str, list[ProductSpan]] = {}
    for loc, start, end, *values, profile, gtin in (_with_product(r) for r in rows):
        moved = by_subject.get(gtin, []) if gtin else []
        for a, b in _pieces(start, end, moved):
            then = next((c.before for c in moved if c.at_s >= b), None)
            held = str(then["profile_id"]) if then and "profile_id" in then else profile
            own = values if held == profile else (profiles or {}).get(held)
            if own is None:  # a profile since deleted: the one it has now
                held, own = profile, values
            _add(spans, loc, a, b, held, own, (patches or {}).get(held), by_subject.get(held, []))
    return spans


def _with_product(row: Sequence[Any]) -> Sequence[Any]:
    """A row of (location, start, end, five values, profile[, GTIN])."""
    return row if len(row) == 10 else (*row, None)


def _pieces(start: float, end: float, changes: Sequence[RangeChange]) -> list[tuple[float, float]]:
    cuts = [c.at_s for c in changes if start < c.at_s < end]
    return list(itertools.pairwise([start, *cuts, end]))


def _add(
    spans: dict[str, list[ProductSpan]], loc: str, start: float, end: float, profile: str,
    values: Sequence[Any], patch: RangePatch | None, changes: Sequence[RangeChange],
) -> None:  # fmt: skip
    lo, hi, delay, rh_lo, rh_hi = values
    if patch is not None:
        lo = lo if patch.temp_min_c is None else patch.temp_min_c
        hi = hi if patch.temp_max_c is None else patch.temp_max_c
        delay = delay if patch.alarm_delay_s is None else patch.alarm_delay_s
        changes = ()  # a patched profile holds its patch over the whole period
    now = {"temp_min_c": lo, "temp_max_c": hi, "alarm_delay_s": delay, "rh_min_pct": rh_lo,
           "rh_max_pct": rh_hi}  # fmt: skip
    for a, b in _pieces(start, end, changes):
        # In force over [a, b): what the first change at or after b changed from.
        then = next((c.before for c in changes if c.at_s >= b), None)
        v = {**now, **{k: then[k] for k in now if k in then}} if then else now
        spans.setdefault(loc, []).append(
            ProductSpan(a, b, _f(v["temp_min_c"]), _f(v["temp_max_c"]),
                        float(v["alarm_delay_s"]), _f(v["rh_min_pct"]), _f(v["rh_max_pct"]))
        )  # fmt: skip


@dataclass(frozen=True)
class Columns:
    """The readings of one or more sensors' windows, column by column: grouped by sensor
    (``group`` indexes ``sensors``), ascending by time of measurement within each."""

    sensors: Sequence[str]
    group: np.ndarray
    epoch_s: np.ndarray
    seq: np.ndarray
    status_ok: np.ndarray  # the logger answered
    temp: np.ndarray  # nan without a value
    humidity: np.ndarray
    battery: np.ndarray
    loc: np.ndarray  # place code, 0: in no place
    places: Places

    @property
    def size(self) -> int:
        return int(self.epoch_s.size)


@dataclass(frozen=True)
class Readings:
    """Everything the rules look at in the windows, with the ranges in force."""

    sensors: Sequence[str]
    temperature: Window
    humidity: Window
    status_ok: np.ndarray
    battery: np.ndarray
    located: np.ndarray  # bool: the sensor was assigned to a place
    transport: np.ndarray  # bool: that place is a vehicle or compartment
    record_s: np.ndarray  # longest gap allowed there by the site's profile; NaN: the rules'
    out_of_range_s: np.ndarray  # the same while out of range

    @property
    def epoch_s(self) -> np.ndarray:
        return self.temperature.epoch_s

    @property
    def group(self) -> np.ndarray:
        return self.temperature.group

    @cached_property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Whether each reading begins its sensor's window, and the index past that window."""
        return group_bounds(self.group)

    def sensor(self, i: int) -> str:
        return self.sensors[int(self.group[i])]

    def location(self, i: int) -> str | None:
        return self.temperature.names[int(self.temperature.loc[i])]


@dataclass(frozen=True)
class RangeChange:
    """A signed change of a place's or a storage profile's range (change control): before
    ``at_s`` the values of ``subject`` (a place's or a profile's id) were ``before``."""

    subject: str
    at_s: float
    before: Mapping[str, Any]


def with_ranges(
    cols: Columns, spans: dict[str, list[ProductSpan]], history: Sequence[RangeChange] = ()
) -> Readings:
    """The windows with each reading's range narrowed by the products stored at the time;
    a place's own range and delay as they were when the reading was taken (``history``: the
    place's signed changes), not as they are now."""
    p = cols.places
    loc = cols.loc
    lo, hi = p.lo[loc], p.hi[loc]
    rh_lo, rh_hi = p.rh_lo[loc], p.rh_hi[loc]
    place_delay = p.delay_s[loc]
    # Newest first: a reading before several changes ends with the oldest one's "before".
    for change in sorted(history, key=lambda c: c.at_s, reverse=True):
        code = p.code.get(change.subject)
        if code is None:
            continue
        idx = np.flatnonzero((loc == code) & (cols.epoch_s < change.at_s))
        for values, key in ((lo, "temp_min_c"), (hi, "temp_max_c"), (rh_lo, "rh_min_pct"),
                            (rh_hi, "rh_max_pct"), (place_delay, "alarm_delay_s")):  # fmt: skip
            if key in change.before:
                values[idx] = _f(change.before[key])
    own_range = ~(np.isnan(lo) & np.isnan(hi))
    delay = np.where(own_range & ~np.isnan(place_delay), place_delay, np.inf)
    for place, place_spans in spans.items():
        code = p.code.get(place)
        if code is None:
            continue
        here = np.flatnonzero(loc == code)
        if here.size == 0:
            continue
        t = cols.epoch_s[here]
        for span in place_spans:
            idx = here[(t >= span.start) & (t < span.end)]
            if idx.size == 0:
                continue
            _tighten(lo, idx, span.lo, np.fmax)
            _tighten(hi, idx, span.hi, np.fmin)
            _tighten(delay, idx, span.delay_s, np.fmin)
            _tighten(rh_lo, idx, span.rh_lo, np.fmax)
            _tighten(rh_hi, idx, span.rh_hi, np.fmin)
    delay = np.where(np.isinf(delay), 0.0, delay)
    temperature = Window(
        epoch_s=cols.epoch_s,
        seq=cols.seq,
        ok=cols.status_ok & ~np.isnan(cols.temp),
        temp=cols.temp,
        lo=lo,
        hi=hi,
        loc=loc,
        names=p.ids,
        delay_s=delay,
        group=cols.group,
    )
    return Readings(
        sensors=cols.sensors,
        temperature=temperature,
        humidity=replace(
            temperature,
            ok=cols.status_ok & ~np.isnan(cols.humidity),
            temp=cols.humidity,
            lo=rh_lo,
            hi=rh_hi,
        ),
        status_ok=cols.status_ok,
        battery=cols.battery,
        located=loc != 0,
        transport=p.transport[loc],
        record_s=p.record_s[loc],
        out_of_range_s=p.out_of_range_s[loc],
    )


def _tighten(values: np.ndarray, idx: np.ndarray, limit: float, pick: np.ufunc) -> None:
    if not np.isnan(limit):
        values[idx] = pick(values[idx], limit)


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _f(value: Any) -> float:
    return float("nan") if value is None else float(value)
