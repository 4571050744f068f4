-- Readings in a hash chain of their own (coldtrail.readingchain says what a link covers).
-- Ingest links each batch in the transaction that stores it; `audit verify` recomputes every
-- link from the rows, so a reading changed, removed or added by someone who can switch the
-- triggers off is found, and names its batch, sensor and seq.
CREATE TABLE reading_chain (
    link          bigint PRIMARY KEY,            -- 1, 2, ... in commit order
    batch_id      bigint NOT NULL UNIQUE,
    readings      integer NOT NULL,
    body          bytea NOT NULL,                -- SHA-256 over the batch's canonical lines
    fingerprints  bytea NOT NULL,                -- 8 bytes a reading, in the lines' order
    prev_hash     bytea NOT NULL,
    hash          bytea NOT NULL,                -- SHA-256(prev_hash || body)
    at            timestamptz NOT NULL
);
CREATE INDEX reading_chain_at ON reading_chain (at);

CREATE TABLE reading_chain_head (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    link       bigint NOT NULL,
    hash       bytea NOT NULL
);
INSERT INTO reading_chain_head (link, hash) VALUES (0, '\x0000000000000000000000000000000000000000000000000000000000000000');

CREATE TRIGGER reading_chain_append_only BEFORE UPDATE OR DELETE ON reading_chain
    FOR EACH ROW EXECUTE FUNCTION coldtrail_append_only();
CREATE TRIGGER reading_chain_no_truncate BEFORE TRUNCATE ON reading_chain
    FOR EACH STATEMENT EXECUTE FUNCTION coldtrail_append_only();
CREATE TRIGGER reading_chain_head_no_delete BEFORE DELETE ON reading_chain_head
    FOR EACH ROW EXECUTE FUNCTION coldtrail_append_only();

-- The link of one batch, called last in its transaction: the head's row lock orders writers
-- by commit (held only from here to COMMIT), so links follow one another as batches commit.
-- SECURITY DEFINER: the application's roles write the chain only through here.
CREATE FUNCTION coldtrail_link_readings(batch bigint, n integer, body bytea, fps bytea)
RETURNS bytea LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    head reading_chain_head;
    h bytea;
BEGIN
    IF octet_length(body) <> 32 OR octet_length(fps) <> 8 * n OR n < 1 THEN
        RAISE EXCEPTION 'a link needs a 32-byte body and 8 bytes of fingerprint a reading'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO head FROM reading_chain_head FOR UPDATE;
    h := sha256(head.hash || body);
    INSERT INTO reading_chain (link, batch_id, readings, body, fingerprints, prev_hash, hash, at)
    VALUES (head.link + 1, batch, n, body, fps, head.hash, h, clock_timestamp());
    UPDATE reading_chain_head SET link = head.link + 1, hash = h;
    RETURN h;
END $$;

-- Text as COPY's text format writes it: backslash, and the control characters it names.
CREATE FUNCTION coldtrail_copy_text(t text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT replace(replace(replace(replace(replace(replace(replace(t,
        E'\\', E'\\\\'), chr(8), E'\\b'), chr(12), E'\\f'), chr(10), E'\\n'),
        chr(13), E'\\r'), chr(9), E'\\t'), chr(11), E'\\v')
$$;

-- A reading's canonical line: as COPY ... TO STDOUT prints the row in the canonical session
-- (readingchain.SESSION, which the caller sets), text escaped as COPY escapes it: the links of
-- the readings stored before this migration are made with it, below. Scalar arguments, not
-- the row type: the function outlives readings being rebuilt (db to-timescaledb).
CREATE FUNCTION coldtrail_reading_line(
    sensor_id text, seq bigint, ts timestamptz, gateway text, status reading_status,
    clock clock_state, temperature_c float8, humidity_pct float8, battery_pct float8,
    latitude float8, longitude float8, speed_kmh float8, door_open boolean,
    received_at timestamptz
) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT concat_ws(E'\t', coldtrail_copy_text(sensor_id), seq, ts,
        coldtrail_copy_text(gateway), status, clock,
        coalesce(temperature_c::text, '\N'), coalesce(humidity_pct::text, '\N'),
        coalesce(battery_pct::text, '\N'), coalesce(latitude::text, '\N'),
        coalesce(longitude::text, '\N'), coalesce(speed_kmh::text, '\N'),
        CASE door_open WHEN true THEN 't' WHEN false THEN 'f' ELSE '\N' END,
        received_at)
$$;

-- The readings stored so far: one link per batch, in the order the batches committed. Each
-- reading's canonical line is written here as COPY ... TO STDOUT prints it in the canonical
-- session (readingchain.SESSION), set for this block and restored after it.
DO $$
DECLARE
    b record;
    n integer;
    body bytea;
    fps bytea;
    zone text := current_setting('TimeZone');
    style text := current_setting('DateStyle');
    digits text := current_setting('extra_float_digits');
BEGIN
    PERFORM set_config('TimeZone', 'UTC', true);
    PERFORM set_config('DateStyle', 'ISO, YMD', true);
    PERFORM set_config('extra_float_digits', '1', true);
    FOR b IN
        SELECT r.batch_id AS id
        FROM (SELECT DISTINCT batch_id FROM readings) r
        LEFT JOIN ingest_batches ib ON ib.id = r.batch_id
        ORDER BY ib.committed_at NULLS FIRST, r.batch_id
    LOOP
        SELECT count(*),
               sha256(convert_to(b.id || E'\n' || count(*) || E'\n'
                                 || string_agg(l || E'\n', '' ORDER BY l COLLATE "C"), 'UTF8')),
               string_agg(substr(sha256(convert_to(l, 'UTF8')), 1, 8), ''::bytea
                          ORDER BY l COLLATE "C")
        INTO n, body, fps
        FROM (
            SELECT coldtrail_reading_line(r.sensor_id, r.seq, r.ts, r.gateway, r.status,
                r.clock, r.temperature_c, r.humidity_pct, r.battery_pct, r.latitude,
                r.longitude, r.speed_kmh, r.door_open, r.received_at) AS l
            FROM readings r WHERE r.batch_id = b.id
        ) x;
        PERFORM coldtrail_link_readings(b.id, n, body, fps);
    END LOOP;
    PERFORM set_config('TimeZone', zone, true);
    PERFORM set_config('DateStyle', style, true);
    PERFORM set_config('extra_float_digits', digits, true);
END $$;

REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON reading_chain, reading_chain_head FROM coldtrail_app;
GRANT SELECT ON reading_chain, reading_chain_head TO coldtrail_app, coldtrail_readonly;
