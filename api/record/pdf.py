"""The record as a PDF for inspection and filing, in English and Chinese.

Latin text is set in Helvetica and Chinese in reportlab's built-in CID font STSong-Light, so
no font file ships and the numbers stay extractable as text. The chart of each probe draws
the allowed range as a band, shades excursions red and gaps grey, and breaks its line at
every gap: the envelope (lowest and highest value per column of the chart) keeps spikes
that thinning would drop.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from reportlab.graphics.shapes import Drawing, Line, Polygon, PolyLine, Rect, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.platypus import (
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Table,
    TableStyle,
)

from coldtrail.api.record.build import Channel, Record, Stats, utc
from coldtrail.api.record.forms import iso

CJK = "STSong-Light"
CHART_W, CHART_H = 170 * mm, 55 * mm
_PLOT_X, _PLOT_Y, _PLOT_W, _PLOT_H = 12 * mm, 8 * mm, 154 * mm, 42 * mm
GREY = colors.Color(0.55, 0.55, 0.55, alpha=0.35)
RED = colors.Color(0.9, 0.1, 0.1, alpha=0.25)
BAND = colors.Color(0.2, 0.7, 0.3, alpha=0.18)


def _fonts() -> None:
    if CJK not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(CJK))


def f2(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def percent(ratio: float | None) -> str:
    return "—" if ratio is None else f"{100 * ratio:.2f}"


def render(r: Record) -> bytes:
    _fonts()
    styles = getSampleStyleSheet()
    body = ParagraphStyle("b", parent=styles["BodyText"], fontSize=8, leading=10)
    small = ParagraphStyle("s", parent=body, fontSize=7, leading=8.5)
    h1 = ParagraphStyle("h1", parent=styles["Heading1"], fontSize=15)
    h2 = ParagraphStyle("h2", parent=styles["Heading2"], fontSize=11, spaceBefore=8)

    def zh(en: str, cn: str) -> str:
        return f'{en} <font name="{CJK}">{cn}</font>'

    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
        bottomMargin=18 * mm, title=f"Temperature record {r.subject.kind} {r.subject.id}",
        author="ColdTrail",
    )  # fmt: skip
    story: list[Any] = [
        Paragraph(zh("Continuous temperature record", "连续温度记录"), h1),
        _table(_header(r, zh), body, widths=[45 * mm, 135 * mm]),
        Paragraph(zh("Summary", "汇总"), h2),
        _table(
            _summary(r, zh),
            small,
            header=True,
            widths=[w * mm for w in (28, 15, 13, 14, 14, 14, 18, 18, 17, 29)],
        ),
        Paragraph(
            zh("Time any probe was out of range (min)", "任一探头超限时间(分钟)")
            + f": {minutes(r.out_of_range_s)}",
            body,
        ),
    ]
    story.append(Paragraph(zh("Charts", "温度曲线"), h2))
    for c in r.channels:
        story.append(
            KeepTogether(
                [
                    Paragraph(
                        f"{c.sensor_id} ({c.model} {c.serial}) — {c.location_name} "
                        f"{c.position}".strip(),
                        body,
                    ),
                    _chart(c, r),
                ]
            )
        )
    story.append(Paragraph(zh("Excursions and dispositions", "温度偏差及处理"), h2))
    if r.excursions:
        story.append(
            _table(_excursions(r, zh), small, header=True,
                   widths=[w * mm for w in (8, 11, 32, 32, 12, 12, 11, 13, 49)])
        )  # fmt: skip
    else:
        story.append(Paragraph(zh("No excursion in the period.", "期间无温度偏差。"), body))
    story.append(Paragraph(zh("Gaps in the record", "记录缺失"), h2))
    if r.gaps:
        rows = [[zh("Sensor", "探头"), zh("Place", "位置"), zh("From", "开始"), zh("To", "结束"),
                 zh("Minutes", "分钟"), zh("Unavailable", "无效读数"),
                 zh("Missing seq", "缺失序号")]]  # fmt: skip
        rows += [
            [g.sensor_id, g.location_id, iso(g.start), iso(g.end), minutes(g.duration_s),
             str(g.readings_unavailable), "—" if g.missing_seq is None else str(g.missing_seq)]
            for g in r.gaps
        ]  # fmt: skip
        story.append(_table(rows, small, header=True))
    else:
        story.append(Paragraph(zh("No gap in the period.", "期间无记录缺失。"), body))
    story.append(Paragraph(zh("Calibration", "校准"), h2))
    story.append(_table(_calibration(r, zh), small, header=True))
    story.append(Paragraph(zh("How to read this record", "说明"), h2))
    story.append(Paragraph(_DEFINITIONS, small))

    def footer(canvas: Any, document: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.drawString(15 * mm, 10 * mm, f"SHA-256 of the data (CSV form): {r.data_sha256}")
        canvas.drawRightString(A4[0] - 15 * mm, 10 * mm, f"page {document.page}")
        canvas.restoreState()

    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return out.getvalue()


_DEFINITIONS = (
    "Times are UTC. Each valid value stands for the time until the probe's next one, never "
    "longer than the GSP recording interval of the place (5 min in transport, 30 min in "
    "storage); mean kinetic temperature (USP &lt;1079.2&gt;, ΔH/R = 10 000 K) and time out of "
    "range weigh values by that time. A gap is a stretch longer than that interval without a "
    "valid value; gaps are shown, never filled. Completeness: of the interval-long slots from "
    "each probe's start, the share holding a valid value. The allowed range of each value is "
    "the one the rules engine judged it by. MKT is shown for information and does not clear "
    "an excursion. The readings themselves are in the CSV form of this record; its SHA-256 is "
    "printed at the foot of every page."
)


def _header(r: Record, zh: Any) -> list[list[str]]:
    s = r.subject
    rows = [
        [zh("Subject", "对象"), f"{s.kind} {s.id} — {s.name}"],
        [zh("Period (UTC)", "期间"), f"{iso(r.start)} to {iso(r.end)}"],
        [zh("Places", "位置"), ", ".join(s.locations)],
    ]
    if s.shipment is not None:
        ship = s.shipment
        rows.append([zh("Vehicle, state", "车辆、状态"), f"{ship.vehicle_id}, {ship.state}"])
    lots = "; ".join(f"{x.product} GTIN {x.gtin} lot {x.lot_number} ({x.status})" for x in r.lots)
    rows += [
        [zh("Lots", "批次"), lots or "—"],
        [zh("Generated", "生成时间"), iso(r.generated_at) or ""],
        [zh("Data SHA-256", "数据校验值"), r.data_sha256],
        [
            zh("Chain heads", "链头"),
            f"audit row {r.heads.audit_id} {r.heads.audit_hash[:16]}…, "
            f"readings link {r.heads.link} {r.heads.readings_hash[:16]}…",
        ],
    ]
    return rows


def _stats_row(label: str, s: Stats, cal: str) -> list[str]:
    return [
        label, str(s.readings), str(s.valid), f2(s.min_c), f2(s.max_c), f2(s.mean_c),
        f2(s.mkt_c), minutes(s.out_of_range_s), percent(s.completeness), cal,
    ]  # fmt: skip


def _summary(r: Record, zh: Any) -> list[list[str]]:
    rows = [[zh("Probe", "探头"), zh("Readings", "读数"), zh("Valid", "有效"),
             zh("Min °C", "最低"), zh("Max °C", "最高"), zh("Mean °C", "平均"),
             zh("MKT °C", "平均动力学温度"), zh("Out of range min", "超限分钟"),
             zh("Complete %", "完整率"), zh("Calibration", "校准")]]  # fmt: skip
    for c in r.channels:
        overdue = int(np.count_nonzero(c.calibration == 1))
        none = int(np.count_nonzero(c.calibration == 2))
        cal = (
            "none on file" if none else (f"overdue for {overdue} readings" if overdue else "valid")
        )
        rows.append(_stats_row(f"{c.sensor_id} @ {c.location_id}", c.stats, cal))
    rows.append(_stats_row("All probes", r.summary, ""))
    return rows


def _excursions(r: Record, zh: Any) -> list[list[str]]:
    rows = [[zh("No.", "编号"), zh("Place", "位置"), zh("Start", "开始"), zh("End", "结束"),
             zh("Min", "最低"), zh("Max", "最高"), zh("Minutes", "分钟"), zh("State", "状态"),
             zh("Dispositions and signatures", "处理及电子签名")]]  # fmt: skip
    for e in r.excursions:
        lines = []
        for d in e.dispositions:
            lines.append(f"Lot {d.lot_number} (GTIN {d.gtin}): hold {d.hold_id} {d.state}")
            for s in d.signatures:
                lines.append(
                    f"Signed by {s.signer_name} ({s.signer}, {s.signer_role}) at "
                    f"{iso(s.signed_at)}; meaning: {s.meaning}; {s.action}: {s.reason}"
                )
        if e.capa_id is not None:
            lines.append(f"CAPA {e.capa_id} ({e.capa_state})")
        rows.append(
            [str(e.id), e.location_id, iso(e.started_at) or "", iso(e.ended_at) or "open",
             f2(e.min_c), f2(e.max_c), minutes(e.duration_s), e.state,
             "<br/>".join(lines) or "no lot held"]
        )  # fmt: skip
    return rows


def _calibration(r: Record, zh: Any) -> list[list[str]]:
    rows = [[zh("Sensor", "探头"), zh("Serial", "序列号"), zh("Certificate", "证书"),
             zh("Issuer", "机构"), zh("Calibrated", "校准日期"), zh("Valid until", "有效期至"),
             zh("Result", "结果")]]  # fmt: skip
    seen: set[str] = set()
    for c in r.channels:
        if c.sensor_id in seen:
            continue
        seen.add(c.sensor_id)
        if not c.certificates:
            due = c.calibration_due.isoformat() if c.calibration_due else "none on file"
            rows.append([c.sensor_id, c.serial, "—", "—", "—", due, "—"])
        for x in c.certificates:
            rows.append(
                [c.sensor_id, c.serial, x.certificate_no, x.issuer, x.calibrated_on.isoformat(),
                 x.valid_until.isoformat(), "passed" if x.passed else "failed"]
            )  # fmt: skip
    return rows


def _table(
    rows: list[list[str]], style: ParagraphStyle, *, header: bool = False,
    widths: list[float] | None = None,
) -> Table:  # fmt: skip
    cells = [[Paragraph(str(v), style) for v in row] for row in rows]
    t = Table(cells, colWidths=widths, repeatRows=1 if header else 0)
    commands: list[tuple[Any, ...]] = [
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
    if header:
        commands.append(("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.9, 0.92, 0.95)))
    t.setStyle(TableStyle(commands))
    return t


def _chart(c: Channel, r: Record) -> Drawing:
    d = Drawing(CHART_W, CHART_H)
    a, b = c.start.timestamp(), c.end.timestamp()
    span = max(b - a, 1.0)
    valid = c.valid
    values = c.temp[valid]
    limits = np.concatenate([c.lo[~np.isnan(c.lo)], c.hi[~np.isnan(c.hi)]])
    pool = np.concatenate([values, limits]) if values.size or limits.size else np.array([0.0])
    y_lo, y_hi = float(pool.min()) - 1.0, float(pool.max()) + 1.0

    def x(t: float) -> float:
        return float(_PLOT_X + (t - a) / span * _PLOT_W)

    def y(v: float) -> float:
        return float(_PLOT_Y + (v - y_lo) / (y_hi - y_lo) * _PLOT_H)

    d.add(_rect(_PLOT_X, _PLOT_Y, _PLOT_W, _PLOT_H, None, colors.black, 0.4))
    _band(d, c, x, y, y_lo, y_hi)
    for e in r.excursions:
        if e.location_id != c.location_id:
            continue
        e0 = max(e.started_at.timestamp(), a)
        e1 = min((e.ended_at.timestamp() if e.ended_at else b), b)
        if e1 > e0:
            d.add(_rect(x(e0), _PLOT_Y, x(e1) - x(e0), _PLOT_H, RED))
    for g in c.gaps:
        g0, g1 = g.start.timestamp(), g.end.timestamp()
        d.add(_rect(x(g0), _PLOT_Y, max(x(g1) - x(g0), 0.5), _PLOT_H, GREY))
    for points in _envelope(c, a, span):
        coords: list[float] = []
        for t, v in points:
            coords += [x(t), y(v)]
        if len(coords) == 2:
            coords += [coords[0] + 0.5, coords[1]]
        d.add(PolyLine(coords, strokeColor=colors.Color(0.1, 0.25, 0.6), strokeWidth=0.6))
    for v in np.linspace(y_lo, y_hi, 5):
        d.add(Line(_PLOT_X - 1.5, y(v), _PLOT_X, y(v), strokeWidth=0.4))
        d.add(String(_PLOT_X - 2, y(v) - 2, f"{v:.1f}", fontName="Helvetica", fontSize=6,
                     textAnchor="end"))  # fmt: skip
    for t in np.linspace(a, b, 5):
        d.add(String(x(t), 2, iso(utc(t)), fontName="Helvetica", fontSize=5.5,
                     textAnchor="middle"))  # fmt: skip
    return d


def _rect(
    x: float, y: float, w: float, h: float, fill: colors.Color | None,
    stroke: colors.Color | None = None, width: float = 0.0,
) -> Rect:  # fmt: skip
    shape = Rect(x, y, w, h)
    shape.fillColor, shape.strokeColor, shape.strokeWidth = fill, stroke, width
    return shape


def _band(d: Drawing, c: Channel, x: Any, y: Any, y_lo: float, y_hi: float) -> None:
    """The allowed range as a stepped band following its changes over time."""
    if c.epoch_s.size == 0:
        return
    lo = np.where(np.isnan(c.lo), y_lo, np.clip(c.lo, y_lo, y_hi))
    hi = np.where(np.isnan(c.hi), y_hi, np.clip(c.hi, y_lo, y_hi))
    change = np.flatnonzero((np.diff(lo) != 0) | (np.diff(hi) != 0)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [c.epoch_s.size]))
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if np.isnan(c.lo[s]) and np.isnan(c.hi[s]):
            continue
        t0 = c.start.timestamp() if s == 0 else float(c.epoch_s[s])
        t1 = c.end.timestamp() if e == c.epoch_s.size else float(c.epoch_s[e])
        d.add(Polygon([x(t0), y(lo[s]), x(t1), y(lo[s]), x(t1), y(hi[s]), x(t0), y(hi[s])],
                      fillColor=BAND, strokeColor=None))  # fmt: skip


def _envelope(c: Channel, a: float, span: float) -> list[list[tuple[float, float]]]:
    """Runs of points to join, broken at every gap and every reading without a value."""
    valid = c.valid
    t = c.epoch_s
    breaks = ~valid
    if t.size > 1:
        step_over = np.concatenate(([False], np.diff(t) > c.interval_s))
        breaks = breaks | step_over
    segment = np.cumsum(breaks)
    keep = np.flatnonzero(valid)
    if keep.size == 0:
        return []
    tt, vv, seg = t[keep], c.temp[keep], segment[keep]
    column = np.floor((tt - a) / span * 2 * _PLOT_W).astype(np.int64)
    key = seg * (10 * int(2 * _PLOT_W) + 10) + column
    first = np.flatnonzero(np.concatenate(([True], np.diff(key) != 0)))
    lows = np.minimum.reduceat(vv, first)
    highs = np.maximum.reduceat(vv, first)
    times = tt[first]
    runs: list[list[tuple[float, float]]] = []
    last_seg = None
    for i, s in enumerate(seg[first].tolist()):
        if s != last_seg:
            runs.append([])
            last_seg = s
        runs[-1].append((float(times[i]), float(lows[i])))
        if highs[i] != lows[i]:
            runs[-1].append((float(times[i]), float(highs[i])))
    return runs
