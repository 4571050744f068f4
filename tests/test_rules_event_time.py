"""Excursions judged by the time of measurement, whatever order the readings arrive in."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from coldtrail.clock import ManualClock
from coldtrail.rules.engine import RulesEngine
from tests.conftest import T0, make_site

Conn = psycopg.Connection[tuple[Any, ...]]
M = timedelta(minutes=1)
Reading = tuple[int, float | None]  # (minute after T0, °C or None for unavailable)


def _store(conn: Conn, sensor: str, readings: Sequence[Reading]) -> None:
    """One ingest batch, as ingest would commit it; seq is the minute (the logger's counter)."""
    batch = conn.execute("INSERT INTO ingest_batches DEFAULT VALUES RETURNING id").fetchone()
    assert batch is not None
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (sensor_id, seq, ts, gateway, status, temperature_c, batch_id)"
            " VALUES (%s, %s, %s, 'gw', %s, %s, %s)",
            [
                (sensor, minute + 1, T0 + minute * M, "ok" if t is not None else "unavailable",
                 t, batch[0])
                for minute, t in readings
            ],
        )  # fmt: skip


def _excursions(conn: Conn, sensor: str = "S1") -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT started_at, ended_at, max_c, state::text, late, revision FROM excursions "
        "WHERE sensor_id = %s ORDER BY started_at, id",
        (sensor,),
    ).fetchall()


def _events(conn: Conn) -> list[str]:
    """The excursion events (alarms, CAPA and the rest have tests of their own)."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT kind FROM outbox_events WHERE kind LIKE 'excursion.%' ORDER BY id"
        )
    ]


@pytest.fixture
def site(conn: Conn) -> Conn:
    make_site(conn, {"S1": "CR", "S2": "CR"})  # cold room 2-8 °C
    conn.execute("UPDATE locations SET alarm_delay_s = 300 WHERE id = 'CR'")
    return conn


def _engine(db_url: str, clock: ManualClock) -> RulesEngine:
    return RulesEngine(db_url, clock=clock)


def _steady(*minutes: int, t: float = 5.0) -> list[Reading]:
    return [(m, t) for m in minutes]


def test_a_blip_shorter_than_the_alarm_delay_is_no_excursion(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    # Door open: 9 °C for 3 minutes, then back. Then a real one: 9.5 °C for 7 minutes.
    _store(site, "S1", [*_steady(0, 1), (2, 9.0), (3, 9.0), (4, 9.2), *_steady(5, 6, 7)])
    _store(site, "S1", [*[(m, 9.5) for m in range(10, 17)], *_steady(17, 18)])
    clock.advance(20 * 60)
    _engine(db_url, clock).process_pending(site)

    assert _excursions(site) == [(T0 + 10 * M, T0 + 17 * M, 9.5, "closed", False, 0)]
    assert _events(site) == ["excursion.opened", "excursion.closed"]


def test_readings_out_of_order_across_batches_are_judged_where_they_belong(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    # The newer batch arrives first: in range at 20-25 min. Then the older one: out of range
    # from 10 to 19 min. Judged by arrival, the excursion would end before it began.
    engine = _engine(db_url, clock)
    _store(site, "S1", _steady(0, 1, 2))
    clock.advance(3 * 60)
    engine.process_pending(site)
    _store(site, "S1", _steady(20, 21, 22, 23, 24, 25))
    _store(site, "S1", [(m, 10.0 + m / 10) for m in range(10, 20)])
    clock.advance(23 * 60)
    engine.process_pending(site)

    [(start, end, peak, state, late, revision)] = _excursions(site)
    assert (start, end, state, revision) == (T0 + 10 * M, T0 + 20 * M, "closed", 0)
    assert peak == pytest.approx(11.9)
    assert late is True  # confirmed at 15 min, seen at 26 min
    pending = site.execute("SELECT count(*) FROM ingest_batches WHERE processed_at IS NULL")
    assert pending.fetchone() == (0,)


def test_a_six_hour_backlog_gives_its_excursion_true_times_marked_late(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    # The truck was offline from 0 to 6 h; its edge kept every reading and uploads them now.
    backlog = [(m, 5.0 if not 60 <= m < 100 else 12.0) for m in range(0, 360)]
    clock.advance(6 * 3600)
    for i in range(0, 360, 50):  # as the edge sends it: batches of 50
        _store(site, "S1", backlog[i : i + 50])
    _engine(db_url, clock).process_pending(site)

    assert _excursions(site) == [(T0 + 60 * M, T0 + 100 * M, 12.0, "closed", True, 0)]
    row = site.execute("SELECT duration_s, degree_minutes, readings FROM excursions").fetchone()
    assert row == (2400.0, pytest.approx(4.0 * 40), 40)


def test_readings_filled_in_later_revise_the_excursion_instead_of_adding_one(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    engine = _engine(db_url, clock)
    # Out of range 10-20 min, but the readings of 13-16 min are missing at first.
    _store(site, "S1", _steady(0, 5) + [(m, 9.0) for m in (10, 11, 12, 17, 18, 19)]
           + _steady(20, 21))  # fmt: skip
    clock.advance(22 * 60)
    engine.process_pending(site)
    # Seen at 22 min, 7 min after it was confirmed (10 min + the 5-minute delay): late.
    assert _excursions(site) == [(T0 + 10 * M, T0 + 20 * M, 9.0, "closed", True, 0)]

    _store(site, "S1", [(13, 9.0), (14, 11.5)])
    engine.process_pending(site)
    assert _excursions(site) == [(T0 + 10 * M, T0 + 20 * M, 11.5, "closed", True, 1)]
    assert _events(site) == ["excursion.opened", "excursion.closed", "excursion.revised"]
    # Revised, and still one alarm: its start moved, its identity did not.
    alarms = site.execute("SELECT started_at FROM alarms WHERE kind = 'excursion'").fetchall()
    assert len(alarms) == 1

    # Back in range at 15 min after all: the excursion ends there, and 16-20 min, four
    # minutes, is a blip shorter than the delay.
    _store(site, "S1", [(15, 5.0)])
    engine.process_pending(site)
    assert _excursions(site) == [(T0 + 10 * M, T0 + 15 * M, 11.5, "closed", True, 2)]


def test_an_excursion_that_later_readings_disprove_is_withdrawn_not_deleted(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    engine = _engine(db_url, clock)
    _store(site, "S1", [(10, 9.0), (11, 9.0), (15, 9.0), (16, 9.0), (17, 5.0)])
    clock.advance(17 * 60)
    engine.process_pending(site)
    assert [e[3] for e in _excursions(site)] == ["closed"]

    # The missing reading at 13 min was in range: two blips of 3 and 2 minutes remain.
    _store(site, "S1", [(13, 5.0)])
    engine.process_pending(site)
    assert [(e[3], e[5]) for e in _excursions(site)] == [("withdrawn", 1)]
    assert _events(site)[-1] == "excursion.withdrawn"


def test_unavailable_readings_and_gaps_never_end_an_excursion(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    _store(site, "S1", [*_steady(0), (1, 9.0), (2, None), (3, None), (30, 9.0), *_steady(31)])
    clock.advance(32 * 60)
    _engine(db_url, clock).process_pending(site)
    # Confirmed only when the reading at 30 min came: found late, as it was.
    assert _excursions(site) == [(T0 + M, T0 + 31 * M, 9.0, "closed", True, 0)]


def test_order_and_repetition_of_delivery_do_not_change_the_result(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    readings = [(m, 5.0 + 4.0 * ((m // 10) % 2) + (m % 7) / 10) for m in range(0, 120)]
    shuffled = readings[:]
    random.Random(7).shuffle(shuffled)
    _store(site, "S1", readings)
    for i in range(0, 120, 17):
        _store(site, "S2", shuffled[i : i + 17])
    clock.advance(3 * 3600)
    engine = _engine(db_url, clock)
    engine.process_pending(site)

    def result(sensor: str) -> list[tuple[Any, ...]]:
        return site.execute(
            "SELECT started_at, ended_at, min_c, max_c, duration_s, degree_minutes, mkt_c, "
            "readings, state::text, revision FROM excursions WHERE sensor_id = %s "
            "ORDER BY started_at",
            (sensor,),
        ).fetchall()

    in_order = result("S1")
    assert len(in_order) == 6
    assert result("S2") == in_order
    # Judging everything again changes nothing and says nothing.
    events = len(_events(site))
    engine.judge_sensors(site, {"S1": T0, "S2": T0})
    assert result("S1") == in_order
    assert result("S2") == in_order
    assert len(_events(site)) == events


def test_a_run_that_began_before_a_gap_keeps_its_first_reading_as_start(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    # Out of range from minute 4, not yet past the 5-minute delay when judged; the link then
    # drops, and the next reading, still warm, comes at minute 12.
    engine = _engine(db_url, clock)
    _store(site, "S1", [*_steady(0, 1, 2, 3), (4, 9.0), (5, 9.1), (6, 9.2)])
    clock.advance(7 * 60)
    engine.process_pending(site)
    assert _excursions(site) == []

    _store(site, "S1", [(12, 9.5), *_steady(13)])
    clock.advance(7 * 60)
    engine.process_pending(site)

    assert _excursions(site) == [(T0 + 4 * M, T0 + 13 * M, 9.5, "closed", False, 0)]


def test_live_readings_are_judged_from_where_the_last_judging_left_off(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    engine = _engine(db_url, clock)
    _store(site, "S1", _steady(*range(60)))
    clock.advance(60 * 60)
    engine.process_pending(site)
    assert engine.stats.readings == 60

    _store(site, "S1", _steady(60))
    clock.advance(60)
    engine.process_pending(site)

    # The newest judged reading (for gaps and rates) and the new one; nothing was pending.
    assert engine.stats.readings == 60 + 2
