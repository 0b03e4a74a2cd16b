//! DNS that follows the edges (DESIGN.md §2 and §8): for every served cluster, the zone
//! `{cluster}.{root}` with SOA and NS, `foghorn` and the apex (the cell's public addresses),
//! `edge-{node}` (each edge while routable, and for `dns.hold` after), `edge` and `edge-ingest`
//! (pools of the routable edges with the most headroom) and `_acme-challenge` (TXT).
//!
//! Each replica rebuilds its zones from the edge state every [`REFRESH`] ([`maintain`]); the
//! built-in server ([`server`]) answers from them, and the leader sends their changes to an
//! external primary as RFC 2136 updates ([`update`]).

pub mod server;
pub mod update;
pub mod zone;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::edge::EdgeState;

pub use server::{serve, Handler, Listeners};
pub use update::{Primary, Provider, UpdateStatus};
pub use zone::{Desired, Zone, ZoneData};

/// How often the zones are rebuilt from the edge state: an edge that became routable is answered
/// within this.
pub const REFRESH: Duration = Duration::from_millis(250);

/// Whether DNS is on at all: a built-in server or an RFC 2136 primary is configured.
pub fn enabled(config: &crate::config::Config) -> bool {
    !config.dns.listen.is_empty() || !config.dns.update_server.is_empty()
}

/// The zones of the clusters a cell serves, as DNS finds them (implemented by the cell).
pub trait Zones: Send + Sync + 'static {
    /// The zone of `cluster`, when it is served here.
    fn zone(&self, cluster: &str) -> Option<Arc<Zone>>;

    /// Calls `f` with every served cluster's zone and edges.
    fn each(&self, f: &mut dyn FnMut(&Zone, &EdgeState));
}

/// A tick every [`REFRESH`], late ticks delayed rather than bunched.
fn every_refresh() -> tokio::time::Interval {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Rebuilds the zone of every served cluster every [`REFRESH`] until `stop`.
pub async fn maintain(zones: Arc<dyn Zones>, stop: CancellationToken) {
    let mut tick = every_refresh();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = tokio::time::Instant::now();
        zones.each(&mut |zone, edges| {
            zone.refresh(edges, now);
        });
    }
}
