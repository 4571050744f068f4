-- Excursions judged by the time of measurement: readings that arrive late or out of order
-- revise the excursion they belong to instead of being judged in arrival order.

-- A location's alarm delay: a shorter stay out of range (a door opened) is not an excursion.
ALTER TABLE locations ADD COLUMN alarm_delay_s integer NOT NULL DEFAULT 0
    CHECK (alarm_delay_s >= 0);

CREATE TYPE excursion_state AS ENUM ('open', 'closed', 'withdrawn');

ALTER TABLE excursions
    ADD COLUMN state excursion_state,
    -- Found only well after it was confirmed: its readings came late (an edge backlog).
    ADD COLUMN late boolean NOT NULL DEFAULT false,
    ADD COLUMN last_seen_at timestamptz,       -- the last reading judged in it
    ADD COLUMN duration_s double precision,    -- start to end (or to the last reading if open)
    ADD COLUMN degree_minutes double precision,
    ADD COLUMN mkt_c double precision,
    ADD COLUMN readings integer,
    ADD COLUMN revision integer NOT NULL DEFAULT 0,
    ADD COLUMN revised_at timestamptz;
UPDATE excursions SET state = CASE WHEN ended_at IS NULL THEN 'open' ELSE 'closed' END::excursion_state,
    last_seen_at = coalesce(ended_at, started_at);
ALTER TABLE excursions ALTER COLUMN state SET NOT NULL,
    ALTER COLUMN state SET DEFAULT 'open',
    ADD CONSTRAINT excursions_open_has_no_end CHECK (state <> 'open' OR ended_at IS NULL),
    ADD CONSTRAINT excursions_closed_has_an_end CHECK (state <> 'closed' OR ended_at IS NOT NULL);

DROP INDEX excursions_one_open_per_sensor;
CREATE UNIQUE INDEX excursions_one_open_per_sensor ON excursions (sensor_id) WHERE state = 'open';
CREATE INDEX excursions_sensor_time ON excursions (sensor_id, started_at);
