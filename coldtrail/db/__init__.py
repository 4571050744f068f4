"""Database access shared by the stages: connecting, migrating, detecting features."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from coldtrail.errors import StoreError

log = logging.getLogger(__name__)

# Any constant will do; it only has to be the same for every `coldtrail db upgrade`.
_MIGRATION_LOCK = 7_300_116_711

_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    sha256      text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""
_SCHEMA_FEATURES = """
CREATE TABLE IF NOT EXISTS schema_features (
    name        text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class UpgradeResult:
    applied: list[str]
    version: int
    timescaledb: bool
    note: str | None = None
    """Something the operator should know and nothing failed for (a plain database on a
    TimescaleDB server)."""


# Migrations whose text was corrected after release, with the checksums of the texts that
# databases may have applied before; each correction leaves those databases as they are.
REVISED: dict[int, frozenset[str]] = {
    # 0004 chose plain partitions or TimescaleDB by whether the extension was listed as
    # available; it now asks whether it can be created (a listed one that is not preloaded
    # can't, and the database then stayed unpartitioned and never finished upgrading).
    4: frozenset({"075c7b053170e6e791286fd3f3e94045005f2f22339909ff68c1d9d3e58414ae"}),
}
PLAIN_ON_TIMESCALEDB = (
    "this database keeps readings in plain PostgreSQL partitions although the server has "
    "TimescaleDB; it is upgraded as plain. `coldtrail db to-timescaledb` moves the readings "
    "into a hypertable, checking every row (plan a maintenance window: it locks readings)"
)


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[Any, ...]]:
    try:
        return psycopg.connect(url, autocommit=autocommit, application_name="coldtrail")
    except psycopg.OperationalError as exc:
        raise StoreError(f"cannot connect to the database: {exc}") from exc


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("coldtrail.db").joinpath("migrations").iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        version, _, rest = name.partition("_")
        found.append(Migration(int(version), rest.removesuffix(".sql"), entry.read_text()))
    found.sort(key=lambda m: m.version)
    if len({m.version for m in found}) != len(found):
        raise StoreError("two migrations share a version number")
    return found


_ROLES = ("coldtrail_app", "coldtrail_readonly")


def _create_roles(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Create the cluster's roles (migration 0005 grants to them) before any migration runs.
    Roles belong to the cluster, the migration lock to one database: two databases of one
    server migrated at once both found a role missing, and the second CREATE ROLE failed."""
    for role in _ROLES:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            continue
        # Created by the other migration meanwhile: what was wanted.
        with contextlib.suppress(psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))


def upgrade(url: str, target: int | None = None) -> UpgradeResult:
    """Apply every migration not yet applied (up to ``target``, for tests of a migration over
    existing data); safe to run again and from several processes."""
    applied: list[str] = []
    # Autocommit, so that each migration's transaction() is a real transaction of its own.
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(_SCHEMA_MIGRATIONS)
            conn.execute(_SCHEMA_FEATURES)
            _create_roles(conn)
            done = {
                int(str(v)): str(sha)
                for v, sha in conn.execute("SELECT version, sha256 FROM schema_migrations")
            }
            for m in migrations():
                if target is not None and m.version > target:
                    break
                if m.version in done:
                    if done[m.version] != m.sha256 and done[m.version] not in REVISED.get(
                        m.version, frozenset()
                    ):
                        raise StoreError(
                            f"migration {m.version} ({m.name}) was changed after it was applied"
                        )
                    continue
                with conn.transaction():
                    conn.execute(sql.SQL(m.sql))  # trusted file in the package
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                        (m.version, m.name, m.sha256),
                    )
                applied.append(f"{m.version:04d}_{m.name}")
                log.info("applied migration %04d_%s", m.version, m.name)
            timescale, note = _apply_timescale(conn, applied) if target is None else (False, None)
            version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        except psycopg.Error as exc:
            raise StoreError(f"migration failed: {exc}") from exc
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    if note is not None:
        log.warning("%s", note)
    number = int(str(version[0])) if version and version[0] else 0
    return UpgradeResult(applied, number, timescale, note)


# TimescaleDB's SQL, in steps applied once each and recorded in schema_features: the first
# makes readings a hypertable; the later ones change what earlier databases got.
TIMESCALE_STEPS = (
    ("timescaledb", "timescale.sql"),
    ("timescaledb_realtime", "timescale_realtime.sql"),
)


def timescaledb_usable(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Whether the extension can be created here (not only listed as available)."""
    row = conn.execute("SELECT coldtrail_timescaledb_usable()").fetchone()
    return bool(row and row[0])


def readings_partitioned(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "WHERE c.relname = 'readings' AND c.relnamespace = current_schema()::regnamespace"
    ).fetchone()
    return row is not None


# Every row, in any order: the count and the sum of a 64-bit hash of each row's text.
_READINGS_DIGEST = (
    "SELECT count(*), coalesce(sum(hashtextextended(r::text, 0)::numeric), 0)::text FROM readings r"
)


def to_timescaledb(url: str) -> dict[str, object]:
    """Move the readings of a database made on plain PostgreSQL (monthly partitions) into a
    TimescaleDB hypertable, then apply the TimescaleDB steps, in one transaction. Readings
    can't be deleted or edited, so the move must be provably lossless: every row is counted
    and hashed before, after the copy and after the hypertable, and any difference undoes
    all of it (StoreError)."""
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            if not timescaledb_usable(conn):
                raise StoreError("TimescaleDB can't be created on this server (is it preloaded?)")
            if not readings_partitioned(conn):
                raise StoreError("readings is not in plain PostgreSQL partitions: nothing to move")
            done = {str(r[0]) for r in conn.execute("SELECT name FROM schema_features")}
            with conn.transaction():
                conn.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
                before = conn.execute(_READINGS_DIGEST).fetchone()
                text = resources.files("coldtrail.db").joinpath("to_timescaledb.sql").read_text()
                conn.execute(sql.SQL(text))  # trusted file in the package
                copied = conn.execute(_READINGS_DIGEST).fetchone()
                if copied != before:
                    raise StoreError(f"the copy differs: {before} before, {copied} after")
                conn.execute("DROP TABLE readings_plain CASCADE")
                for feature, file in TIMESCALE_STEPS:
                    if feature in done:
                        continue
                    step = resources.files("coldtrail.db").joinpath(file).read_text()
                    conn.execute(sql.SQL(step))  # trusted file in the package
                    conn.execute("INSERT INTO schema_features (name) VALUES (%s)", (feature,))
                after = conn.execute(_READINGS_DIGEST).fetchone()
                if after != before:
                    raise StoreError(f"the hypertable differs: {before} before, {after} after")
        except psycopg.Error as exc:
            raise StoreError(f"moving readings to TimescaleDB failed: {exc}") from exc
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    assert before is not None  # noqa: S101 - an aggregate returns a row
    log.info("moved %s readings into a TimescaleDB hypertable", before[0])
    return {"readings": int(before[0]), "digest": str(before[1]), "timescaledb": True}


def _apply_timescale(
    conn: psycopg.Connection[tuple[object, ...]], applied: list[str]
) -> tuple[bool, str | None]:
    done = {str(r[0]) for r in conn.execute("SELECT name FROM schema_features")}
    if "timescaledb" not in done:
        if not timescaledb_usable(conn):
            return False, None
        if readings_partitioned(conn):
            return False, PLAIN_ON_TIMESCALEDB
    for feature, file in TIMESCALE_STEPS:
        if feature in done:
            continue
        text = resources.files("coldtrail.db").joinpath(file).read_text()
        with conn.transaction():
            conn.execute(sql.SQL(text))  # trusted file in the package
            conn.execute("INSERT INTO schema_features (name) VALUES (%s)", (feature,))
        applied.append(feature)
        log.info("applied %s", file)
    return True, None
