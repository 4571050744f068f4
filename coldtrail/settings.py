"""Typed settings, read from the environment (``COLDTRAIL_*``) or a ``.env`` file.

Built once at start-up by the command line and passed down; nothing here is a singleton.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import DirectoryPath, Field, FilePath, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from coldtrail.errors import ConfigError, validation_problems
from coldtrail.passwords import MIN_PASSWORD_LENGTH, password_problem
from coldtrail.redact import redact_url

TOPIC_ROOT_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
MqttProtocol = Literal["5", "3.1.1"]


@dataclass(frozen=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        parts = urlsplit(url)
        shown = redact_url(url)  # an error names the URL, never its password
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ConfigError(f"MQTT URL must start with mqtt:// or mqtts://, got {shown!r}")
        if not parts.hostname:
            raise ConfigError(f"MQTT URL has no host: {shown!r}")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ConfigError(f"MQTT URL has a bad port: {shown!r}") from None
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COLDTRAIL_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str | None = None
    """libpq URL; services refuse to start without it (the demo embeds one)."""
    mqtt_url: str | None = None
    mqtt_protocol: MqttProtocol = "5"
    mqtt_ca_file: FilePath | None = None
    """PEM file of the CA that signed the broker's certificate (``mqtts://`` with a private CA)."""
    mqtt_ingest_password: SecretStr | None = None
    mqtt_outbox_password: SecretStr | None = None
    mqtt_api_password: SecretStr | None = None
    """Passwords of the services' broker accounts, for ``coldtrail mosquitto-auth``."""
    mqtt_admin_password: SecretStr | None = None
    """The broker's ``coldtrail-admin`` account: with it, ``coldtrail gateways`` changes a
    running broker at once (dynamic-security plugin)."""
    grafana_token: SecretStr | None = None
    """A Grafana service account token for ``coldtrail dashboards provision``."""
    grafana_user: str = "admin"
    grafana_password: SecretStr | None = None
    """With ``grafana_user``, how `dashboards provision` signs in to Grafana when it has no
    token: from the environment, never on a command line (where `ps` shows it)."""
    grafana_db_url: SecretStr | None = None
    """The read-only database user as Grafana's server reaches it (its data source)."""
    mqtt_topic_root: str = Field(default="coldtrail", pattern=TOPIC_ROOT_PATTERN)
    """First topic level; ``coldtrail`` in production. Lets one broker carry separate fleets."""
    ingest_share_group: str = Field(default="ingest", pattern=r"^[A-Za-z0-9_-]{0,64}$")
    """Shared-subscription group of ingest workers; empty for a broker without ``$share``."""
    ingest_batch_max_readings: int = Field(default=20_000, ge=1, le=1_000_000)
    ingest_flush_s: float = Field(default=0.2, gt=0, le=60)
    """Longest a received message waits before its batch is committed and acknowledged."""
    ingest_max_payload_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    """A telemetry message larger than this is dead-lettered unread (the broker's
    ``message_size_limit`` should match)."""
    ingest_metrics_bind: str | None = None
    """host:port for the worker's Prometheus /metrics (e.g. ``0.0.0.0:9464``); off if unset."""
    api_bind: str = "127.0.0.1:8000"
    secret_key: SecretStr | None = None
    admin_password: SecretStr | None = None
    token_ttl_s: int = Field(default=900, ge=60, le=86_400)
    # The live view is built at most this often and served again in between (0: always built).
    live_max_age_s: float = Field(default=2.0, ge=0, le=60)
    records_at_once: int = Field(default=2, ge=1, le=64)
    """Records (a shipment's, a room's) the API builds and sends at once; more wait 30 s, then
    503. A year of readings holds about 230 MB until it is sent."""
    # An outbox delivery still failing this long after its event is given up (listed as dead).
    outbox_dead_after_days: float = Field(default=3.0, gt=0, le=365)
    outbox_file_dir: DirectoryPath | None = None
    """Where ``file://`` outbox destinations may write (anchors to a WORM mount); none if
    unset."""
    anchor_key_file: FilePath | None = None
    """Ed25519 private key (PEM, from ``coldtrail audit keygen``) that signs the chains' heads
    (``coldtrail audit anchor``); the database never sees it. With it, the outbox worker
    anchors every ``anchor_every_s``."""
    anchor_public_key_file: FilePath | None = None
    """The public key anchors are checked with (``audit verify --anchors``); the key file's
    own public half if unset."""
    anchor_every_s: float = Field(default=3600.0, ge=0, le=7 * 86_400)
    """How often the outbox worker anchors the heads, if they moved (0: never)."""
    smtp_url: SecretStr | None = None
    """``smtp://user:pass@host:port`` (``smtps://`` for TLS) for e-mail alarms; off if unset."""
    smtp_from: str = "coldtrail@localhost"
    rules_capa_owner: str = Field(default="admin", pattern=r"^[a-z0-9_.-]{1,64}$")
    """The user who owns the CAPA records the rules open for excursions."""
    rules_capa_due_days: int = Field(default=30, ge=1, le=365)
    rules_offline_after_s: float = Field(default=600, gt=0)
    compliance_profiles_dir: DirectoryPath | None = None
    """A folder of the site's own compliance profiles (TOML, as coldtrail/compliance/profiles):
    they add to the built-in ones, or replace one with the same id."""
    rules_conformance_every_s: float = Field(default=3600, ge=0, le=7 * 86_400)
    """How often the rules worker checks each site against its compliance profile and keeps
    what it found (the conformance KPIs over time); 0: never."""
    """A sensor silent this long is offline (an alarm)."""
    rules_rapid_change_c_per_min: float = Field(default=1.0, gt=0)
    rules_rapid_change_min_span_s: float = Field(default=60.0, ge=0, le=900)
    """A rate of change is judged over at least this long: a probe's resolution step between
    readings seconds apart is no change of the room."""
    rules_battery_low_pct: float = Field(default=15.0, ge=0, le=100)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object a line (ts, level, logger, message), for log shippers."""

    @field_validator("database_url")
    @classmethod
    def _database_url_parses(cls, value: str | None) -> str | None:
        if not value:
            return value
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict

        try:
            parts = conninfo_to_dict(value)
        except ProgrammingError:  # its message quotes the URL, password and all: not shown
            raise ValueError(
                "not a libpq URL or connection string that libpq can read (a bracket, port or"
                " %-escape is off?)"
            ) from None
        ports = str(parts.get("port") or "").split(",")
        if not all(p.isdigit() and 0 < int(p) < 65536 for p in ports if p):
            raise ValueError("its port is not a number from 1 to 65535")
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key_strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        key = value.get_secret_value()
        _not_a_placeholder(key)
        if len(key) < 32:
            raise ValueError("must be at least 32 characters")
        if len(set(key)) < MIN_DISTINCT_KEY_CHARACTERS:
            raise ValueError(
                f"uses fewer than {MIN_DISTINCT_KEY_CHARACTERS} different characters: generate "
                "one (`openssl rand -base64 32`)"
            )
        return value

    @field_validator(
        "admin_password",
        "mqtt_ingest_password",
        "mqtt_outbox_password",
        "mqtt_api_password",
        "mqtt_admin_password",
    )
    @classmethod
    def _password_set_for_real(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        password = value.get_secret_value()
        _not_a_placeholder(password)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"must be at least {MIN_PASSWORD_LENGTH} characters")
        return value

    @field_validator("admin_password")
    @classmethod
    def _admin_password_policy(cls, value: SecretStr | None) -> SecretStr | None:
        # The account's policy, checked at start-up rather than when the account is made.
        problem = None if value is None else password_problem(value.get_secret_value(), "admin")
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("api_bind", "ingest_metrics_bind")
    @classmethod
    def _bind_is_host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"a bind address must be host:port, got {value!r}")
        return value

    @property
    def api_host(self) -> str:
        return self.api_bind.rpartition(":")[0].strip("[]")

    @property
    def api_port(self) -> int:
        return int(self.api_bind.rpartition(":")[2])

    @property
    def ingest_metrics_address(self) -> tuple[str, int] | None:
        if self.ingest_metrics_bind is None:
            return None
        host, _, port = self.ingest_metrics_bind.rpartition(":")
        return host.strip("[]"), int(port)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError("COLDTRAIL_DATABASE_URL is not set")
        return self.database_url

    def require_mqtt(self) -> MqttEndpoint:
        if not self.mqtt_url:
            raise ConfigError("COLDTRAIL_MQTT_URL is not set")
        return MqttEndpoint.parse(self.mqtt_url)


PLACEHOLDER = re.compile(r"change[-_ ]?me|replace[-_ ]?me|placeholder", re.IGNORECASE)
"""What an example file's values look like (deploy/env.example says ``change-me-...``)."""
MIN_DISTINCT_KEY_CHARACTERS = 12


def _not_a_placeholder(value: str) -> None:
    if PLACEHOLDER.search(value):
        raise ValueError(
            "still holds the example's placeholder: generate the secrets "
            "(`coldtrail env-init --out .env`, or `openssl rand -base64 32` each)"
        )


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings, turning pydantic's error into a :class:`ConfigError`: one
    line naming each setting and what is wrong, never the value (it may be a secret)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = validation_problems(exc, lambda loc: f"COLDTRAIL_{loc.upper()}")
        raise ConfigError(f"invalid settings: {problems}") from None
