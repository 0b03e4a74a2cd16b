-- A counter that every change of the federation topology raises, whoever makes it (a Foghorn of
-- any cluster, an operator in psql): tenants' official and preferred clusters, subscriptions,
-- clusters (addresses, CAs, owners). Every Foghorn reads it every `federation.topology_poll` and
-- recomputes its peers when it moved; the periodic reconciliation stays as the backstop.
CREATE TABLE topology_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO topology_version (id, version) VALUES (1, 0);

CREATE FUNCTION foghorn_topology_changed() RETURNS trigger AS $$
BEGIN
    UPDATE topology_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER tenants_topology
    AFTER INSERT OR DELETE OR UPDATE OF official_cluster_id, preferred_cluster_id ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION foghorn_topology_changed();
CREATE TRIGGER subscriptions_topology
    AFTER INSERT OR UPDATE OR DELETE ON subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION foghorn_topology_changed();
CREATE TRIGGER clusters_topology
    AFTER INSERT OR UPDATE OR DELETE ON clusters
    FOR EACH STATEMENT EXECUTE FUNCTION foghorn_topology_changed();
