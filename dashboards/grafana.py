"""Dashboards described as frozen dataclasses, rendered to Grafana's dashboard JSON; and
Grafana's SQL macros expanded as its PostgreSQL data source does, so panel SQL can be run and
checked without a Grafana server (tests, ``coldtrail dashboards check``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

DATASOURCE_TYPE = "grafana-postgresql-datasource"  # Grafana 10.2+; older ones call it postgres
DATASOURCE_UID = "coldtrail-pg"
SCHEMA_VERSION = 39

PanelKind = Literal["timeseries", "table", "stat", "barchart"]


@dataclass(frozen=True)
class Panel:
    title: str
    kind: PanelKind
    sql: str
    columns: tuple[str, ...]
    """The columns the panel reads, in order; ``time`` first for a time series."""
    description: str = ""
    unit: str = ""
    width: int = 12
    height: int = 8
    thresholds: tuple[tuple[float | None, str], ...] = ()
    """(from value, colour) steps; the first ``None`` is the base colour."""

    @property
    def format(self) -> Literal["time_series", "table"]:
        return "time_series" if self.kind == "timeseries" else "table"


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    sql: str
    multi: bool = False
    include_all: bool = False


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = ()
    tags: tuple[str, ...] = ("coldtrail",)
    time_from: str = "now-24h"
    refresh: str = "30s"
    folder: str = "coldtrail"


@dataclass(frozen=True)
class Folder:
    uid: str
    title: str


FOLDER = Folder("coldtrail", "ColdTrail")


def _layout(panels: Sequence[Panel]) -> list[dict[str, int]]:
    """Left to right, wrapping at Grafana's 24 columns; a row is as tall as its tallest."""
    out: list[dict[str, int]] = []
    x = y = row_h = 0
    for p in panels:
        if x + p.width > 24:
            x, y, row_h = 0, y + row_h, 0
        out.append({"x": x, "y": y, "w": p.width, "h": p.height})
        x += p.width
        row_h = max(row_h, p.height)
    return out


def to_json(board: Dashboard, datasource_uid: str = DATASOURCE_UID) -> dict[str, Any]:
    """The dashboard model Grafana's ``POST /api/dashboards/db`` takes (without ``id``)."""
    ds = {"type": DATASOURCE_TYPE, "uid": datasource_uid}
    panels: list[dict[str, Any]] = []
    for i, (p, pos) in enumerate(zip(board.panels, _layout(board.panels), strict=True), 1):
        steps = [{"color": c, "value": v} for v, c in (p.thresholds or ((None, "green"),))]
        panel: dict[str, Any] = {
            "id": i,
            "type": p.kind,
            "title": p.title,
            "description": p.description,
            "gridPos": pos,
            "datasource": ds,
            "targets": [
                {
                    "refId": "A",
                    "datasource": ds,
                    "editorMode": "code",
                    "format": p.format,
                    "rawQuery": True,
                    "rawSql": p.sql.strip(),
                }
            ],
            "fieldConfig": {
                "defaults": {
                    "unit": p.unit,
                    "thresholds": {"mode": "absolute", "steps": steps},
                },
                "overrides": [],
            },
            "options": {},
        }
        if p.kind == "stat":
            panel["options"] = {"colorMode": "background", "graphMode": "none"}
        panels.append(panel)
    return {
        "uid": board.uid,
        "title": board.title,
        "description": board.description,
        "tags": list(board.tags),
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "editable": False,  # changed in the repository, not in the browser
        "refresh": board.refresh,
        "time": {"from": board.time_from, "to": "now"},
        "templating": {
            "list": [
                {
                    "type": "query",
                    "name": v.name,
                    "label": v.label,
                    "datasource": ds,
                    "query": v.sql.strip(),
                    "definition": v.sql.strip(),
                    "refresh": 1,  # on dashboard load
                    "multi": v.multi,
                    "includeAll": v.include_all,
                    "sort": 1,
                }
                for v in board.variables
            ]
        },
        "panels": panels,
    }


# ------------------------------------------------------------------ macro expansion


@dataclass(frozen=True)
class QueryContext:
    """What Grafana knows when it runs a panel's query."""

    time_from: datetime
    time_to: datetime
    variables: Mapping[str, Sequence[str]] = field(default_factory=dict)
    interval: timedelta = timedelta(minutes=1)


class MacroError(ValueError):
    """A macro or variable in panel SQL that Grafana would not expand."""


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def interval_seconds(text: str) -> float:
    m = re.fullmatch(r"\s*'?(\d+(?:\.\d+)?)(ms|s|m|h|d|w)'?\s*", text)
    if m is None:
        raise MacroError(f"not a Grafana interval: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _iso(t: datetime) -> str:
    return "'" + t.strftime("%Y-%m-%dT%H:%M:%SZ") + "'"


def _grafana_interval(td: timedelta) -> str:
    s = td.total_seconds()
    for unit in ("d", "h", "m", "s"):
        if s >= _UNITS[unit] and s % _UNITS[unit] == 0:
            return f"{int(s // _UNITS[unit])}{unit}"
    return f"{int(s * 1000)}ms"


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def expand(sql: str, ctx: QueryContext) -> str:
    """Grafana's PostgreSQL macros and template variables, as its data source expands them
    (the plain-PostgreSQL forms: without the TimescaleDB switch, ``$__timeGroup`` is epoch
    arithmetic, not ``time_bucket``)."""
    if ctx.time_from.tzinfo is None or ctx.time_to.tzinfo is None:
        raise MacroError("the time range must be timezone-aware")

    def variable(m: re.Match[str]) -> str:
        name, fmt = m.group(1) or m.group(3), m.group(2)
        if name.startswith("__"):
            return m.group(0)  # a macro, handled below
        if name not in ctx.variables:
            raise MacroError(f"no value for template variable ${name}")
        values = list(ctx.variables[name])
        if not values:
            raise MacroError(f"template variable ${name} has no value selected")
        if fmt in (None, "sqlstring", "singlequote"):
            return ",".join(_sql_string(v) for v in values)
        if fmt == "raw":
            return ",".join(values)
        raise MacroError(f"format {fmt!r} of ${name} is not used by these dashboards")

    sql = re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)", variable, sql)

    def args_of(m: re.Match[str]) -> list[str]:
        return [a.strip() for a in m.group(2).split(",")] if m.group(2).strip() else []

    def macro(m: re.Match[str]) -> str:
        name, args = m.group(1), args_of(m)
        if name == "timeFilter":
            (col,) = args
            return f"{col} BETWEEN {_iso(ctx.time_from)} AND {_iso(ctx.time_to)}"
        if name == "timeFrom":
            return _iso(ctx.time_from)
        if name == "timeTo":
            return _iso(ctx.time_to)
        if name == "time":
            return f'{args[0]} AS "time"'
        if name in ("timeGroup", "timeGroupAlias"):
            col, width = args[0], interval_seconds(args[1])
            expr = f"floor(extract(epoch from {col})/{width:g})*{width:g}"
            return expr + (' AS "time"' if name == "timeGroupAlias" else "")
        if name == "unixEpochFilter":
            (col,) = args
            return (
                f"{col} >= {int(ctx.time_from.timestamp())} AND "
                f"{col} <= {int(ctx.time_to.timestamp())}"
            )
        raise MacroError(f"macro $__{name} is not expanded here")

    # Grafana puts in $__interval before the macros, which may take it as an argument.
    sql = sql.replace("$__interval_ms", str(int(ctx.interval.total_seconds() * 1000)))
    sql = sql.replace("$__interval", _grafana_interval(ctx.interval))
    sql = re.sub(r"\$__(\w+)\(([^()]*)\)", macro, sql)
    if "$" in re.sub(r"'[^']*'", "", sql):
        raise MacroError(f"left unexpanded: {sql[sql.index('$') :][:40]!r}")
    return sql
