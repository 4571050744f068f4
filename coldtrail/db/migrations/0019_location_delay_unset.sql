-- A location's alarm delay is unset unless someone sets it: the delays of the products stored
-- there then apply (the shortest, as for ranges). Before, every location defaulted to 0,
-- and since the shortest delay wins, no product's delay ever applied: in the demo the 2-8 °C
-- profile said 120 s, yet the first 8.1 °C reading held both insulin lots. A 0 written by
-- that default is taken as unset; this update is in the audit trail like any other.
ALTER TABLE locations ALTER COLUMN alarm_delay_s DROP NOT NULL,
                      ALTER COLUMN alarm_delay_s DROP DEFAULT;
UPDATE locations SET alarm_delay_s = NULL WHERE alarm_delay_s = 0;
