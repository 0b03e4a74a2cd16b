//! Routing: the MistServer-compatible score (`score`) and the choice of edges from an immutable
//! snapshot of the pool (`select`). No transport, SQL or Redis here: the hot path reads a snapshot.

pub mod router;
pub mod score;
pub mod select;

pub use router::{RemoteEdge, Router};
pub use score::{Parts, Position, Weights, CROSS_CLUSTER_PENALTY};
pub use select::{Candidate, Need, Pick, Pool, Request, Snapshot, StreamRef};

/// The port MistServer serves DTSC on.
pub const DTSC_PORT: u16 = 4200;

/// The host name in an edge's base URL.
pub fn host_of(base_url: &str) -> &str {
    let rest = base_url.split_once("://").map_or(base_url, |(_, r)| r);
    rest.split(['/', ':']).next().unwrap_or(rest)
}

/// Where another edge pulls `stream` from the edge at `base_url`.
pub fn dtsc_url(base_url: &str, stream: &str) -> String {
    format!("dtsc://{}:{DTSC_PORT}/{stream}", host_of(base_url))
}
