"""Property tests (hypothesis): whatever arrives, ingest neither crashes nor loses it. Every
reading offered is stored, skipped as a duplicate, quarantined or dead-lettered with a reason;
the bulk validation accepts exactly what the Reading model accepts."""

from __future__ import annotations

import json
import math
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from coldtrail.ingest.worker import Inbound, IngestWorker
from coldtrail.messages import Reading, ReadingDoc, parse_telemetry_docs
from coldtrail.mqtt import MqttOptions
from tests.conftest import make_site

TOPIC = "cttest/v1/s1/gw-1/telemetry"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.sampled_from(
    ["2026-11-22T10:00:00Z", "2026-11-22T10:00:00+08:00", "2026-11-22T10:00:00",  # no offset
     "2026-02-30T10:00:00Z", "yesterday", "2126-01-01T00:00:00Z", "2026-11-22T10:00:00.123Z"]
)  # fmt: skip
readings = st.fixed_dictionaries(
    {
        "sensor": st.sampled_from(["S1", "S2", "NOPE", "", "bad id", "S" * 70]),
        "seq": st.one_of(st.integers(min_value=-2, max_value=2**64), st.text(max_size=3)),
        "ts": timestamps,
    },
    optional={
        "temperature_c": st.one_of(st.none(), st.floats(-300, 300), st.text(max_size=3)),
        "humidity_pct": st.one_of(st.none(), st.floats(-10, 110)),
        "battery_pct": st.one_of(st.none(), st.integers(-5, 105)),
        "latitude": st.one_of(st.none(), st.floats(-100, 100)),
        "longitude": st.one_of(st.none(), st.floats(-200, 200)),
        "speed_kmh": st.one_of(st.none(), st.floats(-5, 500)),
        "door_open": st.one_of(st.none(), st.booleans(), st.sampled_from([0, 1, 2, "true", "x"])),
        "status": st.sampled_from(["ok", "unavailable", "not_available", "broken"]),
        "clock": st.sampled_from(["ok", "unsynced", "implausible", "wrong"]),
        "extra": json_values,
    },
)
envelopes = st.fixed_dictionaries(
    {
        "gateway": st.sampled_from(["gw-1", "gw-2", "gw 1"]),
        "sent_at": timestamps,
        "readings": st.lists(st.one_of(readings, json_values), max_size=6),
    },
    optional={"junk": json_values},
)
payloads = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    envelopes.map(lambda v: json.dumps(v).encode()),
    envelopes.map(lambda v: json.dumps(v).encode()[:-3]),  # cut short on the wire
)


def _offered(payload: bytes) -> int | None:
    """How many readings a payload carries, if its envelope is sound enough to say."""
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("readings"), list):
        return None
    return len(doc["readings"])


@settings(max_examples=400, deadline=None)
@given(payloads)
def test_parser_never_raises_and_accounts_for_every_reading(payload: bytes) -> None:
    parsed = IngestWorker.parse(Inbound(TOPIC, payload, 1, 1)).envelope
    if parsed.readings or (parsed.dead and parsed.dead[0][1] != payload):
        # The envelope was accepted: each reading is either valid or dead-lettered alone.
        assert len(parsed.readings) + len(parsed.dead) == _offered(payload)
        assert len(parsed.lines) == len(parsed.readings)
    else:
        # Refused whole: one dead letter holding the payload as it came, with a reason.
        assert len(parsed.dead) <= 1
        if parsed.dead:
            assert parsed.dead[0][1] == payload
            assert parsed.dead[0][2]


@settings(max_examples=400, deadline=None)
@given(readings)
def test_bulk_validation_accepts_exactly_what_the_reading_model_accepts(
    reading: dict[str, Any],
) -> None:
    try:
        model: Reading | None = Reading.model_validate(reading)
    except ValidationError:
        model = None
    message = json.dumps(
        {"gateway": "gw-1", "sent_at": "2026-11-22T10:00:00Z", "readings": [reading]}
    ).encode()
    _, docs, bad = parse_telemetry_docs(message)
    assert (model is not None) == (len(docs) == 1)
    assert (model is None) == (len(bad) == 1)
    if model is not None:
        doc: ReadingDoc = docs[0]
        assert (doc["sensor"], doc["seq"], doc["ts"]) == (model.sensor, model.seq, model.ts)
        for key in (
            "temperature_c",
            "humidity_pct",
            "battery_pct",
            "latitude",
            "longitude",
            "speed_kmh",
        ):
            got, want = doc.get(key), getattr(model, key)
            assert got == want or (got is None and want is None) or math.isclose(got, want)  # type: ignore[arg-type]
        assert doc.get("door_open") == model.door_open


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_every_payload_is_stored_skipped_quarantined_or_dead_lettered_in_the_database(
    conn: psycopg.Connection[tuple[Any, ...]], db_url: str, mqtt_options: MqttOptions
) -> None:
    make_site(conn, {"S1": "CR", "S2": "CR"})
    worker = IngestWorker(
        database_url=db_url, options=mqtt_options, topic_root="cttest", client_id="prop"
    )

    def table(name: str) -> int:
        row = conn.execute(f"SELECT count(*) FROM {name}").fetchone()  # noqa: S608 - fixed names
        conn.commit()
        return int(row[0]) if row else 0

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(payloads, min_size=1, max_size=5))
    def check(batch: list[bytes]) -> None:
        items = [IngestWorker.parse(Inbound(TOPIC, p, i, 1)) for i, p in enumerate(batch)]
        offered = sum(len(i.envelope.readings) for i in items)
        dead = sum(len(i.envelope.dead) for i in items)
        before = (table("readings"), table("quarantined_readings"), table("dead_letters"))
        stats = (worker.stats.readings_stored, worker.stats.duplicates)
        worker._commit(items)
        after = (table("readings"), table("quarantined_readings"), table("dead_letters"))
        stored = after[0] - before[0]
        quarantined = after[1] - before[1]
        dead_now = after[2] - before[2]
        skipped = worker.stats.duplicates - stats[1]
        future = dead_now - dead
        assert stored == worker.stats.readings_stored - stats[0]
        assert stored + skipped + quarantined + future == offered
        assert future >= 0

    try:
        check()
    finally:
        worker.close()
