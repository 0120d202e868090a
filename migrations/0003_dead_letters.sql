-- Events a sink refused for good (a message too large for the receiver, an event a collector
-- rejects), kept with the reason instead of being dropped. Inserted in the transaction that
-- acknowledges their batch, so an event is either in the outbox, delivered, or here.
-- `queued` = 1: `dead-letters replay` asked for it to be delivered again; the sink's worker
-- sends it as a batch of its own and deletes it once delivered.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sink        TEXT    NOT NULL,
    account     TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    uuid        TEXT,
    event       TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    first_seen  INTEGER NOT NULL,
    queued      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX dead_letters_by_sink ON dead_letters (sink, account, stream, queued, id);
