"""Every dashboard panel's SQL, Grafana's macros expanded, run as the read-only reporting
role on a database with 40 days of demo data; plus the dashboards' JSON model."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from coldtrail.clock import ManualClock
from coldtrail.dashboards import boards
from coldtrail.dashboards.check import PanelRun, auto_interval, read_only, run_all, run_board
from coldtrail.dashboards.grafana import (
    DATASOURCE_UID,
    MacroError,
    QueryContext,
    expand,
    to_json,
)
from coldtrail.erp import conformance, gateways
from coldtrail.erp.movements import create_shipment, depart, record_movement
from coldtrail.erp.products import register_lot
from coldtrail.rules.engine import RulesEngine
from coldtrail.rules.impact import CapaPolicy
from tests.conftest import GTIN, T0, TIMESCALEDB, database_from, make_erp, template_from

Conn = psycopg.Connection[tuple[Any, ...]]
STEP = timedelta(minutes=2)
END = T0 + timedelta(days=40)
EXCURSION = (END - timedelta(hours=3), END - timedelta(hours=2))  # the truck front at 8.6 °C
GAP = (END - timedelta(minutes=50), END - timedelta(minutes=20))  # the cold room's probe silent


def _fill(conn: Conn, db_url: str) -> None:
    make_erp(conn)  # site s1: cold room CR (probe S1), truck TRK with front compartment TC (S2)
    lot1 = register_lot(conn, "logi1", GTIN, "L1").id
    record_movement(conn, "logi1", lot1, "receiving", 10, T0, to_location="CR")
    lot2 = register_lot(conn, "logi1", GTIN, "L2").id
    record_movement(conn, "logi1", lot2, "receiving", 10, T0, to_location="CR")
    create_shipment(conn, "logi1", "SH1", "TRK", "s1", "Customer A")
    loaded = END - timedelta(hours=5)
    record_movement(conn, "logi1", lot2, "loading", 10, loaded, from_location="CR",
                    to_location="TC", shipment_id="SH1")  # fmt: skip
    depart(conn, "logi1", "SH1", loaded)
    gateways.register(conn, "gw", "s1", "Cold room gateway")
    conn.execute("UPDATE sensors SET calibration_due = current_date + 10 WHERE id = 'S1'")

    # One ingest batch per sensor and day, committed when its last reading came in.
    seq = {"S1": 0, "S2": 0}
    day = T0
    while day < END:
        for sensor in ("S1", "S2"):
            until = min(day + timedelta(days=1), END + STEP)
            rows = []
            t = day
            while t < until:
                seq[sensor] += 1
                c = 5.0 + (seq[sensor] % 7) * 0.1
                if sensor == "S2" and EXCURSION[0] <= t < EXCURSION[1]:
                    c = 8.6
                if not (sensor == "S1" and GAP[0] <= t < GAP[1]):
                    rows.append((sensor, seq[sensor], t, c))
                t += STEP
            batch = conn.execute(
                "INSERT INTO ingest_batches (committed_at, readings) VALUES (%s, %s) RETURNING id",
                (rows[-1][2] + timedelta(seconds=20), len(rows)),
            ).fetchone()
            assert batch is not None
            with conn.cursor().copy(
                "COPY readings (sensor_id, seq, ts, received_at, gateway, status, temperature_c,"
                " batch_id) FROM STDIN"
            ) as copy:
                for s, n, ts, c in rows:
                    copy.write_row((s, n, ts, ts + timedelta(seconds=5), "gw", "ok", c, batch[0]))
        day += timedelta(days=1)
    conn.execute(
        """
        INSERT INTO sensor_latest (sensor_id, seq, ts, received_at, gateway, status, temperature_c)
        SELECT DISTINCT ON (sensor_id) sensor_id, seq, ts, received_at, gateway, status,
               temperature_c
        FROM readings ORDER BY sensor_id, ts DESC
        """
    )
    conn.execute(
        "INSERT INTO dead_letters (received_at, topic, payload, reason) VALUES "
        "(%s, 'coldtrail/v1/s1/gw/telemetry', 'not json', 'payload is not JSON')",
        (END - timedelta(minutes=30),),
    )
    # A reading of another site's sensor that the gateway was not allowed to report.
    conn.execute(
        "INSERT INTO quarantined_readings (received_at, topic, site_id, gateway, sensor_id, seq,"
        " ts, status, clock, temperature_c, rule, reason) VALUES (%s,"
        " 'coldtrail/v1/s1/gw/telemetry', 's1', 'gw', 'S-ELSEWHERE', 1, %s, 'ok', 'ok', 4.0,"
        " 'not_at_site', 'a gateway reports only for sensors placed at its site')",
        (END - timedelta(minutes=20), END - timedelta(minutes=21)),
    )
    clock = ManualClock(END + timedelta(minutes=3))
    RulesEngine(db_url, clock=clock, capa=CapaPolicy(owner="qa1")).process_pending(conn)
    # The rules worker's conformance checks, every 6 hours over the last days.
    at = END - timedelta(days=3)
    while at <= END:
        conformance.record(conn, at)
        at += timedelta(hours=6)


@pytest.fixture(scope="module")
def demo_template(template_db: str) -> Iterator[str]:
    with template_from(template_db, "ct_dashboards") as (name, url):
        with psycopg.connect(url, autocommit=True) as conn:
            _fill(conn, url)
        yield name


@pytest.fixture
def demo(demo_template: str) -> Iterator[Conn]:
    with database_from(demo_template) as url, psycopg.connect(url, autocommit=True) as conn:
        yield conn


RANGES = {"1h": timedelta(hours=1), "2d": timedelta(days=2), "35d": timedelta(days=35)}


def _runs(conn: Conn, span: timedelta) -> list[PanelRun]:
    return run_all(conn, boards.ALL, END - span, END + timedelta(minutes=1))


@pytest.mark.parametrize("span", RANGES.values(), ids=RANGES.keys())
def test_every_panel_runs_as_the_reporting_role_and_returns_its_columns(
    demo: Conn, span: timedelta
) -> None:
    runs = _runs(demo, span)
    assert len(runs) == sum(len(b.panels) for b in boards.ALL)
    for run in runs:
        where = f"{run.board} / {run.panel.title}"
        assert run.columns_ok, f"{where}: got {run.columns}, expects {run.panel.columns}"
        # In the last hour the excursion (2-3 h before the end) is out of some panels' period.
        if span > RANGES["1h"]:
            assert run.rows, f"{where}: no rows on the demo data"
        if run.panel.kind == "stat":
            assert len(run.rows) == 1, where
        if run.panel.kind == "timeseries":
            times = [r[0] for r in run.rows]
            assert times == sorted(times), f"{where}: a time series must come sorted by time"
            # A timestamp, or epoch seconds from $__timeGroupAlias (numeric in PostgreSQL 14+).
            assert all(isinstance(t, datetime | float | Decimal) for t in times), where


def _series(runs: list[PanelRun], board: str, title: str) -> list[tuple[Any, ...]]:
    [run] = [r for r in runs if r.board == board and r.panel.title == title]
    return run.rows


@pytest.mark.parametrize(
    ("span", "spacing_s"), [(RANGES["1h"], 120), (RANGES["2d"], 300), (RANGES["35d"], 3600)]
)
def test_temperature_series_come_from_the_table_fit_for_the_range(
    demo: Conn, span: timedelta, spacing_s: int
) -> None:
    rows = _series(_runs(demo, span), "coldtrail-fleet", "Compartment temperatures")
    times = sorted({r[0] for r in rows})
    steps = {round((b - a).total_seconds()) for a, b in itertools.pairwise(times)}
    assert steps == {spacing_s}


def test_long_ranges_never_read_the_readings_table(demo: Conn) -> None:
    """Beyond a week only the hourly rollup is read; the raw branch is pruned at plan time."""
    runs = _runs(demo, RANGES["35d"])
    [run] = [r for r in runs if r.panel.title == "Room temperatures"]
    if TIMESCALEDB:
        # What its refresh policy does every 15 minutes: the hourly rows are kept from here.
        demo.execute("CALL refresh_continuous_aggregate('readings_1h', NULL, NULL)")
    with read_only(demo):
        plan = [
            r[0]
            for r in demo.execute(b"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + run.sql.encode())
        ]
    text = "\n".join(plan)
    if TIMESCALEDB:
        # The materialised rows, and the readings only after the last refresh (real time).
        ids = demo.execute(
            "SELECT (SELECT id FROM _timescaledb_catalog.hypertable WHERE table_name = 'readings'),"
            " (SELECT h.id FROM _timescaledb_catalog.hypertable h"
            "  JOIN timescaledb_information.continuous_aggregates c"
            "  ON c.materialization_hypertable_name = h.table_name"
            "  WHERE c.view_name = 'readings_1h')"
        ).fetchone()
        assert ids is not None
        assert re.search(rf" on _hyper_{ids[1]}_\d+_chunk \(actual rows=[1-9]", text), text
        raw = [line for line in plan if re.search(rf" on _hyper_{ids[0]}_\d+_chunk ", line)]
        assert all("never executed" in line or "rows=0 " in line for line in raw), text
        return
    assert re.search(r" on readings_1h(_acc)?\b", text), text
    raw = [line for line in plan if re.search(r" on readings(_\d{4}_\d{2}|_default)?( |$)", line)]
    assert all("never executed" in line for line in raw), text


def test_a_gap_in_the_record_stays_a_gap(demo: Conn) -> None:
    rows = _series(_runs(demo, RANGES["1h"]), "coldtrail-storerooms", "Room temperatures")
    inside = [r for r in rows if GAP[0] <= r[0] < GAP[1]]
    assert rows
    assert not inside, "no value may be drawn where the probe sent none"


def test_the_shipment_board_shows_its_journey_excursion_and_held_lot(demo: Conn) -> None:
    runs = {r.panel.title: r for r in _runs(demo, RANGES["2d"]) if r.board != "x"}
    journey = runs["Journey"].rows
    assert [(r[0], r[4], r[7]) for r in journey] == [("SH1", "in_transit", "L2")]
    [exc] = runs["Excursions on the way"].rows
    assert (exc[1], exc[3], exc[5], exc[6]) == ("Truck front", EXCURSION[0], 8.6, 8.6)
    assert [r[1] for r in runs["Holds still open"].rows] == ["L2"]
    aboard = {r[1] for r in runs["Temperatures aboard"].rows}
    assert aboard == {"Truck front (S2)"}


def test_platform_health_counts_ingest_and_dead_letters(demo: Conn) -> None:
    runs = {r.panel.title: r for r in _runs(demo, RANGES["1h"])}
    assert runs["Latest dead letters"].rows[0][2] == "payload is not JSON"
    [gw] = runs["Gateways"].rows
    assert gw[:2] == ("gw", "s1")
    rate = runs["Readings stored per second"].rows
    assert sum(r[1] for r in rate) > 0


def test_the_reporting_role_cannot_change_the_record(demo: Conn) -> None:
    with demo.transaction():
        demo.execute("SET LOCAL ROLE coldtrail_readonly")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), demo.transaction():
            demo.execute("INSERT INTO dead_letters (topic, payload, reason) VALUES ('t', '', 'r')")


def test_dashboard_json_is_consistent() -> None:
    uids = [b.uid for b in boards.ALL]
    assert len(set(uids)) == len(uids)
    for board in boards.ALL:
        doc = to_json(board)
        assert len(doc["uid"]) <= 40
        assert re.fullmatch(r"[a-z0-9-]+", doc["uid"])
        ids = [p["id"] for p in doc["panels"]]
        assert len(set(ids)) == len(ids)
        cells: set[tuple[int, int]] = set()
        for p, panel in zip(doc["panels"], board.panels, strict=True):
            g = p["gridPos"]
            assert g["x"] >= 0, p["title"]
            assert g["x"] + g["w"] <= 24, p["title"]
            mine = {
                (x, y)
                for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])
            }
            assert not cells & mine, f"{p['title']} overlaps another panel"
            cells |= mine
            assert p["datasource"]["uid"] == DATASOURCE_UID
            assert p["targets"][0]["rawSql"] == panel.sql.strip()
            if panel.kind == "timeseries":
                assert panel.columns[0] == "time"
        defined = {v["name"] for v in doc["templating"]["list"]}
        used = set(re.findall(r"\$\{?([a-z]\w*)", " ".join(p.sql for p in board.panels)))
        assert used <= defined, f"{board.uid} uses undefined variables {used - defined}"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT $nosuch", "no value for template variable"),
        ("SELECT $__timeShiftedFilter(ts)", "not expanded here"),
        ("SELECT $__timeGroup(ts, 'fortnight')", "not a Grafana interval"),
    ],
)
def test_unknown_macros_and_variables_are_errors(sql: str, message: str) -> None:
    ctx = QueryContext(END - timedelta(hours=1), END)
    with pytest.raises(MacroError, match=message):
        expand(sql, ctx)


def test_macros_expand_as_grafana_documents() -> None:
    ctx = QueryContext(END - timedelta(hours=1), END, {"site": ["s1", "o'hara"]})
    out = expand(
        "SELECT $__timeGroupAlias(ts, $__interval), x FROM t WHERE $__timeFilter(ts) "
        "AND site IN ($site) AND y = ${site:sqlstring}",
        ctx,
    )
    day = END.strftime("%Y-%m-%d")
    expected = (
        'SELECT floor(extract(epoch from ts)/60)*60 AS "time", x FROM t WHERE '
        "ts BETWEEN 'DAYT09:00:00Z' AND 'DAYT10:00:00Z' "
        "AND site IN ('s1','o''hara') AND y = 's1','o''hara'"
    )
    assert out == expected.replace("DAY", day)
    assert auto_interval(END - timedelta(days=35), END) == timedelta(hours=1)


def test_one_board_can_be_run_with_chosen_variables(demo: Conn) -> None:
    ctx = QueryContext(END - timedelta(hours=1), END, {"site": ["nowhere"]})
    runs = run_board(demo, boards.FLEET, ctx)
    assert [r.rows for r in runs if r.panel.title == "Compartments now"] == [[]]
