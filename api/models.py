"""Response and request bodies of the API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from coldtrail.erp.people import Role

LiveState = Literal["ok", "excursion", "unavailable", "offline", "no_data", "unassigned"]


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - OAuth2 token type, not a secret
    expires_in: int


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    schema_version: int


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


class LiveSensor(BaseModel):
    sensor: str
    model: str
    serial: str
    calibration_due: date | None
    calibration_overdue: bool
    location: LocationRef | None
    latest: LatestReading | None
    state: LiveState
    open_excursion_id: int | None
    open_excursion_since: datetime | None


class Live(BaseModel):
    generated_at: datetime
    sensors: list[LiveSensor]


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


class Acknowledge(BaseModel):
    comment: str = Field(
        min_length=3, max_length=2000, description="what was seen and done; required"
    )


class NewUser(BaseModel):
    username: str = Field(pattern=r"^[a-z0-9_.-]{1,64}$")
    full_name: str = Field(min_length=1, max_length=200)
    role: Role
    password: str = Field(min_length=12, max_length=1024)


class UserOut(BaseModel):
    username: str
    full_name: str
    role: Role
