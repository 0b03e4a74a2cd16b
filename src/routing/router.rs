//! The live router: keeps the routing snapshot in step with the edge state and the remote edges,
//! and hands the hot path an immutable snapshot through an `ArcSwap` (no lock per decision).
//!
//! Rebuilds are event-driven and rate-limited, and the builder runs them on tokio's blocking
//! pool, not on a worker that answers viewers: an edge change (attach, stats, mode, detach) or a
//! peered cluster's new edges wake the builder, which rebuilds at once and then at most every
//! `MIN_REBUILD_INTERVAL` (longer when a rebuild itself takes long), so a burst of stats or
//! summaries costs one rebuild and a change is visible within that interval. Edges whose inputs
//! did not change since the last build reuse their candidate.
//!
//! The local and the remote edges are indexed in separate pools: local edges change every few
//! seconds, remote ones only when a peer's summary or heartbeat arrives (or they expire, or
//! redirects charged to them reach their TTL). A rebuild rebuilds the local pool (1,000 edges:
//! ~0.15 ms) and pairs it with the remote pool, itself rebuilt only when remote edges changed
//! since (10,000 edges: ~3 ms, paid once per summary instead of 50 times a second).

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::score::{Position, Weights};
use super::select::{Candidate, Pool, Snapshot, StreamRef};
use crate::edge::{EdgeState, Pending, RoutingInput, PENDING_SLOT};
use crate::metrics::{Metrics, PoolLabels};

/// Shortest time between two rebuilds.
pub const MIN_REBUILD_INTERVAL: Duration = Duration::from_millis(20);
/// After a rebuild the builder waits at least this many times as long as a rebuild takes (the
/// shortest of the last few, so preemption does not count), so
/// rebuilding takes at most 1/20 of one core however large the pool: a few thousand edges are
/// rebuilt every 20 ms, a cell of 100,000 every few hundred milliseconds (their stats come every
/// 5 s; redirects in between are charged to the snapshot itself).
const REBUILD_PAUSE_FACTOR: u32 = 19;

/// An edge of a peered cluster, as its summary described it.
#[derive(Debug, Clone)]
pub struct RemoteEdge {
    pub node_id: Arc<str>,
    pub base_url: Arc<str>,
    pub serves_viewers: bool,
    pub cpu_tenths: u64,
    pub ram_used: u64,
    pub ram_max: u64,
    pub up: u64,
    pub bw_limit: u64,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// Shared with the summary it came from: a stream name is one allocation however many edges
    /// carry it.
    pub streams: Vec<Arc<str>>,
    /// Scored until then (summary TTL).
    pub expires_at: Instant,
}

/// Streams sorted by name with one entry per name, as `Candidate::streams` requires (the
/// selector binary-searches them).
fn sorted_streams(streams: impl Iterator<Item = StreamRef>) -> Arc<[StreamRef]> {
    let mut streams: Vec<StreamRef> = streams.collect();
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    streams.dedup_by(|a, b| a.name == b.name);
    streams.into()
}

/// A peered cluster's edges as a summary described them, not yet applied (see
/// [`Router::set_remote_edges`]).
#[derive(Debug)]
struct Arrival {
    cluster_id: String,
    edges: Vec<RemoteEdge>,
    summary_at: Instant,
}

/// The candidates of a peered cluster's edges, each with a ledger of its own.
fn remote_candidates(cluster_id: &str, edges: Vec<RemoteEdge>) -> Vec<Candidate> {
    let cluster: Arc<str> = Arc::from(cluster_id);
    edges
        .into_iter()
        .map(|e| {
            let streams = sorted_streams(e.streams.into_iter().map(|name| StreamRef {
                name,
                up: 0,
                viewers: 0,
                inputs: 0,
                replicated: false,
            }));
            Candidate {
                node_id: e.node_id,
                cluster_id: cluster.clone(),
                remote: true,
                base_url: e.base_url,
                serves_viewers: e.serves_viewers,
                // Publishers of this cluster ingest here; a peer's ingest edges are theirs.
                takes_ingest: false,
                cpu_tenths: e.cpu_tenths,
                ram_used: e.ram_used,
                ram_max: e.ram_max,
                up: e.up,
                bw_limit: e.bw_limit,
                position: e
                    .latitude
                    .zip(e.longitude)
                    .and_then(|(lat, lon)| Position::from_degrees(lat, lon)),
                fresh_until: e.expires_at,
                pending: Arc::default(),
                streams,
                connections: 0,
                ip: None,
            }
        })
        .collect()
}

/// The inputs a build needs beyond the edge state.
#[derive(Debug)]
struct BuildState {
    weights: Weights,
    /// Remote edges by peered cluster.
    remote: HashMap<String, RemoteCluster>,
    /// The pool built from `remote`, reused until remote edges change or one expires, or until
    /// charges to them reach their TTL.
    remote_pool: Arc<Pool>,
    /// `remote_pool` no longer reflects `remote`: a peered cluster's edges were replaced, or
    /// charges to them were forgotten, since it was built. The next rebuild rebuilds it.
    remote_stale: bool,
    /// The earliest `fresh_until` in `remote_pool`: at that instant the pool is rebuilt without
    /// the expired edges (they are already never chosen, `score` checks freshness).
    remote_expires: Option<Instant>,
    /// The candidate of each local edge as last built, with the edge's routing-input version and
    /// the build that last saw it: an edge whose inputs did not change since (most of them, stats
    /// come every few seconds) costs a clone, not a new candidate.
    /// foldhash, seeded per process as the playback cache's (one look-up per edge and build).
    local: HashMap<String, CachedCandidate, foldhash::fast::RandomState>,
    /// Number of local builds so far.
    builds: u64,
}

/// A peered cluster's edges as last applied, with the arrival of the summary they came from
/// (the same summary is applied again when a heartbeat moves their expiry).
#[derive(Debug)]
struct RemoteCluster {
    summary_at: Instant,
    edges: Vec<Candidate>,
}

#[derive(Debug)]
struct CachedCandidate {
    version: u64,
    seen_in: u64,
    candidate: Candidate,
}

impl BuildState {
    fn rebuild_remote(&mut self, now: Instant) {
        let mut candidates = Vec::new();
        for cluster in self.remote.values_mut() {
            cluster.edges.retain(|c| c.fresh_until > now);
            for c in &cluster.edges {
                // Charges forgotten since the last pool count from this one (`Pending::settle`).
                c.pending.settle();
                candidates.push(c.clone());
            }
        }
        self.remote_expires = candidates.iter().map(|c| c.fresh_until).min();
        self.remote_stale = false;
        self.remote_pool = Arc::new(Pool::build(self.weights, candidates));
    }

    /// Replaces a peered cluster's edges with those of a summary (see
    /// [`Router::set_remote_edges`]), each keeping its ledger.
    fn replace_remote(&mut self, arrival: Arrival, now: Instant) {
        let Arrival {
            cluster_id,
            edges,
            summary_at,
        } = arrival;
        let mut cluster = RemoteCluster {
            summary_at,
            edges: remote_candidates(&cluster_id, edges),
        };
        if let Some(previous) = self.remote.remove(&cluster_id) {
            let newer = summary_at != previous.summary_at;
            let mut ledgers: HashMap<Arc<str>, Arc<Pending>, foldhash::fast::RandomState> =
                HashMap::with_capacity_and_hasher(previous.edges.len(), Default::default());
            for c in previous.edges {
                if newer {
                    c.pending.reconcile(Some(previous.summary_at), now);
                }
                ledgers.insert(c.node_id, c.pending);
            }
            for c in &mut cluster.edges {
                if let Some(pending) = ledgers.remove(&c.node_id) {
                    c.pending = pending;
                }
            }
        }
        self.remote.insert(cluster_id, cluster);
        self.remote_stale = true;
    }

    /// Forgets the charges to remote edges that reached their TTL at `now`; true when that
    /// released any (the remote pool is then rebuilt at the next rebuild).
    fn expire_remote_pending(&mut self, now: Instant) -> bool {
        let mut released = false;
        for cluster in self.remote.values() {
            for c in &cluster.edges {
                released |= c.pending.expire(now);
            }
        }
        self.remote_stale |= released;
        released
    }
}

/// Owns the current snapshot and rebuilds it.
#[derive(Debug)]
pub struct Router {
    edges: Arc<EdgeState>,
    cluster_id: Arc<str>,
    root_domain: String,
    /// What builds read and write; held for a whole build, so builds never interleave. The hot
    /// path never takes it.
    build: Mutex<BuildState>,
    snapshot: ArcSwap<Snapshot>,
    metrics: Arc<Metrics>,
    /// Bumped after every rebuild, so tests and callers can await a fresh snapshot.
    generation: watch::Sender<u64>,
    /// Peered clusters' edges as their summaries arrived since the last rebuild, in order: the
    /// next rebuild applies them (the callers never wait for a build).
    arrived: Mutex<Vec<Arrival>>,
    /// Wakes the builder when `arrived` got one.
    remote_changed: Notify,
}

impl Router {
    pub fn new(
        edges: Arc<EdgeState>,
        cluster_id: &str,
        root_domain: &str,
        metrics: Arc<Metrics>,
    ) -> Arc<Router> {
        let weights = Weights::default();
        Arc::new(Router {
            edges,
            cluster_id: Arc::from(cluster_id),
            root_domain: root_domain.to_string(),
            build: Mutex::new(BuildState {
                weights,
                remote: HashMap::new(),
                remote_pool: Arc::new(Pool::empty(weights)),
                remote_stale: false,
                remote_expires: None,
                local: HashMap::default(),
                builds: 0,
            }),
            snapshot: ArcSwap::from_pointee(Snapshot::build(weights, Vec::new())),
            metrics,
            generation: watch::channel(0).0,
            arrived: Mutex::new(Vec::new()),
            remote_changed: Notify::new(),
        })
    }

    /// The current snapshot; cheap, lock-free.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The local edges the current snapshot was built from that are still fresh: an edge in
    /// `normal` mode is reported routable only once it is here, so the APIs never say routable
    /// before `/play` can send viewers there (whether it is also eligible, bandwidth and
    /// capability, is the snapshot's business, not liveness).
    pub fn routed_now(&self) -> HashSet<String> {
        let now = Instant::now();
        self.lock()
            .local
            .iter()
            .filter(|(_, cached)| now < cached.candidate.fresh_until)
            .map(|(node_id, _)| node_id.clone())
            .collect()
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, BuildState> {
        self.build.lock()
    }

    /// The weights of the current snapshot (no lock: handlers call this).
    pub fn weights(&self) -> Weights {
        self.snapshot.load().weights()
    }

    /// Replaces the weights and rebuilds both pools at once.
    pub fn set_weights(&self, weights: Weights) {
        let mut build = self.lock();
        build.weights = weights;
        build.remote_stale = true;
        self.rebuild_locked(&mut build);
    }

    /// Replaces the remote edges of one peered cluster, as described by the summary that arrived
    /// at `summary_at`. The builder rebuilds the remote pool next, as it rebuilds the local one:
    /// on the blocking pool, within `MIN_REBUILD_INTERVAL` (or its pause after a long rebuild),
    /// not here on the caller's worker (a pool of 10,000 remote edges takes ~3 ms to build, and
    /// every summary and heartbeat of every peer comes here).
    ///
    /// An edge keeps its ledger of the redirects charged to it (DESIGN.md §5): the same summary
    /// applied again (a heartbeat moved its expiry) measured none of them, and a newer summary
    /// measured those charged before the previous one arrived, which are forgotten, as a local
    /// edge's stats report does (`Pending::reconcile`). The rest go at their TTL.
    pub fn set_remote_edges(&self, cluster_id: &str, edges: Vec<RemoteEdge>, summary_at: Instant) {
        self.arrived.lock().push(Arrival {
            cluster_id: cluster_id.to_string(),
            edges,
            summary_at,
        });
        self.remote_changed.notify_one();
    }

    /// The base URL viewers are sent to for a local edge without one of its own.
    fn local_base_url(&self, node_id: &str) -> String {
        crate::names::Zone::new(&self.cluster_id, &self.root_domain).edge_base_url(node_id)
    }

    fn local_candidate(&self, input: &RoutingInput<'_>) -> Candidate {
        let stats = input.stats;
        let streams = sorted_streams(stats.streams.iter().map(|s| StreamRef {
            name: Arc::from(s.internal_name.as_str()),
            up: s.up_bytes_per_sec,
            viewers: s.viewers,
            inputs: s.inputs,
            replicated: s.replicated,
        }));
        let base_url = input
            .info
            .base_url_or(|| self.local_base_url(input.node_id));
        Candidate {
            node_id: Arc::from(input.node_id),
            cluster_id: self.cluster_id.clone(),
            remote: false,
            base_url: Arc::from(base_url.as_str()),
            serves_viewers: input.info.capabilities.edge,
            takes_ingest: input.info.capabilities.ingest,
            cpu_tenths: u64::from(stats.cpu_tenths),
            ram_used: stats.ram_used_bytes,
            ram_max: stats.ram_max_bytes,
            up: stats.up_bytes_per_sec,
            bw_limit: stats.bw_limit_bytes_per_sec,
            position: stats
                .latitude
                .zip(stats.longitude)
                .and_then(|(lat, lon)| Position::from_degrees(lat, lon)),
            fresh_until: input.fresh_until,
            pending: input.pending.clone(),
            streams,
            connections: stats.connections,
            ip: input.info.peer_ip,
        }
    }

    /// Rebuilds the snapshot now: the local pool from the edge state, and the remote pool too if
    /// a peered cluster's edges arrived, one of its edges has expired, or charges to them were
    /// forgotten, since it was built. Returns how long that took.
    pub fn rebuild(&self) -> Duration {
        let started = std::time::Instant::now();
        self.rebuild_locked(&mut self.lock());
        let took = started.elapsed();
        self.metrics
            .routing_rebuild_seconds
            .observe(took.as_secs_f64());
        took
    }

    fn rebuild_locked(&self, build: &mut BuildState) {
        let now = Instant::now();
        let arrived = std::mem::take(&mut *self.arrived.lock());
        for arrival in arrived {
            build.replace_remote(arrival, now);
        }
        if build.remote_stale || build.remote_expires.is_some_and(|t| t <= now) {
            build.rebuild_remote(now);
        }
        self.rebuild_local(build);
    }

    fn rebuild_local(&self, build: &mut BuildState) {
        build.builds += 1;
        let BuildState { local, builds, .. } = build;
        let mut candidates = Vec::with_capacity(local.len());
        self.edges.for_each_routing_input(|input| {
            let candidate = match local.get_mut(input.node_id) {
                Some(cached) if cached.version == input.version => {
                    cached.seen_in = *builds;
                    cached.candidate.clone()
                }
                _ => {
                    let candidate = self.local_candidate(&input);
                    let cached = CachedCandidate {
                        version: input.version,
                        seen_in: *builds,
                        candidate: candidate.clone(),
                    };
                    local.insert(input.node_id.to_string(), cached);
                    candidate
                }
            };
            candidates.push(candidate);
        });
        // Edges gone or unroutable since: forgotten (and rebuilt if they come back).
        if local.len() > candidates.len() {
            local.retain(|_, cached| cached.seen_in == *builds);
        }
        let local = Arc::new(Pool::build(build.weights, candidates));
        self.publish(Snapshot::from_pools(local, build.remote_pool.clone()));
    }

    fn publish(&self, snapshot: Snapshot) {
        for (pool, n) in [
            ("local", snapshot.local().len()),
            ("remote", snapshot.remote().len()),
        ] {
            self.metrics
                .routing_pool_edges
                .get_or_create(&PoolLabels { pool })
                .set(n as i64);
        }
        self.snapshot.store(Arc::new(snapshot));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Resolves after the next rebuild that starts after this call (the call, not the first
    /// poll: the future may be created before the change that triggers the rebuild).
    pub fn next_rebuild(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.generation.subscribe();
        rx.mark_unchanged();
        async move {
            let _ = rx.changed().await;
        }
    }

    /// Rebuilds on every edge change, at most every `MIN_REBUILD_INTERVAL` (longer for pools that
    /// take long to build, see [`REBUILD_PAUSE_FACTOR`]), until `stop`; and
    /// whenever a redirect's pending bandwidth reaches its TTL (checked every `PENDING_SLOT`), so
    /// it is forgotten on time whatever the stats interval (DESIGN.md §5).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut sweep = tokio::time::interval(PENDING_SLOT);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The last rebuilds' durations: the pause follows the shortest, so a rebuild that the
        // scheduler preempted (a loaded machine) does not hold the next one back for long.
        let mut recent = [Duration::MAX; 8];
        let mut next = 0;
        loop {
            tokio::select! {
                _ = self.edges.changed() => {}
                _ = self.remote_changed.notified() => {}
                _ = sweep.tick() => {
                    let now = Instant::now();
                    let local = self.edges.expire_pending(now);
                    if !(self.lock().expire_remote_pending(now) || local) {
                        continue;
                    }
                }
                _ = stop.cancelled() => return,
            }
            // On a thread of the blocking pool, not on the worker: a pool of many thousand
            // edges takes milliseconds to build, and the viewers whose connections that worker
            // serves would wait for all of it (on one core, the kernel now shares the core
            // between them and the build).
            let router = self.clone();
            match tokio::task::spawn_blocking(move || router.rebuild()).await {
                Ok(took) => recent[next] = took,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // The runtime is shutting down.
                Err(_) => return,
            }
            next = (next + 1) % recent.len();
            let took = recent.iter().min().copied().unwrap_or_default();
            let pause = MIN_REBUILD_INTERVAL.max(took.saturating_mul(REBUILD_PAUSE_FACTOR));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{Capabilities, EdgeInfo, Mode, Stats, PENDING_TTL};

    fn stats() -> Stats {
        Stats {
            cpu_tenths: 100,
            ram_max_bytes: 16 << 30,
            ram_used_bytes: 4 << 30,
            up_bytes_per_sec: 1_000_000,
            bw_limit_bytes_per_sec: 125_000_000,
            ..Stats::default()
        }
    }

    /// A peer's one edge, `eeeeeeeeeeee`, as a summary scored until `expires_at` describes it.
    fn remote(expires_at: Instant) -> Vec<RemoteEdge> {
        vec![RemoteEdge {
            node_id: Arc::from("eeeeeeeeeeee"),
            base_url: Arc::from("https://e.peer.example.net"),
            serves_viewers: true,
            cpu_tenths: 100,
            ram_used: 1 << 30,
            ram_max: 16 << 30,
            up: 0,
            bw_limit: 125_000_000,
            latitude: None,
            longitude: None,
            streams: Vec::new(),
            expires_at,
        }]
    }

    /// Waits, up to `within`, for a snapshot of which `done` holds: the builder may publish
    /// other rebuilds first (it runs them on the blocking pool). Panics with `what` if none comes.
    async fn until_snapshot(
        router: &Router,
        within: Duration,
        what: &str,
        done: impl Fn(&Router) -> bool,
    ) {
        tokio::time::timeout(within, async {
            loop {
                let next = router.next_rebuild();
                if done(router) {
                    break;
                }
                next.await;
            }
        })
        .await
        .expect(what);
    }

    /// A summary wakes the builder, which applies it on its own (the caller never builds), and
    /// a peer gone (no edges) leaves the snapshot the same way.
    #[tokio::test]
    async fn the_builder_applies_summaries_as_they_arrive() {
        let edges = Arc::new(EdgeState::new(Duration::from_secs(15)));
        let router = Router::new(edges, "c", "example.net", Arc::new(Metrics::new()));
        let stop = CancellationToken::new();
        let builder = tokio::spawn(router.clone().run(stop.clone()));
        let remote_edges = |n: usize| move |router: &Router| router.snapshot().remote().len() == n;
        let now = Instant::now();
        router.set_remote_edges("peer", remote(now + Duration::from_secs(90)), now);
        until_snapshot(
            &router,
            Duration::from_secs(10),
            "the summary applied by the builder",
            remote_edges(1),
        )
        .await;
        let snapshot = router.snapshot();
        let edge = snapshot.candidates().next().expect("the peer's edge");
        assert!(edge.remote && &*edge.node_id == "eeeeeeeeeeee");
        router.set_remote_edges("peer", Vec::new(), Instant::now());
        until_snapshot(
            &router,
            Duration::from_secs(10),
            "the peer's edges dropped by the builder",
            remote_edges(0),
        )
        .await;
        stop.cancel();
        builder.await.expect("the builder stops");
    }

    /// The local candidate as the current snapshot has it.
    fn local(router: &Router, node_id: &str) -> Option<Candidate> {
        let snapshot = router.snapshot();
        let found = snapshot.candidates().find(|c| &*c.node_id == node_id);
        found.cloned()
    }

    /// A rebuild reuses the candidate of an edge whose inputs did not change, and builds anew
    /// the one of an edge whose stats, mode or registration did; edges gone are dropped.
    #[tokio::test]
    async fn rebuilds_follow_every_edit_of_an_edge() {
        let edges = Arc::new(EdgeState::new(Duration::from_secs(15)));
        let router = Router::new(edges.clone(), "c", "example.net", Arc::new(Metrics::new()));
        let info = |base_url: &str| EdgeInfo {
            capabilities: Capabilities {
                edge: true,
                ..Capabilities::default()
            },
            public_base_url: base_url.to_string(),
            ..EdgeInfo::default()
        };
        let (a, b) = ("aaaaaaaaaaaa", "bbbbbbbbbbbb");
        let session_a = edges.attach(a, info("https://a.example.com/"), 0);
        let session_b = edges.attach(b, info(""), 0);
        assert!(edges.apply_stats(&session_a, stats()));
        assert!(edges.apply_stats(&session_b, stats()));
        router.rebuild();
        let first_b = local(&router, b).expect("b is routable");
        assert_eq!(
            &*first_b.base_url,
            "https://edge-bbbbbbbbbbbb.c.example.net"
        );
        let a_before = local(&router, a).expect("a is routable");
        assert_eq!(&*a_before.base_url, "https://a.example.com");
        assert_eq!(a_before.cpu_tenths, 100);

        // New stats on a only: a is built anew, b is the very same candidate.
        assert!(edges.apply_stats(
            &session_a,
            Stats {
                cpu_tenths: 700,
                ..stats()
            }
        ));
        router.rebuild();
        assert_eq!(local(&router, a).expect("a").cpu_tenths, 700);
        let again_b = local(&router, b).expect("b");
        assert!(Arc::ptr_eq(&first_b.node_id, &again_b.node_id), "b reused");

        // Draining a, then b's session ending: both leave the pool.
        assert!(edges.set_mode(&session_a, Mode::Draining));
        router.rebuild();
        assert!(local(&router, a).is_none(), "a draining");
        assert!(edges.set_mode(&session_a, Mode::Normal));
        router.rebuild();
        assert_eq!(local(&router, a).expect("a back").cpu_tenths, 700);
        assert!(edges.detach(&session_b));
        router.rebuild();
        assert!(local(&router, b).is_none(), "b detached");

        // b comes back registered with a base URL of its own: built anew, not the old candidate.
        let session_b = edges.attach(b, info("https://b.example.com"), 0);
        router.rebuild();
        assert!(
            local(&router, b).is_none(),
            "no stats yet in the new session"
        );
        assert!(edges.apply_stats(&session_b, stats()));
        router.rebuild();
        let new_b = local(&router, b).expect("b back");
        assert_eq!(&*new_b.base_url, "https://b.example.com");
        assert!(!Arc::ptr_eq(&first_b.node_id, &new_b.node_id));
    }

    /// A peer's edge keeps what redirects charged it while the same summary is applied again (a
    /// heartbeat moved its expiry): before, each heartbeat handed it a fresh ledger, so a flood
    /// could fill it again after every one. A newer summary forgets the charges made before the
    /// previous one arrived (it measured them), and the rest go at their TTL, after which the
    /// edge takes viewers again.
    #[tokio::test(start_paused = true)]
    async fn remote_charges_outlive_heartbeats_and_go_with_newer_summaries_or_their_ttl() {
        let edges = Arc::new(EdgeState::new(Duration::from_secs(15)));
        let router = Router::new(edges, "c", "example.net", Arc::new(Metrics::new()));
        let peers = [Arc::<str>::from("peer")];
        let pending = |router: &Router| router.snapshot().get(0).pending.current();
        let pick = |router: &Router| {
            let ask = crate::routing::Ask::Viewer {
                stream: "live+s",
                remote_clusters: &peers,
            };
            router.snapshot().decide_best(None, ask, Instant::now())
        };
        let t0 = Instant::now();
        let ttl = Duration::from_secs(90);
        router.set_remote_edges("peer", remote(t0 + ttl), t0);
        router.rebuild();
        let p = pick(&router).expect("the peer's edge");
        tokio::time::advance(Duration::from_secs(1)).await;
        router
            .snapshot()
            .charge(p.index, 100_000_000, Instant::now());

        // Heartbeats: the same summary, a later expiry, the charge still there.
        for s in 2..5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            router.set_remote_edges("peer", remote(t0 + ttl + Duration::from_secs(s)), t0);
            router.rebuild();
            assert_eq!(pending(&router), 100_000_000, "kept across a heartbeat");
        }
        // A newer summary at t0 + 5 s: the charge at t0 + 1 s came after t0, so this one may not
        // have measured it.
        tokio::time::advance(Duration::from_secs(1)).await;
        let t5 = Instant::now();
        router.set_remote_edges("peer", remote(t5 + ttl), t5);
        router.rebuild();
        assert_eq!(pending(&router), 100_000_000);
        let p = pick(&router).expect("room for 25 MB/s more");
        router
            .snapshot()
            .charge(p.index, 25_000_000, Instant::now());
        assert_eq!(pick(&router), None, "its bandwidth used up");
        // The next summary, at t0 + 10 s, measured the charge of t0 + 1 s, not the one of t0 + 5 s.
        tokio::time::advance(Duration::from_secs(5)).await;
        let t10 = Instant::now();
        router.set_remote_edges("peer", remote(t10 + ttl), t10);
        router.rebuild();
        assert_eq!(
            pending(&router),
            25_000_000,
            "only what this summary measured is forgotten"
        );
        assert!(pick(&router).is_some());
        router.snapshot().charge(0, 100_000_000, Instant::now());
        assert_eq!(pick(&router), None);

        // The TTL: the sweep forgets what is 30 s old (the charge of t0 + 5 s at t0 + 35 s), and
        // the pool counts it until it is rebuilt.
        tokio::time::advance(PENDING_TTL - Duration::from_secs(6)).await;
        assert!(!router.lock().expire_remote_pending(Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(router.lock().expire_remote_pending(Instant::now()));
        assert_eq!(pick(&router), None, "counted until the pool is rebuilt");
        router.rebuild();
        assert_eq!(pending(&router), 100_000_000);
        assert!(pick(&router).is_some(), "the edge takes viewers again");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(router.lock().expire_remote_pending(Instant::now()));
        router.rebuild();
        assert_eq!(pending(&router), 0);
        assert!(pick(&router).is_some(), "the edge takes viewers again");
    }

    /// Issue 14 item 8: with stats every 20 s, a redirect's pending bandwidth still goes 30 s after
    /// the redirect, not at the second report after it (up to 40 s and more).
    #[tokio::test(start_paused = true)]
    async fn pending_is_forgotten_after_its_ttl_whatever_the_stats_interval() {
        let interval = Duration::from_secs(20);
        let edges = Arc::new(EdgeState::new(interval * 3));
        let router = Router::new(edges.clone(), "c", "example.net", Arc::new(Metrics::new()));
        let info = EdgeInfo {
            capabilities: Capabilities {
                edge: true,
                ..Capabilities::default()
            },
            ..EdgeInfo::default()
        };
        let session = edges.attach("0123456789ab", info, 0);
        assert!(edges.apply_stats(&session, stats()));
        router.rebuild();
        let stop = CancellationToken::new();
        let task = tokio::spawn(router.clone().run(stop.clone()));
        let pending = |router: &Router| {
            let snapshot = router.snapshot();
            let edge = snapshot.candidates().next().expect("the edge is routable");
            edge.pending.current()
        };

        // One redirect 1 s after the first report, then reports every 20 s.
        tokio::time::advance(Duration::from_secs(1)).await;
        router
            .snapshot()
            .candidates()
            .next()
            .expect("edge")
            .pending
            .add(300_000, Instant::now());
        tokio::time::advance(Duration::from_secs(19)).await;
        let reported = router.next_rebuild();
        assert!(edges.apply_stats(&session, stats()));
        tokio::time::timeout(Duration::from_secs(1), reported)
            .await
            .expect("a rebuild after the report");
        assert_eq!(
            pending(&router),
            300_000,
            "the report at 20 s may not show it"
        );
        tokio::time::advance(Duration::from_millis(10_700)).await;
        assert_eq!(pending(&router), 300_000, "29.7 s after the redirect");

        // Rebuilds run on the blocking pool, so the router may still be handling an earlier
        // change when the clock passes the TTL, and publish that rebuild before the sweep's: wait
        // for the snapshot that no longer counts the redirect, within one virtual second.
        tokio::time::advance(Duration::from_millis(600)).await;
        until_snapshot(
            &router,
            Duration::from_secs(1),
            "30.3 s after the redirect, no report since: forgotten by the next sweep",
            |router| pending(router) == 0,
        )
        .await;
        stop.cancel();
        task.await.expect("router stops");
    }
}
