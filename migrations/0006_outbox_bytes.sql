-- The size in bytes of each page's events, kept when the page is stored: the backlog's size is
-- then a sum over the pages' rows. length() of the TEXT column counts characters, which reads
-- every pending byte (seconds, under the store's lock, with hundreds of MB pending).
ALTER TABLE outbox ADD COLUMN n_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET n_bytes = length(CAST(events AS BLOB));
