"""The databases benchmarks run on: migrated scratch databases on the local server."""

from __future__ import annotations

import os

import psycopg
from psycopg import sql

from coldtrail import db

PG = os.environ.get("COLDTRAIL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def make_database(name: str) -> str:
    """Create ``name`` afresh (dropping a killed run's leftover), migrate it, return its URL."""
    drop_database(name)
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(PG, dbname=name)
    try:
        db.upgrade(url)
    except BaseException:
        drop_database(name)
        raise
    return url


def drop_database(name: str) -> None:
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def backend() -> str:
    """What the benchmarks run on, for their RESULT lines: ``timescaledb`` when the server
    preloads it (``db upgrade`` then makes readings a hypertable), else ``postgresql``."""
    with psycopg.connect(PG, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    return "timescaledb" if row and "timescaledb" in str(row[0]) else "postgresql"
