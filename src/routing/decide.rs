//! The routing decision every entry point makes: the edges for a viewer of a stream, or for a
//! publisher, ranked on the snapshot. `/play`, `/ingest`, the MistServer balancer, a peer's
//! `QueryStream` and an arranged origin pull all ask here, so which edges may serve whom is
//! written once. (The origin of a stream, for `?source=` and origin pulls, is
//! [`Snapshot::best_source`].)
//!
//! Nothing here allocates beyond the ranked picks [`Snapshot::rank`] returns: the inputs are
//! borrowed and the request lives on the stack.

use std::sync::Arc;

use tokio::time::Instant;

use super::score::Position;
use super::select::{Need, Pick, Request, Snapshot};

/// What an edge is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask<'a> {
    /// Serve viewers of `stream` (`edge` capability). Edges that carry it get the bonus; any
    /// other eligible edge pulls it from the source.
    Viewer {
        stream: &'a str,
        /// The peered clusters whose edges may serve this viewer: the clusters the stream's
        /// tenant may use (DESIGN.md §7.2; unsubscribed clusters are never scored). Empty: this
        /// cluster's edges only.
        remote_clusters: &'a [Arc<str>],
    },
    /// Take a publisher (`ingest` capability): this cluster's edges only, a peer's ingest edges
    /// are its own.
    Publisher,
}

impl<'a> Ask<'a> {
    /// A viewer of `stream` served by this cluster's edges only: MistServer's balancer (its
    /// calls come from this cluster's own edges), a peer's `QueryStream` (it asks for this
    /// cluster's edges), an arranged origin pull (the pull lands on one of them).
    #[inline]
    pub const fn local_viewer(stream: &'a str) -> Ask<'a> {
        Ask::Viewer {
            stream,
            remote_clusters: &[],
        }
    }

    /// The request to score for someone at `position` asking at `now`.
    #[inline]
    pub fn request(self, position: Option<Position>, now: Instant) -> Request<'a> {
        match self {
            Ask::Viewer {
                stream,
                remote_clusters,
            } => Request {
                viewer: position,
                stream: Some(stream),
                need: Need::Viewers,
                now,
                remote_clusters,
            },
            Ask::Publisher => Request {
                viewer: position,
                stream: None,
                need: Need::Ingest,
                now,
                remote_clusters: &[],
            },
        }
    }
}

impl Snapshot {
    /// The best `k` edges for `ask` from `position` (unknown: no geo part) at `now`, best first;
    /// empty when no edge is eligible. Exactly [`Snapshot::rank`] of [`Ask::request`].
    #[inline]
    pub fn decide(
        &self,
        position: Option<Position>,
        ask: Ask<'_>,
        k: usize,
        now: Instant,
    ) -> Vec<Pick> {
        self.rank(&ask.request(position, now), k).into_vec()
    }

    /// The best edge for `ask` from `position` at `now`, or `None` when no edge is eligible: the
    /// first of [`Snapshot::decide`] with `k = 1`, found without a heap allocation. Redirects
    /// ask for this, so a faster search for one edge changes only this function.
    #[inline]
    pub fn decide_best(
        &self,
        position: Option<Position>,
        ask: Ask<'_>,
        now: Instant,
    ) -> Option<Pick> {
        self.rank(&ask.request(position, now), 1).first().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::Pending;
    use crate::routing::{Candidate, StreamRef, Weights};
    use std::time::Duration;

    fn edge(id: &str, cluster: &str, viewers: bool, ingest: bool, streams: &[&str]) -> Candidate {
        Candidate {
            node_id: Arc::from(id),
            cluster_id: Arc::from(cluster),
            remote: cluster != "here",
            base_url: Arc::from(""),
            serves_viewers: viewers,
            takes_ingest: ingest,
            cpu_tenths: 100,
            ram_used: 1 << 30,
            ram_max: 16 << 30,
            up: 0,
            bw_limit: 125_000_000,
            position: Position::from_degrees(50.0, 8.0),
            fresh_until: Instant::now() + Duration::from_secs(3600),
            pending: Arc::new(Pending::default()),
            streams: streams.iter().map(|s| StreamRef::named(s)).collect(),
            connections: 0,
            ip: None,
        }
    }

    /// Viewers go to viewer edges (carriers first, then the peers they may use, at the cross-
    /// cluster penalty); publishers to this cluster's ingest edges only.
    #[test]
    fn viewers_and_publishers_get_their_own_edges() {
        let snapshot = Snapshot::build(
            Weights::default(),
            vec![
                edge("000000000001", "here", true, false, &[]),
                edge("000000000002", "here", true, false, &["live+a"]),
                edge("000000000003", "here", false, true, &[]),
                edge("000000000004", "peer", true, true, &["live+a"]),
            ],
        );
        let now = Instant::now();
        let at = Position::from_degrees(50.0, 8.0);
        let ids = |picks: Vec<Pick>| -> Vec<String> {
            picks
                .iter()
                .map(|p| snapshot.candidate(p).node_id.to_string())
                .collect()
        };
        assert_eq!(
            ids(snapshot.decide(at, Ask::local_viewer("live+a"), 5, now)),
            ["000000000002", "000000000001"]
        );
        let peers = [Arc::from("peer")];
        let anywhere = Ask::Viewer {
            stream: "live+a",
            remote_clusters: &peers,
        };
        assert_eq!(
            ids(snapshot.decide(at, anywhere, 5, now)),
            ["000000000002", "000000000001", "000000000004"]
        );
        assert_eq!(
            ids(snapshot.decide(None, Ask::Publisher, 5, now)),
            ["000000000003"]
        );
        let best = snapshot.decide_best(at, anywhere, now).expect("an edge");
        assert_eq!(
            Some(best),
            snapshot.decide(at, anywhere, 5, now).first().copied()
        );
        let nothing = Snapshot::build(Weights::default(), Vec::new());
        assert_eq!(nothing.decide_best(at, Ask::Publisher, now), None);
    }

    /// The requests are the ones the handlers used to build by hand.
    #[test]
    fn asks_become_the_requests_the_handlers_built() {
        let now = Instant::now();
        let at = Position::from_degrees(1.0, 2.0);
        let peers = [Arc::from("peer")];
        let r = Ask::Viewer {
            stream: "s",
            remote_clusters: &peers,
        }
        .request(at, now);
        assert_eq!(
            (r.viewer, r.stream, r.need, r.now, r.remote_clusters),
            (at, Some("s"), Need::Viewers, now, &peers[..])
        );
        let r = Ask::local_viewer("s").request(None, now);
        assert_eq!(
            (r.stream, r.need, r.remote_clusters.len()),
            (Some("s"), Need::Viewers, 0)
        );
        let r = Ask::Publisher.request(at, now);
        assert_eq!(
            (r.viewer, r.stream, r.need, r.remote_clusters.len()),
            (at, None, Need::Ingest, 0)
        );
    }
}
