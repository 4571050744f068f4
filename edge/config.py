"""The edge agent's configuration file (TOML), validated at start-up."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from coldtrail import compliance
from coldtrail.errors import ConfigError, validation_problems
from coldtrail.messages import SEGMENT_PATTERN, SENSOR_ID_PATTERN


class DeviceConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sensor: str = Field(pattern=SENSOR_ID_PATTERN)
    source: str = "modbus-tcp"
    model: str
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)
    unit: int | None = Field(default=None, ge=0, le=247)
    serial_port: str | None = None
    """modbus-rtu: the serial device (``/dev/ttyUSB0``); devices naming the same one share it."""
    baudrate: int = Field(default=9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    mac: str | None = None
    """ble: the logger's address; adverts from other addresses are ignored."""
    bindkey: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{32}$")
    """ble: BTHome encryption key, for a logger that encrypts its adverts."""
    stale_after_s: float = Field(default=120.0, gt=0, le=3600)
    """ble: no new advert for this long makes a read fail (status ``unavailable``)."""
    poll_interval_s: float = Field(default=60.0, gt=0, le=3600)
    """Every poll is recorded. GSP wants each probe refreshed at least once a minute (the
    default); the location kind caps it (see RECORD_MAX_S)."""
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    """Modbus: how long a request waits for its answer. BLE: how long a read waits for the
    logger's first advert after start before it records ``unavailable``."""
    temp_min_c: float | None = None
    temp_max_c: float | None = None
    """The allowed range where this probe hangs: out of it, the agent records at least every
    2 minutes (GSP) and publishes at once."""

    @model_validator(mode="after")
    def _transport_fields(self) -> DeviceConfig:
        if self.source == "modbus-rtu" and not self.serial_port:
            raise ValueError(f"sensor {self.sensor}: source modbus-rtu needs serial_port")
        if self.source == "ble" and not self.mac:
            raise ValueError(f"sensor {self.sensor}: source ble needs mac")
        return self

    @field_validator("mac")
    @classmethod
    def _normalise_mac(cls, mac: str | None) -> str | None:
        from coldtrail.edge.ble.advert import normalise_mac

        return None if mac is None else normalise_mac(mac)

    def out_of_range(self, temperature_c: float | None) -> bool:
        if temperature_c is None:
            return False
        low = self.temp_min_c is not None and temperature_c < self.temp_min_c
        high = self.temp_max_c is not None and temperature_c > self.temp_max_c
        return low or high


# GSP's longest gap between two records (DOMAIN.md): stored goods 30 min, goods in transport
# 5 min, and 2 min while a value is out of range. A compliance profile's own intervals take
# their place where it gives them.
RECORD_MAX_S = {"storage": 1800.0, "transport": 300.0}
OUT_OF_RANGE_RECORD_MAX_S = 120.0
_RULES = {"storage": "record_interval_storage", "transport": "record_interval_transport"}


class EdgeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    site: str = Field(pattern=SEGMENT_PATTERN)
    gateway: str = Field(pattern=SEGMENT_PATTERN)
    location_kind: Literal["storage", "transport"] = "storage"
    compliance_profile: str = compliance.DEFAULT
    """The regime the site is held to (as ``sites.compliance_profile``): its record intervals
    bound the poll intervals."""
    compliance_profiles_dir: Path | None = None
    """The site's own profiles (relative paths are from the config file's folder)."""
    mqtt_url: str | None = None
    """Overrides COLDTRAIL_MQTT_URL for this agent."""
    state_dir: Path = Path("state")
    """Queue and sequence numbers live here. Relative paths are from the config file's folder."""
    queue: Literal["sqlite", "memory"] = "sqlite"
    """``memory`` loses queued readings when the agent stops: for tests and demos only."""
    queue_budget_mb: float = Field(default=1024.0, gt=0)
    """Disk the queue may use; at 90 % the agent alarms (status and error log), never drops."""
    queue_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """SQLite fsync policy: FULL survives a power cut; NORMAL only a crash of the agent."""
    profile_dirs: tuple[Path, ...] = ()
    publish_interval_s: float = Field(default=5.0, gt=0, le=600)
    batch_max_readings: int = Field(default=500, ge=1, le=10_000)
    max_inflight_messages: int = Field(default=10, ge=1, le=1000)
    status_interval_s: float = Field(default=60.0, gt=0, le=3600)
    ble_scanner: Literal["bleak", "replay"] = "bleak"
    """Where BLE adverts come from: the radio (bleak), or a file/FIFO of advert lines."""
    ble_adapter: str | None = None
    """bleak on Linux: the adapter (``hci0``); default: the system's."""
    ble_replay_file: Path | None = None
    """How often the retained status (with the queue's size and oldest reading) is refreshed."""
    devices: tuple[DeviceConfig, ...] = Field(min_length=1)

    @property
    def profile(self) -> compliance.Profile:
        known = compliance.profiles(self.compliance_profiles_dir)
        found = known.get(self.compliance_profile)
        if found is None:
            raise ValueError(
                f"no compliance profile {self.compliance_profile}; known: "
                + ", ".join(sorted(known))
            )
        return found

    def record_max_s(self, kind: str | None = None) -> float:
        """The longest time between records here, by the profile (GSP's where it gives none)."""
        chosen = kind or self.location_kind
        rule = self.profile.rule(_RULES.get(chosen, "record_interval_out_of_range"))
        if rule is not None:
            return rule.value
        return RECORD_MAX_S.get(chosen, OUT_OF_RANGE_RECORD_MAX_S)

    @property
    def out_of_range_record_s(self) -> float:
        return self.record_max_s("out_of_range")

    @model_validator(mode="after")
    def _record_interval(self) -> EdgeConfig:
        limit = self.record_max_s()
        slow = [d.sensor for d in self.devices if d.poll_interval_s > limit]
        if slow:
            raise ValueError(
                f"{self.compliance_profile} wants a record at least every {limit:.0f} s in "
                f"{self.location_kind}; poll_interval_s is longer for {', '.join(slow)}"
            )
        return self

    @model_validator(mode="after")
    def _sensors_unique(self) -> EdgeConfig:
        seen = [d.sensor for d in self.devices]
        dupes = sorted({s for s in seen if seen.count(s) > 1})
        if dupes:
            raise ValueError(f"sensor ids listed twice: {', '.join(dupes)}")
        return self


def load_config(path: Path) -> EdgeConfig:
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read edge config {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"edge config {path} is not valid TOML: {exc}") from exc
    try:
        folder = doc.get("compliance_profiles_dir")
        if isinstance(folder, str) and not Path(folder).is_absolute():
            doc["compliance_profiles_dir"] = str(path.parent / folder)
        cfg = EdgeConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(f"edge config {path}: {validation_problems(exc)}") from None
    base = path.parent
    return cfg.model_copy(
        update={
            "state_dir": cfg.state_dir if cfg.state_dir.is_absolute() else base / cfg.state_dir,
            "profile_dirs": tuple(p if p.is_absolute() else base / p for p in cfg.profile_dirs),
            "ble_replay_file": (
                cfg.ble_replay_file
                if cfg.ble_replay_file is None or cfg.ble_replay_file.is_absolute()
                else base / cfg.ble_replay_file
            ),
        }
    )


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # A JSON string is a valid TOML basic string for everything a config holds.
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def dump_config(config: EdgeConfig) -> str:
    """The config as a TOML file :func:`load_config` reads back, leaving out defaults (for
    the demo, tools that generate configs, and tests that start ``coldtrail edge``)."""
    doc = config.model_dump(exclude_defaults=True, exclude={"devices"})
    lines = [f"{key} = {_toml_value(value)}" for key, value in doc.items()]
    for device in config.devices:
        lines += ["", "[[devices]]"]
        fields = device.model_dump(exclude_defaults=True)
        fields.setdefault("source", device.source)
        lines += [f"{key} = {_toml_value(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"
