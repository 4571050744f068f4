"""The services run as a member of ``coldtrail_app``, the role a deployment gives them: they
can do their work, and can't change or delete a GxP record."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from coldtrail.erp import audit
from coldtrail.messages import Reading, encode_telemetry, telemetry_topic
from coldtrail.mqtt import MqttOptions
from coldtrail.rules.engine import RulesEngine
from tests.conftest import (
    PG_URL,
    T0,
    TIMESCALEDB,
    RunningIngest,
    count_readings,
    ingest_worker,
    make_site,
    publish,
    wait_for,
)

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def app_url(db_url: str) -> Iterator[str]:
    """A login role of this test's own, member of coldtrail_app (and nothing else)."""
    role = f"ct_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE coldtrail_app").format(sql.Identifier(role))
        )
    yield psycopg.conninfo.make_conninfo(db_url, user=role)
    with psycopg.connect(db_url, autocommit=True) as owner:
        owner.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_ingest_and_rules_work_as_the_application_role(
    conn: Conn, app_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    make_site(conn, {"S1": "CR"})  # master data, as an administrator would enter it
    newest: tuple[Any, ...] | None = None
    if not TIMESCALEDB:
        # The newest monthly partition is empty and ahead of time: drop it, so ingest has to
        # make it again as the app role, as it will when the months go by. (TimescaleDB makes
        # its chunks itself, as whoever inserts.)
        newest = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'readings'::regclass AND c.relname <> 'readings_default' "
            "ORDER BY c.relname DESC LIMIT 1"
        ).fetchone()
        assert newest is not None
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(newest[0])))
    role = psycopg.conninfo.conninfo_to_dict(app_url)["user"]
    readings = [
        Reading(sensor="S1", seq=i, ts=T0.replace(minute=i), temperature_c=t)
        for i, t in enumerate((5.0, 9.5, 9.8, 6.0), start=1)
    ]
    worker = ingest_worker(app_url, mqtt_options, topic_root)
    with RunningIngest(worker):
        publish(
            mqtt_options,
            telemetry_topic(topic_root, "s1", "gw-1"),
            encode_telemetry("gw-1", T0, readings),
        )
        wait_for(lambda: count_readings(conn) == 4, what="4 readings stored by the app role")
    with psycopg.connect(app_url) as app:
        RulesEngine(app_url).process_pending(app)

    if newest is not None:
        assert conn.execute("SELECT to_regclass(%s)", (newest[0],)).fetchone() == (newest[0],)
    excursion = conn.execute("SELECT started_at, ended_at, max_c FROM excursions").fetchone()
    assert excursion == (T0.replace(minute=2), T0.replace(minute=4), 9.8)
    kinds = [
        r[0]
        for r in conn.execute(
            "SELECT kind FROM outbox_events WHERE kind LIKE 'excursion.%' ORDER BY id"
        )
    ]
    assert kinds == ["excursion.opened", "excursion.closed"]
    assert {e.actor for e in audit.entries(conn, record_type="excursions")} == {f"db:{role}"}
    assert audit.verify(conn).ok

    with psycopg.connect(app_url, autocommit=True) as app:
        for stmt in (
            "UPDATE readings SET temperature_c = 5.0",
            "DELETE FROM readings",
            "UPDATE audit_log SET actor = 'x'",
            "DELETE FROM outbox_events",
            "UPDATE audit_head SET last_id = 0",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(stmt)
