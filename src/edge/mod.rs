//! In-process state of the edges connected to this Foghorn: sessions, last stats, liveness.
//!
//! The rules of DESIGN.md §4 live here, free of any transport: an edge is routable only while its
//! control stream is open and its last `NodeStats` is younger than the liveness window; closing the
//! stream makes it unroutable at once; a new session for the same node replaces (cancels) the old
//! one, and frames of a replaced session are ignored. Time is `tokio::time::Instant`, so tests pause
//! and advance it instead of sleeping. What one control session may do, in which order, and how it
//! ends is in [`session`].
//!
//! With replicas (issue 4), an edge is held either here (a local session) or by another replica of
//! the cluster, whose announcements the replication (`replicas` module) folds in. Each session carries a
//! fencing token handed out by Redis; between two sessions of one node the higher token wins, so a
//! node has one live session however many replicas it reached.

mod base_url;
mod control;
mod pending;
pub mod session;

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use base_url::{check_base_url, BaseUrlError};
pub use control::{EdgeCommands, PROTOCOL_VERSION};
pub use pending::{per_viewer_estimate, Pending, PENDING_TTL, SLOT as PENDING_SLOT};

/// What an edge can do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub ingest: bool,
    pub edge: bool,
    pub storage: bool,
    pub processing: bool,
}

impl Capabilities {
    /// Comma-separated names, as stored in the registry.
    pub fn to_list(self) -> String {
        let mut out = Vec::new();
        for (on, name) in [
            (self.ingest, "ingest"),
            (self.edge, "edge"),
            (self.storage, "storage"),
            (self.processing, "processing"),
        ] {
            if on {
                out.push(name);
            }
        }
        out.join(",")
    }
}

/// Operational mode; only `Normal` edges take new viewers or ingests.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Normal,
    Draining,
    Maintenance,
}

/// Load of one stream on one edge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamLoad {
    pub internal_name: String,
    pub viewers: u32,
    pub inputs: u32,
    pub up_bytes_per_sec: u64,
    pub down_bytes_per_sec: u64,
    pub replicated: bool,
}

/// One NodeStats report, validated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Tenths of a percent, 0..=1000.
    pub cpu_tenths: u16,
    pub ram_max_bytes: u64,
    pub ram_used_bytes: u64,
    pub up_bytes_per_sec: u64,
    pub down_bytes_per_sec: u64,
    pub bw_limit_bytes_per_sec: u64,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub location_name: String,
    pub connections: u32,
    pub streams: Vec<StreamLoad>,
}

impl Stats {
    /// Viewers over all streams, saturating (the counts come from edges, self-hosted ones too).
    pub fn viewers(&self) -> u64 {
        self.streams
            .iter()
            .map(|s| u64::from(s.viewers))
            .fold(0, u64::saturating_add)
    }
}

/// Summed load of a cluster's edges; bandwidth in bytes per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Utilization {
    pub edges: u64,
    pub healthy_edges: u64,
    pub bw_used: u64,
    pub bw_limit: u64,
    pub viewers: u64,
}

/// What an edge said about itself at registration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeInfo {
    pub cluster_id: String,
    pub owner_tenant_id: Option<String>,
    pub capabilities: Capabilities,
    pub public_base_url: String,
    /// Address the control stream comes from (IPv4-mapped addresses unwrapped).
    pub peer_ip: Option<std::net::IpAddr>,
}

impl EdgeInfo {
    /// Where viewers are sent: the base URL the edge registered, else `default()` (the name of
    /// DESIGN.md §2).
    pub fn base_url_or(&self, default: impl FnOnce() -> String) -> String {
        if self.public_base_url.is_empty() {
            default()
        } else {
            self.public_base_url.trim_end_matches('/').to_string()
        }
    }
}

#[derive(Debug)]
struct Session {
    id: u64,
    cancel: CancellationToken,
    connected_at: Instant,
    /// Fencing token handed out by Redis; 0 until it is (or without Redis).
    token: u64,
}

/// Who holds an edge's control stream.
#[derive(Debug)]
enum Holder {
    Nobody,
    /// This process.
    Here(Session),
    /// Another replica of this cluster, under this fencing token.
    Replica {
        replica: String,
        token: u64,
    },
}

#[derive(Debug)]
struct Edge {
    info: EdgeInfo,
    mode: Mode,
    holder: Holder,
    stats: Option<Stats>,
    /// When the current session's last stats were taken (for an edge held by another replica: when
    /// that replica received them); `None` until the session sent any.
    last_stats_at: Option<Instant>,
    /// Stats reports of the current session, so replicas tell a new report from a repeat.
    stats_seq: u64,
    disconnected_at: Option<Instant>,
    /// Shared with this edge's routing candidate, which debits it on each redirect.
    pending: Arc<Pending>,
    /// Token of the last local session that ended, until its end is announced to the replicas.
    released: Option<u64>,
    /// Highest fencing token seen for this node, here or elsewhere: a new session's token must
    /// exceed it even if Redis lost its counter.
    last_token: u64,
    /// Changes with every edit of what routing reads (see [`RoutingInput::version`]).
    version: u64,
}

impl Edge {
    fn new(info: EdgeInfo, holder: Holder, pending_ttl: Duration) -> Edge {
        Edge {
            info,
            mode: Mode::Normal,
            holder,
            stats: None,
            last_stats_at: None,
            stats_seq: 0,
            disconnected_at: None,
            pending: Arc::new(Pending::new(pending_ttl)),
            released: None,
            last_token: 0,
            version: 0,
        }
    }

    /// Starts a new session (here or elsewhere): no stats of its own yet.
    fn hand_to(&mut self, holder: Holder) {
        let token = match &holder {
            Holder::Here(s) => s.token,
            Holder::Replica { token, .. } => *token,
            Holder::Nobody => 0,
        };
        self.last_token = self.last_token.max(token);
        if let Holder::Here(old) = std::mem::replace(&mut self.holder, holder) {
            old.cancel.cancel();
        }
        self.last_stats_at = None;
        self.stats_seq = 0;
        self.disconnected_at = None;
    }

    /// Ends the current session: unroutable from `now`.
    fn end(&mut self, now: Instant) {
        self.holder = Holder::Nobody;
        self.last_stats_at = None;
        self.disconnected_at = Some(now);
        self.pending.clear();
    }
}

/// What routing needs of one routable-looking edge (open session, stats, normal mode); freshness
/// is left to the caller through `fresh_until`.
#[derive(Debug)]
pub struct RoutingInput<'a> {
    pub node_id: &'a str,
    pub info: &'a EdgeInfo,
    pub stats: &'a Stats,
    pub fresh_until: Instant,
    pub pending: &'a Arc<Pending>,
    /// Unique to this state of the edge's routing inputs in this `EdgeState`: equal versions of
    /// a node mean equal `info`, `stats`, `fresh_until` and `pending`, so what was derived from
    /// them can be reused.
    pub version: u64,
}

/// A handle held by the transport for one open control stream.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub node_id: String,
    pub session_id: u64,
    /// Cancelled when a newer session replaces this one.
    pub replaced: CancellationToken,
    /// The edge's mode when this session attached; kept across reconnects, so a draining edge
    /// that reconnects is still draining.
    pub mode: Mode,
    /// Fencing token from Redis (0: none, no Redis or Redis unreachable at attach).
    pub token: u64,
}

/// A point-in-time view of one edge, for APIs and routing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeView {
    pub node_id: String,
    #[serde(flatten)]
    pub info: EdgeInfo,
    pub mode: Mode,
    pub connected: bool,
    /// The replica holding the edge's control stream, when it is not this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// Open stream and fresh stats; for an edge in `normal` mode the APIs also wait for the
    /// routing snapshot to hold it (the router's `routed_now`).
    pub routable: bool,
    /// Milliseconds since the last NodeStats of the current session.
    pub last_stats_age_ms: Option<u64>,
    pub connected_for_ms: Option<u64>,
    pub stats: Option<Stats>,
}

impl EdgeView {
    /// Whether the APIs report it routable, given the edges the router's last build included
    /// (`routed_now`): an edge in `normal` mode only once the router can send viewers there.
    pub fn routable_given(&self, routed: &std::collections::HashSet<String>) -> bool {
        self.routable && (self.mode != Mode::Normal || routed.contains(&self.node_id))
    }
}

/// What the other replicas are told about an edge held here: everything they need to route to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeRecord {
    pub info: EdgeInfo,
    pub mode: Mode,
    pub stats: Option<Stats>,
    /// Age of `stats` when the record was made, milliseconds.
    pub stats_age_ms: u64,
    pub stats_seq: u64,
}

/// What this replica has to announce about one of its edges.
#[derive(Debug, Clone, PartialEq)]
pub enum Announcement {
    /// The edge's current session is here (`token` 0: no fencing token yet).
    Held {
        session_id: u64,
        token: u64,
        record: Box<EdgeRecord>,
    },
    /// The session under `token` ended here.
    Released { token: u64 },
}

/// How long another replica's announcements of a deleted node are ignored: longer than any
/// announcement takes to arrive.
const FORGOTTEN_FOR: Duration = Duration::from_secs(60);

/// Every edge known to this process since it started: its own and, with replicas, those of the
/// other replicas of its cluster.
#[derive(Debug)]
pub struct EdgeState {
    edges: Mutex<HashMap<String, Edge>>,
    next_session: AtomicU64,
    /// Source of [`Edge::version`]: never reused, so no two states of any edges share one.
    next_version: AtomicU64,
    liveness: Duration,
    /// How long a redirect is charged to an edge at most (see [`Pending`]).
    pending_ttl: Duration,
    changed: Notify,
    /// Whether local changes are announced to other replicas (a Redis is configured).
    replicated: bool,
    /// Nodes with local changes not yet announced: one entry per node however many changes.
    outbox: Mutex<HashSet<String>>,
    outbox_filled: Notify,
    /// Deleted nodes ([`EdgeState::forget`]) and when: another replica's late word on them is
    /// ignored for [`FORGOTTEN_FOR`] (a node id can be given again later).
    forgotten: Mutex<HashMap<String, Instant>>,
}

impl EdgeState {
    /// `liveness` is how long after its last stats an edge stays routable (3 × stats interval).
    pub fn new(liveness: Duration) -> Self {
        EdgeState {
            edges: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            next_version: AtomicU64::new(1),
            liveness,
            pending_ttl: PENDING_TTL,
            changed: Notify::new(),
            replicated: false,
            outbox: Mutex::new(HashSet::new()),
            outbox_filled: Notify::new(),
            forgotten: Mutex::new(HashMap::new()),
        }
    }

    /// Charges redirects to an edge for at most `ttl` (`edges.pending_ttl`; 30 s by default).
    pub fn with_pending_ttl(mut self, ttl: Duration) -> Self {
        self.pending_ttl = ttl;
        self
    }

    /// Records local changes for announcement to the other replicas ([`EdgeState::take_outbox`]).
    pub fn replicated(mut self) -> Self {
        self.replicated = true;
        self
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Edge>> {
        self.edges.lock()
    }

    /// Marks an edit of `edge` (under the edges' lock) for the routing builder.
    fn edited(&self, edge: &mut Edge) {
        edge.version = self.next_version.fetch_add(1, Ordering::Relaxed);
    }

    /// Queues `node_id` for announcement.
    fn announce(&self, node_id: &str) {
        if self.replicated {
            let fresh = self.outbox.lock().insert(node_id.to_string());
            if fresh {
                self.outbox_filled.notify_one();
            }
        }
    }

    /// Opens a session for `node_id` under fencing `token` (0: none), cancelling the session it
    /// replaces, if any.
    pub fn attach(&self, node_id: &str, info: EdgeInfo, token: u64) -> SessionHandle {
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let replaced = CancellationToken::new();
        let now = Instant::now();
        let session = Holder::Here(Session {
            id: session_id,
            cancel: replaced.clone(),
            connected_at: now,
            token,
        });
        let mut edges = self.lock();
        let mode = match edges.get_mut(node_id) {
            Some(edge) => {
                edge.hand_to(session);
                edge.info = info;
                self.edited(edge);
                edge.mode
            }
            None => {
                let mut edge = Edge::new(info, Holder::Nobody, self.pending_ttl);
                edge.hand_to(session);
                self.edited(&mut edge);
                edges.insert(node_id.to_string(), edge);
                Mode::Normal
            }
        };
        drop(edges);
        self.changed.notify_one();
        self.announce(node_id);
        SessionHandle {
            node_id: node_id.to_string(),
            session_id,
            replaced,
            mode,
            token,
        }
    }

    /// Runs `f` on the edge if `handle` is still its current session; false when it was replaced.
    fn with_current(&self, handle: &SessionHandle, f: impl FnOnce(&mut Edge)) -> bool {
        let mut edges = self.lock();
        let current = match edges.get_mut(&handle.node_id) {
            Some(edge) if matches!(&edge.holder, Holder::Here(s) if s.id == handle.session_id) => {
                f(edge);
                self.edited(edge);
                true
            }
            _ => false,
        };
        drop(edges);
        if current {
            self.changed.notify_one();
            self.announce(&handle.node_id);
        }
        current
    }

    /// Resolves when an edge changed since the last call (attach, stats, mode, detach). One waiter:
    /// the routing snapshot builder.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Calls `f` for every edge with an open session (here or on another replica), stats and
    /// normal mode, after settling its pending ledger (so the snapshot being built starts from the
    /// settled figure; see [`Pending::settle`]). For the routing snapshot builder only.
    pub fn for_each_routing_input(&self, mut f: impl FnMut(RoutingInput<'_>)) {
        let edges = self.lock();
        for (node_id, edge) in edges.iter() {
            edge.pending.settle();
            let (false, Some(stats), Some(at), Mode::Normal) = (
                matches!(edge.holder, Holder::Nobody),
                &edge.stats,
                edge.last_stats_at,
                edge.mode,
            ) else {
                continue;
            };
            f(RoutingInput {
                node_id,
                info: &edge.info,
                stats,
                fresh_until: at + self.liveness,
                pending: &edge.pending,
                version: edge.version,
            });
        }
    }

    /// Forgets, on every edge, the redirects charged longer than the pending TTL ago, whether or
    /// not stats came since; true when that lowered any edge's pending, which the next rebuild
    /// applies. Edges left out of the snapshot count too: a burst of redirects that saturated an
    /// edge must not keep it out past the TTL. Called by the routing builder every
    /// [`PENDING_SLOT`].
    pub fn expire_pending(&self, now: Instant) -> bool {
        let edges = self.lock();
        let mut released = false;
        for edge in edges.values() {
            released |= edge.pending.expire(now);
        }
        released
    }

    /// The redirects charged to each edge here since the last call, bytes/s per node, for the
    /// other replicas of the cluster (`replicas::Replication::share_pending`).
    pub fn take_debits(&self) -> Vec<(String, u64)> {
        let edges = self.lock();
        edges
            .iter()
            .filter_map(|(node_id, edge)| {
                let unshared = edge.pending.take_unshared();
                (unshared > 0).then(|| (node_id.clone(), unshared))
            })
            .collect()
    }

    /// Charges edges with redirects another replica made; unknown nodes are skipped (the edge is
    /// not known here yet, or no longer).
    pub fn apply_debits<'a>(&self, debits: impl IntoIterator<Item = (&'a str, u64)>, now: Instant) {
        let edges = self.lock();
        for (node_id, bytes_per_sec) in debits {
            if let Some(edge) = edges.get(node_id) {
                edge.pending.add_from_replica(bytes_per_sec, now);
            }
        }
    }

    /// Records a stats report of the current session.
    pub fn apply_stats(&self, handle: &SessionHandle, stats: Stats) -> bool {
        let now = Instant::now();
        self.with_current(handle, |edge| {
            edge.pending.reconcile(edge.last_stats_at, now);
            edge.stats = Some(stats);
            edge.last_stats_at = Some(now);
            edge.stats_seq += 1;
        })
    }

    /// Records a mode change of the current session.
    pub fn set_mode(&self, handle: &SessionHandle, mode: Mode) -> bool {
        self.with_current(handle, |edge| edge.mode = mode)
    }

    /// Closes the session; the edge is unroutable from this instant. No-op for a replaced session.
    pub fn detach(&self, handle: &SessionHandle) -> bool {
        let now = Instant::now();
        self.with_current(handle, |edge| {
            if let Holder::Here(s) = &edge.holder {
                edge.released = (s.token != 0).then_some(s.token);
            }
            edge.end(now);
        })
    }

    /// Cancels every open session (graceful shutdown).
    pub fn cancel_all(&self) {
        for edge in self.lock().values() {
            if let Holder::Here(s) = &edge.holder {
                s.cancel.cancel();
            }
        }
    }

    /// Takes the nodes whose local changes await announcement (see [`EdgeState::announcement`]).
    pub fn take_outbox(&self) -> Vec<String> {
        self.outbox.lock().drain().collect()
    }

    /// Resolves once the outbox has something (at once if it filled since the last call).
    pub async fn outbox_filled(&self) {
        self.outbox_filled.notified().await;
    }

    /// Queues every edge held here, and every release not yet acknowledged, for announcement
    /// (after Redis came back: it may have lost them, or missed changes).
    pub fn announce_all(&self) {
        let held: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, e)| matches!(e.holder, Holder::Here(_)) || e.released.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for node_id in held {
            self.announce(&node_id);
        }
    }

    /// What to tell the other replicas about `node_id` now; `None` when nothing (it is not held
    /// here and its last local session's end was already announced).
    pub fn announcement(&self, node_id: &str) -> Option<Announcement> {
        let now = Instant::now();
        let mut edges = self.lock();
        let edge = edges.get_mut(node_id)?;
        match &edge.holder {
            Holder::Here(s) => Some(Announcement::Held {
                session_id: s.id,
                token: s.token,
                record: Box::new(EdgeRecord {
                    info: edge.info.clone(),
                    mode: edge.mode,
                    stats: edge.stats.clone().filter(|_| edge.last_stats_at.is_some()),
                    stats_age_ms: edge
                        .last_stats_at
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64)
                        .unwrap_or(0),
                    stats_seq: edge.stats_seq,
                }),
            }),
            _ => edge
                .released
                .take()
                .map(|token| Announcement::Released { token }),
        }
    }

    /// Redis handed local session `session_id` its fencing token (it had none: Redis was away
    /// when it attached); false when that session is no longer current (it ended meanwhile, and
    /// its record must be taken back).
    pub fn set_token(&self, node_id: &str, session_id: u64, token: u64) -> bool {
        match self.lock().get_mut(node_id) {
            Some(edge) => match &mut edge.holder {
                Holder::Here(s) if s.id == session_id => {
                    s.token = token;
                    edge.last_token = edge.last_token.max(token);
                    true
                }
                _ => false,
            },
            None => false,
        }
    }

    /// An announcement could not be written: it is queued again (a release stays owed until
    /// Redis took it; a held edge is rewritten with its latest state).
    pub fn retry(&self, node_id: &str, failed: &Announcement) {
        if let Announcement::Released { token } = failed {
            if let Some(edge) = self.lock().get_mut(node_id) {
                if edge.released.is_none() && !matches!(edge.holder, Holder::Here(_)) {
                    edge.released = Some(*token);
                }
            }
        }
        self.announce(node_id);
    }

    /// The highest fencing token seen for `node_id` (0: none).
    pub fn known_token(&self, node_id: &str) -> u64 {
        self.lock().get(node_id).map_or(0, |e| e.last_token)
    }

    /// Redis holds a newer session of `node_id` than local session `session_id`: that one is
    /// closed (SESSION_REPLACED); the newer session's announcement follows.
    pub fn fence_lost(&self, node_id: &str, session_id: u64) {
        let mut edges = self.lock();
        let Some(edge) = edges.get_mut(node_id) else {
            return;
        };
        if let Holder::Here(s) = &edge.holder {
            if s.id == session_id {
                s.cancel.cancel();
                edge.end(Instant::now());
                drop(edges);
                self.changed.notify_one();
            }
        }
    }

    /// Another replica announced that it holds `node_id` under `token`. A newer token than the
    /// local session's replaces (closes) it; an older one is ignored, as is any announcement while
    /// the local session still awaits its token (Redis will hand it a higher one).
    pub fn apply_remote(&self, node_id: &str, replica: &str, token: u64, record: EdgeRecord) {
        let now = Instant::now();
        let mut edges = self.lock();
        let deleted = self
            .forgotten
            .lock()
            .get(node_id)
            .is_some_and(|at| now.saturating_duration_since(*at) < FORGOTTEN_FOR);
        if deleted {
            return;
        }
        let edge = edges
            .entry(node_id.to_string())
            .or_insert_with(|| Edge::new(record.info.clone(), Holder::Nobody, self.pending_ttl));
        match &edge.holder {
            Holder::Here(s) if s.token == 0 || s.token >= token => return,
            Holder::Replica { token: held, .. } if *held > token => return,
            Holder::Replica { token: held, .. } if *held == token => {}
            _ => edge.hand_to(Holder::Replica {
                replica: replica.to_string(),
                token,
            }),
        }
        edge.info = record.info;
        edge.mode = record.mode;
        self.edited(edge);
        if let Some(stats) = record.stats {
            // Newer stats of this session only (a resync may replay older ones); an age this
            // process cannot place counts as stale.
            let taken = now.checked_sub(Duration::from_millis(record.stats_age_ms));
            if let (true, Some(at)) = (
                record.stats_seq > edge.stats_seq || edge.last_stats_at.is_none(),
                taken,
            ) {
                edge.pending.reconcile(edge.last_stats_at, at);
                edge.stats = Some(stats);
                edge.last_stats_at = Some(at);
                edge.stats_seq = record.stats_seq;
            }
        }
        drop(edges);
        self.changed.notify_one();
    }

    /// Another replica announced that its session of `node_id` under `token` ended.
    pub fn remote_released(&self, node_id: &str, token: u64) {
        let mut edges = self.lock();
        let Some(edge) = edges.get_mut(node_id) else {
            return;
        };
        if matches!(edge.holder, Holder::Replica { token: held, .. } if held <= token) {
            edge.end(Instant::now());
            drop(edges);
            self.changed.notify_one();
        }
    }

    /// DESIGN.md §4: routable while its stream is open and its last stats are younger than the
    /// liveness window.
    fn routable_at(&self, edge: &Edge, now: Instant) -> bool {
        !matches!(edge.holder, Holder::Nobody)
            && edge
                .last_stats_at
                .is_some_and(|t| now.saturating_duration_since(t) < self.liveness)
    }

    fn view(&self, node_id: &str, edge: &Edge, now: Instant) -> EdgeView {
        let age = edge.last_stats_at.map(|t| now.saturating_duration_since(t));
        let connected = !matches!(edge.holder, Holder::Nobody);
        EdgeView {
            node_id: node_id.to_string(),
            info: edge.info.clone(),
            mode: edge.mode,
            connected,
            replica: match &edge.holder {
                Holder::Replica { replica, .. } => Some(replica.clone()),
                _ => None,
            },
            routable: self.routable_at(edge, now),
            last_stats_age_ms: age.map(|a| a.as_millis() as u64),
            connected_for_ms: match &edge.holder {
                Holder::Here(s) => {
                    Some(now.saturating_duration_since(s.connected_at).as_millis() as u64)
                }
                _ => None,
            },
            stats: edge.stats.clone(),
        }
    }

    /// Every edge known since start, sorted by node id.
    pub fn list(&self) -> Vec<EdgeView> {
        let now = Instant::now();
        let edges = self.lock();
        let mut out: Vec<EdgeView> = edges
            .iter()
            .map(|(id, edge)| self.view(id, edge, now))
            .collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// One edge, if known.
    pub fn get(&self, node_id: &str) -> Option<EdgeView> {
        let now = Instant::now();
        self.lock()
            .get(node_id)
            .map(|edge| self.view(node_id, edge, now))
    }

    /// Forgets a deleted node at once: its session here ends (as if replaced), and whatever
    /// another replica still says of it is ignored from now on. Whether it was known.
    pub fn forget(&self, node_id: &str) -> bool {
        let mut edges = self.lock();
        let now = Instant::now();
        let mut forgotten = self.forgotten.lock();
        forgotten.retain(|_, at| now.saturating_duration_since(*at) < FORGOTTEN_FOR);
        forgotten.insert(node_id.to_string(), now);
        drop(forgotten);
        let known = match edges.remove(node_id) {
            Some(edge) => {
                if let Holder::Here(session) = &edge.holder {
                    session.cancel.cancel();
                }
                true
            }
            None => false,
        };
        drop(edges);
        self.outbox.lock().remove(node_id);
        self.changed.notify_one();
        known
    }

    /// Calls `f` for every edge known since start, with its registration, mode, whether it is
    /// routable at `now`, and its last stats (for DNS, which needs no copy of them).
    pub fn for_each_known(
        &self,
        now: Instant,
        mut f: impl FnMut(&str, &EdgeInfo, Mode, bool, Option<&Stats>),
    ) {
        let edges = self.lock();
        for (node_id, edge) in edges.iter() {
            f(
                node_id,
                &edge.info,
                edge.mode,
                self.routable_at(edge, now),
                edge.stats.as_ref(),
            );
        }
    }

    /// Whether the edge may receive viewers right now (open stream, fresh stats).
    pub fn is_routable(&self, node_id: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .get(node_id)
            .is_some_and(|edge| self.routable_at(edge, now))
    }

    /// Load of the cluster as the marketplace shows it: every connected edge (here or on another
    /// replica) counts as an edge; bandwidth and viewers are summed over the routable ones.
    pub fn utilization(&self) -> Utilization {
        let now = Instant::now();
        let mut load = Utilization::default();
        let edges = self.lock();
        for edge in edges.values() {
            if matches!(edge.holder, Holder::Nobody) {
                continue;
            }
            load.edges += 1;
            let Some(stats) = edge.stats.as_ref().filter(|_| self.routable_at(edge, now)) else {
                continue;
            };
            // Saturating: the values come from edges, self-hosted ones included.
            load.healthy_edges += 1;
            load.bw_used = load.bw_used.saturating_add(stats.up_bytes_per_sec);
            load.bw_limit = load.bw_limit.saturating_add(stats.bw_limit_bytes_per_sec);
            load.viewers = load.viewers.saturating_add(stats.viewers());
        }
        load
    }

    /// Number of edges with an open control stream to this process.
    pub fn connected_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| matches!(e.holder, Holder::Here(_)))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Stats {
        Stats {
            cpu_tenths: 100,
            ram_max_bytes: 1 << 30,
            bw_limit_bytes_per_sec: 1_000_000,
            ..Stats::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn routable_only_with_fresh_stats_and_an_open_stream() {
        let state = EdgeState::new(Duration::from_secs(15));
        let h = state.attach("aaaaaaaaaaaa", EdgeInfo::default(), 0);
        assert!(!state.is_routable("aaaaaaaaaaaa"), "no stats yet");
        assert!(state.apply_stats(&h, stats()));
        assert!(state.is_routable("aaaaaaaaaaaa"));

        tokio::time::advance(Duration::from_millis(14_999)).await;
        assert!(
            state.is_routable("aaaaaaaaaaaa"),
            "still inside 3 intervals"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            !state.is_routable("aaaaaaaaaaaa"),
            "stale after 3 intervals"
        );

        assert!(state.apply_stats(&h, stats()));
        assert!(state.is_routable("aaaaaaaaaaaa"), "fresh stats revive it");
        assert!(state.detach(&h));
        assert!(
            !state.is_routable("aaaaaaaaaaaa"),
            "closed stream: unroutable at once"
        );
        let view = state.get("aaaaaaaaaaaa").expect("still listed");
        assert!(!view.connected);
        assert!(view.stats.is_some(), "last stats kept for operators");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_replaces_the_old_session() {
        let state = EdgeState::new(Duration::from_secs(15));
        let old = state.attach("bbbbbbbbbbbb", EdgeInfo::default(), 0);
        assert!(state.apply_stats(&old, stats()));
        let new = state.attach("bbbbbbbbbbbb", EdgeInfo::default(), 0);
        assert!(old.replaced.is_cancelled());
        assert!(!new.replaced.is_cancelled());
        assert!(
            !state.is_routable("bbbbbbbbbbbb"),
            "new session needs its own stats"
        );
        assert!(!state.apply_stats(&old, stats()), "stale session ignored");
        assert!(
            !state.detach(&old),
            "stale session cannot close the new one"
        );
        assert!(state.apply_stats(&new, stats()));
        assert!(state.is_routable("bbbbbbbbbbbb"));
        assert_eq!(state.connected_count(), 1);

        // A draining edge that reconnects is still draining.
        assert!(state.set_mode(&new, Mode::Draining));
        assert!(state.detach(&new));
        let again = state.attach("bbbbbbbbbbbb", EdgeInfo::default(), 0);
        assert_eq!(again.mode, Mode::Draining);
    }

    fn record(stats_age_ms: u64, stats_seq: u64) -> EdgeRecord {
        EdgeRecord {
            info: EdgeInfo::default(),
            mode: Mode::Normal,
            stats: Some(stats()),
            stats_age_ms,
            stats_seq,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn edges_of_other_replicas_follow_their_tokens_and_age_out() {
        let state = EdgeState::new(Duration::from_secs(15)).replicated();
        // Stats already 14 s old on the holding replica: routable here for one more second.
        state.apply_remote("cccccccccccc", "r1", 5, record(14_000, 1));
        let view = state.get("cccccccccccc").expect("listed");
        assert!(view.routable && view.connected);
        assert_eq!(view.replica.as_deref(), Some("r1"));
        assert_eq!(state.connected_count(), 0, "not held here");
        assert!(
            state.take_outbox().is_empty(),
            "remote news is not re-announced"
        );
        tokio::time::advance(Duration::from_millis(1_000)).await;
        assert!(
            !state.is_routable("cccccccccccc"),
            "aged out by the liveness rule"
        );

        // An older session's news is ignored; a release of an older session too.
        state.apply_remote("cccccccccccc", "r2", 4, record(0, 9));
        assert!(!state.is_routable("cccccccccccc"));
        state.apply_remote("cccccccccccc", "r1", 5, record(0, 2));
        assert!(state.is_routable("cccccccccccc"));
        state.remote_released("cccccccccccc", 4);
        assert!(state.is_routable("cccccccccccc"));
        state.remote_released("cccccccccccc", 5);
        assert!(
            !state.is_routable("cccccccccccc"),
            "released: unroutable at once"
        );

        // Replayed (older) stats of the same session do not overwrite newer ones.
        state.apply_remote("cccccccccccc", "r1", 6, record(0, 3));
        state.apply_remote("cccccccccccc", "r1", 6, record(10_000, 2));
        tokio::time::advance(Duration::from_millis(6_000)).await;
        assert!(state.is_routable("cccccccccccc"), "kept the stats of seq 3");
        assert_eq!(state.known_token("cccccccccccc"), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn the_newest_token_wins_between_a_local_and_a_remote_session() {
        let state = EdgeState::new(Duration::from_secs(15)).replicated();
        // Attached while Redis was away: no token yet.
        let local = state.attach("dddddddddddd", EdgeInfo::default(), 0);
        assert!(state.apply_stats(&local, stats()));
        assert_eq!(state.take_outbox(), vec!["dddddddddddd".to_string()]);
        let Some(Announcement::Held {
            session_id,
            token: 0,
            record,
        }) = state.announcement("dddddddddddd")
        else {
            panic!("a held edge is announced, without a token yet");
        };
        assert_eq!(record.stats_seq, 1);
        // Until Redis hands the local session its token, remote news cannot replace it.
        state.apply_remote("dddddddddddd", "r1", 3, (*record).clone());
        assert!(!local.replaced.is_cancelled());
        assert!(state.set_token("dddddddddddd", session_id, 7));
        state.apply_remote("dddddddddddd", "r1", 6, (*record).clone());
        assert!(!local.replaced.is_cancelled(), "older than ours");
        state.apply_remote("dddddddddddd", "r1", 8, (*record).clone());
        assert!(
            local.replaced.is_cancelled(),
            "a newer session elsewhere closes ours"
        );
        assert!(!state.apply_stats(&local, stats()));
        assert!(
            !state.detach(&local),
            "the replaced session cannot close the new one"
        );
        assert_eq!(
            state
                .get("dddddddddddd")
                .expect("listed")
                .replica
                .as_deref(),
            Some("r1")
        );
        assert_eq!(state.connected_count(), 0);

        // A local session that ends is announced as released once.
        let again = state.attach("dddddddddddd", EdgeInfo::default(), 9);
        assert_eq!(state.known_token("dddddddddddd"), 9);
        assert!(state.detach(&again));
        assert_eq!(
            state.announcement("dddddddddddd"),
            Some(Announcement::Released { token: 9 })
        );
        assert_eq!(state.announcement("dddddddddddd"), None);
        // A release Redis did not take stays owed, also through a resync.
        state.retry("dddddddddddd", &Announcement::Released { token: 9 });
        state.take_outbox();
        state.announce_all();
        assert_eq!(state.take_outbox(), vec!["dddddddddddd".to_string()]);
        assert_eq!(
            state.announcement("dddddddddddd"),
            Some(Announcement::Released { token: 9 })
        );
        // A token that comes back for a session already gone says so (the record is taken back).
        assert!(!state.set_token("dddddddddddd", again.session_id, 10));

        // Redis refusing our token closes the local session.
        let last = state.attach("dddddddddddd", EdgeInfo::default(), 11);
        state.fence_lost("dddddddddddd", last.session_id);
        assert!(last.replaced.is_cancelled());
        assert!(!state.get("dddddddddddd").expect("listed").connected);
    }
}
