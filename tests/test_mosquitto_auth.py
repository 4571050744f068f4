"""The broker files generated from the registered gateways, enforced by a real Mosquitto.

A second Mosquitto of the test's own runs the shipped ``deploy/mosquitto/mosquitto.conf``
(paths and ports moved into the test's folder) with the generated password and ACL files.
"""

from __future__ import annotations

import getpass
import json
import queue
import shutil
import signal
import socket
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

from coldtrail import cli
from coldtrail.clock import SystemClock
from coldtrail.deploy import mosquitto
from coldtrail.deploy.tls import self_signed
from coldtrail.erp import gateways
from coldtrail.erp.masterdata import upsert_site
from coldtrail.erp.outbox import DeliveryError, Destination, Event, MqttSink
from coldtrail.errors import TransportError
from coldtrail.mqtt import MqttOptions, connect, make_client
from coldtrail.net import free_port
from coldtrail.settings import MqttEndpoint
from tests.conftest import cli_json, wait_for

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
SERVICE_PW = {"ingest": "ingest-secret-1", "outbox": "outbox-secret-1", "api": "api-secret-1"}

Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass
class SecuredBroker:
    workdir: Path
    plain_port: int
    tls_port: int
    ca_file: Path
    proc: subprocess.Popen[bytes]

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def url(self, user: str, password: str, *, tls: bool = False) -> str:
        if tls:
            return f"mqtts://{user}:{password}@localhost:{self.tls_port}"
        return f"mqtt://{user}:{password}@127.0.0.1:{self.plain_port}"


def _generate(db_url: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``coldtrail mosquitto-auth`` as the compose file runs it."""
    monkeypatch.chdir(out.parent)  # no stray .env
    passwords = {f"COLDTRAIL_MQTT_{r.upper()}_PASSWORD": pw for r, pw in SERVICE_PW.items()}
    report: dict[str, Any] = cli_json(
        ["mosquitto-auth", "--out", str(out)],
        monkeypatch,
        COLDTRAIL_DATABASE_URL=db_url,
        **passwords,
    )
    return report


@pytest.fixture
def registered(conn: Conn) -> dict[str, str]:
    """Gateways gw-a and gw-b at site wh1, gw-c at wh2 (disabled); their passwords."""
    upsert_site(conn, "wh1", "Warehouse 1")
    upsert_site(conn, "wh2", "Warehouse 2")
    pw = {
        g: gateways.register(conn, g, s, g.upper())
        for g, s in [("gw-a", "wh1"), ("gw-b", "wh1"), ("gw-c", "wh2")]
    }
    gateways.set_disabled(conn, "gw-c", True)
    return pw


@pytest.fixture
def broker(
    tmp_path: Path, db_url: str, registered: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[SecuredBroker]:
    out = tmp_path / "auth"
    report = _generate(db_url, out, monkeypatch)
    assert report["gateways"] == 2
    assert report["changed"]
    certs = self_signed(tmp_path / "certs", ["localhost", "127.0.0.1"])
    plain = free_port()
    tls = next(p for p in iter(free_port, None) if p != plain)  # the OS may hand out one twice
    conf = SHIPPED_CONF.read_text()
    for old, new in [
        ("/mosquitto/auth/", f"{out}/"),
        ("/mosquitto/certs/", f"{certs.server_cert.parent}/"),
        ("/mosquitto/data/", f"{tmp_path}/"),
        ("listener 1883", f"listener {plain} 127.0.0.1"),
        ("listener 8883", f"listener {tls} 127.0.0.1"),
    ]:
        assert old in conf, f"the shipped config lost {old!r}"
        conf = conf.replace(old, new)
    # Started as root, mosquitto would switch to its own user, which can't read the test's files.
    conf += f"\nuser {getpass.getuser()}\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    log = (tmp_path / "mosquitto.log").open("wb")
    proc = subprocess.Popen([exe, "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log)

    def listening() -> bool:
        with socket.socket() as s1, socket.socket() as s2:
            return (
                s1.connect_ex(("127.0.0.1", plain)) == 0 and s2.connect_ex(("127.0.0.1", tls)) == 0
            )

    try:
        wait_for(listening, what="the secured mosquitto")
        yield SecuredBroker(tmp_path, plain, tls, certs.ca_cert, proc)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


class Client:
    """A paho client driven synchronously: connect result, PUBACK and SUBACK reason codes."""

    def __init__(self, url: str, client_id: str, ca_file: Path | None = None) -> None:
        self.options = MqttOptions(MqttEndpoint.parse(url), protocol="5", ca_file=ca_file)
        self.client = make_client(self.options, client_id, persistent=False)
        self.client.reconnect_delay_set(min_delay=60, max_delay=60)
        self.connack: queue.Queue[int] = queue.Queue()
        self.acks: dict[int, queue.Queue[int]] = {}
        self.lock = threading.Lock()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connack.put(rc.value)
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self._ack(mid, rc.value)
        self.client.on_subscribe = lambda _c, _u, mid, rcs, _p: self._ack(mid, rcs[0].value)
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))

    def _queue(self, mid: int) -> queue.Queue[int]:
        with self.lock:
            return self.acks.setdefault(mid, queue.Queue())

    def _ack(self, mid: int, code: int) -> None:
        self._queue(mid).put(code)

    def connect(self) -> int:
        connect(self.client, self.options, persistent=False)
        self.client.loop_start()
        return self.connack.get(timeout=10)

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """The PUBACK's reason code: 0 accepted, 135 not authorized."""
        info = self.client.publish(topic, payload, qos=1)
        return self._queue(info.mid).get(timeout=10)

    def subscribe(self, topic: str) -> int:
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        return self._queue(mid).get(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


def _open(made: list[Client], url: str, name: str, ca: Path | None = None) -> Client:
    c = Client(url, name, ca)
    made.append(c)
    assert c.connect() == 0, f"{name} was refused"
    return c


NOT_AUTHORIZED = 135
BAD_CREDENTIALS = 134


def _attempt(url: str, topic: str) -> int:
    """One publish on a connection of its own: Mosquitto 2.0 answers a refused QoS 1 publish
    with PUBACK 135 and then closes the connection."""
    c = Client(url, "attempt")
    try:
        assert c.connect() == 0
        return c.publish(topic, b"forged")
    finally:
        c.close()


def test_a_gateway_publishes_under_its_own_topic_and_nowhere_else(
    broker: SecuredBroker, registered: dict[str, str], clients: list[Client]
) -> None:
    ingest = _open(clients, broker.url("coldtrail-ingest", SERVICE_PW["ingest"]), "ingest")
    assert ingest.subscribe("$share/ingest/coldtrail/v1/+/+/telemetry") == 1  # granted QoS 1
    gw_a = broker.url("gw-a", registered["gw-a"])
    for topic in [
        "coldtrail/v1/wh1/gw-b/telemetry",  # a neighbour's topic
        "coldtrail/v1/wh2/gw-a/telemetry",  # its own name at another site
        "coldtrail/v1/events/alarm",  # ColdTrail's own events
    ]:
        assert _attempt(gw_a, topic) == NOT_AUTHORIZED, topic

    # Refused first, allowed last: had a refused one gone through, ingest would have
    # received it before this one.
    sender = _open(clients, gw_a, "gw-a")
    assert sender.publish("coldtrail/v1/wh1/gw-a/telemetry", b"genuine") < 128
    assert ingest.messages.get(timeout=10) == ("coldtrail/v1/wh1/gw-a/telemetry", b"genuine")
    assert sender.publish("coldtrail/v1/wh1/gw-a/status", b"online") < 128  # 16: no subscriber


def _nothing_received(c: Client) -> bool:
    """After a round trip on the client's connection: whatever the broker had sent it before
    has been handled by then (one socket, one loop thread, in order)."""
    c.subscribe("coldtrail/v1/round-trip")
    return c.messages.empty()


def test_a_gateway_does_not_receive_what_others_send(
    broker: SecuredBroker, registered: dict[str, str], clients: list[Client]
) -> None:
    ingest = _open(clients, broker.url("coldtrail-ingest", SERVICE_PW["ingest"]), "ingest")
    ingest.subscribe("coldtrail/v1/+/+/telemetry")
    # Mosquitto grants any subscription and checks read access for each message it routes.
    snoop = _open(clients, broker.url("gw-a", registered["gw-a"]), "gw-a")
    snoop.subscribe("coldtrail/#")
    gw_b = _open(clients, broker.url("gw-b", registered["gw-b"]), "gw-b")
    assert gw_b.publish("coldtrail/v1/wh1/gw-b/telemetry", b"private") < 128
    # The broker routes a message to all subscribers in one pass; ingest has it, so the
    # snoop's copy, had there been one, is already on its socket.
    assert ingest.messages.get(timeout=10)[1] == b"private"
    assert _nothing_received(snoop)


def test_services_get_only_their_own_topics(broker: SecuredBroker, clients: list[Client]) -> None:
    outbox = _open(clients, broker.url("coldtrail-outbox", SERVICE_PW["outbox"]), "outbox")
    api = _open(clients, broker.url("coldtrail-api", SERVICE_PW["api"]), "api")
    ingest = _open(clients, broker.url("coldtrail-ingest", SERVICE_PW["ingest"]), "ingest-sub")
    api.subscribe("coldtrail/v1/events/#")
    ingest.subscribe("coldtrail/v1/events/#")
    outbox_url = broker.url("coldtrail-outbox", SERVICE_PW["outbox"])
    assert _attempt(outbox_url, "coldtrail/v1/wh1/gw-a/telemetry") == NOT_AUTHORIZED
    ingest_url = broker.url("coldtrail-ingest", SERVICE_PW["ingest"])
    assert _attempt(ingest_url, "coldtrail/v1/events/alarm") == NOT_AUTHORIZED
    assert outbox.publish("coldtrail/v1/events/alarm/raised", b"real") < 128
    assert api.messages.get(timeout=10) == ("coldtrail/v1/events/alarm/raised", b"real")
    assert _nothing_received(ingest)


def test_an_event_the_broker_refuses_is_not_delivered(
    broker: SecuredBroker, clients: list[Client]
) -> None:
    """The outbox account may publish under ``coldtrail/v1/events`` only. A destination whose
    topic root the ACL doesn't allow gets PUBACK 135 (MQTT 5): the event stays undelivered,
    to be retried and in the end listed as dead, instead of being marked delivered."""
    url = broker.url("coldtrail-outbox", SERVICE_PW["outbox"])
    api = _open(clients, broker.url("coldtrail-api", SERVICE_PW["api"]), "api")
    api.subscribe("coldtrail/v1/events/#")
    allowed = MqttSink(Destination("bus", "mqtt", url), SystemClock())
    refused = MqttSink(Destination("fleet2", "mqtt", f"{url}/fleet2"), SystemClock())
    event = Event(1, uuid.uuid4(), "alarm.raised", "alarm/1", {"n": 1}, datetime.now(UTC))
    try:
        with pytest.raises(DeliveryError, match="refused it: Not authorized") as failed:
            refused.deliver([event, event])
        assert failed.value.delivered == 0
        allowed.deliver([event])
        topic, payload = api.messages.get(timeout=10)
    finally:
        allowed.close()
        refused.close()
    assert topic == "coldtrail/v1/events/alarm/raised"
    assert json.loads(payload)["id"] == str(event.event_id)


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("gw-a", "not-the-password"),
        ("gw-c", None),  # registered, but disabled
        ("nobody", "x"),
        ("coldtrail-ingest", "outbox-secret-1"),
    ],
)
def test_wrong_password_unknown_and_disabled_gateways_are_refused(
    broker: SecuredBroker, registered: dict[str, str], user: str, password: str | None
) -> None:
    c = Client(broker.url(user, password or registered[user]), f"probe-{user}")
    try:
        assert c.connect() in (BAD_CREDENTIALS, NOT_AUTHORIZED)
    finally:
        c.close()


def test_anonymous_clients_are_refused(broker: SecuredBroker) -> None:
    c = Client(f"mqtt://127.0.0.1:{broker.plain_port}", "anonymous")
    try:
        assert c.connect() != 0
    finally:
        c.close()


def test_a_rotated_password_takes_over_after_regenerating_and_a_reload(
    broker: SecuredBroker,
    registered: dict[str, str],
    conn: Conn,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rotated = cli_json(["gateways", "rotate", "gw-a"], monkeypatch, COLDTRAIL_DATABASE_URL=db_url)
    assert rotated["gateway"] == "gw-a"
    assert rotated["mqtt_password"] != registered["gw-a"]
    assert _generate(db_url, broker.workdir / "auth", monkeypatch)["changed"]
    broker.reload()

    def old_refused() -> bool:
        c = Client(broker.url("gw-a", registered["gw-a"]), "gw-a-old")
        try:
            return c.connect() != 0
        finally:
            c.close()

    wait_for(old_refused, what="the broker to drop the old password")
    c = Client(broker.url("gw-a", rotated["mqtt_password"]), "gw-a-new")
    try:
        assert c.connect() == 0
    finally:
        c.close()


def test_regenerating_without_changes_leaves_the_files_alone(
    broker: SecuredBroker, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (broker.workdir / "auth" / "passwd").read_text()
    assert not _generate(db_url, broker.workdir / "auth", monkeypatch)["changed"]
    assert (broker.workdir / "auth" / "passwd").read_text() == before


def test_gateways_connect_over_tls_when_they_trust_the_ca(
    broker: SecuredBroker, registered: dict[str, str], clients: list[Client]
) -> None:
    url = broker.url("gw-b", registered["gw-b"], tls=True)
    gw_b = _open(clients, url, "gw-b-tls", broker.ca_file)
    assert gw_b.publish("coldtrail/v1/wh1/gw-b/telemetry", b"over tls") < 128


# paho leaves the socket of a failed TLS handshake for the garbage collector to close.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_gateway_that_does_not_trust_the_ca_is_not_connected(
    broker: SecuredBroker, registered: dict[str, str]
) -> None:
    url = broker.url("gw-b", registered["gw-b"], tls=True)
    untrusting = Client(url, "gw-b-untrusting")  # the system's CAs don't know ours
    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.connect()
    untrusting.close()


def test_generated_acl_names_each_gateway_topic() -> None:
    acc = mosquitto.gateway_account("coldtrail", mosquitto.GatewayAccount("gw-x", "s9", "$7$1$a$b"))
    assert mosquitto.render_acl([acc]).splitlines()[1:] == [
        "",
        "user gw-x",
        "topic write coldtrail/v1/s9/gw-x/telemetry",
        "topic write coldtrail/v1/s9/gw-x/status",
    ]


def test_a_gateway_named_like_a_service_account_is_refused(conn: Conn) -> None:
    upsert_site(conn, "wh1", "Warehouse 1")
    gateways.register(conn, "coldtrail-ingest", "wh1", "squatter")
    accounts = mosquitto.service_accounts("coldtrail", {"ingest": "pw"})
    accounts += [mosquitto.gateway_account("coldtrail", g) for g in gateways.enabled_accounts(conn)]
    with pytest.raises(ValueError, match="appears twice"):
        mosquitto.render_passwd(accounts)


@pytest.mark.parametrize(
    ("gateway", "site", "message"),
    [
        ("gw-a", "wh1", "already registered"),
        ("gw-new", "nowhere", "no site 'nowhere'"),
        ("gw/evil", "wh1", "not allowed"),
    ],
)
def test_registering_a_gateway_refuses_clashes_unknown_sites_and_bad_names(
    conn: Conn, registered: dict[str, str], gateway: str, site: str, message: str
) -> None:
    with pytest.raises(gateways.GatewayError, match=message):
        gateways.register(conn, gateway, site, "x")


def test_reporting_role_sees_gateways_but_not_their_password_hashes(
    conn: Conn, registered: dict[str, str]
) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL ROLE coldtrail_readonly")
        names = [r[0] for r in conn.execute("SELECT id FROM gateways ORDER BY id")]
        assert names == ["gw-a", "gw-b", "gw-c"]
    with conn.transaction():
        conn.execute("SET LOCAL ROLE coldtrail_readonly")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("SELECT mqtt_password_hash FROM gateways")
    logged = conn.execute(
        "SELECT new_value FROM audit_log WHERE record_type = 'gateways' ORDER BY id"
    ).fetchall()
    assert len(logged) >= 3
    assert all("mqtt_password_hash" not in r[0] for r in logged)


def test_gateway_add_prints_its_password_once_and_a_duplicate_exits_2(
    conn: Conn, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    upsert_site(conn, "wh1", "Warehouse 1")
    db = {"COLDTRAIL_DATABASE_URL": db_url}
    added = cli_json(["gateways", "add", "gw-new", "--site", "wh1"], monkeypatch, **db)
    assert added["topic"] == "coldtrail/v1/wh1/gw-new/telemetry"
    assert len(added["mqtt_password"]) >= 32
    assert added["mqtt_password"] not in json.dumps(
        cli_json(["gateways", "list"], monkeypatch, **db)
    )
    assert cli.main(["gateways", "add", "gw-new", "--site", "wh1"]) == 2
    assert "already registered" in capsys.readouterr().err
