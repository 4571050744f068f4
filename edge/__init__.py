"""Edge agent: polls loggers, queues every reading, publishes batches to MQTT (QoS 1).

Importable as ``coldtrail.edge``. Public surface: :class:`coldtrail.edge.agent.EdgeAgent`,
:func:`coldtrail.edge.config.load_config`, the source registry in ``coldtrail.edge.sources``.
"""
