"""Tables of the state store (the same DDL runs on SQLite and PostgreSQL).

Every statement is ``IF NOT EXISTS`` and runs each time a store is opened, so an index added
here is built on existing stores too (once, when a process of the new release opens it).
``ingestions_ended`` and ``stream_reports_end`` serve ``/metrics`` (records that ended since
its last scrape); ``ingestions_tenant_ended`` covers the dashboard's batch figures (ranges
of one tenant's records by outcome and end time, without reading the table).
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS ingestions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    app TEXT,
    content_key TEXT,
    bytes BIGINT NOT NULL DEFAULT 0,
    rows_in BIGINT NOT NULL DEFAULT 0,
    rows_loaded BIGINT NOT NULL DEFAULT 0,
    rows_rejected BIGINT NOT NULL DEFAULT 0,
    messages BIGINT NOT NULL DEFAULT 0,
    started_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION,
    read_secs DOUBLE PRECISION NOT NULL DEFAULT 0,
    app_secs DOUBLE PRECISION NOT NULL DEFAULT 0,
    write_secs DOUBLE PRECISION NOT NULL DEFAULT 0,
    latency_p50_ms DOUBLE PRECISION,
    latency_p99_ms DOUBLE PRECISION,
    outcome TEXT NOT NULL,
    reason TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    quota_day TEXT,
    sandbox TEXT,
    decompressed_bytes BIGINT
);
CREATE INDEX IF NOT EXISTS ingestions_tenant_started ON ingestions (tenant, started_at);
CREATE INDEX IF NOT EXISTS ingestions_outcome ON ingestions (outcome);
CREATE INDEX IF NOT EXISTS ingestions_ended ON ingestions (ended_at);
CREATE INDEX IF NOT EXISTS ingestions_tenant_ended ON ingestions
    (tenant, kind, outcome, ended_at, started_at, rows_loaded, rows_rejected, bytes);
CREATE TABLE IF NOT EXISTS quota_usage (
    tenant TEXT NOT NULL,
    day TEXT NOT NULL,
    files BIGINT NOT NULL DEFAULT 0,
    bytes BIGINT NOT NULL DEFAULT 0,
    messages BIGINT NOT NULL DEFAULT 0,
    stream_bytes BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, day)
);
CREATE TABLE IF NOT EXISTS stream_reports (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    app TEXT NOT NULL,
    instance TEXT NOT NULL,
    window_start DOUBLE PRECISION NOT NULL,
    window_end DOUBLE PRECISION NOT NULL,
    messages BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    rows_loaded BIGINT NOT NULL,
    rows_rejected BIGINT NOT NULL,
    latency_mean_ms DOUBLE PRECISION,
    latency_p99_ms DOUBLE PRECISION,
    backlog BIGINT NOT NULL,
    sandbox TEXT
);
CREATE INDEX IF NOT EXISTS stream_reports_tenant ON stream_reports (tenant, app, window_end);
CREATE INDEX IF NOT EXISTS stream_reports_end ON stream_reports (window_end);
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    tenant TEXT NOT NULL,
    app TEXT,
    action TEXT NOT NULL,
    instances_before INTEGER,
    instances_after INTEGER,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_tenant ON decisions (tenant, at);
CREATE TABLE IF NOT EXISTS stream_desired (
    tenant TEXT NOT NULL,
    app TEXT NOT NULL,
    instances INTEGER NOT NULL,
    paused_reason TEXT,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, app)
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    key_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
)
"""

#: (table, column, type) added after a table was first released
ADDED_COLUMNS = [("ingestions", "sandbox", "TEXT"), ("stream_reports", "sandbox", "TEXT"),
                 ("ingestions", "decompressed_bytes", "BIGINT"),
                 ("ingestions", "rows_updated", "BIGINT NOT NULL DEFAULT 0"),
                 ("ingestions", "work_started_at", "DOUBLE PRECISION"),
                 ("ingestions", "sinks", "TEXT"),
                 # quality metadata, JSON: see simbdp.quality.stats
                 ("ingestions", "quality", "TEXT"), ("stream_reports", "quality", "TEXT"),
                 # a stream report's state per sink, JSON: see simbdp.stream.window.SinkWindow
                 ("stream_reports", "sinks", "TEXT")]
