//! Federation with the Foghorns of other clusters (DESIGN.md §7): what a cluster tells its peers
//! about its edges, and what their summaries become in the routing pool.
//!
//! Free of transport types; `crate::grpc` carries the messages.

pub mod budget;
mod peers;
mod summary;

pub use budget::FrameBudget;
pub use peers::{Direction, Held, Origin, Peers, Ttls};
pub use summary::{ClusterSummary, EdgeSummary, Smoother};
