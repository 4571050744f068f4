from __future__ import annotations

import json

import pytest

from coldtrail.errors import PayloadError
from coldtrail.messages import Reading, ReadingStatus, encode_telemetry, parse_telemetry
from tests.conftest import T0


def _payload(*readings: dict[str, object], gateway: str = "gw-1") -> bytes:
    return json.dumps(
        {"gateway": gateway, "sent_at": "2026-11-22T10:00:05Z", "readings": list(readings)}
    ).encode()


def test_contract_example_parses() -> None:
    payload = _payload(
        {
            "sensor": "S-0001",
            "seq": 1041,
            "ts": "2026-11-22T10:00:00.000Z",
            "temperature_c": 4.21,
            "humidity_pct": 55.2,
            "battery_pct": 88,
        }
    )
    batch, good, bad = parse_telemetry(payload)
    assert batch.gateway == "gw-1"
    assert bad == []
    assert good == [
        Reading(
            sensor="S-0001", seq=1041, ts=T0, temperature_c=4.21, humidity_pct=55.2, battery_pct=88
        )
    ]
    assert good[0].status is ReadingStatus.OK


def test_encode_then_parse_round_trips() -> None:
    r = Reading(sensor="S-1", seq=7, ts=T0, status=ReadingStatus.UNAVAILABLE)
    _, good, bad = parse_telemetry(encode_telemetry("gw-1", T0, [r]))
    assert good == [r]
    assert bad == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"gateway": "gw-1", "sent_at": "2026-11-22T10:00:05Z", "readings": []}', "readings"),
        (b'{"gateway": "gw/1", "sent_at": "2026-11-22T10:00:05Z", "readings": [{}]}', "gateway"),
        (b'{"gateway": "gw-1", "sent_at": "2026-11-22T10:00:05", "readings": [{}]}', "sent_at"),
    ],
)
def test_bad_envelope_raises_with_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse_telemetry(payload)


def test_one_bad_reading_is_set_apart_from_good_ones() -> None:
    good_one = {"sensor": "S-1", "seq": 1, "ts": "2026-11-22T10:00:00Z", "temperature_c": 5.0}
    _, good, bad = parse_telemetry(
        _payload(
            good_one,
            {"sensor": "S-1", "seq": 2, "ts": "2026-11-22T10:01:00"},  # no offset: ambiguous
            {"sensor": "S-1", "seq": 3, "ts": "2026-11-22T10:02:00Z", "temperature_c": "NaN"},
            {"sensor": "S-1", "seq": -1, "ts": "2026-11-22T10:03:00Z"},
        )
    )
    assert [r.seq for r in good] == [1]
    assert [reason.split(":")[0] for _, reason in bad] == ["ts", "temperature_c", "seq"]
