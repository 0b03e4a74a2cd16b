//! Routing: the MistServer-compatible score (`score`), the choice of edges from an immutable
//! snapshot of the pool (`select`), and the one decision every entry point asks for (`decide`).
//! No transport, SQL or Redis here: the hot path reads a snapshot.

pub mod decide;
pub mod router;
pub mod score;
pub mod select;

pub use decide::Ask;
pub use router::{RemoteEdge, Router};
pub use score::{Parts, Position, Weights, WeightsError, CROSS_CLUSTER_PENALTY, MAX_WEIGHT};
pub use select::{Candidate, Need, Pick, Pool, Ranked, Request, Snapshot, StreamRef};

/// The port MistServer serves DTSC on.
pub const DTSC_PORT: u16 = 4200;
/// The port MistServer takes RTMP publishers on; written out in every RTMP URL handed out, so
/// `/ingest/{key}` and the streams API agree.
pub const RTMP_PORT: u16 = 1935;
/// The port MistServer takes SRT publishers on.
pub const SRT_PORT: u16 = 8889;

/// The host in an edge's base URL (base URLs carry no user info: `edge::check_base_url`); an
/// IPv6 literal keeps its brackets, as URLs built from it need them.
pub fn host_of(base_url: &str) -> &str {
    let rest = base_url.split_once("://").map_or(base_url, |(_, r)| r);
    if rest.starts_with('[') {
        if let Some(end) = rest.find(']') {
            return &rest[..=end];
        }
    }
    rest.split(['/', ':']).next().unwrap_or(rest)
}

/// Where another edge pulls `stream` from the edge at `base_url`.
pub fn dtsc_url(base_url: &str, stream: &str) -> String {
    format!("dtsc://{}:{DTSC_PORT}/{stream}", host_of(base_url))
}
