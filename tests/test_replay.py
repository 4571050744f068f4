"""Replay: a past period judged again under changed settings, live records untouched."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest

from coldtrail.clock import ManualClock
from coldtrail.erp.movements import record_movement
from coldtrail.erp.products import register_lot
from coldtrail.errors import RuleViolation
from coldtrail.rules.engine import RulesEngine
from coldtrail.rules.impact import CapaPolicy
from coldtrail.rules.ranges import RangePatch
from coldtrail.rules.replay import replay
from tests.conftest import GTIN, T0, make_erp
from tests.test_rules_event_time import _store

Conn = psycopg.Connection[tuple[Any, ...]]
M = timedelta(minutes=1)
H = timedelta(hours=1)

_COUNTS = """
SELECT (SELECT count(*) FROM location_excursions), (SELECT count(*) FROM excursions),
       (SELECT count(*) FROM alarms), (SELECT count(*) FROM holds),
       (SELECT count(*) FROM outbox_events), (SELECT count(*) FROM audit_log)
"""


@pytest.fixture
def live(conn: Conn, db_url: str, clock: ManualClock) -> tuple[Conn, int, int]:
    """The cold room at 8.5 °C for 20 minutes (an excursion on record, its lot held), the
    truck at 7.5 °C for 30 minutes (in range for 2-8 °C)."""
    make_erp(conn)
    lot = register_lot(conn, "logi1", GTIN, "L1").id
    record_movement(conn, "logi1", lot, "receiving", 5, T0, to_location="CR")
    truck_lot = register_lot(conn, "logi1", GTIN, "L2").id
    record_movement(conn, "logi1", truck_lot, "receiving", 5, T0, to_location="TC")
    _store(conn, "S1", [(m, 8.5 if 30 <= m < 50 else 5.0) for m in range(0, 120)])
    _store(conn, "S2", [(m, 7.5 if 60 <= m < 90 else 5.0) for m in range(0, 120)])
    clock.advance(2 * 3600)
    RulesEngine(db_url, clock=clock, capa=CapaPolicy(owner="qa1")).process_pending(conn)
    [le] = conn.execute("SELECT id FROM location_excursions").fetchall()
    return conn, le[0], lot


def test_replay_with_the_live_settings_finds_what_was_recorded(live: tuple[Conn, int, int]) -> None:
    conn, le, lot = live
    before = conn.execute(_COUNTS).fetchone()
    report = replay(conn, T0, T0 + 2 * H)
    assert (report.sensors, report.readings) == (2, 240)
    [found] = report.excursions
    assert (found.location_id, found.started_at, found.ended_at) == ("CR", T0 + 30 * M, T0 + 50 * M)
    assert (found.recorded_id, found.lots, found.sensors) == (le, (lot,), ("S1",))
    assert report.new == []
    assert report.not_raised == []
    assert conn.execute(_COUNTS).fetchone() == before


def test_a_wider_range_would_not_have_raised_the_recorded_excursion(
    live: tuple[Conn, int, int],
) -> None:
    conn, le, _ = live
    before = conn.execute(_COUNTS).fetchone()
    report = replay(conn, T0, T0 + 2 * H, profiles={"2-8": RangePatch(temp_max_c=9.0)},
                    locations={"CR": RangePatch(temp_max_c=9.0)})  # fmt: skip
    assert report.excursions == []
    assert report.not_raised == [le]
    assert conn.execute(_COUNTS).fetchone() == before


def test_a_stricter_profile_would_have_raised_one_in_the_truck(live: tuple[Conn, int, int]) -> None:
    conn, le, _ = live
    report = replay(conn, T0, T0 + 2 * H, profiles={"2-8": RangePatch(temp_max_c=7.0)})
    assert [
        (e.location_id, e.started_at, e.ended_at, e.recorded_id) for e in report.excursions
    ] == [
        ("CR", T0 + 30 * M, T0 + 50 * M, le),
        ("TC", T0 + 60 * M, T0 + 90 * M, None),
    ]
    assert [e.location_id for e in report.new] == ["TC"]
    # With the rooms' delay unset, the product's applies: an hour's delay, no excursion.
    longer = replay(conn, T0, T0 + 2 * H, profiles={"2-8": RangePatch(alarm_delay_s=3600)})
    assert longer.excursions == []
    # A room's own delay, set, is not lengthened by a product's longer one.
    own = replay(
        conn, T0, T0 + 2 * H,
        profiles={"2-8": RangePatch(alarm_delay_s=3600)},
        locations={"CR": RangePatch(alarm_delay_s=0)},
    )  # fmt: skip
    assert [e.recorded_id for e in own.excursions] == [le]


def test_a_replay_needs_a_period_and_known_places(live: tuple[Conn, int, int]) -> None:
    conn, _, _ = live
    with pytest.raises(RuleViolation, match="end after its start"):
        replay(conn, T0, T0)
    with pytest.raises(RuleViolation, match="no location NOPE"):
        replay(conn, T0, T0 + H, locations={"NOPE": RangePatch(temp_max_c=1.0)})


def test_a_replay_of_a_profile_that_does_not_exist_is_refused(
    live: tuple[Conn, int, int],
) -> None:
    """`replay --profile NOPE=2..8` was accepted, ignored, and answered as if nothing changed."""
    conn, _, _ = live
    with pytest.raises(RuleViolation, match="no profile NOPE; known: 2-8"):
        replay(conn, T0, T0 + H, profiles={"NOPE": RangePatch(temp_max_c=8.0)})
