"""A probe's chart as inline SVG, drawn on the server: range band, excursions red, gaps grey,
the line broken at every gap, time labels in the site's zone.

A long series is thinned on the server before it is drawn (MinMaxLTTB, ``tsdownsample``):
a 30-day probe of 43 200 readings is sent as at most ``POINTS`` points, its peaks and dips
kept, so it draws as fast as an hour of readings.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import numpy as np
from tsdownsample import MinMaxLTTBDownsampler

from coldtrail.api.record.build import Channel, Record
from coldtrail.api.record.pdf import Times, time_ticks, y_span

W, H = 900.0, 260.0
LEFT, RIGHT, TOP, BOTTOM = 48.0, 12.0, 10.0, 34.0
POINTS = 1200
"""Points drawn per probe at most (about two per pixel column)."""


@dataclass(frozen=True)
class Chart:
    sensor_id: str
    title: str
    svg: str
    readings: int
    drawn: int


def thin(t: np.ndarray, v: np.ndarray, n_out: int) -> np.ndarray:
    """Indices of the points to draw: all of them when there are few."""
    if t.size <= n_out:
        return np.arange(t.size)
    return np.asarray(
        MinMaxLTTBDownsampler().downsample(  # type: ignore[no-untyped-call]
            t.astype(np.float64), v.astype(np.float64), n_out=n_out
        )
    )


def runs(c: Channel) -> list[np.ndarray]:
    """Index runs of valid readings to join, broken where the record has a gap."""
    keep = np.flatnonzero(c.valid)
    if keep.size == 0:
        return []
    t = c.epoch_s[keep]
    cut = np.flatnonzero(np.diff(t) > c.interval_s) + 1
    return [r for r in np.split(keep, cut) if r.size]


def chart(c: Channel, r: Record, when: Times, points: int = POINTS) -> Chart:
    a, b = c.start.timestamp(), c.end.timestamp()
    span = max(b - a, 1.0)
    y_lo, y_hi = y_span(c)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - a) / span * pw

    def y(v: float) -> float:
        return TOP + ph - (v - y_lo) / (y_hi - y_lo) * ph

    out: list[str] = []
    for lim in c.limits:
        if lim.temp_min_c is None and lim.temp_max_c is None:
            continue
        top = y(lim.temp_max_c) if lim.temp_max_c is not None else TOP
        bottom = y(lim.temp_min_c) if lim.temp_min_c is not None else TOP + ph
        x0, x1 = x(lim.start.timestamp()), x(lim.end.timestamp())
        out.append(_rect(x0, top, x1 - x0, bottom - top, "band"))
        for value in (lim.temp_min_c, lim.temp_max_c):
            if value is not None:
                out.append(f'<line class="limit" x1="{x0:.1f}" x2="{x1:.1f}" '
                           f'y1="{y(value):.1f}" y2="{y(value):.1f}"/>')  # fmt: skip
    for e in r.excursions:
        if e.location_id != c.location_id:
            continue
        e0 = max(e.started_at.timestamp(), a)
        e1 = min(e.ended_at.timestamp() if e.ended_at else b, b)
        if e1 > e0:
            out.append(_rect(x(e0), TOP, x(e1) - x(e0), ph, "excursion"))
    for g in c.gaps:
        g0, g1 = g.start.timestamp(), g.end.timestamp()
        out.append(_rect(x(g0), TOP, max(x(g1) - x(g0), 1.0), ph, "gap"))
    total = int(c.valid.sum())
    drawn = 0
    for run in runs(c):
        share = max(4, int(points * run.size / max(total, 1)))
        t, v = c.epoch_s[run], c.temp[run]
        pick = thin(t, v, min(share, run.size))
        drawn += pick.size
        coords = " ".join(f"{x(float(t[i])):.1f},{y(float(v[i])):.1f}" for i in pick.tolist())
        if pick.size == 1:
            coords += f" {x(float(t[pick[0]])) + 1:.1f},{y(float(v[pick[0]])):.1f}"
        out.append(f'<polyline class="line" points="{coords}"/>')
    out.append(_rect(LEFT, TOP, pw, ph, "frame"))
    for v in np.linspace(y_lo, y_hi, 5).tolist():
        out.append(f'<text class="tick" x="{LEFT - 4:.1f}" y="{y(v) + 3:.1f}" '
                   f'text-anchor="end">{v:.1f}</text>')  # fmt: skip
    for t, label in time_ticks(a, b, when):
        out.append(f'<text class="tick" x="{x(t):.1f}" y="{TOP + ph + 14:.1f}" '
                   f'text-anchor="middle">{escape(label)}</text>')  # fmt: skip
    out.append(f'<text class="axis" x="{LEFT:.1f}" y="{H - 4:.1f}">'
               f"{escape(when.zone_label(c.start, c.end))}</text>")  # fmt: skip
    out.append(f'<text class="axis" x="4" y="{TOP + 10:.1f}">°C</text>')
    title = f"{c.sensor_id} — {c.location_name} {c.position}".strip()
    svg = (
        f'<svg class="chart" viewBox="0 0 {W:.0f} {H:.0f}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(out)
        + "</svg>"
    )
    return Chart(c.sensor_id, title, svg, int(c.ts_us.size), drawn)


def _rect(x: float, y: float, w: float, h: float, cls: str) -> str:
    return f'<rect class="{cls}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}"/>'
