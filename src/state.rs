//! The state every adapter shares: configuration, registry, edge state, router, federation,
//! replication. Built by the `app` module at start, read by the gRPC and HTTP adapters and the API.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::edge::EdgeState;
use crate::geoip::GeoIp;
use crate::leadership::Leadership;
use crate::metrics::Metrics;
use crate::registry::{PlaybackCache, Registry};
use crate::replicas::{RedisLink, Replication};
use crate::routing::Router;

/// The clusters a cell serves, as each of them finds the others (implemented by the `cell`
/// module's `Cell`, which knows the states; this module only names them).
pub trait Served: Send + Sync + std::fmt::Debug {
    /// The state of `cluster` when the cell serves it.
    fn get(&self, cluster: &str) -> Option<AppState>;

    /// Every served cluster's id and certificate, the home cluster's first.
    fn certificates(&self) -> Vec<(String, Arc<crate::tls::Tls>)>;

    /// Has the cell read its assignments now rather than at its next poll, and waits (at most
    /// `within`) until it serves `cluster`; whether it does.
    fn serve_soon<'a>(
        &'a self,
        cluster: &'a str,
        within: std::time::Duration,
    ) -> futures_util::future::BoxFuture<'a, bool>;
}

/// Where a served cluster finds its cell once it exists: the cell holds the clusters' states, so
/// a weak reference, and dropping the cell frees them.
pub type CellRef = Arc<OnceLock<Weak<dyn Served>>>;

/// Everything a handler may need. One `Arc`, so the clone each handler's extractor makes is one
/// reference-count increment, not one per field.
#[derive(Clone, Debug)]
pub struct AppState(pub(crate) Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    pub registry: Registry,
    pub edges: Arc<EdgeState>,
    pub router: Arc<Router>,
    pub playback: Arc<PlaybackCache>,
    /// `viewers.trusted_proxies`, parsed once.
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// `geoip.mmdb_path`, opened once.
    pub geoip: Option<Arc<GeoIp>>,
    pub metrics: Arc<Metrics>,
    pub redis: Option<RedisLink>,
    /// Edge-state sync with the other replicas (with Redis only).
    pub replication: Option<Replication>,
    /// Federation with other clusters' Foghorns: peers, channels, origin pulls.
    pub federation: Arc<crate::federation::Hub>,
    /// The cluster's certificate: pushed to edges, presented by the listeners.
    pub tls: Arc<crate::tls::Tls>,
    /// The cluster's DNS zone, rebuilt from the edges (when DNS is on).
    pub dns: Arc<crate::dns::Zone>,
    /// How the cell's RFC 2136 updates fare (one for the cell).
    pub dns_updates: Arc<crate::dns::UpdateStatus>,
    /// The cell's ACME client, with `tls.source = "acme"`.
    pub acme: Option<Arc<crate::acme::Acme>>,
    /// Whether this replica leads its cluster (always, without Redis).
    pub leadership: Arc<Leadership>,
    /// Random per process: names this replica to the others and in the leader lease.
    pub replica_id: String,
    /// The cell serving this cluster, with the others it serves.
    pub(crate) cell: CellRef,
    /// Cancelled once, when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Per-connection tasks (edge sessions), awaited during shutdown.
    pub tasks: TaskTracker,
    /// The server's own loops (feed, supervisor, publishers, Redis link), awaited at shutdown
    /// until the grace period ends.
    pub(crate) background: TaskTracker,
    pub(crate) ready: AtomicBool,
    /// Stops the Redis sync after the edge sessions ended (so their ends are announced).
    pub(crate) sync_stop: CancellationToken,
    pub(crate) sync_tasks: TaskTracker,
}

impl AppState {
    /// Whether both are the same state (not merely equal).
    pub fn same(&self, other: &AppState) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The state of `cluster` when this Foghorn's cell serves it (this cluster's own included).
    pub fn served(&self, cluster: &str) -> Option<AppState> {
        if cluster == self.config.cluster.id {
            return Some(self.clone());
        }
        self.cell.get()?.upgrade()?.get(cluster)
    }

    /// Has this Foghorn's cell serve `cluster`, just assigned to it, before its next poll of the
    /// assignments; waits at most `within`. Whether the cell serves it.
    pub async fn serve_soon(&self, cluster: &str, within: std::time::Duration) -> bool {
        match self.cell.get().and_then(|cell| cell.upgrade()) {
            Some(cell) => cell.serve_soon(cluster, within).await,
            None => false,
        }
    }

    /// Whether the listeners are up and the registry was migrated.
    pub fn is_started(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.shutdown.is_cancelled()
    }
}
