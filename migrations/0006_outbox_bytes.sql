-- The outbox made again, for two reasons measured with hundreds of MB pending:
--
-- 1. It was a WITHOUT ROWID table. There the whole row is the key of one b-tree, so walking
--    the pages of a stream (counting them, summing their sizes, finding the next to deliver)
--    reads every byte of every page: 80 ms for 300 pages of 600 KB. As an ordinary table its
--    primary key is a small index beside the rows, and the same walk reads none of the events.
-- 2. The size of each page's events in bytes is kept with it (n_bytes), so the backlog's size
--    is a sum of a column, not length() of the text, which read every pending byte too.
--
-- Every small column comes before `events`: SQLite reads a row's columns in order, and one
-- after a page's text would be reached only through its overflow pages.
CREATE TABLE outbox_new (
    account     TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    n_events    INTEGER NOT NULL,
    n_bytes     INTEGER NOT NULL,
    fetched_at  INTEGER NOT NULL,
    events      TEXT    NOT NULL,
    PRIMARY KEY (account, stream, seq)
);
INSERT INTO outbox_new (account, stream, seq, n_events, n_bytes, fetched_at, events)
    SELECT account, stream, seq, n_events, length(CAST(events AS BLOB)), fetched_at, events
    FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
