"""Grafana dashboards as code: the boards (``boards``), their Grafana JSON and macro
expansion (``grafana``), and pushing them to a server through grafana-client (``provision``)."""
