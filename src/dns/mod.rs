//! DNS that follows the edges (DESIGN.md §2 and §8): for every served cluster, the zone
//! `{cluster}.{root}` with SOA and NS, `foghorn` and the apex (the cell's public addresses),
//! `edge-{node}` (each edge while routable, and for `dns.hold` after), `edge` and `edge-ingest`
//! (pools of the routable edges with the most headroom) and `_acme-challenge` (TXT).
//!
//! Each replica rebuilds its zones from the edge state every [`REFRESH`] ([`maintain`]); the
//! built-in server ([`server`]) answers from them.

pub mod server;
pub mod zone;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cell::Cell;

pub use server::{serve, Listeners};
pub use zone::{Desired, Zone, ZoneData};

/// How often the zones are rebuilt from the edge state: an edge that became routable is answered
/// within this.
pub const REFRESH: Duration = Duration::from_millis(250);

/// Whether DNS is on at all: a built-in server or an RFC 2136 primary is configured.
pub fn enabled(config: &crate::config::Config) -> bool {
    !config.dns.listen.is_empty() || !config.dns.update_server.is_empty()
}

/// Rebuilds the zone of every served cluster every [`REFRESH`] until `stop`.
pub async fn maintain(cell: Arc<Cell>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = tokio::time::Instant::now();
        for state in cell.states() {
            state.dns.refresh(&state.edges, now);
        }
    }
}
