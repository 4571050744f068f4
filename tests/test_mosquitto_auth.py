"""The broker's accounts generated from the registered gateways, enforced by a real Mosquitto.

A second Mosquitto of the test's own runs the shipped ``deploy/mosquitto/mosquitto.conf``
(paths and ports moved into the test's folder) with the dynamic-security file that
``coldtrail mosquitto-auth`` writes. Each attack a gateway could make on the broker is tried
here and must fail: subscribing (plainly or into ingest's shared subscription), connecting
under another client id, publishing outside its own topics.
"""

from __future__ import annotations

import asyncio
import getpass
import glob
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coldtrail import cli
from coldtrail.clock import ManualClock, SystemClock
from coldtrail.deploy import mosquitto
from coldtrail.deploy.tls import self_signed
from coldtrail.edge.publisher import Publisher
from coldtrail.edge.queue import MemoryQueue
from coldtrail.erp import gateways
from coldtrail.erp.masterdata import (
    Location,
    assign_sensor,
    upsert_location,
    upsert_sensor,
    upsert_site,
)
from coldtrail.erp.outbox import DeliveryError, Destination, Event, MqttSink
from coldtrail.errors import TransportError
from coldtrail.messages import Reading
from coldtrail.mqtt import MqttOptions, connect, make_client
from coldtrail.net import free_port
from coldtrail.settings import MqttEndpoint
from tests.conftest import (
    T0,
    RunningIngest,
    async_wait_for,
    cli_json,
    count_readings,
    ingest_worker,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
SERVICE_PW = {
    "ingest": "ingest-secret-1",
    "outbox": "outbox-secret-1",
    "api": "api-secret-1",
    "admin": "admin-secret-1",
}
# Debian's package puts the plugin here; the eclipse-mosquitto image (the compose file's) at
# the shipped config's /usr/lib/mosquitto_dynamic_security.so.
PLUGIN = next(
    iter(
        sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so"))
        + sorted(glob.glob("/usr/lib/mosquitto_dynamic_security.so"))
    ),
    None,
)

Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass
class SecuredBroker:
    workdir: Path
    plain_port: int
    tls_port: int
    ca_file: Path
    proc: subprocess.Popen[bytes]

    def restart(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self.proc = _start(self.workdir, self.plain_port, self.tls_port)

    def url(self, user: str, password: str, *, tls: bool = False) -> str:
        if tls:
            return f"mqtts://{user}:{password}@localhost:{self.tls_port}"
        return f"mqtt://{user}:{password}@127.0.0.1:{self.plain_port}"


def _admin_env(broker: SecuredBroker) -> dict[str, str]:
    return {
        "COLDTRAIL_MQTT_URL": f"mqtt://127.0.0.1:{broker.plain_port}",
        "COLDTRAIL_MQTT_ADMIN_PASSWORD": SERVICE_PW["admin"],
    }


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


def _start(workdir: Path, plain: int, tls: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    log = (workdir / "mosquitto.log").open("ab")
    proc = subprocess.Popen([exe, "-c", str(workdir / "mosquitto.conf")], stdout=log, stderr=log)
    log.close()

    def listening() -> bool:
        with socket.socket() as s1, socket.socket() as s2:
            return (
                s1.connect_ex(("127.0.0.1", plain)) == 0 and s2.connect_ex(("127.0.0.1", tls)) == 0
            )

    wait_for(listening, what="the secured mosquitto")
    return proc


@pytest.fixture
def broker(
    tmp_path: Path, db_url: str, registered: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[SecuredBroker]:
    if PLUGIN is None:
        pytest.fail("Mosquitto's dynamic-security plugin is not installed (Debian: mosquitto)")
    out = tmp_path / "auth"
    report = _generate(db_url, out, monkeypatch)
    assert (report["gateways"], report["disabled_gateways"]) == (2, 1)
    assert report["changed"]
    certs = self_signed(tmp_path / "certs", ["localhost", "127.0.0.1"])
    plain = free_port()
    tls = next(p for p in iter(free_port, None) if p != plain)  # the OS may hand out one twice
    conf = SHIPPED_CONF.read_text()
    for old, new in [
        ("/mosquitto/auth/", f"{out}/"),
        ("/mosquitto/certs/", f"{certs.server_cert.parent}/"),
        ("/mosquitto/data/", f"{tmp_path}/"),
        ("/usr/lib/mosquitto_dynamic_security.so", PLUGIN),
        ("listener 1883", f"listener {plain} 127.0.0.1"),
        ("listener 8883", f"listener {tls} 127.0.0.1"),
    ]:
        assert old in conf, f"the shipped config lost {old!r}"
        conf = conf.replace(old, new)
    # Started as root, mosquitto would switch to its own user, which can't read the test's files.
    conf += f"\nuser {getpass.getuser()}\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    proc = _start(tmp_path, plain, tls)
    secured = SecuredBroker(tmp_path, plain, tls, certs.ca_cert, proc)
    try:
        yield secured
    finally:
        secured.proc.terminate()
        secured.proc.wait(10)


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
        self.disconnects: queue.Queue[int] = queue.Queue()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connack.put(rc.value)
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.put(rc.value)
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


def _attempt(url: str, client_id: str, topic: str, payload: bytes = b"forged") -> int:
    """One publish on a connection of its own: Mosquitto 2.0 answers a refused QoS 1 publish
    with PUBACK 135 and then closes the connection."""
    c = Client(url, client_id)
    try:
        assert c.connect() == 0
        return c.publish(topic, payload)
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
        "$CONTROL/dynamic-security/v1",  # the broker's accounts
    ]:
        assert _attempt(gw_a, "gw-a", topic) == NOT_AUTHORIZED, topic

    # Refused first, allowed last: had a refused one gone through, ingest would have
    # received it before this one.
    sender = _open(clients, gw_a, "gw-a")
    assert sender.publish("coldtrail/v1/wh1/gw-a/telemetry", b"genuine") < 128
    assert ingest.messages.get(timeout=10) == ("coldtrail/v1/wh1/gw-a/telemetry", b"genuine")
    assert sender.publish("coldtrail/v1/wh1/gw-a/status", b"online") < 128  # 16: no subscriber


@pytest.mark.parametrize(
    "subscription",
    [
        "$share/ingest/coldtrail/v1/+/+/telemetry",  # ingest's own group
        "$share/mine/coldtrail/v1/+/+/telemetry",  # a group of its own
        "coldtrail/#",
        "coldtrail/v1/wh1/gw-a/telemetry",  # even its own topic
        "$CONTROL/dynamic-security/#",
        "#",
    ],
)
def test_a_gateway_may_subscribe_to_nothing(
    broker: SecuredBroker, registered: dict[str, str], clients: list[Client], subscription: str
) -> None:
    snoop = _open(clients, broker.url("gw-a", registered["gw-a"]), "gw-a")
    assert snoop.subscribe(subscription) == NOT_AUTHORIZED


def test_a_gateway_that_tries_to_join_ingests_shared_subscription_takes_nothing_from_it(
    broker: SecuredBroker, registered: dict[str, str], clients: list[Client]
) -> None:
    """The attack the plain ACL file let through: a gateway subscribing into ingest's group
    was handed every other message, and the broker dropped them (no read access), after
    acknowledging them to their publisher: 50 of 100 lost."""
    ingest = _open(clients, broker.url("coldtrail-ingest", SERVICE_PW["ingest"]), "ingest")
    assert ingest.subscribe("$share/ingest/coldtrail/v1/+/+/telemetry") == 1
    thief = _open(clients, broker.url("gw-a", registered["gw-a"]), "gw-a")
    assert thief.subscribe("$share/ingest/coldtrail/v1/+/+/telemetry") == NOT_AUTHORIZED
    gw_b = _open(clients, broker.url("gw-b", registered["gw-b"]), "gw-b")
    sent = [f"reading {n}".encode() for n in range(100)]
    for payload in sent:
        assert gw_b.publish("coldtrail/v1/wh1/gw-b/telemetry", payload) == 0
    got = [ingest.messages.get(timeout=10)[1] for _ in sent]
    assert got == sent
    assert _nothing_received(thief)


@pytest.mark.parametrize(
    "client_id",
    [
        "ingest-worker-1",  # a service's session: taking it would kick the worker off
        "gw-b",  # another gateway's
        "something-else",
    ],
)
def test_a_gateway_can_connect_only_under_its_own_client_id(
    broker: SecuredBroker, registered: dict[str, str], clients: list[Client], client_id: str
) -> None:
    victim_url = broker.url("coldtrail-ingest", SERVICE_PW["ingest"])
    if client_id.startswith("gw-"):
        victim_url = broker.url(client_id, registered[client_id])
    victim = _open(clients, victim_url, client_id)
    impostor = Client(broker.url("gw-a", registered["gw-a"]), client_id)
    try:
        assert impostor.connect() == NOT_AUTHORIZED
    finally:
        impostor.close()
    # The session it aimed at is untouched: still connected, still served.
    assert victim.disconnects.empty()
    assert victim.subscribe("coldtrail/v1/+/+/telemetry") in (1, NOT_AUTHORIZED)
    assert victim.disconnects.empty()


def test_a_publish_over_the_size_limit_never_reaches_ingest(
    broker: SecuredBroker, registered: dict[str, str], clients: list[Client]
) -> None:
    ingest = _open(clients, broker.url("coldtrail-ingest", SERVICE_PW["ingest"]), "ingest")
    ingest.subscribe("coldtrail/v1/+/+/telemetry")
    gw_a = _open(clients, broker.url("gw-a", registered["gw-a"]), "gw-a")
    too_big = b"[" + b"0," * (2 * 1024 * 1024) + b"0]"
    # Mosquitto 2.0 closes the connection of a client that sends more than the limit: the
    # message is never acknowledged, so a ColdTrail edge keeps its readings (and it sends at
    # most 500 readings a message, far below the limit).
    gw_a.client.publish("coldtrail/v1/wh1/gw-a/telemetry", too_big, qos=1)
    assert gw_a.disconnects.get(timeout=10) != 0
    again = _open(clients, broker.url("gw-a", registered["gw-a"]), "gw-a")
    assert again.publish("coldtrail/v1/wh1/gw-a/telemetry", b"small") == 0
    assert ingest.messages.get(timeout=10)[1] == b"small"


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
    snoop = _open(clients, broker.url("gw-a", registered["gw-a"]), "gw-a")
    assert snoop.subscribe("coldtrail/#") == NOT_AUTHORIZED
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
    assert ingest.subscribe("coldtrail/v1/events/#") == NOT_AUTHORIZED
    assert outbox.subscribe("coldtrail/#") == NOT_AUTHORIZED
    outbox_url = broker.url("coldtrail-outbox", SERVICE_PW["outbox"])
    assert _attempt(outbox_url, "o", "coldtrail/v1/wh1/gw-a/telemetry") == NOT_AUTHORIZED
    ingest_url = broker.url("coldtrail-ingest", SERVICE_PW["ingest"])
    assert _attempt(ingest_url, "i", "coldtrail/v1/events/alarm") == NOT_AUTHORIZED
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
        # As stored since migration 0013: the password in the secret, not in the URL.
        bare = f"mqtt://coldtrail-outbox@127.0.0.1:{broker.plain_port}"
        stored = MqttSink(Destination("bus", "mqtt", bare, SERVICE_PW["outbox"]), SystemClock())
        stored.deliver([event])
        assert api.messages.get(timeout=10)[0] == "coldtrail/v1/events/alarm/raised"
        stored.close()
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
    c = Client(broker.url(user, password or registered[user]), user)
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


def _connects(url: str, client_id: str) -> bool:
    c = Client(url, client_id)
    try:
        return c.connect() == 0
    finally:
        c.close()


def test_gateway_changes_reach_the_running_broker_at_once(
    broker: SecuredBroker,
    registered: dict[str, str],
    clients: list[Client],
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rotate, disable, enable, add, move: each takes effect without restarting the broker,
    through the plugin's admin topic; a disabled gateway's open connection is cut."""
    env = {"COLDTRAIL_DATABASE_URL": db_url, **_admin_env(broker)}
    old = broker.url("gw-a", registered["gw-a"])
    rotated = cli_json(["gateways", "rotate", "gw-a"], monkeypatch, **env)
    assert rotated["broker"] == "updated"
    assert not _connects(old, "gw-a")
    new = broker.url("gw-a", rotated["mqtt_password"])
    assert _connects(new, "gw-a")

    online = _open(clients, new, "gw-a")
    assert cli_json(["gateways", "disable", "gw-a"], monkeypatch, **env)["broker"] == "updated"
    assert online.disconnects.get(timeout=10) >= 128  # cut off at once
    assert not _connects(new, "gw-a")
    assert cli_json(["gateways", "enable", "gw-a"], monkeypatch, **env)["broker"] == "updated"
    assert _connects(new, "gw-a")

    added = cli_json(["gateways", "add", "gw-new", "--site", "wh2"], monkeypatch, **env)
    assert added["broker"] == "updated"
    url = broker.url("gw-new", added["mqtt_password"])
    assert _attempt(url, "gw-new", "coldtrail/v1/wh2/gw-new/telemetry") < 128
    assert _attempt(url, "gw-new", "coldtrail/v1/wh1/gw-new/telemetry") == NOT_AUTHORIZED

    moved = cli_json(["gateways", "move", "gw-new", "--site", "wh1"], monkeypatch, **env)
    assert (moved["was"], moved["broker"]) == ("wh2", "updated")
    assert _attempt(url, "gw-new", "coldtrail/v1/wh1/gw-new/telemetry") < 128
    assert _attempt(url, "gw-new", "coldtrail/v1/wh2/gw-new/telemetry") == NOT_AUTHORIZED


def test_the_generated_file_is_what_the_database_says_after_a_restart(
    broker: SecuredBroker,
    registered: dict[str, str],
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without an admin account the command says the broker was not told; regenerating and
    restarting the broker brings it in line with the database."""
    env = {"COLDTRAIL_DATABASE_URL": db_url}
    rotated = cli_json(["gateways", "rotate", "gw-b"], monkeypatch, **env)
    assert rotated["broker"].startswith("not told")
    assert _connects(broker.url("gw-b", registered["gw-b"]), "gw-b")  # the old one, still
    assert _generate(db_url, broker.workdir / "auth", monkeypatch)["changed"]
    broker.restart()
    assert not _connects(broker.url("gw-b", registered["gw-b"]), "gw-b")
    assert _connects(broker.url("gw-b", rotated["mqtt_password"]), "gw-b")


def test_regenerating_without_changes_leaves_the_file_alone(
    broker: SecuredBroker, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = broker.workdir / "auth" / mosquitto.DYNSEC_FILE
    before = path.read_text()
    assert not _generate(db_url, broker.workdir / "auth", monkeypatch)["changed"]
    assert path.read_text() == before


def test_gateways_connect_over_tls_when_they_trust_the_ca(
    broker: SecuredBroker, registered: dict[str, str], clients: list[Client]
) -> None:
    url = broker.url("gw-b", registered["gw-b"], tls=True)
    gw_b = _open(clients, url, "gw-b", broker.ca_file)
    assert gw_b.publish("coldtrail/v1/wh1/gw-b/telemetry", b"over tls") < 128


# paho leaves the socket of a failed TLS handshake for the garbage collector to close.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_gateway_that_does_not_trust_the_ca_is_not_connected(
    broker: SecuredBroker, registered: dict[str, str]
) -> None:
    url = broker.url("gw-b", registered["gw-b"], tls=True)
    untrusting = Client(url, "gw-b")  # the system's CAs don't know ours
    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.connect()
    untrusting.close()


def test_a_gateways_role_grants_its_own_two_topics_and_binds_its_client_id() -> None:
    acc = mosquitto.gateway_account(
        "coldtrail", mosquitto.GatewayAccount("gw-x", "s9", "$7$101$c2FsdA==$aGFzaA==")
    )
    doc = json.loads(mosquitto.render_dynsec([acc]))
    assert doc["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    (client,) = doc["clients"]
    assert client["clientid"] == "gw-x"
    assert (client["password"], client["salt"], client["iterations"]) == (
        "aGFzaA==",
        "c2FsdA==",
        101,
    )
    (role,) = doc["roles"]
    assert role["acls"] == [
        {"acltype": "publishClientSend", "topic": "coldtrail/v1/s9/gw-x/telemetry", "allow": True},
        {"acltype": "publishClientSend", "topic": "coldtrail/v1/s9/gw-x/status", "allow": True},
    ]


def test_a_gateway_named_like_a_service_account_is_refused(conn: Conn) -> None:
    upsert_site(conn, "wh1", "Warehouse 1")
    for name in ("coldtrail-ingest", "ColdTrail-api", "coldtrail-ingest-host-0"):
        with pytest.raises(gateways.GatewayError, match="not starting 'coldtrail-'"):
            gateways.register(conn, name, "wh1", "squatter")
    # And should one be in the database from before the rule, the file is not written.
    accounts = mosquitto.service_accounts("coldtrail", {"ingest": "pw"})
    accounts += [mosquitto.Account("coldtrail-ingest", "$7$1$YQ==$Yg==")]
    with pytest.raises(ValueError, match="appears twice"):
        mosquitto.render_dynsec(accounts)


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


async def test_edges_keep_what_a_restarted_broker_could_not_deliver(
    broker: SecuredBroker, registered: dict[str, str], conn: Conn, db_url: str
) -> None:
    """The shipped config, persistence on, two ingest workers on the shared subscription,
    two edges publishing through a broker restart. Mosquitto does not restore shared
    subscriptions at a restart: until the workers subscribe again, a publish has no
    subscriber and its PUBACK says so (16). The edges keep those readings and send them
    again: every reading is stored exactly once."""
    upsert_location(conn, Location("WH1-CR", "wh1", "cold_room", "Cold room", 2.0, 8.0))
    sensors = {"gw-a": ("A1", "A2"), "gw-b": ("B1", "B2")}
    for sensor in (s for pair in sensors.values() for s in pair):
        upsert_sensor(conn, sensor, "xy-md02", f"SN-{sensor}")
        assign_sensor(conn, sensor, "WH1-CR", T0)
    ingest_url = broker.url("coldtrail-ingest", SERVICE_PW["ingest"])
    options = MqttOptions(MqttEndpoint.parse(ingest_url), protocol="5")
    workers = [
        ingest_worker(db_url, options, "coldtrail", f"coldtrail-ingest-{n}", share_group="ingest")
        for n in (1, 2)
    ]
    queues = {gw: MemoryQueue() for gw in sensors}
    edges = {
        gw: Publisher(
            site="wh1",
            gateway=gw,
            topic_root="coldtrail",
            options=MqttOptions(MqttEndpoint.parse(broker.url(gw, registered[gw])), protocol="5"),
            queue=queues[gw],
            clock=ManualClock(T0),
            interval_s=0.05,
        )
        for gw in sensors
    }
    produced = 0

    def produce(rounds: int) -> None:
        nonlocal produced
        for _ in range(rounds):
            produced += 1
            for gw, pair in sensors.items():
                for sensor in pair:
                    ts = T0 + timedelta(seconds=produced)
                    queues[gw].put(Reading(sensor=sensor, seq=produced, ts=ts, temperature_c=5.0))
                edges[gw].wake()

    stop = asyncio.Event()
    tasks = [asyncio.create_task(edge.run(gw, stop)) for gw, edge in edges.items()]
    try:
        with RunningIngest(workers[0]), RunningIngest(workers[1]):
            for edge in edges.values():
                await asyncio.wait_for(edge.wait_connected(), 10)
            for _ in range(20):
                produce(5)
                await asyncio.sleep(0.01)  # a fleet's pace
            await async_wait_for(lambda: count_readings(conn) == produced * 4, what="a first part")
        # The workers stay away across the restart, so the edges publish into the window in
        # which nothing is subscribed (it is short and racy when the workers come back first).
        broker.restart()
        for _ in range(10):
            produce(5)
            await asyncio.sleep(0.05)
        await async_wait_for(
            lambda: all(e.kept_back for e in edges.values()), what="PUBACKs with no subscriber"
        )
        again = [
            ingest_worker(
                db_url, options, "coldtrail", f"coldtrail-ingest-{n}", share_group="ingest"
            )
            for n in (1, 2)
        ]
        with RunningIngest(again[0]), RunningIngest(again[1]):
            for _ in range(10):
                produce(5)
                await asyncio.sleep(0.05)
            await async_wait_for(
                lambda: count_readings(conn) == produced * 4, limit_s=90, what="every reading"
            )
            await async_wait_for(
                lambda: all(len(q) == 0 for q in queues.values()), what="the edges' queues"
            )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    stored = conn.execute(
        "SELECT sensor_id, count(*), count(DISTINCT seq), min(seq), max(seq) FROM readings "
        "GROUP BY sensor_id ORDER BY sensor_id"
    ).fetchall()
    assert stored == [(s, produced, produced, 1, produced) for s in ("A1", "A2", "B1", "B2")]
    assert sum(w.stats.readings_stored for w in [*workers, *again]) == produced * 4
    assert sum(w.stats.duplicates for w in [*workers, *again]) == 0
