-- MistServer instances added with the balancer's `?addserver=` (MistUtilLoad's API), by the name
-- given there (`host[:port][/bandwidth]`). The leading Foghorn of the cluster polls them; the list
-- outlives restarts.
CREATE TABLE mist_servers (
    cluster_id TEXT NOT NULL,
    name       TEXT NOT NULL,
    added_at   BIGINT NOT NULL,
    PRIMARY KEY (cluster_id, name)
);
