"""An alarm's message in Chinese. The rules write each alarm's message in English, as data,
with the numbers it was made from in its ``detail``; the console's Chinese pages and the
notices sent to the alarm contacts say it again in Chinese from those numbers, with times in
the site's zone. An alarm whose detail lacks a number the sentence needs (raised before the
rules kept it) has no Chinese sentence: its English stands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True)
class Said:
    """What a sentence is made from: an alarm's kind, its numbers, place and start."""

    kind: str
    detail: dict[str, Any]
    location: str | None
    sensor: str | None
    started_at: datetime
    tz: ZoneInfo

    def short(self, at: datetime) -> str:
        return f"{at.astimezone(self.tz):%m-%d %H:%M:%S}"


def zone(name: str) -> ZoneInfo:
    """A site's time zone by its name; UTC for a name this machine does not know."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _bound(x: Any) -> str:
    return "—" if x is None else f"{float(x):g}"


def _excursion(a: Said) -> str:
    d = a.detail
    late = "（延迟发现）" if d.get("late") else ""
    return (
        f"{a.location} 温度超出范围：{float(d['min_c']):.1f}..{float(d['max_c']):.1f} °C"
        f"（允许 {_bound(d['limit_min_c'])}..{_bound(d['limit_max_c'])} °C），"
        f"自 {a.short(a.started_at)} 起{late}"
    )


def _humidity(a: Said) -> str:
    d = a.detail
    return (
        f"湿度 {float(d['min_pct']):.0f}..{float(d['max_pct']):.0f} %RH"
        f"（允许 {_bound(d['limit_min_pct'])}..{_bound(d['limit_max_pct'])} %RH）"
    )


def _unavailable(a: Said) -> str:
    return f"记录仪自 {a.short(a.started_at)} 起无响应"


def _record_interval(a: Said) -> str:
    d = a.detail
    return (
        f"{float(d['gap_s']) / 60:.0f} 分钟无记录，最长允许 {float(d['allowed_s']) / 60:.0f} 分钟"
    )


def _rapid_change(a: Said) -> str:
    d = a.detail
    return (
        f"温度变化 {float(d['peak_c_per_min']):.1f} °C/分钟"
        f"（超过 {float(d['limit_c_per_min']):g} °C/分钟）：门是否未关好？"
    )


def _battery(a: Said) -> str:
    d = a.detail
    return f"电池电量 {float(d['battery_pct']):.0f} %（低于 {float(d['limit_pct']):g} %）"


def _offline(a: Said) -> str:
    last = datetime.fromisoformat(str(a.detail["last_reading"]))
    return f"传感器 {a.sensor} 自 {a.short(last)} 起无数据"


def _calibration(a: Said) -> str:
    return f"传感器 {a.sensor} 的校准已于 {a.detail['calibration_due']} 到期"


ZH: dict[str, Callable[[Said], str]] = {
    "excursion": _excursion,
    "humidity": _humidity,
    "unavailable": _unavailable,
    "record_interval": _record_interval,
    "rapid_change": _rapid_change,
    "battery_low": _battery,
    "offline": _offline,
    "calibration_overdue": _calibration,
}


def chinese(said: Said) -> str | None:
    """The alarm's message in Chinese; None when its detail lacks what the sentence needs."""
    say = ZH.get(said.kind)
    if say is None:
        return None
    try:
        return say(said)
    except (KeyError, TypeError, ValueError):
        return None
