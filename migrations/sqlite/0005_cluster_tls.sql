-- The CA that signs each cluster's Foghorn certificate (PEM; empty: a public CA), published by the
-- cluster's Foghorns at start and whenever it changes, so that peers dialing them over TLS know
-- what to trust without any other channel.
ALTER TABLE clusters ADD COLUMN tls_ca_pem TEXT NOT NULL DEFAULT '';
