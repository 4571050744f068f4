"""Fixtures on the real services: PostgreSQL (one database per test) and Mosquitto.

COLDTRAIL_TEST_PG: a superuser URL of a server the tests may create databases on
(default postgresql://postgres@127.0.0.1:5432/test). COLDTRAIL_TEST_MQTT: a broker
(default mqtt://127.0.0.1:1883); each test gets its own topic root on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from argon2 import PasswordHasher, profiles

from coldtrail import db
from coldtrail.clock import ManualClock
from coldtrail.erp.masterdata import (
    Location,
    assign_sensor,
    upsert_location,
    upsert_sensor,
    upsert_site,
)
from coldtrail.erp.people import Role, User, create_user, use_password_hasher
from coldtrail.erp.products import Product, Profile, upsert_product, upsert_profile
from coldtrail.ingest.worker import IngestWorker
from coldtrail.mqtt import MqttOptions
from coldtrail.net import free_port, listening_socket
from coldtrail.settings import MqttEndpoint
from coldtrail.validation.harness import RunningIngest as RunningIngest  # the cases' own
from coldtrail.validation.harness import create_database, drop_database, url_for
from coldtrail.validation.harness import publishing as publishing  # the cases' own

# Real argon2 with its cheapest parameters: the suite signs in over a thousand times, and the
# default's 130 ms a check was about a minute of it. Hashes made by the services the tests
# start in processes of their own (the demo, the CLI) keep the default; both verify alike.
use_password_hasher(PasswordHasher.from_parameters(profiles.CHEAPEST))

PG_URL = os.environ.get("COLDTRAIL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MQTT_URL = os.environ.get("COLDTRAIL_TEST_MQTT", "mqtt://127.0.0.1:1883")


def _server_has_timescaledb() -> bool:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    return row is not None and "timescaledb" in str(row[0])


TIMESCALEDB = _server_has_timescaledb()
"""The suite runs on plain PostgreSQL (the default) and on TimescaleDB (``.ci/run`` runs it
again on ``../shared/timescaledb/serve``): storage assertions differ per backend."""
needs_timescaledb = pytest.mark.skipif(
    not TIMESCALEDB, reason="TimescaleDB only: `.ci/run` runs the suite on it too"
)
plain_only = pytest.mark.skipif(TIMESCALEDB, reason="plain PostgreSQL's partitions")
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def _url_for(name: str) -> str:
    return url_for(PG_URL, name)


def _create(name: str, template: str | None = None) -> None:
    create_database(PG_URL, name, template)


def _drop(name: str) -> None:
    drop_database(PG_URL, name)


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    name = f"ct_template_{os.getpid()}"
    _drop(name)
    _create(name)
    db.upgrade(_url_for(name))
    yield name
    _drop(name)


@pytest.fixture
def empty_db_url() -> Iterator[str]:
    name = f"ct_{uuid.uuid4().hex[:12]}"
    _create(name)
    yield _url_for(name)
    _drop(name)


@contextlib.contextmanager
def database_from(template: str) -> Iterator[str]:
    """A database of its own, copied from ``template``; dropped afterwards."""
    name = f"ct_{uuid.uuid4().hex[:12]}"
    _create(name, template=template)
    try:
        yield _url_for(name)
    finally:
        _drop(name)


@contextlib.contextmanager
def template_from(template: str, prefix: str) -> Iterator[tuple[str, str]]:
    """A new template database (name, url) copied from ``template``, for a module to fill
    once and copy per test."""
    name = f"{prefix}_{os.getpid()}"
    _drop(name)
    _create(name, template=template)
    try:
        yield name, _url_for(name)
    finally:
        _drop(name)


@pytest.fixture
def db_url(template_db: str) -> Iterator[str]:
    """A migrated database of this test's own."""
    with database_from(template_db) as url:
        yield url


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def topic_root() -> str:
    """This test's own first topic level, so tests sharing the broker never see each other."""
    return f"cttest{uuid.uuid4().hex[:10]}"


@pytest.fixture
def mqtt_options() -> MqttOptions:
    return MqttOptions(endpoint=MqttEndpoint.parse(MQTT_URL), protocol="5")


def make_site(
    conn: psycopg.Connection[tuple[Any, ...]], sensors: dict[str, str], since: datetime = T0
) -> None:
    """Site ``s1`` with cold room ``CR`` (2-8 °C) and truck compartment ``TC`` (2-8 °C);
    ``sensors`` maps sensor id -> location id."""
    upsert_site(conn, "s1", "Test site")
    upsert_location(conn, Location("CR", "s1", "cold_room", "Cold room", 2.0, 8.0, area_m2=50))
    upsert_location(conn, Location("TRK", "s1", "vehicle", "Truck", volume_m3=20))
    upsert_location(
        conn,
        Location("TC", "s1", "compartment", "Truck front", 2.0, 8.0, parent_id="TRK", volume_m3=10),
    )
    for sensor, location in sensors.items():
        upsert_sensor(conn, sensor, "xy-md02", f"SN-{sensor}")
        assign_sensor(conn, sensor, location, since)


def ingest_worker(
    db_url: str, options: MqttOptions, topic_root: str, client_id: str | None = None, **kw: Any
) -> IngestWorker:
    return IngestWorker(
        database_url=db_url,
        options=options,
        topic_root=topic_root,
        client_id=client_id or f"ingest-{topic_root}",
        flush_s=0.05,
        **kw,
    )


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    """Wait for work another thread or process is doing (not for time to pass)."""
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not done.is_set():
            value = predicate()
            if value:
                return value
            done.wait(0.02)
    finally:
        deadline.cancel()
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def publish(options: MqttOptions, topic: str, *payloads: bytes) -> None:
    """Publish with QoS 1 through a real client and wait for every PUBACK."""
    from coldtrail import mqtt

    client = mqtt.make_client(options, f"pub-{uuid.uuid4().hex[:8]}", persistent=False)
    mqtt.connect(client, options, persistent=False)
    client.loop_start()
    try:
        for p in payloads:
            client.publish(topic, p, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


async def async_wait_for(predicate: Any, limit_s: float = 10.0, what: str = "condition") -> Any:
    """Like :func:`wait_for`, for coroutines, so the event loop keeps running meanwhile."""
    import asyncio

    try:
        async with asyncio.timeout(limit_s):
            # Polls state that other threads and the database change; there is no event.
            while not (value := predicate()):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            return value
    except TimeoutError:
        raise AssertionError(f"timed out after {limit_s} s waiting for {what}") from None


SECRET = "test-secret-key-that-is-long-enough-0123456789"


def api_config(db_url: str, mqtt: MqttOptions | None = None, topic_root: str = "coldtrail") -> Any:
    from coldtrail.api.app import ApiConfig

    return ApiConfig(
        database_url=db_url,
        secret_key=SECRET,
        admin_password="admin-password-123",
        mqtt=mqtt,
        topic_root=topic_root,
        # Tests sign in often from one address; the throttle's own test uses the defaults.
        guess_burst=10_000,
    )


def api_client(
    db_url: str, clock: Any, mqtt: MqttOptions | None = None, topic_root: str = "coldtrail"
) -> Any:
    """The app in-process (Starlette's TestClient); with ``mqtt``, its push stream too."""
    from fastapi.testclient import TestClient

    from coldtrail.api.app import create_app

    return TestClient(create_app(api_config(db_url, mqtt, topic_root), clock))


class RunningApi:
    """The app served by uvicorn on a free port in a thread: real HTTP connections, for what
    the in-process client can't do (an endless stream read while it runs)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self._socket = listening_socket()
        self.port = int(self._socket.getsockname()[1])
        self.app = app
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
        )
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, name="api", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RunningApi:
        self._thread.start()
        wait_for(lambda: self.server.started, what="uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(15)
        self._socket.close()


def token(client: Any, username: str, password: str) -> dict[str, str]:
    resp = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


def store_readings(
    conn: psycopg.Connection[tuple[Any, ...]], rows: list[tuple[str, int, Any, float | None]]
) -> int:
    """One ingest batch holding ``rows`` (sensor, seq, ts, temperature), as ingest stores it
    (without the batch's time span: looked up unbounded, as batches from before it were)."""
    with conn.transaction():
        batch = conn.execute(
            "WITH b AS (INSERT INTO ingest_batches DEFAULT VALUES RETURNING id)"
            " SELECT id, set_config('coldtrail.ingest_batch', id::text, true) FROM b"
        ).fetchone()
        assert batch is not None
        with conn.cursor().copy(
            "COPY readings (sensor_id, seq, ts, gateway, status, temperature_c) FROM STDIN"
        ) as copy:
            for sensor, seq, ts, temp in rows:
                status = "ok" if temp is not None else "unavailable"
                copy.write_row((sensor, seq, ts, "gw-1", status, temp))
        conn.execute("UPDATE ingest_batches SET readings = %s WHERE id = %s", (len(rows), batch[0]))
        # Linked as ingest links its batches, where the database has the chain (a database
        # at an earlier migration gets its links from migration 16).
        if conn.execute("SELECT to_regclass('reading_chain')").fetchone() != (None,):
            link_batch(conn, int(batch[0]))
        return int(batch[0])


def as_superuser(conn: psycopg.Connection[tuple[Any, ...]], stmt: str, *params: object) -> None:
    """What a database superuser can do: run ``stmt`` with the triggers that keep records
    immutable (and write the audit trail) switched off for the transaction."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(stmt, params)


def printed_lines(conn: psycopg.Connection[tuple[Any, ...]], batch_id: int) -> list[bytes]:
    """A batch's readings as the server prints them in the readings chain's canonical
    session, sorted: what its link covers."""
    from coldtrail import readingchain as rc

    with conn.transaction():
        for stmt in rc.SESSION:
            conn.execute(stmt)
        with conn.cursor().copy(
            f"COPY (SELECT {rc.COLUMNS} FROM readings WHERE batch_id = %s) TO STDOUT",  # noqa: S608
            (batch_id,),
        ) as copy:
            text = b"".join(bytes(d) for d in copy)
    return sorted(text.split(b"\n")[:-1])


def link_batch(conn: psycopg.Connection[tuple[Any, ...]], batch_id: int) -> None:
    """Link a batch stored by hand into the readings' chain, as ingest links its own."""
    from coldtrail import readingchain as rc

    lines = printed_lines(conn, batch_id)
    conn.execute(
        "SELECT coldtrail_link_readings(%s, %s, %s, %s)",
        (batch_id, len(lines), rc.body(batch_id, lines), rc.fingerprints(lines)),
    )


def count_readings(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


class PrivateBroker:
    """A Mosquitto of the test's own on a free port, which the test may stop and start.

    Persistence is on, so persistent sessions (ingest's) and their queued messages survive
    a restart as they would in production.
    """

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self._conf = workdir / "mosquitto.conf"
        import getpass

        # `user`: started as root, mosquitto would switch to its own user, which can't write
        # the test's folder, and it would lose every session at the restart.
        self._conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nmax_queued_messages 0\n"
            f"user {getpass.getuser()}\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def options(self) -> MqttOptions:
        return MqttOptions(endpoint=MqttEndpoint.parse(self.url), protocol="5")

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self._proc = subprocess.Popen(
            [exe, "-c", str(self._conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def listening() -> bool:
            import socket

            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(listening, what=f"mosquitto on port {self.port}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()  # SIGTERM: mosquitto saves its sessions, as on a restart
            self._proc.wait(10)
            self._proc = None


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path)
    broker.start()
    yield broker
    broker.stop()


class PrivatePostgres:
    """A PostgreSQL server of the test's own (the machine's binaries, a fresh cluster in the
    test's folder, a free port), which the test may stop and start mid-stream."""

    def __init__(self) -> None:
        import glob
        import tempfile

        # Its own folder under /tmp: the postgres account can't enter pytest's (root, 0700).
        workdir = Path(tempfile.mkdtemp(prefix="coldtrail-pg-"))
        self.workdir = workdir
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            pytest.fail("no PostgreSQL server binaries under /usr/lib/postgresql")
        self._bin = Path(bins[-1])
        self.port = free_port()
        self.data = workdir / "pgdata"
        self._log = workdir / "pg.log"
        self._run(self._bin / "initdb", "-A", "trust", "-U", "postgres", "-D", str(self.data))

    def _run(self, *cmd: object) -> None:
        args = [str(c) for c in cmd]
        if os.geteuid() == 0:  # initdb refuses root: run as the postgres account
            shutil.chown(self.data.parent, "postgres")  # initdb makes the rest as postgres
            args = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--", *args]
        subprocess.run(args, check=True, capture_output=True)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        self._run(self._bin / "pg_ctl", "-D", self.data, "-l", self._log, "-o", opts, "-w", "start")

    def stop(self) -> None:
        self._run(self._bin / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
    finally:
        shutil.rmtree(server.workdir, ignore_errors=True)


QA_PASSWORD = "qa-password-long"
GTIN = "09501101530003"  # the GS1 General Specifications' example GTIN


@dataclass(frozen=True)
class Erp:
    """Master data of an ERP test: make_site's places, a quarantine area ``QZ``, people
    (qa1 and qa2 of role qa, logi1 of logistics, all with QA_PASSWORD), a 2-8 °C profile and
    one product (GTIN) under it."""

    conn: psycopg.Connection[tuple[Any, ...]]
    qa: User
    qa2: User
    logistics: User


def make_erp(conn: psycopg.Connection[tuple[Any, ...]], *, release_signatures: int = 1) -> Erp:
    make_site(conn, {"S1": "CR", "S2": "TC"})
    upsert_location(conn, Location("QZ", "s1", "cold_room", "Quarantine cage", 2.0, 8.0, area_m2=5))
    conn.execute("UPDATE locations SET quarantine_area = true WHERE id = 'QZ'")
    qa = create_user(conn, "qa1", "Quinn Auditt", Role.QA, QA_PASSWORD)
    qa2 = create_user(conn, "qa2", "Mara Manager", Role.QA, QA_PASSWORD)
    logi = create_user(conn, "logi1", "Lou Gistics", Role.LOGISTICS, QA_PASSWORD)
    upsert_profile(
        conn,
        "admin",
        Profile("2-8", "Refrigerated 2-8 °C", 2.0, 8.0, alarm_delay_s=300,
                stability_budget_min=120, release_signatures=release_signatures),
    )  # fmt: skip
    upsert_product(conn, "admin", Product(GTIN, "Insulin pen 3 ml", "2-8"))
    return Erp(conn, qa, qa2, logi)


def cli_json(argv: list[str], monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    """``coldtrail ARGV`` in this process with only ``env`` of the COLDTRAIL_* settings;
    it must succeed, and its JSON output is returned."""
    import io

    for key in list(os.environ):
        if key.startswith("COLDTRAIL_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from coldtrail import cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(argv) == 0
    return json.loads(buf.getvalue())
