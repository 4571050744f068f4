"""The readings' hash chain on real PostgreSQL: ingest links every batch it stores, and
``audit verify`` finds each reading a superuser changes, removes or adds with the triggers
off, naming its batch, sensor and seq, and passes again once the data is put back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coldtrail import readingchain as rc
from coldtrail.db import upgrade
from coldtrail.erp.chain import verify_readings
from coldtrail.erp.masterdata import (
    Location,
    assign_sensor,
    upsert_location,
    upsert_sensor,
    upsert_site,
)
from coldtrail.ingest.copytext import copy_lines, pg_float, pg_time
from coldtrail.ingest.store import Envelope, Store, bc
from coldtrail.messages import PLAUSIBLE, ReadingDoc
from tests.conftest import T0, as_superuser, printed_lines, store_readings

Conn = psycopg.Connection[tuple[Any, ...]]
M = timedelta(minutes=1)
NOW_US = 1_780_000_000_000_000
FUTURE_S = 250_000_000_000.0
"""Ingest's horizon for these tests: times until about the year 9900 are stored."""


def _site(conn: Conn, sensors: tuple[str, ...] = ("S1", "S2")) -> None:
    """Site s1 with cold room CR1 and ``sensors`` placed there for all time."""
    upsert_site(conn, "s1", "Site 1")
    upsert_location(conn, Location("CR1", "s1", "cold_room", "Room 1", 2.0, 8.0))
    for sensor in sensors:
        upsert_sensor(conn, sensor, "xy-md02", f"SN-{sensor}")
        assign_sensor(conn, sensor, "CR1", datetime(1, 1, 1, tzinfo=UTC))


def _write(conn: Conn, readings: list[ReadingDoc], received_us: int = NOW_US) -> int:
    env = Envelope(
        "r/v1/s1/gw-a/telemetry", "s1", "gw-a", readings, copy_lines(readings, "gw-a", received_us)
    )
    out = Store(max_future_s=FUTURE_S).write(conn, [env])
    assert out.stored == len(readings), out
    assert out.batch_id is not None
    return out.batch_id


def _minutes(sensor: str, seqs: range, temp: float = 5.0) -> list[ReadingDoc]:
    return [
        {"sensor": sensor, "seq": n, "ts": T0 + n * M, "temperature_c": temp + n / 100}
        for n in seqs
    ]


def _history(conn: Conn) -> list[int]:
    _site(conn)
    return [
        _write(conn, _minutes("S1", range(1, 11)) + _minutes("S2", range(1, 11), 4.0)),
        _write(conn, _minutes("S1", range(11, 21))),
        _write(conn, _minutes("S2", range(11, 21), 4.0)),
    ]


def test_every_batch_ingest_stores_is_linked_and_verifies(conn: Conn) -> None:
    batches = _history(conn)
    check = verify_readings(conn)
    assert check.ok, check.reason
    assert (check.links, check.readings, check.head_link) == (3, 40, 3)
    linked = [r[0] for r in conn.execute("SELECT batch_id FROM reading_chain ORDER BY link")]
    assert linked == batches
    head = conn.execute("SELECT hash FROM reading_chain_head").fetchone()
    assert head is not None
    assert bytes(head[0]).hex() == check.head


def test_a_changed_temperature_is_named_by_batch_sensor_and_seq(conn: Conn) -> None:
    batches = _history(conn)
    stmt = "UPDATE readings SET temperature_c = %s WHERE sensor_id = 'S1' AND seq = 14"
    as_superuser(conn, stmt, 3.3)
    check = verify_readings(conn)
    assert not check.ok
    assert (check.batch_id, check.first_broken_link) == (batches[1], 2)
    assert check.findings == ["S1 seq 14 at 2026-11-22 10:14:00+00 was changed"]
    assert check.reason is not None
    assert "S1 seq 14" in check.reason
    as_superuser(conn, stmt, 5.14)  # put back
    assert verify_readings(conn).ok


def test_a_removed_reading_is_named_from_the_numbers_ingest_claimed(conn: Conn) -> None:
    batches = _history(conn)
    row = conn.execute("SELECT * FROM readings WHERE sensor_id = 'S2' AND seq = 5").fetchone()
    as_superuser(conn, "DELETE FROM readings WHERE sensor_id = 'S2' AND seq = 5")
    check = verify_readings(conn)
    assert not check.ok
    assert check.batch_id == batches[0]
    assert check.findings == [
        "1 reading(s) removed, between S2 seq 4 at 2026-11-22 10:04:00+00 and S2 seq 6 at "
        "2026-11-22 10:06:00+00 in the batch: sensor S2 seq 5 claimed but not stored"
    ]
    assert row is not None
    cols = ", ".join(["%s"] * len(row))
    as_superuser(conn, f"INSERT INTO readings SELECT {cols}", *row)
    assert verify_readings(conn).ok


def test_a_reading_added_to_a_batch_is_named(conn: Conn) -> None:
    batches = _history(conn)
    as_superuser(
        conn,
        "INSERT INTO readings (sensor_id, seq, ts, gateway, status, temperature_c, batch_id) "
        "VALUES ('S1', 99, %s, 'gw-a', 'ok', 4.0, %s)",
        T0 + 15 * M,
        batches[1],
    )
    check = verify_readings(conn)
    assert not check.ok
    assert check.batch_id == batches[1]
    assert check.findings == ["S1 seq 99 at 2026-11-22 10:15:00+00 was added"]
    as_superuser(conn, "DELETE FROM readings WHERE seq = 99")
    assert verify_readings(conn).ok


def test_a_reading_outside_every_linked_batch_is_named(conn: Conn) -> None:
    _history(conn)
    as_superuser(
        conn,
        "INSERT INTO readings (sensor_id, seq, ts, gateway, status, temperature_c, batch_id) "
        "VALUES ('S1', 99, %s, 'gw-a', 'ok', 4.0, 424242)",
        T0,
    )
    check = verify_readings(conn)
    assert not check.ok
    assert "41 readings are stored but the chain holds 40" in (check.reason or "")
    assert check.findings == ["S1 seq 99 (batch 424242)"]


def test_a_reading_moved_out_of_its_batch_span_is_found(conn: Conn) -> None:
    batches = _history(conn)
    # Moved a month on (delete and insert: a TimescaleDB chunk holds only its own times).
    as_superuser(
        conn,
        "WITH gone AS (DELETE FROM readings WHERE seq = 12 RETURNING *) "
        "INSERT INTO readings SELECT sensor_id, seq, ts + interval '30 days', received_at, "
        "gateway, status, temperature_c, humidity_pct, battery_pct, batch_id, clock, latitude, "
        "longitude, speed_kmh, door_open FROM gone",
    )
    check = verify_readings(conn)
    assert not check.ok
    assert check.batch_id == batches[1]
    assert check.findings[0].startswith("1 reading(s) removed")


def test_a_changed_or_removed_link_breaks_the_chain(conn: Conn) -> None:
    _history(conn)
    as_superuser(conn, "UPDATE reading_chain SET readings = 9 WHERE link = 2")
    check = verify_readings(conn)
    assert (check.ok, check.first_broken_link) == (False, 2)
    as_superuser(conn, "UPDATE reading_chain SET readings = 10 WHERE link = 2")
    as_superuser(conn, "DELETE FROM reading_chain WHERE link = 3")
    check = verify_readings(conn)
    assert not check.ok
    assert "links at the end were removed" in (check.reason or "")


def test_the_application_role_can_not_write_the_chain_itself(conn: Conn) -> None:
    _history(conn)
    for stmt in (
        "UPDATE reading_chain SET readings = 0",
        "DELETE FROM reading_chain",
        "INSERT INTO reading_chain SELECT * FROM reading_chain",
        "UPDATE reading_chain_head SET link = 0",
    ):
        with conn.transaction():
            conn.execute("SET LOCAL ROLE coldtrail_app")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="GxP record"):
        conn.execute("DELETE FROM reading_chain")


def test_since_checks_only_the_links_written_from_then(conn: Conn) -> None:
    _history(conn)
    conn.execute("SELECT pg_sleep(0.01)")  # links are stamped with clock_timestamp()
    cut = datetime.now(UTC)
    _write(conn, _minutes("S1", range(21, 31)))
    as_superuser(conn, "UPDATE readings SET temperature_c = 0 WHERE seq = 3")
    assert not verify_readings(conn).ok
    recent = verify_readings(conn, since=cut)
    assert recent.ok, recent.reason
    assert (recent.links, recent.readings, recent.head_link) == (1, 10, 4)


def test_windows_of_batches_verify_as_a_whole_does(conn: Conn) -> None:
    batches = _history(conn)
    assert verify_readings(conn, window=7).ok  # one link a window, some larger than it
    as_superuser(conn, "UPDATE readings SET humidity_pct = 1 WHERE seq = 20 AND sensor_id = 'S2'")
    assert verify_readings(conn, window=15).batch_id == batches[2]
    as_superuser(conn, "UPDATE readings SET humidity_pct = 1 WHERE seq = 2 AND sensor_id = 'S1'")
    assert verify_readings(conn, window=7).batch_id == batches[0]


def test_verify_reads_one_snapshot_while_ingest_goes_on(
    conn: Conn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coldtrail.erp import chain

    _history(conn)
    real = chain._windows
    with psycopg.connect(db_url, autocommit=True) as other:

        def windows(*args: Any) -> Iterator[list[chain.Link]]:
            # Another session stores a batch once verify has begun: in no window.
            for n, group in enumerate(real(*args)):
                if n == 0:
                    _write(other, _minutes("S1", range(100, 110)))
                yield group

        monkeypatch.setattr(chain, "_windows", windows)
        check = verify_readings(conn, window=7)
    assert check.ok, check.reason
    assert check.readings == 40
    monkeypatch.undo()
    assert verify_readings(conn).readings == 50


def test_hand_stored_batches_are_linked_like_ingest_batches(conn: Conn) -> None:
    store_readings(conn, [("S9", n, T0 + n * M, 5.0) for n in range(5)])
    check = verify_readings(conn)
    assert check.ok
    assert check.readings == 5


# Times and numbers the server prints as ingest writes them: far past and future (years
# before 1 and after 9999 in UTC), fractions, offsets; the plausible ranges' ends, tiny and
# negative zero values.
_values = st.floats(allow_nan=False, allow_infinity=False)


def _in(key: str) -> st.SearchStrategy[float | None]:
    lo, hi = PLAUSIBLE[key]
    return st.none() | st.floats(lo, hi) | st.sampled_from([lo, hi, 0.0, -0.0, 5e-324, 1e-300])


_times = st.builds(
    lambda t, minutes: t.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(datetime(1, 1, 1), datetime(9900, 12, 31)),  # noqa: DTZ001 - zoned below
    st.integers(-14 * 60 + 1, 14 * 60 - 1),
).filter(lambda t: not bc(t))  # 1 BC in UTC is a dead letter (tests/test_ingest_hostile.py)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ts=st.lists(_times, min_size=1, max_size=8),
    temps=st.lists(_in("temperature_c"), min_size=8, max_size=8),
    vehicle=st.lists(st.tuples(_in("latitude"), _in("speed_kmh"), st.none() | st.booleans())),
    received=st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999),
)
def test_what_ingest_hashes_is_what_the_server_prints_back(
    conn: Conn,
    ts: list[datetime],
    temps: list[float | None],
    vehicle: list[tuple[float | None, float | None, bool | None]],
    received: int,
) -> None:
    if not conn.execute("SELECT 1 FROM sites").fetchone():
        _site(conn, ("S1",))
    base = int(conn.execute("SELECT coalesce(max(seq), 0) FROM readings").fetchone()[0])  # type: ignore[index]
    readings: list[ReadingDoc] = []
    for i, t in enumerate(ts):
        r: ReadingDoc = {"sensor": "S1", "seq": base + i + 1, "ts": t, "temperature_c": temps[i]}
        if i < len(vehicle):
            r["latitude"], r["speed_kmh"], r["door_open"] = vehicle[i]
        readings.append(r)
    batch = _write(conn, readings, received)
    mine = sorted(line.encode() for line in copy_lines(readings, "gw-a", received))
    assert [line + b"\n" for line in printed_lines(conn, batch)] == [m for m in mine]
    assert verify_readings(conn).ok


def test_floats_and_times_print_as_the_server_prints_them(conn: Conn) -> None:
    values = [1e15, 999999999999999.0, 0.0001, 1e-05, -0.0, 1.5e15, 1e16, 123.456, 0.1 + 0.2]
    printed = conn.execute(
        "SELECT array_agg(v::text ORDER BY o) FROM unnest(%s::float8[]) WITH ORDINALITY AS t(v, o)",
        (values,),
    ).fetchone()
    assert printed is not None
    assert printed[0] == [pg_float(v) for v in values]
    conn.execute("SET TimeZone = 'UTC'")
    t = datetime(1, 1, 1, 3, tzinfo=timezone(timedelta(hours=14)))
    shown = conn.execute("SELECT %s::timestamptz::text", (t,)).fetchone()
    assert shown is not None
    assert shown[0] == pg_time(t) == "0001-12-31 13:00:00+00 BC"
    t = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14)))
    shown = conn.execute("SELECT %s::timestamptz::text", (t,)).fetchone()
    assert shown is not None
    assert shown[0] == pg_time(t) == "10000-01-01 13:00:00+00"


def test_readings_stored_before_the_chain_are_linked_by_the_migration(empty_db_url: str) -> None:
    upgrade(empty_db_url, target=15)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        # The master data as that schema takes it (today's code writes columns added since).
        conn.execute("INSERT INTO sites (id, name) VALUES ('s1', 'Site 1')")
        conn.execute(
            "INSERT INTO locations (id, site_id, kind, name, temp_min_c, temp_max_c)"
            " VALUES ('CR1', 's1', 'cold_room', 'Room 1', 2, 8)"
        )
        conn.execute("INSERT INTO sensors (id, model, serial) VALUES ('S1', 'xy-md02', 'SN-S1')")
        conn.execute(
            "INSERT INTO sensor_assignments (sensor_id, location_id, valid)"
            " VALUES ('S1', 'CR1', tstzrange('0001-01-01', NULL))"
        )
        # As ingest wrote them before: arrival stamped by the server, values of every kind.
        batch = conn.execute(
            "WITH b AS (INSERT INTO ingest_batches (readings, committed_at) VALUES (3, now())"
            " RETURNING id) SELECT id, set_config('coldtrail.ingest_batch', id::text, false) "
            "FROM b"
        ).fetchone()
        assert batch is not None
        with conn.cursor().copy(
            "COPY readings (sensor_id, seq, ts, gateway, status, temperature_c, latitude, "
            "door_open) FROM STDIN"
        ) as copy:
            copy.write_row(("S1", 1, T0, "gw-a", "ok", 5.0, None, None))
            copy.write_row(("S1", 2, T0 + M, "gw-a", "ok", -0.0, 31.2304, True))
            copy.write_row(("S1", 3, T0 + 2 * M, "gw-a", "unavailable", None, 1e-300, False))
        upgrade(empty_db_url)
        check = verify_readings(conn)
        assert check.ok, check.reason
        assert (check.links, check.readings) == (1, 3)


def test_link_refuses_a_body_or_fingerprints_of_the_wrong_size(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute(
            "SELECT coldtrail_link_readings(1, 2, %s, %s)", (bytes(32), bytes(rc.FINGERPRINT_BYTES))
        )


def test_ingest_stamps_each_reading_with_its_arrival(conn: Conn) -> None:
    _site(conn, ("S1",))
    before = time.time_ns() // 1000
    batch = _write(conn, _minutes("S1", range(1, 3)), before)
    row = conn.execute(
        "SELECT DISTINCT received_at FROM readings WHERE batch_id = %s", (batch,)
    ).fetchone()
    assert row is not None
    assert abs(row[0] - datetime.fromtimestamp(before / 1e6, UTC)) < timedelta(microseconds=1)


def test_verify_prints_text_as_copy_escapes_it(conn: Conn) -> None:
    """Only a superuser can store such text (ingest validates ids): verify must still print
    it as COPY does, so putting the row back makes the chain whole again."""
    batch = store_readings(conn, [("S\t1\\x\n\r\b\f\v", 1, T0, 5.0)])
    lines = printed_lines(conn, batch)
    assert lines[0].startswith(b"S\\t1\\\\x\\n\\r\\b\\f\\v\t1\t")
    check = verify_readings(conn)
    assert check.ok, check.reason


def test_a_batch_spans_only_what_it_stores_not_a_reading_set_aside_at_a_wild_time(
    conn: Conn,
) -> None:
    _site(conn, ("S1",))
    good = {"sensor": "S1", "seq": 1, "ts": T0, "temperature_c": 5.0}
    # The year 10000 in UTC once it is dead-lettered as future (Store's horizon here is 300 s):
    # kept as the batch's last time, no client could read the batch's span back.
    west = timezone(-timedelta(hours=14))
    wild = {"sensor": "S1", "seq": 2, "ts": datetime(9999, 12, 31, 23, 59, 59, tzinfo=west)}
    readings: list[ReadingDoc] = [good, wild]  # type: ignore[list-item]
    env = Envelope(
        "r/v1/s1/gw-a/telemetry", "s1", "gw-a", readings, copy_lines(readings, "gw-a", NOW_US)
    )
    out = Store().write(conn, [env])
    assert (out.stored, out.dead) == (1, 1)
    span = conn.execute(
        "SELECT first_ts, last_ts FROM ingest_batches WHERE id = %s", (out.batch_id,)
    ).fetchone()
    assert span == (T0, T0)
    assert verify_readings(conn).ok
