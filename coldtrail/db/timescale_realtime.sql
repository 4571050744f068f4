-- Real-time aggregation: the rollups add the readings their last refresh has not yet
-- materialised, at query time. TimescaleDB creates continuous aggregates materialised-only
-- since 2.13, so without this the dashboards' 5-minute and hourly views stayed empty until
-- the refresh policy ran (a demo saw none in 130 s) and always lagged it.
ALTER MATERIALIZED VIEW readings_5m SET (timescaledb.materialized_only = false);
ALTER MATERIALIZED VIEW readings_1h SET (timescaledb.materialized_only = false);
