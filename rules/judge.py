"""Excursions in sensors' readings, judged in order of measurement (numpy, no I/O).

A reading is decisive when it has a value and a range to judge it by: out of range, or in
range. A run of out-of-range readings starts at the first one and ends at the next in-range
reading; readings without a value (unavailable) and gaps in between never end it, since a gap
is not evidence of being in range. A run that moves to another location ends where the
sensor was moved. A run counts as an excursion once it has lasted the location's alarm delay.

The readings of many sensors are judged in one pass: their windows lie one after another,
each reading tagged with its sensor's group number, and nothing carries over a group's end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

import numpy as np

from coldtrail.rules.mkt import mkt


@dataclass(frozen=True)
class Window:
    """Readings of one or more sensors: grouped by sensor, ascending by time within each."""

    epoch_s: np.ndarray  # float
    seq: np.ndarray  # int
    ok: np.ndarray  # bool: status ok and a value
    temp: np.ndarray  # float, nan without a value
    lo: np.ndarray  # float, nan without a lower limit
    hi: np.ndarray  # float, nan without an upper limit
    loc: np.ndarray  # int: the place code of each reading (see ``names``)
    names: Sequence[str | None]  # place id by code
    delay_s: np.ndarray  # float
    group: np.ndarray  # int: the sensor of each reading, non-decreasing

    @cached_property
    def candidates(self) -> _Candidates:
        """Every run out of range, confirmed or not: worked out once per window, for the
        excursions found and for where judging must resume."""
        return _candidates(self)


def group_bounds(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each reading begins its group, and the index just past each reading's group."""
    n = group.size
    new = np.r_[True, group[1:] != group[:-1]] if n else np.zeros(0, bool)
    firsts = np.flatnonzero(new)
    stops = np.r_[firsts[1:], n]
    return new, stops[np.cumsum(new) - 1]


@dataclass(frozen=True)
class Run:
    location_id: str
    started_at: datetime
    start_seq: int
    ended_at: datetime | None
    end_seq: int | None
    last_seen_at: datetime
    limit_min_c: float | None
    limit_max_c: float | None
    min_c: float
    max_c: float
    duration_s: float
    degree_minutes: float
    mkt_c: float
    readings: int
    delay_s: float
    group: int = 0  # the sensor it was found in

    @property
    def confirmed(self) -> bool:
        return self.duration_s >= self.delay_s


def at(epoch: float) -> datetime:
    """An epoch in seconds as the aware UTC time it stands for (to the microsecond)."""
    return datetime.fromtimestamp(epoch, UTC)


def _opt(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


@dataclass(frozen=True)
class _Candidates:
    out: np.ndarray  # bool per reading
    starts: np.ndarray  # index of each run's first reading
    ends: np.ndarray  # index just past each run's last reading
    closed: np.ndarray  # bool: an in-range reading (or a move) ended it
    finish: np.ndarray  # epoch: until when each run lasted
    stop: np.ndarray  # per reading: the index just past its sensor's window


def _candidates(w: Window) -> _Candidates:
    """Every run out of range, confirmed or not."""
    n = w.epoch_s.size
    with np.errstate(invalid="ignore"):
        below = w.ok & (w.temp < w.lo)
        above = w.ok & (w.temp > w.hi)
    has_range = ~(np.isnan(w.lo) & np.isnan(w.hi))
    out = below | above
    inside = w.ok & has_range & ~out
    new_group, stop = group_bounds(w.group)
    moved = np.r_[False, w.loc[1:] != w.loc[:-1]] & ~new_group
    segment = np.cumsum(new_group | moved)
    # A run starts at an out-of-range reading whose previous decisive reading in the same
    # place (and sensor) was not out of range; it ends at the next in-range reading, or where
    # the sensor moved to another place; one still going at its sensor's last reading is open.
    decisive = np.flatnonzero(out | inside)
    d_out = out[decisive]
    same_place = np.r_[False, segment[decisive[1:]] == segment[decisive[:-1]]]
    previous_out = np.r_[False, d_out[:-1]] & same_place
    starts = decisive[d_out & ~previous_out]
    enders = np.flatnonzero(inside | moved)
    ender = np.append(enders, n)[np.searchsorted(enders, starts, side="right")]
    closed = ender < stop[starts]
    ends = np.where(closed, ender, stop[starts])
    # Closed, a run lasts until the reading that ends it; open, until its newest reading.
    finish = w.epoch_s[np.where(closed, ends, ends - 1)]
    return _Candidates(out, starts, ends, closed, finish, stop)


def open_runs(w: Window) -> tuple[np.ndarray, np.ndarray]:
    """(group, start epoch) of each run still going at its sensor's last reading, however
    short: where judging must start again next time."""
    if w.epoch_s.size == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    c = w.candidates
    s = c.starts[~c.closed]
    return w.group[s], w.epoch_s[s]


def find_runs(w: Window, *, confirmed_only: bool = False, with_mkt: bool = True) -> list[Run]:
    """Every run out of range in the window (only those past their alarm delay, if asked:
    the cheap test comes before the measures are worked out). Without ``with_mkt`` a run's
    MKT is left as nan, for who looks only at where and how far (replay)."""
    if w.epoch_s.size == 0:
        return []
    c = w.candidates
    out, starts, ends, closed, finish = c.out, c.starts, c.ends, c.closed, c.finish
    if confirmed_only:
        keep = finish - w.epoch_s[starts] >= w.delay_s[starts]
        starts, ends, closed, finish = starts[keep], ends[keep], closed[keep], finish[keep]
    if starts.size == 0:
        return []
    # Each out-of-range value stands until the next reading of the sensor (gaps included: a
    # gap is not in range); the newest value of a run still open stands for nothing yet.
    held = np.append(np.diff(w.epoch_s), 0.0)
    held[c.stop - 1] = 0.0
    with np.errstate(invalid="ignore"):
        excess = np.fmax(np.fmax(w.temp - w.hi, w.lo - w.temp), 0.0)
    area = np.where(out, np.nan_to_num(excess) * np.maximum(held, 0.0), 0.0)
    low = np.where(out, w.temp, np.inf)
    high = np.where(out, w.temp, -np.inf)
    edges = np.column_stack((starts, ends)).ravel()
    # reduceat over [start, end) pairs: every second result; a last end of n needs a pad.
    degree_min = np.add.reduceat(np.append(area, 0.0), edges)[::2] / 60.0
    min_c = np.minimum.reduceat(np.append(low, np.inf), edges)[::2]
    max_c = np.maximum.reduceat(np.append(high, -np.inf), edges)[::2]
    runs: list[Run] = []
    for k, (s, e, c) in enumerate(
        zip(starts.tolist(), ends.tolist(), closed.tolist(), strict=True)
    ):
        mkt_c = float("nan")
        if with_mkt:
            here = np.flatnonzero(out[s:e]) + s
            unique_t, first = np.unique(w.epoch_s[here], return_index=True)
            mkt_c = mkt(unique_t, w.temp[here][first]).mkt_c
        runs.append(
            Run(
                location_id=str(w.names[int(w.loc[s])]),
                started_at=at(float(w.epoch_s[s])),
                start_seq=int(w.seq[s]),
                ended_at=at(float(finish[k])) if c else None,
                end_seq=int(w.seq[e]) if c else None,
                last_seen_at=at(float(w.epoch_s[e - 1])),
                limit_min_c=_opt(w.lo[s]),
                limit_max_c=_opt(w.hi[s]),
                min_c=float(min_c[k]),
                max_c=float(max_c[k]),
                duration_s=float(finish[k] - w.epoch_s[s]),
                degree_minutes=float(degree_min[k]),
                mkt_c=mkt_c,
                readings=e - s,
                delay_s=float(w.delay_s[s]),
                group=int(w.group[s]),
            )
        )
    return runs


def same(a: object, b: object) -> bool:
    """Equal, floats within rounding: whether a recorded value needs rewriting."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return bool(a == b)


def bound(value: float | None) -> str:
    """A limit as people write it: ``8`` for 8.0, nothing for no limit."""
    return "" if value is None else f"{value:g}"
