//! What types alone cannot check: ranges, pairs of keys that go together, labels, URL schemes,
//! proxy networks. Each refusal names its key and says what would be accepted.

use std::time::Duration;

use super::Config;

impl Config {
    /// Checks what types alone cannot; returns the offending key and why.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if !is_valid_label(&self.cluster.id) {
            return Err((
                "cluster.id",
                format!(
                    "{:?} is not a valid cluster id (lowercase [a-z0-9][a-z0-9-]{{0,62}})",
                    self.cluster.id
                ),
            ));
        }
        let root = &self.cluster.root_domain;
        if root.is_empty() || !root.split('.').all(is_valid_label) {
            return Err((
                "cluster.root_domain",
                format!("{root:?} is not a valid DNS name of lowercase labels"),
            ));
        }
        let url = &self.database.url;
        let known = ["postgres://", "postgresql://", "sqlite:"];
        if !(url.is_empty() || known.iter().any(|k| url.starts_with(k))) {
            return Err((
                "database.url",
                format!("{url:?} must start with postgres://, postgresql:// or sqlite:"),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(("database.max_connections", "must be at least 1".into()));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(300))
            .contains(&self.cluster.report_interval)
        {
            return Err(("cluster.report_interval", "must be from 100ms to 5m".into()));
        }
        // A stopped leader is replaced within 1.2 × the TTL, which must stay under 15 s.
        if !(Duration::from_millis(500)..=Duration::from_secs(12)).contains(&self.redis.leader_ttl)
        {
            return Err(("redis.leader_ttl", "must be from 500ms to 12s".into()));
        }
        let redis = &self.redis.url;
        if !(redis.is_empty() || redis.starts_with("redis://") || redis.starts_with("rediss://")) {
            return Err((
                "redis.url",
                format!("{redis:?} must start with redis:// or rediss:// (or be empty)"),
            ));
        }
        if self.edges.stats_interval < Duration::from_millis(100)
            || self.edges.stats_interval > Duration::from_secs(300)
        {
            return Err((
                "edges.stats_interval",
                "must be between 100ms and 5m".into(),
            ));
        }
        if self.edges.liveness_intervals == 0 {
            return Err(("edges.liveness_intervals", "must be at least 1".into()));
        }
        if self.edges.pending_ttl < Duration::from_secs(1)
            || self.edges.pending_ttl > Duration::from_secs(600)
        {
            return Err(("edges.pending_ttl", "must be between 1s and 10m".into()));
        }
        if self.edges.max_message_bytes < 1024 {
            return Err(("edges.max_message_bytes", "must be at least 1024".into()));
        }
        if self.edges.max_string_bytes < 64 {
            return Err(("edges.max_string_bytes", "must be at least 64".into()));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err((
                "log.filter",
                format!("{:?} is not a valid filter: {e}", self.log.filter),
            ));
        }
        for cidr in &self.viewers.trusted_proxies {
            if parse_proxy(cidr).is_none() {
                return Err((
                    "viewers.trusted_proxies",
                    format!("{cidr:?} is not an IP address or CIDR"),
                ));
            }
        }
        let f = &self.federation;
        if !(f.credential.is_empty()
            || crate::secret::lookup_prefix(
                crate::secret::SecretKind::PeerCredential,
                &f.credential,
            )
            .is_some())
        {
            return Err((
                "federation.credential",
                "must be fpc_ followed by 48 hex characters (or empty)".into(),
            ));
        }
        if !(f.advertise_grpc.is_empty()
            || f.advertise_grpc.starts_with("http://")
            || f.advertise_grpc.starts_with("https://"))
        {
            return Err((
                "federation.advertise_grpc",
                "must start with http:// or https:// (or be empty)".into(),
            ));
        }
        let secs = Duration::from_secs;
        for (key, value, range) in [
            (
                "federation.summary_interval",
                f.summary_interval,
                Duration::from_millis(100)..=secs(300),
            ),
            (
                "federation.heartbeat_interval",
                f.heartbeat_interval,
                Duration::from_millis(100)..=secs(300),
            ),
            (
                "federation.summary_ttl",
                f.summary_ttl,
                f.summary_interval..=secs(3600),
            ),
            (
                "federation.heartbeat_ttl",
                f.heartbeat_ttl,
                f.heartbeat_interval..=secs(3600),
            ),
            (
                "federation.reconcile_interval",
                f.reconcile_interval,
                Duration::from_millis(100)..=secs(86400),
            ),
            (
                "federation.rpc_timeout",
                f.rpc_timeout,
                Duration::from_millis(50)..=secs(60),
            ),
            (
                "federation.reconnect_max",
                f.reconnect_max,
                Duration::from_millis(100)..=secs(600),
            ),
        ] {
            if !range.contains(&value) {
                return Err((
                    key,
                    format!(
                        "must be from {} to {}",
                        humantime::format_duration(*range.start()),
                        humantime::format_duration(*range.end())
                    ),
                ));
            }
        }
        let tls = &self.tls;
        if tls.cert_path.is_empty() != tls.key_path.is_empty() {
            return Err((
                if tls.cert_path.is_empty() { "tls.cert_path" } else { "tls.key_path" },
                "tls.cert_path and tls.key_path go together: set both, or neither for a development certificate".into(),
            ));
        }
        // A 90-day development certificate renewed 60 days ahead is renewed at every check.
        if tls.renew_before > secs(60 * 86_400) {
            return Err(("tls.renew_before", "must be at most 60d".into()));
        }
        if !(Duration::from_millis(100)..=secs(86_400)).contains(&tls.check_interval) {
            return Err(("tls.check_interval", "must be from 100ms to 1day".into()));
        }
        // Otherwise a development certificate could expire between two checks.
        if tls.renew_before < tls.check_interval {
            return Err((
                "tls.renew_before",
                "must be at least tls.check_interval".into(),
            ));
        }
        let server = &self.server;
        if server.max_body_bytes < 1024 {
            return Err(("server.max_body_bytes", "must be at least 1024".into()));
        }
        if !(Duration::from_millis(100)..=secs(3600)).contains(&server.body_timeout) {
            return Err(("server.body_timeout", "must be from 100ms to 1h".into()));
        }
        // hyper's read buffer, which bounds the head, cannot be smaller than 8 KiB.
        if !(8192..=1 << 20).contains(&server.max_header_bytes) {
            return Err((
                "server.max_header_bytes",
                "must be from 8192 to 1048576".into(),
            ));
        }
        if !(16..=1000).contains(&server.max_headers) {
            return Err(("server.max_headers", "must be from 16 to 1000".into()));
        }
        if !(256..server.max_header_bytes).contains(&server.max_uri_bytes) {
            return Err((
                "server.max_uri_bytes",
                "must be at least 256 and less than server.max_header_bytes".into(),
            ));
        }
        Ok(())
    }
}

/// A DNS label as Foghorn uses it for cluster and node ids: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn is_valid_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// A trusted proxy entry: a CIDR, or a single address (as its /32 or /128).
pub(super) fn parse_proxy(entry: &str) -> Option<ipnet::IpNet> {
    entry.parse::<ipnet::IpNet>().ok().or_else(|| {
        entry
            .parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(is_valid_label("local"));
        assert!(is_valid_label("eu-west-1"));
        assert!(!is_valid_label(""));
        assert!(!is_valid_label("-x"));
        assert!(!is_valid_label("UPPER"));
        assert!(!is_valid_label(&"a".repeat(64)));
    }
}
