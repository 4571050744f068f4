-- Tokens carry the generation of their user's tokens they were issued under; each request
-- and push stream checks it. A password change, a disable or a revocation moves it, and
-- every token issued before stops working at once.
ALTER TABLE users ADD COLUMN token_generation integer NOT NULL DEFAULT 0
    CHECK (token_generation >= 0);

-- Failed logins per user name and client address: five wrong passwords from one address
-- lock the name for that address only (nobody elsewhere can lock the administrator out),
-- and each lock-out in a row lasts twice as long as the one before. The counts are not a
-- record (each failure is in the audit trail), so the old per-name ones are dropped.
DROP TABLE login_failures;
CREATE TABLE login_failures (
    username      text NOT NULL,
    client        text NOT NULL,
    failures      integer NOT NULL CHECK (failures >= 0),
    lockouts      integer NOT NULL DEFAULT 0 CHECK (lockouts >= 0),
    last_failed   timestamptz NOT NULL,
    locked_until  timestamptz,
    PRIMARY KEY (username, client)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON login_failures TO coldtrail_app;
