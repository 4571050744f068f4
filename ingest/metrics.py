"""Prometheus metrics of one ingest worker, in a registry of its own (no process-wide
singletons: tests run several workers in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "coldtrail_ingest_messages",
            "MQTT messages taken, counted as their batch commits",
            registry=r,
        )
        self.stored = Counter(
            "coldtrail_ingest_readings_stored", "Readings committed to the database", registry=r
        )
        self.duplicates = Counter(
            "coldtrail_ingest_duplicates", "Readings skipped as already stored", registry=r
        )
        self.dead_letters = Counter(
            "coldtrail_ingest_dead_letters", "Payloads or readings dead-lettered", registry=r
        )
        self.kept_aside = Counter(
            "coldtrail_ingest_kept_aside",
            "Readings kept aside (quarantined_readings), by the rule that kept them",
            ("rule",),
            registry=r,
        )
        self.batch_readings = Histogram(
            "coldtrail_ingest_batch_readings",
            "Readings per committed batch",
            buckets=(1, 10, 100, 1_000, 5_000, 20_000, 100_000),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "coldtrail_ingest_commit_seconds",
            "Time to write and commit one batch, retries included",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=r,
        )
        self.lag_seconds = Histogram(
            "coldtrail_ingest_lag_seconds",
            "From a message's arrival at the worker to its acknowledgement after commit",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
            registry=r,
        )
        self.inbox = Gauge(
            "coldtrail_ingest_inbox_messages",
            "Messages received from the broker and not yet taken into a batch",
            registry=r,
        )
