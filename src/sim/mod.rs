//! `foghorn sim`: simulated Helmsman edges speaking the real control-stream protocol.
//!
//! Each simulated edge enrolls with an enrollment token (or reuses credentials saved in
//! `--state-dir`), gets a position inside a region, a capacity and a load that drifts, sends
//! `NodeStats` at the interval Foghorn asks for, can publish a stream (`IngestRequest`, then the
//! stream in its stats, then `StreamEnded`), and reconnects with backoff when its stream breaks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::proto::{
    control_message, edge_message, helmsman_control_client::HelmsmanControlClient, register,
    Capabilities, ControlMessage, EdgeMessage, ErrorCode, Hardware, IngestRequest, NodeCredential,
    NodeStats, Register, StreamEnded, StreamStats,
};

/// Flags of `foghorn sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Foghorn gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:18019")]
    pub grpc: String,
    /// Enrollment token for edges without saved credentials (needs --usage-limit ≥ --edges).
    #[arg(long)]
    pub enrollment_token: Option<String>,
    /// Node id reserved by PreRegisterEdge for --enrollment-token; sent by the first edge when it
    /// enrolls, so it keeps that id.
    #[arg(long)]
    pub pre_registered_node_id: Option<String>,
    /// Number of simulated edges.
    #[arg(long, default_value_t = 1)]
    pub edges: usize,
    /// Number of this process's first edge, so several simulator processes sharing one Foghorn
    /// (each below its own file-descriptor limit) simulate distinct hosts: edge `i` reports host
    /// fingerprint `sim-{i}` and saves its credentials as edge `i` in --state-dir.
    #[arg(long, default_value_t = 0)]
    pub first_edge: usize,
    /// Local address the edges' connections come from (e.g. another loopback address, since one
    /// source address has only ~28,000 ephemeral ports towards one Foghorn port).
    #[arg(long)]
    pub local_address: Option<std::net::IpAddr>,
    /// Where node ids and credentials are saved, so a restart reconnects instead of re-enrolling.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Centre of the region edges are placed in, as LAT,LON (southern and western ones start
    /// with `-`: `--region-center -33.87,151.21`).
    #[arg(
        long,
        value_parser = parse_lat_lon,
        default_value = "50.11,8.68",
        allow_hyphen_values = true
    )]
    pub region_center: (f64, f64),
    /// Radius of that region in kilometres.
    #[arg(long, default_value_t = 300.0)]
    pub region_radius_km: f64,
    /// Stream key that the first edge publishes.
    #[arg(long)]
    pub publish: Option<String>,
    /// End the published stream after this long (default: keep it live).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub publish_for: Option<Duration>,
    /// Stats interval; default is the interval Foghorn sends in the ConfigSeed.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Drop and re-open each edge's control stream this often (exercises reconnects).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub reconnect_every: Option<Duration>,
    /// Seed for positions, capacities and load (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// PEM of the CA to trust for an `https://` --grpc (the dev CA is `{data_dir}/tls/ca.pem`);
    /// default: the public web PKI.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Name the Foghorn certificate is checked against (default: the --grpc host), e.g.
    /// foghorn.{cluster}.{root} when dialing it by address.
    #[arg(long)]
    pub tls_domain: Option<String>,
}

pub(crate) fn parse_lat_lon(s: &str) -> Result<(f64, f64), String> {
    let (lat, lon) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?} is not LAT,LON"))?;
    let lat: f64 = lat
        .trim()
        .parse()
        .map_err(|_| format!("bad latitude {lat:?}"))?;
    let lon: f64 = lon
        .trim()
        .parse()
        .map_err(|_| format!("bad longitude {lon:?}"))?;
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok((lat, lon))
}

/// Identity of one enrolled simulated edge, as saved in the state dir.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedIdentity {
    pub node_id: String,
    pub credential: String,
}

/// Fixed traits of one simulated edge.
#[derive(Debug, Clone)]
struct Profile {
    index: usize,
    latitude: f64,
    longitude: f64,
    ram_max: u64,
    bw_limit: u64,
    cores: u32,
}

/// Runs the simulator until killed, or until every edge has failed for good.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    if args.edges == 0 || args.edges > 100_000 {
        bail!("--edges must be between 1 and 100000");
    }
    if args.interval.is_some_and(|i| i < Duration::from_millis(10)) {
        bail!("--interval must be at least 10ms");
    }
    if let Some(dir) = &args.state_dir {
        use std::os::unix::fs::DirBuilderExt as _;
        // Node credentials live there: a new directory is this user's only.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating state dir {}", dir.display()))?;
    }
    let ca = match &args.ca {
        Some(ca) => Some(
            std::fs::read_to_string(ca)
                .with_context(|| format!("reading --ca {}", ca.display()))?,
        ),
        None => None,
    };
    let endpoint = crate::net::grpc_endpoint(&args.grpc, ca, args.tls_domain.clone())
        .context("--grpc")?
        .local_address(args.local_address);
    probe(&args.grpc, &endpoint).await?;
    let mut rng = match args.seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    };
    let args = Arc::new(args);
    let mut tasks = tokio::task::JoinSet::new();
    for index in args.first_edge..args.first_edge.saturating_add(args.edges) {
        let profile = random_profile(index, &args, &mut rng);
        let seed = rng.random();
        tasks.spawn(run_edge(
            args.clone(),
            endpoint.clone(),
            profile,
            StdRng::seed_from_u64(seed),
        ));
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::error!("{e:#}");
            failures.push(e);
        }
    }
    if let Some(first) = failures.first() {
        bail!(
            "{} simulated edge(s) failed for good; first: {first:#}",
            failures.len()
        );
    }
    Ok(())
}

/// How long the first contact with Foghorn may take before the simulator gives up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks Foghorn's `grpc.health.v1` once, before any edge starts. An address where nothing
/// answers, or a TLS client on a plaintext-only port (or the reverse), fails every connection
/// the same way: retrying would only repeat "transport error" forever, so the simulator stops
/// with the cause and what to check.
async fn probe(grpc: &str, endpoint: &Endpoint) -> anyhow::Result<()> {
    let check = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| crate::net::error_chain(&e))?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|status| crate::net::error_chain(&status))?;
        Ok::<(), String>(())
    };
    let failure = match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(why)) => why,
        Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
    };
    bail!(
        "cannot reach Foghorn at {grpc}: {failure}\n  {}",
        hint(grpc)
    )
}

/// What to check when Foghorn cannot be reached at `grpc`.
fn hint(grpc: &str) -> &'static str {
    if grpc.starts_with("https://") {
        "hint: is Foghorn running there, with TLS on its gRPC port? A listener with \
         tls.listeners = \"off\" speaks plaintext only: use http://. With the development CA, \
         pass --ca {data_dir}/tls/ca.pem, and --tls-domain foghorn.{cluster}.{root} when you dial \
         an address."
    } else {
        "hint: is Foghorn running and listening there? A listener with tls.listeners = \
         \"required\" takes TLS only: use https:// with --ca {data_dir}/tls/ca.pem and \
         --tls-domain foghorn.{cluster}.{root}."
    }
}

/// An `Error` frame as a line for the log: the code by name, then the message.
fn describe(error: &crate::proto::Error) -> String {
    let code = ErrorCode::try_from(error.code).map_or_else(
        |_| format!("error code {}", error.code),
        |c| c.as_str_name().to_string(),
    );
    format!("{code}: {}", error.message)
}

fn random_profile(index: usize, args: &SimArgs, rng: &mut StdRng) -> Profile {
    let (lat0, lon0) = args.region_center;
    // Uniform over the disc: radius ∝ sqrt(u).
    let distance = args.region_radius_km * rng.random::<f64>().sqrt();
    let bearing = rng.random::<f64>() * std::f64::consts::TAU;
    let dlat = distance / 111.32 * bearing.cos();
    let dlon = distance / (111.32 * lat0.to_radians().cos().max(0.01)) * bearing.sin();
    Profile {
        index,
        latitude: (lat0 + dlat).clamp(-90.0, 90.0),
        longitude: ((lon0 + dlon + 540.0) % 360.0) - 180.0,
        ram_max: [8u64, 16, 32, 64][rng.random_range(0..4)] << 30,
        bw_limit: [125_000_000u64, 250_000_000, 1_250_000_000][rng.random_range(0..3)],
        cores: [4, 8, 16, 32][rng.random_range(0..4)],
    }
}

fn identity_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("edge-{index}.json"))
}

fn load_identity(args: &SimArgs, index: usize) -> anyhow::Result<Option<SavedIdentity>> {
    let Some(dir) = &args.state_dir else {
        return Ok(None);
    };
    let path = identity_path(dir, index);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            // Files saved by older simulators were readable by everyone.
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode());
            if mode.is_ok_and(|m| m & 0o077 != 0) {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("making {} private", path.display()))?;
            }
            Ok(Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("reading {}", path.display()))?,
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Saves a node's credential where only this user can read it (0600, through a temporary file
/// and a rename, so a crash never leaves half a file). It is a secret: whoever reads it can
/// connect as the node.
fn save_identity(args: &SimArgs, index: usize, id: &SavedIdentity) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let Some(dir) = &args.state_dir else {
        return Ok(());
    };
    let path = identity_path(dir, index);
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec_pretty(id)?)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// Drifting load of one edge.
#[derive(Debug, Default)]
struct Load {
    cpu_tenths: f64,
    ram_fraction: f64,
    viewers: u32,
}

impl Load {
    fn step(&mut self, rng: &mut StdRng) {
        self.cpu_tenths = (self.cpu_tenths + rng.random_range(-40.0..40.0)).clamp(20.0, 900.0);
        self.ram_fraction = (self.ram_fraction + rng.random_range(-0.03..0.03)).clamp(0.1, 0.9);
        let dv: i64 = rng.random_range(-5..=5);
        self.viewers = (i64::from(self.viewers) + dv).clamp(0, 5_000) as u32;
    }
}

/// Why a session of one edge ended.
enum SessionEnd {
    /// Reconnect after a pause.
    Retry(String),
    /// Give up on this edge (refused credentials, protocol mismatch).
    Fatal(String),
}

async fn run_edge(
    args: Arc<SimArgs>,
    endpoint: Endpoint,
    profile: Profile,
    mut rng: StdRng,
) -> anyhow::Result<()> {
    let mut identity = load_identity(&args, profile.index)?;
    let mut load = Load {
        cpu_tenths: rng.random_range(50.0..400.0),
        ram_fraction: rng.random_range(0.2..0.5),
        viewers: rng.random_range(0..50),
    };
    const FIRST_BACKOFF: Duration = Duration::from_millis(200);
    let mut delays = crate::retry::backoff(FIRST_BACKOFF, Duration::from_secs(10));
    let mut published_since: Option<tokio::time::Instant> = None;
    loop {
        let mut seeded = false;
        match session(
            &mut seeded,
            &args,
            &endpoint,
            &profile,
            &mut identity,
            &mut load,
            &mut rng,
            &mut published_since,
        )
        .await
        {
            SessionEnd::Fatal(why) => bail!("edge {}: {why}", profile.index),
            SessionEnd::Retry(why) => {
                // A session that got as far as its ConfigSeed worked: back off afresh.
                if seeded {
                    delays = crate::retry::backoff(FIRST_BACKOFF, Duration::from_secs(10));
                }
                tracing::warn!(
                    edge = profile.index,
                    "control stream ended: {why}; reconnecting"
                );
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn register_frame(
    args: &SimArgs,
    profile: &Profile,
    identity: &Option<SavedIdentity>,
) -> Result<EdgeMessage, SessionEnd> {
    let auth = match (identity, &args.enrollment_token) {
        (Some(id), _) => register::Auth::NodeCredential(NodeCredential {
            node_id: id.node_id.clone(),
            credential: id.credential.clone(),
        }),
        (None, Some(token)) => register::Auth::EnrollmentToken(token.clone()),
        (None, None) => {
            return Err(SessionEnd::Fatal(
                "no saved credentials and no --enrollment-token".into(),
            ))
        }
    };
    Ok(EdgeMessage {
        payload: Some(edge_message::Payload::Register(Register {
            protocol_version: crate::edge::PROTOCOL_VERSION,
            auth: Some(auth),
            capabilities: Some(Capabilities {
                ingest: true,
                edge: true,
                storage: false,
                processing: false,
            }),
            public_base_url: String::new(),
            hardware: Some(Hardware {
                cpu_cores: profile.cores,
                ram_bytes: profile.ram_max,
                disk_bytes: 500 << 30,
            }),
            host_fingerprint: format!("sim-{}", profile.index),
            // Only the first edge of this process was pre-registered; the others get fresh ids.
            pre_registered_node_id: match identity {
                None if profile.index == args.first_edge => {
                    args.pre_registered_node_id.clone().unwrap_or_default()
                }
                _ => String::new(),
            },
        })),
    })
}

#[allow(clippy::too_many_arguments)]
async fn session(
    seeded: &mut bool,
    args: &SimArgs,
    endpoint: &Endpoint,
    profile: &Profile,
    identity: &mut Option<SavedIdentity>,
    load: &mut Load,
    rng: &mut StdRng,
    published_since: &mut Option<tokio::time::Instant>,
) -> SessionEnd {
    let register = match register_frame(args, profile, identity) {
        Ok(r) => r,
        Err(end) => return end,
    };
    let channel: Channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => {
            return SessionEnd::Retry(format!(
                "cannot reach {}: {} ({})",
                args.grpc,
                crate::net::error_chain(&e),
                hint(&args.grpc)
            ))
        }
    };
    let mut client = HelmsmanControlClient::new(channel);
    let (tx, rx) = mpsc::channel::<EdgeMessage>(16);
    if tx.send(register).await.is_err() {
        return SessionEnd::Retry("outbound closed".into());
    }
    let mut inbound = match client.connect(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            return SessionEnd::Retry(format!(
                "Connect refused: {}",
                crate::net::error_chain(&status)
            ))
        }
    };

    // The first answer is a ConfigSeed or an Error.
    let seed = match inbound.message().await {
        Ok(Some(ControlMessage {
            payload: Some(control_message::Payload::ConfigSeed(seed)),
        })) => seed,
        Ok(Some(ControlMessage {
            payload: Some(control_message::Payload::Error(err)),
        })) => {
            let code = ErrorCode::try_from(err.code).unwrap_or(ErrorCode::Unspecified);
            let why = describe(&err);
            return match code {
                ErrorCode::EnrollmentFailed
                | ErrorCode::EnrollmentRequired
                | ErrorCode::Unauthenticated
                | ErrorCode::ProtocolVersion => SessionEnd::Fatal(why),
                _ => SessionEnd::Retry(why),
            };
        }
        Ok(other) => return SessionEnd::Retry(format!("unexpected first answer {other:?}")),
        Err(status) => {
            return SessionEnd::Retry(format!(
                "stream failed: {}",
                crate::net::error_chain(&status)
            ))
        }
    };
    *seeded = true;
    if tx.send(applied(profile, &seed)).await.is_err() {
        return SessionEnd::Retry("outbound closed".into());
    }
    if !seed.node_credential.is_empty() {
        let id = SavedIdentity {
            node_id: seed.node_id.clone(),
            credential: seed.node_credential.clone(),
        };
        if let Err(e) = save_identity(args, profile.index, &id) {
            return SessionEnd::Fatal(format!("{e:#}"));
        }
        *identity = Some(id);
        tracing::info!(edge = profile.index, node_id = %seed.node_id, domain = %seed.edge_domain, "enrolled");
    } else {
        tracing::info!(edge = profile.index, node_id = %seed.node_id, "reconnected");
    }
    let interval = args.interval.unwrap_or(Duration::from_millis(u64::from(
        seed.stats_interval_ms.max(100),
    )));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reconnect_at = args
        .reconnect_every
        .map(|d| tokio::time::Instant::now() + d);

    let publishes = profile.index == args.first_edge && args.publish.is_some();
    let mut live_stream: Option<String> = None;
    if publishes && !publish_window_over(args, *published_since) {
        let request = EdgeMessage {
            payload: Some(edge_message::Payload::IngestRequest(IngestRequest {
                request_id: format!("sim-{}", rng.random::<u32>()),
                stream_key: args.publish.clone().unwrap_or_default(),
                protocol: "rtmp".into(),
                publisher_ip: "127.0.0.1".into(),
            })),
        };
        if tx.send(request).await.is_err() {
            return SessionEnd::Retry("outbound closed".into());
        }
    }

    loop {
        let reconnect = async {
            match reconnect_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ticker.tick() => {
                if let (Some(name), true) = (&live_stream, publish_window_over(args, *published_since)) {
                    let ended = EdgeMessage { payload: Some(edge_message::Payload::StreamEnded(StreamEnded {
                        internal_name: name.clone(), reason: "publisher disconnected".into(),
                    }))};
                    tracing::info!(edge = profile.index, stream = %name, "stream ended");
                    live_stream = None;
                    if tx.send(ended).await.is_err() {
                        return SessionEnd::Retry("outbound closed".into());
                    }
                }
                load.step(rng);
                if tx.send(stats_frame(profile, load, live_stream.as_deref())).await.is_err() {
                    return SessionEnd::Retry("outbound closed".into());
                }
            }
            msg = inbound.message() => match msg {
                Ok(Some(ControlMessage { payload: Some(control_message::Payload::IngestDecision(d)) })) => {
                    if d.accept {
                        tracing::info!(edge = profile.index, stream = %d.internal_name, "publishing");
                        published_since.get_or_insert_with(tokio::time::Instant::now);
                        live_stream = Some(d.internal_name);
                    } else {
                        tracing::warn!(edge = profile.index, reason = %d.reason, "ingest refused");
                    }
                }
                Ok(Some(ControlMessage { payload: Some(control_message::Payload::ConfigSeed(seed)) })) => {
                    if tx.send(applied(profile, &seed)).await.is_err() {
                        return SessionEnd::Retry("outbound closed".into());
                    }
                }
                Ok(Some(ControlMessage { payload: Some(control_message::Payload::Error(err)) })) => {
                    return SessionEnd::Retry(describe(&err));
                }
                Ok(Some(other)) => tracing::debug!(edge = profile.index, ?other, "control message"),
                Ok(None) => return SessionEnd::Retry("Foghorn closed the stream".into()),
                Err(status) => return SessionEnd::Retry(format!("stream failed: {}", crate::net::error_chain(&status))),
            },
            _ = reconnect => return SessionEnd::Retry("scheduled reconnect".into()),
        }
    }
}

/// What a Helmsman answers a ConfigSeed with: whether it could install the cluster certificate
/// (a real one hands it to Caddy; this one checks that it is there and not expired).
fn applied(profile: &Profile, seed: &crate::proto::ConfigSeed) -> EdgeMessage {
    let now = crate::registry::now_ms() / 1000;
    let problem = match &seed.tls {
        None => Some(
            "no cluster certificate in the ConfigSeed (it only comes over TLS: --grpc https://...)",
        ),
        Some(t) if !t.cert_chain_pem.contains("BEGIN CERTIFICATE") => {
            Some("the certificate is not PEM")
        }
        Some(t) if !t.private_key_pem.contains("PRIVATE KEY") => Some("the key is not PEM"),
        Some(t) if t.expires_at_unix <= now => Some("the certificate has expired"),
        Some(_) => None,
    };
    match problem {
        None => tracing::info!(
            edge = profile.index,
            seed = seed.seed_version,
            expires_at = seed.tls.as_ref().map_or(0, |t| t.expires_at_unix),
            "cluster certificate installed"
        ),
        Some(why) => tracing::warn!(
            edge = profile.index,
            seed = seed.seed_version,
            why,
            "ConfigSeed not applied"
        ),
    }
    EdgeMessage {
        payload: Some(edge_message::Payload::ConfigApplied(
            crate::proto::ConfigApplied {
                seed_version: seed.seed_version,
                success: problem.is_none(),
                error: problem.unwrap_or_default().to_string(),
            },
        )),
    }
}

fn publish_window_over(args: &SimArgs, since: Option<tokio::time::Instant>) -> bool {
    match (args.publish_for, since) {
        (Some(d), Some(t)) => t.elapsed() >= d,
        _ => false,
    }
}

fn stats_frame(profile: &Profile, load: &Load, live_stream: Option<&str>) -> EdgeMessage {
    // ~2.5 Mbit/s per viewer, capped by the node's limit.
    let per_viewer = 312_500u64;
    let up = (u64::from(load.viewers) * per_viewer).min(profile.bw_limit);
    let streams = live_stream
        .map(|name| {
            vec![StreamStats {
                internal_name: name.to_string(),
                viewers: load.viewers,
                inputs: 1,
                up_bytes_per_sec: up,
                down_bytes_per_sec: per_viewer,
                replicated: false,
            }]
        })
        .unwrap_or_default();
    EdgeMessage {
        payload: Some(edge_message::Payload::NodeStats(NodeStats {
            cpu_tenths: load.cpu_tenths as u32,
            ram_max_bytes: profile.ram_max,
            ram_used_bytes: (profile.ram_max as f64 * load.ram_fraction) as u64,
            up_bytes_per_sec: up,
            down_bytes_per_sec: per_viewer * streams.len() as u64,
            bw_limit_bytes_per_sec: profile.bw_limit,
            latitude: Some(profile.latitude),
            longitude: Some(profile.longitude),
            location_name: format!("sim-{}", profile.index),
            connections: load.viewers,
            streams,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_stay_inside_the_region() {
        let args = SimArgs {
            grpc: String::new(),
            enrollment_token: None,
            pre_registered_node_id: None,
            edges: 1,
            first_edge: 0,
            local_address: None,
            state_dir: None,
            region_center: (48.85, 2.35),
            region_radius_km: 100.0,
            publish: None,
            publish_for: None,
            interval: None,
            reconnect_every: None,
            ca: None,
            tls_domain: None,
            seed: Some(7),
        };
        let mut rng = StdRng::seed_from_u64(7);
        for i in 0..500 {
            let p = random_profile(i, &args, &mut rng);
            let dlat = (p.latitude - 48.85) * 111.32;
            let dlon = (p.longitude - 2.35) * 111.32 * 48.85f64.to_radians().cos();
            assert!((dlat * dlat + dlon * dlon).sqrt() <= 100.5, "{p:?}");
        }
    }

    #[test]
    fn error_frames_are_logged_by_code_name() {
        let frame = |code: ErrorCode| crate::proto::Error {
            code: code as i32,
            message: "newer session".into(),
        };
        assert_eq!(
            describe(&frame(ErrorCode::SessionReplaced)),
            "SESSION_REPLACED: newer session"
        );
        let unknown = crate::proto::Error {
            code: 99,
            message: "?".into(),
        };
        assert_eq!(describe(&unknown), "error code 99: ?");
    }

    #[test]
    fn lat_lon_parsing() {
        assert_eq!(parse_lat_lon("48.85, 2.35"), Ok((48.85, 2.35)));
        assert_eq!(parse_lat_lon("-33.87,151.21"), Ok((-33.87, 151.21)));
        assert_eq!(parse_lat_lon("40.71,-74.01"), Ok((40.71, -74.01)));
        assert!(parse_lat_lon("91,0").is_err());
        assert!(parse_lat_lon("x").is_err());
    }
}
