-- Cells: a Foghorn deployment (one or more replicas sharing one Redis) is named by its home
-- cluster and serves it plus every cluster assigned to it (`clusters.cell_id`). The leading
-- replica of each cell writes its row every `cluster.report_interval`; a cell not heard from for
-- 30 s gets no new cluster. No topology trigger here: these rows change every few seconds.
CREATE TABLE cells (
    id            TEXT PRIMARY KEY REFERENCES clusters (id),
    -- 1 when the cell takes tenants' private clusters (0: a dedicated cluster's own Foghorn).
    hosts_private BIGINT NOT NULL,
    -- Edges connected to the cell, over every cluster it serves.
    edges         BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);

-- The cell serving a cluster that has no Foghorn of its own; NULL for a cell's home cluster (and
-- for clusters created before cells, served by a Foghorn of their own id).
ALTER TABLE clusters ADD COLUMN cell_id TEXT;
CREATE INDEX clusters_cell ON clusters (cell_id);
