//! Redis, shared by the replicas of one cluster.
//!
//! The connection itself, established in the background with backoff so Foghorn starts and routes
//! without Redis, and reported by `/ready`, to one server, the master Sentinel names or a Redis
//! Cluster ([`Conn`], whichever it is); the cluster's leader lease ([`Lease`]); and the edge
//! state shared by the replicas ([`Replication`]), every served cluster's on one subscription
//! ([`Subscriber`]).

mod lease;
mod replication;
mod subscriber;
mod target;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use lease::Lease;
pub use replication::{PeerNews, PeerRelay, Replication};
pub use subscriber::Subscriber;
pub use target::Conn;
use target::Target;

/// The prefix of every key and channel of `cluster_id`. `{cluster_id}` is a hash tag: Redis
/// Cluster keeps all of them in one slot, which the scripts need (each touches several keys, and
/// a cluster's lease next to its records costs nothing).
fn key_prefix(cluster_id: &str) -> String {
    format!("foghorn:{{{cluster_id}}}:")
}

/// How often the link checks that Redis answers, and how long an answer may take.
const CHECK_EVERY: Duration = Duration::from_millis(500);
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Failed checks in a row after which the connection is given up and made anew.
const FAILED_CHECKS: u32 = 2;
/// Longest wait between two connection attempts: a Redis that answers again is used within it.
const RECONNECT_MAX: Duration = Duration::from_millis(500);

/// A supervised Redis handle: connected in the background, checked every [`CHECK_EVERY`], and
/// made anew when Redis stops answering, or when a Sentinel master turns out to be demoted, so a
/// Redis that comes back (empty or not, after any outage) or a new master after a failover is
/// used within a second or two.
///
/// Why not leave it to the connection manager alone: redis-rs 0.32 waits a full backoff sequence
/// (seconds, then a minute between attempts with its default factor) before it tries again, and
/// every call meanwhile waits on that attempt, so a ten-second outage left replicas without Redis
/// for minutes; and it reconnects to the address it was given, never to a new master.
#[derive(Clone)]
pub struct RedisLink {
    target: Arc<Target>,
    conn: Arc<ArcSwapOption<Conn>>,
    /// Whether `conn` holds a connection that answered; the sync waits on it to resubscribe as
    /// soon as Redis is back.
    up: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("target", &self.target)
            .field("connected", &self.conn.load().is_some())
            .finish()
    }
}

impl RedisLink {
    /// Reads the URL (`redis://`, `rediss://`, `redis+sentinel://`, `redis+cluster://`, see
    /// [`crate::config::RedisUrl`]); does not connect (see [`RedisLink::run`]).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Ok(RedisLink {
            target: Arc::new(Target::new(url)?),
            conn: Arc::new(ArcSwapOption::empty()),
            up: Arc::new(watch::channel(false).0),
        })
    }

    /// Connects, watches the connection and connects again whenever Redis stops answering (or
    /// a master is demoted), until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        while let Some(conn) = self.connect(&stop).await {
            tracing::info!(deployment = ?self.target, "connected to Redis");
            self.conn.store(Some(Arc::new(conn.clone())));
            self.up.send_replace(true);
            let Some(why) = self.watch(&conn, &stop).await else {
                return;
            };
            tracing::warn!("{why}; connecting again");
            self.conn.store(None);
            self.up.send_replace(false);
        }
    }

    /// Checks `conn` until it is to be left (why) or `stop` fires (`None`).
    async fn watch(&self, conn: &Conn, stop: &CancellationToken) -> Option<&'static str> {
        let mut failed = 0;
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = check.tick() => {}
                _ = conn.stale() => return Some("the Redis server is no longer the master (a failover)"),
                _ = stop.cancelled() => return None,
            }
            failed = if self.ping(CHECK_TIMEOUT).await {
                0
            } else {
                failed + 1
            };
            if failed >= FAILED_CHECKS {
                return Some("Redis stopped answering");
            }
        }
    }

    /// One connection, tried again with capped exponential backoff; `None` once `stop` fires.
    async fn connect(&self, stop: &CancellationToken) -> Option<Conn> {
        let mut delays = crate::retry::backoff(Duration::from_millis(50), RECONNECT_MAX);
        for tries in 0u32.. {
            let attempt = tokio::select! {
                r = self.target.connect() => r,
                _ = stop.cancelled() => return None,
            };
            match attempt {
                Ok(conn) => return Some(conn),
                Err(e) => {
                    let delay = delays.next().unwrap_or(RECONNECT_MAX);
                    // Tried twice a second through an outage: the first attempts warn, the rest log at debug.
                    if tries < 4 {
                        tracing::warn!(error = format!("{e:#}"), retry_in = ?delay, "Redis unreachable");
                    } else {
                        tracing::debug!(error = format!("{e:#}"), retry_in = ?delay, "Redis still unreachable");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => return None,
                    }
                }
            }
        }
        None
    }

    /// Waits until the link has a connection that answered (at once when it has one).
    pub async fn connected(&self) {
        let mut up = self.up.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = up.wait_for(|up| *up).await;
    }

    /// A mark of the link's connection now, for [`RedisLink::lost_since`]. Take it before using
    /// the connection (or one to the same server), then wait on it.
    pub fn mark(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// Resolves once the connection the link had at `mark` is gone (at once when it had none):
    /// it stopped answering or no longer leads to the master. Also when a new connection was
    /// made meanwhile, which a wait for "no connection" started later would miss: a failover
    /// can replace the connection within milliseconds, and whoever used the old one (a lease
    /// renewed on the old master, a subscription to it) must start over.
    pub async fn lost_since(mut mark: watch::Receiver<bool>) {
        // The sender lives as long as the link: `Err` only once nobody can connect anew.
        if !matches!(mark.has_changed(), Ok(false)) || !*mark.borrow() {
            return;
        }
        let _ = mark.changed().await;
    }

    /// A connection of its own for a subscription (to the current master, or to a cluster node
    /// other than the one tried last).
    pub async fn pubsub(&self) -> anyhow::Result<redis::aio::PubSub> {
        self.target.pubsub().await
    }

    /// The connection while Redis answers; `None` while it is being made (anew).
    pub fn connection(&self) -> Option<Conn> {
        self.conn.load_full().map(|c| (*c).clone())
    }

    /// One check (a PING; for Sentinel, that the server is still the master), bounded by
    /// `timeout`; false when not connected or not answering.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let Some(mut conn) = self.connection() else {
            return false;
        };
        matches!(
            tokio::time::timeout(timeout, self.target.check(&mut conn)).await,
            Ok(Ok(()))
        )
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::RedisLink;

    #[test]
    fn a_connection_replaced_before_the_wait_counts_as_lost() {
        // Never connected (nothing runs the link): the test moves its state by hand.
        let link = RedisLink::new("redis://127.0.0.1:1").expect("a URL");
        assert!(
            RedisLink::lost_since(link.mark()).now_or_never().is_some(),
            "no connection at the mark: lost at once"
        );

        link.up.send_replace(true);
        let mark = link.mark();
        assert!(
            RedisLink::lost_since(link.mark()).now_or_never().is_none(),
            "the connection of the mark is still there"
        );
        // A failover made the connection anew before anyone waited: gone, then back.
        link.up.send_replace(false);
        link.up.send_replace(true);
        assert!(
            RedisLink::lost_since(mark).now_or_never().is_some(),
            "the connection of the mark was replaced"
        );

        let mark = link.mark();
        let mut lost = Box::pin(RedisLink::lost_since(mark));
        assert!((&mut lost).now_or_never().is_none());
        link.up.send_replace(false);
        assert!(lost.now_or_never().is_some(), "lost while waiting");
    }
}
