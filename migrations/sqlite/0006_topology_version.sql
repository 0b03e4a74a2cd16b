-- A counter that every change of the federation topology raises, whoever makes it: tenants'
-- official and preferred clusters, subscriptions, clusters (addresses, CAs, owners). Foghorn reads
-- it every `federation.topology_poll` and recomputes its peers when it moved; the periodic
-- reconciliation stays as the backstop.
CREATE TABLE topology_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO topology_version (id, version) VALUES (1, 0);

CREATE TRIGGER tenants_topology_insert AFTER INSERT ON tenants
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER tenants_topology_update AFTER UPDATE OF official_cluster_id, preferred_cluster_id ON tenants
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER tenants_topology_delete AFTER DELETE ON tenants
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER subscriptions_topology_insert AFTER INSERT ON subscriptions
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER subscriptions_topology_update AFTER UPDATE ON subscriptions
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER subscriptions_topology_delete AFTER DELETE ON subscriptions
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER clusters_topology_insert AFTER INSERT ON clusters
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER clusters_topology_update AFTER UPDATE ON clusters
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER clusters_topology_delete AFTER DELETE ON clusters
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
