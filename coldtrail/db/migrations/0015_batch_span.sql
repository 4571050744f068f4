-- The time span of each ingest batch's readings (measured times, first and last), so that
-- looking a batch's readings up by batch_id also bounds ts: on TimescaleDB only the chunks of
-- that span are read, instead of every chunk's index (and compressed chunk's metadata), a cost
-- that grew with the history. NULL for batches from before: looked up as before.
ALTER TABLE ingest_batches ADD COLUMN first_ts timestamptz, ADD COLUMN last_ts timestamptz;
