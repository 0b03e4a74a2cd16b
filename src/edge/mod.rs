//! In-process state of the edges connected to this Foghorn: sessions, last stats, liveness.
//!
//! The rules of DESIGN.md §4 live here, free of any transport: an edge is routable only while its
//! control stream is open and its last `NodeStats` is younger than the liveness window; closing the
//! stream makes it unroutable at once; a new session for the same node replaces (cancels) the old
//! one, and frames of a replaced session are ignored. Time is `tokio::time::Instant`, so tests pause
//! and advance it instead of sleeping.

mod pending;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use pending::{per_viewer_estimate, Pending, PENDING_TTL};

/// What an edge can do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Normal,
    Draining,
    Maintenance,
}

/// Load of one stream on one edge.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StreamLoad {
    pub internal_name: String,
    pub viewers: u32,
    pub inputs: u32,
    pub up_bytes_per_sec: u64,
    pub down_bytes_per_sec: u64,
    pub replicated: bool,
}

/// One NodeStats report, validated.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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

/// What an edge said about itself at registration.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EdgeInfo {
    pub cluster_id: String,
    pub owner_tenant_id: Option<String>,
    pub capabilities: Capabilities,
    pub public_base_url: String,
    /// Address the control stream comes from (IPv4-mapped addresses unwrapped).
    pub peer_ip: Option<std::net::IpAddr>,
}

#[derive(Debug)]
struct Session {
    id: u64,
    cancel: CancellationToken,
    connected_at: Instant,
}

#[derive(Debug)]
struct Edge {
    info: EdgeInfo,
    mode: Mode,
    session: Option<Session>,
    stats: Option<Stats>,
    /// When the current session last sent stats; `None` until it has.
    last_stats_at: Option<Instant>,
    disconnected_at: Option<Instant>,
    /// Shared with this edge's routing candidate, which debits it on each redirect.
    pending: Arc<Pending>,
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
}

/// A point-in-time view of one edge, for APIs and routing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeView {
    pub node_id: String,
    #[serde(flatten)]
    pub info: EdgeInfo,
    pub mode: Mode,
    pub connected: bool,
    pub routable: bool,
    /// Milliseconds since the last NodeStats of the current session.
    pub last_stats_age_ms: Option<u64>,
    pub connected_for_ms: Option<u64>,
    pub stats: Option<Stats>,
}

/// All edges known to this process since it started.
#[derive(Debug)]
pub struct EdgeState {
    edges: Mutex<HashMap<String, Edge>>,
    next_session: AtomicU64,
    liveness: Duration,
    changed: Notify,
}

impl EdgeState {
    /// `liveness` is how long after its last stats an edge stays routable (3 × stats interval).
    pub fn new(liveness: Duration) -> Self {
        EdgeState {
            edges: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            liveness,
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Edge>> {
        // A panic while holding the lock cannot leave the map half-updated (every update is a
        // single assignment), so a poisoned lock is still safe to use.
        self.edges.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session for `node_id`, cancelling the session it replaces, if any.
    pub fn attach(&self, node_id: &str, info: EdgeInfo) -> SessionHandle {
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let replaced = CancellationToken::new();
        let session = Session {
            id: session_id,
            cancel: replaced.clone(),
            connected_at: Instant::now(),
        };
        let mut edges = self.lock();
        let mode = match edges.get_mut(node_id) {
            Some(edge) => {
                if let Some(old) = edge.session.replace(session) {
                    old.cancel.cancel();
                }
                edge.info = info;
                edge.last_stats_at = None;
                edge.disconnected_at = None;
                edge.mode
            }
            None => {
                edges.insert(
                    node_id.to_string(),
                    Edge {
                        info,
                        mode: Mode::Normal,
                        session: Some(session),
                        stats: None,
                        last_stats_at: None,
                        disconnected_at: None,
                        pending: Arc::default(),
                    },
                );
                Mode::Normal
            }
        };
        drop(edges);
        self.changed.notify_one();
        SessionHandle {
            node_id: node_id.to_string(),
            session_id,
            replaced,
            mode,
        }
    }

    /// Runs `f` on the edge if `handle` is still its current session; false when it was replaced.
    fn with_current(&self, handle: &SessionHandle, f: impl FnOnce(&mut Edge)) -> bool {
        let mut edges = self.lock();
        let current = match edges.get_mut(&handle.node_id) {
            Some(edge) if edge.session.as_ref().map(|s| s.id) == Some(handle.session_id) => {
                f(edge);
                true
            }
            _ => false,
        };
        drop(edges);
        if current {
            self.changed.notify_one();
        }
        current
    }

    /// Resolves when an edge changed since the last call (attach, stats, mode, detach). One waiter:
    /// the routing snapshot builder.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Calls `f` for every edge with an open session, stats and normal mode, after settling its
    /// pending ledger (so the snapshot being built starts from the settled figure; see
    /// [`Pending::settle`]). For the routing snapshot builder only.
    pub fn for_each_routing_input(&self, mut f: impl FnMut(RoutingInput<'_>)) {
        let edges = self.lock();
        for (node_id, edge) in edges.iter() {
            edge.pending.settle();
            let (Some(_), Some(stats), Some(at), Mode::Normal) =
                (&edge.session, &edge.stats, edge.last_stats_at, edge.mode)
            else {
                continue;
            };
            f(RoutingInput {
                node_id,
                info: &edge.info,
                stats,
                fresh_until: at + self.liveness,
                pending: &edge.pending,
            });
        }
    }

    /// Records a stats report of the current session.
    pub fn apply_stats(&self, handle: &SessionHandle, stats: Stats) -> bool {
        let now = Instant::now();
        self.with_current(handle, |edge| {
            edge.pending.reconcile(edge.last_stats_at, now);
            edge.stats = Some(stats);
            edge.last_stats_at = Some(now);
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
            edge.session = None;
            edge.last_stats_at = None;
            edge.disconnected_at = Some(now);
            edge.pending.clear();
        })
    }

    /// Cancels every open session (graceful shutdown).
    pub fn cancel_all(&self) {
        for edge in self.lock().values() {
            if let Some(s) = &edge.session {
                s.cancel.cancel();
            }
        }
    }

    fn view(&self, node_id: &str, edge: &Edge, now: Instant) -> EdgeView {
        let age = edge.last_stats_at.map(|t| now.saturating_duration_since(t));
        EdgeView {
            node_id: node_id.to_string(),
            info: edge.info.clone(),
            mode: edge.mode,
            connected: edge.session.is_some(),
            routable: edge.session.is_some() && age.is_some_and(|a| a < self.liveness),
            last_stats_age_ms: age.map(|a| a.as_millis() as u64),
            connected_for_ms: edge
                .session
                .as_ref()
                .map(|s| now.saturating_duration_since(s.connected_at).as_millis() as u64),
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

    /// Whether the edge may receive viewers right now (open stream, fresh stats).
    pub fn is_routable(&self, node_id: &str) -> bool {
        self.get(node_id).is_some_and(|v| v.routable)
    }

    /// Number of edges with an open control stream.
    pub fn connected_count(&self) -> usize {
        self.lock().values().filter(|e| e.session.is_some()).count()
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
        let h = state.attach("aaaaaaaaaaaa", EdgeInfo::default());
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
        let old = state.attach("bbbbbbbbbbbb", EdgeInfo::default());
        assert!(state.apply_stats(&old, stats()));
        let new = state.attach("bbbbbbbbbbbb", EdgeInfo::default());
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
        let again = state.attach("bbbbbbbbbbbb", EdgeInfo::default());
        assert_eq!(again.mode, Mode::Draining);
    }
}
