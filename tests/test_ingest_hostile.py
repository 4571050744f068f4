"""Hostile input through the real worker and real Mosquitto: each kind of payload a broken or
malicious gateway could send ends in a dead letter (or a kept-aside row) with its reason, and
the worker goes on storing the good readings sent after it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coldtrail import messages
from coldtrail.ingest import worker as worker_module
from coldtrail.ingest.worker import Inbound, IngestWorker
from coldtrail.messages import Reading, encode_telemetry, telemetry_topic
from coldtrail.mqtt import MqttOptions
from tests.conftest import (
    T0,
    RunningIngest,
    count_readings,
    ingest_worker,
    make_site,
    publish,
    wait_for,
)

Conn = psycopg.Connection[tuple[Any, ...]]
HEAD = b'{"gateway":"gw-1","sent_at":"2026-11-22T10:00:05Z","readings":['
ONE = b'{"sensor":"S1","seq":%d,"ts":"2026-11-22T10:00:00Z","temperature_c":4.5}'


def _envelope(*readings: bytes) -> bytes:
    return HEAD + b",".join(readings) + b"]}"


def _reading(**fields: Any) -> bytes:
    base: dict[str, Any] = {"sensor": "S1", "seq": 9, "ts": "2026-11-22T10:00:00Z"}
    return json.dumps({**base, **fields}).encode()


# Each: (name, payload, where it must end up, a fragment of the reason).
HOSTILE: list[tuple[str, bytes, str, str]] = [
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "dead", "nested 100000 deep"),
    (
        "deep nesting inside a reading",
        _envelope(b'{"sensor":"S1","seq":9,"ts":"2026-11-22T10:00:00Z","x":'
                  + b"[" * 5000 + b"]" * 5000 + b"}"),
        "dead",
        "nested 5003 deep",
    ),
    ("a huge string", _envelope(_reading(note="x" * 200_000)), "dead", "a string of 200000"),
    (
        "a huge array of readings",
        _envelope(*[ONE % n for n in range(1, 10_002)]),
        "dead",
        "readings: List should have at most 10000 items",
    ),
    ("over the size limit", b'{"gateway":"' + b"g" * 5_000_000 + b'"}', "dead",
     "bytes: the limit is 4194304 (its first 65536 bytes kept here)"),
    ("invalid UTF-8", _envelope(b'{"sensor":"S\xff1","seq":9,"ts":"2026-11-22T10:00:00Z"}'),
     "dead", "not JSON"),
    ("a lone surrogate", _envelope(b'{"sensor":"S1\\ud800","seq":9,"ts":"2026-11-22T10:00:00Z"}'),
     "dead", "sensor:"),
    ("NaN", _envelope(b'{"sensor":"S1","seq":9,"ts":"2026-11-22T10:00:00Z","temperature_c":NaN}'),
     "dead", "temperature_c: Input should be a finite number"),
    ("Infinity", _envelope(_reading(humidity_pct=float("inf"))), "dead",
     "humidity_pct: Input should be a finite number"),
    ("10^400", _envelope(b'{"sensor":"S1","seq":9,"ts":"2026-11-22T10:00:00Z",'
                         b'"temperature_c":1e400}'),
     "dead", "temperature_c: Input should be a finite number"),
    ("an integer of 400 digits", _envelope(b'{"sensor":"S1","seq":' + b"9" * 400
                                           + b',"ts":"2026-11-22T10:00:00Z"}'),
     "dead", "seq:"),
    ("duplicate keys", _envelope(b'{"sensor":"S1","seq":9,"seq":10,'
                                 b'"ts":"2026-11-22T10:00:00Z"}'),
     "dead", "duplicate key 'seq'"),
    ("a duplicate gateway key", b'{"gateway":"gw-1","gateway":"gw-2","sent_at":'
     b'"2026-11-22T10:00:05Z","readings":[' + ONE % 9 + b"]}", "dead", "duplicate key 'gateway'"),
    ("far in the future", _envelope(_reading(ts="9999-12-31T23:59:59-14:00")), "dead",
     "measured in the future"),
    # The year 1 east of UTC is 1 BC in UTC: stored, no client could read it back (a batch
    # span holding one made `audit verify` fail for good).
    ("before the year 1 in UTC", _envelope(_reading(ts="0001-01-01T00:00:00+14:00")), "dead",
     "measured before the year 1: 0001-01-01T00:00:00+14:00 is in 1 BC in UTC"),
    ("far in the past", _envelope(_reading(ts="0001-01-01T00:00:00Z")), "kept",
     "'S1' was nowhere at 0001-01-01"),
    ("another tenant's sensor", _envelope(_reading(sensor="OTHER-SITE-1")), "kept",
     "'OTHER-SITE-1' was at CR2 of site 's2'"),
    ("not an object", b"[1, 2, 3]", "dead", "payload is not a JSON object"),
    ("empty", b"", "dead", "not JSON"),
    ("NUL bytes", b"\x00" * 64, "dead", "not JSON"),
    ("a gateway not matching its topic", _envelope(ONE % 9).replace(b"gw-1", b"gw-9"), "dead",
     "gateway 'gw-9' does not match topic 'gw-1'"),
]  # fmt: skip


def _dead(conn: Conn, after: int) -> list[tuple[int, str, int]]:
    return [
        (r[0], r[1], r[2])
        for r in conn.execute(
            "SELECT id, reason, length(payload) FROM dead_letters WHERE id > %s ORDER BY id",
            (after,),
        )
    ]


def _kept(conn: Conn, after: int) -> list[tuple[int, str]]:
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT id, reason FROM quarantined_readings WHERE id > %s ORDER BY id", (after,)
        )
    ]


def _good(seq: int) -> bytes:
    return encode_telemetry(
        "gw-1", T0, [Reading(sensor="S1", seq=seq, ts=T0 + timedelta(seconds=seq), temperature_c=4)]
    )


def _second_site(conn: Conn) -> None:
    from coldtrail.erp.masterdata import (
        Location,
        assign_sensor,
        upsert_location,
        upsert_sensor,
        upsert_site,
    )

    upsert_site(conn, "s2", "Another tenant")
    upsert_location(conn, Location("CR2", "s2", "cold_room", "Their room", 2.0, 8.0))
    upsert_sensor(conn, "OTHER-SITE-1", "xy-md02", "SN-O1")
    assign_sensor(conn, "OTHER-SITE-1", "CR2", T0)


def test_each_hostile_payload_is_set_aside_and_good_readings_after_it_are_stored(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    make_site(conn, {"S1": "CR"})
    _second_site(conn)
    topic = telemetry_topic(topic_root, "s1", "gw-1")
    worker = ingest_worker(db_url, mqtt_options, topic_root, max_payload_bytes=4 * 1024 * 1024)
    dead_seen = kept_seen = 0
    with RunningIngest(worker):
        for n, (name, payload, where, reason) in enumerate(HOSTILE, start=1):
            publish(mqtt_options, topic, payload, _good(n))
            wait_for(lambda n=n: count_readings(conn) == n, what=f"the good reading after {name}")
            dead, kept = _dead(conn, dead_seen), _kept(conn, kept_seen)
            if where == "dead":
                assert not kept, name
                assert [reason in d[1] for d in dead] == [True], f"{name}: {dead}"
                # The payload as it came, or the reading refused; of one over the limit, the
                # start.
                limit = 4 * 1024 * 1024
                assert (
                    dead[0][2] == 64 * 1024 if len(payload) > limit else dead[0][2] <= len(payload)
                )
            else:
                assert not dead, name
                assert [reason in k[1] for k in kept] == [True], f"{name}: {kept}"
            dead_seen = max([dead_seen, *(d[0] for d in dead)])
            kept_seen = max([kept_seen, *(k[0] for k in kept)])
    assert worker.stats.readings_stored == len(HOSTILE)
    assert worker.stats.callback_errors == 0


def test_an_unexpected_failure_reading_a_message_becomes_its_dead_letter(
    conn: Conn,
    db_url: str,
    mqtt_options: MqttOptions,
    topic_root: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever goes wrong on paho's thread for one message (here a fault made to happen in
    the parser) is that message's dead letter, acknowledged like any other; paho's thread and
    the stream go on."""
    make_site(conn, {"S1": "CR"})
    real: Callable[[bytes], Any] = messages.parse_telemetry_docs

    def faulty(payload: bytes) -> Any:
        if b"boom" in payload:
            raise RecursionError("maximum recursion depth exceeded")
        return real(payload)

    monkeypatch.setattr(worker_module, "parse_telemetry_docs", faulty)
    topic = telemetry_topic(topic_root, "s1", "gw-1")
    worker = ingest_worker(db_url, mqtt_options, topic_root)
    with RunningIngest(worker):
        publish(mqtt_options, topic, b'{"boom": 1}', _good(1))
        wait_for(lambda: count_readings(conn) == 1, what="the good reading after the fault")
    assert [d[1:] for d in _dead(conn, 0)] == [
        ("ingest could not read it: RecursionError: maximum recursion depth exceeded", 11)
    ]
    assert worker.stats.callback_errors == 1


# Hostile JSON, generated: structures nested deep, big arrays and strings, numbers out of any
# range, odd strings, keys given twice; each embedded in an otherwise good envelope.
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["\ud800", "\x00", "2026-11-22T10:00:00Z", "9999-12-31T23:59:59Z"]),
)
_values = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=30,
)


def _text(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


_hostile_fragments = st.one_of(
    _values.map(_text),
    st.integers(min_value=30, max_value=3000).map(lambda d: b"[" * d + b"]" * d),
    st.integers(min_value=5000, max_value=50_000).map(lambda n: b'"' + b"y" * n + b'"'),
    st.integers(min_value=21, max_value=600).map(lambda n: b"7" * n),
    st.sampled_from([b"NaN", b"-Infinity", b"1e400", b"-1e400", b'"\\ud800"', b'"\\u0000"']),
    st.binary(max_size=40),
)


@st.composite
def _hostile_payloads(draw: st.DrawFn) -> bytes:
    fragment: bytes = draw(_hostile_fragments)
    where = draw(st.sampled_from(["seq", "ts", "temperature_c", "extra", "readings", "gateway"]))
    if where == "readings":
        return HEAD + fragment + b"]}"
    if where == "gateway":
        return b'{"gateway":' + fragment + b',"sent_at":"2026-11-22T10:00:05Z","readings":[]}'
    base = {"sensor": b'"S1"', "seq": b"9", "ts": b'"2026-11-22T10:00:00Z"'}
    base[where] = fragment
    dup = b',"seq":10' if draw(st.booleans()) else b""
    body = b",".join(b'"%s":%s' % (k.encode(), v) for k, v in base.items())
    return _envelope(b"{" + body + dup + b"}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_hostile_payloads())
def test_the_parser_never_raises_on_generated_hostile_json(payload: bytes) -> None:
    parsed = IngestWorker.parse(Inbound("r/v1/s1/gw-1/telemetry", payload, 1, 1))
    env = parsed.envelope
    assert env.readings or env.dead, "a message must be stored or set aside"
    for _, _, reason in env.dead:
        assert reason


def test_generated_hostile_json_through_the_worker_never_stops_it(
    conn: Conn, db_url: str, mqtt_options: MqttOptions, topic_root: str
) -> None:
    make_site(conn, {"S1": "CR"})
    topic = telemetry_topic(topic_root, "s1", "gw-1")
    worker = ingest_worker(db_url, mqtt_options, topic_root)
    sent = [0]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_hostile_payloads())
    def check(payload: bytes) -> None:
        sent[0] += 1
        good = _good(1000 + sent[0])
        publish(mqtt_options, topic, payload, good)
        wait_for(lambda: worker.stats.messages >= 2 * sent[0], what="both messages taken")

    with RunningIngest(worker):
        check()
        wait_for(lambda: count_readings(conn) >= sent[0], what="every good reading")
    assert worker.stats.callback_errors == 0
    # Every good reading stored, whatever came before it.
    seqs = {r[0] for r in conn.execute("SELECT seq FROM readings WHERE seq > 1000")}
    assert set(range(1001, 1001 + sent[0])) <= seqs
