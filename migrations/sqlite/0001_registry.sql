-- Registry, first cut (SQLite twin of migrations/postgres/0001_registry.sql: same tables and
-- columns; INTEGER and REAL are SQLite's names for BIGINT and DOUBLE PRECISION).

CREATE TABLE clusters (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    region             TEXT NOT NULL DEFAULT '',
    latitude           REAL,
    longitude          REAL,
    tier               TEXT NOT NULL,
    pricing_model      TEXT NOT NULL,
    price_cents        INTEGER NOT NULL DEFAULT 0,
    visibility         TEXT NOT NULL DEFAULT 'public',
    requires_approval  INTEGER NOT NULL DEFAULT 0,
    -- No foreign key: tenants reference clusters too, and SQLite cannot add one afterwards.
    owner_tenant_id    TEXT,
    official_for_tiers TEXT NOT NULL DEFAULT '',
    grpc_addr          TEXT NOT NULL DEFAULT '',
    http_url           TEXT NOT NULL DEFAULT '',
    max_edges          INTEGER,
    max_bandwidth_bps  INTEGER,
    created_at         INTEGER NOT NULL
);

CREATE TABLE tenants (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    billing_tier         TEXT NOT NULL DEFAULT 'free',
    official_cluster_id  TEXT NOT NULL REFERENCES clusters (id),
    preferred_cluster_id TEXT REFERENCES clusters (id),
    created_at           INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    role         TEXT NOT NULL,
    lookup       TEXT NOT NULL,
    token_hash   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX api_tokens_lookup ON api_tokens (lookup);

CREATE TABLE enrollment_tokens (
    id            TEXT PRIMARY KEY,
    cluster_id    TEXT NOT NULL REFERENCES clusters (id),
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    lookup        TEXT NOT NULL,
    token_hash    TEXT NOT NULL,
    usage_limit   INTEGER NOT NULL,
    usage_count   INTEGER NOT NULL DEFAULT 0,
    expires_at    INTEGER NOT NULL,
    expected_cidr TEXT,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX enrollment_tokens_lookup ON enrollment_tokens (lookup);

CREATE TABLE nodes (
    node_id             TEXT PRIMARY KEY,
    cluster_id          TEXT NOT NULL REFERENCES clusters (id),
    owner_tenant_id     TEXT REFERENCES tenants (id),
    status              TEXT NOT NULL,
    external_ip         TEXT,
    host_fingerprint    TEXT NOT NULL DEFAULT '',
    credential_hash     TEXT,
    capabilities        TEXT NOT NULL DEFAULT '',
    public_base_url     TEXT NOT NULL DEFAULT '',
    cpu_cores           INTEGER NOT NULL DEFAULT 0,
    ram_bytes           INTEGER NOT NULL DEFAULT 0,
    disk_bytes          INTEGER NOT NULL DEFAULT 0,
    enrollment_token_id TEXT REFERENCES enrollment_tokens (id),
    enrolled_at         INTEGER,
    last_seen_at        INTEGER,
    created_at          INTEGER NOT NULL
);
CREATE INDEX nodes_cluster ON nodes (cluster_id);

CREATE TABLE streams (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    name            TEXT NOT NULL,
    key_lookup      TEXT NOT NULL,
    key_hash        TEXT NOT NULL,
    playback_id     TEXT NOT NULL UNIQUE,
    internal_name   TEXT NOT NULL UNIQUE,
    live_cluster_id TEXT REFERENCES clusters (id),
    live_node_id    TEXT REFERENCES nodes (node_id),
    live_since      INTEGER,
    created_at      INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX streams_key_lookup ON streams (key_lookup);
