"""The MQTT message schema (v1), shared by edge, ingest and rules.

See CONTRACTS.md: telemetry batches, gateway status, events. ``sensor`` + ``seq`` identify
a reading; ``ts`` is the time of measurement.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, NotRequired

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from coldtrail.errors import PayloadError

SENSOR_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
SEGMENT_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
MAX_READINGS_PER_MESSAGE = 10_000
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""Default bound of a telemetry message's size (``COLDTRAIL_INGEST_MAX_PAYLOAD_BYTES``); the
shipped broker refuses larger ones too (``message_size_limit``). 10 000 readings of every
field fit in about 2.5 MB."""
MAX_DEPTH = 16
"""How deep a message may nest. The contract's envelope is 3 deep (object, readings array,
reading); the rest is room for a gateway's own fields."""
MAX_STRING_BYTES = 4096
"""The longest string a message may hold. The contract's longest is a timestamp."""
MAX_INT_DIGITS = 20
"""``seq`` fits in 19 digits. Python refuses to convert integers of more than 4 300 digits with
a ``ValueError`` of its own, and converting long ones costs quadratic time: longer ones are read
as floats, which the fields then refuse."""


class ReadingStatus(StrEnum):
    OK = "ok"
    """The device answered; the values are what it measured."""
    UNAVAILABLE = "unavailable"
    """The device did not answer (timeout, bus error); no values, but the gap is on record."""
    NOT_AVAILABLE = "not_available"
    """The device answered with its own not-available code (e.g. probe unplugged)."""


class ClockState(StrEnum):
    OK = "ok"
    UNSYNCED = "unsynced"
    """The gateway's clock is not synchronised (no NTP): its times may drift."""
    IMPLAUSIBLE = "implausible"
    """The gateway's clock reads a time that can't be right (e.g. 1970 after a reboot)."""


PLAUSIBLE = {
    "temperature_c": (-100.0, 200.0),
    "humidity_pct": (0.0, 100.0),
    "battery_pct": (0.0, 100.0),
    "latitude": (-90.0, 90.0),
    "longitude": (-180.0, 180.0),
    "speed_kmh": (0.0, 400.0),
}
"""What a reading may carry. A device value outside is a device error code, not a measurement.
Probes send the first three; a vehicle's telematics unit sends its position and speed."""


class Reading(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    sensor: str = Field(pattern=SENSOR_ID_PATTERN)
    seq: int = Field(ge=0, le=2**63 - 1)
    ts: AwareDatetime
    status: ReadingStatus = ReadingStatus.OK
    clock: ClockState = ClockState.OK
    temperature_c: float | None = Field(
        default=None, ge=PLAUSIBLE["temperature_c"][0], le=PLAUSIBLE["temperature_c"][1]
    )
    humidity_pct: float | None = Field(
        default=None, ge=PLAUSIBLE["humidity_pct"][0], le=PLAUSIBLE["humidity_pct"][1]
    )
    battery_pct: float | None = Field(
        default=None, ge=PLAUSIBLE["battery_pct"][0], le=PLAUSIBLE["battery_pct"][1]
    )
    latitude: float | None = Field(
        default=None, ge=PLAUSIBLE["latitude"][0], le=PLAUSIBLE["latitude"][1]
    )
    longitude: float | None = Field(
        default=None, ge=PLAUSIBLE["longitude"][0], le=PLAUSIBLE["longitude"][1]
    )
    speed_kmh: float | None = Field(
        default=None, ge=PLAUSIBLE["speed_kmh"][0], le=PLAUSIBLE["speed_kmh"][1]
    )
    door_open: bool | None = None
    """A door contact's state: true while the door is open."""


class TelemetryBatch(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    gateway: str = Field(pattern=SEGMENT_PATTERN)
    sent_at: AwareDatetime
    readings: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_READINGS_PER_MESSAGE)
    """Kept raw here so one bad reading is dead-lettered alone: see :func:`parse_telemetry`."""


_reading = TypeAdapter(Reading)


class ReadingDoc(TypedDict):
    """A reading as ingest handles it in bulk: the constraints of :class:`Reading`, validated
    by pydantic-core without building a model per reading (a test holds the two equal)."""

    sensor: Annotated[str, Field(pattern=SENSOR_ID_PATTERN)]
    seq: Annotated[int, Field(ge=0, le=2**63 - 1)]
    ts: AwareDatetime
    status: NotRequired[Literal["ok", "unavailable", "not_available"]]
    clock: NotRequired[Literal["ok", "unsynced", "implausible"]]
    temperature_c: NotRequired[
        Annotated[
            float | None,
            Field(
                ge=PLAUSIBLE["temperature_c"][0],
                le=PLAUSIBLE["temperature_c"][1],
                allow_inf_nan=False,
            ),
        ]
    ]
    humidity_pct: NotRequired[
        Annotated[
            float | None,
            Field(
                ge=PLAUSIBLE["humidity_pct"][0],
                le=PLAUSIBLE["humidity_pct"][1],
                allow_inf_nan=False,
            ),
        ]
    ]
    battery_pct: NotRequired[
        Annotated[
            float | None,
            Field(
                ge=PLAUSIBLE["battery_pct"][0], le=PLAUSIBLE["battery_pct"][1], allow_inf_nan=False
            ),
        ]
    ]
    latitude: NotRequired[
        Annotated[
            float | None,
            Field(ge=PLAUSIBLE["latitude"][0], le=PLAUSIBLE["latitude"][1], allow_inf_nan=False),
        ]
    ]
    longitude: NotRequired[
        Annotated[
            float | None,
            Field(ge=PLAUSIBLE["longitude"][0], le=PLAUSIBLE["longitude"][1], allow_inf_nan=False),
        ]
    ]
    speed_kmh: NotRequired[
        Annotated[
            float | None,
            Field(ge=PLAUSIBLE["speed_kmh"][0], le=PLAUSIBLE["speed_kmh"][1], allow_inf_nan=False),
        ]
    ]
    door_open: NotRequired[bool | None]


class TelemetryDoc(TypedDict):
    gateway: Annotated[str, Field(pattern=SEGMENT_PATTERN)]
    sent_at: AwareDatetime
    readings: Annotated[list[ReadingDoc], Field(min_length=1, max_length=MAX_READINGS_PER_MESSAGE)]


_telemetry_doc = TypeAdapter(TelemetryDoc)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "payload"
    return f"{where}: {err['msg']}"


def check_shape(
    payload: bytes, *, max_depth: int = MAX_DEPTH, max_string_bytes: int = MAX_STRING_BYTES
) -> None:
    """Refuse, before parsing, a payload nested deeper than ``max_depth`` or holding a string
    longer than ``max_string_bytes``: what a parser would spend on it is bounded by its size.

    One vectorised pass over the bytes: quotes preceded by an odd run of backslashes are
    escaped; the others open and close strings; brackets outside strings count the depth.
    Bytes that are not JSON may be judged loosely here; the parser refuses them after.
    """
    raw = np.frombuffer(payload, dtype=np.uint8)
    quotes = np.flatnonzero(raw == 0x22)
    slashes = np.flatnonzero(raw == 0x5C)
    if slashes.size and quotes.size:
        # The backslashes right before each quote: a run ends at quote - 1; its length is how
        # far back the run of consecutive backslash positions reaches.
        starts = np.ones(slashes.size, dtype=bool)
        starts[1:] = np.diff(slashes) != 1
        run_start = slashes[np.maximum.accumulate(np.where(starts, np.arange(slashes.size), 0))]
        at = np.searchsorted(slashes, quotes - 1)
        hit = (at < slashes.size) & (slashes[np.minimum(at, slashes.size - 1)] == quotes - 1)
        run = np.where(hit, quotes - run_start[np.minimum(at, slashes.size - 1)], 0)
        quotes = quotes[run % 2 == 0]
    if quotes.size:
        opens, closes = quotes[0::2], quotes[1::2]
        longest = int((closes - opens[: closes.size]).max(initial=1)) - 1
        if opens.size > closes.size:  # an unterminated string runs to the end
            longest = max(longest, raw.size - int(opens[-1]) - 1)
        if longest > max_string_bytes:
            raise PayloadError(f"a string of {longest} bytes: the limit is {max_string_bytes}")
    brackets = np.flatnonzero((raw == 0x5B) | (raw == 0x7B) | (raw == 0x5D) | (raw == 0x7D))
    if brackets.size:
        # Outside strings: an even number of real quotes before it.
        outside = np.searchsorted(quotes, brackets) % 2 == 0
        kinds = raw[brackets[outside]]
        step = np.where((kinds == 0x5B) | (kinds == 0x7B), 1, -1).astype(np.int32)
        depth = int(np.cumsum(step).max(initial=0))
        if depth > max_depth:
            raise PayloadError(f"nested {depth} deep: the limit is {max_depth}")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise PayloadError(f"duplicate key {key!r}: which value counts would be a guess")
            seen.add(key)
    return doc


def _bounded_int(text: str) -> int | float:
    # Longer than any field takes: a float, which validation then refuses for that reading
    # alone (too large, or not finite), without converting all of its digits.
    if len(text) > MAX_INT_DIGITS:
        return float(text) if len(text) <= 400 else float("inf") * (-1 if text[0] == "-" else 1)
    return int(text)


def json_object(payload: bytes) -> dict[str, Any]:
    """A message's JSON object, read strictly; :class:`PayloadError` for anything else: not
    UTF-8, not JSON, nested too deep, a string too long, a key given twice. NaN, Infinity and
    integers too long for any field are read, for validation to refuse by field."""
    check_shape(payload)
    try:
        doc = json.loads(payload, object_pairs_hook=_no_duplicate_keys, parse_int=_bounded_int)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"not JSON: {exc}") from exc
    except RecursionError as exc:  # check_shape bounds depth; this is the last guard
        raise PayloadError("not JSON: nested too deep") from exc
    if not isinstance(doc, dict):
        raise PayloadError("payload is not a JSON object")
    return doc


def parse_telemetry(payload: bytes) -> tuple[TelemetryBatch, list[Reading], list[tuple[str, str]]]:
    """Decode one telemetry message.

    Returns the envelope, the valid readings, and ``(raw_reading_json, reason)`` for each
    reading that failed validation. Raises :class:`PayloadError` if the envelope itself is bad.
    """
    doc = json_object(payload)
    try:
        batch = TelemetryBatch.model_validate(doc)
    except ValidationError as exc:
        raise PayloadError(_first_error(exc)) from exc
    good: list[Reading] = []
    bad: list[tuple[str, str]] = []
    for raw in batch.readings:
        try:
            good.append(_reading.validate_python(raw))
        except ValidationError as exc:
            bad.append((json.dumps(raw, default=str), _first_error(exc)))
    return batch, good, bad


_WHITESPACE = (b" ", b"\t", b"\n", b"\r")


def _exactly_the_contract(payload: bytes, doc: TelemetryDoc) -> bool:
    """Whether the message holds the contract's keys and nothing else, each once. Without
    whitespace every key is followed at once by ``":``, so counting that pair counts the keys;
    the validated document holds each known key once. A key given twice, a gateway's own
    field, or ``\\":`` inside a string makes the count larger; nothing makes it smaller."""
    if any(w in payload for w in _WHITESPACE):
        return False
    keys = 3 + sum(len(r) for r in doc["readings"])
    return payload.count(b'":') == keys


def parse_telemetry_docs(
    payload: bytes,
) -> tuple[str, list[ReadingDoc], list[tuple[str, str]]]:
    """:func:`parse_telemetry` for bulk ingest: the gateway, the valid readings as dicts, and
    the rejected ones with their reasons. A message of exactly the contract's shape (the
    usual case) is validated whole in one pass by pydantic-core, whose parser bounds its own
    depth; anything else goes through the strict, reading-by-reading path, so a bad reading
    costs only itself. Raises :class:`PayloadError` if the envelope is bad."""
    try:
        doc = _telemetry_doc.validate_json(payload)
    except ValidationError:
        doc = None
    if doc is not None and _exactly_the_contract(payload, doc):
        return doc["gateway"], doc["readings"], []
    envelope, good, bad = parse_telemetry(payload)
    docs = [ReadingDoc(**r.model_dump(exclude_none=True)) for r in good]  # type: ignore[typeddict-item]
    return envelope.gateway, docs, bad


def telemetry_topic(root: str, site: str, gateway: str) -> str:
    return f"{root}/v1/{site}/{gateway}/telemetry"


def status_topic(root: str, site: str, gateway: str) -> str:
    return f"{root}/v1/{site}/{gateway}/status"


def telemetry_filter(root: str) -> str:
    return f"{root}/v1/+/+/telemetry"


def rfc3339(ts: datetime) -> str:
    """Millisecond RFC 3339 in UTC with a ``Z``, the form the edge sends."""
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    u = ts.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"


def encode_telemetry(gateway: str, sent_at: datetime, readings: list[Reading]) -> bytes:
    body = {
        "gateway": gateway,
        "sent_at": rfc3339(sent_at),
        "readings": [
            {
                k: v
                for k, v in (
                    ("sensor", r.sensor),
                    ("seq", r.seq),
                    ("ts", rfc3339(r.ts)),
                    ("status", r.status.value),
                    ("clock", r.clock.value if r.clock is not ClockState.OK else None),
                    ("temperature_c", r.temperature_c),
                    ("humidity_pct", r.humidity_pct),
                    ("battery_pct", r.battery_pct),
                    ("latitude", r.latitude),
                    ("longitude", r.longitude),
                    ("speed_kmh", r.speed_kmh),
                    ("door_open", r.door_open),
                )
                if v is not None
            }
            for r in readings
        ],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def encode_status(
    state: Literal["online", "offline"],
    ts: datetime | None,
    *,
    queued: int | None = None,
    oldest_queued: datetime | None = None,
    queue_bytes: int | None = None,
    queue_alarm: bool = False,
) -> bytes:
    """Gateway status; ``queued`` and ``oldest_queued`` describe the backlog still at the edge."""
    body: dict[str, str | int | bool | None] = {"state": state}
    if ts is not None:
        body["ts"] = rfc3339(ts)
    if queued is not None:
        body["queued"] = queued
        body["oldest_queued"] = rfc3339(oldest_queued) if oldest_queued else None
        body["queue_alarm"] = queue_alarm
    if queue_bytes is not None:
        body["queue_bytes"] = queue_bytes
    return json.dumps(body, separators=(",", ":")).encode()
