"""Running every panel's SQL as Grafana would: template variables resolved by their own
queries, macros expanded, inside a read-only transaction as the reporting role."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from coldtrail.dashboards.grafana import Dashboard, Panel, QueryContext, expand

Conn = psycopg.Connection[tuple[Any, ...]]
READONLY_ROLE = "coldtrail_readonly"


@dataclass(frozen=True)
class PanelRun:
    board: str
    panel: Panel
    sql: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    seconds: float

    @property
    def columns_ok(self) -> bool:
        return self.columns == self.panel.columns


@contextmanager
def read_only(conn: Conn, role: str | None = READONLY_ROLE) -> Iterator[Conn]:
    """A read-only transaction, as ``role`` if given (what Grafana's data source user has)."""
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        if role is not None:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        yield conn


def auto_interval(time_from: datetime, time_to: datetime, points: int = 1000) -> timedelta:
    """Grafana's $__interval: the range over the panel's width in points, rounded up."""
    steps = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 43200, 86400)
    raw = (time_to - time_from).total_seconds() / points
    return timedelta(seconds=next((s for s in steps if s >= raw), steps[-1]))


def variable_values(
    conn: Conn, board: Dashboard, ctx: QueryContext, role: str | None = READONLY_ROLE
) -> dict[str, list[str]]:
    """Each variable's values as Grafana offers them on load: all of a multi/All variable,
    the first of a single one. Later variables may use earlier ones."""
    values = {k: list(v) for k, v in ctx.variables.items()}
    for v in board.variables:
        if v.name in values:
            continue
        text = expand(v.sql, QueryContext(ctx.time_from, ctx.time_to, values, ctx.interval))
        with read_only(conn, role):
            found = [str(r[0]) for r in conn.execute(text.encode())]
        values[v.name] = found if (v.multi or v.include_all) else found[:1]
    return values


def run_board(
    conn: Conn, board: Dashboard, ctx: QueryContext, role: str | None = READONLY_ROLE
) -> list[PanelRun]:
    values = variable_values(conn, board, ctx, role)
    full = QueryContext(ctx.time_from, ctx.time_to, values, ctx.interval)
    runs = []
    for panel in board.panels:
        text = expand(panel.sql, full)
        with read_only(conn, role), conn.cursor() as cur:
            started = time.perf_counter()
            cur.execute(text.encode())
            rows = cur.fetchall()
            took = time.perf_counter() - started
            cols = tuple(d.name for d in cur.description or ())
        runs.append(PanelRun(board.uid, panel, text, cols, rows, took))
    return runs


def run_all(
    conn: Conn,
    boards: Sequence[Dashboard],
    time_from: datetime,
    time_to: datetime,
    role: str | None = READONLY_ROLE,
) -> list[PanelRun]:
    ctx = QueryContext(time_from, time_to, {}, auto_interval(time_from, time_to))
    return [run for b in boards for run in run_board(conn, b, ctx, role)]
