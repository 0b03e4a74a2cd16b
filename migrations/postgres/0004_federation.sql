-- Federation (DESIGN.md §7.5): the credentials a cluster's Foghorns present to their peers, one per
-- (calling cluster, called cluster) pair, derived by each Foghorn from its own secret (kept in its
-- data directory or configuration). A credential is good only towards the cluster it was made for,
-- so a peer cannot replay it to a third cluster. Only the SHA-256 is stored, found by a short
-- public lookup prefix like every other secret.

CREATE TABLE peer_credentials (
    id           TEXT PRIMARY KEY,
    cluster_id   TEXT NOT NULL REFERENCES clusters (id),
    -- The cluster this credential is presented to.
    peer_cluster_id TEXT NOT NULL,
    lookup       TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL
);
CREATE INDEX peer_credentials_lookup ON peer_credentials (lookup);
