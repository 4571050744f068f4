"""The record as a PDF for inspection and filing, in English and Chinese.

Every character, Latin or Chinese, labels and data alike, is set in WenQuanYi Micro Hei, a
TrueType font that ships in a package (``mpl-font``) and is embedded, cut to the characters
used: the PDF shows the same on a machine without any Chinese font, and ``pdftotext`` gives
the Chinese data back as text. Times are written in the site's time zone with their offset.

The chart of each probe draws the allowed range as a band with its limits as dashed lines
(labelled), shades excursions red and gaps grey, and breaks its line at every gap: the
envelope (lowest and highest value per column of the chart) keeps spikes that thinning
would drop.
"""

from __future__ import annotations

import functools
import importlib.util
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from reportlab.graphics.shapes import Drawing, Line, Polygon, PolyLine, Rect, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Table,
    TableStyle,
)

from coldtrail.api.record.build import Channel, Limit, Record, Stats
from coldtrail.rules.texts import zone

FONT = "WenQuanYiMicroHei"
CHART_W, CHART_H = 180 * mm, 62 * mm
_PLOT_X, _PLOT_Y, _PLOT_W, _PLOT_H = 16 * mm, 13 * mm, 160 * mm, 45 * mm
GREY = colors.Color(0.55, 0.55, 0.55, alpha=0.35)
RED = colors.Color(0.9, 0.1, 0.1, alpha=0.25)
BAND = colors.Color(0.2, 0.7, 0.3, alpha=0.18)
LIMIT = colors.Color(0.75, 0.2, 0.1)
LINE = colors.Color(0.1, 0.25, 0.6)

# States as a reader says them, in both languages: the codes stay in the JSON and CSV forms.
STATES = {
    "excursion": {"open": "ongoing 进行中", "closed": "ended 已结束",
                  "withdrawn": "withdrawn (later data) 已撤销"},
    "hold": {"open": "on hold 暂停待处理", "released": "released 已放行",
             "rejected": "rejected 已拒收"},
    "lot": {"available": "available 合格可用", "quarantined": "quarantined 隔离",
            "released": "released 已放行", "rejected": "rejected 不合格"},
    "shipment": {"planned": "planned 计划中", "in_transit": "in transit 运输中",
                 "delivered": "delivered 已送达", "cancelled": "cancelled 已取消"},
    "capa": {"open": "opened 已开启", "investigation": "under investigation 调查中",
             "actions": "actions under way 措施实施中",
             "effectiveness_check": "checking effectiveness 有效性检查",
             "closed": "closed 已关闭"},
    "meaning": {"authorship": "authorship 编写", "review": "review 审核",
                "approval": "approval 批准", "responsibility": "responsibility 负责",
                "verification": "verification 核实"},
}  # fmt: skip


def state(kind: str, code: str | None) -> str:
    if code is None:
        return "—"
    return STATES[kind].get(code, code.replace("_", " "))


def font_file() -> Path:
    """The font's file inside its package, found without importing the package (which
    would import matplotlib)."""
    spec = importlib.util.find_spec("mpl_font")
    if spec is None or spec.origin is None:
        raise RuntimeError("the PDF needs the package mpl-font (WenQuanYi Micro Hei)")
    return Path(spec.origin).parent / "fonts" / "wqy" / "wqy-microhei.ttc"


def register_fonts() -> None:
    if FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont(FONT, str(font_file()), subfontIndex=0))


def f2(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def percent(ratio: float | None) -> str:
    return "—" if ratio is None else f"{100 * ratio:.2f}"


def offset(at: datetime) -> str:
    """``+08:00``: the offset from UTC of a time given in a zone."""
    delta = at.utcoffset() or timedelta(0)
    sign = "-" if delta < timedelta(0) else "+"
    minutes_off = abs(int(delta.total_seconds())) // 60
    return f"{sign}{minutes_off // 60:02d}:{minutes_off % 60:02d}"


class Times:
    """Writes times in the site's zone, each with its offset (so a reader in another zone,
    or across a change of summer time, reads them right)."""

    def __init__(self, timezone: str) -> None:
        self.name = timezone
        self.tz = zone(timezone)

    def local(self, at: datetime) -> datetime:
        return at.astimezone(self.tz)

    def __call__(self, at: datetime | None) -> str:
        if at is None:
            return "—"
        t = self.local(at)
        fraction = f".{t.microsecond:06d}".rstrip("0") if t.microsecond else ""
        return f"{t:%Y-%m-%d %H:%M:%S}{fraction} {offset(t)}"

    def zone_label(self, start: datetime, end: datetime) -> str:
        first, last = offset(self.local(start)), offset(self.local(end))
        span = first if first == last else f"{first} → {last}"
        return f"{self.name} (UTC{span})"


def limit_text(x: Limit) -> str:
    if x.temp_min_c is None and x.temp_max_c is None:
        rng = "no range 未设定范围"
    elif x.temp_min_c is None:
        rng = f"≤ {x.temp_max_c:.1f} °C"
    elif x.temp_max_c is None:
        rng = f"≥ {x.temp_min_c:.1f} °C"
    else:
        rng = f"{x.temp_min_c:.1f} to {x.temp_max_c:.1f} °C"
    return f"{rng}, alarm after {_delay(x.alarm_delay_s)}"


def _delay(seconds: float) -> str:
    if seconds % 60 == 0:
        return f"{int(seconds) // 60} min"
    return f"{seconds:g} s"


class NumberedCanvas(Canvas):
    """Holds every page until the last so each footer can say "page N of M"."""

    def __init__(self, *args: Any, footer: Callable[[Canvas, int, int], None],
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self._footer = footer
        self._pages: list[dict[str, Any]] = []

    def showPage(self) -> None:
        self._pages.append(dict(self.__dict__))
        self._startPage()  # type: ignore[attr-defined]  # reportlab's, untyped

    def save(self) -> None:
        total = len(self._pages)
        for page in self._pages:
            self.__dict__.update(page)
            self._footer(self, self.getPageNumber(), total)
            super().showPage()
        super().save()


def styles() -> tuple[ParagraphStyle, ParagraphStyle, ParagraphStyle, ParagraphStyle]:
    """Body, small, title and heading, in our font (the record's and the validation pack's)."""
    register_fonts()
    body = ParagraphStyle("b", fontName=FONT, fontSize=8, leading=10.5)
    small = ParagraphStyle("s", parent=body, fontSize=7, leading=9)
    h1 = ParagraphStyle("h1", parent=body, fontSize=15, leading=19, spaceAfter=6)
    # A heading is kept with what follows it: none is left alone at the foot of a page.
    h2 = ParagraphStyle("h2", parent=body, fontSize=11, leading=14, spaceBefore=9,
                        spaceAfter=3, keepWithNext=1)  # fmt: skip
    return body, small, h1, h2


def build(story: list[Any], title: str, heading: str, bottom: str) -> bytes:
    """``story`` on A4 pages in our font, each page's foot naming ``heading`` with "page N of
    M" in both languages, and ``bottom`` (a hash) under it."""

    def footer(canvas: Canvas, page: int, total: int) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 7)
        canvas.drawString(15 * mm, 13 * mm, heading)
        canvas.drawRightString(
            A4[0] - 15 * mm, 13 * mm, f"page {page} of {total} 第 {page} 页 共 {total} 页"
        )
        canvas.drawString(15 * mm, 9.5 * mm, bottom)
        canvas.restoreState()

    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
        bottomMargin=20 * mm, title=title, author="ColdTrail",
        # Each page starts in this font: else Helvetica is named there, and not embedded.
        initialFontName=FONT,
    )  # fmt: skip
    doc.build(story, canvasmaker=functools.partial(NumberedCanvas, footer=footer))
    return out.getvalue()


def render(r: Record) -> bytes:
    when = Times(r.subject.timezone)
    body, small, h1, h2 = styles()
    caption = ParagraphStyle("c", parent=body, spaceBefore=4, keepWithNext=1)

    def zh(en: str, cn: str) -> str:
        return f"{en} {cn}"

    subject = f"{r.subject.kind} {r.subject.id}"
    story: list[Any] = [
        Paragraph(zh("Continuous temperature record", "连续温度记录") + " — " + escape(subject),
                  h1),
        table(_header(r, zh, when), body, widths=[45 * mm, 135 * mm]),
        Paragraph(zh("Summary", "汇总"), h2),
        table(
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
        Paragraph(zh("Allowed ranges and alarm delays", "允许温度范围及报警延迟"), h2),
        table(_limits(r, zh, when), small, header=True,
               widths=[w * mm for w in (28, 20, 42, 42, 48)]),
    ]  # fmt: skip
    story.append(Paragraph(zh("Charts", "温度曲线"), h2))
    for c in r.channels:
        story.append(
            KeepTogether(
                [
                    Paragraph(
                        escape(
                            f"{c.sensor_id} ({c.model} {c.serial}) — {c.location_name} "
                            f"{c.position}".strip()
                            + "; "
                            + "; ".join(limit_text(x) for x in c.limits)
                        ),
                        caption,
                    ),
                    _chart(c, r, when),
                ]
            )
        )
    story.append(Paragraph(zh("Excursions and dispositions", "温度偏差及处理"), h2))
    if r.excursions:
        story.append(
            table(_excursions(r, zh, when), small, header=True,
                   widths=[w * mm for w in (10, 12, 26, 26, 11, 11, 14, 20, 50)])
        )  # fmt: skip
    else:
        story.append(Paragraph(zh("No excursion in the period.", "期间无温度偏差。"), body))
    story.append(Paragraph(zh("Gaps in the record", "记录缺失"), h2))
    if r.gaps:
        rows = [[zh("Sensor", "探头"), zh("Place", "位置"), zh("From", "开始"), zh("To", "结束"),
                 zh("Minutes", "分钟"), zh("Unavailable", "无效读数"),
                 zh("Missing seq", "缺失序号")]]  # fmt: skip
        rows += [
            [g.sensor_id, g.location_id, when(g.start), when(g.end), minutes(g.duration_s),
             str(g.readings_unavailable), "—" if g.missing_seq is None else str(g.missing_seq)]
            for g in r.gaps
        ]  # fmt: skip
        story.append(table(rows, small, header=True,
                            widths=[w * mm for w in (22, 22, 38, 38, 16, 22, 22)]))  # fmt: skip
    else:
        story.append(Paragraph(zh("No gap in the period.", "期间无记录缺失。"), body))
    story.append(Paragraph(zh("Calibration", "校准"), h2))
    story.append(table(_calibration(r, zh), small, header=True))
    story.append(Paragraph(zh("How to read this record", "说明"), h2))
    story.append(Paragraph(_DEFINITIONS.format(zone=when.zone_label(r.start, r.end)), small))

    return build(
        story, f"Temperature record {subject}",
        f"Continuous temperature record 连续温度记录 — {subject}",
        f"SHA-256 of the data (CSV form): {r.data_sha256}",
    )  # fmt: skip


_DEFINITIONS = (
    "Times are given in the site's time zone, {zone}, each with its offset from UTC; the "
    "CSV, JSON and EPCIS forms give them in UTC. Each valid value stands for the time until "
    "the probe's next one, never longer than the GSP recording interval of the place (5 min "
    "in transport, 30 min in storage); mean kinetic temperature (USP &lt;1079.2&gt;, "
    "ΔH/R = 10 000 K) and time out of range weigh values by that time. A gap is a stretch "
    "longer than that interval without a valid value; gaps are shown, never filled. "
    "Completeness: of the interval-long slots from each probe's start, the share holding a "
    "valid value. The allowed range of each value is the one the rules engine judged it by: "
    "the place's own, narrowed by the profiles of the products stored there; a value out of "
    "range becomes an excursion once it has stayed out for the alarm delay (the place's own "
    "or, unset, the shortest of the products'). MKT is shown for information and does not "
    "clear an excursion. The readings themselves are in the CSV form of this record; its "
    "SHA-256 is printed at the foot of every page."
)


def _header(r: Record, zh: Any, when: Times) -> list[list[str]]:
    s = r.subject
    rows = [
        [zh("Subject", "对象"), f"{s.kind} {s.id} — {s.name}"],
        [zh("Period", "期间"), f"{when(r.start)} to {when(r.end)}"],
        [zh("Time zone", "时区"), when.zone_label(r.start, r.end)],
        [zh("Places", "位置"), ", ".join(s.locations)],
    ]
    if s.shipment is not None:
        ship = s.shipment
        rows.append([zh("Vehicle, state", "车辆、状态"),
                     f"{ship.vehicle_id}, {state('shipment', ship.state)}"])  # fmt: skip
        rows.append([zh("Destination", "目的地"), ship.destination])
    lots = "; ".join(
        f"{x.product} GTIN {x.gtin} lot {x.lot_number} ({state('lot', x.status)})" for x in r.lots
    )
    rows += [
        [zh("Lots", "批次"), lots or "—"],
        [zh("Generated", "生成时间"), when(r.generated_at)],
        [zh("Data SHA-256", "数据校验值"), r.data_sha256],
        [
            zh("Chain heads", "链头"),
            f"audit row {r.heads.audit_id} {r.heads.audit_hash[:16]}…, "
            f"readings link {r.heads.link} {r.heads.readings_hash[:16]}…",
        ],
    ]
    return rows


def _limits(r: Record, zh: Any, when: Times) -> list[list[str]]:
    rows = [[zh("Probe", "探头"), zh("Place", "位置"), zh("From", "开始"), zh("To", "结束"),
             zh("Range, alarm delay", "范围、报警延迟")]]  # fmt: skip
    for c in r.channels:
        for x in c.limits:
            rows.append([c.sensor_id, c.location_id, when(x.start), when(x.end), limit_text(x)])
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
            "no certificate on file 无校准证书"
            if none
            else (f"overdue for {overdue} readings 校准过期" if overdue else "valid 有效")
        )
        rows.append(_stats_row(f"{c.sensor_id} @ {c.location_id}", c.stats, cal))
    rows.append(_stats_row("All probes 全部探头", r.summary, ""))
    return rows


def _excursions(r: Record, zh: Any, when: Times) -> list[list[str]]:
    rows = [[zh("No.", "编号"), zh("Place", "位置"), zh("Start", "开始"), zh("End", "结束"),
             zh("Min", "最低"), zh("Max", "最高"), zh("Minutes", "分钟"), zh("State", "状态"),
             zh("Dispositions and signatures", "处理及电子签名")]]  # fmt: skip
    for e in r.excursions:
        lines = []
        for d in e.dispositions:
            lines.append(
                f"Lot {d.lot_number} (GTIN {d.gtin}): hold {d.hold_id} {state('hold', d.state)}"
            )
            for s in d.signatures:
                lines.append(
                    f"Signed by {s.signer_name} ({s.signer}, {s.signer_role}) at "
                    f"{when(s.signed_at)}; meaning: {state('meaning', s.meaning)}; "
                    f"{s.action}: {s.reason}"
                )
        if e.capa_id is not None:
            lines.append(f"CAPA {e.capa_id} ({state('capa', e.capa_state)})")
        words = state("excursion", e.state) + (", found late 延迟发现" if e.late else "")
        rows.append(
            [str(e.id), e.location_id, when(e.started_at),
             when(e.ended_at) if e.ended_at else "still out of range 仍超限",
             f2(e.min_c), f2(e.max_c), minutes(e.duration_s), words,
             Marked("<br/>".join(escape(x) for x in lines)) or "no lot held 无批次暂停"]
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
            due = c.calibration_due.isoformat() if c.calibration_due else "—"
            rows.append([c.sensor_id, c.serial, "no certificate on file 无校准证书", "—", "—",
                         due, "—"])  # fmt: skip
        for x in c.certificates:
            rows.append(
                [c.sensor_id, c.serial, x.certificate_no, x.issuer, x.calibrated_on.isoformat(),
                 x.valid_until.isoformat(), "passed 合格" if x.passed else "failed 不合格"]
            )  # fmt: skip
    return rows


class Marked(str):
    """A cell's text that is reportlab markup already (a line break between entries); any
    other text is escaped, so a name like ``Vaccine <10 ml> & co`` prints as written."""

    __slots__ = ()


def table(
    rows: list[list[str]], style: ParagraphStyle, *, header: bool = False,
    widths: list[float] | None = None,
) -> Table:  # fmt: skip
    cells = [[Paragraph(v if isinstance(v, Marked) else escape(str(v)), style) for v in row]
             for row in rows]  # fmt: skip
    t = Table(cells, colWidths=widths, repeatRows=1 if header else 0)
    commands: list[tuple[Any, ...]] = [
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
        ("FONT", (0, 0), (-1, -1), FONT),  # the cells' own (Helvetica) would be named
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
    if header:
        commands.append(("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.9, 0.92, 0.95)))
    t.setStyle(TableStyle(commands))
    return t


# Steps for the time axis, in seconds: the first giving at most six labels is taken.
_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800,
          604800, 1209600, 2592000)  # fmt: skip


def time_ticks(a: float, b: float, when: Times) -> list[tuple[float, str]]:
    """Labels at round local times (whole hours, midnights…) between two epochs."""
    span = max(b - a, 1.0)
    step = next((s for s in _STEPS if span / s <= 6), _STEPS[-1])
    start = when.local(datetime.fromtimestamp(a, UTC))
    if step < 86400:
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        since = (start - midnight).total_seconds()
        first = midnight + timedelta(seconds=np.ceil(since / step) * step)
    else:
        days = step // 86400
        first = start.replace(hour=0, minute=0, second=0, microsecond=0)
        if first < start:
            first += timedelta(days=1)
        first += timedelta(days=(-first.toordinal()) % days)
    ticks = []
    t = first
    while t.timestamp() <= b:
        local = when.local(t)
        label = f"{local:%H:%M}" if step < 86400 else ""
        day = f"{local:%m-%d}"
        ticks.append((t.timestamp(), f"{day} {label}".strip()))
        t = t + timedelta(seconds=step)
    return ticks


def y_span(c: Channel) -> tuple[float, float]:
    """A chart's temperature axis: the valid values and the limits, a degree either side."""
    values = c.temp[c.valid]
    limits = np.concatenate([c.lo[~np.isnan(c.lo)], c.hi[~np.isnan(c.hi)]])
    pool = np.concatenate([values, limits]) if values.size or limits.size else np.array([0.0])
    return float(pool.min()) - 1.0, float(pool.max()) + 1.0


def _chart(c: Channel, r: Record, when: Times) -> Drawing:
    d = Drawing(CHART_W, CHART_H, initialFontName=FONT)
    a, b = c.start.timestamp(), c.end.timestamp()
    span = max(b - a, 1.0)
    y_lo, y_hi = y_span(c)

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
    _limit_lines(d, c, x, y)
    for points in _envelope(c, a, span):
        coords: list[float] = []
        for t, v in points:
            coords += [x(t), y(v)]
        if len(coords) == 2:
            coords += [coords[0] + 0.5, coords[1]]
        d.add(PolyLine(coords, strokeColor=LINE, strokeWidth=0.6))
    for v in np.linspace(y_lo, y_hi, 5):
        d.add(Line(_PLOT_X - 1.5, y(v), _PLOT_X, y(v), strokeWidth=0.4))
        d.add(String(_PLOT_X - 2, y(v) - 2, f"{v:.1f}", fontName=FONT, fontSize=6,
                     textAnchor="end"))  # fmt: skip
    d.add(String(3 * mm, _PLOT_Y + _PLOT_H / 2, "°C", fontName=FONT, fontSize=7,
                 textAnchor="middle"))  # fmt: skip
    for t, label in time_ticks(a, b, when):
        d.add(Line(x(t), _PLOT_Y, x(t), _PLOT_Y - 1.5, strokeWidth=0.4))
        d.add(String(x(t), _PLOT_Y - 7, label, fontName=FONT, fontSize=5.5,
                     textAnchor="middle"))  # fmt: skip
    d.add(String(_PLOT_X, 1.5 * mm, f"Time 时间, {when.zone_label(c.start, c.end)}",
                 fontName=FONT, fontSize=6.5))  # fmt: skip
    legend = (
        (BAND, "allowed range 允许范围"), (RED, "excursion 温度偏差"), (GREY, "gap 记录缺失"),
    )  # fmt: skip
    lx = _PLOT_X + 52 * mm
    for fill, text in legend:
        d.add(_rect(lx, 1.2 * mm, 3 * mm, 2.5 * mm, fill))
        d.add(String(lx + 4 * mm, 1.5 * mm, text, fontName=FONT, fontSize=5.5))
        lx += 29 * mm
    d.add(Line(lx, 2.4 * mm, lx + 3 * mm, 2.4 * mm, strokeColor=LINE, strokeWidth=0.8))
    d.add(String(lx + 4 * mm, 1.5 * mm, "temperature 温度", fontName=FONT, fontSize=5.5))
    return d


def _limit_lines(d: Drawing, c: Channel, x: Any, y: Any) -> None:
    """Each limit as a dashed line over the stretch it held, its value written at its end."""
    for k, lim in enumerate(c.limits):
        last = k == len(c.limits) - 1
        for value, word in ((lim.temp_max_c, "max"), (lim.temp_min_c, "min")):
            if value is None:
                continue
            x0, x1 = x(lim.start.timestamp()), x(lim.end.timestamp())
            d.add(Line(x0, y(value), x1, y(value), strokeColor=LIMIT, strokeWidth=0.6,
                       strokeDashArray=[2, 1.5]))  # fmt: skip
            if last or x1 - x0 > 25 * mm:
                d.add(String(x1 - 1, y(value) + (1.2 if word == "max" else -5.5),
                             f"{word} {value:.1f} °C", fontName=FONT, fontSize=5.5,
                             fillColor=LIMIT, textAnchor="end"))  # fmt: skip


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
