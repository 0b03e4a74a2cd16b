//! The configuration's shape: every key, its type and its default, and the values derived from
//! them. `config/foghorn.toml` writes out the same defaults, key by key (a test holds them equal).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::parse_proxy;

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
    pub dns: DnsConfig,
    pub log: LogConfig,
}

/// The records of DESIGN.md §2 for every served cluster's zone `{cluster}.{root}`, answered by
/// the built-in server and/or sent to an external primary as RFC 2136 updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Address of the built-in authoritative server, UDP and TCP (`0.0.0.0:53` in production,
    /// with `CAP_NET_BIND_SERVICE`); empty: no built-in server.
    pub listen: String,
    /// The cell's public addresses: `foghorn.{cluster}.{root}` and the zone apex answer with
    /// them (A and AAAA); empty: those names have no address records.
    pub addresses: Vec<String>,
    /// Name servers of every zone (NS, and the SOA's primary); empty: `foghorn.{cluster}.{root}`,
    /// whose addresses are `addresses`.
    pub nameservers: Vec<String>,
    /// TTL of every record.
    #[serde(with = "humantime_serde_compat")]
    pub ttl: Duration,
    /// Most addresses in the `edge` and `edge-ingest` pools, those with the most headroom.
    pub pool_size: usize,
    /// How long an edge that stopped being routable keeps its records, so that a reconnect does
    /// not flap DNS.
    #[serde(with = "humantime_serde_compat")]
    pub hold: Duration,
    /// Networks (CIDRs) allowed to transfer a zone (AXFR, over TCP); empty: every transfer is
    /// refused.
    pub allow_transfer: Vec<String>,
    /// RFC 2136: the primary server (`host:port`) that the leader keeps up to date; empty: none.
    pub update_server: String,
    /// The zone the updates are for; empty: each cluster's own zone `{cluster}.{root}`.
    pub update_zone: String,
    /// TSIG key name the updates are signed with (required with `update_server`).
    pub tsig_key_name: String,
    /// TSIG secret, base64, as in BIND's `key` statement.
    pub tsig_secret: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub tsig_algorithm: String,
    /// How often the primary's records are read back and reconciled whatever changed.
    #[serde(with = "humantime_serde_compat")]
    pub update_interval: Duration,
}

impl DnsConfig {
    /// The built-in server's address, when one is configured (validated at load).
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }

    /// The cell's public addresses (validated at load, so nothing is dropped here).
    pub fn cell_addresses(&self) -> Vec<std::net::IpAddr> {
        self.addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }

    /// The networks allowed to transfer zones.
    pub fn transfer_networks(&self) -> Vec<ipnet::IpNet> {
        self.allow_transfer
            .iter()
            .filter_map(|c| parse_proxy(c))
            .collect()
    }

    /// The TSIG secret's bytes, when it is valid base64 of at least 16 bytes.
    pub fn tsig_secret(&self) -> Option<Vec<u8>> {
        data_encoding::BASE64
            .decode(self.tsig_secret.trim().as_bytes())
            .ok()
            .filter(|key| key.len() >= 16)
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: String::new(),
            addresses: Vec::new(),
            nameservers: Vec::new(),
            ttl: Duration::from_secs(60),
            pool_size: 8,
            hold: Duration::from_secs(60),
            allow_transfer: Vec::new(),
            update_server: String::new(),
            update_zone: String::new(),
            tsig_key_name: String::new(),
            tsig_secret: String::new(),
            tsig_algorithm: "hmac-sha256".into(),
            update_interval: Duration::from_secs(300),
        }
    }
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
    /// Where the certificates come from.
    pub source: TlsSource,
    /// The ACME CA, when `source` is `acme`.
    pub acme: AcmeConfig,
}

/// Where the clusters' certificates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsSource {
    /// `files` when `cert_path` is set, else `dev`.
    Auto,
    /// A development CA under `{data_dir}/tls/`.
    Dev,
    /// `cert_path` and `key_path`, read again every `check_interval`.
    Files,
    /// One certificate per served cluster from an ACME CA, by DNS-01 through Foghorn's DNS.
    Acme,
}

/// The ACME CA that issues the clusters' certificates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// The CA's directory URL (RFC 8555).
    pub directory: String,
    /// Contact e-mail of the account; empty: none.
    pub email: String,
    /// PEM root to trust for the ACME server's own HTTPS; empty: the system roots.
    pub ca_path: String,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            directory: LETS_ENCRYPT.into(),
            email: String::new(),
            ca_path: String::new(),
        }
    }
}

/// Let's Encrypt's production directory, the default ACME CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

impl TlsConfig {
    /// The source in effect (`auto` resolved).
    pub fn effective_source(&self) -> TlsSource {
        match self.source {
            TlsSource::Auto if self.cert_path.is_empty() => TlsSource::Dev,
            TlsSource::Auto => TlsSource::Files,
            other => other,
        }
    }
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
            source: TlsSource::Auto,
            acme: AcmeConfig::default(),
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
    /// How often the always-on peer set is recomputed from the registry whatever happened (the
    /// backstop)...
    #[serde(with = "humantime_serde_compat")]
    pub reconcile_interval: Duration,
    /// ...and how often the registry's topology counter is read: the peers are recomputed as
    /// soon as it moved.
    #[serde(with = "humantime_serde_compat")]
    pub topology_poll: Duration,
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
            topology_poll: Duration::from_secs(1),
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewersConfig {
    /// CIDRs of proxies whose `X-Forwarded-For`, `X-Latitude` and `X-Longitude` are believed.
    pub trusted_proxies: Vec<String>,
    /// Origins whose scripts may read the viewer and MistServer answers (CORS): `["*"]` (any, as
    /// MistServer's balancer), a list of origins (`https://player.example.com`), or none.
    pub cors_origins: Vec<String>,
}

impl Default for ViewersConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            cors_origins: vec!["*".into()],
        }
    }
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
    /// Origins whose scripts may call `/api/v1` (CORS); none by default.
    pub api_cors_origins: Vec<String>,
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
    /// How often a replica tells the others the redirects it charged to each edge, so they count
    /// them too (one PUBLISH per interval); `0s`: never (each replica counts its own only).
    #[serde(with = "humantime_serde_compat")]
    pub pending_share_interval: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            leader_ttl: Duration::from_secs(10),
            pending_share_interval: Duration::from_millis(100),
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
    /// The MistController passphrase (its `prometheus` setting) of the servers added with
    /// `?addserver=`: their load is read from `http://host:4242/{passphrase}.json`.
    pub mist_passphrase: String,
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
            api_cors_origins: Vec::new(),
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
            mist_passphrase: "koekjes".into(),
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

impl Config {
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
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A configuration written as TOML reads back the same: durations, addresses, sizes and
        /// lists are written in the form they are read in.
        #[test]
        fn a_config_written_as_toml_reads_back_the_same(
            secs in 0u64..=10 * 365 * 86_400,
            nanos in 0u32..1_000_000_000,
            ip in any::<std::net::IpAddr>(),
            port in any::<u16>(),
            size in 0..=i64::MAX as usize,
            id in "[a-z0-9][a-z0-9-]{0,62}",
            proxies in proptest::collection::vec("[0-9a-f.:/]{1,12}", 0..4),
            listeners in proptest::sample::select(vec![ListenerTls::Both, ListenerTls::Required, ListenerTls::Off]),
        ) {
            let mut cfg = Config::default();
            cfg.server.shutdown_grace = Duration::new(secs, nanos);
            cfg.server.http_addr = SocketAddr::new(ip, port);
            cfg.server.max_body_bytes = size;
            cfg.cluster.id = id;
            cfg.viewers.trusted_proxies = proxies;
            cfg.tls.listeners = listeners;
            let text = toml::to_string(&cfg).expect("a configuration serializes");
            let read: Config = toml::from_str(&text).expect("and reads back");
            prop_assert_eq!(read, cfg);
        }
    }
}
