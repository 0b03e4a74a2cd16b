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
        let share = self.redis.pending_share_interval;
        if !(share.is_zero()
            || (Duration::from_millis(10)..=Duration::from_secs(1)).contains(&share))
        {
            return Err((
                "redis.pending_share_interval",
                "must be 0s (off) or from 10ms to 1s".into(),
            ));
        }
        if !self.redis.url.is_empty() {
            super::RedisUrl::parse(&self.redis.url).map_err(|e| ("redis.url", e.to_string()))?;
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
        for (key, origins) in [
            ("viewers.cors_origins", &self.viewers.cors_origins),
            ("server.api_cors_origins", &self.server.api_cors_origins),
        ] {
            check_origins(origins).map_err(|e| (key, e))?;
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
                "federation.topology_poll",
                f.topology_poll,
                Duration::from_millis(50)..=secs(3600),
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
        self.validate_dns()?;
        self.validate_acme()
    }

    fn validate_acme(&self) -> Result<(), (&'static str, String)> {
        use super::TlsSource;
        let tls = &self.tls;
        match tls.source {
            TlsSource::Files if tls.cert_path.is_empty() => {
                return Err((
                    "tls.source",
                    "\"files\" needs tls.cert_path and tls.key_path".into(),
                ))
            }
            TlsSource::Dev | TlsSource::Acme if !tls.cert_path.is_empty() => {
                return Err((
                    "tls.cert_path",
                    "is read only with tls.source \"files\" (or \"auto\"); empty it".into(),
                ))
            }
            TlsSource::Acme => {}
            _ => return Ok(()),
        }
        if self.dns.listen.is_empty() && self.dns.update_server.is_empty() {
            return Err((
                "tls.source",
                "\"acme\" validates by DNS-01 through Foghorn's DNS: set dns.listen (the built-in \
                 server, delegated the cluster zones) or dns.update_server (RFC 2136)"
                    .into(),
            ));
        }
        let acme = &tls.acme;
        match url::Url::parse(&acme.directory) {
            Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
            _ => {
                return Err((
                    "tls.acme.directory",
                    format!("{:?} is not an https:// URL", acme.directory),
                ))
            }
        }
        let email_ok = acme.email.is_empty()
            || acme.email.split_once('@').is_some_and(|(user, domain)| {
                !user.is_empty()
                    && is_dns_name(domain)
                    && !acme.email.contains(|c: char| c.is_whitespace() || c == ',')
            });
        if !email_ok {
            return Err((
                "tls.acme.email",
                format!("{:?} is not an e-mail address", acme.email),
            ));
        }
        Ok(())
    }

    fn validate_dns(&self) -> Result<(), (&'static str, String)> {
        let dns = &self.dns;
        if !(dns.listen.is_empty() || dns.listen.parse::<std::net::SocketAddr>().is_ok()) {
            return Err((
                "dns.listen",
                format!("{:?} is not an address:port (or empty)", dns.listen),
            ));
        }
        if let Some(bad) = dns
            .addresses
            .iter()
            .find(|a| a.parse::<std::net::IpAddr>().is_err())
        {
            return Err(("dns.addresses", format!("{bad:?} is not an IP address")));
        }
        if let Some(bad) = dns.nameservers.iter().find(|n| !is_dns_name(n)) {
            return Err(("dns.nameservers", format!("{bad:?} is not a DNS name")));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&dns.ttl) {
            return Err(("dns.ttl", "must be from 1s to 1d".into()));
        }
        if !(1..=64).contains(&dns.pool_size) {
            return Err(("dns.pool_size", "must be from 1 to 64".into()));
        }
        if dns.hold > Duration::from_secs(3600) {
            return Err(("dns.hold", "must be at most 1h".into()));
        }
        if let Some(bad) = dns.allow_transfer.iter().find(|c| parse_proxy(c).is_none()) {
            return Err((
                "dns.allow_transfer",
                format!("{bad:?} is not an IP address or CIDR"),
            ));
        }
        if dns.update_server.is_empty() {
            return Ok(());
        }
        if dns.update_server.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                "dns.update_server",
                format!("{:?} is not an address:port (or empty)", dns.update_server),
            ));
        }
        if !(dns.update_zone.is_empty() || is_dns_name(&dns.update_zone)) {
            return Err((
                "dns.update_zone",
                format!("{:?} is not a DNS name (or empty)", dns.update_zone),
            ));
        }
        if !is_dns_name(&dns.tsig_key_name) {
            return Err((
                "dns.tsig_key_name",
                "the TSIG key's name is required with dns.update_server".into(),
            ));
        }
        if dns.tsig_secret().is_none() {
            return Err((
                "dns.tsig_secret",
                "must be the key's secret in base64, as in BIND's key statement".into(),
            ));
        }
        if !["hmac-sha256", "hmac-sha384", "hmac-sha512"].contains(&dns.tsig_algorithm.as_str()) {
            return Err((
                "dns.tsig_algorithm",
                "must be hmac-sha256, hmac-sha384 or hmac-sha512".into(),
            ));
        }
        if !(Duration::from_secs(5)..=Duration::from_secs(86_400)).contains(&dns.update_interval) {
            return Err(("dns.update_interval", "must be from 5s to 1d".into()));
        }
        Ok(())
    }
}

/// A DNS name of letters, digits and hyphens (any case, a final dot allowed).
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
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

/// A CORS origin list: `["*"]` alone, or origins exactly as a browser sends them in `Origin`
/// (`scheme://host[:port]`, lowercase, no path), which are compared byte for byte.
fn check_origins(origins: &[String]) -> Result<(), String> {
    if origins.iter().any(|o| o == "*") {
        return if origins.len() == 1 {
            Ok(())
        } else {
            Err("\"*\" must be the only entry when given".into())
        };
    }
    for origin in origins {
        let serialized = url::Url::parse(origin)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .map(|u| u.origin().ascii_serialization());
        if serialized.as_deref() != Some(origin.as_str()) {
            return Err(format!(
                "{origin:?} is not an origin as browsers send it: scheme://host[:port], lowercase, \
                 no path or trailing slash (e.g. \"https://player.example.com\")"
            ));
        }
    }
    Ok(())
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
    use std::net::IpAddr;

    use ipnet::IpNet;
    use proptest::prelude::*;

    use super::*;
    use crate::config::tests::{any_text, env};
    use crate::config::{ConfigError, ENV_KEYS};

    /// What `{var}={text}` loads, alone in the environment.
    fn load_var(var: &str, text: &str) -> Result<Config, ConfigError> {
        Config::load_from(None, &env(&[(var, text)]), &[])
    }

    #[test]
    fn cors_origins_are_star_alone_or_origins_as_browsers_send_them() {
        for good in ["*", "https://player.example.com,http://127.0.0.1:8080", ""] {
            let cfg = load_var("FOGHORN_CORS_ORIGINS", good).expect(good);
            assert_eq!(cfg.viewers.cors_origins.join(","), good);
        }
        for bad in [
            "*,https://a.example",
            "https://player.example.com/",
            "https://Player.example.com",
            "https://a.example/path",
            "https://a.example:443",
            "ftp://a.example",
            "a.example",
            "null",
        ] {
            let err = load_var("FOGHORN_API_CORS_ORIGINS", bad).expect_err(bad);
            assert!(
                err.to_string().contains("server.api_cors_origins"),
                "{bad}: {err}"
            );
        }
        assert_eq!(Config::default().viewers.cors_origins, ["*"]);
        assert!(Config::default().server.api_cors_origins.is_empty());
    }

    /// `[a-z0-9][a-z0-9-]{0,62}`, read a character at a time.
    fn reference_label(s: &str) -> bool {
        let lower_or_digit = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        let mut chars = s.chars();
        chars.next().is_some_and(lower_or_digit)
            && s.chars().count() <= 63
            && chars.all(|c| lower_or_digit(c) || c == '-')
    }

    /// A URL's scheme (what comes before the first `:`) is one of `schemes`, and the rest starts
    /// with `//` unless the scheme is `sqlite`, or the URL is empty.
    fn reference_url(url: &str, schemes: &[&str]) -> bool {
        url.is_empty()
            || url.split_once(':').is_some_and(|(scheme, rest)| {
                schemes.contains(&scheme) && (scheme == "sqlite" || rest.starts_with("//"))
            })
    }

    fn label_like() -> impl Strategy<Value = String> {
        prop_oneof![
            any_text(),
            "[a-z0-9-]{0,70}",
            "[a-zA-Z0-9_.-]{0,66}",
            // Around the 63-character limit.
            "[a-z0-9][a-z0-9-]{61,63}",
        ]
    }

    /// A network as an operator writes it: a CIDR or a bare address.
    fn network() -> impl Strategy<Value = (String, IpNet)> {
        (any::<IpAddr>(), any::<u8>(), any::<bool>()).prop_map(|(ip, prefix, bare)| {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let net = IpNet::new(ip, prefix % (max + 1)).expect("prefix within the family's bits");
            if bare {
                (ip.to_string(), IpNet::from(ip))
            } else {
                (net.to_string(), net)
            }
        })
    }

    #[test]
    fn labels() {
        assert!(is_valid_label("local"));
        assert!(is_valid_label("eu-west-1"));
        assert!(!is_valid_label(""));
        assert!(!is_valid_label("-x"));
        assert!(!is_valid_label("UPPER"));
        assert!(!is_valid_label(&"a".repeat(64)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn labels_agree_with_their_pattern(s in label_like()) {
            prop_assert_eq!(is_valid_label(&s), reference_label(&s), "{:?}", s);
            prop_assert_eq!(load_var("FOGHORN_CLUSTER_ID", &s).is_ok(), reference_label(&s));
        }

        #[test]
        fn root_domains_are_dot_separated_labels(
            s in prop_oneof![label_like(), "([a-z0-9-]{0,6}\\.){0,4}[a-zA-Z0-9-]{0,6}"],
        ) {
            let expected = !s.is_empty() && s.split('.').all(reference_label);
            prop_assert_eq!(load_var("FOGHORN_ROOT_DOMAIN", &s).is_ok(), expected, "{:?}", s);
        }

        /// Database, Redis and peer URLs are taken by scheme alone; the rest is the client's.
        #[test]
        fn urls_need_a_known_scheme(
            scheme in proptest::sample::select(vec![
                "", "postgres://", "postgresql://", "postgres:", "sqlite:", "sqlite://", "mysql://",
                "redis://", "rediss://", "redis:", "http://", "https://", "HTTP://", "https:/",
            ]),
            rest in any_text(),
        ) {
            let url = format!("{scheme}{rest}");
            for (var, schemes) in [
                ("FOGHORN_DATABASE_URL", &["postgres", "postgresql", "sqlite"][..]),
                ("FOGHORN_REDIS_URL", &["redis", "rediss"][..]),
                ("FOGHORN_FEDERATION_ADVERTISE_GRPC", &["http", "https"][..]),
            ] {
                let key = ENV_KEYS.iter().find(|(v, _)| *v == var).expect("a known variable").1;
                match load_var(var, &url) {
                    Ok(_) => prop_assert!(reference_url(&url, schemes), "{var}={url:?} was taken"),
                    Err(e) => {
                        prop_assert!(!reference_url(&url, schemes), "{var}={url:?}: {e}");
                        prop_assert!(e.to_string().contains(key), "{e}");
                    }
                }
            }
        }

        /// Any text is a proxy entry or not, without panicking; written networks read back.
        #[test]
        fn proxy_entries_round_trip(
            text in any_text(),
            networks in proptest::collection::vec(network(), 0..4),
        ) {
            let _ = parse_proxy(&text);
            for (written, net) in &networks {
                prop_assert_eq!(parse_proxy(written), Some(*net));
            }
            let list = networks.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>().join(", ");
            let cfg = load_var("FOGHORN_TRUSTED_PROXIES", &list).expect("valid networks");
            let expected: Vec<IpNet> = networks.iter().map(|(_, net)| *net).collect();
            prop_assert_eq!(cfg.trusted_proxies(), expected);
        }
    }
}
