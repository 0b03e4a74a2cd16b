//! A cell: the clusters one Foghorn deployment serves (DESIGN.md §1), and how a request finds
//! its cluster among them.
//!
//! Every served cluster has a state of its own ([`AppState`]: edges, routing snapshot, weights,
//! federation, playback cache, certificate), so a decision for one cluster never looks at another
//! cluster's edges and costs the same however many clusters the cell serves. The home cluster
//! (`cluster.id`) is served from the start; the clusters the registry assigns to the cell come and
//! go while it runs (see `app`).
//!
//! Requests are attributed by name: viewers by `Host` (`foghorn.{cluster}.{root}` or the zone apex
//! `{cluster}.{root}`, else the home cluster), edges by the cluster of their token or node,
//! peers by the cluster they call.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use futures_util::StreamExt as _;

use crate::federation::ports::{
    Inbound, Outbound, PullAnswer, PullNotice, QueryAnswer, Received, RemotePull, StreamQuery,
};
use crate::federation::{Closing, Frame, Hub, LinkError, PeerDirectory, PeerLink};
use crate::registry::Registry;
use crate::state::{AppState, CellRef, Served};

/// The clusters served here besides the home cluster, by id.
type Assigned = HashMap<Box<str>, AppState>;

/// The clusters this Foghorn serves.
#[derive(Debug)]
pub struct Cell {
    home: AppState,
    served: ArcSwap<Assigned>,
    /// `.{root}`, lowercase: the suffix of every served cluster's names.
    suffix: Box<str>,
    /// Wakes the follower of the cell's assignments before its next poll.
    wake: tokio::sync::Notify,
    /// Moves whenever a cluster starts or stops being served.
    changes: tokio::sync::watch::Sender<u64>,
}

impl crate::dns::Zones for Cell {
    fn zone(&self, cluster: &str) -> Option<Arc<crate::dns::Zone>> {
        self.get(cluster).map(|state| state.dns.clone())
    }

    fn each(&self, f: &mut dyn FnMut(&crate::dns::Zone, &crate::edge::EdgeState)) {
        for state in self.states() {
            f(&state.dns, &state.edges);
        }
    }
}

impl Cell {
    /// A cell serving only `home` for now.
    pub fn new(home: AppState) -> Cell {
        let suffix = format!(".{}", home.config.cluster.root_domain.to_ascii_lowercase());
        Cell {
            home,
            served: ArcSwap::from_pointee(Assigned::new()),
            suffix: suffix.into(),
            wake: tokio::sync::Notify::new(),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The home cluster's state.
    pub fn home(&self) -> &AppState {
        &self.home
    }

    /// The state of `cluster` when this cell serves it.
    pub fn get(&self, cluster: &str) -> Option<AppState> {
        if cluster == self.home.config.cluster.id {
            return Some(self.home.clone());
        }
        self.served.load().get(cluster).cloned()
    }

    /// This cell as its clusters find it.
    pub fn as_served(self: &Arc<Self>) -> std::sync::Weak<dyn Served> {
        let served: Arc<dyn Served> = self.clone();
        Arc::downgrade(&served)
    }

    /// Whether this cell serves `cluster`.
    pub fn serves(&self, cluster: &str) -> bool {
        cluster == self.home.config.cluster.id || self.served.load().contains_key(cluster)
    }

    /// The ids of the assigned clusters served now (the home cluster not included).
    pub fn assigned(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.served.load().keys().map(|k| k.to_string()).collect();
        ids.sort_unstable();
        ids
    }

    /// Every served cluster's state, the home cluster's first.
    pub fn states(&self) -> Vec<AppState> {
        let served = self.served.load();
        let mut all = Vec::with_capacity(1 + served.len());
        all.push(self.home.clone());
        all.extend(served.values().cloned());
        all
    }

    /// Every served cluster's id and certificate, the home cluster's first.
    pub fn certificates(&self) -> Vec<(String, Arc<crate::tls::Tls>)> {
        self.states()
            .into_iter()
            .map(|s| (s.config.cluster.id.clone(), s.tls.clone()))
            .collect()
    }

    /// Moves whenever a cluster starts or stops being served.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// How many clusters are served, the home cluster included.
    pub fn len(&self) -> usize {
        1 + self.served.load().len()
    }

    /// Always false: a cell serves at least its home cluster.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The cluster a request with this `Host` header is for: the served cluster it names as
    /// `foghorn.{cluster}.{root}` or `{cluster}.{root}` (any case, with or without a port or the
    /// final dot), else the home cluster. Borrowed, with no lookup, for every name that is not
    /// an assigned cluster's; `host` is called only when the cell serves assigned clusters, so
    /// the viewer path pays nothing for the cell (not even finding the header) when it serves one.
    pub fn for_host<'h>(&self, host: impl FnOnce() -> Option<&'h str>) -> Cow<'_, AppState> {
        match self.named(host) {
            Some(state) => Cow::Owned(state),
            None => Cow::Borrowed(&self.home),
        }
    }

    /// The assigned cluster `host` names, if any.
    fn named<'h>(&self, host: impl FnOnce() -> Option<&'h str>) -> Option<AppState> {
        let served = self.served.load();
        if served.is_empty() {
            return None;
        }
        let label = cluster_label(host()?, &self.suffix)?;
        if label.eq_ignore_ascii_case(&self.home.config.cluster.id) {
            return None;
        }
        if label.bytes().all(|b| !b.is_ascii_uppercase()) {
            return served.get(label).cloned();
        }
        served.get(label.to_ascii_lowercase().as_str()).cloned()
    }

    /// Starts serving `state`'s cluster (replacing a state it had).
    pub fn insert(&self, state: AppState) -> Option<AppState> {
        let id: Box<str> = state.config.cluster.id.as_str().into();
        let mut old = None;
        self.served.rcu(|served| {
            let mut next = Assigned::clone(served);
            old = next.insert(id.clone(), state.clone());
            next
        });
        self.changes.send_modify(|n| *n += 1);
        old
    }

    /// Stops serving assigned cluster `cluster`; returns its state so the caller can stop it.
    pub fn remove(&self, cluster: &str) -> Option<AppState> {
        let mut old = None;
        self.served.rcu(|served| {
            let mut next = Assigned::clone(served);
            old = next.remove(cluster);
            next
        });
        self.changes.send_modify(|n| *n += 1);
        old
    }

    /// Resolves when the follower of the assignments is asked to read them now.
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

/// The way from one served cluster to its peers (DESIGN.md §7): in process when this cell
/// serves the peer too, with the rules the peer's Foghorn applies to a call (a cluster never
/// peers with itself; the pair must share a tenant), so no call goes through the network to
/// this process itself; over `remote` (gRPC) otherwise.
#[derive(Debug)]
pub struct Link {
    me: String,
    root: String,
    cell: CellRef,
    directory: Arc<dyn PeerDirectory>,
    remote: Arc<dyn PeerLink>,
}

impl Link {
    pub fn new(
        me: &str,
        root: &str,
        cell: CellRef,
        directory: Arc<dyn PeerDirectory>,
        remote: Arc<dyn PeerLink>,
    ) -> Link {
        Link {
            me: me.to_string(),
            root: root.to_string(),
            cell,
            directory,
            remote,
        }
    }

    /// The state of `peer` when this cell serves it.
    fn served(&self, peer: &str) -> Option<AppState> {
        self.cell.get()?.upgrade()?.get(peer)
    }

    /// `peer`'s federation, once the call is one its Foghorn would take from this cluster.
    async fn admit(&self, peer: &AppState) -> Result<Arc<Hub>, LinkError> {
        let them = &peer.config.cluster.id;
        if *them == self.me {
            return Err(LinkError::Refused(
                "a cluster does not peer with itself".into(),
            ));
        }
        if peer.shutdown.is_cancelled() {
            return Err(LinkError::Unavailable(format!(
                "cluster {them:?} is no longer served here"
            )));
        }
        if !self.directory.share_a_tenant(&self.me, them).await? {
            peer.metrics.federation_refusals.inc();
            return Err(LinkError::Refused(format!(
                "cluster {:?} shares no active subscription with cluster {them:?}",
                self.me
            )));
        }
        Ok(peer.federation.clone())
    }

    /// `frame` as the peer receives it, with the size it has on the wire (its budget counts
    /// bytes whichever way it comes).
    fn received(frame: Frame, root: &str) -> Received {
        use prost::Message as _;
        let bytes = crate::wire::frame_to_proto(&frame, root).encoded_len();
        Received { frame, bytes }
    }

    /// A channel with `peer`, served here.
    async fn open_local(&self, peer: &AppState, outbound: Outbound) -> Result<Inbound, LinkError> {
        let hub = self.admit(peer).await?;
        let root = self.root.clone();
        let sent = Box::pin(
            outbound
                .stream()
                .map(move |frame| Ok(Self::received(frame, &root))),
        );
        let answers = hub.accept_channel(self.me.clone(), sent);
        let root = self.root.clone();
        Ok(Box::pin(answers.stream().map(move |sent| {
            sent.map(|frame| Self::received(frame, &root))
                .map_err(ended)
        })))
    }
}

/// How a channel the peer ended reads on this side: what the status its Foghorn ends a gRPC
/// channel with would read as ([`Closing::reason`] for both).
fn ended(closing: Closing) -> LinkError {
    let why = closing.reason().to_string();
    match closing {
        Closing::Refused(_) => LinkError::Refused(why),
        Closing::Silent => LinkError::TimedOut(why),
        Closing::ShuttingDown | Closing::Flooded(_) | Closing::Replaced => {
            LinkError::Unavailable(why)
        }
    }
}

impl PeerLink for Link {
    fn open_channel<'a>(
        &'a self,
        peer: &'a str,
        outbound: Outbound,
    ) -> BoxFuture<'a, Result<Inbound, LinkError>> {
        match self.served(peer) {
            Some(state) => Box::pin(async move { self.open_local(&state, outbound).await }),
            None => self.remote.open_channel(peer, outbound),
        }
    }

    fn query_stream<'a>(
        &'a self,
        peer: &'a str,
        query: StreamQuery,
    ) -> BoxFuture<'a, Result<QueryAnswer, LinkError>> {
        match self.served(peer) {
            Some(state) => Box::pin(async move {
                let hub = self.admit(&state).await?;
                hub.answer_query(&self.me, &query).await
            }),
            None => self.remote.query_stream(peer, query),
        }
    }

    fn notify_origin_pull<'a>(
        &'a self,
        peer: &'a str,
        notice: PullNotice,
    ) -> BoxFuture<'a, Result<PullAnswer, LinkError>> {
        match self.served(peer) {
            Some(state) => Box::pin(async move {
                let hub = self.admit(&state).await?;
                hub.answer_pull(&self.me, &notice).await
            }),
            None => self.remote.notify_origin_pull(peer, notice),
        }
    }

    fn arrange_origin_pull<'a>(
        &'a self,
        peer: &'a str,
        pull: RemotePull,
    ) -> BoxFuture<'a, Result<PullAnswer, LinkError>> {
        match self.served(peer) {
            Some(state) => Box::pin(async move {
                let hub = self.admit(&state).await?;
                hub.answer_arrange(&self.me, &pull).await
            }),
            None => self.remote.arrange_origin_pull(peer, pull),
        }
    }
}

/// The registry as the federation of every served cluster reads it, with two differences: the
/// topology version, which each cluster's supervisor polls every `federation.topology_poll`, is
/// read once per poll for the whole cell (by the follower of the cell's assignments) instead of
/// once per served cluster; and the always-on pairs are read once per topology version for all
/// of them, instead of one query per served cluster (a thousand at each change, and at start).
#[derive(Debug)]
pub struct Directory {
    registry: Registry,
    /// The version last read; [`UNREAD`] before the first read and after a failed one.
    version: AtomicI64,
    /// Each cluster's always-on peers, as read at a version (held while being read, so the
    /// clusters asking meanwhile wait for that one read).
    always_on: tokio::sync::Mutex<Option<(i64, Arc<AlwaysOn>)>>,
}

/// Each cluster's always-on peers, sorted.
type AlwaysOn = HashMap<String, Vec<String>>;

/// No topology version known.
const UNREAD: i64 = i64::MIN;

impl Directory {
    pub fn new(registry: Registry) -> Directory {
        Directory {
            registry,
            version: AtomicI64::new(UNREAD),
            always_on: tokio::sync::Mutex::default(),
        }
    }

    /// The always-on peers of every cluster at the last version read: from the last reading
    /// when it was at that version, else read now.
    async fn always_on(&self) -> Result<Arc<AlwaysOn>, LinkError> {
        let version = self.version.load(Ordering::Acquire);
        let mut held = self.always_on.lock().await;
        if let Some((at, peers)) = &*held {
            if *at == version && version != UNREAD {
                return Ok(peers.clone());
            }
        }
        let pairs = self
            .registry
            .always_on_pairs()
            .await
            .map_err(|e| LinkError::Unavailable(e.to_string()))?;
        let mut peers = AlwaysOn::new();
        for (a, b) in pairs {
            peers.entry(a.clone()).or_default().push(b.clone());
            peers.entry(b).or_default().push(a);
        }
        for list in peers.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
        let peers = Arc::new(peers);
        *held = Some((version, peers.clone()));
        Ok(peers)
    }

    /// Reads the topology version from the registry for every served cluster; `None` when the
    /// registry did not answer.
    pub async fn read_version(&self) -> Option<i64> {
        let read = PeerDirectory::topology_version(&self.registry).await;
        if let Err(e) = &read {
            tracing::debug!(error = %e, "could not read the topology version");
        }
        let version = read.ok().filter(|v| *v != UNREAD);
        self.version
            .store(version.unwrap_or(UNREAD), Ordering::Release);
        version
    }
}

impl PeerDirectory for Directory {
    fn topology_version(&self) -> BoxFuture<'_, Result<i64, LinkError>> {
        let version = self.version.load(Ordering::Acquire);
        Box::pin(async move {
            if version == UNREAD {
                Err(LinkError::Unavailable(
                    "the topology version was not read yet".into(),
                ))
            } else {
                Ok(version)
            }
        })
    }

    fn always_on_peers<'a>(&'a self, me: &'a str) -> BoxFuture<'a, Result<Vec<String>, LinkError>> {
        Box::pin(async move {
            let peers = self.always_on().await?;
            Ok(peers.get(me).cloned().unwrap_or_default())
        })
    }

    fn share_a_tenant<'a>(
        &'a self,
        a: &'a str,
        b: &'a str,
    ) -> BoxFuture<'a, Result<bool, LinkError>> {
        PeerDirectory::share_a_tenant(&self.registry, a, b)
    }

    fn tenant_may_use_both<'a>(
        &'a self,
        tenant: &'a str,
        a: &'a str,
        b: &'a str,
    ) -> BoxFuture<'a, Result<bool, LinkError>> {
        PeerDirectory::tenant_may_use_both(&self.registry, tenant, a, b)
    }

    fn stream_owner<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, LinkError>> {
        PeerDirectory::stream_owner(&self.registry, stream)
    }
}

impl Served for Cell {
    fn get(&self, cluster: &str) -> Option<AppState> {
        Cell::get(self, cluster)
    }

    fn certificates(&self) -> Vec<(String, Arc<crate::tls::Tls>)> {
        Cell::certificates(self)
    }

    fn serve_soon<'a>(&'a self, cluster: &'a str, within: Duration) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let mut changes = self.changes.subscribe();
            // A permit is kept when the follower is busy: it reads again once done.
            self.wake.notify_one();
            let served = tokio::time::timeout(within, changes.wait_for(|_| self.serves(cluster)));
            let served = matches!(served.await, Ok(Ok(_)));
            served
        })
    }
}

/// The cluster label of `host` when it is `foghorn.{label}.{root}` or `{label}.{root}`; `suffix`
/// is `.{root}` in lowercase.
fn cluster_label<'h>(host: &'h str, suffix: &str) -> Option<&'h str> {
    // Without the port (a bracketed IPv6 literal never names a cluster) and the final dot.
    let name = match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let cut = name.len().checked_sub(suffix.len())?;
    if !name.is_char_boundary(cut) || !name[cut..].eq_ignore_ascii_case(suffix) {
        return None;
    }
    let labels = &name[..cut];
    let label = match labels.get(..8) {
        Some(p) if p.eq_ignore_ascii_case("foghorn.") => &labels[8..],
        _ => labels,
    };
    let valid = !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    valid.then_some(label)
}

#[cfg(test)]
mod tests {
    use super::cluster_label;

    #[test]
    fn hosts_name_a_cluster_by_its_foghorn_name_or_its_apex() {
        let s = ".example.net";
        assert_eq!(cluster_label("foghorn.lab.example.net", s), Some("lab"));
        assert_eq!(cluster_label("lab.example.net", s), Some("lab"));
        assert_eq!(
            cluster_label("Foghorn.LAB.Example.NET.:443", s),
            Some("LAB")
        );
        assert_eq!(cluster_label("lab.example.net:18008", s), Some("lab"));
        // Not a cluster's name.
        for host in [
            "example.net",
            ".example.net",
            "edge.lab.example.net",
            "foghorn..example.net",
            "lab.example.org",
            "labexample.net",
            "127.0.0.1:18008",
            "[::1]:18008",
            "",
            "é.example.net",
        ] {
            assert_eq!(cluster_label(host, s), None, "{host:?}");
        }
    }
}
