-- What a sink keeps across restarts besides its offsets: Splunk HEC's request channel (a GUID
-- that must stay the same for the sink's indexer acknowledgements to be asked on it).
CREATE TABLE sink_settings (
    sink   TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (sink, key)
);
