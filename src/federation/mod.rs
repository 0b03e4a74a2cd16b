//! Federation with the Foghorns of other clusters (DESIGN.md §7): the peer manager ([`Hub`]),
//! PeerChannels and their rules, the drop-oldest mailbox, dialing and supervision with backoff,
//! the summary feed, on-demand arrangement of cross-cluster origin pulls, per-peer budgets, and
//! what peer summaries become in the routing pool.
//!
//! Free of transport types: it reaches peers, the registry and the other replicas through the
//! small traits of [`ports`]; the gRPC adapter implements the peer link and serves the calls,
//! the `wire` module converts frames to and from the protobuf messages.

mod arrange;
pub mod budget;
mod channel;
mod feed;
mod frame;
mod hub;
mod mailbox;
mod peers;
pub mod ports;
mod summary;
mod supervise;
#[cfg(test)]
mod tests;
mod trust;

pub use arrange::Arrangement;
pub use budget::FrameBudget;
pub use channel::{apply_frame, ChannelEnd, Closing, Sent, MAX_INBOUND_PER_PEER};
pub use frame::{
    is_valid_stream_name, Frame, FrameRules, FEDERATION_VERSION, MAX_ADVERT, MAX_NAME,
};
pub use hub::{Hub, Parts};
pub use mailbox::{Mailbox, MAILBOX};
pub use peers::{Closed, Direction, Held, Origin, Peers, Ttls};
pub use ports::{LinkError, PeerDirectory, PeerLink, Relay};
pub use summary::{ClusterSummary, EdgeSummary, Smoother};
pub use trust::{is_peer_dtsc_url, peer_base_url};
