-- Federation (DESIGN.md §7.5): the credentials a cluster's Foghorns present to their peers. One per
-- Foghorn instance (its secret lives in its data directory or configuration); only the SHA-256 is
-- stored, found by a short public lookup prefix like every other secret.

CREATE TABLE peer_credentials (
    id           TEXT PRIMARY KEY,
    cluster_id   TEXT NOT NULL REFERENCES clusters (id),
    lookup       TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL
);
CREATE INDEX peer_credentials_lookup ON peer_credentials (lookup);
