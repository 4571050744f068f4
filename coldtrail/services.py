"""Building each service from settings: shared by the command line and the demo.

Each builder imports its own stage only when called: an edge gateway must not carry the API's
libraries in memory (the edge footprint benchmark measured 118 MB with them, in one process).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from coldtrail import mqtt
from coldtrail.clock import Clock
from coldtrail.errors import ConfigError
from coldtrail.settings import MqttEndpoint, Settings

if TYPE_CHECKING:
    from coldtrail.api.app import ApiConfig
    from coldtrail.edge.agent import EdgeAgent
    from coldtrail.erp.outbox import OutboxDispatcher
    from coldtrail.ingest.worker import IngestWorker
    from coldtrail.rules.conditions import Limits
    from coldtrail.rules.engine import RulesEngine
    from coldtrail.rules.notifiers import NotifierSettings


def mqtt_options(settings: Settings, url: str | None = None) -> mqtt.MqttOptions:
    endpoint = MqttEndpoint.parse(url) if url else settings.require_mqtt()
    return mqtt.MqttOptions(
        endpoint=endpoint, protocol=settings.mqtt_protocol, ca_file=settings.mqtt_ca_file
    )


def admin_mqtt_options(settings: Settings) -> mqtt.MqttOptions | None:
    """The broker as its ``coldtrail-admin`` account, if both are configured."""
    if settings.mqtt_url is None or settings.mqtt_admin_password is None:
        return None
    ep = settings.require_mqtt()
    admin = dataclasses.replace(
        ep, username="coldtrail-admin", password=settings.mqtt_admin_password.get_secret_value()
    )
    return mqtt.MqttOptions(endpoint=admin, protocol="5", ca_file=settings.mqtt_ca_file)


def ingest_worker(settings: Settings, client_id: str | None = None) -> IngestWorker:
    from coldtrail.ingest.worker import IngestWorker

    return IngestWorker(
        database_url=settings.require_database_url(),
        options=mqtt_options(settings),
        topic_root=settings.mqtt_topic_root,
        # Stable per host and process slot, so a restarted worker resumes its MQTT session.
        # `coldtrail-`: the broker binds every gateway to its own id, and no gateway may be
        # named so; a worker's session can't be taken over by one.
        client_id=client_id
        or f"coldtrail-ingest-{socket.gethostname()}-{os.getenv('INGEST_SLOT', '0')}",
        share_group=settings.ingest_share_group,
        batch_max_readings=settings.ingest_batch_max_readings,
        flush_s=settings.ingest_flush_s,
        max_payload_bytes=settings.ingest_max_payload_bytes,
        metrics_bind=settings.ingest_metrics_address,
    )


def rules_engine(settings: Settings) -> RulesEngine:
    from coldtrail.rules.engine import RulesEngine
    from coldtrail.rules.impact import CapaPolicy
    from coldtrail.rules.notifiers import build_notifiers

    return RulesEngine(
        settings.require_database_url(),
        limits=rules_limits(settings),
        capa=CapaPolicy(owner=settings.rules_capa_owner, due_days=settings.rules_capa_due_days),
        notifiers=build_notifiers(notifier_settings(settings)),
        conformance_every_s=settings.rules_conformance_every_s,
        profiles_dir=settings.compliance_profiles_dir,
    )


def rules_limits(settings: Settings) -> Limits:
    from coldtrail.rules.conditions import Limits

    return Limits(
        offline_after_s=settings.rules_offline_after_s,
        rapid_change_c_per_min=settings.rules_rapid_change_c_per_min,
        rapid_change_min_span_s=settings.rules_rapid_change_min_span_s,
        battery_low_pct=settings.rules_battery_low_pct,
    )


def notifier_settings(settings: Settings) -> NotifierSettings:
    from coldtrail.rules.notifiers import NotifierSettings

    smtp = settings.smtp_url.get_secret_value() if settings.smtp_url else None
    return NotifierSettings(smtp_url=smtp, smtp_from=settings.smtp_from)


def outbox_dispatcher(settings: Settings) -> OutboxDispatcher:
    from datetime import timedelta

    from coldtrail.erp.anchors import Anchorer, load_private
    from coldtrail.erp.outbox import OutboxDispatcher

    periodic = []
    if settings.anchor_key_file is not None and settings.anchor_every_s > 0:
        anchorer = Anchorer(load_private(settings.anchor_key_file), settings.anchor_every_s)
        periodic.append(anchorer.maybe)
    return OutboxDispatcher(
        settings.require_database_url(),
        dead_after=timedelta(days=settings.outbox_dead_after_days),
        periodic=periodic,
    )


def api_config(settings: Settings) -> ApiConfig:
    from coldtrail.api.app import ApiConfig

    if settings.secret_key is None:
        raise ConfigError("COLDTRAIL_SECRET_KEY is not set (32 characters or more)")
    return ApiConfig(
        database_url=settings.require_database_url(),
        secret_key=settings.secret_key.get_secret_value(),
        token_ttl_s=settings.token_ttl_s,
        admin_password=settings.admin_password.get_secret_value()
        if settings.admin_password
        else None,
        mqtt=mqtt_options(settings) if settings.mqtt_url else None,
        topic_root=settings.mqtt_topic_root,
        live_max_age_s=settings.live_max_age_s,
        records_at_once=settings.records_at_once,
        mqtt_admin=admin_mqtt_options(settings),
        profiles_dir=settings.compliance_profiles_dir,
    )


def edge_agent(settings: Settings, config_path: Path, clock: Clock) -> EdgeAgent:
    from coldtrail.edge.agent import EdgeAgent
    from coldtrail.edge.config import load_config

    cfg = load_config(config_path)
    return EdgeAgent(cfg, mqtt_options(settings, cfg.mqtt_url), settings.mqtt_topic_root, clock)
