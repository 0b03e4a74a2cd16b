//! Redis, shared by the replicas of one cluster.
//!
//! For now this is the connection itself: established in the background with backoff, so Foghorn
//! starts and routes without Redis, and reported by `/ready`. Edge-state sync and the leader lease
//! build on it.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

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

    /// One PING, bounded by `timeout`; false when not connected or not answering.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let Some(conn) = self.conn.load_full() else {
            return false;
        };
        let mut conn = (*conn).clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
    }
}
