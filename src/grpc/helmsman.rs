//! `foghorn.v1.HelmsmanControl/Connect`: one task per edge control stream.
//!
//! What a session may do, in which order, and how it ends (DESIGN.md §4) is decided by
//! [`crate::edge::session`]. This adapter decodes the edge's frames for it, asks the registry what
//! it calls for (enrollment or node authentication, live streams, ingest decisions), encodes its
//! seeds, decisions and ends, and runs the stream: an end goes to the edge as an `Error` frame plus
//! a matching gRPC status, and other sessions are unaffected.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

use super::convert;
use crate::cell::Cell;
use crate::config::EdgesConfig;
use crate::edge::session::{
    self, Auth, End, EndCode, Hello, Identity, IngestCheck, IngestStream, Limits, Seed, Session,
    Step, Verdict,
};
use crate::metrics::{FrameLabels, Metrics, Outcome, OutcomeFamily};
use crate::proto::{
    self, control_message, helmsman_control_server::HelmsmanControl, ControlMessage, EdgeMessage,
};
use crate::registry::{
    EnrollError, EnrollRequest, IngestVerdict, NodeAuthError, NodeProfile, Registry, RegistryError,
};
use crate::state::AppState;

/// Frames buffered towards one edge before the session waits for it to read.
const OUTBOUND_BUFFER: usize = 64;
/// How long a full outbound buffer may stay full before the edge is considered stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The HelmsmanControl service.
#[derive(Clone, Debug)]
pub struct HelmsmanService {
    cell: Arc<Cell>,
    /// The control streams of the edges connected here.
    links: Arc<EdgeLinks>,
}

impl HelmsmanService {
    pub fn new(cell: Arc<Cell>, links: Arc<EdgeLinks>) -> Self {
        HelmsmanService { cell, links }
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
        let home = self.cell.home();
        if home.shutdown.is_cancelled() {
            return Err(Status::unavailable("Foghorn is shutting down"));
        }
        let conn = super::conn_info(&request);
        let peer_ip = conn.remote.map(|a| a.ip());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let cell = self.cell.clone();
        let links = self.links.clone();
        let fut = async move {
            if let Err(end) = run_session(&cell, &links, inbound, &tx, peer_ip, conn.tls).await {
                send_end(end, &tx, &cell.home().metrics);
            }
        };
        home.tasks.spawn(fut);
        let frames = ReceiverStream::new(rx).map(|frame| frame.map(|m| *m).map_err(|s| *s));
        Ok(Response::new(Box::pin(frames)))
    }
}

/// Tells the edge why its session ends: an `Error` frame, then the matching gRPC status.
fn send_end(end: End, tx: &Outbound, metrics: &Metrics) {
    if end.blames_edge() {
        metrics.edge_protocol_errors.inc();
    }
    let frame = ControlMessage {
        payload: Some(control_message::Payload::Error(proto::Error {
            code: convert::error_code(end.code) as i32,
            message: end.message.clone(),
        })),
    };
    // Best effort and never blocking: the edge may be gone or not reading, and a session that
    // is ending must not wait on it.
    let _ = tx.try_send(Ok(Box::new(frame)));
    let _ = tx.try_send(Err(Box::new(Status::new(
        status_code(end.code),
        end.message,
    ))));
}

/// The gRPC status of each way a session ends, chosen deliberately.
fn status_code(code: EndCode) -> Code {
    match code {
        EndCode::EnrollmentRequired | EndCode::Unauthenticated => Code::Unauthenticated,
        EndCode::EnrollmentFailed => Code::PermissionDenied,
        EndCode::ProtocolVersion => Code::FailedPrecondition,
        EndCode::ProtocolViolation => Code::InvalidArgument,
        EndCode::LimitExceeded => Code::ResourceExhausted,
        EndCode::SessionReplaced => Code::Aborted,
        EndCode::ShuttingDown | EndCode::Internal => Code::Unavailable,
        EndCode::Gone => Code::Unknown,
    }
}

/// The session bounds `edges.*` configures.
fn limits(edges: &EdgesConfig) -> Limits {
    Limits {
        register_timeout: edges.register_timeout,
        ingest_timeout: edges.ingest_timeout,
        max_string_bytes: edges.max_string_bytes,
        max_streams_per_node: edges.max_streams_per_node,
    }
}

/// Detaches the session from the edge state and the edge links however the session task ends.
struct Attached<'a> {
    state: &'a AppState,
    links: &'a EdgeLinks,
    session: Session,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.links
            .remove(&self.session.node().node_id, self.session.id());
        self.session.detach();
        self.state
            .metrics
            .edges_connected
            .set(self.state.edges.connected_count() as i64);
    }
}

/// Reads and decodes the next frame; `None` when the edge went away.
async fn read(inbound: &mut Streaming<EdgeMessage>) -> Result<Option<session::Frame>, End> {
    match inbound.message().await {
        Ok(frame) => Ok(frame.map(convert::frame)),
        // The edge went away (reset, killed process): an ordinary end, not a protocol error.
        Err(status) if is_disconnect(&status) => Ok(None),
        Err(status) => {
            let too_large = status.code() == Code::OutOfRange
                || status.message().contains("message length too large");
            Err(End::unreadable(too_large, status.message()))
        }
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

/// One control stream from its first frame to its end; `Err` is the end to tell the edge.
async fn run_session(
    cell: &Cell,
    links: &EdgeLinks,
    mut inbound: Streaming<EdgeMessage>,
    tx: &Outbound,
    peer_ip: Option<IpAddr>,
    secure: bool,
) -> Result<(), End> {
    let home = cell.home();
    let limits = limits(&home.config.edges);
    let first = session::await_register(&limits, &home.shutdown, read(&mut inbound)).await?;
    let Some(register) = first else {
        return Ok(()); // The edge hung up before saying anything.
    };
    let hello = register.check(&limits)?;
    // Registry calls are boxed throughout: their futures are large and short-lived, and inline they
    // would size this session's state machine, which lives as long as the edge stays connected.
    let (verdict, state) = Box::pin(authenticate(cell, &hello, peer_ip)).await;
    // From here on the session belongs to the edge's cluster.
    let state = &state;
    let admitted = hello.admit(verdict, peer_ip)?;
    let token = match &state.replication {
        Some(sync) => {
            let floor = admitted.token_floor(&state.edges);
            Box::pin(sync.take_token(&admitted.node.node_id, floor)).await
        }
        None => 0,
    };
    let (session, first_seed) = Session::attach(state.edges.clone(), admitted, token, limits);
    let mut attached = Attached {
        state,
        links,
        session,
    };
    let node_id = attached.session.node().node_id.clone();
    links.insert(&node_id, attached.session.id(), tx);
    // Watched from before the first seed is built, so a renewal in between is not missed.
    let mut certificate = state.tls.subscribe();
    certificate.borrow_and_update();
    send(tx, seed(state, attached.session.node(), first_seed, secure)).await?;
    state.metrics.edge_sessions.inc();
    state
        .metrics
        .edges_connected
        .set(state.edges.connected_count() as i64);
    tracing::info!(node_id = %node_id, peer = ?peer_ip, "edge connected");

    let result = loop {
        let session = &mut attached.session;
        // A renewed cluster certificate goes out as a new ConfigSeed; the edge swaps it live.
        let next = tokio::select! {
            next = session.next_frame(&state.shutdown, read(&mut inbound)) => next,
            Ok(()) = certificate.changed() => {
                let renewed = session.reseed();
                match send(tx, seed(state, session.node(), renewed, secure)).await {
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
        if let Some(kind) = frame.kind() {
            state
                .metrics
                .edge_frames
                .get_or_create(&FrameLabels { kind })
                .inc();
        }
        let step = match session.on_frame(frame) {
            Ok(step) => step,
            Err(end) => break Err(end),
        };
        if let Err(end) = carry_out(state, session.node(), step, tx, secure).await {
            break Err(end);
        }
    };
    tracing::info!(node_id = %node_id, "edge disconnected");
    let superseded = |token| {
        let node_id = &node_id;
        Box::pin(async move {
            match &state.replication {
                Some(sync) => sync.superseded(node_id, token).await,
                None => false,
            }
        })
    };
    if attached.session.close(&state.shutdown, superseded).await {
        match Box::pin(state.registry.end_streams_of_node(&node_id)).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(node_id = %node_id, streams = n, "streams of a disconnected edge no longer live")
            }
            Err(e) => {
                tracing::warn!(node_id = %node_id, error = %e, "could not clear the streams of a disconnected edge")
            }
        }
    }
    drop(attached);
    result
}

/// Does what a frame of `node`'s session asked for.
async fn carry_out(
    state: &AppState,
    node: &Identity,
    step: Step,
    tx: &Outbound,
    secure: bool,
) -> Result<(), End> {
    match step {
        Step::Nothing => {}
        Step::ClaimLive(streams) => {
            // One registry write per newly reported stream; it is recorded as live here unless
            // the registry knows it live elsewhere.
            for name in streams {
                let claim = state
                    .registry
                    .claim_live(&name, &node.cluster_id, &node.node_id);
                if let Err(e) = Box::pin(claim).await {
                    tracing::warn!(node_id = %node.node_id, stream = %name, error = %e, "could not reconcile a live stream");
                }
            }
        }
        Step::Ingest(ticket) => {
            let (state, tx) = (state.clone(), tx.clone());
            state.tasks.clone().spawn(async move {
                let decision = ticket.decide(&state.registry).await;
                let outcome = if decision.outcome.is_ok() {
                    Outcome::Accepted
                } else {
                    Outcome::Refused
                };
                Metrics::outcome(&state.metrics.ingest_decisions, outcome);
                let _ = send(&tx, convert::ingest_decision(&decision)).await;
            });
        }
        Step::StreamEnded(name) => {
            let end = state.registry.end_stream(&name, &node.node_id);
            if let Err(e) = Box::pin(end).await {
                tracing::warn!(node_id = %node.node_id, error = %e, "could not record StreamEnded");
            }
        }
        Step::Seed(next) => send(tx, seed(state, node, next, secure)).await?,
        Step::SeedFailed { version, error } => {
            tracing::warn!(node_id = %node.node_id, seed = version, %error, "edge failed to apply its ConfigSeed");
        }
    }
    Ok(())
}

/// Queues a frame for the edge; an edge that leaves its buffer full for `SEND_TIMEOUT` is stuck.
async fn send(tx: &Outbound, frame: ControlMessage) -> Result<(), End> {
    tx.send_timeout(Ok(Box::new(frame)), SEND_TIMEOUT)
        .await
        .map_err(|e| match e {
            mpsc::error::SendTimeoutError::Timeout(_) => End::not_reading(),
            mpsc::error::SendTimeoutError::Closed(_) => End::gone(),
        })
}

/// Asks the registry about a checked Register's credentials: enrolls the node with its token, or
/// authenticates it with its node credential, for the cluster they belong to when this cell
/// serves it. Returns the verdict and the state of the edge's cluster.
async fn authenticate(cell: &Cell, hello: &Hello, peer_ip: Option<IpAddr>) -> (Verdict, AppState) {
    let home = cell.home().clone();
    let refused = match authenticate_for(&home, hello, peer_ip).await {
        Ok(verdict) => return (verdict, home),
        Err(refused) => refused,
    };
    // The credentials are of another cluster: the registry checks them again for it (the
    // token is consumed only by an enrollment that succeeds).
    if let Some(state) = cell.get(&refused.cluster) {
        return match authenticate_for(&state, hello, peer_ip).await {
            Ok(verdict) => (verdict, state),
            Err(refused) => (refused.verdict(&home, cell).await, state),
        };
    }
    (refused.verdict(&home, cell).await, home)
}

/// Credentials of another cluster than the one they were checked for.
struct OtherCluster {
    cluster: String,
    /// Why they were refused, for the edge.
    message: String,
    /// Which count of refusals it joins.
    counter: fn(&Metrics) -> &OutcomeFamily,
}

impl OtherCluster {
    /// The refusal, telling the edge where its cluster is served.
    async fn verdict(self, home: &AppState, cell: &Cell) -> Verdict {
        Metrics::outcome((self.counter)(&home.metrics), Outcome::Refused);
        let mut message = self.message;
        message.push_str(&served_elsewhere(home, cell, &self.cluster).await);
        Verdict::Refused(message)
    }
}

/// [`authenticate`] for `state`'s cluster; `Err` when the credentials belong to another.
async fn authenticate_for(
    state: &AppState,
    hello: &Hello,
    peer_ip: Option<IpAddr>,
) -> Result<Verdict, OtherCluster> {
    let hw = hello.hardware;
    let profile = NodeProfile {
        capabilities: hello.capabilities.to_list(),
        public_base_url: hello.public_base_url.clone(),
        host_fingerprint: hello.host_fingerprint.clone(),
        cpu_cores: i64::from(hw.cpu_cores),
        ram_bytes: i64::try_from(hw.ram_bytes).unwrap_or(i64::MAX),
        disk_bytes: i64::try_from(hw.disk_bytes).unwrap_or(i64::MAX),
    };
    let cluster_id = state.config.cluster.id.clone();
    let identity = |node: crate::registry::Node| Identity {
        node_id: node.node_id,
        cluster_id: node.cluster_id,
        owner_tenant_id: node.owner_tenant_id,
    };
    Ok(match &hello.auth {
        Auth::Enroll {
            token,
            requested_node_id,
        } => {
            let req = EnrollRequest {
                token: token.clone(),
                cluster_id,
                peer_ip,
                requested_node_id: requested_node_id.clone(),
                profile,
            };
            match state.registry.enroll(&req).await {
                Ok(enrolled) => {
                    Metrics::outcome(&state.metrics.enrollments, Outcome::Accepted);
                    tracing::info!(node_id = %enrolled.node.node_id, cluster = %state.config.cluster.id, peer = ?peer_ip, "edge enrolled");
                    Verdict::Admitted {
                        node: identity(enrolled.node),
                        credential: Some(enrolled.credential),
                    }
                }
                Err(EnrollError::Registry(e)) => {
                    Metrics::outcome(&state.metrics.enrollments, Outcome::Failed);
                    // Logged in full, told to the edge without internals.
                    tracing::error!(error = %e, "enrollment failed in the registry");
                    Verdict::Unavailable
                }
                Err(EnrollError::WrongCluster(other)) => {
                    return Err(OtherCluster {
                        message: EnrollError::WrongCluster(other.clone()).public_message(),
                        cluster: other,
                        counter: |m| &m.enrollments,
                    })
                }
                Err(refused) => {
                    Metrics::outcome(&state.metrics.enrollments, Outcome::Refused);
                    tracing::warn!(peer = ?peer_ip, reason = %refused, "enrollment refused");
                    Verdict::Refused(refused.public_message())
                }
            }
        }
        Auth::Node {
            node_id,
            credential,
        } => {
            let authenticated = state
                .registry
                .authenticate_node(node_id, credential, &cluster_id, peer_ip, &profile)
                .await;
            match authenticated {
                Ok(node) => {
                    Metrics::outcome(&state.metrics.node_authentications, Outcome::Accepted);
                    Verdict::Admitted {
                        node: identity(node),
                        credential: None,
                    }
                }
                Err(NodeAuthError::Registry(e)) => {
                    Metrics::outcome(&state.metrics.node_authentications, Outcome::Failed);
                    tracing::error!(error = %e, "node authentication failed in the registry");
                    Verdict::Unavailable
                }
                Err(NodeAuthError::WrongCluster(other)) => {
                    return Err(OtherCluster {
                        message: NodeAuthError::WrongCluster(other.clone()).to_string(),
                        cluster: other,
                        counter: |m| &m.node_authentications,
                    })
                }
                Err(refused) => {
                    Metrics::outcome(&state.metrics.node_authentications, Outcome::Refused);
                    tracing::warn!(node_id = %node_id, peer = ?peer_ip, reason = %refused, "node authentication refused");
                    Verdict::Refused(refused.to_string())
                }
            }
        }
    })
}

/// What an edge that came to the wrong Foghorn is told of where its cluster is served: the
/// address its cell published, or, for a cluster just assigned to this cell, to retry. Empty
/// when the registry cannot say.
async fn served_elsewhere(home: &AppState, cell: &Cell, cluster: &str) -> String {
    tracing::warn!(cluster, "an edge of a cluster not served here was refused");
    let (Ok(Some(serving)), Ok(Some(at))) = (
        home.registry.serving_cell(cluster).await,
        home.registry.peer_endpoint(cluster).await,
    ) else {
        return String::new();
    };
    if serving == home.config.cluster.id && !cell.serves(cluster) {
        "; it was just assigned to this Foghorn's cell, which serves it within seconds: retry"
            .into()
    } else if at.grpc_addr.is_empty() {
        String::new()
    } else {
        format!("; connect to its Foghorn at {}", at.grpc_addr)
    }
}

/// Ingest decisions ask the SQL registry.
impl session::IngestRegistry for Registry {
    type Error = RegistryError;

    async fn check_key(
        &self,
        stream_key: &str,
        cluster_id: &str,
    ) -> Result<IngestCheck, RegistryError> {
        Ok(match self.check_ingest(stream_key, cluster_id).await? {
            IngestVerdict::Accept(stream) => IngestCheck::Accept(IngestStream {
                id: stream.id,
                internal_name: stream.internal_name,
            }),
            IngestVerdict::UnknownKey => IngestCheck::UnknownKey,
            IngestVerdict::NotPermitted => IngestCheck::NotPermitted,
        })
    }

    async fn record_live(
        &self,
        stream_id: &str,
        cluster_id: &str,
        node_id: &str,
    ) -> Result<(), RegistryError> {
        self.mark_live(stream_id, cluster_id, node_id).await
    }
}

/// The ConfigSeed for `node`; the cluster certificate only on a TLS connection (`secure`), never
/// where its key could be read off the wire.
fn seed(state: &AppState, node: &Identity, seed: Seed, secure: bool) -> ControlMessage {
    let cluster = &node.cluster_id;
    let zone = crate::names::Zone::new(cluster, &state.config.cluster.root_domain);
    ControlMessage {
        payload: Some(control_message::Payload::ConfigSeed(proto::ConfigSeed {
            node_id: node.node_id.clone(),
            cluster_id: cluster.clone(),
            tenant_id: node.owner_tenant_id.clone().unwrap_or_default(),
            node_credential: seed.credential.unwrap_or_default(),
            edge_domain: zone.edge_host(&node.node_id),
            pool_domain: zone.pool_host(),
            stats_interval_ms: u32::try_from(state.config.edges.stats_interval.as_millis())
                .unwrap_or(u32::MAX),
            mode: convert::mode_to_proto(seed.mode) as i32,
            tls: secure.then(|| tls_bundle(&state.tls.bundle())),
            balancer_base_url: zone.foghorn_url(),
            seed_version: seed.version,
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

#[cfg(test)]
mod tests {
    /// What one buffered outbound frame costs: tokio's channel allocates 32 slots at a time.
    #[test]
    fn outbound_slot_stays_small() {
        let slot = std::mem::size_of::<super::Frame>();
        assert!(slot <= 16, "outbound slot is {slot} bytes");
    }
}
