"""The push stream (Server-Sent Events) on a real uvicorn server, the real Mosquitto and the
real database: readings, status and ERP events reach the client; filters, resuming with
Last-Event-ID, lagging, token expiry and the broker's loss are told, never silent."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx2
import psycopg
import pytest

from coldtrail.api.app import create_app
from coldtrail.api.stream import StreamFilter, StreamHub, frames
from coldtrail.clock import ManualClock
from coldtrail.erp.holds import place_hold
from coldtrail.erp.outbox import Destination, OutboxDispatcher, add_destination
from coldtrail.erp.products import register_lot
from coldtrail.messages import (
    Reading,
    encode_status,
    encode_telemetry,
    status_topic,
    telemetry_topic,
)
from coldtrail.mqtt import MqttOptions
from tests.conftest import (
    GTIN,
    T0,
    PrivateBroker,
    RunningApi,
    api_client,
    api_config,
    async_wait_for,
    make_erp,
    publish,
    token,
    wait_for,
)

Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class Sse:
    event: str
    data: dict[str, Any]
    id: str | None


class Stream:
    """A plain SSE reader over httpx2 (not the server's own code), one event at a time."""

    def __init__(self, resp: httpx2.Response) -> None:
        self.resp = resp
        self._lines = resp.iter_lines()
        self.comments: list[str] = []

    def next(self) -> Sse:
        fields: dict[str, str] = {}
        for line in self._lines:
            if line == "":
                if fields:
                    return Sse(fields.get("event", "message"), json.loads(fields["data"]),
                               fields.get("id"))  # fmt: skip
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        raise EOFError("the stream ended")

    def until(self, event: str) -> Sse:
        while (got := self.next()).event != event:
            pass
        return got

    def rest(self) -> list[Sse]:
        out: list[Sse] = []
        try:
            while True:
                out.append(self.next())
        except EOFError:
            return out


@dataclass
class Api:
    running: RunningApi
    http: httpx2.Client
    headers: dict[str, str]
    root: str
    options: MqttOptions

    def stream(self, headers: dict[str, str] | None = None, **params: Any) -> Any:
        return self.http.stream(
            "GET", "/api/v1/stream", params=params, headers=headers or self.headers, timeout=10
        )

    @contextmanager
    def open(self, **params: Any) -> Iterator[Stream]:
        with self.stream(**params) as resp:
            assert resp.status_code == 200, resp.read()
            assert resp.headers["content-type"].startswith("text/event-stream")
            yield Stream(resp)

    def telemetry(self, site: str, gateway: str, *readings: Reading) -> None:
        publish(
            self.options,
            telemetry_topic(self.root, site, gateway),
            encode_telemetry(gateway, T0, list(readings)),
        )


def reading(sensor: str, seq: int, temp: float = 5.0) -> Reading:
    return Reading(sensor=sensor, seq=seq, ts=T0 + timedelta(seconds=seq), temperature_c=temp)


def _login(http: httpx2.Client) -> dict[str, str]:
    return token(http, "admin", "admin-password-123")


@pytest.fixture
def api(
    db_url: str, clock: ManualClock, mqtt_options: MqttOptions, topic_root: str
) -> Iterator[Api]:
    app = create_app(api_config(db_url, mqtt_options, topic_root), clock)
    with RunningApi(app) as running, httpx2.Client(base_url=running.url) as http:
        wait_for(lambda: http.get("/api/v1/health").json()["stream"] == "live", what="stream live")
        yield Api(running, http, _login(http), topic_root, mqtt_options)


def _clients(api: Api, n: int) -> None:
    wait_for(lambda: api.http.get("/api/v1/health").json()["stream_clients"] == n,
             what=f"{n} stream clients")  # fmt: skip


def test_readings_reach_a_stream_client_as_sent(api: Api) -> None:
    with api.open() as s:
        ready = s.next()
        assert ready.event == "ready"
        assert ready.id is None
        assert ready.data["mqtt"] == "connected"
        assert ready.data["replayed"] == 0
        api.telemetry("wh1", "gw-1", reading("S-1", 1, 4.25), reading("S-2", 7, 9.5))
        got = s.next()
    assert got.event == "readings"
    assert got.id == f"{ready.data['stream']}-{got.id.split('-')[1]}"  # type: ignore[union-attr]
    assert got.data["site"] == "wh1"
    assert got.data["gateway"] == "gw-1"
    assert [(r["sensor"], r["seq"], r["temperature_c"]) for r in got.data["readings"]] == [
        ("S-1", 1, 4.25),
        ("S-2", 7, 9.5),
    ]
    assert got.data["readings"][0]["ts"] == "2026-11-22T10:00:01Z"


def test_each_client_gets_only_the_types_sites_and_gateways_it_asked_for(api: Api) -> None:
    with api.stream(types="status,hold", site="wh2") as a, api.stream(gateway="trk-1") as b:
        sa, sb = Stream(a), Stream(b)
        assert sa.next().event == "ready"
        assert sb.next().event == "ready"
        api.telemetry("wh2", "gw-2", reading("S-3", 1))  # site wh2, but not a wanted type
        api.telemetry("road", "trk-1", reading("T-1", 1))  # b's vehicle
        publish(api.options, status_topic(api.root, "wh1", "gw-1"), encode_status("online", T0))
        publish(api.options, status_topic(api.root, "wh2", "gw-2"), encode_status("offline", T0))
        publish(api.options, f"{api.root}/v1/events/hold/placed", b'{"type":"hold.placed"}')
        publish(api.options, f"{api.root}/v1/events/alarm/raised", b'{"type":"alarm.raised"}')
        publish(api.options, status_topic(api.root, "road", "trk-1"), encode_status("online", T0))
        got_a = [sa.next() for _ in range(2)]
        got_b = [sb.next() for _ in range(4)]
    assert [(e.event, e.data.get("gateway") or e.data["type"]) for e in got_a] == [
        ("status", "gw-2"),
        ("hold", "hold.placed"),
    ]
    # Events carry no site or gateway: a gateway filter narrows only readings and status.
    assert [(e.event, e.data.get("gateway") or e.data["type"]) for e in got_b] == [
        ("readings", "trk-1"),
        ("hold", "hold.placed"),
        ("alarm", "alarm.raised"),
        ("status", "trk-1"),
    ]


def test_a_hold_placed_in_the_erp_reaches_the_stream_through_the_outbox(
    api: Api, conn: Conn, db_url: str, clock: ManualClock
) -> None:
    make_erp(conn)
    ep = api.options.endpoint
    add_destination(
        conn, "admin", Destination("bus", "mqtt", f"mqtt://{ep.host}:{ep.port}/{api.root}")
    )
    lot = register_lot(conn, "logi1", GTIN, "STREAM1").id
    with api.open(types="hold") as s:
        assert s.next().event == "ready"
        place_hold(conn, "qa1", lot, "probe above 8 °C", clock.now())
        dispatcher = OutboxDispatcher(db_url, clock=clock)
        try:
            assert dispatcher.run_once(conn) == 1
        finally:
            dispatcher.close()
        got = s.next()
    assert got.event == "hold"
    assert got.data["type"] == "coldtrail.hold.placed"
    assert got.data["subject"] == f"lot/{lot}"
    assert got.data["data"]["reason"] == "probe above 8 °C"


def test_reconnecting_with_last_event_id_replays_exactly_what_was_missed(api: Api) -> None:
    with api.open(types="readings") as s:
        s.next()
        api.telemetry("wh1", "gw-1", reading("S-1", 1))
        last = s.next().id
    _clients(api, 0)
    for seq in (2, 3, 4):
        api.telemetry("wh1", "gw-1", reading("S-1", seq))
    with api.stream(headers={**api.headers, "Last-Event-ID": str(last)}, types="readings") as r:
        s = Stream(r)
        ready = s.next()
        # The hub got the three while no one listened; wait until they are all in.
        replay = [s.next() for _ in range(ready.data["replayed"])]
        assert ready.data["replayed"] == 3
        api.telemetry("wh1", "gw-1", reading("S-1", 5))
        live = s.next()
    assert [e.data["readings"][0]["seq"] for e in [*replay, live]] == [2, 3, 4, 5]


def test_an_id_from_before_a_restart_or_never_sent_gets_a_reset(api: Api) -> None:
    for last, why in (("0badc0de-5", "restarted"), ("", None)):
        headers = {**api.headers, "Last-Event-ID": last}
        with api.stream(headers=headers, max_events=1) as r:
            events = Stream(r).rest()
        assert events[0].event == "ready"
        if why is None:
            assert [e.event for e in events] == ["ready"]
        else:
            assert events[1].event == "reset"
            assert why in events[1].data["reason"]
    with api.open() as s:
        stream = s.next().data["stream"]
    with api.stream(headers={**api.headers, "Last-Event-ID": f"{stream}-999999"}) as r:
        s = Stream(r)
        s.next()
        assert "never sent" in s.next().data["reason"]


def test_the_stream_ends_when_the_token_expires(api: Api, clock: ManualClock) -> None:
    with api.open() as s:
        ready = s.next()
        assert ready.data["token_expires_at"] == "2026-11-22T10:15:00.000Z"
        clock.advance(901)
        api.telemetry("wh1", "gw-1", reading("S-1", 1))  # wakes the stream; no reading goes out
        rest = s.rest()
    assert [e.event for e in rest] == ["expired"]
    assert api.http.get("/api/v1/stream", headers=api.headers).status_code == 401


@pytest.mark.parametrize("how", ["disable", "password"])
def test_the_stream_ends_when_its_user_is_disabled_or_changes_password(
    db_url: str, clock: ManualClock, mqtt_options: MqttOptions, topic_root: str, how: str
) -> None:
    cfg = api_config(db_url, mqtt_options, topic_root)
    app = create_app(dataclasses.replace(cfg, stream_keepalive_s=0.05), clock)
    with RunningApi(app) as running, httpx2.Client(base_url=running.url) as http:
        admin = _login(http)
        user = {"username": "watcher", "full_name": "Night Watch", "role": "logistics",
                "password": "night-watch-冷库-7"}  # fmt: skip
        assert http.post("/api/v1/users", json=user, headers=admin).status_code == 201
        watcher = token(http, "watcher", user["password"])
        with http.stream("GET", "/api/v1/stream", headers=watcher, timeout=10) as resp:
            s = Stream(resp)
            assert s.next().event == "ready"
            if how == "disable":
                changed = http.post("/api/v1/users/watcher/disable", headers=admin)
            else:
                body = {"current_password": user["password"], "new_password": "七月冷库-lantern"}
                changed = http.put("/api/v1/auth/password", json=body, headers=watcher)
            assert changed.status_code == 200
            rest = s.rest()
    assert [e.event for e in rest] == ["revoked"]
    assert "revoked" in rest[0].data["reason"]


def test_keepalive_comments_flow_while_nothing_happens(
    db_url: str, clock: ManualClock, mqtt_options: MqttOptions, topic_root: str
) -> None:
    cfg = api_config(db_url, mqtt_options, topic_root)
    app = create_app(dataclasses.replace(cfg, stream_keepalive_s=0.05), clock)
    with RunningApi(app) as running, httpx2.Client(base_url=running.url) as http:
        headers = _login(http)
        with http.stream("GET", "/api/v1/stream", headers=headers, timeout=10) as resp:
            lines = resp.iter_lines()
            seen = [next(lines) for _ in range(6)]
    assert seen[0] == "event: ready"
    assert seen[3:].count(": keepalive") >= 1


def test_a_malformed_message_is_skipped_and_the_next_one_delivered(api: Api) -> None:
    topic = telemetry_topic(api.root, "wh1", "gw-1")
    with api.open(types="readings,status") as s:
        s.next()
        publish(api.options, topic, b"not json", b'{"gateway":"gw-1"}')
        publish(api.options, status_topic(api.root, "wh1", "gw-1"), b'{"state":"sleepy"}')
        api.telemetry("wh1", "gw-1", reading("S-1", 3))
        got = s.next()
    assert got.event == "readings"
    assert got.data["readings"][0]["seq"] == 3


async def test_a_slow_client_is_told_it_lagged_and_keeps_what_was_queued(
    mqtt_options: MqttOptions, topic_root: str, clock: ManualClock
) -> None:
    hub = StreamHub(mqtt_options, topic_root, clock, max_pending=3)
    hub.start()
    try:
        await async_wait_for(hub.subscribed.is_set, what="the hub subscribed")
        sub, resume = hub.subscribe(StreamFilter(types=frozenset({"readings"})), None)
        # Five messages, and nobody reads: the client's queue holds three.
        await asyncio.to_thread(
            publish,
            mqtt_options,
            telemetry_topic(topic_root, "wh1", "gw-1"),
            *(encode_telemetry("gw-1", T0, [reading("S-1", seq)]) for seq in range(1, 6)),
        )
        await async_wait_for(lambda: sub.closed, what="the client marked lagging")
        assert hub.clients == 0
        out = frames(hub, sub, resume, clock=clock, expires_at=T0 + timedelta(hours=1),
                     keepalive_s=10, max_events=None)  # fmt: skip
        text = b"".join([chunk async for chunk in out]).decode()
    finally:
        hub.stop()
    # The queue held three frames. The hub's own "connected" feed frame may be among them: it
    # reaches the loop after the subscription is granted, so on a busy machine after the
    # client subscribed (seen under two test workers).
    assert text.count("event: readings") + text.count("event: feed") == 3
    assert text.count("event: readings") >= 2
    assert text.rstrip().endswith(
        '"reason":"too far behind: reconnect with Last-Event-ID to catch up"}'
    )
    assert "event: lagged" in text


def test_losing_the_broker_is_announced_and_the_stream_resumes(
    db_url: str, clock: ManualClock, private_broker: PrivateBroker, topic_root: str
) -> None:
    app = create_app(api_config(db_url, private_broker.options, topic_root), clock)
    with RunningApi(app) as running, httpx2.Client(base_url=running.url) as http:
        wait_for(lambda: http.get("/api/v1/health").json()["stream"] == "live", what="live")
        with http.stream("GET", "/api/v1/stream", headers=_login(http), timeout=20) as resp:
            s = Stream(resp)
            assert s.next().data["mqtt"] == "connected"
            private_broker.stop()
            lost = s.next()
            private_broker.start()
            back = s.next()
            wait_for(lambda: http.get("/api/v1/health").json()["stream"] == "live", what="back")
            publish(
                private_broker.options,
                telemetry_topic(topic_root, "wh1", "gw-1"),
                encode_telemetry("gw-1", T0, [reading("S-1", 1)]),
            )
            after = s.next()
    assert (lost.event, lost.data["mqtt"]) == ("feed", "disconnected")
    assert (back.event, back.data["mqtt"]) == ("feed", "connected")
    assert after.event == "readings"


def test_without_a_broker_the_stream_is_503_and_bad_filters_422(
    db_url: str, clock: ManualClock
) -> None:
    with api_client(db_url, clock) as client:
        tok = client.post(
            "/api/v1/auth/token", data={"username": "admin", "password": "admin-password-123"}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {tok}"}
        resp = client.get("/api/v1/stream", headers=headers)
        assert resp.status_code == 503
        assert "COLDTRAIL_MQTT_URL" in resp.json()["detail"]
        assert client.get("/api/v1/health").json()["stream"] == "off"
        for params in ({"types": "readings,gossip"}, {"site": "a/b"}, {"max_events": 0}):
            assert client.get("/api/v1/stream", headers=headers, params=params).status_code == 422


async def test_more_clients_than_worker_threads_do_not_stall_the_api(api: Api) -> None:
    # 80 at once: more than anyio's 40 worker threads and ten times the 8 database
    # connections. Requests waited for a connection inside a thread once, and the API stalled.
    n = 80

    async def ready(http: httpx2.AsyncClient) -> str:
        async with http.stream("GET", "/api/v1/stream", headers=api.headers) as resp:
            async for line in resp.aiter_lines():
                return line
        return ""

    limits = httpx2.Limits(max_connections=n + 5)
    async with httpx2.AsyncClient(base_url=api.running.url, limits=limits, timeout=20) as http:
        firsts = await asyncio.gather(*(ready(http) for _ in range(n)))
        live = await http.get("/api/v1/live", headers=api.headers)
    assert firsts == ["event: ready"] * n
    assert live.status_code == 200


def test_stream_types_may_name_the_control_events_every_stream_gets() -> None:
    """The README lists `feed` among the events; `types=readings,feed` was a 422."""
    from coldtrail.api.stream import parse_types

    assert parse_types("readings,feed") == frozenset({"readings"})
    assert parse_types("feed,ready") == frozenset()  # control events only: no data events
    assert parse_types(None) is None
    with pytest.raises(ValueError, match="unknown stream types \\['nope'\\]"):
        parse_types("readings,nope")
