//! `foghorn.v1.Federation` (DESIGN.md §7): PeerChannels with the Foghorns of other clusters, both
//! as server and as client, the `QueryStream` / `NotifyOriginPull` calls of on-demand peering, and
//! the tasks that keep it all going: the summary feed, and the supervisor that dials (leader only)
//! the always-on peers and the on-demand peers streams need.
//!
//! Every call carries the caller's cluster id and its peer credential in metadata; the callee
//! checks the credential against the registry and refuses a caller that shares no tenant with it.
//! Every frame names the cluster it speaks for, and one naming any other cluster than the one the
//! channel authenticated ends the channel.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use super::peer::{summary_from_proto, summary_to_proto};
use crate::federation::{Direction, FrameBudget, Origin, Peers, Smoother};
use crate::metrics::{FrameLabels, RpcLabels};
use crate::names::Zone;
use crate::proto::{
    self, federation_client::FederationClient, federation_server::Federation, peer_message,
    PeerMessage,
};
use crate::registry::PeerEndpoint;
use crate::replicas::PeerNews;
use crate::routing::{dtsc_url, Need, Position, Request as RouteRequest};
use crate::state::AppState;

/// Metadata key naming the calling cluster.
pub const CLUSTER_HEADER: &str = "x-foghorn-cluster";
/// The federation protocol version this Foghorn speaks.
pub const FEDERATION_VERSION: u32 = 1;
/// Frames queued towards one peer; past that the oldest is dropped (each is periodic or TTL-bound).
const MAILBOX: usize = 64;
/// Largest federation message accepted (a summary of 10,000 edges is ~0.5 MB; of the 100,000 a
/// summary may hold, ~5 MB).
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// Channels one peer may have open here at once (its replicas around a leader change, a
/// reconnect before the old channel was noticed dead); a newer one replaces the oldest.
const MAX_INBOUND_PER_PEER: usize = 4;
/// Most stream names in one advert.
const MAX_ADVERT: usize = 100_000;
/// Longest stream name accepted from a peer.
const MAX_NAME: usize = 512;
/// Candidates a QueryStream answers.
const QUERY_CANDIDATES: usize = 5;
/// First wait before redialing a peer; doubled per failure up to `federation.reconnect_max`.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
/// How long a deliberate close waits for the peer to finish its side.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Frames towards one peer: bounded, dropping the oldest when full (DESIGN.md §7.4).
#[derive(Debug)]
pub struct Mailbox {
    queue: Mutex<(VecDeque<Result<PeerMessage, Status>>, bool)>,
    ready: Notify,
}

impl Mailbox {
    fn new() -> Arc<Mailbox> {
        Arc::new(Mailbox {
            queue: Mutex::new((VecDeque::new(), false)),
            ready: Notify::new(),
        })
    }

    fn push(&self, item: Result<PeerMessage, Status>) {
        let mut q = self.queue.lock();
        if q.1 {
            return;
        }
        if q.0.len() >= MAILBOX {
            q.0.pop_front();
        }
        q.0.push_back(item);
        drop(q);
        self.ready.notify_one();
    }

    fn send(&self, payload: peer_message::Payload) {
        self.push(Ok(PeerMessage {
            payload: Some(payload),
        }));
    }

    /// Ends the stream once the queued frames are out (after `fail`'s status, if any).
    fn close(&self) {
        self.queue.lock().1 = true;
        self.ready.notify_one();
    }

    fn fail(&self, status: Status) {
        self.push(Err(status));
        self.close();
    }

    async fn next(&self) -> Option<Result<PeerMessage, Status>> {
        loop {
            {
                let mut q = self.queue.lock();
                if let Some(item) = q.0.pop_front() {
                    return Some(item);
                }
                if q.1 {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    fn stream(self: Arc<Self>) -> impl Stream<Item = Result<PeerMessage, Status>> + Send {
        futures_util::stream::unfold(self, |m| async move { m.next().await.map(|i| (i, m)) })
    }
}

/// Federation state shared by the server, the client tasks and the viewer path.
#[derive(Debug)]
pub struct Hub {
    pub peers: Arc<Peers>,
    /// This Foghorn's secret, from which its credential towards each peer is derived.
    secret: String,
    /// Peers whose credential this process registered, and when (refreshed daily).
    registered: Mutex<HashMap<String, Instant>>,
    /// The last summary built; none until the edges had a moment to (re)connect after a start,
    /// so peers keep what they had of this cluster instead of an empty summary.
    summary: watch::Sender<Option<Arc<proto::ClusterEdgeSummary>>>,
    advert: watch::Sender<Arc<Vec<String>>>,
    /// gRPC clients by address (a tonic channel reconnects by itself).
    clients: Mutex<HashMap<String, FederationClient<Channel>>>,
    /// What each peer may still send: one allowance for all its channels, kept across
    /// reconnects, so neither more channels nor redialing buys a peer more.
    budgets: Mutex<HashMap<String, FrameBudget>>,
    /// Channels peers opened here, by order of opening, with what ends each.
    inbound: Mutex<HashMap<u64, Inbound>>,
    next_inbound: std::sync::atomic::AtomicU64,
    /// One arrangement at a time per stream.
    arranging: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Arrangements that did not end in a pull here (refused, failed), kept for `RETRY_AFTER`
    /// so the viewers meanwhile cost no call: by stream, when, and the peer edge's URL if any.
    unarranged: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

/// How long a refused or failed arrangement stands before a viewer tries again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

impl Hub {
    pub fn new(peers: Arc<Peers>, secret: String) -> Hub {
        Hub {
            peers,
            secret,
            registered: Mutex::new(HashMap::new()),
            summary: watch::channel(None).0,
            advert: watch::channel(Arc::new(Vec::new())).0,
            clients: Mutex::new(HashMap::new()),
            budgets: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
            next_inbound: std::sync::atomic::AtomicU64::new(0),
            arranging: Mutex::new(HashMap::new()),
            unarranged: Mutex::new(HashMap::new()),
        }
    }

    /// A client of `peer` at `at`: over TLS for an `https://` address, trusting the CA the peer
    /// published (else the public web PKI) and checking the certificate against
    /// `foghorn.{peer}.{root}`, whatever address is dialed.
    fn client(
        &self,
        peer: &str,
        at: &PeerEndpoint,
        root: &str,
        timeout: Duration,
    ) -> Result<FederationClient<Channel>, Status> {
        let addr = at.grpc_addr.as_str();
        // Keyed by what is dialed and what is trusted: a peer publishing a new CA gets a new
        // channel, and the old one is dropped.
        let key = format!(
            "{addr} {}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                at.tls_ca_pem.as_bytes()
            ))
        );
        let mut clients = self.clients.lock();
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        clients.retain(|k, _| k.split(' ').next() != Some(addr));
        let mut endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| Status::failed_precondition(format!("bad peer address {addr:?}: {e}")))?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
        if addr.starts_with("https://") {
            let tls = ClientTlsConfig::new().domain_name(Zone::new(peer, root).foghorn_host());
            let tls = if at.tls_ca_pem.is_empty() {
                tls.with_webpki_roots()
            } else {
                tls.ca_certificate(Certificate::from_pem(&at.tls_ca_pem))
            };
            endpoint = endpoint.tls_config(tls).map_err(|e| {
                Status::failed_precondition(format!("TLS settings for peer {peer:?}: {e}"))
            })?;
        }
        let client = FederationClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// How often a credential in use is registered again (keeps it from being forgotten as idle).
const REREGISTER: Duration = Duration::from_secs(24 * 3600);

/// `message` with this cluster's id and its credential towards `peer` in the metadata; the
/// credential is registered first (once a day per peer and process).
async fn authed<T>(state: &AppState, peer: &str, message: T) -> Result<Request<T>, Status> {
    let hub = &state.federation;
    let me = &state.config.cluster.id;
    let credential = crate::secret::peer_credential_for(&hub.secret, peer);
    let fresh = hub
        .registered
        .lock()
        .get(peer)
        .is_some_and(|at| at.elapsed() < REREGISTER);
    if !fresh {
        state
            .registry
            .register_peer_credential(me, peer, &credential)
            .await
            .map_err(registry_status)?;
        hub.registered
            .lock()
            .insert(peer.to_string(), Instant::now());
    }
    let mut req = Request::new(message);
    let md = req.metadata_mut();
    let (Ok(cluster), Ok(bearer)) = (me.parse(), format!("Bearer {credential}").parse()) else {
        return Err(Status::internal("credential is not valid metadata"));
    };
    md.insert(CLUSTER_HEADER, cluster);
    md.insert("authorization", bearer);
    Ok(req)
}

/// A registry failure during a federation call: the caller may retry.
fn registry_status(e: crate::registry::RegistryError) -> Status {
    Status::unavailable(e.to_string())
}

fn count_rpc(state: &AppState, rpc: &'static str, direction: &'static str) {
    state
        .metrics
        .federation_rpcs
        .get_or_create(&RpcLabels { rpc, direction })
        .inc();
}

fn refuse(state: &AppState, status: Status) -> Status {
    state.metrics.federation_refusals.inc();
    tracing::warn!(code = ?status.code(), message = status.message(), "refused a peer");
    status
}

/// The calling cluster, authenticated: a valid credential of the cluster it names, another
/// cluster than this one, and one that shares a tenant with this one.
async fn authenticate(state: &AppState, md: &MetadataMap) -> Result<String, Status> {
    let me = &state.config.cluster.id;
    let claimed = md
        .get(CLUSTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|c| crate::config::is_valid_label(c))
        .ok_or_else(|| {
            refuse(
                state,
                Status::unauthenticated(format!("missing or malformed {CLUSTER_HEADER}")),
            )
        })?;
    let credential = md
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !state
        .registry
        .authenticate_peer(claimed, me, credential)
        .await
        .map_err(registry_status)?
    {
        return Err(refuse(
            state,
            Status::unauthenticated(format!("not a peer credential of cluster {claimed:?}")),
        ));
    }
    if claimed == me {
        return Err(refuse(
            state,
            Status::permission_denied("a cluster does not peer with itself"),
        ));
    }
    if !state
        .registry
        .clusters_share_a_tenant(me, claimed)
        .await
        .map_err(registry_status)?
    {
        return Err(refuse(
            state,
            Status::permission_denied(format!(
                "cluster {claimed:?} shares no active subscription with cluster {me:?}"
            )),
        ));
    }
    Ok(claimed.to_string())
}

/// A channel a peer opened here.
#[derive(Debug, Clone)]
struct Inbound {
    peer: String,
    /// Cancelled when the pair shares no tenant any more.
    unpeer: CancellationToken,
    /// Cancelled when newer channels of the same peer replace this one.
    replace: CancellationToken,
}

/// Why a channel ended.
#[derive(Debug)]
enum ChannelEnd {
    /// Nobody needs the pair any more (this side closed it).
    Unpeered,
    /// A newer channel of the same peer took its place.
    Replaced,
    /// The peer sent more than a channel's allowance.
    Flooded,
    /// The peer finished the channel cleanly.
    PeerClosed,
    ShuttingDown,
    /// Nothing heard from the peer for a heartbeat TTL.
    Silent,
    Failed(String),
    /// The peer broke the rules; the message says how.
    Refused(String),
}

fn frame_kind(payload: &peer_message::Payload) -> &'static str {
    match payload {
        peer_message::Payload::Hello(_) => "hello",
        peer_message::Payload::Summary(_) => "summary",
        peer_message::Payload::Heartbeat(_) => "heartbeat",
        peer_message::Payload::StreamAdvert(_) => "stream_advert",
    }
}

/// Applies one frame of `peer`; `Err` says why the channel must end.
fn handle_frame(
    state: &AppState,
    peer: &str,
    frame: PeerMessage,
    hello_seen: &mut bool,
) -> Result<(), String> {
    let Some(payload) = frame.payload else {
        return Err("empty frame".into());
    };
    state
        .metrics
        .federation_frames
        .get_or_create(&FrameLabels {
            kind: frame_kind(&payload),
        })
        .inc();
    let speaks_for = |cluster: &str| {
        if cluster == peer {
            Ok(())
        } else {
            Err(format!(
                "a frame claims cluster {:?} on the channel of cluster {peer:?}",
                cluster.chars().take(64).collect::<String>()
            ))
        }
    };
    if !*hello_seen && !matches!(payload, peer_message::Payload::Hello(_)) {
        return Err("the first frame must be Hello".into());
    }
    let peers = &state.federation.peers;
    // The other replicas of this cluster score the peer's edges too (DESIGN.md §7.3): what this
    // replica accepts from the peer, it relays to them.
    let relay = |payload: &peer_message::Payload| {
        if let Some(sync) = &state.replication {
            use prost::Message as _;
            let frame = PeerMessage {
                payload: Some(payload.clone()),
            };
            sync.relay_peer_news(peer, PeerNews::Frame(&frame.encode_to_vec()));
        }
    };
    match payload {
        peer_message::Payload::Hello(hello) => {
            speaks_for(&hello.cluster_id)?;
            if hello.protocol_version != FEDERATION_VERSION {
                return Err(format!(
                    "federation protocol {} is not supported (this Foghorn speaks {FEDERATION_VERSION})",
                    hello.protocol_version
                ));
            }
            *hello_seen = true;
        }
        peer_message::Payload::Summary(wire) => {
            let summary = summary_from_proto(&wire, peer, &state.config.cluster.root_domain)
                .map_err(|e| format!("bad summary: {e}"))?;
            peers.on_summary(peer, summary);
            relay(&peer_message::Payload::Summary(wire));
        }
        peer_message::Payload::Heartbeat(beat) => {
            speaks_for(&beat.cluster_id)?;
            peers.on_heartbeat(peer);
            relay(&peer_message::Payload::Heartbeat(beat));
        }
        peer_message::Payload::StreamAdvert(advert) => {
            speaks_for(&advert.cluster_id)?;
            if advert.streams.len() > MAX_ADVERT
                || advert
                    .streams
                    .iter()
                    .any(|s| s.is_empty() || s.len() > MAX_NAME)
            {
                return Err("bad stream advert".into());
            }
            peers.on_advert(peer, advert.streams.iter().cloned().collect());
            relay(&peer_message::Payload::StreamAdvert(advert));
        }
    }
    Ok(())
}

/// Runs one channel with `peer` (either direction) until it ends: sends Hello, the current summary
/// and advert, then every new summary and advert and a heartbeat every interval; applies the
/// peer's frames, within a [`FrameBudget`]. `stop` ends it as no longer needed, `replace` as
/// replaced by a newer channel.
async fn run_channel<S>(
    state: &AppState,
    peer: &str,
    direction: Direction,
    inbound: &mut S,
    out: &Mailbox,
    stop: &CancellationToken,
    replace: &CancellationToken,
) -> ChannelEnd
where
    S: Stream<Item = Result<PeerMessage, Status>> + Unpin,
{
    let hub = &state.federation;
    let cfg = &state.config.federation;
    let me = state.config.cluster.id.clone();
    let id = hub.peers.channel_opened(peer, direction);
    state.metrics.federation_channels.inc();
    tracing::info!(%peer, ?direction, "peer channel open");
    let mut summaries = hub.summary.subscribe();
    let mut adverts = hub.advert.subscribe();
    let advert = |streams: &[String]| {
        peer_message::Payload::StreamAdvert(proto::StreamAdvert {
            cluster_id: me.clone(),
            streams: streams.to_vec(),
        })
    };
    out.send(peer_message::Payload::Hello(proto::Hello {
        cluster_id: me.clone(),
        protocol_version: FEDERATION_VERSION,
    }));
    // Nothing about this cluster's edges and streams until its first summary: after a restart,
    // an empty summary or advert would make the peer forget them before they reconnect here.
    if let Some(summary) = summaries.borrow_and_update().as_deref() {
        out.send(peer_message::Payload::Summary(summary.clone()));
        out.send(advert(&adverts.borrow_and_update()));
    }
    let mut heartbeat = tokio::time::interval(cfg.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let within_budget = |now: Instant, len: usize| {
        let mut budgets = hub.budgets.lock();
        match budgets.get_mut(peer) {
            Some(budget) => budget.admit(now, len),
            None => budgets
                .entry(peer.to_string())
                .or_insert_with(|| FrameBudget::new(now))
                .admit(now, len),
        }
    };
    let mut hello_seen = false;
    let end = loop {
        tokio::select! {
            _ = stop.cancelled() => break ChannelEnd::Unpeered,
            _ = replace.cancelled() => break ChannelEnd::Replaced,
            _ = state.shutdown.cancelled() => break ChannelEnd::ShuttingDown,
            changed = summaries.changed() => {
                if changed.is_err() {
                    break ChannelEnd::ShuttingDown;
                }
                if let Some(summary) = summaries.borrow_and_update().clone() {
                    out.send(peer_message::Payload::Summary((*summary).clone()));
                }
                // The advert goes with every summary too (DESIGN.md §7.1: on change and every 30 s).
                out.send(advert(&adverts.borrow()));
            }
            changed = adverts.changed() => {
                if changed.is_err() {
                    break ChannelEnd::ShuttingDown;
                }
                let streams = adverts.borrow_and_update().clone();
                out.send(advert(&streams));
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > cfg.heartbeat_ttl {
                    break ChannelEnd::Silent;
                }
                out.send(peer_message::Payload::Heartbeat(proto::PeerHeartbeat {
                    cluster_id: me.clone(),
                    sent_at_unix_ms: crate::registry::now_ms(),
                }));
            }
            frame = inbound.next() => match frame {
                None => break ChannelEnd::PeerClosed,
                Some(Err(status)) => break ChannelEnd::Failed(status.message().to_string()),
                Some(Ok(frame)) => {
                    use prost::Message as _;
                    last_heard = Instant::now();
                    if !within_budget(last_heard, frame.encoded_len()) {
                        state.metrics.federation_refusals.inc();
                        break ChannelEnd::Flooded;
                    }
                    if let Err(why) = handle_frame(state, peer, frame, &mut hello_seen) {
                        state.metrics.federation_refusals.inc();
                        break ChannelEnd::Refused(why);
                    }
                }
            },
        }
    };
    hub.peers.channel_closed(
        peer,
        id,
        matches!(end, ChannelEnd::Unpeered | ChannelEnd::PeerClosed),
    );
    state.metrics.federation_channels.dec();
    match &end {
        ChannelEnd::Refused(why) => tracing::warn!(%peer, %why, "peer channel refused"),
        ChannelEnd::Flooded => {
            tracing::warn!(%peer, "peer channel ended: the peer sent more than its allowance")
        }
        ChannelEnd::Failed(why) => tracing::warn!(%peer, %why, "peer channel failed"),
        other => tracing::info!(%peer, end = ?other, "peer channel closed"),
    }
    end
}

/// The Federation service.
#[derive(Clone, Debug)]
pub struct FederationService {
    state: AppState,
}

impl FederationService {
    pub fn new(state: AppState) -> Self {
        FederationService { state }
    }
}

fn checked_stream(name: &str) -> Result<(), Status> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Status::invalid_argument("malformed stream name"));
    }
    Ok(())
}

impl FederationService {
    /// The caller may act for `tenant` on `stream` here: the tenant may use both clusters and owns
    /// the stream.
    async fn check_tenant(&self, caller: &str, tenant: &str, stream: &str) -> Result<(), Status> {
        let state = &self.state;
        let registry = &state.registry;
        checked_stream(stream)?;
        let me = &state.config.cluster.id;
        let may = registry
            .tenant_may_use_both(tenant, caller, me)
            .await
            .map_err(registry_status)?;
        if !may {
            return Err(refuse(
                state,
                Status::permission_denied(format!(
                    "the tenant may not use both cluster {caller:?} and cluster {me:?}"
                )),
            ));
        }
        let owned = registry
            .stream_by_internal_name(stream)
            .await
            .map_err(registry_status)?
            .is_some_and(|s| s.tenant_id == tenant);
        if !owned {
            return Err(Status::not_found("no such stream of this tenant"));
        }
        Ok(())
    }
}

type PeerStream = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Federation for FederationService {
    type PeerChannelStream = PeerStream;

    async fn peer_channel(
        &self,
        request: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<PeerStream>, Status> {
        let state = self.state.clone();
        if state.shutdown.is_cancelled() {
            return Err(Status::unavailable("Foghorn is shutting down"));
        }
        let peer = authenticate(&state, request.metadata()).await?;
        let mut inbound = request.into_inner();
        let out = Mailbox::new();
        let hub = &state.federation;
        let this = Inbound {
            peer: peer.clone(),
            unpeer: CancellationToken::new(),
            replace: CancellationToken::new(),
        };
        let key = hub
            .next_inbound
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut inbound = hub.inbound.lock();
            inbound.insert(key, this.clone());
            let mut same_peer: Vec<u64> = inbound
                .iter()
                .filter(|(_, c)| c.peer == peer)
                .map(|(k, _)| *k)
                .collect();
            if same_peer.len() > MAX_INBOUND_PER_PEER {
                same_peer.sort_unstable();
                for oldest in &same_peer[..same_peer.len() - MAX_INBOUND_PER_PEER] {
                    if let Some(c) = inbound.remove(oldest) {
                        c.replace.cancel();
                    }
                }
            }
        }
        let mailbox = out.clone();
        let tasks = state.tasks.clone();
        tasks.spawn(async move {
            let end = run_channel(
                &state,
                &peer,
                Direction::Inbound,
                &mut inbound,
                &mailbox,
                &this.unpeer,
                &this.replace,
            )
            .await;
            state.federation.inbound.lock().remove(&key);
            match end {
                ChannelEnd::Refused(why) => mailbox.fail(Status::permission_denied(why)),
                ChannelEnd::ShuttingDown => {
                    mailbox.fail(Status::unavailable("Foghorn is shutting down"))
                }
                ChannelEnd::Silent => mailbox.fail(Status::deadline_exceeded("peer went silent")),
                ChannelEnd::Flooded => mailbox.fail(Status::resource_exhausted(format!(
                    "more than {} frames or {} bytes per second on one channel",
                    crate::federation::budget::FRAMES_PER_SEC,
                    crate::federation::budget::BYTES_PER_SEC
                ))),
                ChannelEnd::Replaced => mailbox.fail(Status::aborted(
                    "newer channels of this cluster replaced this one",
                )),
                _ => mailbox.close(),
            }
        });
        Ok(Response::new(Box::pin(out.stream())))
    }

    async fn query_stream(
        &self,
        request: Request<proto::QueryStreamRequest>,
    ) -> Result<Response<proto::QueryStreamResponse>, Status> {
        let state = &self.state;
        let caller = authenticate(state, request.metadata()).await?;
        count_rpc(state, "query_stream", "in");
        let req = request.into_inner();
        self.check_tenant(&caller, &req.tenant_id, &req.stream)
            .await?;
        let position = req
            .viewer_lat
            .zip(req.viewer_lon)
            .and_then(|(lat, lon)| Position::from_degrees(lat, lon));
        let snapshot = state.router.snapshot();
        let now = Instant::now();
        let origin = snapshot.best_source(&req.stream, None, position, now);
        let live = origin.is_some();
        let candidate = |c: &crate::routing::Candidate, score: u64| proto::StreamCandidate {
            node_id: c.node_id.to_string(),
            base_url: c.base_url.to_string(),
            dtsc_url: dtsc_url(&c.base_url, &req.stream),
            score,
        };
        let candidates = if req.source_selection {
            origin.map(|c| candidate(c, 0)).into_iter().collect()
        } else if live {
            let route = RouteRequest {
                viewer: position,
                stream: Some(&req.stream),
                need: Need::Viewers,
                now,
                remote_clusters: &[],
            };
            snapshot
                .rank(&route, QUERY_CANDIDATES)
                .iter()
                .map(|p| candidate(snapshot.candidate(p), p.parts.total))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(proto::QueryStreamResponse {
            live,
            candidates,
        }))
    }

    async fn notify_origin_pull(
        &self,
        request: Request<proto::NotifyOriginPullRequest>,
    ) -> Result<Response<proto::NotifyOriginPullResponse>, Status> {
        let state = &self.state;
        let caller = authenticate(state, request.metadata()).await?;
        count_rpc(state, "notify_origin_pull", "in");
        let req = request.into_inner();
        if req.destination_cluster_id != caller {
            return Err(refuse(
                state,
                Status::permission_denied(format!(
                    "cluster {caller:?} may only arrange pulls into its own edges"
                )),
            ));
        }
        self.check_tenant(&caller, &req.tenant_id, &req.stream)
            .await?;
        let snapshot = state.router.snapshot();
        let answer = match snapshot.best_source(&req.stream, None, None, Instant::now()) {
            Some(origin) => {
                tracing::info!(stream = %req.stream, peer = %caller, node = %req.destination_node_id, "origin pull into a peer cluster accepted");
                proto::NotifyOriginPullResponse {
                    accepted: true,
                    dtsc_url: dtsc_url(&origin.base_url, &req.stream),
                    reason: String::new(),
                }
            }
            None => proto::NotifyOriginPullResponse {
                accepted: false,
                dtsc_url: String::new(),
                reason: format!(
                    "stream is not live on cluster {:?}",
                    state.config.cluster.id
                ),
            },
        };
        Ok(Response::new(answer))
    }
}

// ---- client side ----

/// Dials `peer`'s gRPC address from the registry.
async fn client_for(state: &AppState, peer: &str) -> Result<FederationClient<Channel>, Status> {
    let at = state
        .registry
        .peer_endpoint(peer)
        .await
        .map_err(registry_status)?
        .ok_or_else(|| Status::not_found(format!("cluster {peer:?} is not in the registry")))?;
    if at.grpc_addr.is_empty() {
        return Err(Status::failed_precondition(format!(
            "cluster {peer:?} has no Foghorn gRPC address in the registry"
        )));
    }
    state.federation.client(
        peer,
        &at,
        &state.config.cluster.root_domain,
        state.config.federation.rpc_timeout,
    )
}

/// Opens one channel to `peer` and runs it until it ends.
async fn connect_and_run(
    state: &AppState,
    peer: &str,
    stop: &CancellationToken,
) -> Result<ChannelEnd, Status> {
    let mut client = client_for(state, peer).await?;
    let out = Mailbox::new();
    let request = authed(state, peer, out.clone().stream().filter_map(Result::ok)).await?;
    let response = tokio::time::timeout(
        state.config.federation.rpc_timeout,
        client.peer_channel(request),
    )
    .await
    .map_err(|_| Status::deadline_exceeded("peer did not answer in time"))??;
    let mut inbound = response.into_inner();
    let never = CancellationToken::new();
    let end = run_channel(
        state,
        peer,
        Direction::Outbound,
        &mut inbound,
        &out,
        stop,
        &never,
    )
    .await;
    out.close();
    if matches!(end, ChannelEnd::Unpeered) {
        // Let the peer see a clean end (it then stops scoring our edges at once).
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while inbound.next().await.is_some() {}
        })
        .await;
    }
    Ok(end)
}

/// Exponential backoff with jitter: somewhere in the upper half of `min(RECONNECT_MIN · 2^n, max)`.
fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = RECONNECT_MIN
        .saturating_mul(1u32 << attempt.min(16))
        .min(max);
    let half = base / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Keeps a channel open with `peer` until `stop`, redialing after failures.
async fn dial(state: AppState, peer: String, stop: CancellationToken) {
    let cfg = &state.config.federation;
    let mut attempt = 0u32;
    loop {
        let started = Instant::now();
        match connect_and_run(&state, &peer, &stop).await {
            Ok(ChannelEnd::Unpeered) | Ok(ChannelEnd::ShuttingDown) => return,
            Ok(end) => tracing::debug!(%peer, ?end, "peer channel ended; redialing"),
            Err(status) => {
                tracing::warn!(%peer, code = ?status.code(), message = status.message(), "could not open a peer channel")
            }
        }
        if started.elapsed() >= cfg.reconnect_max {
            attempt = 0; // the channel was up for a while: start over
        }
        let delay = backoff(attempt, cfg.reconnect_max);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Keeps the channels this Foghorn should dial open and the others closed: the always-on peers
/// (recomputed from the registry every `federation.reconcile_interval`; of each pair, the
/// cluster with the lower id dials) and the on-demand peers streams need. Only the leader dials.
/// Also closes channels peers opened here once the pair shares no tenant any more.
pub async fn supervise(state: AppState, stop: CancellationToken) {
    let me = state.config.cluster.id.clone();
    let cfg = &state.config.federation;
    let peers = &state.federation.peers;
    let mut dialers: HashMap<String, CancellationToken> = HashMap::new();
    let mut always_on: Vec<String> = Vec::new();
    let mut next_reconcile = Instant::now();
    loop {
        if Instant::now() >= next_reconcile {
            next_reconcile = Instant::now() + cfg.reconcile_interval;
            match state.registry.always_on_peers(&me).await {
                Ok(list) => {
                    always_on = list
                        .into_iter()
                        .map(|p| p.cluster_id)
                        .filter(|p| me < *p)
                        .collect()
                }
                Err(e) => tracing::warn!(error = %e, "could not recompute the always-on peers"),
            }
            close_unshared_inbound(&state).await;
        }
        peers.expire_wants();
        let mut want: HashSet<String> = HashSet::new();
        if state.leadership.is_leader() {
            want.extend(always_on.iter().cloned());
            for peer in peers.wanted() {
                // An on-demand peer already connected the other way needs no second channel.
                if dialers.contains_key(&peer) || peers.open_channels(&peer) == 0 {
                    want.insert(peer);
                }
            }
        }
        dialers.retain(|peer, token| {
            let keep = want.contains(peer);
            if !keep {
                tracing::info!(%peer, "closing the channel nobody needs any more");
                token.cancel();
            }
            keep
        });
        for peer in &want {
            if !dialers.contains_key(peer) {
                let token = stop.child_token();
                dialers.insert(peer.clone(), token.clone());
                tokio::spawn(dial(state.clone(), peer.clone(), token));
            }
        }
        peers.set_dialing(want);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = peers.wanted_changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1).min(cfg.reconcile_interval)) => {}
        }
    }
}

/// Ends the channels peers opened here whose pair shares no tenant any more.
async fn close_unshared_inbound(state: &AppState) {
    let inbound: Vec<Inbound> = state.federation.inbound.lock().values().cloned().collect();
    let mut checked: HashMap<String, bool> = HashMap::new();
    for Inbound { peer, unpeer, .. } in inbound {
        let shared = match checked.get(&peer) {
            Some(s) => *s,
            None => {
                let s = state
                    .registry
                    .clusters_share_a_tenant(&state.config.cluster.id, &peer)
                    .await
                    .unwrap_or(true);
                checked.insert(peer.clone(), s);
                s
            }
        };
        if !shared {
            tracing::info!(%peer, "peer shares no subscription any more; closing its channel");
            unpeer.cancel();
        }
    }
}

/// Samples the edges for the smoothed summary and publishes, to every channel, a new summary every
/// `federation.summary_interval` and the stream advert whenever it changes.
pub async fn feed(state: AppState, stop: CancellationToken) {
    let cfg = &state.config.federation;
    let root = state.config.cluster.root_domain.clone();
    let me = state.config.cluster.id.clone();
    let mut smoother = Smoother::new(cfg.summary_interval);
    let sample_every = state
        .config
        .edges
        .stats_interval
        .min(cfg.summary_interval / 3)
        .max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(sample_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The first summary goes out once the edges had two stats intervals to (re)connect and
    // report (after a restart they come back within seconds), not a whole interval later.
    let mut next_summary = Instant::now()
        + cfg
            .summary_interval
            .min(state.config.edges.stats_interval * 2);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let views = state.edges.list();
        let zone = Zone::new(&me, &root);
        smoother.observe(now, &views, |node| zone.edge_base_url(node));
        let summary_due = now >= next_summary;
        if !summary_due && state.federation.summary.borrow().is_none() {
            continue; // no advert before the first summary (see `run_channel`)
        }
        let mut live: Vec<String> = views
            .iter()
            .filter(|v| v.routable)
            .filter_map(|v| v.stats.as_ref())
            .flat_map(|s| s.streams.iter())
            .filter(|s| s.inputs > 0 && !s.replicated)
            .map(|s| s.internal_name.clone())
            .collect();
        live.sort_unstable();
        live.dedup();
        state.federation.advert.send_if_modified(|current| {
            if **current == live {
                return false;
            }
            *current = Arc::new(live);
            true
        });
        // After the advert: a channel sends the advert it sees along with the summary.
        if summary_due {
            next_summary = now + cfg.summary_interval;
            let summary = summary_to_proto(&smoother.summary(&me), &root);
            state
                .federation
                .summary
                .send_replace(Some(Arc::new(summary)));
        }
    }
}

// ---- on-demand peering (the viewer path) ----

/// What the viewer path should do for a stream live on another cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrangement {
    /// Route as usual: a local edge pulls the stream (arranged now or earlier), or the stream is
    /// not live anywhere else.
    Local,
    /// The peer refused the pull (or this cluster has no edge for it): send the viewer to this
    /// edge of the peer.
    Remote { base_url: String },
}

/// Arranges, once per stream, the origin pull of `stream` (live on `peer`) into one of this
/// cluster's edges (DESIGN.md §7.2, tier 2): keeps `peer` wanted (a channel opens), asks it where
/// the stream is (`QueryStream`), picks the local edge for the viewer, tells the peer
/// (`NotifyOriginPull`), and tells the edge to pull (`OriginPull`); `?source=` answers the peer's
/// DTSC URL from then on. Later viewers find the arrangement and cost no cross-cluster call.
pub async fn arrange(
    state: &AppState,
    peer: &str,
    tenant: &str,
    stream: &str,
    viewer: Option<Position>,
) -> Result<Arrangement, Status> {
    let hub = &state.federation;
    let recent = |hub: &Hub| -> Option<Arrangement> {
        if hub.peers.has_origin(stream) {
            return Some(Arrangement::Local);
        }
        let unarranged = hub.unarranged.lock();
        let (at, url) = unarranged.get(stream)?;
        (at.elapsed() < RETRY_AFTER).then(|| match url {
            Some(base_url) => Arrangement::Remote {
                base_url: base_url.clone(),
            },
            None => Arrangement::Local,
        })
    };
    if let Some(done) = recent(hub) {
        return Ok(done);
    }
    let gate = hub
        .arranging
        .lock()
        .entry(stream.to_string())
        .or_default()
        .clone();
    let _one_at_a_time = gate.lock().await;
    if let Some(done) = recent(hub) {
        return Ok(done); // settled while this request waited
    }
    let result = arrange_now(state, peer, tenant, stream, viewer).await;
    let unarranged = match &result {
        Ok(Arrangement::Remote { base_url }) => Some(Some(base_url.clone())),
        Ok(Arrangement::Local) if !hub.peers.has_origin(stream) => Some(None),
        Err(_) => Some(None),
        Ok(Arrangement::Local) => None,
    };
    {
        let mut map = hub.unarranged.lock();
        map.retain(|_, (at, _)| at.elapsed() < RETRY_AFTER);
        if let Some(url) = unarranged {
            map.insert(stream.to_string(), (Instant::now(), url));
        }
    }
    hub.arranging.lock().remove(stream);
    result
}

async fn arrange_now(
    state: &AppState,
    peer: &str,
    tenant: &str,
    stream: &str,
    viewer: Option<Position>,
) -> Result<Arrangement, Status> {
    let hub = &state.federation;
    let me = &state.config.cluster.id;
    let timeout = state.config.federation.rpc_timeout;
    let mut client = client_for(state, peer).await?;
    count_rpc(state, "query_stream", "out");
    let query = authed(
        state,
        peer,
        proto::QueryStreamRequest {
            stream: stream.to_string(),
            tenant_id: tenant.to_string(),
            viewer_lat: viewer.map(|p| p.latitude()),
            viewer_lon: viewer.map(|p| p.longitude()),
            source_selection: false,
        },
    )
    .await?;
    let found = tokio::time::timeout(timeout, client.query_stream(query))
        .await
        .map_err(|_| Status::deadline_exceeded("QueryStream took too long"))??
        .into_inner();
    if !found.live {
        return Ok(Arrangement::Local);
    }
    hub.peers.want(peer, stream);
    if let Some(sync) = state
        .replication
        .as_ref()
        .filter(|_| !state.leadership.is_leader())
    {
        // Only the leader dials: it opens the channel this stream needs.
        sync.relay_peer_news(peer, PeerNews::Want(stream));
    }
    let root = &state.config.cluster.root_domain;
    let remote = || {
        found
            .candidates
            .iter()
            .find(|c| crate::registry::is_valid_node_id(&c.node_id))
            .map(|c| Arrangement::Remote {
                base_url: super::peer::peer_base_url(&c.base_url, &c.node_id, peer, root),
            })
            .unwrap_or(Arrangement::Local)
    };
    let snapshot = state.router.snapshot();
    let route = RouteRequest {
        viewer,
        stream: Some(stream),
        need: Need::Viewers,
        now: Instant::now(),
        remote_clusters: &[],
    };
    let Some(edge) = snapshot
        .rank(&route, 1)
        .first()
        .map(|p| snapshot.candidate(p).clone())
    else {
        return Ok(remote());
    };
    count_rpc(state, "notify_origin_pull", "out");
    let notify = authed(
        state,
        peer,
        proto::NotifyOriginPullRequest {
            stream: stream.to_string(),
            tenant_id: tenant.to_string(),
            destination_cluster_id: me.clone(),
            destination_node_id: edge.node_id.to_string(),
        },
    )
    .await?;
    let answer = tokio::time::timeout(timeout, client.notify_origin_pull(notify))
        .await
        .map_err(|_| Status::deadline_exceeded("NotifyOriginPull took too long"))??
        .into_inner();
    if !answer.accepted || !super::peer::is_peer_dtsc_url(&answer.dtsc_url, peer, root) {
        tracing::info!(%peer, %stream, reason = %answer.reason, "origin pull refused; sending the viewer to the peer's edge");
        return Ok(remote());
    }
    hub.peers.set_origin(
        stream,
        Origin {
            peer: peer.to_string(),
            dtsc_url: answer.dtsc_url.clone(),
            node_id: edge.node_id.to_string(),
        },
    );
    // Every replica answers the edge's `?source=`; the one holding its control stream tells it.
    if let Some(sync) = &state.replication {
        sync.relay_peer_news(
            peer,
            PeerNews::Origin {
                stream,
                dtsc_url: &answer.dtsc_url,
                node_id: &edge.node_id,
            },
        );
    }
    let told = state
        .edge_links
        .origin_pull(&edge.node_id, stream, &answer.dtsc_url);
    tracing::info!(%peer, %stream, node = %edge.node_id, source = %answer.dtsc_url, told, "cross-cluster origin pull arranged");
    Ok(Arrangement::Local)
}
