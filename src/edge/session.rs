//! One Helmsman control session under the rules of DESIGN.md §4, free of any transport.
//!
//! A session opens with a `Register`: it must be the first frame and come within
//! `register_timeout` ([`await_register`]). [`Register::check`] bounds it and says what to ask the
//! registry ([`Hello`]); the registry's [`Verdict`] admits the node or ends the session
//! ([`Hello::admit`]), so wrong or missing credentials register nothing. The admitted node is
//! attached to the [`EdgeState`] as a [`Session`], which replaces any older session of the node,
//! and gets its first [`Seed`], the only one that may carry the credential an enrollment minted.
//! Every later frame is attributed to that node, never to an id inside the payload
//! ([`Session::on_frame`]): it answers with a [`Step`] for the adapter to carry out, or with the
//! [`End`] of the session. Between frames, Foghorn's shutdown and a newer session of the node end
//! the session before any frame does ([`Session::next_frame`]). When it ends, [`Session::close`]
//! makes the edge unroutable at once and says whether its streams stop being live.
//!
//! The gRPC adapter (`grpc::helmsman`) decodes frames into these types, asks the registry what a
//! [`Hello`] or a [`Step`] calls for (and implements [`IngestRegistry`] for ingest decisions),
//! encodes seeds, decisions and ends, and runs the stream.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    check_base_url, Capabilities, EdgeInfo, EdgeState, Mode, SessionHandle, Stats, StreamLoad,
};

pub use super::PROTOCOL_VERSION;

/// Ingest requests one session may have awaiting a decision at once; more are refused as busy
/// (the publisher retries) without ending the session.
pub const MAX_PENDING_INGESTS: usize = 16;

/// Shown in `Debug` output in place of a secret.
const REDACTED: &str = "<redacted>";

/// The bounds of every session (`edges.*` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a new connection may take to send its Register.
    pub register_timeout: Duration,
    /// Budget for deciding one IngestRequest.
    pub ingest_timeout: Duration,
    /// Longest string accepted in any field of any frame.
    pub max_string_bytes: usize,
    /// Most streams one NodeStats may list.
    pub max_streams_per_node: usize,
}

impl Limits {
    /// `value` when it is within the string bound; else why not, naming `field`.
    pub fn bounded<'a>(&self, field: &str, value: &'a str) -> Result<&'a str, String> {
        if value.len() > self.max_string_bytes {
            return Err(format!(
                "{field} is {} bytes, more than the {} allowed",
                value.len(),
                self.max_string_bytes
            ));
        }
        Ok(value)
    }
}

/// Why a session ends, as the edge is told (the error codes of DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCode {
    /// The Register carried neither an enrollment token nor a node credential.
    EnrollmentRequired,
    /// The enrollment token was refused.
    EnrollmentFailed,
    /// The node credential was refused.
    Unauthenticated,
    /// The Register spoke another protocol version.
    ProtocolVersion,
    /// A malformed, out-of-bounds or out-of-order frame.
    ProtocolViolation,
    /// A frame above the size limit, or an edge that stopped reading its stream.
    LimitExceeded,
    /// A newer session of the node replaced this one.
    SessionReplaced,
    /// Foghorn is shutting down; the edge reconnects (elsewhere).
    ShuttingDown,
    /// Foghorn failed (its registry); the edge retries later.
    Internal,
    /// The edge went away while being written to; nobody hears the reason.
    Gone,
}

/// The end of a session: its code and a message for the edge (never internals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub code: EndCode,
    pub message: String,
}

impl End {
    /// An end with `code`, telling the edge `message`.
    pub fn new(code: EndCode, message: impl Into<String>) -> Self {
        End {
            code,
            message: message.into(),
        }
    }

    /// The edge broke the protocol.
    pub fn violation(message: impl Into<String>) -> Self {
        End::new(EndCode::ProtocolViolation, message)
    }

    /// Foghorn is shutting down: every session ends, and the edges reconnect elsewhere.
    pub fn shutting_down() -> Self {
        End::new(EndCode::ShuttingDown, "Foghorn is shutting down; reconnect")
    }

    /// A newer session of the node (here or on another replica) took over.
    pub fn replaced() -> Self {
        End::new(
            EndCode::SessionReplaced,
            "a newer connection of this node replaced this one",
        )
    }

    /// The transport could not read a frame: above the size limit (`too_large`) or malformed.
    pub fn unreadable(too_large: bool, detail: &str) -> Self {
        let code = if too_large {
            EndCode::LimitExceeded
        } else {
            EndCode::ProtocolViolation
        };
        End::new(code, format!("unreadable frame: {detail}"))
    }

    /// The edge left its outbound buffer full too long: it is stuck.
    pub fn not_reading() -> Self {
        End::new(
            EndCode::LimitExceeded,
            "the edge is not reading its control stream",
        )
    }

    /// The edge's stream closed while Foghorn was writing to it.
    pub fn gone() -> Self {
        End::new(EndCode::Gone, "edge went away")
    }

    /// Whether the edge misbehaved (a bad or oversized frame, a stuck stream), as opposed to
    /// being refused, replaced, or leaving.
    pub fn blames_edge(&self) -> bool {
        matches!(
            self.code,
            EndCode::ProtocolViolation | EndCode::LimitExceeded
        )
    }
}

/// An edge frame, decoded from the wire but not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A frame without a payload.
    Empty,
    Register(Register),
    NodeStats(StatsReport),
    IngestRequest(IngestRequest),
    StreamEnded {
        internal_name: String,
    },
    /// `Err`: the wire carried a mode this protocol does not know (what the decoder saw).
    ModeChange(Result<Mode, String>),
    ConfigApplied {
        seed_version: u64,
        success: bool,
        error: String,
    },
}

impl Frame {
    /// The frame's name on the wire, for metrics; `None` for an empty frame.
    pub fn kind(&self) -> Option<&'static str> {
        Some(match self {
            Frame::Empty => return None,
            Frame::Register(_) => "register",
            Frame::NodeStats(_) => "node_stats",
            Frame::IngestRequest(_) => "ingest_request",
            Frame::StreamEnded { .. } => "stream_ended",
            Frame::ModeChange(_) => "mode_change",
            Frame::ConfigApplied { .. } => "config_applied",
        })
    }
}

/// How a Register proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// First boot: an enrollment token.
    EnrollmentToken(String),
    /// Every later boot: the identity minted at enrollment.
    Node { node_id: String, credential: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::EnrollmentToken(_) => {
                f.debug_tuple("EnrollmentToken").field(&REDACTED).finish()
            }
            Credentials::Node { node_id, .. } => f
                .debug_struct("Node")
                .field("node_id", node_id)
                .field("credential", &REDACTED)
                .finish(),
        }
    }
}

/// The hardware a node reports at registration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hardware {
    pub cpu_cores: u32,
    pub ram_bytes: u64,
    pub disk_bytes: u64,
}

/// The first frame of a session, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Register {
    pub protocol_version: u32,
    pub auth: Option<Credentials>,
    pub capabilities: Capabilities,
    pub public_base_url: String,
    pub hardware: Hardware,
    pub host_fingerprint: String,
    /// Set when the node was pre-registered and enrolls with a token; empty otherwise.
    pub pre_registered_node_id: String,
}

/// What a checked Register asks of the registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// Enroll with `token` (validated and consumed in one transaction), under the node id
    /// pre-registration reserved for this very token, if any.
    Enroll {
        token: String,
        requested_node_id: Option<String>,
    },
    /// Authenticate a node enrolled before.
    Node { node_id: String, credential: String },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Enroll {
                requested_node_id, ..
            } => f
                .debug_struct("Enroll")
                .field("token", &REDACTED)
                .field("requested_node_id", requested_node_id)
                .finish(),
            Auth::Node { node_id, .. } => f
                .debug_struct("Node")
                .field("node_id", node_id)
                .field("credential", &REDACTED)
                .finish(),
        }
    }
}

/// A Register that passed the checks: who the edge claims to be and what it says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub auth: Auth,
    pub capabilities: Capabilities,
    /// In normal form; empty when the edge goes by its standard name.
    pub public_base_url: String,
    pub host_fingerprint: String,
    pub hardware: Hardware,
}

impl Register {
    /// The checks made before any registry call, in this order: the protocol version, the string
    /// bounds, a clean base URL, then credentials of one kind or the other within bounds.
    pub fn check(self, limits: &Limits) -> Result<Hello, End> {
        if self.protocol_version != PROTOCOL_VERSION {
            return Err(End::new(
                EndCode::ProtocolVersion,
                format!(
                    "protocol version {} is not supported; this Foghorn speaks {PROTOCOL_VERSION}",
                    self.protocol_version
                ),
            ));
        }
        for (field, value) in [
            ("public_base_url", self.public_base_url.as_str()),
            ("host_fingerprint", self.host_fingerprint.as_str()),
            (
                "pre_registered_node_id",
                self.pre_registered_node_id.as_str(),
            ),
        ] {
            limits.bounded(field, value).map_err(End::violation)?;
        }
        let public_base_url = normal_base_url(&self.public_base_url)?;
        let auth = match self.auth {
            Some(Credentials::EnrollmentToken(token)) => {
                limits
                    .bounded("enrollment_token", &token)
                    .map_err(End::violation)?;
                Auth::Enroll {
                    token,
                    // Only an id PreRegisterEdge reserved for this very token is honoured.
                    requested_node_id: Some(self.pre_registered_node_id)
                        .filter(|id| !id.is_empty()),
                }
            }
            Some(Credentials::Node {
                node_id,
                credential,
            }) => {
                limits
                    .bounded("node_id", &node_id)
                    .map_err(End::violation)?;
                limits
                    .bounded("credential", &credential)
                    .map_err(End::violation)?;
                Auth::Node {
                    node_id,
                    credential,
                }
            }
            None => {
                return Err(End::new(
                    EndCode::EnrollmentRequired,
                    "Register carries neither an enrollment token nor a node credential",
                ))
            }
        };
        Ok(Hello {
            auth,
            capabilities: self.capabilities,
            public_base_url,
            host_fingerprint: self.host_fingerprint,
            hardware: self.hardware,
        })
    }
}

/// The base URL an edge registered, in normal form (empty: it goes by its standard name). Every
/// redirect to the edge starts with it, so anything that is not a clean absolute URL is refused
/// here rather than turned into a broken `Location` for a viewer later.
fn normal_base_url(given: &str) -> Result<String, End> {
    if given.is_empty() {
        return Ok(String::new());
    }
    check_base_url(given).map_err(|e| End::violation(format!("public_base_url {e}")))
}

/// The node a session speaks for, as the registry knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub node_id: String,
    pub cluster_id: String,
    /// The tenant owning a self-hosted node; `None` for platform nodes.
    pub owner_tenant_id: Option<String>,
}

/// What the registry answered to a [`Hello`]'s credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Enrolled or authenticated; `credential`: the one this enrollment minted.
    Admitted {
        node: Identity,
        credential: Option<String>,
    },
    /// Refused; the message is what the edge may be told.
    Refused(String),
    /// The registry failed (the adapter logs why); the edge may retry.
    Unavailable,
}

impl fmt::Debug for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Admitted { node, credential } => f
                .debug_struct("Admitted")
                .field("node", node)
                .field("credential", &credential.as_ref().map(|_| REDACTED))
                .finish(),
            Verdict::Refused(message) => f.debug_tuple("Refused").field(message).finish(),
            Verdict::Unavailable => f.write_str("Unavailable"),
        }
    }
}

/// A node the registry admitted, not yet attached.
#[derive(Clone, PartialEq)]
pub struct Admitted {
    pub node: Identity,
    /// What the edge state records about the node for this session.
    pub info: EdgeInfo,
    credential: Option<String>,
}

impl fmt::Debug for Admitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admitted")
            .field("node", &self.node)
            .field("info", &self.info)
            .field("credential", &self.credential.as_ref().map(|_| REDACTED))
            .finish()
    }
}

impl Hello {
    /// Admits the node or ends the session: a refused token ends it with `ENROLLMENT_FAILED`, a
    /// refused node credential with `UNAUTHENTICATED`, a failing registry with `INTERNAL`. A
    /// credential is kept only when it answers an enrollment: it is sent once, in the first seed.
    pub fn admit(self, verdict: Verdict, peer_ip: Option<IpAddr>) -> Result<Admitted, End> {
        match verdict {
            Verdict::Admitted { node, credential } => Ok(Admitted {
                info: EdgeInfo {
                    cluster_id: node.cluster_id.clone(),
                    owner_tenant_id: node.owner_tenant_id.clone(),
                    capabilities: self.capabilities,
                    public_base_url: self.public_base_url,
                    peer_ip: peer_ip.map(crate::net::canonical_ip),
                },
                node,
                credential: credential.filter(|_| matches!(self.auth, Auth::Enroll { .. })),
            }),
            Verdict::Refused(message) => {
                let code = match self.auth {
                    Auth::Enroll { .. } => EndCode::EnrollmentFailed,
                    Auth::Node { .. } => EndCode::Unauthenticated,
                };
                Err(End::new(code, message))
            }
            Verdict::Unavailable => Err(End::new(EndCode::Internal, "internal error, retry later")),
        }
    }
}

impl Admitted {
    /// The lowest fencing token the new session may take (with replicas): above every session of
    /// this node seen so far, here or on another replica, so the newest session is the one that
    /// lives.
    pub fn token_floor(&self, edges: &EdgeState) -> u64 {
        edges.known_token(&self.node.node_id).saturating_add(1)
    }
}

/// A ConfigSeed to send; the adapter adds the names, the stats interval and the certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed {
    /// 1 for the first seed of a session, one more for each later one.
    pub version: u64,
    pub mode: Mode,
    /// Only in the first seed after an enrollment; never again.
    pub credential: Option<String>,
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seed")
            .field("version", &self.version)
            .field("mode", &self.mode)
            .field("credential", &self.credential.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// A NodeStats report as the edge sent it, before the bounds of §4.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsReport {
    /// Tenths of a percent; above 1000 is refused.
    pub cpu_tenths: u32,
    pub ram_max_bytes: u64,
    pub ram_used_bytes: u64,
    pub up_bytes_per_sec: u64,
    pub down_bytes_per_sec: u64,
    pub bw_limit_bytes_per_sec: u64,
    /// Sent together with `longitude` or not at all.
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub location_name: String,
    pub connections: u32,
    pub streams: Vec<StreamLoad>,
}

impl StatsReport {
    /// The report as [`Stats`] when it keeps every bound; else why not. RAM used above RAM max is
    /// kept as reported (scoring saturates).
    pub fn check(self, limits: &Limits) -> Result<Stats, String> {
        if self.cpu_tenths > 1000 {
            return Err(format!("cpu_tenths {} is above 1000", self.cpu_tenths));
        }
        let (latitude, longitude) = match (self.latitude, self.longitude) {
            (Some(lat), Some(lon)) => {
                if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                    return Err(format!("position ({lat}, {lon}) is out of range"));
                }
                (Some(lat), Some(lon))
            }
            (None, None) => (None, None),
            _ => return Err("latitude and longitude must be sent together".into()),
        };
        if self.streams.len() > limits.max_streams_per_node {
            return Err(format!(
                "{} streams listed, more than the {} allowed",
                self.streams.len(),
                limits.max_streams_per_node
            ));
        }
        limits.bounded("location_name", &self.location_name)?;
        for s in &self.streams {
            limits.bounded("stream internal_name", &s.internal_name)?;
            if s.internal_name.is_empty() {
                return Err("a stream has an empty internal_name".into());
            }
        }
        Ok(Stats {
            cpu_tenths: self.cpu_tenths as u16,
            ram_max_bytes: self.ram_max_bytes,
            ram_used_bytes: self.ram_used_bytes,
            up_bytes_per_sec: self.up_bytes_per_sec,
            down_bytes_per_sec: self.down_bytes_per_sec,
            bw_limit_bytes_per_sec: self.bw_limit_bytes_per_sec,
            latitude,
            longitude,
            location_name: self.location_name,
            connections: self.connections,
            streams: self.streams,
        })
    }
}

/// A publisher connected to the edge with a stream key; the edge blocks it until it gets a
/// decision.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IngestRequest {
    /// Echoed in the decision, so several requests may be in flight.
    pub request_id: String,
    pub stream_key: String,
    pub protocol: String,
    pub publisher_ip: String,
}

impl fmt::Debug for IngestRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestRequest")
            .field("request_id", &self.request_id)
            .field("stream_key", &REDACTED)
            .field("protocol", &self.protocol)
            .field("publisher_ip", &self.publisher_ip)
            .finish()
    }
}

/// What a frame asks the adapter to do.
#[derive(Debug)]
pub enum Step {
    /// Nothing more.
    Nothing,
    /// Record as live on this node the origin streams it reported for the first time in this
    /// session (after a reconnect, or when recording its ingest failed) and that the registry
    /// does not know live anywhere. They are not asked again in this session, whatever the
    /// outcome.
    ClaimLive(Vec<String>),
    /// Decide this ingest request off the session's task (so a slow registry never stalls the
    /// edge's stats) and send the decision.
    Ingest(IngestTicket),
    /// The edge ended this stream: no longer live on this node (and only on this node: an edge
    /// can only end what is live on itself).
    StreamEnded(String),
    /// Send this seed (the edge changed its mode).
    Seed(Seed),
    /// The edge could not apply seed `version`; `error` is its reason, bounded.
    SeedFailed { version: u64, error: String },
}

/// The first frame of a session: `None` when the edge hung up before saying anything. Anything
/// but a Register first, or nothing within `register_timeout`, ends the session; so does
/// Foghorn's shutdown.
pub async fn await_register<F>(
    limits: &Limits,
    shutdown: &CancellationToken,
    read: F,
) -> Result<Option<Register>, End>
where
    F: Future<Output = Result<Option<Frame>, End>>,
{
    let first =
        match tokio::time::timeout(limits.register_timeout, ended_or(shutdown, None, read)).await {
            Err(_) => {
                return Err(End::violation(format!(
                    "no Register frame within {:?}",
                    limits.register_timeout
                )))
            }
            Ok(frame) => frame?,
        };
    match first {
        None => Ok(None),
        Some(Frame::Register(register)) => Ok(Some(register)),
        Some(_) => Err(End::violation("the first frame must be Register")),
    }
}

/// Waits for `read` unless the session ends first: Foghorn shutting down comes first, then a
/// newer session of the node (`replaced`), then the frame.
async fn ended_or<T>(
    shutdown: &CancellationToken,
    replaced: Option<&CancellationToken>,
    read: impl Future<Output = Result<Option<T>, End>>,
) -> Result<Option<T>, End> {
    let replaced = async {
        match replaced {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Err(End::shutting_down()),
        _ = replaced => Err(End::replaced()),
        frame = read => frame,
    }
}

/// One admitted node's open session, attached to the edge state.
#[derive(Debug)]
pub struct Session {
    edges: Arc<EdgeState>,
    handle: SessionHandle,
    node: Identity,
    info: EdgeInfo,
    mode: Mode,
    seed_version: u64,
    /// Origin streams this session reported (and had reconciled with the registry).
    origins: HashSet<String>,
    /// Permits of the ingest requests awaiting a decision.
    ingests: Arc<Semaphore>,
    limits: Limits,
}

impl Session {
    /// Attaches an admitted node to `edges` under fencing `token` (0: none), replacing (closing)
    /// any older session of the node. Returns the session and its first seed, the only one that
    /// carries the credential an enrollment minted. The mode is the node's last known one, so a
    /// draining edge that reconnects is still draining.
    pub fn attach(
        edges: Arc<EdgeState>,
        admitted: Admitted,
        token: u64,
        limits: Limits,
    ) -> (Session, Seed) {
        let handle = edges.attach(&admitted.node.node_id, admitted.info.clone(), token);
        let seed = Seed {
            version: 1,
            mode: handle.mode,
            credential: admitted.credential,
        };
        let session = Session {
            mode: handle.mode,
            edges,
            handle,
            node: admitted.node,
            info: admitted.info,
            seed_version: seed.version,
            origins: HashSet::new(),
            ingests: Arc::new(Semaphore::new(MAX_PENDING_INGESTS)),
            limits,
        };
        (session, seed)
    }

    /// The node every frame of this session is attributed to.
    pub fn node(&self) -> &Identity {
        &self.node
    }

    /// This session's id in the edge state (unique in this process).
    pub fn id(&self) -> u64 {
        self.handle.session_id
    }

    /// The node's current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The next frame (`None`: the edge went away), unless the session ends first: Foghorn
    /// shutting down ends it first, then a newer session of the node.
    pub async fn next_frame<F>(
        &self,
        shutdown: &CancellationToken,
        read: F,
    ) -> Result<Option<Frame>, End>
    where
        F: Future<Output = Result<Option<Frame>, End>>,
    {
        ended_or(shutdown, Some(&self.handle.replaced), read).await
    }

    /// Takes a frame after the Register: what to do about it, or why the session ends.
    pub fn on_frame(&mut self, frame: Frame) -> Result<Step, End> {
        match frame {
            Frame::Empty => Err(End::violation("empty frame")),
            Frame::Register(_) => Err(End::violation("Register may only be the first frame")),
            Frame::NodeStats(report) => {
                let stats = report
                    .check(&self.limits)
                    .map_err(|why| End::violation(format!("bad NodeStats: {why}")))?;
                let reported: HashSet<String> = stats
                    .streams
                    .iter()
                    .filter(|s| s.inputs > 0 && !s.replicated)
                    .map(|s| s.internal_name.clone())
                    .collect();
                self.edges.apply_stats(&self.handle, stats);
                let claim: Vec<String> = reported.difference(&self.origins).cloned().collect();
                self.origins = reported;
                Ok(if claim.is_empty() {
                    Step::Nothing
                } else {
                    Step::ClaimLive(claim)
                })
            }
            Frame::IngestRequest(request) => self.take_ingest(request).map(Step::Ingest),
            Frame::StreamEnded { internal_name } => {
                self.limits
                    .bounded("internal_name", &internal_name)
                    .map_err(End::violation)?;
                self.origins.remove(&internal_name);
                Ok(Step::StreamEnded(internal_name))
            }
            Frame::ModeChange(mode) => {
                let mode = mode.map_err(End::violation)?;
                self.mode = mode;
                self.edges.set_mode(&self.handle, mode);
                Ok(Step::Seed(self.next_seed()))
            }
            Frame::ConfigApplied {
                seed_version,
                success,
                error,
            } => {
                if success {
                    return Ok(Step::Nothing);
                }
                let error = match self.limits.bounded("error", &error) {
                    Ok(_) => error,
                    Err(_) => "(error message too long)".to_string(),
                };
                Ok(Step::SeedFailed {
                    version: seed_version,
                    error,
                })
            }
        }
    }

    /// The seed that carries a renewed cluster certificate (the edge swaps it live).
    pub fn reseed(&mut self) -> Seed {
        self.next_seed()
    }

    fn next_seed(&mut self) -> Seed {
        self.seed_version += 1;
        Seed {
            version: self.seed_version,
            mode: self.mode,
            credential: None,
        }
    }

    /// An ingest request within bounds becomes a ticket, refused at once when too many await a
    /// decision, when the node lacks the ingest capability, or when it is not in normal mode.
    fn take_ingest(&self, request: IngestRequest) -> Result<IngestTicket, End> {
        for (field, value) in [
            ("request_id", request.request_id.as_str()),
            ("stream_key", request.stream_key.as_str()),
            ("protocol", request.protocol.as_str()),
            ("publisher_ip", request.publisher_ip.as_str()),
        ] {
            self.limits.bounded(field, value).map_err(End::violation)?;
        }
        let permit = self.ingests.clone().try_acquire_owned().ok();
        let refusal = if permit.is_none() {
            Some("busy: too many ingest requests awaiting a decision, retry")
        } else if !self.info.capabilities.ingest {
            Some("this node does not have the ingest capability")
        } else if self.mode != Mode::Normal {
            Some("this node is not in normal mode")
        } else {
            None
        };
        Ok(IngestTicket {
            request,
            node_id: self.node.node_id.clone(),
            cluster_id: self.node.cluster_id.clone(),
            budget: self.limits.ingest_timeout,
            permit,
            refusal,
        })
    }

    /// Ends the session in the edge state: the edge is unroutable from now. False when a newer
    /// session had replaced it already. Idempotent.
    pub fn detach(&self) -> bool {
        self.edges.detach(&self.handle)
    }

    /// Ends the session ([`Session::detach`]) and says whether the node's streams stop being
    /// live with it: only when this was still the node's current session (a replaced session
    /// leaves them to its successor), when the edge went away rather than this Foghorn shutting
    /// down (the edges keep streaming and reconnect elsewhere), and when no other replica took the
    /// edge over before this one noticed its stream broke (`superseded`, asked last, and only for
    /// a session with a fencing token).
    pub async fn close<F, Fut>(&self, shutdown: &CancellationToken, superseded: F) -> bool
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = bool>,
    {
        if !self.detach() || shutdown.is_cancelled() {
            return false;
        }
        let token = self.handle.token;
        token == 0 || !superseded(token).await
    }
}

/// What the registry says about a stream key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestCheck {
    /// Known, and its tenant may publish on this cluster.
    Accept(IngestStream),
    UnknownKey,
    /// Valid, but its tenant may not publish on this (private) cluster.
    NotPermitted,
}

/// The stream a publisher was accepted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStream {
    pub id: String,
    /// What the edge runs it under.
    pub internal_name: String,
}

/// What deciding an ingest asks of the registry; the adapter implements it over the SQL store.
pub trait IngestRegistry: Sync {
    type Error: fmt::Display + Send;

    /// Read-only: what `stream_key` may publish on `cluster_id`.
    fn check_key(
        &self,
        stream_key: &str,
        cluster_id: &str,
    ) -> impl Future<Output = Result<IngestCheck, Self::Error>> + Send;

    /// Records stream `stream_id` as live on `node_id` of `cluster_id`.
    fn record_live(
        &self,
        stream_id: &str,
        cluster_id: &str,
        node_id: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// An ingest request the session took, to decide off the session's task.
pub struct IngestTicket {
    request: IngestRequest,
    node_id: String,
    cluster_id: String,
    budget: Duration,
    /// Held until the decision is dropped (sent); `None` when the session had none left.
    permit: Option<OwnedSemaphorePermit>,
    refusal: Option<&'static str>,
}

impl fmt::Debug for IngestTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestTicket")
            .field("request", &self.request)
            .field("node_id", &self.node_id)
            .field("refusal", &self.refusal)
            .finish_non_exhaustive()
    }
}

/// The answer to one ingest request. Holds its place among the session's pending requests until
/// dropped.
#[derive(Debug)]
pub struct IngestDecision {
    pub request_id: String,
    /// The internal name the edge runs the stream under, or why the publisher is refused.
    pub outcome: Result<String, String>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl IngestTicket {
    /// Decides the request within the ingest budget. Only the read-only check runs under the
    /// budget: a timed-out check writes nothing, so a refused publisher never leaves a stream
    /// marked live. An accepted stream is then recorded live within what is left of the budget;
    /// should that fail, the edge's stats reconcile it (it reports the stream with an input).
    pub async fn decide(self, registry: &impl IngestRegistry) -> IngestDecision {
        let started = Instant::now();
        let outcome = match self.refusal {
            Some(reason) => Err(reason.to_string()),
            None => match tokio::time::timeout(
                self.budget,
                registry.check_key(&self.request.stream_key, &self.cluster_id),
            )
            .await
            {
                Ok(Ok(IngestCheck::Accept(stream))) => Ok(stream),
                // The edge's operator learns nothing of another tenant's stream key.
                Ok(Ok(IngestCheck::UnknownKey | IngestCheck::NotPermitted)) => {
                    Err("unknown stream key".to_string())
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "ingest validation failed in the registry");
                    Err("registry unavailable".to_string())
                }
                Err(_) => Err("registry did not answer in time".to_string()),
            },
        };
        if let Ok(stream) = &outcome {
            let left = self.budget.saturating_sub(started.elapsed());
            let record = registry.record_live(&stream.id, &self.cluster_id, &self.node_id);
            match tokio::time::timeout(left, record).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not record a live stream"),
                Err(_) => tracing::warn!("recording a live stream took longer than the budget"),
            }
        }
        tracing::info!(node_id = %self.node_id, protocol = %self.request.protocol, accepted = outcome.is_ok(), "ingest decision");
        IngestDecision {
            request_id: self.request.request_id,
            outcome: outcome.map(|stream| stream.internal_name),
            _permit: self.permit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use proptest::prelude::*;

    const NODE: &str = "aaaaaaaaaaaa";

    fn limits() -> Limits {
        Limits {
            register_timeout: Duration::from_secs(10),
            ingest_timeout: Duration::from_secs(2),
            max_string_bytes: 64,
            max_streams_per_node: 3,
        }
    }

    fn register(auth: Credentials) -> Register {
        Register {
            protocol_version: PROTOCOL_VERSION,
            auth: Some(auth),
            capabilities: Capabilities {
                ingest: true,
                edge: true,
                ..Capabilities::default()
            },
            public_base_url: "https://Edge.Example.net:443/".into(),
            ..Register::default()
        }
    }

    fn enrolling() -> Register {
        register(Credentials::EnrollmentToken("enroll_x".into()))
    }

    fn reconnecting() -> Register {
        register(Credentials::Node {
            node_id: NODE.into(),
            credential: "secret".into(),
        })
    }

    fn identity() -> Identity {
        Identity {
            node_id: NODE.into(),
            cluster_id: "c1".into(),
            owner_tenant_id: None,
        }
    }

    fn admitted() -> Admitted {
        let verdict = Verdict::Admitted {
            node: identity(),
            credential: Some("minted".into()),
        };
        enrolling()
            .check(&limits())
            .expect("a good Register")
            .admit(verdict, None)
            .expect("admitted")
    }

    fn open(edges: &Arc<EdgeState>) -> (Session, Seed) {
        Session::attach(edges.clone(), admitted(), 0, limits())
    }

    fn edges() -> Arc<EdgeState> {
        Arc::new(EdgeState::new(Duration::from_secs(15)))
    }

    fn code<T: fmt::Debug>(result: Result<T, End>) -> EndCode {
        result.expect_err("the session ends").code
    }

    fn load(name: &str, inputs: u32, replicated: bool) -> StreamLoad {
        StreamLoad {
            internal_name: name.into(),
            inputs,
            replicated,
            ..StreamLoad::default()
        }
    }

    fn report(streams: Vec<StreamLoad>) -> Frame {
        Frame::NodeStats(StatsReport {
            cpu_tenths: 100,
            streams,
            ..StatsReport::default()
        })
    }

    fn ingest(key: &str) -> Frame {
        Frame::IngestRequest(IngestRequest {
            request_id: "r1".into(),
            stream_key: key.into(),
            protocol: "rtmp".into(),
            publisher_ip: "192.0.2.1".into(),
        })
    }

    fn ticket(step: Result<Step, End>) -> IngestTicket {
        match step {
            Ok(Step::Ingest(ticket)) => ticket,
            other => panic!("expected an ingest ticket, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn register_comes_first_and_in_time() {
        let (l, shutdown) = (limits(), CancellationToken::new());
        let started = Instant::now();
        let silent = await_register(&l, &shutdown, std::future::pending()).await;
        assert_eq!(
            silent,
            Err(End::violation("no Register frame within 10s")),
            "a silent connection is dropped"
        );
        assert_eq!(started.elapsed(), l.register_timeout);

        let hung_up = await_register(&l, &shutdown, async { Ok(None) }).await;
        assert_eq!(hung_up, Ok(None), "hanging up first is an ordinary end");
        let stats_first = await_register(&l, &shutdown, async { Ok(Some(report(vec![]))) });
        assert_eq!(
            stats_first.await,
            Err(End::violation("the first frame must be Register"))
        );
        let empty = await_register(&l, &shutdown, async { Ok(Some(Frame::Empty)) }).await;
        assert_eq!(code(empty), EndCode::ProtocolViolation);
        let unreadable = async { Err(End::unreadable(true, "too big")) };
        let too_big = await_register(&l, &shutdown, unreadable).await;
        assert_eq!(code(too_big), EndCode::LimitExceeded);
        let hello = await_register(&l, &shutdown, async {
            Ok(Some(Frame::Register(enrolling())))
        });
        assert_eq!(hello.await, Ok(Some(enrolling())));

        shutdown.cancel();
        let during_shutdown = await_register(&l, &shutdown, std::future::pending()).await;
        assert_eq!(during_shutdown, Err(End::shutting_down()));
    }

    #[test]
    fn register_is_checked_before_the_registry_is_asked() {
        let l = limits();
        let long = "x".repeat(l.max_string_bytes + 1);

        let mut old = enrolling();
        old.protocol_version = PROTOCOL_VERSION + 1;
        old.host_fingerprint = long.clone();
        assert_eq!(
            code(old.check(&l)),
            EndCode::ProtocolVersion,
            "the version first"
        );

        let mut unbounded = enrolling();
        unbounded.host_fingerprint = long.clone();
        let end = unbounded.check(&l).expect_err("refused");
        assert_eq!(end.code, EndCode::ProtocolViolation);
        assert!(
            end.message.starts_with("host_fingerprint is 65 bytes"),
            "{}",
            end.message
        );

        let mut bad_url = enrolling();
        bad_url.public_base_url = "edge.example.net".into();
        let end = bad_url.check(&l).expect_err("refused");
        assert_eq!(end.code, EndCode::ProtocolViolation);
        assert!(
            end.message.starts_with("public_base_url "),
            "{}",
            end.message
        );

        let mut anonymous = enrolling();
        anonymous.auth = None;
        assert_eq!(code(anonymous.check(&l)), EndCode::EnrollmentRequired);

        let long_token = register(Credentials::EnrollmentToken(long.clone()));
        assert_eq!(code(long_token.check(&l)), EndCode::ProtocolViolation);
        let long_credential = register(Credentials::Node {
            node_id: NODE.into(),
            credential: long,
        });
        assert_eq!(code(long_credential.check(&l)), EndCode::ProtocolViolation);

        let hello = enrolling().check(&l).expect("a good Register");
        assert_eq!(
            hello.public_base_url, "https://edge.example.net",
            "normal form"
        );
        assert_eq!(
            hello.auth,
            Auth::Enroll {
                token: "enroll_x".into(),
                requested_node_id: None
            }
        );
        let mut pre_registered = enrolling();
        pre_registered.pre_registered_node_id = "bbbbbbbbbbbb".into();
        let hello = pre_registered.check(&l).expect("a good Register");
        assert!(matches!(
            hello.auth,
            Auth::Enroll { requested_node_id: Some(ref id), .. } if id == "bbbbbbbbbbbb"
        ));
        let mut no_url = reconnecting();
        no_url.public_base_url = String::new();
        assert_eq!(
            no_url.check(&l).expect("a good Register").public_base_url,
            "",
            "no base URL: the edge goes by its standard name"
        );
    }

    #[test]
    fn refusals_end_with_the_code_of_the_credential_kind() {
        let hello = |r: Register| r.check(&limits()).expect("a good Register");
        let refused = || Verdict::Refused("no".into());
        let end = hello(enrolling())
            .admit(refused(), None)
            .expect_err("refused");
        assert_eq!(end, End::new(EndCode::EnrollmentFailed, "no"));
        let end = hello(reconnecting())
            .admit(refused(), None)
            .expect_err("refused");
        assert_eq!(end, End::new(EndCode::Unauthenticated, "no"));
        let end = hello(enrolling())
            .admit(Verdict::Unavailable, None)
            .expect_err("refused");
        assert_eq!(
            end,
            End::new(EndCode::Internal, "internal error, retry later")
        );
        assert!(!end.blames_edge());

        // A credential goes out only in answer to an enrollment.
        let verdict = Verdict::Admitted {
            node: identity(),
            credential: Some("minted".into()),
        };
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().expect("an address");
        let again = hello(reconnecting())
            .admit(verdict, Some(mapped))
            .expect("admitted");
        let (_session, seed) = Session::attach(edges(), again, 0, limits());
        assert_eq!(seed.credential, None);
        let (_session, seed) = Session::attach(edges(), admitted(), 0, limits());
        assert_eq!(seed.credential.as_deref(), Some("minted"));
        assert!(
            !format!("{seed:?} {:?}", admitted()).contains("minted"),
            "redacted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn admitted_nodes_attach_with_what_they_registered() {
        let edges = edges();
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().expect("an address");
        let registered = enrolling()
            .check(&limits())
            .expect("a good Register")
            .admit(
                Verdict::Admitted {
                    node: Identity {
                        owner_tenant_id: Some("t1".into()),
                        ..identity()
                    },
                    credential: None,
                },
                Some(mapped),
            )
            .expect("admitted");
        assert_eq!(registered.token_floor(&edges), 1);
        let (session, seed) = Session::attach(edges.clone(), registered, 7, limits());
        assert_eq!(seed.version, 1);
        assert_eq!(session.node().node_id, NODE);
        let view = edges.get(NODE).expect("attached");
        assert!(
            view.connected && !view.routable,
            "connected, routable once it sends stats"
        );
        assert_eq!(
            view.info.peer_ip,
            Some("192.0.2.9".parse().expect("an address"))
        );
        assert_eq!(view.info.owner_tenant_id.as_deref(), Some("t1"));
        assert_eq!(view.info.public_base_url, "https://edge.example.net");
        assert!(view.info.capabilities.ingest);
        assert_eq!(admitted().token_floor(&edges), 8, "above every token seen");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_then_replacement_end_a_session_before_its_frames() {
        let edges = edges();
        let shutdown = CancellationToken::new();
        let (old, _) = open(&edges);
        let ready = || async { Ok(Some(Frame::Empty)) };
        assert_eq!(
            old.next_frame(&shutdown, ready()).await,
            Ok(Some(Frame::Empty))
        );
        assert_eq!(
            old.next_frame(&shutdown, async { Ok(None) }).await,
            Ok(None)
        );

        let (new, _) = open(&edges);
        let end = old.next_frame(&shutdown, ready()).await;
        assert_eq!(end, Err(End::replaced()), "the older session ends");
        assert_eq!(
            new.next_frame(&shutdown, ready()).await,
            Ok(Some(Frame::Empty))
        );

        shutdown.cancel();
        assert_eq!(
            old.next_frame(&shutdown, ready()).await,
            Err(End::shutting_down())
        );
        assert_eq!(
            new.next_frame(&shutdown, ready()).await,
            Err(End::shutting_down())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn seeds_carry_the_credential_once_and_count_up() {
        let edges = edges();
        let (mut session, first) = open(&edges);
        assert_eq!(
            first,
            Seed {
                version: 1,
                mode: Mode::Normal,
                credential: Some("minted".into())
            }
        );
        let renewed = session.reseed();
        assert_eq!((renewed.version, renewed.credential), (2, None));
        let changed = session.on_frame(Frame::ModeChange(Ok(Mode::Draining)));
        let Ok(Step::Seed(seed)) = changed else {
            panic!("a mode change is answered with a seed");
        };
        assert_eq!(
            seed,
            Seed {
                version: 3,
                mode: Mode::Draining,
                credential: None
            }
        );
        assert_eq!(edges.get(NODE).expect("listed").mode, Mode::Draining);
        let unknown = session.on_frame(Frame::ModeChange(Err("mode 0 is unknown".into())));
        assert_eq!(unknown.expect_err("ends").message, "mode 0 is unknown");

        // A draining edge that reconnects is still draining, and says so in its first seed.
        assert!(session.detach());
        let (again, seed) = open(&edges);
        assert_eq!((again.mode(), seed.mode), (Mode::Draining, Mode::Draining));
    }

    #[tokio::test(start_paused = true)]
    async fn frames_after_register_are_bounded_and_in_order() {
        let edges = edges();
        let (mut session, _) = open(&edges);
        let again = session.on_frame(Frame::Register(enrolling()));
        assert_eq!(
            again.expect_err("ends"),
            End::violation("Register may only be the first frame")
        );
        assert_eq!(
            session.on_frame(Frame::Empty).expect_err("ends"),
            End::violation("empty frame")
        );
        let long = "x".repeat(65);
        let ended = session.on_frame(Frame::StreamEnded {
            internal_name: long.clone(),
        });
        assert_eq!(code(ended), EndCode::ProtocolViolation);
        assert_eq!(
            code(session.on_frame(ingest(&long))),
            EndCode::ProtocolViolation
        );

        let applied = session.on_frame(Frame::ConfigApplied {
            seed_version: 1,
            success: true,
            error: String::new(),
        });
        assert!(matches!(applied, Ok(Step::Nothing)));
        let failed = session.on_frame(Frame::ConfigApplied {
            seed_version: 1,
            success: false,
            error: long,
        });
        let Ok(Step::SeedFailed { version: 1, error }) = failed else {
            panic!("a failed seed is reported");
        };
        assert_eq!(error, "(error message too long)");
    }

    #[tokio::test(start_paused = true)]
    async fn stats_are_bounded_and_make_the_edge_routable() {
        let edges = edges();
        let (mut session, _) = open(&edges);
        let bad = Frame::NodeStats(StatsReport {
            cpu_tenths: 1001,
            ..StatsReport::default()
        });
        assert_eq!(
            session.on_frame(bad).expect_err("ends"),
            End::violation("bad NodeStats: cpu_tenths 1001 is above 1000")
        );
        assert!(!edges.is_routable(NODE), "refused stats are not recorded");
        let too_many = report(vec![load("a", 0, false); 4]);
        assert_eq!(code(session.on_frame(too_many)), EndCode::ProtocolViolation);

        assert!(matches!(
            session.on_frame(report(vec![])),
            Ok(Step::Nothing)
        ));
        assert!(edges.is_routable(NODE));
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!(!edges.is_routable(NODE), "stale after the liveness window");
    }

    #[tokio::test(start_paused = true)]
    async fn origin_streams_are_claimed_once_per_session() {
        let edges = edges();
        let (mut session, _) = open(&edges);
        let streams = || vec![load("a", 1, false), load("b", 0, false), load("c", 1, true)];
        let first = session.on_frame(report(streams()));
        assert!(
            matches!(&first, Ok(Step::ClaimLive(names)) if names == &["a".to_string()]),
            "only origins (inputs, not replicated): {first:?}"
        );
        let repeat = session.on_frame(report(streams()));
        assert!(matches!(repeat, Ok(Step::Nothing)), "already claimed");

        let ended = session.on_frame(Frame::StreamEnded {
            internal_name: "a".into(),
        });
        assert!(matches!(ended, Ok(Step::StreamEnded(ref name)) if name == "a"));
        let back = session.on_frame(report(streams()));
        assert!(matches!(back, Ok(Step::ClaimLive(ref names)) if names == &["a".to_string()]));

        // A stream that stopped being reported is claimed again when it comes back.
        assert!(matches!(
            session.on_frame(report(vec![])),
            Ok(Step::Nothing)
        ));
        let returned = session.on_frame(report(streams()));
        assert!(matches!(returned, Ok(Step::ClaimLive(_))));
        // A new session claims its streams afresh.
        let (mut next, _) = open(&edges);
        assert!(matches!(
            next.on_frame(report(streams())),
            Ok(Step::ClaimLive(_))
        ));
    }

    /// A registry answering after `delay`: `key` is accepted as stream `s1`, other keys are
    /// unknown, `broken` fails; recorded writes are kept.
    struct FakeRegistry {
        delay: Duration,
        record_delay: Duration,
        written: Mutex<Vec<String>>,
    }

    impl FakeRegistry {
        fn new(delay: Duration, record_delay: Duration) -> Self {
            FakeRegistry {
                delay,
                record_delay,
                written: Mutex::new(Vec::new()),
            }
        }
    }

    impl IngestRegistry for FakeRegistry {
        type Error = String;

        async fn check_key(
            &self,
            stream_key: &str,
            cluster_id: &str,
        ) -> Result<IngestCheck, String> {
            tokio::time::sleep(self.delay).await;
            assert_eq!(cluster_id, "c1");
            match stream_key {
                "key" => Ok(IngestCheck::Accept(IngestStream {
                    id: "s1".into(),
                    internal_name: "live+s1".into(),
                })),
                "elsewhere" => Ok(IngestCheck::NotPermitted),
                "broken" => Err("database down".into()),
                _ => Ok(IngestCheck::UnknownKey),
            }
        }

        async fn record_live(
            &self,
            stream_id: &str,
            cluster_id: &str,
            node_id: &str,
        ) -> Result<(), String> {
            tokio::time::sleep(self.record_delay).await;
            self.written
                .lock()
                .push(format!("{stream_id}@{cluster_id}/{node_id}"));
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ingests_are_decided_within_the_budget() {
        let edges = edges();
        let (mut session, _) = open(&edges);
        let quick = FakeRegistry::new(Duration::from_millis(100), Duration::ZERO);
        let decision = ticket(session.on_frame(ingest("key"))).decide(&quick).await;
        assert_eq!(decision.request_id, "r1");
        assert_eq!(decision.outcome, Ok("live+s1".to_string()));
        assert_eq!(*quick.written.lock(), vec![format!("s1@c1/{NODE}")]);

        for key in ["nope", "elsewhere"] {
            let decision = ticket(session.on_frame(ingest(key))).decide(&quick).await;
            assert_eq!(
                decision.outcome,
                Err("unknown stream key".to_string()),
                "{key}: nothing said of another tenant's key"
            );
        }
        let decision = ticket(session.on_frame(ingest("broken")))
            .decide(&quick)
            .await;
        assert_eq!(decision.outcome, Err("registry unavailable".to_string()));

        // A check that outlasts the budget refuses, and writes nothing.
        let slow = FakeRegistry::new(Duration::from_secs(60), Duration::ZERO);
        let started = Instant::now();
        let decision = ticket(session.on_frame(ingest("key"))).decide(&slow).await;
        assert_eq!(
            decision.outcome,
            Err("registry did not answer in time".to_string())
        );
        assert_eq!(started.elapsed(), limits().ingest_timeout);
        assert!(slow.written.lock().is_empty());

        // Recording gets what is left of the budget; the publisher is accepted either way.
        let late = FakeRegistry::new(Duration::from_millis(1500), Duration::from_secs(60));
        let started = Instant::now();
        let decision = ticket(session.on_frame(ingest("key"))).decide(&late).await;
        assert_eq!(decision.outcome, Ok("live+s1".to_string()));
        assert_eq!(started.elapsed(), limits().ingest_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn ingests_are_refused_when_busy_incapable_or_not_normal() {
        let edges = edges();
        let registry = FakeRegistry::new(Duration::ZERO, Duration::ZERO);
        let (mut session, _) = open(&edges);
        let mut pending: Vec<IngestTicket> = (0..MAX_PENDING_INGESTS)
            .map(|_| ticket(session.on_frame(ingest("key"))))
            .collect();
        let busy = ticket(session.on_frame(ingest("key")))
            .decide(&registry)
            .await;
        assert!(busy.outcome.expect_err("refused").starts_with("busy"));
        let decided = pending.pop().expect("one pending").decide(&registry).await;
        assert!(decided.outcome.is_ok());
        let still_busy = ticket(session.on_frame(ingest("key")))
            .decide(&registry)
            .await;
        assert!(
            still_busy.outcome.is_err(),
            "a decision holds its place until sent"
        );
        drop(decided);
        let freed = ticket(session.on_frame(ingest("key")))
            .decide(&registry)
            .await;
        assert!(freed.outcome.is_ok(), "a sent decision frees its place");

        let mut no_ingest = admitted();
        no_ingest.info.capabilities.ingest = false;
        let (mut session, _) = Session::attach(edges.clone(), no_ingest, 0, limits());
        let refused = ticket(session.on_frame(ingest("key")))
            .decide(&registry)
            .await;
        assert_eq!(
            refused.outcome,
            Err("this node does not have the ingest capability".to_string())
        );
        let (mut session, _) = open(&edges);
        session
            .on_frame(Frame::ModeChange(Ok(Mode::Maintenance)))
            .expect("a mode change");
        let refused = ticket(session.on_frame(ingest("key")))
            .decide(&registry)
            .await;
        assert_eq!(
            refused.outcome,
            Err("this node is not in normal mode".to_string())
        );
        assert_eq!(registry.written.lock().len(), 2, "refusals write nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn streams_end_with_the_session_only_when_the_edge_left() {
        let edges = edges();
        let shutdown = CancellationToken::new();
        let asked = Mutex::new(Vec::new());
        let superseded = |answer: bool| {
            let asked = &asked;
            move |token: u64| {
                asked.lock().push(token);
                async move { answer }
            }
        };

        // No fencing token: nobody else can hold the edge.
        let (session, _) = open(&edges);
        assert!(session.close(&shutdown, superseded(true)).await);
        assert!(!edges.is_routable(NODE) && !edges.get(NODE).expect("listed").connected);
        assert!(asked.lock().is_empty());
        assert!(
            !session.close(&shutdown, superseded(false)).await,
            "closed once"
        );

        // A fenced session asks whether another replica took the edge over.
        let (session, _) = Session::attach(edges.clone(), admitted(), 5, limits());
        assert!(!session.close(&shutdown, superseded(true)).await);
        let (session, _) = Session::attach(edges.clone(), admitted(), 6, limits());
        assert!(session.close(&shutdown, superseded(false)).await);
        assert_eq!(*asked.lock(), vec![5, 6]);

        // A replaced session leaves the streams to its successor.
        let (old, _) = Session::attach(edges.clone(), admitted(), 7, limits());
        let (new, _) = Session::attach(edges.clone(), admitted(), 8, limits());
        assert!(!old.close(&shutdown, superseded(false)).await);
        assert!(
            edges.get(NODE).expect("listed").connected,
            "the new session stays"
        );

        // When this Foghorn shuts down, the edges keep streaming and reconnect elsewhere.
        shutdown.cancel();
        assert!(!new.close(&shutdown, superseded(false)).await);
        assert!(!edges.get(NODE).expect("listed").connected);
        assert_eq!(asked.lock().len(), 2, "asked only when the rest holds");
    }

    #[test]
    fn ends_say_whether_the_edge_misbehaved() {
        assert!(End::unreadable(true, "x").blames_edge());
        assert!(End::unreadable(false, "x").blames_edge());
        assert!(End::not_reading().blames_edge());
        for end in [End::replaced(), End::shutting_down(), End::gone()] {
            assert!(!end.blames_edge(), "{end:?}");
        }
        assert_eq!(
            End::unreadable(false, "bad").message,
            "unreadable frame: bad"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let shown = format!(
            "{:?} {:?} {:?}",
            reconnecting(),
            enrolling(),
            ingest("sk_live_123")
        );
        for secret in ["secret", "enroll_x", "sk_live_123"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    proptest! {
        /// Whatever an edge reports, the check answers Ok or Err and never panics; accepted
        /// stats respect every bound.
        #[test]
        fn stats_check_is_total(
            cpu in any::<u32>(),
            lat in proptest::option::of(any::<f64>()),
            lon in proptest::option::of(any::<f64>()),
            names in proptest::collection::vec(".{0,40}", 0..5),
            loc in ".{0,600}",
        ) {
            let limits = Limits { max_string_bytes: 512, ..limits() };
            let report = StatsReport {
                cpu_tenths: cpu,
                latitude: lat,
                longitude: lon,
                location_name: loc,
                streams: names.into_iter().map(|n| StreamLoad { internal_name: n, ..StreamLoad::default() }).collect(),
                ..StatsReport::default()
            };
            if let Ok(s) = report.check(&limits) {
                prop_assert!(s.cpu_tenths <= 1000);
                prop_assert!(s.streams.len() <= 3);
                prop_assert!(s.location_name.len() <= limits.max_string_bytes);
                prop_assert!(s.streams.iter().all(|s| !s.internal_name.is_empty()));
                if let (Some(a), Some(o)) = (s.latitude, s.longitude) {
                    prop_assert!((-90.0..=90.0).contains(&a) && (-180.0..=180.0).contains(&o));
                }
            }
        }
    }
}
