-- The console's language is the person's, wherever they sign in: chosen once, kept here (a
-- change is in the audit trail like any other); NULL until they choose.
ALTER TABLE users ADD COLUMN language text CHECK (language IN ('en', 'zh'));
