-- ACME (DNS-01) state that every replica and every restart finds (issue 21): the account per
-- directory, each cluster's certificate (its key sealed with a key derived from the cell's
-- secret), and the challenge values being validated. A change of a certificate or of the
-- challenges raises the topology counter, so every Foghorn installs or serves it within a poll.
CREATE TABLE acme_accounts (
    directory   TEXT PRIMARY KEY,
    credentials TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE acme_certificates (
    cluster_id     TEXT PRIMARY KEY,
    cert_chain_pem TEXT NOT NULL,
    key_sealed     TEXT NOT NULL,
    not_after      BIGINT NOT NULL,
    issued_at      BIGINT NOT NULL
);

CREATE TABLE acme_challenges (
    cluster_id TEXT NOT NULL,
    value      TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (cluster_id, value)
);

CREATE TRIGGER acme_certificates_topology_insert AFTER INSERT ON acme_certificates
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER acme_certificates_topology_update AFTER UPDATE ON acme_certificates
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER acme_certificates_topology_delete AFTER DELETE ON acme_certificates
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER acme_challenges_topology_insert AFTER INSERT ON acme_challenges
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER acme_challenges_topology_delete AFTER DELETE ON acme_challenges
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
