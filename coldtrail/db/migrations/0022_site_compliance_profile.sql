-- The compliance regime a site is held to (a profile of coldtrail/compliance by id); NULL:
-- the default, China's drug GSP. Changing it is in the audit trail like any change to a site.
ALTER TABLE sites ADD COLUMN compliance_profile text
    CHECK (compliance_profile ~ '^[a-z0-9][a-z0-9._-]{0,63}$');
