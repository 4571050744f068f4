"""The REST API (FastAPI) for logistics, QA and auditors.

Importable as ``coldtrail.api``. Public surface: :func:`coldtrail.api.app.create_app`.
"""
