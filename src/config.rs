//! Typed, validated configuration.
//!
//! Layers, each overriding the one before: embedded defaults, the TOML file (`--config` or
//! `FOGHORN_CONFIG`), `FOGHORN_*` environment variables, command-line flags. Every layer is merged
//! into one TOML tree before it is deserialized, so an error always names the key (and the variable
//! or flag it came from) and nothing is bound before the whole configuration is valid.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything Foghorn can be told. `config/foghorn.toml` documents each key with this default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub cluster: ClusterConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub edges: EdgesConfig,
    pub viewers: ViewersConfig,
    pub geoip: GeoIpConfig,
    pub federation: FederationConfig,
    pub tls: TlsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM chain (leaf first) of the cluster wildcard `*.{cluster}.{root}`; empty: a development
    /// CA under `{data_dir}/tls/` issues one.
    pub cert_path: String,
    /// PEM private key of `cert_path`; required with it.
    pub key_path: String,
    /// PEM of the CA that edges and tools should trust for Foghorn; empty: none is handed out
    /// (a public CA needs none).
    pub ca_path: String,
    /// A development certificate is issued again this long before it expires.
    #[serde(with = "humantime_serde_compat")]
    pub renew_before: Duration,
    /// How often the certificate is checked: dev renewal, operator files read again.
    #[serde(with = "humantime_serde_compat")]
    pub check_interval: Duration,
    /// What Foghorn's own HTTP and gRPC listeners accept.
    pub listeners: ListenerTls,
}

/// What Foghorn's own listeners accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerTls {
    /// TLS and plaintext on the same port, told apart by the connection's first byte.
    Both,
    /// TLS only: plaintext connections are closed.
    Required,
    /// Plaintext only (TLS terminated in front of Foghorn).
    Off,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_path: String::new(),
            key_path: String::new(),
            ca_path: String::new(),
            renew_before: Duration::from_secs(30 * 86_400),
            check_interval: Duration::from_secs(3600),
            listeners: ListenerTls::Both,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// This Foghorn's peer credential (`fpc_` + 48 hex); empty: the one kept in
    /// `{data_dir}/federation.key`, created on first start.
    pub credential: String,
    /// Where peers dial this cluster's gRPC (`http://host:port`); empty: the gRPC listener's
    /// address when it is bound to one, else `http://foghorn.{cluster}.{root}:{port}`.
    pub advertise_grpc: String,
    /// How often a `ClusterEdgeSummary` goes to each peer; load is averaged over the same window.
    #[serde(with = "humantime_serde_compat")]
    pub summary_interval: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub heartbeat_interval: Duration,
    /// A peer's edges stop being scored this long after its last summary...
    #[serde(with = "humantime_serde_compat")]
    pub summary_ttl: Duration,
    /// ...or this long after its last heartbeat, whichever comes first.
    #[serde(with = "humantime_serde_compat")]
    pub heartbeat_ttl: Duration,
    /// How often the always-on peer set is recomputed from the registry.
    #[serde(with = "humantime_serde_compat")]
    pub reconcile_interval: Duration,
    /// Budget for dialing a peer and for each unary call to it.
    #[serde(with = "humantime_serde_compat")]
    pub rpc_timeout: Duration,
    /// Longest wait between two attempts to reach a peer (exponential backoff with jitter).
    #[serde(with = "humantime_serde_compat")]
    pub reconnect_max: Duration,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            credential: String::new(),
            advertise_grpc: String::new(),
            summary_interval: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            summary_ttl: Duration::from_secs(90),
            heartbeat_ttl: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(300),
            rpc_timeout: Duration::from_secs(2),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoIpConfig {
    /// MaxMind GeoIP2/GeoLite2 City database; empty: positions only from query or proxy headers.
    pub mmdb_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewersConfig {
    /// CIDRs of proxies whose `X-Forwarded-For`, `X-Latitude` and `X-Longitude` are believed.
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// How long a graceful shutdown may take before remaining work is abandoned.
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_grace: Duration,
    /// Largest HTTP request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest a request body may take to arrive, from the moment it is read.
    #[serde(with = "humantime_serde_compat")]
    pub body_timeout: Duration,
    /// Largest HTTP request head (request line and headers), in bytes; also the HTTP/2 header
    /// list size.
    pub max_header_bytes: usize,
    /// Most headers an HTTP/1 request may carry.
    pub max_headers: usize,
    /// Longest request URI, in bytes.
    pub max_uri_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Stable lowercase id, also the DNS label of the cluster.
    pub id: String,
    pub name: String,
    pub region: String,
    pub root_domain: String,
    /// How often the leader publishes the cluster's load for the other clusters' marketplaces.
    #[serde(with = "humantime_serde_compat")]
    pub report_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://...` or `sqlite://...`; empty means SQLite at `{data_dir}/foghorn.db`.
    pub url: String,
    pub max_connections: u32,
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Empty: no Redis, this Foghorn is a single-instance cluster.
    pub url: String,
    /// Lifetime of the cluster's leader lease; renewed every fifth of it. A leader that stops or
    /// loses Redis is replaced within about 1.2 × this.
    #[serde(with = "humantime_serde_compat")]
    pub leader_ttl: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            leader_ttl: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgesConfig {
    /// How often edges send NodeStats (sent to them in the ConfigSeed).
    #[serde(with = "humantime_serde_compat")]
    pub stats_interval: Duration,
    /// An edge is routable while its last NodeStats is younger than this many intervals.
    pub liveness_intervals: u32,
    /// How long a new connection may take to send its Register frame.
    #[serde(with = "humantime_serde_compat")]
    pub register_timeout: Duration,
    /// Budget for answering an IngestRequest.
    #[serde(with = "humantime_serde_compat")]
    pub ingest_timeout: Duration,
    /// Largest gRPC frame accepted from an edge, in bytes.
    pub max_message_bytes: usize,
    /// Most streams one NodeStats may list.
    pub max_streams_per_node: usize,
    /// Longest string accepted in any edge frame field (URLs, names, keys).
    pub max_string_bytes: usize,
    /// How long a redirect's expected bandwidth is charged to its edge at most (DESIGN.md §5),
    /// whatever the stats interval.
    #[serde(with = "humantime_serde_compat")]
    pub pending_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `foghorn=debug,info`. `RUST_LOG` wins when set.
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 18008)),
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 18019)),
            data_dir: PathBuf::from("./data"),
            shutdown_grace: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            id: "local".into(),
            name: "Local cluster".into(),
            region: "local".into(),
            root_domain: "frameworks.localhost".into(),
            report_interval: Duration::from_secs(10),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for EdgesConfig {
    fn default() -> Self {
        Self {
            stats_interval: Duration::from_secs(5),
            liveness_intervals: 3,
            register_timeout: Duration::from_secs(10),
            ingest_timeout: Duration::from_secs(2),
            max_message_bytes: 256 * 1024,
            max_streams_per_node: 2_000,
            max_string_bytes: 512,
            pending_ttl: crate::edge::PENDING_TTL,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

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

/// One override of a key by name, e.g. from an environment variable or a flag.
#[derive(Debug, Clone)]
pub struct Override {
    /// Dotted key, e.g. `server.http_addr`.
    pub key: String,
    pub value: String,
    /// Where it came from, for error messages: `FOGHORN_HTTP_ADDR`, `--http-addr`.
    pub origin: String,
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
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut tree = toml::Value::try_from(Config::default())
            .expect("the default configuration always serializes to TOML");
        let mut origins: Vec<(String, String)> = Vec::new();

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
        let file_origin = file_path
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
            origins.push((o.key.clone(), o.origin.clone()));
        }

        let origin_of = |key: &str| {
            origins
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, o)| o.clone())
                .unwrap_or_else(|| file_origin.clone())
        };
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid {
                origin: origin_of(&key),
                key,
                message: e.into_inner().to_string(),
            }
        })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                origin: origin_of(key),
                key: key.to_string(),
                message,
            })?;
        Ok(config)
    }

    /// Checks what types alone cannot; returns the offending key and why.
    fn validate(&self) -> Result<(), (&'static str, String)> {
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

    /// The database URL actually used: the configured one, or SQLite in the data dir.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.server.data_dir.join("foghorn.db").display()
            )
        } else {
            self.database.url.clone()
        }
    }

    /// The trusted proxy networks, parsed (validated at load, so nothing is dropped here).
    pub fn trusted_proxies(&self) -> Vec<ipnet::IpNet> {
        self.viewers
            .trusted_proxies
            .iter()
            .filter_map(|c| parse_proxy(c))
            .collect()
    }

    /// How long after its last NodeStats an edge stays routable.
    pub fn liveness_window(&self) -> Duration {
        self.edges.stats_interval * self.edges.liveness_intervals
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
fn parse_proxy(entry: &str) -> Option<ipnet::IpNet> {
    entry.parse::<ipnet::IpNet>().ok().or_else(|| {
        entry
            .parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
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

/// Durations are written the human way (`5s`, `30d`) in TOML, env and flags.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like 5s or 2m: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn documented_file_matches_the_embedded_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/foghorn.toml");
        let text = std::fs::read_to_string(&path).expect("config/foghorn.toml is in the repo");
        let parsed: Config = toml::from_str(&text).expect("config/foghorn.toml parses");
        assert_eq!(parsed, Config::default());
        // Every key of the defaults is written out in the file, not left implicit.
        let file_tree: toml::Value = toml::from_str(&text).expect("parses as a tree");
        let default_tree = toml::Value::try_from(Config::default()).expect("serializes");
        for (section, table) in default_tree.as_table().expect("table") {
            for key in table.as_table().expect("section table").keys() {
                assert!(
                    file_tree.get(section).and_then(|s| s.get(key)).is_some(),
                    "config/foghorn.toml does not document {section}.{key}"
                );
            }
        }
        // Every key is reachable from the environment.
        for (section, table) in default_tree.as_table().expect("table") {
            for key in table.as_table().expect("section table").keys() {
                let dotted = format!("{section}.{key}");
                assert!(
                    ENV_KEYS.iter().any(|(_, k)| *k == dotted),
                    "{dotted} has no FOGHORN_* variable"
                );
            }
        }
    }

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
