"""Compliance KPIs over known data, on a real database."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from coldtrail.erp import kpi
from coldtrail.erp.capa import NewCapa, open_capa
from coldtrail.erp.holds import dispose, place_hold
from coldtrail.erp.movements import create_shipment, depart, record_movement
from coldtrail.erp.products import register_lot
from coldtrail.erp.signatures import Credentials
from coldtrail.errors import RuleViolation
from tests.conftest import GTIN, QA_PASSWORD, T0, make_erp

Conn = psycopg.Connection[tuple[Any, ...]]
M = timedelta(minutes=1)
H = timedelta(hours=1)


def _readings(conn: Conn, sensor: str, times: list[datetime], status: str = "ok") -> None:
    batch = conn.execute("INSERT INTO ingest_batches DEFAULT VALUES RETURNING id").fetchone()
    assert batch is not None
    start = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM readings WHERE sensor_id = %s", (sensor,)
    ).fetchone()
    assert start is not None
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (sensor_id, seq, ts, gateway, status, temperature_c, batch_id)"
            " VALUES (%s, %s, %s, 'gw', %s, 5.0, %s)",
            [(sensor, start[0] + i + 1, t, status, batch[0]) for i, t in enumerate(times)],
        )


def test_record_completeness_counts_gsp_intervals_with_a_valid_reading(conn: Conn) -> None:
    make_erp(conn)  # S1 in cold room CR (30 min intervals), S2 in truck compartment TC (5 min)
    _readings(conn, "S1", [T0 + 5 * M, T0 + 35 * M, T0 + 36 * M, T0 + 95 * M])
    _readings(conn, "S1", [T0 + 65 * M], status="unavailable")  # a gap stays a gap
    _readings(conn, "S2", [T0 + i * 5 * M for i in range(12)])  # first hour only

    got = {c.location_id: c for c in kpi.record_completeness(conn, T0, T0 + 2 * H)}

    assert sorted(got) == ["CR", "TC"]
    assert (got["CR"].sensors, got["CR"].intervals_expected, got["CR"].intervals_recorded) == (
        1, 4, 3,
    )  # fmt: skip
    assert got["CR"].ratio == 0.75
    assert (got["TC"].intervals_expected, got["TC"].intervals_recorded) == (24, 12)


def test_shipment_completeness_covers_the_journey_only(conn: Conn) -> None:
    make_erp(conn)
    _readings(conn, "S2", [T0 + i * 5 * M for i in range(12)])
    lot = register_lot(conn, "logi1", GTIN, "K1").id
    record_movement(conn, "logi1", lot, "receiving", 1, T0, to_location="CR")
    create_shipment(conn, "logi1", "SH1", "TRK", "s1", "Clinic")
    record_movement(
        conn, "logi1", lot, "loading", 1, T0 + 10 * M, from_location="CR", to_location="TC",
        shipment_id="SH1",
    )  # fmt: skip
    depart(conn, "logi1", "SH1", T0 + 30 * M)

    [tc] = kpi.shipment_completeness(conn, "SH1", now=T0 + 90 * M)
    assert (tc.location_id, tc.intervals_expected, tc.intervals_recorded) == ("TC", 12, 6)


def test_excursion_response_and_capa_cycle(conn: Conn) -> None:
    make_erp(conn)
    lot = register_lot(conn, "logi1", GTIN, "R1").id
    ids = []
    for sensor, delay, who, ack in (("S1", M, "qa1", 2 * M), ("S2", H, None, M)):
        le = conn.execute(
            "INSERT INTO location_excursions (location_id, started_at, last_seen_at, sensors,"
            " min_c, max_c, duration_s, degree_minutes, detected_at)"
            " VALUES ('CR', %s, %s, %s, 9, 9, 0, 0, %s) RETURNING id",
            (T0, T0, [sensor], T0 + delay),
        ).fetchone()
        assert le is not None
        conn.execute(
            "INSERT INTO alarms (key, kind, location_id, location_excursion_id, started_at,"
            " message, raised_at, acknowledged_by, acknowledged_at, ack_comment)"
            " VALUES (%s, 'excursion', 'CR', %s, %s, 'x', %s, %s, %s, %s)",
            (f"excursion:{le[0]}", le[0], T0, T0 + delay, who,
             T0 + delay + ack if who else None, "seen" if who else None),
        )  # fmt: skip
        ids.append(le[0])
    hold = place_hold(conn, "system:rules", lot, "excursion", T0 + M, excursion_id=ids[0])
    dispose(
        conn, "qa1", hold.id, "release", Credentials("qa1", QA_PASSWORD), "approval", "ok",
        T0 + 4 * H,
    )  # fmt: skip
    open_capa(conn, "qa1", NewCapa("x", "qa1", (T0 - 48 * H).date()), T0)

    resp = kpi.excursion_response(conn, T0, T0 + 24 * H)
    assert (resp.excursions, resp.unacknowledged, resp.holds_open) == (2, 1, 0)
    assert (resp.acknowledged.count, resp.acknowledged.median_s) == (1, 120.0)
    assert (resp.disposed.count, resp.disposed.max_s) == (1, (4 * H - M).total_seconds())
    cycle = kpi.capa_cycle(conn, T0, T0 + 24 * H)
    assert (cycle.closed.count, cycle.open, cycle.overdue) == (0, 1, 1)


def test_traceability_counts_lots_followed_from_their_receipt(conn: Conn) -> None:
    make_erp(conn)
    received = register_lot(conn, "logi1", GTIN, "T1").id
    record_movement(conn, "logi1", received, "receiving", 5, T0, to_location="CR")
    register_lot(conn, "logi1", GTIN, "T2")  # registered, never received
    returned = register_lot(conn, "logi1", GTIN, "T3").id
    record_movement(conn, "logi1", returned, "return", 1, T0, to_location="QZ")

    traced = kpi.traceability(conn)
    assert (traced.lots, traced.traced_from_receipt, traced.without_movements) == (3, 1, 1)
    assert traced.ratio == 0.5
    report = kpi.report(conn, T0, T0 + H)
    assert report["traceability"] == {
        "lots": 3, "traced_from_receipt": 1, "without_movements": 1, "ratio": 0.5,
    }  # fmt: skip
    with pytest.raises(RuleViolation, match="end of the period"):
        kpi.report(conn, T0, T0)
