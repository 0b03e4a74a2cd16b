//! What federation needs from outside, as small traits: the way to a peer's Foghorn
//! ([`PeerLink`], implemented by the gRPC client), what the registry knows of clusters and tenants
//! ([`PeerDirectory`]), and the other replicas of this cluster ([`Relay`], implemented by the
//! Redis replication). The core stays free of transport types and is tested with in-memory ones.

use std::pin::Pin;

use futures_util::future::BoxFuture;
use futures_util::Stream;

use super::{Frame, Origin};
use crate::routing::Position;

/// A failed call to a peer or to the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The peer, the way to it or the registry is unavailable now; a later try may work.
    #[error("{0}")]
    Unavailable(String),
    /// The peer took longer than `federation.rpc_timeout`.
    #[error("{0}")]
    TimedOut(String),
    /// The peer (or this side's checks) refused; trying again the same way will not help.
    #[error("{0}")]
    Refused(String),
    /// What was asked for does not exist there.
    #[error("{0}")]
    NotFound(String),
    /// What the peer sent is not a valid frame, answer or request.
    #[error("{0}")]
    Malformed(String),
}

/// A frame as received, with its encoded size (the budget counts bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub frame: Frame,
    pub bytes: usize,
}

/// What a peer sends on a channel: frames until it ends, or a failure.
pub type Inbound = Pin<Box<dyn Stream<Item = Result<Received, LinkError>> + Send>>;
/// What this side sends on a channel: the frames queued in its mailbox, until it closes.
pub type Outbound = std::sync::Arc<super::Mailbox<Frame>>;

/// `QueryStream`: where is `stream` live on the peer, and which of its edges would serve a viewer.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamQuery {
    pub stream: String,
    pub tenant_id: String,
    pub viewer: Option<Position>,
    /// Only the best source (origin) edge, not the viewer ranking.
    pub source_selection: bool,
}

/// One edge of the answering cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCandidate {
    pub node_id: String,
    pub base_url: String,
    pub dtsc_url: String,
    pub score: u64,
}

/// The answer to a [`StreamQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryAnswer {
    pub live: bool,
    pub candidates: Vec<StreamCandidate>,
}

/// `NotifyOriginPull`: edge `destination_node_id` of the calling cluster will pull `stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullNotice {
    pub stream: String,
    pub tenant_id: String,
    pub destination_cluster_id: String,
    pub destination_node_id: String,
}

/// The answer to a [`PullNotice`]: the DTSC URL to pull from, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullAnswer {
    pub accepted: bool,
    pub dtsc_url: String,
    pub reason: String,
}

/// `ArrangeOriginPull`: the calling cluster sends viewers to edge `destination_node_id` of the
/// callee, which lacks `stream`; the callee arranges the pull from `source_cluster_id` (the
/// caller, pulling from `source_dtsc_url`, or a third cluster it asks itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePull {
    pub stream: String,
    pub tenant_id: String,
    pub source_cluster_id: String,
    pub source_dtsc_url: String,
    pub destination_node_id: String,
}

/// The way to other clusters' Foghorns. Calls authenticate as this cluster and end within
/// `federation.rpc_timeout`.
pub trait PeerLink: Send + Sync + std::fmt::Debug {
    /// Opens a PeerChannel to `peer`, sending `outbound`; returns what the peer sends.
    fn open_channel<'a>(
        &'a self,
        peer: &'a str,
        outbound: Outbound,
    ) -> BoxFuture<'a, Result<Inbound, LinkError>>;

    fn query_stream<'a>(
        &'a self,
        peer: &'a str,
        query: StreamQuery,
    ) -> BoxFuture<'a, Result<QueryAnswer, LinkError>>;

    fn notify_origin_pull<'a>(
        &'a self,
        peer: &'a str,
        notice: PullNotice,
    ) -> BoxFuture<'a, Result<PullAnswer, LinkError>>;

    fn arrange_origin_pull<'a>(
        &'a self,
        peer: &'a str,
        pull: RemotePull,
    ) -> BoxFuture<'a, Result<PullAnswer, LinkError>>;
}

/// What the registry knows about clusters, tenants and streams. Errors are
/// [`LinkError::Unavailable`] with a message for the logs (never sent to a peer).
pub trait PeerDirectory: Send + Sync + std::fmt::Debug {
    /// A number that changes whenever the topology may have (official and preferred clusters,
    /// subscriptions, clusters): read often, so the peers are recomputed soon after a change.
    fn topology_version(&self) -> BoxFuture<'_, Result<i64, LinkError>>;

    /// The clusters `me` peers with always-on (some tenant prefers one and is official on the
    /// other).
    fn always_on_peers<'a>(&'a self, me: &'a str) -> BoxFuture<'a, Result<Vec<String>, LinkError>>;

    /// Whether some tenant may use both clusters (an active subscription or ownership on each).
    fn share_a_tenant<'a>(
        &'a self,
        a: &'a str,
        b: &'a str,
    ) -> BoxFuture<'a, Result<bool, LinkError>>;

    /// Whether `tenant` may use both clusters.
    fn tenant_may_use_both<'a>(
        &'a self,
        tenant: &'a str,
        a: &'a str,
        b: &'a str,
    ) -> BoxFuture<'a, Result<bool, LinkError>>;

    /// The tenant owning the stream with this internal name, if any.
    fn stream_owner<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, LinkError>>;
}

/// The other replicas of this cluster: they score the peers' edges too and answer `?source=`
/// for arranged pulls (DESIGN.md §7.3). Fire and forget: everything relayed is periodic or
/// resent on a resync.
pub trait Relay: Send + Sync + std::fmt::Debug {
    /// A frame `peer` sent on a channel held here.
    fn frame(&self, peer: &str, frame: &Frame);
    /// A viewer here needs `stream` from `peer` (the leader opens the channel).
    fn want(&self, peer: &str, stream: &str);
    /// An origin pull of `stream` from `origin.peer` was arranged here.
    fn origin(&self, stream: &str, origin: &Origin);
    /// The last channel with `peer` held here failed: the others stop scoring its edges too.
    fn down(&self, peer: &str);
}
