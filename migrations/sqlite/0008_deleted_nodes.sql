-- Nodes deleted by their cluster's owner or an operator. Inserting one raises the topology
-- counter; every Foghorn then reads the entries after the last one it saw and forgets those edges
-- at once, whichever cell serves their cluster: the session ends, the DNS records go.
CREATE TABLE deleted_nodes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id    TEXT NOT NULL,
    cluster_id TEXT NOT NULL,
    deleted_at BIGINT NOT NULL
);

CREATE TRIGGER deleted_nodes_topology AFTER INSERT ON deleted_nodes
    BEGIN UPDATE topology_version SET version = version + 1 WHERE id = 1; END;
