"""Response and request bodies of the API."""

from __future__ import annotations

import re
import zoneinfo
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from coldtrail.erp.outbox import SINKS
from coldtrail.erp.people import Role

LiveState = Literal["ok", "excursion", "unavailable", "offline", "no_data", "unassigned"]
Colour = Literal["green", "red", "amber", "grey"]
STATE_COLOURS: dict[str, Colour] = {
    "ok": "green",
    "excursion": "red",
    # No data from a place that should be watched is itself an alarm condition in GSP.
    "unavailable": "amber",
    "offline": "amber",
    "no_data": "grey",
    "unassigned": "grey",
}
STATE_RANK: tuple[LiveState, ...] = ("unassigned", "ok", "no_data", "offline", "unavailable",
                                     "excursion")  # fmt: skip
"""From least to most severe: a place shows its worst probe's state (``unassigned``: no probe
is placed there)."""


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:\d{2})"
)


def _rfc3339_text(value: object) -> object:
    # pydantic also takes a number as seconds since 1970: `?to=0.5` would be a time.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("a time in RFC 3339 with its offset, e.g. 2026-11-22T10:00:00Z")
    return value


Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]
"""A point in time as the API takes it: RFC 3339 text with an offset, nothing else."""


MAX_LIST = 1_000
"""The longest list a request body may hold (a CAPA's links, a destination's event kinds, a
replay's changed ranges). One CAPA with 300 000 links held the audit head for 31 s."""
MAX_SENSORS = 20_000


class RequestModel(BaseModel):
    """A request body: a field the API does not know is refused (a client that sent it would
    believe it set something), and so are NaN and infinities (no stored value may hold one)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - OAuth2 token type, not a secret
    expires_in: int


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    schema_version: int
    stream: Literal["off", "connecting", "live"] = Field(
        description="the push stream: off (no broker set), connecting, or live (subscribed)"
    )
    stream_clients: int = Field(description="clients connected to the push stream")


class LocationRef(BaseModel):
    id: str
    name: str
    kind: str
    site_id: str
    parent_id: str | None
    position: str
    temp_min_c: float | None
    temp_max_c: float | None


class LatestReading(BaseModel):
    seq: int
    ts: datetime = Field(description="time of measurement")
    received_at: datetime
    status: str
    temperature_c: float | None
    humidity_pct: float | None
    battery_pct: float | None
    gateway: str
    clock: str = Field(description="ok, or unsynced / implausible: the gateway's clock was off")
    latitude: float | None = Field(default=None, description="position units only")
    longitude: float | None = Field(default=None, description="position units only")
    speed_kmh: float | None = Field(default=None, description="position units only")
    door_open: bool | None = Field(default=None, description="door contacts only")


class LiveSensor(BaseModel):
    sensor: str
    kind: Literal["probe", "position", "door"]
    model: str
    serial: str
    calibration_due: date | None
    calibration_overdue: bool
    location: LocationRef | None
    latest: LatestReading | None
    state: LiveState = Field(
        description="ok; excursion (an open excursion); unavailable (the device did not "
        "answer); offline (nothing heard for 5 minutes); no_data; unassigned"
    )
    colour: Colour = Field(description="how a dashboard shows the state")
    open_excursion_id: int | None
    open_excursion_since: datetime | None


class LiveDoor(BaseModel):
    sensor: str = Field(description="the door contact")
    position: str = Field(description="where the contact is, e.g. 'rear door'")
    state: LiveState = Field(description="the contact's own state, as a sensor's")
    ts: datetime | None = Field(description="when the door's state was last read")
    open: bool | None
    open_since: datetime | None = Field(description="while open: the first reading of this opening")


class LiveEffective(BaseModel):
    """What the rules judge the place's readings by now."""

    temp_min_c: float | None = Field(description="the place's, narrowed by its products'")
    temp_max_c: float | None
    alarm_delay_s: float = Field(
        description="out of range this long before it is an excursion: the place's own delay "
        "(where it has a range and a delay), or else the shortest of its products', or 0"
    )
    profiles: list[str] = Field(description="profiles of the products stored there now")


class LivePlace(BaseModel):
    id: str
    name: str
    kind: str
    site_id: str
    parent_id: str | None
    temp_min_c: float | None
    temp_max_c: float | None
    alarm_delay_s: int | None = Field(description="the place's own; None: its products' apply")
    effective: LiveEffective
    probes: int = Field(description="probes placed there now")
    state: LiveState = Field(
        description="its worst probe's state (a vehicle's: of its compartments' too); "
        "unassigned when no probe is placed there"
    )
    colour: Colour
    open_location_excursion_id: int | None
    doors: list[LiveDoor]


class LivePosition(BaseModel):
    sensor: str = Field(description="the vehicle's GNSS unit")
    state: LiveState = Field(description="the unit's own state: offline when it fell silent")
    ts: datetime | None = Field(description="time of the last fix; None before any")
    latitude: float | None
    longitude: float | None
    speed_kmh: float | None


class LiveCompartment(BaseModel):
    id: str
    name: str
    temp_min_c: float | None
    temp_max_c: float | None
    alarm_delay_s: int | None
    effective: LiveEffective
    state: LiveState
    colour: Colour
    doors: list[LiveDoor]


class LiveShipment(BaseModel):
    id: str
    destination: str
    departed_at: datetime


class LiveVehicle(BaseModel):
    id: str
    name: str
    site_id: str
    state: LiveState = Field(description="the worst of its compartments' probes")
    colour: Colour
    position: LivePosition | None = Field(
        description="the last known position (kept while the unit is silent); None without a "
        "GNSS unit placed in the vehicle"
    )
    compartments: list[LiveCompartment]
    shipments: list[LiveShipment] = Field(description="shipments in transit on it")


class Live(BaseModel):
    generated_at: datetime
    sensors: list[LiveSensor]
    locations: list[LivePlace]
    vehicles: list[LiveVehicle]


class Excursion(BaseModel):
    id: int
    sensor: str
    location_id: str
    location_name: str
    started_at: datetime
    ended_at: datetime | None
    limit_min_c: float | None
    limit_max_c: float | None
    min_c: float
    max_c: float
    detected_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    ack_comment: str | None
    state: Literal["open", "closed", "withdrawn"] = Field(
        description="withdrawn: readings that came later show there was none"
    )
    late: bool = Field(description="found well after it began: its readings arrived late")
    duration_s: float | None = Field(description="start to end, or to the last reading if open")
    degree_minutes: float | None = Field(description="°C beyond the limit times minutes")
    mkt_c: float | None = Field(description="mean kinetic temperature over the excursion")
    revision: int = Field(description="how often later readings changed it")
    location_excursion_id: int | None = Field(
        description="the place's excursion this probe's is part of (`/location-excursions`)"
    )

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> Excursion:
        """A row of :data:`coldtrail.api.queries.EXCURSION_COLUMNS`."""
        names = list(cls.model_fields)
        return cls(**dict(zip(names, r, strict=True)))


class Acknowledge(RequestModel):
    comment: str = Field(
        min_length=3, max_length=2000, description="what was seen and done; required"
    )


class NewUser(RequestModel):
    username: str = Field(pattern=r"^[a-z0-9_.-]{1,64}$")
    full_name: str = Field(min_length=1, max_length=200)
    role: Role
    password: str = Field(min_length=12, max_length=1024)


class UserOut(BaseModel):
    username: str
    full_name: str
    role: Role


# ------------------------------------------------------------------ ERP core


class ProfileIn(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    temp_min_c: float | None = Field(default=None, ge=-100, le=100)
    temp_max_c: float | None = Field(default=None, ge=-100, le=100)
    rh_min_pct: float | None = Field(default=None, ge=0, le=100)
    rh_max_pct: float | None = Field(default=None, ge=0, le=100)
    alarm_delay_s: int = Field(default=0, ge=0, le=86_400)
    stability_budget_min: int | None = Field(default=None, ge=0)
    mkt_max_c: float | None = None
    hold_on_excursion: bool = True
    release_signatures: Literal[1, 2] = 1

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"name": "Refrigerated 2-8 °C", "temp_min_c": 2, "temp_max_c": 8,
                 "alarm_delay_s": 300, "stability_budget_min": 120, "release_signatures": 2}
            ]
        }
    }  # fmt: skip


class ProductIn(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    profile_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    serialised: bool = False


class LotIn(RequestModel):
    """Either the fields, or ``scan``: the GS1 element string or UDI as the scanner read it."""

    scan: str | None = Field(
        default=None, max_length=400, examples=["(01)09501101530003(17)270131(10)AB-123"]
    )
    gtin: str | None = Field(default=None, pattern=r"^[0-9]{14}$")
    lot_number: str | None = Field(default=None, pattern=r"^[!-~]{1,20}$")
    expiry: date | None = None
    production_date: date | None = None
    serials: list[str] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _scan_or_fields(self) -> LotIn:
        # A request that names no lot is malformed (422), not in conflict with anything.
        if self.scan is None and (self.gtin is None or self.lot_number is None):
            raise ValueError("give either scan, or gtin and lot_number")
        return self


Quantity = Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=6)]
"""An amount of goods: positive, finite, 18 digits, 6 of them after the point at most."""

MovementKind = Literal["receiving", "put_away", "transfer", "loading", "delivery", "return"]


class MovementIn(RequestModel):
    lot_id: int
    kind: MovementKind
    quantity: Quantity
    at: Instant = Field(description="when the goods moved")
    from_location: str | None = None
    to_location: str | None = None
    shipment_id: str | None = None
    party: str | None = Field(default=None, max_length=200)


class ShipmentIn(RequestModel):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    vehicle_id: str
    origin_site: str
    destination: str = Field(min_length=1, max_length=500)
    route: str = Field(default="", max_length=2000)


class At(RequestModel):
    at: Instant


class ArriveIn(At):
    quarantine_to: str | None = Field(
        default=None,
        description="a quarantine area: lots still aboard that are quarantined or rejected are "
        "moved there (a transfer each) before the shipment closes",
    )


class HoldIn(RequestModel):
    lot_id: int
    reason: str = Field(min_length=1, max_length=2000)


class SignatureIn(RequestModel):
    """21 CFR 11.200: both components again at every signing, with meaning and reason."""

    username: str
    password: str = Field(min_length=1, max_length=1024)
    meaning: Literal["authorship", "review", "approval", "responsibility", "verification"]
    reason: str = Field(min_length=1, max_length=2000)


class LotExitIn(SignatureIn):
    kind: Literal["return_to_supplier", "destruction"]
    quantity: Quantity
    at: Instant = Field(description="when the goods left")
    from_location: str = Field(description="a quarantine area, for a rejected lot")
    party: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"\S",
        description="the supplier taking the goods back, or who destroyed them",
    )
    model_config = {"json_schema_extra": {"examples": [
        {"kind": "destruction", "quantity": 40, "at": "2026-11-23T09:00:00Z",
         "from_location": "QZ", "party": "Shanghai Medical Waste Disposal Co. 上海医废处置",
         "username": "qa1", "password": "…", "meaning": "approval",
         "reason": "rejected after excursion 7; destroyed under witness"}]}}  # fmt: skip


class DispositionIn(SignatureIn):
    disposition: Literal["release", "reject"]
    open_excursions: list[int] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description="a release while excursions that touched the lot are still open is refused"
        " unless each is named here (the signed record then says so, with the reason)",
    )


class CapaIn(RequestModel):
    title: str = Field(min_length=1, max_length=300)
    description: str = Field(default="", max_length=20_000)
    owner: str
    due_date: date
    links: list[tuple[Literal["excursion", "lot", "hold", "shipment"], str]] = Field(
        default_factory=list, max_length=MAX_LIST
    )


class CapaStepIn(RequestModel):
    to_state: Literal["investigation", "actions", "effectiveness_check", "closed"]
    comment: str = Field(default="", max_length=5000)
    root_cause: str | None = Field(default=None, max_length=20_000)
    effectiveness: str | None = Field(default=None, max_length=20_000)
    expected_state: (
        Literal["open", "investigation", "actions", "effectiveness_check", "closed"] | None
    ) = Field(default=None, description="the state you saw; a different one gets 409")
    signature: SignatureIn | None = Field(default=None, description="required to close")


class CapaActionIn(RequestModel):
    description: str = Field(min_length=1, max_length=2000)
    owner: str
    due_date: date


class OutcomeIn(RequestModel):
    outcome: str = Field(min_length=1, max_length=2000)


class LinkIn(RequestModel):
    kind: Literal["excursion", "lot", "hold", "shipment"]
    ref: str = Field(min_length=1, max_length=200)


class DestinationIn(RequestModel):
    kind: str = Field(description="a registered sink: webhook or mqtt")
    url: str = Field(min_length=1, max_length=2000)
    secret: str | None = Field(default=None, min_length=16, max_length=500)
    kinds: list[str] | None = Field(
        default=None, max_length=MAX_LIST, description="event kinds; null: all"
    )
    enabled: bool = True

    @field_validator("kind")
    @classmethod
    def _known_sink(cls, kind: str) -> str:
        if kind not in SINKS:
            raise ValueError(f"unknown destination kind {kind!r}; known: {sorted(SINKS)}")
        return kind


class DestinationOut(BaseModel):
    name: str
    kind: str
    url: str
    signed: bool
    kinds: list[str] | None
    enabled: bool


class ReadingsCheckOut(BaseModel):
    ok: bool
    links: int
    readings: int
    head: str = Field(description="hash of the last link checked: compare it with an anchor")
    head_link: int
    first_broken_link: int | None
    batch_id: int | None
    reason: str | None
    findings: list[str] = Field(description="the readings that differ in the first broken batch")


class StateCheckOut(BaseModel):
    ok: bool
    tables: int
    records: int
    findings: list[str] = Field(description="records whose row is not what the trail says")
    reason: str | None


class ChainCheckOut(BaseModel):
    ok: bool = Field(description="the audit trail, the readings' chain and the tables all hold")
    rows: int
    head: str
    first_broken_id: int | None
    reason: str | None
    readings: ReadingsCheckOut
    state: StateCheckOut


class AlarmAckIn(RequestModel):
    comment: str = Field(min_length=1, max_length=2000, description="what was seen, what is done")


class ContactIn(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    channel: str = Field(description="a notifier: webhook (SMS gateways too) or smtp")
    target: str = Field(min_length=1, max_length=500, description="URL or e-mail address")
    level: int = Field(default=0, ge=0, le=10)
    after_min: int = Field(default=0, ge=0, le=10_080)
    site_id: str | None = None
    kinds: list[
        Literal[
            "excursion", "offline", "unavailable", "record_interval", "rapid_change",
            "battery_low", "calibration_overdue", "humidity",
        ]
    ] | None = None  # fmt: skip


class RangePatchIn(RequestModel):
    temp_min_c: float | None = Field(default=None, ge=-100, le=100)
    temp_max_c: float | None = Field(default=None, ge=-100, le=100)
    alarm_delay_s: float | None = Field(default=None, ge=0, le=86_400)


class ReplayIn(RequestModel):
    since: Instant
    until: Instant
    profiles: dict[str, RangePatchIn] = Field(default_factory=dict, max_length=MAX_LIST)
    locations: dict[str, RangePatchIn] = Field(default_factory=dict, max_length=MAX_LIST)
    sensors: list[str] | None = Field(default=None, max_length=MAX_SENSORS)


# ---------------------------------------------------------------- the continuous record
# The JSON form of api.record, described for the OpenAPI document (built as a plain dict
# for speed; a test checks that every record validates against these).


class RecordStats(BaseModel):
    readings: int
    valid: int = Field(description="readings with status ok and a value")
    min_c: float | None
    max_c: float | None
    mean_c: float | None = Field(description="arithmetic mean of the valid values")
    mkt_c: float | None = Field(
        description="mean kinetic temperature, values weighted by the time they stand for; "
        "for all probes together the warmest probe's"
    )
    covered_s: float = Field(description="time the valid values stand for")
    out_of_range_s: float
    intervals_expected: int = Field(description="GSP recording slots in the period")
    intervals_recorded: int = Field(description="slots holding at least one valid value")
    completeness: float | None = Field(description="intervals_recorded / intervals_expected")


class RecordSummary(RecordStats):
    gaps: int
    excursions: int


class RecordGap(BaseModel):
    sensor_id: str
    location_id: str
    start: datetime
    end: datetime
    duration_s: float
    readings_unavailable: int = Field(description="readings sent in the gap without a value")
    missing_seq: int | None = Field(
        description="sequence numbers that never arrived (null at the record's edge)"
    )


class RecordSignature(BaseModel):
    signer: str
    signer_name: str
    signer_role: str
    meaning: str
    reason: str
    action: str
    signed_at: datetime


class RecordDisposition(BaseModel):
    hold_id: int
    lot_id: int
    gtin: str
    lot_number: str
    state: str
    placed_at: datetime
    disposed_at: datetime | None
    reason: str
    signatures: list[RecordSignature]


class RecordExcursion(BaseModel):
    id: int
    location_id: str
    started_at: datetime
    ended_at: datetime | None
    state: str
    late: bool
    sensors: list[str]
    limit_min_c: float | None
    limit_max_c: float | None
    min_c: float
    max_c: float
    duration_s: float
    degree_minutes: float
    mkt_c: float | None
    capa_id: int | None
    capa_state: str | None
    detected_at: datetime
    dispositions: list[RecordDisposition]


class RecordCertificate(BaseModel):
    certificate_no: str
    issuer: str
    calibrated_on: date
    valid_until: date
    passed: bool
    max_error_c: float | None


class RecordReadings(BaseModel):
    """Column by column, one entry per reading in time order."""

    measured_at: list[datetime]
    received_at: list[datetime]
    seq: list[int]
    status: list[Literal["ok", "unavailable", "not_available"]]
    temperature_c: list[float | None]
    humidity_pct: list[float | None]
    limit_min_c: list[float | None]
    limit_max_c: list[float | None]
    out_of_range: list[bool]
    calibration_status: list[Literal["valid", "overdue", "none"]]


class RecordLimit(BaseModel):
    start: datetime
    end: datetime
    temp_min_c: float | None
    temp_max_c: float | None
    alarm_delay_s: float = Field(
        description="out of range this long before it is an excursion: the place's own delay "
        "or, unset, the shortest of the stored products' (0 when neither is set)"
    )


class RecordChannel(BaseModel):
    sensor_id: str
    model: str
    serial: str
    location_id: str
    location_name: str
    position: str
    start: datetime
    end: datetime
    interval_s: int = Field(description="GSP recording interval: 300 in transport, 1800 stored")
    limits: list[RecordLimit] = Field(
        description="the range and alarm delay the rules judged by, each stretch they held"
    )
    calibration_due: date | None
    certificates: list[RecordCertificate]
    stats: RecordStats
    gaps: list[RecordGap]
    readings: RecordReadings


class RecordLot(BaseModel):
    lot_id: int
    gtin: str
    lot_number: str
    product: str
    status: str
    quantity: float | None


class RecordShipment(BaseModel):
    id: str
    vehicle_id: str
    origin_site: str
    destination: str
    route: str
    state: str
    departed_at: datetime | None
    arrived_at: datetime | None


class RecordSubject(BaseModel):
    kind: Literal["shipment", "location"]
    id: str
    name: str
    locations: list[str]
    timezone: str = Field(description="the site's time zone: the PDF's times are given there")
    shipment: RecordShipment | None


class AuditHead(BaseModel):
    id: int
    hash: str


class ReadingsHead(BaseModel):
    link: int
    hash: str


class ChainHeads(BaseModel):
    audit: AuditHead
    readings: ReadingsHead = Field(
        description="every reading of the record lies in a link up to this one"
    )


class RecordOut(BaseModel):
    subject: RecordSubject
    start: datetime
    end: datetime
    generated_at: datetime
    data_sha256: str = Field(
        description="SHA-256 of the CSV form's bytes: `sha256sum` of a downloaded CSV matches"
    )
    chain_heads: ChainHeads = Field(
        description="where the audit trail and the readings' chain stood when the record was "
        "built: check them against the chains and the anchors (`coldtrail audit verify`)"
    )
    summary: RecordSummary
    lots: list[RecordLot]
    excursions: list[RecordExcursion]
    gaps: list[RecordGap]
    channels: list[RecordChannel]


# ---------------------------------------------------------------- master data


class SiteIn(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)

    @field_validator("timezone")
    @classmethod
    def _a_known_zone(cls, value: str) -> str:
        # The site's local time labels its reports and KPIs: a zone the database does not
        # know would fail them later, far from this request.
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Asia/Shanghai)") from exc
        return value

    model_config = {"json_schema_extra": {"examples": [{"name": "Shanghai DC", "timezone":
                                                        "Asia/Shanghai"}]}}  # fmt: skip


class LocationIn(RequestModel):
    site_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Literal["cold_room", "ambient_store", "vehicle", "compartment"]
    name: str = Field(min_length=1, max_length=200)
    temp_min_c: float | None = Field(default=None, ge=-100, le=100)
    temp_max_c: float | None = Field(default=None, ge=-100, le=100)
    parent_id: str | None = Field(default=None, description="a compartment's vehicle")
    area_m2: float | None = Field(default=None, gt=0, le=1e6)
    volume_m3: float | None = Field(default=None, gt=0, le=1e6)
    alarm_delay_s: int | None = Field(
        default=None,
        ge=0,
        le=86_400,
        description="out of range this long before it is an excursion; unset (the default): "
        "the delays of the products stored there apply, the shortest of those set",
    )
    quarantine_area: bool = Field(
        default=False, description="quarantined and rejected goods may be put only here"
    )

    model_config = {"json_schema_extra": {"examples": [
        {"site_id": "sh1", "kind": "cold_room", "name": "Cold room 1", "temp_min_c": 2.0,
         "temp_max_c": 8.0, "area_m2": 120.0}
    ]}}  # fmt: skip


class SensorIn(RequestModel):
    model: str = Field(min_length=1, max_length=64, description="logger profile name")
    serial: str = Field(min_length=1, max_length=128)
    kind: Literal["probe", "position", "door"] = Field(
        default="probe",
        description="probe: temperature (and humidity), judged against the place's range; "
        "position: a vehicle's GNSS unit, placed in a vehicle; door: a door contact, placed "
        "in a compartment or a room",
    )

    model_config = {"json_schema_extra": {"examples": [{"model": "xy-md02",
                                                        "serial": "XY2024-00817"}]}}  # fmt: skip


class PlacementIn(RequestModel):
    location_id: str
    since: Instant = Field(description="from when the sensor measures there")
    position: str = Field(default="", max_length=200, description="e.g. 'rear door, top'")

    model_config = {"json_schema_extra": {"examples": [
        {"location_id": "CR1", "since": "2026-11-22T08:00:00Z", "position": "rack 3, top"}
    ]}}  # fmt: skip


class CertificateIn(RequestModel):
    certificate_no: str = Field(min_length=1, max_length=100)
    issuer: str = Field(min_length=1, max_length=200)
    calibrated_on: date
    valid_until: date
    passed: bool
    max_error_c: float | None = Field(
        default=None, ge=0, le=50, description="largest deviation found at the check points"
    )

    model_config = {"json_schema_extra": {"examples": [
        {"certificate_no": "CAL-2026-0193", "issuer": "Shanghai Institute of Measurement",
         "calibrated_on": "2026-03-02", "valid_until": "2027-03-01", "passed": True,
         "max_error_c": 0.2}
    ]}}  # fmt: skip


class LocationLimitsIn(SignatureIn):
    """A change of a place's range or alarm delay: only the fields sent change."""

    temp_min_c: float | None = Field(default=None, ge=-100, le=100)
    temp_max_c: float | None = Field(default=None, ge=-100, le=100)
    rh_min_pct: float | None = Field(default=None, ge=0, le=100)
    rh_max_pct: float | None = Field(default=None, ge=0, le=100)
    alarm_delay_s: int | None = Field(default=None, ge=0, le=86_400)

    model_config = {"json_schema_extra": {"examples": [
        {"temp_max_c": 7.5, "username": "qa1", "password": "…", "meaning": "approval",
         "reason": "re-mapped after the new door; warmest spot 7.6 °C"}
    ]}}  # fmt: skip


class ProfileLimitsIn(SignatureIn):
    """A change of a storage profile's limits: only the fields sent change."""

    temp_min_c: float | None = Field(default=None, ge=-100, le=100)
    temp_max_c: float | None = Field(default=None, ge=-100, le=100)
    rh_min_pct: float | None = Field(default=None, ge=0, le=100)
    rh_max_pct: float | None = Field(default=None, ge=0, le=100)
    alarm_delay_s: int = Field(default=0, ge=0, le=86_400)
    stability_budget_min: int | None = Field(default=None, ge=0, le=10_000_000)
    mkt_max_c: float | None = Field(default=None, ge=-100, le=100)
    hold_on_excursion: bool = True
    release_signatures: int = Field(default=1, ge=1, le=2)

    model_config = {"json_schema_extra": {"examples": [
        {"alarm_delay_s": 300, "username": "qa1", "password": "…", "meaning": "approval",
         "reason": "stability data of the supplier allow 5 minutes"}
    ]}}  # fmt: skip


class SiteProfileIn(SignatureIn):
    """The compliance regime a site is held to (a profile id); null: the default."""

    compliance_profile: str | None = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")

    model_config = {"json_schema_extra": {"examples": [
        {"compliance_profile": "eu-gdp", "username": "qa1", "password": "…",
         "meaning": "approval", "reason": "the Rotterdam hub distributes under EU GDP"}
    ]}}  # fmt: skip


class ValidationSignIn(RequestModel):
    """A validation pack signed for its execution (who ran it) or its QA review."""

    role: Literal["execution", "review"]
    username: str
    password: str = Field(min_length=1, max_length=1024)
    reason: str = Field(min_length=1, max_length=2000)

    model_config = {"json_schema_extra": {"examples": [
        {"role": "review", "username": "qa1", "password": "…",
         "reason": "reviewed: every case passed, no deviation"}
    ]}}  # fmt: skip


class ProductProfileIn(SignatureIn):
    """The storage profile a product is kept under (its range, delay, budget)."""

    profile_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    model_config = {"json_schema_extra": {"examples": [
        {"profile_id": "2-8", "username": "qa1", "password": "…", "meaning": "approval",
         "reason": "the supplier's new label: store at 2-8 °C"}
    ]}}  # fmt: skip
