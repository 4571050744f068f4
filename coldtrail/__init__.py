"""ColdTrail: cold-chain telemetry from logger to auditor.

Data flows one way: device -> edge -> MQTT -> ingest -> database -> rules -> ERP/API.
This package root holds what the stages share: settings, the message schema, the
database schema and small utilities. Each stage is a subpackage (linked in from the
top-level folder of the same name).
"""

__version__ = "0.1.0"
