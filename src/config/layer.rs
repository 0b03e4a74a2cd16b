//! Layering: embedded defaults, then the TOML file, then `FOGHORN_*` variables, then flags,
//! merged into one TOML tree that remembers where each overridden key came from.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// Environment variables and the key each one sets. `FOGHORN_CONFIG` names the file itself.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("FOGHORN_HTTP_ADDR", "server.http_addr"),
    ("FOGHORN_GRPC_ADDR", "server.grpc_addr"),
    ("FOGHORN_DATA_DIR", "server.data_dir"),
    ("FOGHORN_SHUTDOWN_GRACE", "server.shutdown_grace"),
    ("FOGHORN_MAX_BODY_BYTES", "server.max_body_bytes"),
    ("FOGHORN_BODY_TIMEOUT", "server.body_timeout"),
    ("FOGHORN_MAX_HEADER_BYTES", "server.max_header_bytes"),
    ("FOGHORN_MAX_HEADERS", "server.max_headers"),
    ("FOGHORN_MAX_URI_BYTES", "server.max_uri_bytes"),
    ("FOGHORN_API_CORS_ORIGINS", "server.api_cors_origins"),
    ("FOGHORN_CLUSTER_ID", "cluster.id"),
    ("FOGHORN_CLUSTER_NAME", "cluster.name"),
    ("FOGHORN_CLUSTER_REGION", "cluster.region"),
    ("FOGHORN_ROOT_DOMAIN", "cluster.root_domain"),
    ("FOGHORN_CLUSTER_REPORT_INTERVAL", "cluster.report_interval"),
    ("FOGHORN_DATABASE_URL", "database.url"),
    (
        "FOGHORN_DATABASE_MAX_CONNECTIONS",
        "database.max_connections",
    ),
    (
        "FOGHORN_DATABASE_CONNECT_TIMEOUT",
        "database.connect_timeout",
    ),
    ("FOGHORN_REDIS_URL", "redis.url"),
    ("FOGHORN_REDIS_LEADER_TTL", "redis.leader_ttl"),
    (
        "FOGHORN_REDIS_PENDING_SHARE_INTERVAL",
        "redis.pending_share_interval",
    ),
    ("FOGHORN_STATS_INTERVAL", "edges.stats_interval"),
    ("FOGHORN_LIVENESS_INTERVALS", "edges.liveness_intervals"),
    ("FOGHORN_PENDING_TTL", "edges.pending_ttl"),
    ("FOGHORN_MIST_PASSPHRASE", "edges.mist_passphrase"),
    ("FOGHORN_REGISTER_TIMEOUT", "edges.register_timeout"),
    ("FOGHORN_INGEST_TIMEOUT", "edges.ingest_timeout"),
    ("FOGHORN_MAX_MESSAGE_BYTES", "edges.max_message_bytes"),
    ("FOGHORN_MAX_STREAMS_PER_NODE", "edges.max_streams_per_node"),
    ("FOGHORN_MAX_STRING_BYTES", "edges.max_string_bytes"),
    ("FOGHORN_TRUSTED_PROXIES", "viewers.trusted_proxies"),
    ("FOGHORN_CORS_ORIGINS", "viewers.cors_origins"),
    ("FOGHORN_GEOIP_MMDB_PATH", "geoip.mmdb_path"),
    ("FOGHORN_FEDERATION_CREDENTIAL", "federation.credential"),
    (
        "FOGHORN_FEDERATION_ADVERTISE_GRPC",
        "federation.advertise_grpc",
    ),
    (
        "FOGHORN_FEDERATION_SUMMARY_INTERVAL",
        "federation.summary_interval",
    ),
    (
        "FOGHORN_FEDERATION_HEARTBEAT_INTERVAL",
        "federation.heartbeat_interval",
    ),
    ("FOGHORN_FEDERATION_SUMMARY_TTL", "federation.summary_ttl"),
    (
        "FOGHORN_FEDERATION_HEARTBEAT_TTL",
        "federation.heartbeat_ttl",
    ),
    (
        "FOGHORN_FEDERATION_RECONCILE_INTERVAL",
        "federation.reconcile_interval",
    ),
    (
        "FOGHORN_FEDERATION_TOPOLOGY_POLL",
        "federation.topology_poll",
    ),
    ("FOGHORN_FEDERATION_RPC_TIMEOUT", "federation.rpc_timeout"),
    (
        "FOGHORN_FEDERATION_RECONNECT_MAX",
        "federation.reconnect_max",
    ),
    ("FOGHORN_TLS_CERT_PATH", "tls.cert_path"),
    ("FOGHORN_TLS_KEY_PATH", "tls.key_path"),
    ("FOGHORN_TLS_CA_PATH", "tls.ca_path"),
    ("FOGHORN_TLS_RENEW_BEFORE", "tls.renew_before"),
    ("FOGHORN_TLS_CHECK_INTERVAL", "tls.check_interval"),
    ("FOGHORN_TLS_LISTENERS", "tls.listeners"),
    ("FOGHORN_TLS_SOURCE", "tls.source"),
    ("FOGHORN_TLS_ACME_DIRECTORY", "tls.acme.directory"),
    ("FOGHORN_TLS_ACME_EMAIL", "tls.acme.email"),
    ("FOGHORN_TLS_ACME_CA_PATH", "tls.acme.ca_path"),
    ("FOGHORN_DNS_LISTEN", "dns.listen"),
    ("FOGHORN_DNS_ADDRESSES", "dns.addresses"),
    ("FOGHORN_DNS_NAMESERVERS", "dns.nameservers"),
    ("FOGHORN_DNS_TTL", "dns.ttl"),
    ("FOGHORN_DNS_POOL_SIZE", "dns.pool_size"),
    ("FOGHORN_DNS_HOLD", "dns.hold"),
    ("FOGHORN_DNS_ALLOW_TRANSFER", "dns.allow_transfer"),
    ("FOGHORN_DNS_UPDATE_SERVER", "dns.update_server"),
    ("FOGHORN_DNS_UPDATE_ZONE", "dns.update_zone"),
    ("FOGHORN_DNS_TSIG_KEY_NAME", "dns.tsig_key_name"),
    ("FOGHORN_DNS_TSIG_SECRET", "dns.tsig_secret"),
    ("FOGHORN_DNS_TSIG_ALGORITHM", "dns.tsig_algorithm"),
    ("FOGHORN_DNS_UPDATE_INTERVAL", "dns.update_interval"),
    ("FOGHORN_LOG", "log.filter"),
    ("FOGHORN_LOG_FORMAT", "log.format"),
];

/// One override of a key by name, e.g. from an environment variable or a flag.
#[derive(Debug, Clone)]
pub struct Override {
    /// Dotted key, e.g. `server.http_addr`.
    pub key: String,
    pub value: String,
    /// Where it came from, for error messages: `FOGHORN_HTTP_ADDR`, `--http-addr`.
    pub origin: String,
}

/// The merged layers, not yet deserialized: the TOML tree and where each key of it came from.
pub(super) struct Layers {
    pub(super) tree: toml::Value,
    pub(super) origins: Origins,
}

/// Where each key's value came from, for error messages.
pub(super) struct Origins {
    /// Every override applied, in order: `(key, origin)`.
    overridden: Vec<(String, String)>,
    /// The origin of every key no override touched: the file, or the defaults.
    rest: String,
}

impl Origins {
    /// The last layer that set `key` (a dotted path, as `serde_path_to_error` prints it).
    pub(super) fn of(&self, key: &str) -> String {
        self.overridden
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| self.rest.clone())
    }
}

impl Layers {
    /// Merges the layers in order of precedence. `file` is the explicit `--config` path, if any;
    /// `env` is the process environment (passed in, so tests need not mutate the real one).
    pub(super) fn build(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &[Override],
    ) -> Result<Layers, ConfigError> {
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut tree = toml::Value::try_from(Config::default())
            .expect("the default configuration always serializes to TOML");
        let mut overridden: Vec<(String, String)> = Vec::new();

        let file_path = file
            .map(Path::to_path_buf)
            .or_else(|| lookup("FOGHORN_CONFIG").map(PathBuf::from));
        if let Some(path) = &file_path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let file_tree: toml::Value = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?;
            merge(&mut tree, file_tree);
        }
        let rest = file_path
            .as_ref()
            .map(|p| format!("config file {}", p.display()))
            .unwrap_or_else(|| "defaults".to_string());

        let mut overrides: Vec<Override> = ENV_KEYS
            .iter()
            .filter_map(|(var, key)| {
                lookup(var).map(|value| Override {
                    key: (*key).to_string(),
                    value,
                    origin: (*var).to_string(),
                })
            })
            .collect();
        overrides.extend_from_slice(flags);
        for o in &overrides {
            set_key(&mut tree, o)?;
            overridden.push((o.key.clone(), o.origin.clone()));
        }
        Ok(Layers {
            tree,
            origins: Origins { overridden, rest },
        })
    }
}

/// Recursively merges `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(base), toml::Value::Table(over)) => {
            for (k, v) in over {
                match base.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// Sets a dotted key from a string, typed like the default already at that key.
fn set_key(tree: &mut toml::Value, o: &Override) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: o.key.clone(),
        origin: o.origin.clone(),
        message,
    };
    let mut node = tree;
    for part in o.key.split('.') {
        node = node
            .get_mut(part)
            .ok_or_else(|| invalid("unknown configuration key".into()))?;
    }
    *node = match node {
        toml::Value::Integer(_) => toml::Value::Integer(
            o.value
                .trim()
                .parse()
                .map_err(|_| invalid(format!("{:?} is not an integer", o.value)))?,
        ),
        // Lists come from the environment and flags comma-separated.
        toml::Value::Array(_) => toml::Value::Array(
            o.value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| toml::Value::String(v.to_string()))
                .collect(),
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(
            o.value
                .trim()
                .parse()
                .map_err(|_| invalid(format!("{:?} is not true or false", o.value)))?,
        ),
        _ => toml::Value::String(o.value.clone()),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::config::tests::{any_text, env};
    use crate::config::{ListenerTls, LogFormat};

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "[cluster]\nid = \"from-file\"\nregion = \"eu\"\n").expect("write");
        let cfg = Config::load_from(
            Some(&file),
            &env(&[
                ("FOGHORN_CLUSTER_ID", "from-env"),
                ("FOGHORN_STATS_INTERVAL", "2s"),
            ]),
            &[Override {
                key: "cluster.id".into(),
                value: "from-flag".into(),
                origin: "--cluster-id".into(),
            }],
        )
        .expect("valid");
        assert_eq!(cfg.cluster.id, "from-flag");
        assert_eq!(cfg.cluster.region, "eu");
        assert_eq!(cfg.edges.stats_interval, Duration::from_secs(2));
    }

    fn default_tree() -> toml::Value {
        toml::Value::try_from(Config::default()).expect("the defaults serialize")
    }

    /// What `{var}={text}` loads, alone in the environment.
    fn load_var(var: &str, text: &str) -> Result<Config, ConfigError> {
        Config::load_from(None, &env(&[(var, text)]), &[])
    }

    /// Sets `key` of `tree` to `value` as the flag `--x` would.
    fn set(tree: &mut toml::Value, key: &str, value: &str) -> Result<(), ConfigError> {
        set_key(
            tree,
            &Override {
                key: key.into(),
                value: value.into(),
                origin: "--x".into(),
            },
        )
    }

    /// An integer as the environment writes it, read by hand: surrounding whitespace, an optional
    /// sign, decimal digits; within TOML's i64 and not negative (every size is unsigned).
    fn reference_size(text: &str) -> Option<usize> {
        let t = text.trim();
        let (negative, digits) = match t.as_bytes().first() {
            Some(b'+') => (false, &t[1..]),
            Some(b'-') => (true, &t[1..]),
            _ => (false, t),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let magnitude = digits.bytes().try_fold(0i128, |n, b| {
            n.checked_mul(10)?.checked_add(i128::from(b - b'0'))
        })?;
        let value = if negative { -magnitude } else { magnitude };
        (0..=i128::from(i64::MAX))
            .contains(&value)
            .then(|| usize::try_from(value).expect("0..=i64::MAX fits a 64-bit usize"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// No text in any variable panics: it loads, or it is refused naming a configuration key,
        /// and the variable when the key is the one it sets (a value can also put another key,
        /// still at its default, out of range: a TTL under its interval).
        #[test]
        fn any_value_of_any_variable_loads_or_is_refused_by_key(
            (var, key) in proptest::sample::select(ENV_KEYS),
            text in any_text(),
        ) {
            match load_var(var, &text) {
                Ok(_) => {}
                Err(ConfigError::Invalid { key: bad, origin, .. }) => {
                    let base = bad.split_once('[').map_or(bad.as_str(), |(base, _)| base);
                    prop_assert!(ENV_KEYS.iter().any(|(_, k)| *k == base), "{bad}");
                    if bad == key {
                        prop_assert_eq!(origin, var);
                    } else {
                        prop_assert_eq!(origin, "defaults");
                    }
                }
                Err(other) => prop_assert!(false, "{var}={text:?}: {other}"),
            }
        }

        /// Flags name keys freely: only a known key is set, anything else is refused by name.
        #[test]
        fn a_flag_for_an_unknown_key_is_refused_by_name(
            key in prop_oneof![
                proptest::sample::select(ENV_KEYS).prop_map(|(_, k)| k.to_string()),
                "[a-z_]{0,10}(\\.[a-z_]{0,16}){0,3}",
            ],
        ) {
            let flag = Override { key: key.clone(), value: "7".into(), origin: "--x".into() };
            let known = ENV_KEYS.iter().any(|(_, k)| *k == key);
            let section = !key.contains('.') && default_tree().get(&key).is_some();
            match Config::load_from(None, &[], &[flag]) {
                Ok(_) => prop_assert!(known, "{key}"),
                Err(ConfigError::Invalid { key: bad, origin, message }) => {
                    // `7` can also leave a key it pairs with unusable (a cert without its key).
                    prop_assert_eq!(origin, if bad == key { "--x" } else { "defaults" });
                    if !known && !section {
                        prop_assert_eq!(bad, key);
                        prop_assert_eq!(message, "unknown configuration key");
                    }
                }
                Err(other) => prop_assert!(false, "{key}: {other}"),
            }
        }

        /// Sizes are decimal integers, surrounding whitespace ignored.
        #[test]
        fn sizes_are_read_as_a_hand_written_reader_reads_them(
            text in prop_oneof![any_text(), "[ ]?[+-]?[0-9]{0,21}[ ]?"],
        ) {
            let loaded = load_var("FOGHORN_MAX_STREAMS_PER_NODE", &text);
            match reference_size(&text) {
                Some(n) => prop_assert_eq!(loaded.expect("a size").edges.max_streams_per_node, n),
                None => prop_assert!(loaded.is_err(), "{text:?} was taken"),
            }
        }

        #[test]
        fn sizes_round_trip(n in 0..=i64::MAX as usize, connections in 1..=u32::MAX) {
            let cfg = Config::load_from(
                None,
                &env(&[
                    ("FOGHORN_MAX_STREAMS_PER_NODE", &n.to_string()),
                    ("FOGHORN_DATABASE_MAX_CONNECTIONS", &connections.to_string()),
                ]),
                &[],
            )
            .expect("valid sizes");
            prop_assert_eq!(cfg.edges.max_streams_per_node, n);
            prop_assert_eq!(cfg.database.max_connections, connections);
        }

        /// Durations reach the deserializer as written: what humantime reads is taken, unchanged.
        #[test]
        fn durations_are_read_as_humantime_reads_them(text in any_text()) {
            // No range check applies to this key, so only the parser decides.
            let loaded = load_var("FOGHORN_SHUTDOWN_GRACE", &text);
            match humantime::parse_duration(&text) {
                Ok(d) => prop_assert_eq!(loaded.expect("a duration").server.shutdown_grace, d),
                Err(_) => {
                    let err = loaded.expect_err("not a duration").to_string();
                    prop_assert!(err.contains("server.shutdown_grace"), "{err}");
                    prop_assert!(err.contains("FOGHORN_SHUTDOWN_GRACE"), "{err}");
                }
            }
        }

        #[test]
        fn durations_round_trip(secs in 0u64..=10 * 365 * 86_400, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            let text = humantime::format_duration(d).to_string();
            let cfg = load_var("FOGHORN_SHUTDOWN_GRACE", &text).expect("a formatted duration");
            prop_assert_eq!(cfg.server.shutdown_grace, d);
        }

        #[test]
        fn addresses_are_read_as_std_reads_them(
            text in prop_oneof![any_text(), "\\[?[0-9a-f:.]{0,20}\\]?:[0-9]{0,6}"],
        ) {
            let loaded = load_var("FOGHORN_HTTP_ADDR", &text);
            match text.parse::<std::net::SocketAddr>() {
                Ok(addr) => prop_assert_eq!(loaded.expect("an address").server.http_addr, addr),
                Err(_) => prop_assert!(loaded.is_err(), "{text:?} was taken"),
            }
        }

        #[test]
        fn addresses_round_trip(ip in any::<std::net::IpAddr>(), port in any::<u16>()) {
            let addr = std::net::SocketAddr::new(ip, port);
            let cfg = load_var("FOGHORN_GRPC_ADDR", &addr.to_string()).expect("an address");
            prop_assert_eq!(cfg.server.grpc_addr, addr);
        }

        /// The listener mode and the log format are their lowercase names, nothing else.
        #[test]
        fn modes_are_their_lowercase_names(
            text in prop_oneof![
                any_text(),
                proptest::sample::select(vec!["both", "required", "off", "text", "json", "Both", "JSON", " off"])
                    .prop_map(String::from),
            ],
        ) {
            let listeners = load_var("FOGHORN_TLS_LISTENERS", &text).map(|c| c.tls.listeners);
            let expected = match text.as_str() {
                "both" => Some(ListenerTls::Both),
                "required" => Some(ListenerTls::Required),
                "off" => Some(ListenerTls::Off),
                _ => None,
            };
            prop_assert_eq!(listeners.ok(), expected);
            let format = load_var("FOGHORN_LOG_FORMAT", &text).map(|c| c.log.format);
            let expected = match text.as_str() {
                "text" => Some(LogFormat::Text),
                "json" => Some(LogFormat::Json),
                _ => None,
            };
            prop_assert_eq!(format.ok(), expected);
        }

        /// No configuration key is a boolean today; the reader keeps the rule for when one is:
        /// `true` or `false`, surrounding whitespace ignored.
        #[test]
        fn booleans_are_true_or_false(
            text in prop_oneof![
                any_text(),
                "[ ]?(true|false|True|FALSE|1|0|yes)[ ]?",
            ],
        ) {
            let mut tree: toml::Value = toml::from_str("[s]\nflag = false").expect("a tree");
            let set = set(&mut tree, "s.flag", &text);
            match text.trim() {
                "true" | "false" => {
                    prop_assert!(set.is_ok());
                    prop_assert_eq!(tree["s"]["flag"].as_bool(), Some(text.trim() == "true"));
                }
                _ => {
                    let err = set.expect_err("not a boolean").to_string();
                    prop_assert!(err.contains("is not true or false"), "{err}");
                }
            }
        }

        /// Lists are comma-separated; items are trimmed and empty ones dropped.
        #[test]
        fn lists_split_on_commas(
            items in proptest::collection::vec("[0-9a-f.:/]{1,12}", 0..5),
            separator in proptest::sample::select(vec![",", ", ", " , ", ",,", ",\t"]),
            text in any_text(),
        ) {
            let mut tree = default_tree();
            set(&mut tree, "viewers.trusted_proxies", &items.join(separator)).expect("a list");
            let read: Vec<&str> = tree["viewers"]["trusted_proxies"]
                .as_array()
                .expect("still a list")
                .iter()
                .map(|v| v.as_str().expect("of strings"))
                .collect();
            prop_assert_eq!(read, items.iter().map(String::as_str).collect::<Vec<_>>());

            set(&mut tree, "viewers.trusted_proxies", &text).expect("any text is a list");
            for item in tree["viewers"]["trusted_proxies"].as_array().expect("a list") {
                let item = item.as_str().expect("a string");
                prop_assert!(!item.is_empty() && !item.contains(',') && item.trim() == item);
            }
        }
    }

    proptest! {
        // Each case writes a file.
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// No file text panics: it loads, or it is refused as unparsable or naming a key.
        #[test]
        fn any_file_loads_or_is_refused(
            text in prop_oneof![
                ".{0,200}",
                "(\\[(server|cluster|edges|tls|nope)\\]\n)?([a-z_]{1,14} = (\"[a-z0-9:.]{0,12}\"|-?[0-9]{1,5}|true|\\[\\]))?\n{0,2}",
            ],
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let file = dir.path().join("f.toml");
            std::fs::write(&file, &text).expect("write");
            match Config::load_from(Some(&file), &[], &[]) {
                Ok(_) | Err(ConfigError::Parse { .. }) => {}
                Err(ConfigError::Invalid { origin, .. }) => {
                    prop_assert_eq!(origin, format!("config file {}", file.display()));
                }
                Err(other) => prop_assert!(false, "{text:?}: {other}"),
            }
        }
    }
}
