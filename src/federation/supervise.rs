//! The channels this Foghorn dials (DESIGN.md §7.2): the always-on peers (of each pair, the
//! cluster with the lower id dials) and the on-demand peers streams need, kept open by the leader
//! only and redialed with backoff; channels nobody needs any more are closed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::channel::ChannelEnd;
use super::hub::Hub;
use super::mailbox::Mailbox;
use super::ports::LinkError;
use super::Direction;

/// First wait before redialing a peer; doubled per failure up to `federation.reconnect_max`.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
/// How long a deliberate close waits for the peer to finish its side.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

impl Hub {
    /// Keeps the channels this Foghorn should dial open and the others closed: the always-on
    /// peers (recomputed from the registry as soon as its topology counter moves, read every
    /// `federation.topology_poll`, and every `federation.reconcile_interval` whatever) and the
    /// on-demand peers streams need. Only the leader dials. Also closes channels peers opened
    /// here once the pair shares no tenant any more.
    pub async fn supervise(self: Arc<Self>, stop: CancellationToken) {
        let cfg = &self.config;
        let peers = &self.peers;
        let mut dialers: HashMap<String, CancellationToken> = HashMap::new();
        let mut always_on: Vec<String> = Vec::new();
        let mut next_reconcile = Instant::now();
        let mut next_poll = Instant::now();
        // The topology version the last recomputation started from: read before the peers, so
        // a change that lands in between moves it again and is seen at the next poll.
        let mut topology: Option<i64> = None;
        loop {
            if Instant::now() >= next_poll.min(next_reconcile) {
                next_poll = Instant::now() + cfg.topology_poll;
                // Read before the peers, so it is the version they are recomputed from.
                let version = match self.directory.topology_version().await {
                    Ok(v) => Some(v),
                    Err(e) => {
                        tracing::debug!(error = %e, "could not read the topology version");
                        None
                    }
                };
                let moved = version.is_some() && version != topology;
                if moved {
                    tracing::debug!(?version, "the topology changed; recomputing peers");
                }
                if moved || Instant::now() >= next_reconcile {
                    next_reconcile = Instant::now() + cfg.reconcile_interval;
                    // None when unread: the next poll that reads it recomputes.
                    topology = version;
                    match self.directory.always_on_peers(&self.me).await {
                        Ok(list) => {
                            always_on = list.into_iter().filter(|p| self.me < *p).collect();
                        }
                        Err(e) => {
                            // Tried again at the next poll.
                            topology = None;
                            tracing::warn!(error = %e, "could not recompute the always-on peers")
                        }
                    }
                    self.close_unshared_inbound().await;
                }
            }
            peers.expire_wants();
            let mut want: HashSet<String> = HashSet::new();
            if self.leadership.is_leader() {
                want.extend(always_on.iter().cloned());
                for peer in peers.wanted() {
                    // An on-demand peer already connected the other way needs no second channel.
                    if dialers.contains_key(&peer) || peers.open_channels(&peer) == 0 {
                        want.insert(peer);
                    }
                }
            }
            dialers.retain(|peer, token| {
                let keep = want.contains(peer);
                if !keep {
                    tracing::info!(%peer, "closing the channel nobody needs any more");
                    token.cancel();
                }
                keep
            });
            for peer in &want {
                if !dialers.contains_key(peer) {
                    let token = stop.child_token();
                    dialers.insert(peer.clone(), token.clone());
                    self.tasks.spawn(self.clone().dial(peer.clone(), token));
                }
            }
            peers.set_dialing(want);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = peers.wanted_changed() => {}
                _ = tokio::time::sleep_until(next_poll.min(next_reconcile).min(Instant::now() + Duration::from_secs(1))) => {}
            }
        }
    }

    /// Keeps a channel open with `peer` until `stop`, redialing after failures.
    async fn dial(self: Arc<Self>, peer: String, stop: CancellationToken) {
        let max = self.config.reconnect_max;
        let mut delays = crate::retry::backoff(RECONNECT_MIN, max);
        loop {
            let started = Instant::now();
            match self.connect_and_run(&peer, &stop).await {
                Ok(ChannelEnd::Unpeered) | Ok(ChannelEnd::ShuttingDown) => return,
                Ok(end) => tracing::debug!(%peer, ?end, "peer channel ended; redialing"),
                Err(e) => tracing::warn!(%peer, error = %e, "could not open a peer channel"),
            }
            if started.elapsed() >= max {
                // The channel was up for a while: start over.
                delays = crate::retry::backoff(RECONNECT_MIN, max);
            }
            let delay = delays.next().unwrap_or(max);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Opens one channel to `peer` and runs it until it ends.
    async fn connect_and_run(
        &self,
        peer: &str,
        stop: &CancellationToken,
    ) -> Result<ChannelEnd, LinkError> {
        let out = Mailbox::new();
        let mut inbound = tokio::time::timeout(
            self.config.rpc_timeout,
            self.link.open_channel(peer, out.clone()),
        )
        .await
        .map_err(|_| LinkError::TimedOut("peer did not answer in time".into()))??;
        let never = CancellationToken::new();
        let sink = |frame| out.push(frame);
        let end = self
            .run_channel(peer, Direction::Outbound, &mut inbound, &sink, stop, &never)
            .await;
        out.close();
        if matches!(end, ChannelEnd::Unpeered) {
            // Let the peer see a clean end (it then stops scoring our edges at once).
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                while inbound.next().await.is_some() {}
            })
            .await;
        }
        Ok(end)
    }
}
