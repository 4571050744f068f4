"""Ingest: MQTT telemetry -> readings, with COPY; acknowledged to the broker after commit.

Importable as ``coldtrail.ingest``. Public surface: :class:`coldtrail.ingest.worker.IngestWorker`.
"""
