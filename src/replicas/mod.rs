//! Redis, shared by the replicas of one cluster.
//!
//! The connection itself, established in the background with backoff so Foghorn starts and routes
//! without Redis, and reported by `/ready`; the cluster's leader lease ([`Lease`]); and the edge
//! state shared by the replicas ([`Replication`]), every served cluster's on one subscription
//! ([`Subscriber`]).

mod lease;
mod replication;
mod subscriber;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use lease::Lease;
pub use replication::{PeerNews, PeerRelay, Replication};
pub use subscriber::Subscriber;

/// How often the link checks that Redis answers, and how long an answer may take.
const CHECK_EVERY: Duration = Duration::from_millis(500);
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Failed checks in a row after which the connection is given up and made anew.
const FAILED_CHECKS: u32 = 2;
/// Longest wait between two connection attempts: a Redis that answers again is used within it.
const RECONNECT_MAX: Duration = Duration::from_millis(500);

/// A supervised Redis handle: connected in the background, checked every [`CHECK_EVERY`], and
/// made anew when Redis stops answering, so a Redis that comes back (empty or not, after any
/// outage) is used again within a second.
///
/// Why not leave it to the connection manager alone: redis-rs 0.32 waits a full backoff sequence
/// (seconds, then a minute between attempts with its default factor) before it tries again, and
/// every call meanwhile waits on that attempt, so a ten-second outage left replicas without Redis
/// for minutes.
#[derive(Clone)]
pub struct RedisLink {
    client: redis::Client,
    conn: Arc<ArcSwapOption<ConnectionManager>>,
    /// Whether `conn` holds a connection that answered; the sync waits on it to resubscribe as
    /// soon as Redis is back.
    up: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("connected", &self.conn.load().is_some())
            .finish()
    }
}

impl RedisLink {
    /// Parses the URL; does not connect (see [`RedisLink::run`]).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Ok(RedisLink {
            client: redis::Client::open(url)?,
            conn: Arc::new(ArcSwapOption::empty()),
            up: Arc::new(watch::channel(false).0),
        })
    }

    /// Connects, watches the connection and connects again whenever Redis stops answering,
    /// until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        while let Some(conn) = self.connect(&stop).await {
            tracing::info!("connected to Redis");
            self.conn.store(Some(Arc::new(conn)));
            self.up.send_replace(true);
            let mut failed = 0;
            let mut check = tokio::time::interval(CHECK_EVERY);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while failed < FAILED_CHECKS {
                tokio::select! {
                    _ = check.tick() => {}
                    _ = stop.cancelled() => return,
                }
                failed = if self.ping(CHECK_TIMEOUT).await {
                    0
                } else {
                    failed + 1
                };
            }
            tracing::warn!("Redis stopped answering; connecting again");
            self.conn.store(None);
            self.up.send_replace(false);
        }
    }

    /// One connection, tried again with capped exponential backoff; `None` once `stop` fires.
    async fn connect(&self, stop: &CancellationToken) -> Option<ConnectionManager> {
        // One attempt per call, here and when the manager reconnects a dropped connection: its
        // retries sleep at least a second (backon's minimum, which `max_delay` does not lower),
        // and this loop and the checks in `run` retry sooner.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CHECK_TIMEOUT)
            .set_number_of_retries(0);
        let mut delays = crate::retry::backoff(Duration::from_millis(50), RECONNECT_MAX);
        for tries in 0u32.. {
            let attempt = tokio::select! {
                r = ConnectionManager::new_with_config(self.client.clone(), config.clone()) => r,
                _ = stop.cancelled() => return None,
            };
            match attempt {
                Ok(conn) => return Some(conn),
                Err(e) => {
                    let delay = delays.next().unwrap_or(RECONNECT_MAX);
                    // Tried twice a second through an outage: the first attempts warn, the rest log at debug.
                    if tries < 4 {
                        tracing::warn!(error = %e, retry_in = ?delay, "Redis unreachable");
                    } else {
                        tracing::debug!(error = %e, retry_in = ?delay, "Redis still unreachable");
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

    /// The client, for connections of their own (subscriptions).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The connection while Redis answers; `None` while it is being made (anew).
    pub fn connection(&self) -> Option<ConnectionManager> {
        self.conn.load_full().map(|c| (*c).clone())
    }

    /// One PING, bounded by `timeout`; false when not connected or not answering.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let Some(mut conn) = self.connection() else {
            return false;
        };
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
    }
}
