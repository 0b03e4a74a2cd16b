//! Routing: the MistServer-compatible score (`score`) and the choice of edges from an immutable
//! snapshot of the pool (`select`). No transport, SQL or Redis here: the hot path reads a snapshot.

pub mod router;
pub mod score;
pub mod select;

pub use router::{RemoteEdge, Router};
pub use score::{Parts, Position, Weights, CROSS_CLUSTER_PENALTY};
pub use select::{Candidate, Need, Pick, Pool, Request, Snapshot, StreamRef};
