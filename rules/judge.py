"""Excursions in one sensor's readings, judged in order of measurement (numpy, no I/O).

A reading is decisive when it has a value and a range to judge it by: out of range, or in
range. A run of out-of-range readings starts at the first one and ends at the next in-range
reading; readings without a value (unavailable) and gaps in between never end it, since a gap
is not evidence of being in range. A run that moves to another location ends where the
sensor was moved. A run counts as an excursion once it has lasted the location's alarm delay.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from coldtrail.rules.mkt import mkt


@dataclass(frozen=True)
class Window:
    """One sensor's readings, ascending by time of measurement."""

    epoch_s: np.ndarray  # float
    seq: np.ndarray  # int
    ok: np.ndarray  # bool: status ok and a temperature
    temp: np.ndarray  # float, nan without a value
    lo: np.ndarray  # float, nan without a lower limit
    hi: np.ndarray  # float, nan without an upper limit
    location: list[str | None]
    delay_s: np.ndarray  # float


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

    @property
    def confirmed(self) -> bool:
        return self.duration_s >= self.delay_s


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _opt(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def find_runs(w: Window, *, confirmed_only: bool = False) -> list[Run]:
    """Every run out of range in the window (only those past their alarm delay, if asked:
    the cheap test comes before the measures are worked out)."""
    n = w.epoch_s.size
    if n == 0:
        return []
    with np.errstate(invalid="ignore"):
        below = w.ok & (w.temp < w.lo)
        above = w.ok & (w.temp > w.hi)
    has_range = ~(np.isnan(w.lo) & np.isnan(w.hi))
    out = below | above
    inside = w.ok & has_range & ~out
    codes: dict[str | None, int] = {}
    loc = np.fromiter((codes.setdefault(x, len(codes)) for x in w.location), np.int64, n)
    segment_start = np.r_[True, loc[1:] != loc[:-1]]
    segment = np.cumsum(segment_start)
    # A run starts at an out-of-range reading whose previous decisive reading in the same
    # location was not out of range; it ends at the next in-range reading, or where the
    # sensor moved to another location, whichever comes first.
    decisive = np.flatnonzero(out | inside)
    d_out = out[decisive]
    same_place = np.r_[False, segment[decisive[1:]] == segment[decisive[:-1]]]
    previous_out = np.r_[False, d_out[:-1]] & same_place
    starts = decisive[d_out & ~previous_out]
    enders = np.union1d(np.flatnonzero(inside), np.flatnonzero(segment_start)[1:])
    at = np.searchsorted(enders, starts, side="right")
    runs: list[Run] = []
    for s, k in zip(starts.tolist(), at.tolist(), strict=True):
        end = int(enders[k]) if k < enders.size else None
        if confirmed_only:
            finish = w.epoch_s[end if end is not None else n - 1]
            if finish - w.epoch_s[s] < w.delay_s[s]:
                continue
        runs.append(_run(w, out, s, end if end is not None else n, end))
    return runs


def _run(w: Window, out: np.ndarray, s: int, e: int, end: int | None) -> Run:
    span = slice(s, e)
    values = w.temp[span][out[span]]
    times = w.epoch_s[span][out[span]]
    lo, hi = w.lo[s], w.hi[s]
    last_seen = float(w.epoch_s[e - 1])
    finish = float(w.epoch_s[end]) if end is not None else last_seen
    # Each out-of-range value stands until the next reading of the sensor (gaps included: a
    # gap is not in range); the newest value of a run still open stands for nothing yet.
    nxt = np.append(w.epoch_s[s + 1 : e], finish)[out[span]]
    held = np.maximum(nxt - times, 0.0)
    excess = np.maximum(
        np.nan_to_num(values - hi, nan=0.0), np.nan_to_num(lo - values, nan=0.0)
    ).clip(min=0.0)
    unique_t, first = np.unique(times, return_index=True)
    return Run(
        location_id=str(w.location[s]),
        started_at=_at(float(w.epoch_s[s])),
        start_seq=int(w.seq[s]),
        ended_at=_at(finish) if end is not None else None,
        end_seq=int(w.seq[end]) if end is not None else None,
        last_seen_at=_at(last_seen),
        limit_min_c=_opt(lo),
        limit_max_c=_opt(hi),
        min_c=float(values.min()),
        max_c=float(values.max()),
        duration_s=finish - float(w.epoch_s[s]),
        degree_minutes=float(np.sum(excess * held) / 60.0),
        mkt_c=mkt(unique_t, values[first]).mkt_c,
        readings=int(e - s),
        delay_s=float(w.delay_s[s]),
    )


def same(a: object, b: object) -> bool:
    """Equal, floats within rounding: whether a recorded value needs rewriting."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return bool(a == b)


def bound(value: float | None) -> str:
    """A limit as people write it: ``8`` for 8.0, nothing for no limit."""
    return "" if value is None else f"{value:g}"
