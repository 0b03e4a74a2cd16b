//! `foghorn.v1.HelmsmanControl/Connect`: one task per edge control stream.
//!
//! Life of a session: the first frame must be a `Register` (within `edges.register_timeout`); it
//! either enrolls the node with a token (validated and consumed in one transaction) or
//! authenticates it with node id + credential. Then Foghorn sends a `ConfigSeed` and the edge state
//! attaches the session, replacing any older one. Every later frame is attributed to the node the
//! Register authenticated. A bad, oversized or out-of-order frame ends this session with an `Error`
//! frame and a matching gRPC status; other sessions are unaffected.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

use super::convert;
use super::PROTOCOL_VERSION;
use crate::edge::{EdgeInfo, Mode, SessionHandle};
use crate::metrics::{FrameLabels, Metrics, Outcome};
use crate::proto::{
    self, control_message, edge_message, helmsman_control_server::HelmsmanControl, register,
    ControlMessage, EdgeMessage, ErrorCode,
};
use crate::registry::{
    EnrollError, EnrollRequest, IngestVerdict, Node, NodeAuthError, NodeProfile,
};
use crate::state::AppState;

/// Ingest requests one edge may have awaiting a decision at once.
const MAX_PENDING_INGESTS: usize = 16;
/// Frames buffered towards one edge before the session waits for it to read.
const OUTBOUND_BUFFER: usize = 64;
/// How long a full outbound buffer may stay full before the edge is considered stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The HelmsmanControl service.
#[derive(Clone, Debug)]
pub struct HelmsmanService {
    state: AppState,
    /// The control streams of the edges connected here.
    links: Arc<EdgeLinks>,
}

impl HelmsmanService {
    pub fn new(state: AppState, links: Arc<EdgeLinks>) -> Self {
        HelmsmanService { state, links }
    }
}

/// One frame towards the edge. Boxed so a channel slot is two pointers: tokio allocates a
/// channel's slots 32 at a time, and unboxed frames would cost ~8 KiB per connected edge.
type Frame = Result<Box<ControlMessage>, Box<Status>>;
type Outbound = mpsc::Sender<Frame>;

/// The control streams of the edges connected to this replica, for commands that do not answer
/// an edge's own frame (an `OriginPull` arranged with a peer cluster).
#[derive(Debug, Default)]
pub struct EdgeLinks(Mutex<HashMap<String, (u64, Outbound)>>);

impl EdgeLinks {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<String, (u64, Outbound)>> {
        self.0.lock()
    }

    fn insert(&self, node_id: &str, session_id: u64, tx: &Outbound) {
        self.lock()
            .insert(node_id.to_string(), (session_id, tx.clone()));
    }

    /// Forgets the stream of a session, unless a newer session of the node replaced it.
    fn remove(&self, node_id: &str, session_id: u64) {
        let mut links = self.lock();
        if links.get(node_id).is_some_and(|(s, _)| *s == session_id) {
            links.remove(node_id);
        }
    }

    /// Tells `node_id` to pull `stream` from `source_url`; `false` when the edge's control stream
    /// is not on this replica or its buffer is full.
    pub fn origin_pull(&self, node_id: &str, stream: &str, source_url: &str) -> bool {
        let Some(tx) = self.lock().get(node_id).map(|(_, tx)| tx.clone()) else {
            return false;
        };
        let frame = ControlMessage {
            payload: Some(control_message::Payload::OriginPull(proto::OriginPull {
                internal_name: stream.to_string(),
                source_url: source_url.to_string(),
            })),
        };
        tx.try_send(Ok(Box::new(frame))).is_ok()
    }
}

#[tonic::async_trait]
impl HelmsmanControl for HelmsmanService {
    type ConnectStream =
        std::pin::Pin<Box<dyn Stream<Item = Result<ControlMessage, Status>> + Send + 'static>>;

    async fn connect(
        &self,
        request: Request<Streaming<EdgeMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        if self.state.shutdown.is_cancelled() {
            return Err(Status::unavailable("Foghorn is shutting down"));
        }
        let conn = super::conn_info(&request);
        let peer_ip = conn.remote.map(|a| a.ip());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let state = self.state.clone();
        let links = self.links.clone();
        let fut = async move {
            if let Err(end) = run_session(&state, &links, inbound, &tx, peer_ip, conn.tls).await {
                end.send(&tx, &state.metrics);
            }
        };
        self.state.tasks.spawn(fut);
        let frames = ReceiverStream::new(rx).map(|frame| frame.map(|m| *m).map_err(|s| *s));
        Ok(Response::new(Box::pin(frames)))
    }
}

/// Why a session ends early: sent to the edge as an `Error` frame plus a gRPC status.
#[derive(Debug)]
struct End {
    code: ErrorCode,
    message: String,
}

impl End {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        End {
            code,
            message: message.into(),
        }
    }

    fn violation(message: impl Into<String>) -> Self {
        End::new(ErrorCode::ProtocolViolation, message)
    }

    fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        // Logged in full, told to the edge without internals.
        tracing::error!(error = %err, "{context}");
        End::new(ErrorCode::Internal, "internal error, retry later")
    }

    fn status_code(&self) -> Code {
        match self.code {
            ErrorCode::EnrollmentRequired | ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::EnrollmentFailed => Code::PermissionDenied,
            ErrorCode::ProtocolVersion => Code::FailedPrecondition,
            ErrorCode::ProtocolViolation => Code::InvalidArgument,
            ErrorCode::LimitExceeded => Code::ResourceExhausted,
            ErrorCode::SessionReplaced => Code::Aborted,
            ErrorCode::ShuttingDown | ErrorCode::Internal => Code::Unavailable,
            ErrorCode::Unspecified => Code::Unknown,
        }
    }

    fn send(self, tx: &Outbound, metrics: &Metrics) {
        if matches!(
            self.code,
            ErrorCode::ProtocolViolation | ErrorCode::LimitExceeded
        ) {
            metrics.edge_protocol_errors.inc();
        }
        let frame = ControlMessage {
            payload: Some(control_message::Payload::Error(proto::Error {
                code: self.code as i32,
                message: self.message.clone(),
            })),
        };
        // Best effort and never blocking: the edge may be gone or not reading, and a session that
        // is ending must not wait on it.
        let _ = tx.try_send(Ok(Box::new(frame)));
        let _ = tx.try_send(Err(Box::new(Status::new(self.status_code(), self.message))));
    }
}

/// Detaches the session from the edge state however the session task ends.
struct Attached<'a> {
    state: &'a AppState,
    links: &'a EdgeLinks,
    handle: SessionHandle,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.links
            .remove(&self.handle.node_id, self.handle.session_id);
        self.state.edges.detach(&self.handle);
        self.state
            .metrics
            .edges_connected
            .set(self.state.edges.connected_count() as i64);
    }
}

/// Reads the next frame, ending the session on shutdown, replacement, or a transport error.
async fn next_frame(
    state: &AppState,
    inbound: &mut Streaming<EdgeMessage>,
    replaced: Option<&SessionHandle>,
) -> Result<Option<EdgeMessage>, End> {
    let replaced = async {
        match replaced {
            Some(h) => h.replaced.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = state.shutdown.cancelled() => Err(End::new(ErrorCode::ShuttingDown, "Foghorn is shutting down; reconnect")),
        _ = replaced => Err(End::new(ErrorCode::SessionReplaced, "a newer connection of this node replaced this one")),
        frame = inbound.message() => match frame {
            Ok(frame) => Ok(frame),
            // The edge went away (reset, killed process): an ordinary end, not a protocol error.
            Err(status) if is_disconnect(&status) => Ok(None),
            Err(status) => {
                let limit = status.code() == Code::OutOfRange
                    || status.message().contains("message length too large");
                Err(End::new(
                    if limit { ErrorCode::LimitExceeded } else { ErrorCode::ProtocolViolation },
                    format!("unreadable frame: {}", status.message()),
                ))
            }
        },
    }
}

/// Whether a read error means the peer disconnected rather than sent something bad.
fn is_disconnect(status: &Status) -> bool {
    status.code() == Code::Cancelled
        || status
            .message()
            .contains("error reading a body from connection")
        || status.message().contains("connection reset")
}

async fn run_session(
    state: &AppState,
    links: &EdgeLinks,
    mut inbound: Streaming<EdgeMessage>,
    tx: &Outbound,
    peer_ip: Option<IpAddr>,
    secure: bool,
) -> Result<(), End> {
    let limits = &state.config.edges;
    let first = match tokio::time::timeout(
        limits.register_timeout,
        next_frame(state, &mut inbound, None),
    )
    .await
    {
        Err(_) => {
            return Err(End::violation(format!(
                "no Register frame within {:?}",
                limits.register_timeout
            )))
        }
        Ok(frame) => frame?,
    };
    let Some(first) = first else {
        return Ok(()); // The edge hung up before saying anything.
    };
    let Some(edge_message::Payload::Register(register)) = first.payload else {
        return Err(End::violation("the first frame must be Register"));
    };
    // Registry calls are boxed throughout: their futures are large and short-lived, and inline they
    // would size this session's state machine, which lives as long as the edge stays connected.
    let (node, credential) = Box::pin(authenticate(state, register.clone(), peer_ip)).await?;

    let info = EdgeInfo {
        cluster_id: node.cluster_id.clone(),
        owner_tenant_id: node.owner_tenant_id.clone(),
        capabilities: convert::capabilities(register.capabilities.as_ref()),
        // Checked by `authenticate` already; normalised the same way here.
        public_base_url: public_base_url(&register.public_base_url)?,
        peer_ip: peer_ip.map(crate::net::canonical_ip),
    };
    // With replicas, the session's fencing token: above any session of this node so far, here or
    // on another replica, so the newest session is the one that lives.
    let token = match &state.replication {
        Some(sync) => {
            let floor = state.edges.known_token(&node.node_id) + 1;
            Box::pin(sync.take_token(&node.node_id, floor)).await
        }
        None => 0,
    };
    let attached = Attached {
        handle: state.edges.attach(&node.node_id, info.clone(), token),
        state,
        links,
    };
    links.insert(&node.node_id, attached.handle.session_id, tx);
    let mut mode = attached.handle.mode;
    let mut seed_version = 1u64;
    // Watched from before the first seed is built, so a renewal in between is not missed.
    let mut certificate = state.tls.subscribe();
    certificate.borrow_and_update();
    send(
        tx,
        seed(state, &node, credential, mode, seed_version, secure),
    )
    .await?;
    state.metrics.edge_sessions.inc();
    state
        .metrics
        .edges_connected
        .set(state.edges.connected_count() as i64);
    tracing::info!(node_id = %node.node_id, peer = ?peer_ip, "edge connected");

    let ingests = Arc::new(Semaphore::new(MAX_PENDING_INGESTS));
    // Origin streams this session reported and that were reconciled with the registry.
    let mut origins: HashSet<String> = HashSet::new();
    // A renewed cluster certificate goes out as a new ConfigSeed; the edge swaps it live.
    let result = loop {
        let next = tokio::select! {
            next = next_frame(state, &mut inbound, Some(&attached.handle)) => next,
            Ok(()) = certificate.changed() => {
                seed_version += 1;
                match send(tx, seed(state, &node, None, mode, seed_version, secure)).await {
                    Ok(()) => continue,
                    Err(end) => break Err(end),
                }
            }
        };
        let frame = match next {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(end) => break Err(end),
        };
        let Some(payload) = frame.payload else {
            break Err(End::violation("empty frame"));
        };
        let kind = match &payload {
            edge_message::Payload::Register(_) => "register",
            edge_message::Payload::NodeStats(_) => "node_stats",
            edge_message::Payload::IngestRequest(_) => "ingest_request",
            edge_message::Payload::StreamEnded(_) => "stream_ended",
            edge_message::Payload::ModeChange(_) => "mode_change",
            edge_message::Payload::ConfigApplied(_) => "config_applied",
        };
        state
            .metrics
            .edge_frames
            .get_or_create(&FrameLabels { kind })
            .inc();
        match payload {
            edge_message::Payload::Register(_) => {
                break Err(End::violation("Register may only be the first frame"));
            }
            edge_message::Payload::NodeStats(p) => match convert::stats(p, limits) {
                Ok(stats) => {
                    let reported: HashSet<String> = stats
                        .streams
                        .iter()
                        .filter(|s| s.inputs > 0 && !s.replicated)
                        .map(|s| s.internal_name.clone())
                        .collect();
                    state.edges.apply_stats(&attached.handle, stats);
                    Box::pin(reconcile_origins(state, &node, &origins, &reported)).await;
                    origins = reported;
                }
                Err(why) => break Err(End::violation(format!("bad NodeStats: {why}"))),
            },
            edge_message::Payload::IngestRequest(req) => {
                if let Err(end) = start_ingest(state, &node, &info, mode, req, tx, &ingests) {
                    break Err(end);
                }
            }
            edge_message::Payload::StreamEnded(ended) => {
                if let Err(why) = convert::bounded("internal_name", &ended.internal_name, limits) {
                    break Err(End::violation(why));
                }
                origins.remove(&ended.internal_name);
                // Scoped to this node: an edge can only end what is live on itself.
                let end = state
                    .registry
                    .end_stream(&ended.internal_name, &node.node_id);
                if let Err(e) = Box::pin(end).await {
                    tracing::warn!(node_id = %node.node_id, error = %e, "could not record StreamEnded");
                }
            }
            edge_message::Payload::ModeChange(change) => match convert::mode(change.mode) {
                Ok(new_mode) => {
                    mode = new_mode;
                    state.edges.set_mode(&attached.handle, new_mode);
                    seed_version += 1;
                    if let Err(end) =
                        send(tx, seed(state, &node, None, new_mode, seed_version, secure)).await
                    {
                        break Err(end);
                    }
                }
                Err(why) => break Err(End::violation(why)),
            },
            edge_message::Payload::ConfigApplied(applied) => {
                if !applied.success {
                    let error = convert::bounded("error", &applied.error, limits)
                        .unwrap_or("(error message too long)");
                    tracing::warn!(node_id = %node.node_id, seed = applied.seed_version, %error, "edge failed to apply its ConfigSeed");
                }
            }
        }
    };
    tracing::info!(node_id = %node.node_id, "edge disconnected");
    // Only when this was still the node's current session (a replaced session leaves the streams
    // to its successor), and only when the edge went away: when this Foghorn is the one shutting
    // down, the edges keep streaming and reconnect elsewhere, so their streams stay live.
    // Nor when another replica took the edge over before this one noticed its stream broke: the
    // streams are live there now.
    let token = attached.handle.token;
    let superseded = async {
        match &state.replication {
            Some(sync) if token != 0 => sync.superseded(&node.node_id, token).await,
            _ => false,
        }
    };
    if state.edges.detach(&attached.handle)
        && !state.shutdown.is_cancelled()
        && !Box::pin(superseded).await
    {
        match Box::pin(state.registry.end_streams_of_node(&node.node_id)).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(node_id = %node.node_id, streams = n, "streams of a disconnected edge no longer live")
            }
            Err(e) => {
                tracing::warn!(node_id = %node.node_id, error = %e, "could not clear the streams of a disconnected edge")
            }
        }
    }
    drop(attached);
    result
}

/// Records as live here the origin streams an edge reports for the first time in this session and
/// that the registry does not know live anywhere (after a reconnect, or if recording an ingest
/// failed). One registry write per newly reported stream, none for streams already reconciled.
async fn reconcile_origins(
    state: &AppState,
    node: &Node,
    known: &HashSet<String>,
    reported: &HashSet<String>,
) {
    for name in reported.difference(known) {
        if let Err(e) = state
            .registry
            .claim_live(name, &node.cluster_id, &node.node_id)
            .await
        {
            tracing::warn!(node_id = %node.node_id, stream = %name, error = %e, "could not reconcile a live stream");
        }
    }
}

/// Queues a frame for the edge; an edge that leaves its buffer full for `SEND_TIMEOUT` is stuck.
async fn send(tx: &Outbound, frame: ControlMessage) -> Result<(), End> {
    tx.send_timeout(Ok(Box::new(frame)), SEND_TIMEOUT)
        .await
        .map_err(|e| match e {
            mpsc::error::SendTimeoutError::Timeout(_) => End::new(
                ErrorCode::LimitExceeded,
                "the edge is not reading its control stream",
            ),
            mpsc::error::SendTimeoutError::Closed(_) => {
                End::new(ErrorCode::Unspecified, "edge went away")
            }
        })
}

/// The base URL an edge registered, in normal form (empty: it goes by its standard name). Every
/// redirect to the edge starts with it, so anything that is not a clean absolute URL is refused
/// here rather than turned into a broken `Location` for a viewer later.
fn public_base_url(given: &str) -> Result<String, End> {
    if given.is_empty() {
        return Ok(String::new());
    }
    crate::edge::check_base_url(given).map_err(|e| End::violation(format!("public_base_url {e}")))
}

/// Enrolls or authenticates the node named by a Register; returns it and, on enrollment, its new
/// credential.
async fn authenticate(
    state: &AppState,
    register: proto::Register,
    peer_ip: Option<IpAddr>,
) -> Result<(Node, Option<String>), End> {
    let limits = &state.config.edges;
    if register.protocol_version != PROTOCOL_VERSION {
        return Err(End::new(
            ErrorCode::ProtocolVersion,
            format!(
                "protocol version {} is not supported; this Foghorn speaks {PROTOCOL_VERSION}",
                register.protocol_version
            ),
        ));
    }
    for (field, value) in [
        ("public_base_url", register.public_base_url.as_str()),
        ("host_fingerprint", register.host_fingerprint.as_str()),
        (
            "pre_registered_node_id",
            register.pre_registered_node_id.as_str(),
        ),
    ] {
        convert::bounded(field, value, limits).map_err(End::violation)?;
    }
    let hw = register.hardware.unwrap_or_default();
    let profile = NodeProfile {
        capabilities: convert::capabilities(register.capabilities.as_ref()).to_list(),
        public_base_url: public_base_url(&register.public_base_url)?,
        host_fingerprint: register.host_fingerprint.clone(),
        cpu_cores: i64::from(hw.cpu_cores),
        ram_bytes: i64::try_from(hw.ram_bytes).unwrap_or(i64::MAX),
        disk_bytes: i64::try_from(hw.disk_bytes).unwrap_or(i64::MAX),
    };
    let cluster_id = state.config.cluster.id.clone();
    match register.auth {
        Some(register::Auth::EnrollmentToken(token)) => {
            convert::bounded("enrollment_token", &token, limits).map_err(End::violation)?;
            let req = EnrollRequest {
                token,
                cluster_id,
                peer_ip,
                // Only an id PreRegisterEdge reserved for this very token is honoured.
                requested_node_id: Some(register.pre_registered_node_id.clone())
                    .filter(|id| !id.is_empty()),
                profile,
            };
            match state.registry.enroll(&req).await {
                Ok(enrolled) => {
                    Metrics::outcome(&state.metrics.enrollments, Outcome::Accepted);
                    tracing::info!(node_id = %enrolled.node.node_id, peer = ?peer_ip, "edge enrolled");
                    Ok((enrolled.node, Some(enrolled.credential)))
                }
                Err(EnrollError::Registry(e)) => {
                    Metrics::outcome(&state.metrics.enrollments, Outcome::Failed);
                    Err(End::internal("enrollment failed in the registry", e))
                }
                Err(refused) => {
                    Metrics::outcome(&state.metrics.enrollments, Outcome::Refused);
                    tracing::warn!(peer = ?peer_ip, reason = %refused, "enrollment refused");
                    Err(End::new(
                        ErrorCode::EnrollmentFailed,
                        refused.public_message(),
                    ))
                }
            }
        }
        Some(register::Auth::NodeCredential(cred)) => {
            convert::bounded("node_id", &cred.node_id, limits).map_err(End::violation)?;
            convert::bounded("credential", &cred.credential, limits).map_err(End::violation)?;
            match state
                .registry
                .authenticate_node(
                    &cred.node_id,
                    &cred.credential,
                    &cluster_id,
                    peer_ip,
                    &profile,
                )
                .await
            {
                Ok(node) => {
                    Metrics::outcome(&state.metrics.node_authentications, Outcome::Accepted);
                    Ok((node, None))
                }
                Err(NodeAuthError::Registry(e)) => {
                    Metrics::outcome(&state.metrics.node_authentications, Outcome::Failed);
                    Err(End::internal(
                        "node authentication failed in the registry",
                        e,
                    ))
                }
                Err(refused) => {
                    Metrics::outcome(&state.metrics.node_authentications, Outcome::Refused);
                    tracing::warn!(node_id = %cred.node_id, peer = ?peer_ip, reason = %refused, "node authentication refused");
                    Err(End::new(ErrorCode::Unauthenticated, refused.to_string()))
                }
            }
        }
        None => Err(End::new(
            ErrorCode::EnrollmentRequired,
            "Register carries neither an enrollment token nor a node credential",
        )),
    }
}

/// The ConfigSeed for `node`; `credential` only in the seed that answers the first enrollment;
/// the cluster certificate only on a TLS connection (`secure`), never where its key could be read
/// off the wire.
fn seed(
    state: &AppState,
    node: &Node,
    credential: Option<String>,
    mode: Mode,
    seed_version: u64,
    secure: bool,
) -> ControlMessage {
    let cluster = &node.cluster_id;
    let zone = crate::names::Zone::new(cluster, &state.config.cluster.root_domain);
    ControlMessage {
        payload: Some(control_message::Payload::ConfigSeed(proto::ConfigSeed {
            node_id: node.node_id.clone(),
            cluster_id: cluster.clone(),
            tenant_id: node.owner_tenant_id.clone().unwrap_or_default(),
            node_credential: credential.unwrap_or_default(),
            edge_domain: zone.edge_host(&node.node_id),
            pool_domain: zone.pool_host(),
            stats_interval_ms: u32::try_from(state.config.edges.stats_interval.as_millis())
                .unwrap_or(u32::MAX),
            mode: convert::mode_to_proto(mode) as i32,
            tls: secure.then(|| tls_bundle(&state.tls.bundle())),
            balancer_base_url: zone.foghorn_url(),
            seed_version,
        })),
    }
}

/// The cluster certificate as edges and the CLI receive it.
pub(super) fn tls_bundle(bundle: &crate::tls::Bundle) -> proto::TlsBundle {
    proto::TlsBundle {
        cert_chain_pem: bundle.cert_chain_pem.clone(),
        private_key_pem: bundle.key_pem.clone(),
        expires_at_unix: bundle.not_after,
    }
}

/// Validates an IngestRequest and answers it from a task of its own, so a slow registry never
/// stalls the stats of this edge. At most `MAX_PENDING_INGESTS` per edge await a decision; more are
/// refused as busy (the publisher retries) without ending the control stream.
fn start_ingest(
    state: &AppState,
    node: &Node,
    info: &EdgeInfo,
    mode: Mode,
    req: proto::IngestRequest,
    tx: &Outbound,
    pending: &Arc<Semaphore>,
) -> Result<(), End> {
    let limits = &state.config.edges;
    for (field, value) in [
        ("request_id", req.request_id.as_str()),
        ("stream_key", req.stream_key.as_str()),
        ("protocol", req.protocol.as_str()),
        ("publisher_ip", req.publisher_ip.as_str()),
    ] {
        convert::bounded(field, value, limits).map_err(End::violation)?;
    }
    let permit = pending.clone().try_acquire_owned().ok();
    let refusal = if permit.is_none() {
        Some("busy: too many ingest requests awaiting a decision, retry")
    } else if !info.capabilities.ingest {
        Some("this node does not have the ingest capability")
    } else if mode != Mode::Normal {
        Some("this node is not in normal mode")
    } else {
        None
    };
    let state = state.clone();
    let node_id = node.node_id.clone();
    let cluster_id = node.cluster_id.clone();
    let tx = tx.clone();
    state.tasks.clone().spawn(async move {
        let _permit = permit;
        let budget = state.config.edges.ingest_timeout;
        let started = tokio::time::Instant::now();
        let decision = match refusal {
            Some(reason) => Err(reason.to_string()),
            // Only the read-only check runs under the budget: a timed-out check writes nothing,
            // so a refused publisher never leaves a stream marked live.
            None => match tokio::time::timeout(
                budget,
                state.registry.check_ingest(&req.stream_key, &cluster_id),
            )
            .await
            {
                Ok(Ok(IngestVerdict::Accept(stream))) => Ok(stream),
                // The edge's operator learns nothing of another tenant's stream key.
                Ok(Ok(IngestVerdict::UnknownKey | IngestVerdict::NotPermitted)) => {
                    Err("unknown stream key".to_string())
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "ingest validation failed in the registry");
                    Err("registry unavailable".to_string())
                }
                Err(_) => Err("registry did not answer in time".to_string()),
            },
        };
        if let Ok(stream) = &decision {
            // Accepted: record where it is live within what is left of the budget. Should that
            // fail, the edge's stats reconcile it (it reports the stream with an input).
            let left = budget.saturating_sub(started.elapsed());
            let record = state.registry.mark_live(&stream.id, &cluster_id, &node_id);
            match tokio::time::timeout(left, record).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not record a live stream"),
                Err(_) => tracing::warn!("recording a live stream took longer than the budget"),
            }
        }
        let outcome = if decision.is_ok() {
            Outcome::Accepted
        } else {
            Outcome::Refused
        };
        Metrics::outcome(&state.metrics.ingest_decisions, outcome);
        tracing::info!(%node_id, protocol = %req.protocol, accepted = decision.is_ok(), "ingest decision");
        let (accept, internal_name, reason) = match decision {
            Ok(stream) => (true, stream.internal_name, String::new()),
            Err(reason) => (false, String::new(), reason),
        };
        let frame = ControlMessage {
            payload: Some(control_message::Payload::IngestDecision(
                proto::IngestDecision {
                    request_id: req.request_id,
                    accept,
                    internal_name,
                    reason,
                },
            )),
        };
        let _ = send(&tx, frame).await;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    /// What one buffered outbound frame costs: tokio's channel allocates 32 slots at a time.
    #[test]
    fn outbound_slot_stays_small() {
        let slot = std::mem::size_of::<super::Frame>();
        assert!(slot <= 16, "outbound slot is {slot} bytes");
    }
}
