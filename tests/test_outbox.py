"""The outbox: events written with the change, delivered at least once, in order, signed."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from coldtrail.clock import ManualClock
from coldtrail.erp.holds import place_hold
from coldtrail.erp.outbox import (
    DeliveryError,
    Destination,
    Event,
    MqttSink,
    OutboxDispatcher,
    WebhookSink,
    add_destination,
    dead_deliveries,
    retry_dead,
    verify_webhook,
)
from coldtrail.erp.products import register_lot
from coldtrail.errors import RuleViolation
from coldtrail.mqtt import MqttOptions, connect, make_client
from coldtrail.net import free_port
from coldtrail.retry import Backoff
from coldtrail.settings import MqttEndpoint
from tests.conftest import GTIN, T0, make_erp, wait_for

Conn = psycopg.Connection[tuple[Any, ...]]
SECRET = "webhook-shared-secret"
STEP = Backoff(initial_s=10.0, maximum_s=10.0, deadline_s=None)


class Receiver:
    """An HTTP endpoint as an ERP would run it: checks the signature, answers with the next
    scripted status, and takes each idempotency key once."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.failures: dict[str, int] = {}  # key prefix "*" fails every event
        self.requests: list[tuple[str, bool]] = []  # (idempotency key, signature valid)
        self.accepted: dict[str, dict[str, Any]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers["Idempotency-Key"]
                valid = verify_webhook(
                    SECRET,
                    self.headers.get("X-ColdTrail-Signature", ""),
                    body,
                    receiver.clock.now(),
                )
                receiver.requests.append((key, valid))
                left = receiver.failures.get(key, receiver.failures.get("*", 0))
                if left:
                    receiver.failures[key] = left - 1
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"busy")
                    return
                receiver.accepted.setdefault(key, json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/coldtrail"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def keys(self) -> list[str]:
        return [k for k, _ in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(clock: ManualClock) -> Iterator[Receiver]:
    r = Receiver(clock)
    yield r
    r.close()


def _setup(conn: Conn, receiver: Receiver) -> int:
    make_erp(conn)
    add_destination(conn, "admin", Destination("erp", "webhook", receiver.url, SECRET))
    return register_lot(conn, "logi1", GTIN, "OB1").id


def _two_holds(conn: Conn, receiver: Receiver, clock: ManualClock) -> tuple[str, str]:
    """Two lots put on hold one after the other: the ids of their two events, in order."""
    lot = _setup(conn, receiver)
    place_hold(conn, "qa1", lot, "first", clock.now())
    other = register_lot(conn, "logi1", GTIN, "OB2").id
    place_hold(conn, "qa1", other, "second", clock.now())
    first, second = _event_ids(conn)
    return first, second


def _event_ids(conn: Conn) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT event_id FROM outbox_events ORDER BY id")]


def test_a_receiver_failing_twice_gets_the_event_once_per_key(
    conn: Conn, db_url: str, clock: ManualClock, receiver: Receiver
) -> None:
    lot = _setup(conn, receiver)
    place_hold(conn, "qa1", lot, "excursion in CR", clock.now())
    [event_id] = _event_ids(conn)
    receiver.failures[event_id] = 2
    dispatcher = OutboxDispatcher(db_url, clock=clock, backoff=STEP)

    assert dispatcher.run_once(conn) == 0
    assert dispatcher.run_once(conn) == 0  # not due again yet: no second request
    assert len(receiver.requests) == 1
    clock.advance(10)
    assert dispatcher.run_once(conn) == 0
    clock.advance(10)
    assert dispatcher.run_once(conn) == 1
    assert dispatcher.run_once(conn) == 0

    assert receiver.requests == [(event_id, True)] * 3
    assert list(receiver.accepted) == [event_id]
    doc = receiver.accepted[event_id]
    assert (doc["specversion"], doc["type"], doc["subject"]) == (
        "1.0", "coldtrail.hold.placed", f"lot/{lot}",
    )  # fmt: skip
    assert doc["data"]["lot_number"] == "OB1"
    row = conn.execute(
        "SELECT attempts, delivered_at, last_error FROM outbox_deliveries"
    ).fetchone()
    assert row == (3, T0 + timedelta(seconds=20), None)


def test_a_crash_after_sending_sends_again_under_the_same_key(
    conn: Conn, db_url: str, clock: ManualClock, receiver: Receiver
) -> None:
    lot = _setup(conn, receiver)
    place_hold(conn, "qa1", lot, "excursion in CR", clock.now())

    class PowerCut(Exception):
        pass

    class CrashAfterSend(WebhookSink):
        def deliver(self, events: Sequence[Event]) -> None:
            super().deliver(events)
            raise PowerCut  # before the delivery is marked in the database

    crashing = OutboxDispatcher(db_url, clock=clock, sinks={"webhook": CrashAfterSend})
    with pytest.raises(PowerCut):
        crashing.run_once(conn)
    assert OutboxDispatcher(db_url, clock=clock).run_once(conn) == 1

    [event_id] = _event_ids(conn)
    assert receiver.keys() == [event_id, event_id]
    assert list(receiver.accepted) == [event_id]


def test_a_failing_event_holds_back_the_later_ones(
    conn: Conn, db_url: str, clock: ManualClock, receiver: Receiver
) -> None:
    first, second = _two_holds(conn, receiver, clock)
    receiver.failures[first] = 1
    dispatcher = OutboxDispatcher(db_url, clock=clock, backoff=STEP)

    dispatcher.run_once(conn)
    assert receiver.keys() == [first]
    clock.advance(10)
    assert dispatcher.run_once(conn) == 2
    assert receiver.keys() == [first, first, second]


def test_a_failure_inside_a_batch_keeps_what_went_before_it(
    conn: Conn, db_url: str, clock: ManualClock, receiver: Receiver
) -> None:
    first, second = _two_holds(conn, receiver, clock)
    place_hold(conn, "qa1", register_lot(conn, "logi1", GTIN, "OB3").id, "third", clock.now())
    third = _event_ids(conn)[2]
    receiver.failures[second] = 1
    dispatcher = OutboxDispatcher(db_url, clock=clock, backoff=STEP)

    assert dispatcher.run_once(conn) == 1  # one batch: the first went, the second failed
    assert receiver.keys() == [first, second]
    clock.advance(10)
    assert dispatcher.run_once(conn) == 2
    assert receiver.keys() == [first, second, second, third]  # the first is not sent again
    assert list(receiver.accepted) == [first, second, third]


def test_an_event_is_given_up_after_dead_after_and_can_be_retried(
    conn: Conn, db_url: str, clock: ManualClock, receiver: Receiver
) -> None:
    first, second = _two_holds(conn, receiver, clock)
    receiver.failures[first] = 10**6
    dispatcher = OutboxDispatcher(db_url, clock=clock, backoff=STEP, dead_after=timedelta(days=3))

    dispatcher.run_once(conn)
    clock.advance(3 * 86400)
    assert dispatcher.run_once(conn) == 1  # the first is given up on, the second goes

    [dead] = dead_deliveries(conn)
    assert (str(dead.event_id), dead.destination, dead.attempts) == (first, "erp", 2)
    assert "HTTP 503" in (dead.last_error or "")
    assert list(receiver.accepted) == [second]

    receiver.failures[first] = 0
    retry_dead(conn, "admin", "erp", uuid.UUID(first), clock.now())
    assert dispatcher.run_once(conn) == 1
    assert sorted(receiver.accepted) == sorted([first, second])
    assert dead_deliveries(conn) == []


def test_no_event_leaves_for_a_change_that_rolled_back(conn: Conn, receiver: Receiver) -> None:
    lot = _setup(conn, receiver)

    class Abort(Exception):
        pass

    def hold_then_fail() -> None:
        with conn.transaction():
            place_hold(conn, "qa1", lot, "never committed", T0)
            raise Abort

    with pytest.raises(Abort):
        hold_then_fail()

    assert conn.execute("SELECT count(*) FROM outbox_events").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM holds").fetchone() == (0,)


def test_a_destination_takes_only_the_kinds_it_asked_for(conn: Conn, receiver: Receiver) -> None:
    lot = _setup(conn, receiver)
    add_destination(
        conn, "admin", Destination("capa-only", "webhook", receiver.url, kinds=("capa.opened",))
    )
    place_hold(conn, "qa1", lot, "held", T0)

    rows = conn.execute("SELECT destination FROM outbox_deliveries ORDER BY 1").fetchall()
    assert rows == [("erp",)]


def test_events_reach_mqtt_on_the_events_topic(
    conn: Conn, db_url: str, clock: ManualClock, mqtt_options: MqttOptions
) -> None:
    make_erp(conn)
    ep = mqtt_options.endpoint
    add_destination(conn, "admin", Destination("bus", "mqtt", f"mqtt://{ep.host}:{ep.port}"))
    lot = register_lot(conn, "logi1", GTIN, "MQ1").id
    got: list[tuple[str, dict[str, Any]]] = []
    subscribed = threading.Event()
    client = make_client(mqtt_options, f"sub-{uuid.uuid4().hex[:8]}", persistent=False)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, m: got.append((m.topic, json.loads(m.payload)))
    connect(client, mqtt_options, persistent=False)
    client.loop_start()
    try:
        client.subscribe("coldtrail/v1/events/hold/#", qos=1)
        assert subscribed.wait(10)
        place_hold(conn, "qa1", lot, "held", clock.now())
        [event_id] = _event_ids(conn)
        dispatcher = OutboxDispatcher(db_url, clock=clock)
        try:
            assert dispatcher.run_once(conn) == 1
        finally:
            dispatcher.close()
        mine = wait_for(
            lambda: [t for t, doc in got if doc["id"] == event_id], what="the event on MQTT"
        )
    finally:
        client.disconnect()
        client.loop_stop()
    assert mine == ["coldtrail/v1/events/hold/placed"]


_AMQTT = """
import asyncio, sys
from coldtrail.demo import _embedded_broker

async def main() -> None:
    await _embedded_broker(int(sys.argv[1]))
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def broker_without_mqtt5() -> Iterator[str]:
    """The broker the demo embeds (amqtt), which speaks MQTT 3.1.1 only.

    In a process of its own, as in the demo: amqtt leaves the server side of a connection it
    gave up on open, and in this process its sockets would be found unclosed by a later test.
    """
    import socket
    import subprocess
    import sys

    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-c", _AMQTT, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as proc:

        def listening() -> bool:
            assert proc.poll() is None, "amqtt exited"
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        try:
            wait_for(listening, what=f"amqtt on port {port}")
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


def _event(n: int) -> Event:
    return Event(n, uuid.uuid4(), "hold.placed", f"lot/{n}", {"n": n}, T0)


def test_events_reach_a_broker_without_mqtt5_when_the_url_says_3_1_1(
    broker_without_mqtt5: str, clock: ManualClock
) -> None:
    url = f"{broker_without_mqtt5}/fleet2?protocol=3.1.1"
    options = MqttOptions(endpoint=MqttEndpoint.parse(broker_without_mqtt5), protocol="3.1.1")
    got: list[dict[str, Any]] = []
    subscribed = threading.Event()
    client = make_client(options, f"sub-{uuid.uuid4().hex[:8]}", persistent=False)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    connect(client, options, persistent=False)
    client.loop_start()
    sink = MqttSink(Destination("demo", "mqtt", url), clock, timeout_s=10)
    try:
        client.subscribe("fleet2/v1/events/#", qos=1)
        assert subscribed.wait(10)
        events = [_event(1), _event(2)]
        sink.deliver(events)  # returns once both are acknowledged
        wait_for(lambda: len(got) == 2, what="both events on the broker")
    finally:
        sink.close()
        client.disconnect()
        client.loop_stop()
    assert [doc["id"] for doc in got] == [str(e.event_id) for e in events]


def test_a_broker_refusing_the_protocol_is_a_delivery_error_every_time(
    broker_without_mqtt5: str, clock: ManualClock
) -> None:
    """MQTT 5 (the default) to a 3.1.1 broker: it drops the connection. The first try waits
    for a PUBACK in vain; the next finds the client disconnected, which paho reports by
    raising from the very check made while handling the first error. Both must come out as
    a DeliveryError, which the dispatcher retries, never as an exception that ends it."""
    sink = MqttSink(Destination("demo", "mqtt", broker_without_mqtt5), clock, timeout_s=1)
    try:
        for n in range(3):
            with pytest.raises(DeliveryError) as failed:
                sink.deliver([_event(n)])
            assert failed.value.delivered == 0
    finally:
        sink.close()


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("?protocol=4", "protocol must be one of"),
        ("?protocol=5&protocol=3.1.1", "protocol must be one of"),
        ("?qos=2", "unknown parameters ['qos']"),
    ],
)
def test_an_mqtt_destination_with_a_bad_parameter_is_refused(
    conn: Conn, query: str, reason: str
) -> None:
    with pytest.raises(RuleViolation, match=re.escape(reason)):
        add_destination(conn, "admin", Destination("bus", "mqtt", f"mqtt://127.0.0.1{query}"))


def test_a_webhook_that_redirects_is_not_delivered(clock: ManualClock) -> None:
    """An http:// URL that a proxy sends on to https:// with a 301: urllib would follow it as a
    GET without the event and take the 200 for delivery."""
    methods: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            methods.append((self.command, self.path))
            if self.path == "/old":
                self.send_response(301)
                self.send_header("Location", "/new")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/old"
    try:
        sink = WebhookSink(Destination("erp", "webhook", url, SECRET), clock)
        with pytest.raises(DeliveryError, match=r"HTTP 301 .*redirected to /new, not followed"):
            sink.deliver([_event(1)])
    finally:
        server.shutdown()
        server.server_close()
    assert methods == [("POST", "/old")]
