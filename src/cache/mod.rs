//! Redis, shared by the replicas of one cluster.
//!
//! The connection itself, established in the background with backoff so Foghorn starts and routes
//! without Redis, and reported by `/ready`; the cluster's leader lease ([`Lease`]); and the edge
//! state shared by the replicas ([`Replication`]).

mod lease;
mod replication;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

pub use lease::{Leadership, Lease};
pub use replication::{PeerNews, PeerRelay, Replication};

/// A lazily (re)connected Redis handle.
#[derive(Clone)]
pub struct RedisLink {
    client: redis::Client,
    conn: Arc<ArcSwapOption<ConnectionManager>>,
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
        })
    }

    /// Connects, retrying with capped exponential backoff until it succeeds or `stop` fires.
    /// The connection manager then reconnects by itself.
    pub async fn run(self, stop: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        loop {
            let attempt = tokio::select! {
                r = ConnectionManager::new(self.client.clone()) => r,
                _ = stop.cancelled() => return,
            };
            match attempt {
                Ok(conn) => {
                    tracing::info!("connected to Redis");
                    self.conn.store(Some(Arc::new(conn)));
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "Redis unreachable");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The client, for connections of their own (subscriptions).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The connection, once established (the manager reconnects by itself after that).
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
