//! Typed, validated configuration.
//!
//! Layers, each overriding the one before: embedded defaults, the TOML file (`--config` or
//! `FOGHORN_CONFIG`), `FOGHORN_*` environment variables, command-line flags. Every layer is merged
//! into one TOML tree before it is deserialized, so an error always names the key (and the variable
//! or flag it came from) and nothing is bound before the whole configuration is valid.
//!
//! - `schema`: the typed sections, their defaults and the values derived from them.
//! - `layer`: reading the file, the environment and the flags, and merging them.
//! - `validate`: what types alone cannot check, with the messages that say why.
//! - `redis_url`: `redis.url`, one server, Sentinel or Cluster.

mod layer;
mod redis_url;
mod schema;
mod validate;

use std::path::{Path, PathBuf};

pub use layer::{Override, ENV_KEYS};
pub use redis_url::{RedisNodes, RedisUrl, RedisUrlError};
pub use schema::{
    AcmeConfig, ClusterConfig, Config, DatabaseConfig, DnsConfig, EdgesConfig, FederationConfig,
    GeoIpConfig, ListenerTls, LogConfig, LogFormat, RedisConfig, ServerConfig, TlsConfig,
    TlsSource, ViewersConfig,
};
pub use validate::{is_dns_name, is_valid_label};

/// Why a configuration was refused. The message always names the offending key and its source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration key `{key}` (from {origin}): {message}")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
    /// A file the configuration names is missing or unusable, found when it is opened at start
    /// (the GeoIP database, the operator's certificate files). `message` names the key.
    #[error("{message}")]
    File { message: String },
}

impl Config {
    /// Builds the configuration from all layers. `file` is the explicit `--config` path, if any.
    pub fn load(file: Option<&Path>, flags: &[Override]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env, flags)
    }

    /// Like [`Config::load`], with the environment passed in (tests must not mutate the process env).
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &[Override],
    ) -> Result<Config, ConfigError> {
        let layer::Layers { tree, origins } = layer::Layers::build(file, env, flags)?;
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid {
                origin: origins.of(&key),
                key,
                message: e.into_inner().to_string(),
            }
        })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                origin: origins.of(key),
                key: key.to_string(),
                message,
            })?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment of `pairs`, as [`Config::load_from`] takes it.
    pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Any text at all, mixed with text made of the characters values are written with, so both
    /// sides of each parser are reached.
    pub(super) fn any_text() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::prop_oneof![
            ".{0,40}",
            "[ 0-9a-zA-Z:.,/+_\\[\\]-]{0,24}",
            "[0-9]{1,6}(ns|ms|s|m|h|d|day|min)?",
        ]
    }

    #[test]
    fn documented_file_matches_the_embedded_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/foghorn.toml");
        let text = std::fs::read_to_string(&path).expect("config/foghorn.toml is in the repo");
        let parsed: Config = toml::from_str(&text).expect("config/foghorn.toml parses");
        assert_eq!(parsed, Config::default());
        // It is also a file `--config` accepts, as it stands.
        let loaded = Config::load_from(Some(&path), &[], &[]).expect("config/foghorn.toml loads");
        assert_eq!(loaded, Config::default());
        // Every key of the defaults is written out in the file, not left implicit, and is
        // reachable from the environment.
        let file_tree: toml::Value = toml::from_str(&text).expect("parses as a tree");
        let default_tree = toml::Value::try_from(Config::default()).expect("serializes");
        let mut keys = Vec::new();
        leaves(&default_tree, "", &mut keys);
        assert!(keys.iter().any(|k| k == "tls.acme.directory"), "{keys:?}");
        for dotted in keys {
            let documented = dotted
                .split('.')
                .try_fold(&file_tree, |node, part| node.get(part));
            assert!(
                documented.is_some(),
                "config/foghorn.toml does not document {dotted}"
            );
            assert!(
                ENV_KEYS.iter().any(|(_, k)| *k == dotted),
                "{dotted} has no FOGHORN_* variable"
            );
        }
    }

    /// The dotted paths of every value (not table) under `node`.
    fn leaves(node: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        match node.as_table() {
            Some(table) => {
                for (key, value) in table {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaves(value, &path, out);
                }
            }
            None => out.push(prefix.to_string()),
        }
    }

    #[test]
    fn bad_values_name_the_key_and_the_source() {
        let err = Config::load_from(None, &env(&[("FOGHORN_HTTP_ADDR", "nonsense")]), &[])
            .expect_err("bad address");
        let msg = err.to_string();
        assert!(msg.contains("server.http_addr"), "{msg}");
        assert!(msg.contains("FOGHORN_HTTP_ADDR"), "{msg}");

        let err = Config::load_from(None, &env(&[("FOGHORN_CLUSTER_ID", "Bad_Id")]), &[])
            .expect_err("bad id");
        assert!(err.to_string().contains("cluster.id"), "{err}");

        let err = Config::load_from(None, &env(&[("FOGHORN_LIVENESS_INTERVALS", "x")]), &[])
            .expect_err("bad int");
        assert!(
            err.to_string().contains("edges.liveness_intervals"),
            "{err}"
        );

        let err = Config::load_from(None, &env(&[("FOGHORN_LOG", "foghorn=loud")]), &[])
            .expect_err("bad filter");
        assert!(err.to_string().contains("log.filter"), "{err}");

        let err = Config::load_from(None, &env(&[("FOGHORN_DATABASE_URL", "mysql://x")]), &[])
            .expect_err("bad db");
        assert!(err.to_string().contains("database.url"), "{err}");
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "[server]\nhttp_adr = \"0.0.0.0:1\"\n").expect("write");
        let err = Config::load_from(Some(&file), &[], &[]).expect_err("typo");
        assert!(err.to_string().contains("http_adr"), "{err}");
    }
}
