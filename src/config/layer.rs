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
    ("FOGHORN_STATS_INTERVAL", "edges.stats_interval"),
    ("FOGHORN_LIVENESS_INTERVALS", "edges.liveness_intervals"),
    ("FOGHORN_PENDING_TTL", "edges.pending_ttl"),
    ("FOGHORN_REGISTER_TIMEOUT", "edges.register_timeout"),
    ("FOGHORN_INGEST_TIMEOUT", "edges.ingest_timeout"),
    ("FOGHORN_MAX_MESSAGE_BYTES", "edges.max_message_bytes"),
    ("FOGHORN_MAX_STREAMS_PER_NODE", "edges.max_streams_per_node"),
    ("FOGHORN_MAX_STRING_BYTES", "edges.max_string_bytes"),
    ("FOGHORN_TRUSTED_PROXIES", "viewers.trusted_proxies"),
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

    use super::*;
    use crate::config::tests::env;

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
}
