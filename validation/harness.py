"""What an OQ case runs on: the installed system's own stages, wired as in production.

A case gets a :class:`Run`: a database (a scratch copy of its own, or the database the
operator named), the broker, a driven clock, the site's compliance profile, and helpers that
place simulated probes, run the edge agent, ingest and the rules engine on them, and keep
what was checked and what was seen. Nothing here stands in for a stage: the edge reads the
simulated logger over Modbus TCP, publishes over MQTT, ingest stores, the rules judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import http.server
import json
import os
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from coldtrail import db
from coldtrail.clock import Clock, ManualClock
from coldtrail.compliance import Profile
from coldtrail.edge.agent import EdgeAgent
from coldtrail.edge.config import DeviceConfig, EdgeConfig
from coldtrail.erp.masterdata import Location, assign_sensor, upsert_location, upsert_sensor
from coldtrail.erp.people import Role, create_user
from coldtrail.erp.signatures import Credentials
from coldtrail.ingest.worker import IngestWorker
from coldtrail.mqtt import MqttOptions
from coldtrail.redact import redact_text, split_password
from coldtrail.rules.alarms import Contact, add_contact
from coldtrail.rules.notifiers import Notifier
from coldtrail.sim.modbus_server import ModbusSimServer
from coldtrail.sim.netcut import TcpRelay
from coldtrail.sim.scenarios import Scenario
from coldtrail.sim.xymd02 import SimulatedXYMD02

Conn = psycopg.Connection[tuple[Any, ...]]


class CaseFailed(Exception):
    """A case could not go on (a precondition or a wait that never came): a deviation."""


@dataclass
class Target:
    """The system a validation runs against."""

    database_url: str
    mqtt: MqttOptions
    topic_root: str
    site: str
    profile: Profile
    notifiers: dict[str, Notifier]
    workdir: Path
    scratch: bool
    """The harness made the database (and seeds each case's site); else the operator's."""
    admin_url: str | None = None
    """The server's URL the scratch databases are made through (scratch runs only)."""


@dataclass
class Check:
    text: str
    passed: bool
    observed: str


@dataclass
class Run:
    """One case's run: its database connection, clock, names and findings."""

    target: Target
    case_id: str
    database_url: str
    conn: Conn
    clock: ManualClock
    prefix: str
    checks: list[Check] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    sensors: list[str] = field(default_factory=list)
    people: list[str] = field(default_factory=list)
    """Users the case made (disabled when it ends on an operator's database)."""
    receiver: Receiver | None = None
    """Scratch runs: the webhook endpoint the seeded contacts call."""

    @property
    def profile(self) -> Profile:
        return self.target.profile

    def rule_value(self, rule_id: str, default: float) -> float:
        rule = self.profile.rule(rule_id)
        return rule.value if rule is not None else default

    def expect(self, passed: bool, text: str, observed: object) -> bool:
        """Record one acceptance check; the case goes on either way so every check is seen."""
        self.checks.append(Check(text, bool(passed), str(observed)))
        return bool(passed)

    def keep(self, name: str, value: Any) -> None:
        self.evidence[name] = value

    def place(
        self, suffix: str, kind: str = "cold_room", low: float = 2.0, high: float = 8.0, **kw: Any
    ) -> str:
        location_id = f"{self.prefix}-{suffix}"
        upsert_location(
            self.conn,
            Location(location_id, self.target.site, kind, f"OQ {self.case_id} {suffix}",  # type: ignore[arg-type]
                     low, high, **kw),
        )  # fmt: skip
        return location_id

    def probe(self, location_id: str, n: int, since: datetime) -> str:
        sensor = f"{self.prefix}-P{n}"
        upsert_sensor(self.conn, sensor, "xy-md02", f"SIM-{sensor}")
        assign_sensor(self.conn, sensor, location_id, since)
        self.sensors.append(sensor)
        return sensor

    def person(self, role: Role) -> Credentials:
        """A user of ``role`` for this case, with a password of its own."""
        name = f"{self.prefix.lower()}-{role.value}"
        password = secrets.token_urlsafe(18)
        create_user(self.conn, name, f"OQ {role.value}", role, password)
        self.people.append(name)
        return Credentials(name, password)

    def readings(self, sensor: str) -> list[tuple[Any, ...]]:
        """(seq, ts, temperature, status) as stored, in time order."""
        return self.conn.execute(
            "SELECT seq, ts, temperature_c, status::text FROM readings WHERE sensor_id = %s "
            "ORDER BY ts, seq",
            (sensor,),
        ).fetchall()

    def data_hash(self, sensors: list[str] | None = None) -> str:
        """SHA-256 of the stored readings of this run's probes, as evidence a re-run can match."""
        h = hashlib.sha256()
        for sensor in sensors or self.sensors:
            for row in self.readings(sensor):
                h.update(json.dumps([sensor, *row], default=str).encode() + b"\n")
        return h.hexdigest()


async def async_wait_until(predicate: Callable[[], object], limit_s: float, what: str) -> None:
    """Wait for work another thread or process does (ingest storing, the broker delivering):
    never for time to pass."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise CaseFailed(f"{what}: not seen within {limit_s:g} s")
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------- databases


def url_for(admin_url: str, name: str) -> str:
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


@contextlib.contextmanager
def scratch_template(admin_url: str) -> Iterator[str]:
    """A migrated database each case's scratch database is copied from; dropped afterwards."""
    name = f"ct_oq_template_{uuid.uuid4().hex[:10]}"
    create_database(admin_url, name)
    try:
        db.upgrade(url_for(admin_url, name))
        yield name
    finally:
        drop_database(admin_url, name)


@contextlib.contextmanager
def scratch_copy(admin_url: str, template: str) -> Iterator[str]:
    name = f"ct_oq_{uuid.uuid4().hex[:12]}"
    create_database(admin_url, name, template)
    try:
        yield url_for(admin_url, name)
    finally:
        drop_database(admin_url, name)


def create_database(admin_url: str, name: str, template: str | None = None) -> None:
    """``name``, empty or copied from ``template`` (which no session may hold then)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            # A copy needs its template free of sessions; TimescaleDB's scheduler opens one.
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                    sql.Identifier(template)
                )
            )
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (template,),
            )
            stmt = sql.SQL("{} TEMPLATE {}").format(stmt, sql.Identifier(template))
        conn.execute(stmt)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextlib.contextmanager
def restored_copy(run: Run) -> Iterator[tuple[str, float]]:
    """The run's database backed up with pg_dump and restored with pg_restore into a new,
    empty database on the same server (URL, seconds the two took); dropped afterwards.
    TimescaleDB wants its pre- and post-restore calls around the restore."""
    admin = run.target.admin_url or run.database_url
    name = f"ct_oq_restore_{uuid.uuid4().hex[:10]}"
    dump = run.target.workdir / f"{name}.dump"
    t0 = time.monotonic()
    _tool("pg_dump", run.database_url, "--format=custom", f"--file={dump}")
    create_database(admin, name)
    url = url_for(admin, name)
    try:
        timescale = db.timescaledb_usable(run.conn) and bool(
            run.conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        )
        if timescale:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                conn.execute("SELECT timescaledb_pre_restore()")
        _tool("pg_restore", url, "--exit-on-error", str(dump))
        if timescale:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT timescaledb_post_restore()")
        yield url, round(time.monotonic() - t0, 2)
    finally:
        dump.unlink(missing_ok=True)
        drop_database(admin, name)


def _tool(program: str, url: str, *argv: str) -> None:
    """One of PostgreSQL's client programs on ``url``; the password, if the URL has one, goes
    by the environment (never on a command line ``ps`` shows, never in a message)."""
    bare, password = split_password(url)
    env = {**os.environ, **({"PGPASSWORD": password} if password else {})}
    try:
        done = subprocess.run(  # noqa: S603 - a fixed program, our own arguments
            [program, f"--dbname={bare}", *argv],
            capture_output=True, text=True, timeout=600, check=False, env=env,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise CaseFailed(f"{program} is not installed here (PostgreSQL's client programs)") from exc
    if done.returncode != 0:
        raise CaseFailed(f"{program} failed: {redact_text(done.stderr.strip()[-500:], url)}")


def seed_site(conn: Conn, target: Target, receiver: Receiver) -> None:
    """A scratch database's site: the profile named, and as many alarm contacts as the
    profile wants, each a webhook into this run's receiver (what reached them is evidence)."""
    conn.execute(
        "INSERT INTO sites (id, name, timezone, compliance_profile) VALUES (%s, %s, 'UTC', %s) "
        "ON CONFLICT (id) DO UPDATE SET compliance_profile = excluded.compliance_profile",
        (target.site, "OQ site", target.profile.id),
    )
    rule = target.profile.rule("alarm_contacts")
    for n in range(1, int(rule.value if rule else 1) + 1):
        add_contact(
            conn,
            "oq",
            Contact(
                f"OQ contact {n}", "webhook", receiver.url(f"contact-{n}"), site_id=target.site
            ),
            set(target.notifiers),
        )


# ---------------------------------------------------------------------------- evidence


class Receiver:
    """An HTTP endpoint alarm webhooks are sent to: each POST kept with its path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {"unreadable": True}
                received.append((self.path.lstrip("/"), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{path}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# ---------------------------------------------------------------------------- the chain


class RunningIngest:
    """An ingest worker on a thread of its own, as ``coldtrail ingest`` runs it: subscribed
    when entered, stopped on exit, and its failure raised there."""

    def __init__(self, worker: IngestWorker) -> None:
        self.worker = worker
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ingest")

    def _run(self) -> None:
        try:
            self.worker.run(self.stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits on it
            self.error = exc

    def __enter__(self) -> RunningIngest:
        self.thread.start()
        if not self.worker.subscribed.wait(15):
            self.stop.set()
            raise CaseFailed("ingest did not subscribe to the broker within 15 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)
        if self.error is not None:
            raise self.error


def ingest(run: Run, topic_root: str) -> RunningIngest:
    """Ingest for a case, on the case's own topic root and database."""
    return RunningIngest(
        IngestWorker(
            database_url=run.database_url,
            options=run.target.mqtt,
            topic_root=topic_root,
            client_id=f"oq-ingest-{uuid.uuid4().hex[:8]}",
            share_group="",
            flush_s=0.05,
            # The driven clock runs up to the present; readings are never in the future.
            max_future_s=300.0,
        )
    )


@dataclass
class Probe:
    sensor: str
    location: str
    device: SimulatedXYMD02
    poll_interval_s: float = 60.0
    limits: tuple[float, float] | None = None


class Chain:
    """Simulated loggers -> edge agent -> (a link that can be cut) -> broker -> ingest."""

    def __init__(self, run: Run, agent: EdgeAgent, relay: TcpRelay, server: ModbusSimServer):
        self.run = run
        self.agent = agent
        self.relay = relay
        self.server = server

    async def poll(self, times: int, every_s: float) -> None:
        """Each logger read ``times`` times, ``every_s`` apart on the driven clock."""
        for _ in range(times):
            for coordinator in self.agent.coordinators:
                await coordinator.poll_once()
            self.run.clock.advance(every_s)

    def stored(self, sensor: str) -> int:
        row = self.run.conn.execute(
            "SELECT count(*) FROM readings WHERE sensor_id = %s", (sensor,)
        ).fetchone()
        return int(row[0]) if row else 0

    async def delivered(self, counts: dict[str, int], limit_s: float = 60.0) -> None:
        """Until the broker took every queued reading and ingest stored ``counts``."""
        self.agent.publisher.wake()
        await async_wait_until(
            lambda: all(self.stored(s) >= n for s, n in counts.items()),
            limit_s,
            f"readings stored ({counts})",
        )
        await async_wait_until(lambda: len(self.agent.queue) == 0, limit_s, "PUBACK of all")


@contextlib.asynccontextmanager
async def chain(
    run: Run,
    probes: list[Probe],
    *,
    gateway: str = "oq-gw",
    state_dir: Path | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[Chain]:
    """The whole chain for ``probes``, on a topic root of this case's own; ``clock`` paces
    the edge agent (the run's driven clock unless given)."""
    topic_root = f"{run.target.topic_root}{uuid.uuid4().hex[:6]}"
    endpoint = run.target.mqtt.endpoint
    devices = [p.device for p in probes]
    state = state_dir or run.target.workdir / f"{run.prefix}-edge"
    with ingest(run, topic_root):
        async with (
            ModbusSimServer(devices, run.clock) as server,
            TcpRelay(endpoint.host, endpoint.port) as relay,
        ):
            # The edge reaches the broker through the relay (the link a case may cut), with
            # the broker's own credentials and TLS settings.
            options = dataclasses.replace(
                run.target.mqtt,
                endpoint=dataclasses.replace(endpoint, host="127.0.0.1", port=relay.port),
            )
            config = EdgeConfig(
                site=run.target.site,
                gateway=gateway,
                state_dir=state,
                publish_interval_s=0.05,
                devices=tuple(
                    DeviceConfig(
                        sensor=p.sensor, model="xy-md02", port=server.port, unit=p.device.unit,
                        poll_interval_s=p.poll_interval_s, timeout_s=0.3,
                        temp_min_c=p.limits[0] if p.limits else None,
                        temp_max_c=p.limits[1] if p.limits else None,
                    )
                    for p in probes
                ),
            )  # fmt: skip
            agent = EdgeAgent(config, options, topic_root, clock or run.clock)
            async with publishing(agent, f"{gateway}-{run.prefix}", connect_s=15):
                yield Chain(run, agent, relay, server)


@contextlib.asynccontextmanager
async def publishing(
    agent: EdgeAgent, client_id: str, connect_s: float = 10
) -> AsyncIterator[None]:
    """An edge agent's publisher running (real MQTT) while its coordinators are polled by
    hand; on exit it stops, and the devices' connections, the queue and the sequence store
    close."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.publisher.run(client_id, stop))
    try:
        await asyncio.wait_for(agent.publisher.wait_connected(), connect_s)
        yield
    finally:
        stop.set()
        await task
        for coordinator in agent.coordinators:
            await coordinator.close()
        agent.close()


def simulated(unit: int, scenario: Scenario, start: datetime) -> SimulatedXYMD02:
    return SimulatedXYMD02(unit, scenario, start)


def start_time(now: datetime) -> datetime:
    """Where a case's driven clock starts: a day back, on the hour, so every reading it makes
    is in the past for ingest (which refuses the future) and its record ends by now."""
    return (now - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)


def utcnow() -> datetime:
    return datetime.now(UTC)
