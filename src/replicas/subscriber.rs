//! One Redis subscription for every cluster a cell serves.
//!
//! Each served cluster's edge-state sync listens on two channels: its edges' announcements and
//! what the replicas relay about its federation peers. Were each cluster to subscribe on its own,
//! a cell serving a thousand clusters would hold a thousand subscriber connections per replica
//! (descriptors here and client slots in Redis) and ping Redis a thousand times a second. Here
//! one connection carries them all: a cluster joins it when it is served and leaves it when it
//! is retired, each message goes to the cluster whose channel it came on, one ping a second
//! watches the connection, and whenever the connection is made (anew) every cluster subscribes
//! and then resynchronises, a few at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::PubSubSink;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::replication::{Channel, Replication};
use super::RedisLink;

/// Bound on each call of the subscription (connecting, subscribing, a ping).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the subscription checks that Redis still answers.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Longest wait before subscribing again once Redis went away.
const RETRY_MAX: Duration = Duration::from_millis(500);
/// Clusters resynchronising at once after the subscription is made: a thousand at once would
/// queue their reads behind each other, and their weights behind the registry's pool.
const RESYNC_AT_ONCE: usize = 16;

enum Change {
    /// `sync`'s cluster is served (anew, if it was already: `sync` replaces the former one).
    Join { id: u64, sync: Box<Replication> },
    /// The cluster's sync `id` ended (ignored when a newer one of the cluster joined since).
    Leave { cluster: String, id: u64 },
}

/// The cell's handle on its subscription.
#[derive(Debug, Clone)]
pub struct Subscriber {
    changes: mpsc::UnboundedSender<Change>,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Join { id, .. } => write!(f, "Join({id})"),
            Change::Leave { cluster, id } => write!(f, "Leave({cluster}, {id})"),
        }
    }
}

impl Subscriber {
    /// Starts the subscription on `tasks`; it ends with `stop`.
    pub fn start(link: RedisLink, tasks: &TaskTracker, stop: CancellationToken) -> Subscriber {
        let (changes, receiver) = mpsc::unbounded_channel();
        let follower = Follower {
            link,
            members: HashMap::new(),
            changes: receiver,
            resyncs: Arc::new(Semaphore::new(RESYNC_AT_ONCE)),
        };
        tasks.spawn(follower.run(stop));
        Subscriber {
            changes,
            next_id: Arc::default(),
        }
    }

    /// Subscribes `sync`'s cluster until `stop` fires: its messages go to it, and it
    /// resynchronises each time the subscription is made.
    pub fn join(&self, sync: Replication, stop: CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cluster = sync.cluster_id().to_string();
        // Sends fail only once the subscription ended (shutdown): nothing left to tell.
        let _ = self.changes.send(Change::Join {
            id,
            sync: Box::new(sync),
        });
        let changes = self.changes.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            let _ = changes.send(Change::Leave { cluster, id });
        });
    }
}

struct Member {
    id: u64,
    sync: Box<Replication>,
}

/// The task that holds the subscription.
struct Follower {
    link: RedisLink,
    /// The clusters served, by id.
    members: HashMap<String, Member>,
    changes: mpsc::UnboundedReceiver<Change>,
    resyncs: Arc<Semaphore>,
}

impl Follower {
    /// Subscribes and delivers until `stop`; starts over (with backoff) whenever Redis goes away.
    async fn run(mut self, stop: CancellationToken) {
        let mut delays = crate::retry::backoff(Duration::from_millis(50), RETRY_MAX);
        loop {
            // The resyncs write through the shared connection: no use subscribing before it is
            // back, and once it is, no reason to wait longer.
            tokio::select! {
                _ = self.link.connected() => {}
                _ = stop.cancelled() => return,
            }
            let delay = delays.next().unwrap_or(RETRY_MAX);
            let ended = self.follow(&stop).await;
            for member in self.members.values() {
                member.sync.set_synced(false);
            }
            match ended {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, clusters = self.members.len(), "edge-state sync: Redis unavailable; routing from local state")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One connection: returns `Ok` on `stop` (or once no handle is left), `Err` when Redis
    /// went away.
    async fn follow(&mut self, stop: &CancellationToken) -> anyhow::Result<()> {
        let lost = RedisLink::lost_since(self.link.mark());
        tokio::pin!(lost);
        let pubsub = tokio::time::timeout(CALL_TIMEOUT, self.link.pubsub())
            .await
            .map_err(|_| anyhow::anyhow!("subscribing timed out"))??;
        let (mut sink, mut messages) = pubsub.split();
        // The resyncs this connection started end with it.
        let connection = CancellationToken::new();
        let _ended = connection.clone().drop_guard();
        while let Ok(change) = self.changes.try_recv() {
            self.note(change);
        }
        let clusters: Vec<String> = self.members.keys().cloned().collect();
        for cluster in &clusters {
            self.subscribe(&mut sink, cluster, &connection).await?;
        }
        tracing::info!(
            clusters = clusters.len(),
            "edge-state sync: subscribed; resynchronising"
        );
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else { anyhow::bail!("subscription closed") };
                    self.deliver(&msg);
                }
                change = self.changes.recv() => {
                    let Some(change) = change else { return Ok(()) };
                    if let Some(cluster) = self.note(change) {
                        self.subscribe(&mut sink, &cluster, &connection).await?;
                    }
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(CALL_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => anyhow::bail!("Redis did not answer a ping"),
                    }
                }
                // The link made its connection anew (to a new master, after a failover): the
                // subscription goes where it goes. One wait for the whole subscription: a wait
                // made anew at each message would miss a connection replaced in between.
                _ = &mut lost => anyhow::bail!("the Redis connection is being made anew"),
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }

    /// Applies a change to the members; the cluster that joined, to subscribe.
    ///
    /// A cluster that leaves stays subscribed on this connection (its messages find no member
    /// and are dropped; the next connection leaves it out): unsubscribing would put a round trip
    /// in the way of the others' messages for no gain.
    fn note(&mut self, change: Change) -> Option<String> {
        match change {
            Change::Join { id, sync } => {
                let cluster = sync.cluster_id().to_string();
                if let Some(former) = self.members.insert(cluster.clone(), Member { id, sync }) {
                    former.sync.set_synced(false);
                }
                Some(cluster)
            }
            Change::Leave { cluster, id } => {
                if self.members.get(&cluster).is_some_and(|m| m.id == id) {
                    if let Some(gone) = self.members.remove(&cluster) {
                        gone.sync.set_synced(false);
                    }
                }
                None
            }
        }
    }

    /// Subscribes `cluster`'s channels (one per call: redis-rs matches one reply to each call,
    /// and a call naming several channels gets several), then starts its resync.
    async fn subscribe(
        &self,
        sink: &mut PubSubSink,
        cluster: &str,
        connection: &CancellationToken,
    ) -> anyhow::Result<()> {
        let Some(member) = self.members.get(cluster) else {
            return Ok(());
        };
        for channel in member.sync.channels() {
            tokio::time::timeout(CALL_TIMEOUT, sink.subscribe(channel))
                .await
                .map_err(|_| anyhow::anyhow!("subscribing to {channel} timed out"))??;
        }
        // Subscribed first, then read back: whatever changes meanwhile arrives as a message.
        let sync = member.sync.clone();
        tokio::spawn(sync.catch_up(self.resyncs.clone(), connection.child_token()));
        Ok(())
    }

    /// Hands a message to the cluster whose channel it came on.
    fn deliver(&self, msg: &redis::Msg) {
        let name = msg.get_channel_name();
        let Some((cluster, channel)) = Channel::parse(name) else {
            tracing::warn!(
                channel = name,
                "edge-state sync: message on an unknown channel"
            );
            return;
        };
        if let Some(member) = self.members.get(cluster) {
            member.sync.receive(channel, msg.get_payload_bytes());
        }
    }
}
