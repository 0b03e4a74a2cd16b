//! One PeerChannel, either direction (DESIGN.md §7.1): Hello, then this cluster's summary and
//! advert whenever they change and a heartbeat every interval; the peer's frames applied within
//! its [`FrameBudget`] and under the [`FrameRules`]; ended when nobody needs the pair, a newer
//! channel replaces it, the peer goes silent, floods, breaks a rule, or Foghorn shuts down.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::frame::{Frame, FrameRules};
use super::hub::{unix_ms, Hub};
use super::mailbox::Mailbox;
use super::peers::Closed;
use super::ports::{Inbound, LinkError, Received};
use super::{budget, Direction, FrameBudget, Peers};
use crate::metrics::FrameLabels;

/// Channels one peer may have open here at once (its replicas around a leader change, a
/// reconnect before the old channel was noticed dead); a newer one replaces the oldest.
pub const MAX_INBOUND_PER_PEER: usize = 4;

/// A channel a peer opened here.
#[derive(Debug, Clone)]
pub(super) struct InboundChannel {
    pub(super) peer: String,
    /// Cancelled when the pair shares no tenant any more.
    pub(super) unpeer: CancellationToken,
    /// Cancelled when newer channels of the same peer replace this one.
    replace: CancellationToken,
}

/// Why a channel ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEnd {
    /// Nobody needs the pair any more (this side closed it).
    Unpeered,
    /// A newer channel of the same peer took its place.
    Replaced,
    /// The peer sent more than a channel's allowance.
    Flooded,
    /// The peer finished the channel cleanly.
    PeerClosed,
    ShuttingDown,
    /// Nothing heard from the peer for a heartbeat TTL.
    Silent,
    Failed(String),
    /// The peer broke the rules; the message says how.
    Refused(String),
}

/// How a channel this side ends is told to the peer: after the queued frames, the channel
/// finishes with this failure (`None`: a clean end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing {
    Refused(String),
    ShuttingDown,
    Silent,
    Flooded(String),
    Replaced,
}

impl Closing {
    /// Why the channel ended, as the peer is told it (over gRPC, or in process by a cell).
    pub fn reason(&self) -> &str {
        match self {
            Closing::Refused(why) | Closing::Flooded(why) => why,
            Closing::ShuttingDown => "Foghorn is shutting down",
            Closing::Silent => "peer went silent",
            Closing::Replaced => "newer channels of this cluster replaced this one",
        }
    }
}

/// What this side sends on a channel a peer opened: frames, then perhaps why it ended.
pub type Sent = Result<Frame, Closing>;

impl Hub {
    /// Serves a channel `peer` (authenticated) opened here: replaces its oldest channels past
    /// [`MAX_INBOUND_PER_PEER`], runs this one in the task tracker, and returns what to send.
    pub fn accept_channel(
        self: &Arc<Self>,
        peer: String,
        mut inbound: Inbound,
    ) -> Arc<Mailbox<Sent>> {
        let out = Mailbox::new();
        let this = InboundChannel {
            peer: peer.clone(),
            unpeer: CancellationToken::new(),
            replace: CancellationToken::new(),
        };
        let key = self.next_inbound.fetch_add(1, Ordering::Relaxed);
        {
            let mut open = self.inbound.lock();
            open.insert(key, this.clone());
            let mut same_peer: Vec<u64> = open
                .iter()
                .filter(|(_, c)| c.peer == peer)
                .map(|(k, _)| *k)
                .collect();
            if same_peer.len() > MAX_INBOUND_PER_PEER {
                same_peer.sort_unstable();
                for oldest in &same_peer[..same_peer.len() - MAX_INBOUND_PER_PEER] {
                    if let Some(c) = open.remove(oldest) {
                        c.replace.cancel();
                    }
                }
            }
        }
        let hub = self.clone();
        let mailbox = out.clone();
        self.tasks.spawn(async move {
            let sink = |frame: Frame| mailbox.push(Ok(frame));
            let end = hub
                .run_channel(
                    &peer,
                    Direction::Inbound,
                    &mut inbound,
                    &sink,
                    &this.unpeer,
                    &this.replace,
                )
                .await;
            hub.inbound.lock().remove(&key);
            match end {
                ChannelEnd::Refused(why) => mailbox.finish(Err(Closing::Refused(why))),
                ChannelEnd::ShuttingDown => mailbox.finish(Err(Closing::ShuttingDown)),
                ChannelEnd::Silent => mailbox.finish(Err(Closing::Silent)),
                ChannelEnd::Flooded => mailbox.finish(Err(Closing::Flooded(format!(
                    "more than {} frames or {} bytes per second on one channel",
                    budget::FRAMES_PER_SEC,
                    budget::BYTES_PER_SEC
                )))),
                ChannelEnd::Replaced => mailbox.finish(Err(Closing::Replaced)),
                _ => mailbox.close(),
            }
        });
        out
    }

    /// Ends the channels peers opened here whose pair shares no tenant any more.
    pub(super) async fn close_unshared_inbound(&self) {
        let open: Vec<InboundChannel> = self.inbound.lock().values().cloned().collect();
        let mut checked: std::collections::HashMap<String, bool> = Default::default();
        for InboundChannel { peer, unpeer, .. } in open {
            let shared = match checked.get(&peer) {
                Some(s) => *s,
                None => {
                    let s = self
                        .directory
                        .share_a_tenant(&self.me, &peer)
                        .await
                        .unwrap_or(true);
                    checked.insert(peer.clone(), s);
                    s
                }
            };
            if !shared {
                tracing::info!(%peer, "peer shares no subscription any more; closing its channel");
                unpeer.cancel();
            }
        }
    }

    fn advert_frame(&self, streams: Arc<Vec<String>>) -> Frame {
        Frame::Advert {
            cluster_id: self.me.clone(),
            streams,
        }
    }

    /// Runs one channel with `peer` until it ends: `send` takes each frame for the peer. `stop`
    /// ends it as no longer needed, `replace` as replaced by a newer channel.
    pub(super) async fn run_channel(
        &self,
        peer: &str,
        direction: Direction,
        inbound: &mut Inbound,
        send: &(dyn Fn(Frame) + Send + Sync),
        stop: &CancellationToken,
        replace: &CancellationToken,
    ) -> ChannelEnd {
        let cfg = &self.config;
        let id = self.peers.channel_opened(peer, direction);
        self.metrics.federation_channels.inc();
        tracing::info!(%peer, ?direction, "peer channel open");
        let mut summaries = self.summary.subscribe();
        let mut adverts = self.advert.subscribe();
        send(Frame::Hello {
            cluster_id: self.me.clone(),
            protocol_version: super::FEDERATION_VERSION,
        });
        // Nothing about this cluster's edges and streams until its first summary: after a
        // restart, an empty summary or advert would make the peer forget them before they
        // reconnect here.
        if let Some(summary) = summaries.borrow_and_update().clone() {
            send(Frame::Summary(summary));
            send(self.advert_frame(adverts.borrow_and_update().clone()));
        }
        let mut heartbeat = tokio::time::interval(cfg.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut rules = FrameRules::default();
        let end = loop {
            tokio::select! {
                _ = stop.cancelled() => break ChannelEnd::Unpeered,
                _ = replace.cancelled() => break ChannelEnd::Replaced,
                _ = self.shutdown.cancelled() => break ChannelEnd::ShuttingDown,
                changed = summaries.changed() => {
                    if changed.is_err() {
                        break ChannelEnd::ShuttingDown;
                    }
                    if let Some(summary) = summaries.borrow_and_update().clone() {
                        send(Frame::Summary(summary));
                    }
                    // The advert goes with every summary too (DESIGN.md §7.1: on change and
                    // every 30 s).
                    send(self.advert_frame(adverts.borrow().clone()));
                }
                changed = adverts.changed() => {
                    if changed.is_err() {
                        break ChannelEnd::ShuttingDown;
                    }
                    let streams = adverts.borrow_and_update().clone();
                    send(self.advert_frame(streams));
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > cfg.heartbeat_ttl {
                        break ChannelEnd::Silent;
                    }
                    send(Frame::Heartbeat {
                        cluster_id: self.me.clone(),
                        sent_at_unix_ms: unix_ms(),
                    });
                }
                received = inbound.next() => match received {
                    None => break ChannelEnd::PeerClosed,
                    Some(Err(LinkError::Malformed(why))) => {
                        self.metrics.federation_refusals.inc();
                        break ChannelEnd::Refused(why);
                    }
                    Some(Err(e)) => break ChannelEnd::Failed(e.to_string()),
                    Some(Ok(Received { frame, bytes })) => {
                        last_heard = Instant::now();
                        if !self.within_budget(peer, last_heard, bytes) {
                            self.metrics.federation_refusals.inc();
                            break ChannelEnd::Flooded;
                        }
                        if let Err(why) = self.apply(peer, frame, &mut rules) {
                            self.metrics.federation_refusals.inc();
                            break ChannelEnd::Refused(why);
                        }
                    }
                },
            }
        };
        let how = match end {
            ChannelEnd::Unpeered | ChannelEnd::PeerClosed => Closed::Unpeered,
            ChannelEnd::Replaced | ChannelEnd::ShuttingDown => Closed::Replaced,
            ChannelEnd::Silent
            | ChannelEnd::Failed(_)
            | ChannelEnd::Refused(_)
            | ChannelEnd::Flooded => Closed::Failed,
        };
        if self.peers.channel_closed(peer, id, how) {
            if let Some(relay) = &self.relay {
                relay.down(peer);
            }
        }
        self.metrics.federation_channels.dec();
        match &end {
            ChannelEnd::Refused(why) => tracing::warn!(%peer, %why, "peer channel refused"),
            ChannelEnd::Flooded => {
                tracing::warn!(%peer, "peer channel ended: the peer sent more than its allowance")
            }
            ChannelEnd::Failed(why) => tracing::warn!(%peer, %why, "peer channel failed"),
            other => tracing::info!(%peer, end = ?other, "peer channel closed"),
        }
        end
    }

    fn within_budget(&self, peer: &str, now: Instant, bytes: usize) -> bool {
        let mut budgets = self.budgets.lock();
        match budgets.get_mut(peer) {
            Some(budget) => budget.admit(now, bytes),
            None => budgets
                .entry(peer.to_string())
                .or_insert_with(|| FrameBudget::new(now))
                .admit(now, bytes),
        }
    }

    /// Applies one frame of `peer` and relays it to the other replicas; `Err` says why the
    /// channel must end.
    fn apply(&self, peer: &str, frame: Frame, rules: &mut FrameRules) -> Result<(), String> {
        self.metrics
            .federation_frames
            .get_or_create(&FrameLabels { kind: frame.kind() })
            .inc();
        rules.check(peer, &frame)?;
        // The other replicas of this cluster score the peer's edges too (DESIGN.md §7.3): what
        // this replica accepts from the peer, it relays to them.
        if let (Some(relay), false) = (&self.relay, matches!(frame, Frame::Hello { .. })) {
            relay.frame(peer, &frame);
        }
        apply_frame(&self.peers, peer, frame, Duration::ZERO);
        Ok(())
    }
}

/// Applies a checked frame of `peer`, received `age` ago (here, or relayed by another replica).
pub fn apply_frame(peers: &Peers, peer: &str, frame: Frame, age: Duration) {
    match frame {
        Frame::Hello { .. } => {}
        Frame::Summary(summary) => peers.on_summary_aged(peer, Arc::unwrap_or_clone(summary), age),
        Frame::Heartbeat { .. } => peers.on_heartbeat(peer),
        Frame::Advert { streams, .. } => peers.on_advert(peer, streams.iter().cloned().collect()),
    }
}
