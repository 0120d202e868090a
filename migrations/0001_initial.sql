-- The first schema: per-stream cursors, the outbox of fetched pages, per-sink delivery offsets.
-- Keys include the account name, so two accounts never share a cursor.

-- One row per (account, stream): the cursor to continue from, and the sequence number of the
-- newest page appended to the outbox. Sequence numbers only grow, also after pages are deleted,
-- so a sink's offset always means "everything up to here is delivered".
CREATE TABLE streams (
    account     TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    cursor      TEXT,
    last_seq    INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (account, stream)
) WITHOUT ROWID;

-- Fetched pages waiting for delivery. `events` is a JSON array of the events exactly as the API
-- sent them. A page is deleted in the same transaction as the last sink's acknowledgement.
CREATE TABLE outbox (
    account     TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    n_events    INTEGER NOT NULL,
    events      TEXT    NOT NULL,
    fetched_at  INTEGER NOT NULL,
    PRIMARY KEY (account, stream, seq)
) WITHOUT ROWID;

-- How far each sink has delivered each stream: every page with seq <= acked_seq is delivered.
CREATE TABLE sink_offsets (
    sink        TEXT    NOT NULL,
    account     TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    acked_seq   INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (sink, account, stream)
) WITHOUT ROWID;
