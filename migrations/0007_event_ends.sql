-- Where each event of a page ends in its text (little-endian 32-bit byte offsets, one per
-- event), written with the page: a sink reads the events back as slices of the text instead
-- of parsing the JSON array again for every delivery. Pages kept before this column existed
-- have none and are parsed as before.
--
-- The column comes after `events` (ALTER TABLE can only append, and making the table again
-- would copy every pending page): only the delivery reads it, and that reads the events too.
ALTER TABLE outbox ADD COLUMN event_ends BLOB NOT NULL DEFAULT x'';
