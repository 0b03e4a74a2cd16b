//! Prometheus metrics of one Foghorn instance.
//!
//! Each server owns its registry (no process-global recorder), so several Foghorns started in one
//! test process keep separate counters.

use parking_lot::Mutex;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Outcome label of enrollments, authentications and ingest decisions.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    Accepted,
    Refused,
    Failed,
}

/// A count of outcomes, by outcome.
pub type OutcomeFamily = Family<OutcomeLabels, Counter>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrameLabels {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `play` (307), `play_json`, `ingest`, `mist`.
    pub endpoint: &'static str,
    /// `local`, `remote` (an edge of a peered cluster) or `none` (503).
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `local` or `remote`.
    pub pool: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `query_stream`, `notify_origin_pull` or `arrange_origin_pull`.
    pub rpc: &'static str,
    /// `out` (this Foghorn called a peer) or `in` (a peer called this one).
    pub direction: &'static str,
}

/// Routing decisions of one endpoint by result, created once: counting a decision is one atomic
/// add, no label lookup on the hot path.
#[derive(Debug, Clone)]
pub struct DecisionCounters {
    pub local: Counter,
    pub remote: Counter,
    pub none: Counter,
}

impl DecisionCounters {
    fn of(family: &Family<DecisionLabels, Counter>, endpoint: &'static str) -> Self {
        let get = |result| {
            family
                .get_or_create(&DecisionLabels { endpoint, result })
                .clone()
        };
        DecisionCounters {
            local: get("local"),
            remote: get("remote"),
            none: get("none"),
        }
    }

    /// Counts one decision: `Some(remote)` when an edge was chosen, `None` when none was.
    pub fn count(&self, chosen_remote: Option<bool>) {
        match chosen_remote {
            Some(false) => self.local.inc(),
            Some(true) => self.remote.inc(),
            None => self.none.inc(),
        };
    }
}

/// The metrics Foghorn exports at `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    pub edges_connected: Gauge,
    pub edge_sessions: Counter,
    pub edge_frames: Family<FrameLabels, Counter>,
    pub edge_protocol_errors: Counter,
    pub enrollments: Family<OutcomeLabels, Counter>,
    pub node_authentications: Family<OutcomeLabels, Counter>,
    pub ingest_decisions: Family<OutcomeLabels, Counter>,
    /// Time to rebuild the routing snapshot, seconds.
    pub routing_rebuild_seconds: Histogram,
    /// Candidates in the routing snapshot, per pool.
    pub routing_pool_edges: Family<PoolLabels, Gauge>,
    pub play_decisions: DecisionCounters,
    pub play_json_decisions: DecisionCounters,
    pub ingest_routing_decisions: DecisionCounters,
    pub mist_decisions: DecisionCounters,
    /// Edge announcements written to Redis (puts and releases).
    pub replication_sent: Counter,
    /// Announcements of other replicas applied here.
    pub replication_received: Counter,
    /// Redis commands of edge-state sync that failed (the state is resent on resync).
    pub replication_errors: Counter,
    /// 1 while subscribed to the cluster's channel and resynchronised; 0 while Redis is away.
    pub replication_synced: Gauge,
    /// 1 while this replica holds the cluster's leader lease.
    pub leader: Gauge,
    /// Clusters this Foghorn's cell serves, its home cluster included.
    pub served_clusters: Gauge,
    /// Cross-cluster unary calls (QueryStream, NotifyOriginPull, ArrangeOriginPull), by direction.
    pub federation_rpcs: Family<RpcLabels, Counter>,
    /// PeerChannels open now (both directions).
    pub federation_channels: Gauge,
    /// Frames received from peers, by kind.
    pub federation_frames: Family<FrameLabels, Counter>,
    /// Peer calls and channels refused: bad credentials, no shared subscription, frames that
    /// speak for another cluster, malformed summaries.
    pub federation_refusals: Counter,
    /// RFC 2136 updates sent to the DNS primary, by outcome (refused: it answered with an
    /// error; failed: unreachable or no valid answer).
    pub dns_updates: OutcomeFamily,
    /// When each served cluster's certificate expires, Unix seconds.
    pub certificate_expiry: Family<ClusterLabels, Gauge>,
    /// ACME orders that failed (refused, not validated, CA unreachable).
    pub certificate_renewal_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("foghorn");
        let decisions = Family::<DecisionLabels, Counter>::default();
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            edges_connected: Gauge::default(),
            edge_sessions: Counter::default(),
            edge_frames: Family::default(),
            edge_protocol_errors: Counter::default(),
            enrollments: Family::default(),
            node_authentications: Family::default(),
            ingest_decisions: Family::default(),
            // 25 µs … ~400 ms
            routing_rebuild_seconds: Histogram::new(exponential_buckets(25e-6, 2.0, 15)),
            routing_pool_edges: Family::default(),
            play_decisions: DecisionCounters::of(&decisions, "play"),
            play_json_decisions: DecisionCounters::of(&decisions, "play_json"),
            ingest_routing_decisions: DecisionCounters::of(&decisions, "ingest"),
            mist_decisions: DecisionCounters::of(&decisions, "mist"),
            replication_sent: Counter::default(),
            replication_received: Counter::default(),
            replication_errors: Counter::default(),
            replication_synced: Gauge::default(),
            leader: Gauge::default(),
            served_clusters: Gauge::default(),
            federation_rpcs: Family::default(),
            federation_channels: Gauge::default(),
            federation_frames: Family::default(),
            federation_refusals: Counter::default(),
            dns_updates: Family::default(),
            certificate_expiry: Family::default(),
            certificate_renewal_failures: Counter::default(),
        };
        registry.register(
            "certificate_expiry_seconds",
            "When each served cluster's certificate expires, Unix seconds",
            m.certificate_expiry.clone(),
        );
        registry.register(
            "certificate_renewal_failures",
            "ACME orders that failed: refused, not validated, or the CA unreachable",
            m.certificate_renewal_failures.clone(),
        );
        registry.register(
            "edges_connected",
            "Edges with an open control stream",
            m.edges_connected.clone(),
        );
        registry.register(
            "dns_updates",
            "RFC 2136 updates sent to the DNS primary, by outcome",
            m.dns_updates.clone(),
        );
        registry.register(
            "edge_sessions",
            "Control streams opened and authenticated",
            m.edge_sessions.clone(),
        );
        registry.register(
            "edge_frames",
            "Frames received from edges, by kind",
            m.edge_frames.clone(),
        );
        registry.register(
            "edge_protocol_errors",
            "Control streams ended for bad, oversized or out-of-order frames",
            m.edge_protocol_errors.clone(),
        );
        registry.register(
            "enrollments",
            "First-boot enrollments by outcome",
            m.enrollments.clone(),
        );
        registry.register(
            "node_authentications",
            "Reconnect authentications by outcome",
            m.node_authentications.clone(),
        );
        registry.register(
            "ingest_decisions",
            "Ingest requests by outcome",
            m.ingest_decisions.clone(),
        );
        registry.register(
            "routing_rebuild_seconds",
            "Time to rebuild the routing snapshot after edges changed",
            m.routing_rebuild_seconds.clone(),
        );
        registry.register(
            "routing_pool_edges",
            "Candidates in the routing snapshot, by pool",
            m.routing_pool_edges.clone(),
        );
        registry.register(
            "routing_decisions",
            "Routing decisions by endpoint and result (local edge, remote edge, none)",
            decisions,
        );
        registry.register(
            "replication_sent",
            "Edge announcements written to Redis for the other replicas",
            m.replication_sent.clone(),
        );
        registry.register(
            "replication_received",
            "Announcements of other replicas applied here",
            m.replication_received.clone(),
        );
        registry.register(
            "replication_errors",
            "Redis commands of edge-state sync that failed",
            m.replication_errors.clone(),
        );
        registry.register(
            "replication_synced",
            "1 while subscribed to the replicas' channel and resynchronised",
            m.replication_synced.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the cluster's leader lease",
            m.leader.clone(),
        );
        registry.register(
            "served_clusters",
            "Clusters this Foghorn's cell serves, its home cluster included",
            m.served_clusters.clone(),
        );
        registry.register(
            "federation_rpcs",
            "Cross-cluster unary calls (QueryStream, NotifyOriginPull, ArrangeOriginPull) by direction",
            m.federation_rpcs.clone(),
        );
        registry.register(
            "federation_channels",
            "PeerChannels open with other clusters' Foghorns",
            m.federation_channels.clone(),
        );
        registry.register(
            "federation_frames",
            "Frames received from peers, by kind",
            m.federation_frames.clone(),
        );
        registry.register(
            "federation_refusals",
            "Peer channels and calls refused (credentials, no shared subscription, impostor frames)",
            m.federation_refusals.clone(),
        );
        *m.registry.lock() = registry;
        m
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn outcome(family: &Family<OutcomeLabels, Counter>, outcome: Outcome) {
        family.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}
