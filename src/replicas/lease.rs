//! The cluster's leader lease: one replica at a time holds `foghorn:{cluster}:leader` (the hash tag
//! keeps a cluster's keys in one Redis Cluster slot). Taking and renewing are one atomic script,
//! releasing is a compare-and-delete, so a replica never extends or drops a lease it lost.
//!
//! A holder counts itself leader only until `ttl − margin` after it *sent* its last successful
//! renewal: the key expires `ttl` after Redis ran the script, which is later, so two replicas never
//! both believe they lead (clock rates aside, which the margin covers).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::RedisLink;
use crate::leadership::Leadership;
use crate::metrics::Metrics;

/// Take the lease if free, renew it if ours; 1 when held afterwards.
const HOLD: &str = r#"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
elseif not current then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"#;

/// Delete the lease only if ours.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// One replica's claim on its cluster's leader lease.
#[derive(Debug)]
pub struct Lease {
    link: RedisLink,
    key: String,
    holder: String,
    ttl: Duration,
    margin: Duration,
    /// Leader until then (after the last successful hold).
    valid_until: Option<Instant>,
}

impl Lease {
    /// `holder` must be unique per replica (a fresh random id per process).
    pub fn new(link: RedisLink, cluster_id: &str, holder: &str, ttl: Duration) -> Lease {
        Lease {
            link,
            key: format!("{}leader", super::key_prefix(cluster_id)),
            holder: holder.to_string(),
            ttl,
            margin: ttl / 5,
            valid_until: None,
        }
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.valid_until.is_some_and(|t| Instant::now() < t)
    }

    /// Holds the lease until `stop` (renewing five times per TTL, so a missed renewal or two
    /// does not lose it), publishing the outcome to `leadership`; then releases it.
    pub async fn keep(
        mut self,
        leadership: Arc<Leadership>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) {
        let mut was = false;
        loop {
            let mark = self.link.mark();
            let leads = self.hold().await;
            leadership.set(self.valid_until);
            metrics.leader.set(i64::from(leads));
            if leads != was {
                if leads {
                    tracing::info!(holder = %self.holder, "this replica is now the cluster leader");
                } else {
                    tracing::warn!(holder = %self.holder, "this replica is no longer the cluster leader");
                }
                was = leads;
            }
            // A leader renews five times per TTL; a replica that does not lead asks at least
            // twice a second, so a cluster whose Redis came back (empty, the lease gone) has a
            // leader again at once, not a renewal period later.
            let next = if leads {
                self.ttl / 5
            } else {
                (self.ttl / 5).min(Duration::from_millis(500))
            };
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                // A leader whose connection is made anew (Redis gone, or a failover: the new
                // master may lack the last renewals, and another replica may take the lease
                // there) holds again now, on the new connection or none, not at its next
                // renewal; also when the new connection was made before this wait began.
                _ = RedisLink::lost_since(mark), if leads => {}
                _ = stop.cancelled() => break,
            }
        }
        leadership.set(None);
        metrics.leader.set(0);
        self.release().await;
    }

    /// Takes or renews the lease; returns whether this replica leads. Redis unreachable counts
    /// as not leading (the lease then runs out by itself and another replica can take it).
    pub async fn hold(&mut self) -> bool {
        let sent = Instant::now();
        let Some(mut conn) = self.link.connection() else {
            self.valid_until = None;
            return false;
        };
        let ttl_ms = self.ttl.as_millis().to_string();
        let script = redis::Script::new(HOLD);
        let mut call = script.key(&self.key);
        call.arg(&self.holder).arg(&ttl_ms);
        let held = call.invoke_async::<i64>(&mut conn);
        match tokio::time::timeout(self.margin, held).await {
            Ok(Ok(1)) => self.valid_until = Some(sent + self.ttl - self.margin),
            Ok(Ok(_)) => self.valid_until = None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "leader lease: Redis refused");
                self.valid_until = None;
            }
            Err(_) => self.valid_until = None,
        }
        self.is_leader()
    }

    /// Gives the lease up if held (graceful shutdown), so another replica takes over at once.
    pub async fn release(&mut self) {
        self.valid_until = None;
        if let Some(mut conn) = self.link.connection() {
            let script = redis::Script::new(RELEASE);
            let mut call = script.key(&self.key);
            call.arg(&self.holder);
            let released = call.invoke_async::<i64>(&mut conn);
            let _ = tokio::time::timeout(self.margin, released).await;
        }
    }
}
