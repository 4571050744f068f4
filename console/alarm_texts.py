"""An alarm's message in the reader's language. The rules write each alarm's message in
English, as data, with the numbers it was made from in its ``detail``; a Chinese page says it
again in Chinese from those numbers and the page's time zone. An alarm whose detail lacks a
number the sentence needs (raised before the rules kept it) keeps the rules' English.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from coldtrail.console.kit import LocalTimes
from coldtrail.rules.alarms import Alarm


def _bound(x: Any) -> str:
    return "—" if x is None else f"{float(x):g}"


def _excursion(a: Alarm, d: dict[str, Any], when: LocalTimes) -> str:
    late = "（延迟发现）" if d.get("late") else ""
    return (
        f"{a.location_id} 温度超出范围：{float(d['min_c']):.1f}..{float(d['max_c']):.1f} °C"
        f"（允许 {_bound(d['limit_min_c'])}..{_bound(d['limit_max_c'])} °C），"
        f"自 {when.short(a.started_at)} 起{late}"
    )


def _humidity(a: Alarm, d: dict[str, Any], when: LocalTimes) -> str:
    return (
        f"湿度 {float(d['min_pct']):.0f}..{float(d['max_pct']):.0f} %RH"
        f"（允许 {_bound(d['limit_min_pct'])}..{_bound(d['limit_max_pct'])} %RH）"
    )


def _unavailable(a: Alarm, d: dict[str, Any], when: LocalTimes) -> str:
    return f"记录仪自 {when.short(a.started_at)} 起无响应"


def _record_interval(a: Alarm, d: dict[str, Any], when: LocalTimes) -> str:
    return (
        f"{float(d['gap_s']) / 60:.0f} 分钟无记录，最长允许 {float(d['allowed_s']) / 60:.0f} 分钟"
    )


def _rapid_change(a: Alarm, d: dict[str, Any], when: LocalTimes) -> str:
    return (
        f"温度变化 {float(d['peak_c_per_min']):.1f} °C/分钟"
        f"（超过 {float(d['limit_c_per_min']):g} °C/分钟）：门是否未关好？"
    )


def _battery(a: Alarm, d: dict[str, Any], when: LocalTimes) -> str:
    return f"电池电量 {float(d['battery_pct']):.0f} %（低于 {float(d['limit_pct']):g} %）"


def _offline(a: Alarm, d: dict[str, Any], when: LocalTimes) -> str:
    last = datetime.fromisoformat(str(d["last_reading"]))
    return f"传感器 {a.sensor_id} 自 {when.short(last)} 起无数据"


def _calibration(a: Alarm, d: dict[str, Any], when: LocalTimes) -> str:
    return f"传感器 {a.sensor_id} 的校准已于 {d['calibration_due']} 到期"


ZH: dict[str, Callable[[Alarm, dict[str, Any], LocalTimes], str]] = {
    "excursion": _excursion,
    "humidity": _humidity,
    "unavailable": _unavailable,
    "record_interval": _record_interval,
    "rapid_change": _rapid_change,
    "battery_low": _battery,
    "offline": _offline,
    "calibration_overdue": _calibration,
}


def message(alarm: Alarm, lang: str, when: LocalTimes) -> str:
    """The alarm's message as a page in ``lang`` says it."""
    say = ZH.get(alarm.kind) if lang == "zh" else None
    if say is None:
        return alarm.message
    try:
        return say(alarm, alarm.detail, when)
    except (KeyError, TypeError, ValueError):
        return alarm.message  # raised before its detail held what the sentence needs
