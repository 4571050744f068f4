"""ERP core: master data (sites, locations, sensors and where they are), and later lots,
movements, shipments, holds, CAPA and the audit trail.

Importable as ``coldtrail.erp``.
"""
