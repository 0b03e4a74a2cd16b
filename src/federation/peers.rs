//! What this Foghorn knows about its peers (DESIGN.md §7.2–7.4): the channels open with each, the
//! last summary, heartbeat and stream advert of each, the streams that keep an on-demand peer
//! wanted, and the cross-cluster origin pulls arranged for streams live elsewhere.
//!
//! Policy only; the transport opens the channels and feeds this.

use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::ClusterSummary;
use crate::routing::Router;

/// Who opened a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// This Foghorn dialed the peer.
    Outbound,
    /// The peer dialed this Foghorn.
    Inbound,
}

/// A cross-cluster origin pull arranged for a stream live on a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub peer: String,
    /// Where this cluster's edges pull the stream from (`dtsc://...` on the peer's edge).
    pub dtsc_url: String,
    /// The edge of this cluster that was told to pull it.
    pub node_id: String,
}

#[derive(Debug, Default)]
struct PeerState {
    /// Open channels with this peer, by channel id.
    channels: HashMap<u64, Direction>,
    summary: Option<ClusterSummary>,
    summary_at: Option<Instant>,
    /// Last frame of any kind (a summary or a stream advert is as good as a heartbeat).
    heard_at: Option<Instant>,
    /// Streams live on the peer, from its last advert.
    streams: HashSet<String>,
    /// Whether an advert came at all (an empty `streams` may just mean none yet).
    advertised: bool,
    /// The expiry the routing pool holds for the peer's edges.
    applied_until: Option<Instant>,
    /// The last channel with the peer failed (here or on the replica that held it) and nothing
    /// was heard from the peer since: its edges are not scored.
    down: bool,
}

/// How a channel ended, as [`Peers::channel_closed`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Nobody needs the pair any more, or the peer closed it cleanly (shutting down).
    Unpeered,
    /// It failed: the connection broke, the peer went silent past the heartbeat TTL, or it was
    /// cut off for what it sent.
    Failed,
    /// Replaced by a newer channel, or this Foghorn is shutting down.
    Replaced,
}

/// The timings of DESIGN.md §7.3.
#[derive(Debug, Clone, Copy)]
pub struct Ttls {
    /// A peer's edges stop being scored this long after its last summary...
    pub summary: Duration,
    /// ...or this long after it was last heard from, whichever comes first.
    pub heartbeat: Duration,
    /// A stream wanted from a peer that the peer's adverts have not listed for this long is taken
    /// as ended (it may have ended before the peer's first sample of its edges showed it).
    pub unadvertised: Duration,
}

/// What one peer said last, as [`Peers::held`] hands it to another replica.
#[derive(Debug, Clone)]
pub struct Held {
    pub peer: String,
    /// The last summary and how long ago it came.
    pub summary: Option<(ClusterSummary, Duration)>,
    /// The streams of the last advert.
    pub streams: Option<Vec<String>>,
}

/// Peer state of one Foghorn; shared by the channels, the viewer path and the API.
#[derive(Debug)]
pub struct Peers {
    cluster_id: String,
    ttls: Ttls,
    router: Arc<Router>,
    peers: Mutex<HashMap<String, PeerState>>,
    /// On-demand peers, and the streams that keep each wanted, with when each was wanted or
    /// last listed by the peer's advert, whichever is later.
    on_demand: Mutex<HashMap<String, HashMap<String, Instant>>>,
    /// Peers a dialer is trying to reach (set by the transport).
    dialing: Mutex<HashSet<String>>,
    origins: RwLock<HashMap<String, Origin>>,
    /// Woken when the set of wanted on-demand peers changes.
    wanted_changed: Notify,
    next_channel: AtomicU64,
}

impl Peers {
    pub fn new(cluster_id: &str, ttls: Ttls, router: Arc<Router>) -> Self {
        Peers {
            cluster_id: cluster_id.to_string(),
            ttls,
            router,
            peers: Mutex::new(HashMap::new()),
            on_demand: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashSet::new()),
            origins: RwLock::new(HashMap::new()),
            wanted_changed: Notify::new(),
            next_channel: AtomicU64::new(1),
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Records a channel that just opened; returns its id for [`Peers::channel_closed`].
    pub fn channel_opened(&self, peer: &str, direction: Direction) -> u64 {
        let id = self.next_channel.fetch_add(1, Ordering::Relaxed);
        let mut peers = self.peers.lock();
        let state = peers.entry(peer.to_string()).or_default();
        state.channels.insert(id, direction);
        state.heard_at = Some(Instant::now());
        self.heard(peer, state);
        id
    }

    /// Something came from the peer (a channel opened, a frame here or relayed): it is not down,
    /// and what its last summary said is scored again while it is within its TTLs.
    fn heard(&self, peer: &str, state: &mut PeerState) {
        if std::mem::take(&mut state.down) {
            self.apply(peer, state);
        }
    }

    /// Records the end of a channel. When the last channel with a peer ends, its edges stop
    /// being scored at once: forgotten when nobody needs the pair any more, marked down after a
    /// failure (scored again as soon as anything comes from the peer). Returns whether the peer
    /// just went down here (the other replicas are told).
    pub fn channel_closed(&self, peer: &str, id: u64, how: Closed) -> bool {
        let mut peers = self.peers.lock();
        let Some(state) = peers.get_mut(peer) else {
            return false;
        };
        state.channels.remove(&id);
        if !state.channels.is_empty() {
            return false;
        }
        match how {
            Closed::Unpeered => {
                peers.remove(peer);
                drop(peers);
                self.router
                    .set_remote_edges(peer, Vec::new(), Instant::now());
                false
            }
            Closed::Failed => {
                self.mark_down(peer, state);
                true
            }
            Closed::Replaced => false,
        }
    }

    /// Another replica's last channel with `peer` failed: unless a channel is open here, the
    /// peer's edges stop being scored here too.
    pub fn peer_down(&self, peer: &str) {
        let mut peers = self.peers.lock();
        if let Some(state) = peers.get_mut(peer).filter(|s| s.channels.is_empty()) {
            self.mark_down(peer, state);
        }
    }

    fn mark_down(&self, peer: &str, state: &mut PeerState) {
        state.down = true;
        state.applied_until = None;
        self.router
            .set_remote_edges(peer, Vec::new(), Instant::now());
    }

    /// Number of channels open with `peer`.
    pub fn open_channels(&self, peer: &str) -> usize {
        self.peers.lock().get(peer).map_or(0, |s| s.channels.len())
    }

    /// Every channel open, as (peer, direction).
    pub fn channels(&self) -> Vec<(String, Direction)> {
        let peers = self.peers.lock();
        let mut all: Vec<(String, Direction)> = peers
            .iter()
            .flat_map(|(p, s)| s.channels.values().map(move |d| (p.clone(), *d)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// A peer's summary arrived (already checked to speak for `peer`).
    pub fn on_summary(&self, peer: &str, summary: ClusterSummary) {
        self.on_summary_aged(peer, summary, Duration::ZERO);
    }

    /// A peer's summary that another replica received `age` ago: its edges expire as they
    /// would there. An older summary than the one known changes nothing.
    pub fn on_summary_aged(&self, peer: &str, summary: ClusterSummary, age: Duration) {
        let now = Instant::now();
        let at = now.checked_sub(age).unwrap_or(now);
        let mut peers = self.peers.lock();
        let state = peers.entry(peer.to_string()).or_default();
        if state.summary_at.is_some_and(|known| known > at) {
            return;
        }
        state.summary = Some(summary);
        state.summary_at = Some(at);
        state.heard_at = Some(state.heard_at.map_or(at, |h| h.max(at)));
        state.down = false;
        self.apply(peer, state);
    }

    /// A heartbeat arrived: the peer's edges stay scored for another heartbeat TTL. The pool is
    /// rebuilt only when that moves their expiry by a quarter of the TTL or more, or to the cap
    /// the last summary sets, so heartbeats, however many, rebuild it about four times per TTL.
    pub fn on_heartbeat(&self, peer: &str) {
        let mut peers = self.peers.lock();
        let state = peers.entry(peer.to_string()).or_default();
        state.heard_at = Some(Instant::now());
        self.heard(peer, state);
        let moved = match (self.expires_at(state), state.applied_until) {
            (Some(new), Some(old)) => {
                // The summary's own TTL caps the expiry: reaching the cap is applied exactly.
                let capped = state.summary_at.map(|t| t + self.ttls.summary) == Some(new);
                new.saturating_duration_since(old) >= self.ttls.heartbeat / 4
                    || (capped && new != old)
            }
            _ => true,
        };
        if moved {
            self.apply(peer, state);
        }
    }

    /// A stream advert arrived: the streams live on the peer. Origin pulls and on-demand wants end
    /// for the streams the previous advert listed and this one does not, and for wanted streams
    /// no advert has listed for `Ttls::unadvertised` (a stream not advertised yet may just be
    /// younger than the peer's last sample of its edges, or have ended before it).
    pub fn on_advert(&self, peer: &str, streams: HashSet<String>) {
        let now = Instant::now();
        let mut ended: HashSet<String> = {
            let mut peers = self.peers.lock();
            let state = peers.entry(peer.to_string()).or_default();
            state.heard_at = Some(now);
            self.heard(peer, state);
            let ended = state.streams.difference(&streams).cloned().collect();
            state.streams = streams.clone();
            state.advertised = true;
            ended
        };
        if let Some(wanted) = self.on_demand.lock().get_mut(peer) {
            for (stream, listed) in wanted.iter_mut() {
                if streams.contains(stream) {
                    *listed = now;
                } else if now.saturating_duration_since(*listed) >= self.ttls.unadvertised {
                    ended.insert(stream.clone());
                }
            }
        }
        self.end_streams(peer, &ended, None);
    }

    /// Ends the wants and origin pulls of streams no advert of their peer listed for a summary
    /// TTL: the peer went silent, or no channel with it ever opened (it is unreachable), so
    /// nothing else would end them. Called periodically.
    pub fn expire_wants(&self) {
        let now = Instant::now();
        let stale: Vec<(String, HashSet<String>)> = self
            .on_demand
            .lock()
            .iter()
            .map(|(peer, wanted)| {
                let stale = wanted
                    .iter()
                    .filter(|(_, listed)| {
                        now.saturating_duration_since(**listed) >= self.ttls.summary
                    })
                    .map(|(s, _)| s.clone())
                    .collect::<HashSet<_>>();
                (peer.clone(), stale)
            })
            .filter(|(_, stale)| !stale.is_empty())
            .collect();
        let cutoff = now.checked_sub(self.ttls.summary).unwrap_or(now);
        for (peer, streams) in stale {
            tracing::info!(%peer, streams = streams.len(), "no advert of the peer listed the streams wanted from it; giving them up");
            self.end_streams(&peer, &streams, Some(cutoff));
        }
    }

    /// The streams `ended` on `peer` no longer keep it wanted nor have an origin pull; with
    /// `listed_before`, only those still not listed (nor wanted anew) since then.
    fn end_streams(&self, peer: &str, ended: &HashSet<String>, listed_before: Option<Instant>) {
        if ended.is_empty() {
            return;
        }
        let mut gone: HashSet<&String> = ended.iter().collect();
        let mut on_demand = self.on_demand.lock();
        if let Some(wanted) = on_demand.get_mut(peer) {
            if let Some(cutoff) = listed_before {
                // Re-checked under the lock: a want or an advert may have come meanwhile.
                gone.retain(|s| wanted.get(*s).is_some_and(|listed| *listed <= cutoff));
            }
            wanted.retain(|s, _| !gone.contains(s));
            if wanted.is_empty() {
                on_demand.remove(peer);
                tracing::info!(%peer, "no stream involves the on-demand peer any more");
                self.wanted_changed.notify_one();
            }
        }
        drop(on_demand);
        let mut origins = self.origins.write();
        origins.retain(|s, o| o.peer != peer || !gone.contains(s));
    }

    /// Until when a peer's edges are scored: its summary TTL after its last summary, or its
    /// heartbeat TTL after it was last heard from, whichever comes first (DESIGN.md §7.3).
    fn expires_at(&self, state: &PeerState) -> Option<Instant> {
        if state.down {
            return None;
        }
        let summary_at = state.summary_at?;
        let heard_at = state.heard_at.unwrap_or(summary_at);
        Some((summary_at + self.ttls.summary).min(heard_at + self.ttls.heartbeat))
    }

    /// Re-scores a peer's edges with the expiry its last summary and last frame give.
    fn apply(&self, peer: &str, state: &mut PeerState) {
        let (Some(summary), Some(summary_at), Some(expires_at)) =
            (&state.summary, state.summary_at, self.expires_at(state))
        else {
            return;
        };
        self.router
            .set_remote_edges(peer, summary.remote_edges(expires_at), summary_at);
        state.applied_until = Some(expires_at);
    }

    /// Whether `peer`'s edges are being scored now (a summary within its TTLs).
    pub fn is_scored(&self, peer: &str) -> bool {
        self.peers
            .lock()
            .get(peer)
            .and_then(|state| self.expires_at(state))
            .is_some_and(|t| Instant::now() < t)
    }

    /// Keeps `peer` wanted (a channel open) while `stream` is live there.
    pub fn want(&self, peer: &str, stream: &str) {
        let mut on_demand = self.on_demand.lock();
        let wanted = on_demand.entry(peer.to_string()).or_default();
        let added = !wanted.contains_key(stream);
        if added {
            wanted.insert(stream.to_string(), Instant::now());
        }
        drop(on_demand);
        if added {
            self.wanted_changed.notify_one();
        }
    }

    /// The on-demand peers wanted now.
    pub fn wanted(&self) -> Vec<String> {
        let mut peers: Vec<String> = self.on_demand.lock().keys().cloned().collect();
        peers.sort();
        peers
    }

    /// Resolves when the wanted on-demand peers change.
    pub async fn wanted_changed(&self) {
        self.wanted_changed.notified().await;
    }

    pub fn set_dialing(&self, peers: HashSet<String>) {
        *self.dialing.lock() = peers;
    }

    /// The channel state of `peer` for the tenant API: `open`, `connecting`, `down` or `none`.
    /// With replicas, a channel held by another replica of the cluster counts as open while its
    /// relayed summaries keep the peer scored here. After a failure: `connecting` while this
    /// Foghorn redials, `down` while it waits for the peer to dial.
    pub fn channel_state(&self, peer: &str) -> &'static str {
        if self.open_channels(peer) > 0 || self.is_scored(peer) {
            "open"
        } else if self.dialing.lock().contains(peer) || self.on_demand.lock().contains_key(peer) {
            "connecting"
        } else if self.peers.lock().get(peer).is_some_and(|s| s.down) {
            "down"
        } else {
            "none"
        }
    }

    /// Whether an origin pull is arranged for `stream` (the viewer path asks on every request of
    /// a stream live elsewhere; nothing is copied).
    pub fn has_origin(&self, stream: &str) -> bool {
        self.origins.read().contains_key(stream)
    }

    /// The origin pull arranged for `stream`, if any.
    pub fn origin(&self, stream: &str) -> Option<Origin> {
        self.origins.read().get(stream).cloned()
    }

    /// Records the origin pull of `stream`; `false` when it was known already.
    pub fn set_origin(&self, stream: &str, origin: Origin) -> bool {
        let mut origins = self.origins.write();
        origins.get(stream) != Some(&origin) && {
            origins.insert(stream.to_string(), origin);
            true
        }
    }

    /// Every origin pull arranged, by stream.
    pub fn origins(&self) -> Vec<(String, Origin)> {
        let origins = self.origins.read();
        origins
            .iter()
            .map(|(s, o)| (s.clone(), o.clone()))
            .collect()
    }

    /// What the peers this Foghorn holds a channel with said last, for another replica: per
    /// peer, its last summary with its age (if one came within the summary TTL) and the streams
    /// of its last advert (if one came).
    pub fn held(&self) -> Vec<Held> {
        let now = Instant::now();
        let peers = self.peers.lock();
        peers
            .iter()
            .filter(|(_, s)| !s.channels.is_empty())
            .map(|(peer, s)| Held {
                peer: peer.clone(),
                summary: s
                    .summary
                    .clone()
                    .zip(s.summary_at.map(|at| now.saturating_duration_since(at)))
                    .filter(|(_, age)| *age < self.ttls.summary),
                streams: s.advertised.then(|| {
                    let mut streams: Vec<String> = s.streams.iter().cloned().collect();
                    streams.sort_unstable();
                    streams
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{Capabilities, EdgeState};
    use crate::federation::EdgeSummary;
    use crate::metrics::Metrics;

    const TTLS: Ttls = Ttls {
        summary: Duration::from_secs(90),
        heartbeat: Duration::from_secs(30),
        unadvertised: Duration::from_secs(30),
    };

    fn peers() -> (Peers, Arc<Router>) {
        let router = Router::new(
            Arc::new(EdgeState::new(Duration::from_secs(15))),
            "us",
            "example.net",
            Arc::new(Metrics::new()),
        );
        (Peers::new("us", TTLS, router.clone()), router)
    }

    fn summary() -> ClusterSummary {
        ClusterSummary {
            cluster_id: "eu".into(),
            window: Duration::from_secs(30),
            edges: vec![EdgeSummary {
                node_id: "0000000000e1".into(),
                base_url: "https://edge-0000000000e1.eu.example.net".into(),
                position: None,
                bw_used: 0,
                bw_limit: 1 << 30,
                cpu_tenths: 0,
                ram_used: 0,
                ram_max: 1 << 30,
                viewers: 0,
                capabilities: Capabilities {
                    edge: true,
                    ..Capabilities::default()
                },
                streams: Vec::new(),
            }],
        }
    }

    /// The peer's edge's expiry in the snapshot, once the builder applied what arrived.
    fn fresh_until(router: &Router) -> Option<Instant> {
        router.rebuild();
        router.snapshot().candidates().next().map(|c| c.fresh_until)
    }

    fn origin() -> Origin {
        Origin {
            peer: "eu".into(),
            dtsc_url: "dtsc://edge-0000000000e1.eu.example.net:4200/live+a".into(),
            node_id: "0000000000a1".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_extend_the_expiry_but_rebuild_rarely() {
        let (peers, router) = peers();
        peers.on_summary("eu", summary());
        let first = fresh_until(&router).expect("scored");
        assert_eq!(first, Instant::now() + TTLS.heartbeat);
        // A heartbeat moving the expiry by less than a quarter of the TTL leaves the pool be.
        tokio::time::advance(Duration::from_secs(5)).await;
        peers.on_heartbeat("eu");
        assert_eq!(fresh_until(&router), Some(first));
        tokio::time::advance(Duration::from_secs(3)).await;
        peers.on_heartbeat("eu");
        assert_eq!(fresh_until(&router), Some(Instant::now() + TTLS.heartbeat));
        // Heartbeats never carry the edges past the summary's own TTL...
        for _ in 0..7 {
            tokio::time::advance(Duration::from_secs(10)).await;
            peers.on_heartbeat("eu");
        }
        assert_eq!(
            fresh_until(&router),
            Some(first + TTLS.summary - TTLS.heartbeat)
        );
        assert!(peers.is_scored("eu"));
        // ...past which they are scored no more, and the next rebuild drops them.
        for _ in 0..2 {
            tokio::time::advance(Duration::from_secs(10)).await;
            peers.on_heartbeat("eu");
        }
        assert!(!peers.is_scored("eu"));
        assert_eq!(fresh_until(&router), None);
    }

    #[tokio::test(start_paused = true)]
    async fn wants_end_when_the_stream_leaves_the_advert_or_no_advert_ever_lists_it() {
        let (peers, _router) = peers();
        let listed = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        peers.want("eu", "live+a");
        peers.set_origin("live+a", origin());
        peers.on_advert("eu", listed(&["live+a"]));
        // Listed by every advert, it stays wanted however long it lives.
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(30)).await;
            peers.on_advert("eu", listed(&["live+a"]));
            peers.expire_wants();
        }
        assert_eq!(peers.wanted(), ["eu"]);
        assert!(peers.has_origin("live+a"));
        // Gone from the advert: the want and the origin pull end.
        peers.on_advert("eu", listed(&[]));
        assert!(peers.wanted().is_empty());
        assert!(!peers.has_origin("live+a"));

        // Never advertised (it ended before the peer's first sample): ends after `unadvertised`.
        peers.want("eu", "live+b");
        peers.on_advert("eu", listed(&[]));
        assert_eq!(peers.wanted(), ["eu"]);
        tokio::time::advance(TTLS.unadvertised).await;
        peers.on_advert("eu", listed(&[]));
        assert!(peers.wanted().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn wants_of_a_peer_that_never_answers_expire() {
        let (peers, _router) = peers();
        peers.want("eu", "live+a");
        peers.set_origin("live+a", origin());
        tokio::time::advance(TTLS.summary - Duration::from_secs(1)).await;
        peers.expire_wants();
        assert_eq!(peers.wanted(), ["eu"]);
        tokio::time::advance(Duration::from_secs(1)).await;
        peers.expire_wants();
        assert!(peers.wanted().is_empty());
        assert!(!peers.has_origin("live+a"));
        assert_eq!(peers.channel_state("eu"), "none");
    }
}
