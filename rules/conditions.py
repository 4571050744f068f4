"""Conditions other than a temperature excursion, found in one sensor's window (numpy).

Each is a span of measurement time with a start and, once over, an end: humidity out of
range, the logger not answering (unavailable: power or link down at the logger), records
further apart than the site's compliance profile allows, temperature changing fast (a door
left open), battery low.
The silent sensor and the overdue calibration need no readings: ``timers`` finds those.
Like the excursions, they are found in many sensors' windows at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from coldtrail.rules.judge import at, bound, find_runs, open_runs
from coldtrail.rules.ranges import Readings


@dataclass(frozen=True)
class Limits:
    """Thresholds of the conditions; the GSP record intervals are from DOMAIN.md."""

    storage_interval_s: float = 30 * 60
    transport_interval_s: float = 5 * 60
    out_of_range_interval_s: float = 2 * 60
    rapid_change_c_per_min: float = 1.0
    # Two readings further apart than this say nothing about how fast it changed.
    rapid_change_span_s: float = 15 * 60
    # ... and closer than this say more about the probe's resolution than the room.
    rapid_change_min_span_s: float = 60.0
    battery_low_pct: float = 15.0
    unavailable_after_s: float = 120.0
    offline_after_s: float = 10 * 60


@dataclass(frozen=True)
class Condition:
    kind: str
    sensor: str
    location: str | None
    started_at: datetime
    ended_at: datetime | None
    message: str
    detail: dict[str, Any] = field(default_factory=dict)
    # What makes it the same alarm when found again; by default kind, sensor and start.
    identity: str | None = None

    @property
    def key(self) -> str:
        return self.identity or f"{self.kind}:{self.sensor}:{self.started_at.isoformat()}"


def find_conditions(data: Readings, limits: Limits) -> list[Condition]:
    if data.epoch_s.size == 0:
        return []
    return [
        *_humidity(data),
        *_unavailable(data, limits),
        *_record_interval(data, limits),
        *_rapid_change(data, limits),
        *_battery(data, limits),
    ]


def _humidity(data: Readings) -> list[Condition]:
    found = []
    for run in find_runs(data.humidity, confirmed_only=True):
        allowed = f"{bound(run.limit_min_c)}..{bound(run.limit_max_c)} %RH"
        found.append(
            Condition(
                "humidity",
                data.sensors[run.group],
                run.location_id,
                run.started_at,
                run.ended_at,
                f"humidity {run.min_c:.0f}..{run.max_c:.0f} %RH, allowed {allowed}",
                {
                    "min_pct": run.min_c,
                    "max_pct": run.max_c,
                    "limit_min_pct": run.limit_min_c,
                    "limit_max_pct": run.limit_max_c,
                    "duration_s": run.duration_s,
                },
            )
        )
    return found


def _spans(flag: np.ndarray, new_group: np.ndarray) -> list[tuple[int, int, bool]]:
    """Runs of flagged entries within a group: (first index, index just past it, whether it
    ended there, i.e. an unflagged entry of the same group follows)."""
    n = flag.size
    if n == 0:
        return []
    before = np.r_[False, flag[:-1]] & ~new_group
    starts = np.flatnonzero(flag & ~before)
    stops = np.flatnonzero(~flag | new_group)
    at = np.searchsorted(stops, starts, side="right")
    ends = np.append(stops, n)[at]
    ended = np.append(~new_group, False)[ends]
    return list(zip(starts.tolist(), ends.tolist(), ended.tolist(), strict=True))


def _unavailable(data: Readings, limits: Limits) -> list[Condition]:
    t = data.epoch_s
    new_group, stop = data.bounds
    found = []
    for s, e, ended in _spans(~data.status_ok, new_group):
        until = t[e] if ended else t[stop[s] - 1]
        if until - t[s] < limits.unavailable_after_s:
            continue
        found.append(
            Condition(
                "unavailable",
                data.sensor(s),
                data.location(s),
                at(t[s]),
                at(t[e]) if ended else None,
                f"logger not answering since {at(t[s]).isoformat()}",
                {"readings": e - s},
            )
        )
    return found


def _record_interval(data: Readings, limits: Limits) -> list[Condition]:
    t = data.epoch_s
    if t.size < 2:
        return []
    w = data.temperature
    with np.errstate(invalid="ignore"):
        out = w.ok & ((w.temp < w.lo) | (w.temp > w.hi))
    # The site's compliance profile where it gives an interval, the rules' own where not.
    usual = np.where(data.transport, limits.transport_interval_s, limits.storage_interval_s)
    usual = np.where(np.isnan(data.record_s), usual, data.record_s)
    while_out = np.where(
        np.isnan(data.out_of_range_s), limits.out_of_range_interval_s, data.out_of_range_s
    )
    allowed = np.where(out, while_out, usual)
    gaps = np.diff(t)
    same_sensor = data.group[1:] == data.group[:-1]
    found = []
    for i in np.flatnonzero((gaps > allowed[:-1]) & data.located[:-1] & same_sensor).tolist():
        found.append(
            Condition(
                "record_interval",
                data.sensor(i),
                data.location(i),
                at(t[i]),
                at(t[i + 1]),
                f"no record for {gaps[i] / 60:.0f} min, at most {allowed[i] / 60:.0f} min allowed",
                {"gap_s": float(gaps[i]), "allowed_s": float(allowed[i])},
            )
        )
    return found


def _rapid_change(data: Readings, limits: Limits) -> list[Condition]:
    """Each reading against the last one at least ``rapid_change_min_span_s`` before it (of
    the same sensor, and no more than ``rapid_change_span_s``): a probe's resolution step
    between readings seconds apart (0.1 °C in 5 s is 1.2 °C/min) is no door left open."""
    w = data.temperature
    idx = np.flatnonzero(w.ok)
    if idx.size < 2:
        return []
    t, v, g = w.epoch_s[idx], w.temp[idx], w.group[idx]
    # One sorted key over all sensors (sorted by sensor, then time) to find each reading's
    # partner in its own sensor's past; whole microseconds, so a partner exactly the minimum
    # span back is found whatever else is judged with it.
    us = np.round(t * 1e6).astype(np.int64)  # exact below 2**53 µs (the year 2255)
    us -= us.min()
    reach = int(us.max()) + 2 * round(limits.rapid_change_span_s * 1e6) + 1
    key = g.astype(np.int64) * reach + us
    j = np.searchsorted(key, key - round(limits.rapid_change_min_span_s * 1e6), side="right") - 1
    has = j >= 0
    jj = np.where(has, j, 0)
    dt = t - t[jj]
    same = has & (g[jj] == g) & (dt > 0) & (dt <= limits.rapid_change_span_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(same, np.abs(v - v[jj]) / (dt / 60.0), 0.0)
    fast = same & (rate > limits.rapid_change_c_per_min)
    new_group = np.r_[True, g[1:] != g[:-1]]
    found = []
    for s, e, ended in _spans(fast, new_group):
        peak = float(np.max(rate[s:e]))
        found.append(
            Condition(
                "rapid_change",
                data.sensor(int(idx[s])),
                data.location(int(idx[s])),
                at(t[jj[s]]),
                at(t[e - 1]) if ended else None,
                f"temperature changing {peak:.1f} °C/min "
                f"(over {limits.rapid_change_c_per_min:g} °C/min): door open?",
                {
                    "peak_c_per_min": peak,
                    "from_c": float(v[jj[s]]),
                    "to_c": float(v[e - 1]),
                    "limit_c_per_min": limits.rapid_change_c_per_min,
                },
            )
        )
    return found


def _battery(data: Readings, limits: Limits) -> list[Condition]:
    b = data.battery
    idx = np.flatnonzero(~np.isnan(b))
    if idx.size == 0:
        return []
    t, g = data.epoch_s[idx], data.group[idx]
    found = []
    for s, e, ended in _spans(b[idx] < limits.battery_low_pct, np.r_[True, g[1:] != g[:-1]]):
        found.append(
            Condition(
                "battery_low",
                data.sensor(int(idx[s])),
                data.location(int(idx[s])),
                at(t[s]),
                at(t[e]) if ended else None,
                f"battery {b[idx[s]]:.0f} % (below {limits.battery_low_pct:g} %)",
                {"battery_pct": float(b[idx[s]]), "limit_pct": limits.battery_low_pct},
            )
        )
    return found


def resume_from(
    data: Readings, found: Sequence[Condition]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each sensor with readings here (by group): its newest reading, and the measurement
    time the next judging must start from so that nothing still going at that reading is cut:
    a run out of range however short, a span of unavailable readings, an open condition; else
    the newest reading itself (gaps and rates need it). Epoch seconds."""
    none = np.zeros(0)
    if data.epoch_s.size == 0:
        return np.zeros(0, np.int64), none, none
    t = data.epoch_s
    new_group, stop = data.bounds
    firsts = np.flatnonzero(new_group)
    groups = data.group[firsts]
    newest = t[stop[firsts] - 1]
    resume = np.full(len(data.sensors), np.inf)
    resume[groups] = newest
    for window in (data.temperature, data.humidity):
        open_groups, starts = open_runs(window)
        np.minimum.at(resume, open_groups, starts)
    for s, _, ended in _spans(~data.status_ok, new_group):
        if not ended:
            g = int(data.group[s])
            resume[g] = min(resume[g], t[s])
    index = {sensor: g for g, sensor in enumerate(data.sensors)}
    for c in found:
        g = index.get(c.sensor, -1)
        if c.ended_at is None and g >= 0:
            resume[g] = min(resume[g], c.started_at.timestamp())
    return groups, newest, resume[groups]
