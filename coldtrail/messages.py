"""The MQTT message schema (v1), shared by edge, ingest and rules.

See CONTRACTS.md: telemetry batches, gateway status, events. ``sensor`` + ``seq`` identify
a reading; ``ts`` is the time of measurement.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, NotRequired

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from coldtrail.errors import PayloadError

SENSOR_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
SEGMENT_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
MAX_READINGS_PER_MESSAGE = 10_000


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


def json_object(payload: bytes) -> dict[str, Any]:
    """A message's JSON object; :class:`PayloadError` for anything else."""
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"not JSON: {exc}") from exc
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


def parse_telemetry_docs(
    payload: bytes,
) -> tuple[str, list[ReadingDoc], list[tuple[str, str]]]:
    """:func:`parse_telemetry` for bulk ingest: the gateway, the valid readings as dicts, and
    the rejected ones with their reasons. A clean message (the usual case) is validated whole
    in one pass; one with any fault goes through the reading-by-reading path, so a bad reading
    costs only itself. Raises :class:`PayloadError` if the envelope is bad."""
    try:
        doc = _telemetry_doc.validate_json(payload)
    except ValidationError:
        envelope, good, bad = parse_telemetry(payload)
        docs = [ReadingDoc(**r.model_dump(exclude_none=True)) for r in good]  # type: ignore[typeddict-item]
        return envelope.gateway, docs, bad
    return doc["gateway"], doc["readings"], []


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
