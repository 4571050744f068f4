-- The edge marks readings taken while its clock could not be trusted (no NTP sync, or a time
-- that can't be right): the record keeps the mark beside the value.
CREATE TYPE clock_state AS ENUM ('ok', 'unsynced', 'implausible');
ALTER TABLE readings ADD COLUMN clock clock_state NOT NULL DEFAULT 'ok';
ALTER TABLE sensor_latest ADD COLUMN clock clock_state NOT NULL DEFAULT 'ok';
