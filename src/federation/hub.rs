//! The federation state of one Foghorn: its peers, the channels peers opened here, what each
//! peer may still send, the summary and advert this cluster publishes, and the on-demand
//! arrangements in progress. Shared by the transport's server side, the dialers, the summary feed
//! and the viewer path.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ports::{LinkError, PeerDirectory, PeerLink, Relay};
use super::{ClusterSummary, FrameBudget, Peers};
use crate::config::FederationConfig;
use crate::edge::{EdgeCommands, EdgeState};
use crate::leadership::Leadership;
use crate::metrics::{Metrics, RpcLabels};
use crate::routing::Router;

/// What a [`Hub`] is made of.
#[derive(Debug)]
pub struct Parts {
    /// This cluster's id and the platform's root domain.
    pub cluster_id: String,
    pub root_domain: String,
    pub config: FederationConfig,
    /// `edges.stats_interval`: how often the feed may sample the edges.
    pub stats_interval: Duration,
    pub peers: Arc<Peers>,
    pub edges: Arc<EdgeState>,
    pub router: Arc<Router>,
    pub metrics: Arc<Metrics>,
    pub leadership: Arc<Leadership>,
    pub link: Arc<dyn PeerLink>,
    pub directory: Arc<dyn PeerDirectory>,
    /// The control streams of this replica's edges (to tell one to pull).
    pub edge_commands: Arc<dyn EdgeCommands>,
    /// The other replicas (with Redis only).
    pub relay: Option<Arc<dyn Relay>>,
    /// Cancelled once, when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Where channel tasks run, so shutdown waits for them.
    pub tasks: TaskTracker,
}

/// The pulls of one stream asked of peers: by peer, when, and whether the peer arranged it.
pub(super) type RemotePulls = HashMap<String, (Instant, bool)>;

/// Federation with the Foghorns of other clusters.
#[derive(Debug)]
pub struct Hub {
    pub peers: Arc<Peers>,
    pub(super) me: String,
    pub(super) root: String,
    pub(super) config: FederationConfig,
    pub(super) stats_interval: Duration,
    pub(super) edges: Arc<EdgeState>,
    pub(super) router: Arc<Router>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) leadership: Arc<Leadership>,
    pub(super) link: Arc<dyn PeerLink>,
    pub(super) directory: Arc<dyn PeerDirectory>,
    pub(super) edge_commands: Arc<dyn EdgeCommands>,
    pub(super) relay: Option<Arc<dyn Relay>>,
    pub(super) shutdown: CancellationToken,
    pub(super) tasks: TaskTracker,
    /// The last summary built; none until the edges had a moment to (re)connect after a start,
    /// so peers keep what they had of this cluster instead of an empty summary.
    pub(super) summary: watch::Sender<Option<Arc<ClusterSummary>>>,
    pub(super) advert: watch::Sender<Arc<Vec<String>>>,
    /// What each peer may still send: one allowance for all its channels, kept across
    /// reconnects, so neither more channels nor redialing buys a peer more.
    pub(super) budgets: Mutex<HashMap<String, FrameBudget>>,
    /// Channels peers opened here, by order of opening, with what ends each.
    pub(super) inbound: Mutex<HashMap<u64, super::channel::InboundChannel>>,
    pub(super) next_inbound: AtomicU64,
    /// One arrangement at a time per stream (here) or per peer and stream (into a peer).
    pub(super) arranging: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Arrangements that did not end in a pull here (refused, failed), kept for a while so the
    /// viewers meanwhile cost no call: by stream, when, and the peer edge's URL if any.
    pub(super) unarranged: Mutex<HashMap<String, (Instant, Option<String>)>>,
    /// Pulls into peers' clusters asked for ([`Hub::arrange_remote`]), by stream.
    pub(super) remote_pulls: Mutex<HashMap<String, RemotePulls>>,
}

impl Hub {
    pub fn new(parts: Parts) -> Arc<Hub> {
        Arc::new(Hub {
            peers: parts.peers,
            me: parts.cluster_id,
            root: parts.root_domain,
            config: parts.config,
            stats_interval: parts.stats_interval,
            edges: parts.edges,
            router: parts.router,
            metrics: parts.metrics,
            leadership: parts.leadership,
            link: parts.link,
            directory: parts.directory,
            edge_commands: parts.edge_commands,
            relay: parts.relay,
            shutdown: parts.shutdown,
            tasks: parts.tasks,
            summary: watch::channel(None).0,
            advert: watch::channel(Arc::new(Vec::new())).0,
            budgets: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
            next_inbound: AtomicU64::new(0),
            arranging: Mutex::new(HashMap::new()),
            unarranged: Mutex::new(HashMap::new()),
            remote_pulls: Mutex::new(HashMap::new()),
        })
    }

    /// This cluster's id.
    pub fn cluster_id(&self) -> &str {
        &self.me
    }

    /// Counts a federation call (`rpc`, `direction` in or out).
    pub fn count_rpc(&self, rpc: &'static str, direction: &'static str) {
        self.metrics
            .federation_rpcs
            .get_or_create(&RpcLabels { rpc, direction })
            .inc();
    }

    /// Counts and logs a refused peer; returns the refusal.
    pub fn refuse(&self, e: LinkError) -> LinkError {
        self.metrics.federation_refusals.inc();
        tracing::warn!(error = %e, "refused a peer");
        e
    }
}

/// Milliseconds since the Unix epoch (heartbeats carry it).
pub(super) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
