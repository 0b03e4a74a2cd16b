-- Score weights of a cluster, changed at runtime through the operator API and shared by all of the
-- cluster's replicas: JSON {"cpu","ram","bw","geo","bonus"}; NULL means the defaults.
ALTER TABLE clusters ADD COLUMN weights TEXT;
