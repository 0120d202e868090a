-- The time of the newest event fetched per stream, in Unix nanoseconds (UTC), kept with the
-- cursor. With `on_invalid_cursor = "reset"`, a stream whose saved cursor the API rejects
-- restarts from this time instead of losing its place.
ALTER TABLE streams ADD COLUMN last_event_ns INTEGER;
