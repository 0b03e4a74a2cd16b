-- Marketplace: subscriptions, invites, pre-registered node ids, cluster descriptions and the
-- utilization each cluster's Foghorn publishes for the others to show.

ALTER TABLE clusters ADD COLUMN description TEXT NOT NULL DEFAULT '';

CREATE TABLE subscriptions (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    cluster_id   TEXT NOT NULL REFERENCES clusters (id),
    -- pending | active | rejected | cancelled; only active counts as subscribed.
    status       TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    decided_at   BIGINT,
    -- Tenant of the token that approved, rejected or cancelled.
    decided_by   TEXT,
    invite_id    TEXT,
    PRIMARY KEY (tenant_id, cluster_id)
);
CREATE INDEX subscriptions_cluster ON subscriptions (cluster_id, status);

CREATE TABLE cluster_invites (
    id                TEXT PRIMARY KEY,
    cluster_id        TEXT NOT NULL REFERENCES clusters (id),
    -- Bound invites work for this tenant only (and show it the cluster); NULL: whoever holds it.
    -- No foreign key: binding to an unknown tenant must look like binding to a known one, so
    -- invites cannot be used to probe which tenant ids exist.
    invited_tenant_id TEXT,
    lookup            TEXT NOT NULL,
    token_hash        TEXT NOT NULL,
    created_by        TEXT NOT NULL,
    expires_at        BIGINT NOT NULL,
    -- open | used | revoked
    status            TEXT NOT NULL,
    used_by           TEXT,
    used_at           BIGINT,
    created_at        BIGINT NOT NULL
);
CREATE INDEX cluster_invites_lookup ON cluster_invites (lookup);
CREATE INDEX cluster_invites_cluster ON cluster_invites (cluster_id);

-- A node id handed out by PreRegisterEdge, held for the token that asked until the node enrolls.
CREATE TABLE node_reservations (
    node_id             TEXT PRIMARY KEY,
    cluster_id          TEXT NOT NULL REFERENCES clusters (id),
    enrollment_token_id TEXT NOT NULL REFERENCES enrollment_tokens (id),
    external_ip         TEXT,
    -- Hash of the host's machine-id as the provisioning CLI read it; same token and fingerprint
    -- answer the same reservation.
    host_fingerprint    TEXT,
    created_at          BIGINT NOT NULL
);

-- Written by each cluster's leading Foghorn every few seconds from its live edge state.
CREATE TABLE cluster_utilization (
    cluster_id     TEXT PRIMARY KEY REFERENCES clusters (id),
    edges          BIGINT NOT NULL,
    healthy_edges  BIGINT NOT NULL,
    -- Bytes per second, summed over the healthy edges.
    bw_used        BIGINT NOT NULL,
    bw_limit       BIGINT NOT NULL,
    viewers        BIGINT NOT NULL,
    reported_at    BIGINT NOT NULL
);
