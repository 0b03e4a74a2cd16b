-- Registry, first cut: clusters, tenants, API tokens, enrollment tokens, nodes, streams.
-- Portable types on purpose: TEXT, BIGINT, DOUBLE PRECISION only (times are Unix milliseconds,
-- flags are 0/1), so the SQLite twin of this file decodes to the same Rust types.

CREATE TABLE clusters (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    region             TEXT NOT NULL DEFAULT '',
    latitude           DOUBLE PRECISION,
    longitude          DOUBLE PRECISION,
    tier               TEXT NOT NULL,
    pricing_model      TEXT NOT NULL,
    price_cents        BIGINT NOT NULL DEFAULT 0,
    visibility         TEXT NOT NULL DEFAULT 'public',
    requires_approval  BIGINT NOT NULL DEFAULT 0,
    -- No foreign key: tenants reference clusters too, and SQLite cannot add one afterwards.
    owner_tenant_id    TEXT,
    official_for_tiers TEXT NOT NULL DEFAULT '',
    grpc_addr          TEXT NOT NULL DEFAULT '',
    http_url           TEXT NOT NULL DEFAULT '',
    max_edges          BIGINT,
    max_bandwidth_bps  BIGINT,
    created_at         BIGINT NOT NULL
);

CREATE TABLE tenants (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    billing_tier         TEXT NOT NULL DEFAULT 'free',
    official_cluster_id  TEXT NOT NULL REFERENCES clusters (id),
    preferred_cluster_id TEXT REFERENCES clusters (id),
    created_at           BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    role         TEXT NOT NULL,
    lookup       TEXT NOT NULL,
    token_hash   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_tokens_lookup ON api_tokens (lookup);

CREATE TABLE enrollment_tokens (
    id            TEXT PRIMARY KEY,
    cluster_id    TEXT NOT NULL REFERENCES clusters (id),
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    lookup        TEXT NOT NULL,
    token_hash    TEXT NOT NULL,
    usage_limit   BIGINT NOT NULL,
    usage_count   BIGINT NOT NULL DEFAULT 0,
    expires_at    BIGINT NOT NULL,
    expected_cidr TEXT,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
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
    cpu_cores           BIGINT NOT NULL DEFAULT 0,
    ram_bytes           BIGINT NOT NULL DEFAULT 0,
    disk_bytes          BIGINT NOT NULL DEFAULT 0,
    enrollment_token_id TEXT REFERENCES enrollment_tokens (id),
    enrolled_at         BIGINT,
    last_seen_at        BIGINT,
    created_at          BIGINT NOT NULL
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
    live_since      BIGINT,
    created_at      BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX streams_key_lookup ON streams (key_lookup);
