//! Edge state shared by the replicas of one cluster through Redis.
//!
//! Each replica announces the edges it holds; the others fold the announcements into their own
//! [`EdgeState`], so any replica routes to any edge of the cluster from in-process state:
//!
//! - **Writer.** Local changes (attach, stats, mode, detach) mark the node in the edge state's
//!   outbox; the writer takes the outbox and, per node, runs one script that stores the edge's
//!   record in `foghorn:{cluster}:edge:{node}` (TTL: the liveness window), indexes it, and
//!   publishes it on `foghorn:{cluster}:events`. A node changing many times between two runs is
//!   written once, with its latest state. Scripts are sent concurrently, so one connection
//!   pipelines them.
//! - **Fencing.** A session's first write takes a token from `foghorn:{cluster}:seq`, higher than
//!   any token the node had; a write under a lower token than the stored one is refused, and that
//!   session is closed (`SESSION_REPLACED`). Replicas apply an announcement only if its token is
//!   not lower than the one they know, so of two sessions of a node, the newest lives.
//! - **Subscriber.** Applies the other replicas' announcements as they come. Each time it
//!   (re)subscribes, it resynchronises: the local edges are announced again (Redis may have lost
//!   them), the other replicas' edges are read back from the index, and the weights are reloaded.
//!   A ping every second notices a Redis that went away; until it is back, edges held elsewhere
//!   age out by the liveness rule and local routing goes on.
//!
//! Every key but the token counter expires with the liveness window; the counter expires a day
//! after the last write (a cluster with live edges writes every stats interval).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::RedisLink;
use crate::edge::{Announcement, EdgeRecord, EdgeState};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::routing::{Router, Weights};

/// Stores an edge's record under its session's fencing token and publishes it.
/// KEYS: edge hash, index, token counter. ARGV: token (0: take a new one), replica, node, record,
/// TTL ms, channel. Returns the token, or minus the stored token when a newer session holds it.
const PUT: &str = r#"
local held = tonumber(redis.call('HGET', KEYS[1], 'token') or '0')
local token = tonumber(ARGV[1])
if token == 0 then
    token = redis.call('INCR', KEYS[3])
    if token <= held then
        token = held + 1
        redis.call('SET', KEYS[3], token)
    end
elseif token < held then
    return -held
elseif tonumber(redis.call('GET', KEYS[3]) or '0') < token then
    redis.call('SET', KEYS[3], token)
end
redis.call('PEXPIRE', KEYS[3], 86400000)
redis.call('HSET', KEYS[1], 'token', token, 'replica', ARGV[2], 'record', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[6], 'P ' .. token .. ' ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
return token
"#;

/// Removes an edge's record if still under `token`, and publishes the release either way.
/// KEYS: edge hash, index. ARGV: token, replica, node, channel.
const RELEASE: &str = r#"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', KEYS[2], ARGV[3])
end
redis.call('PUBLISH', ARGV[4], 'R ' .. ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
return 1
"#;

/// Bound on each Redis call of the sync: a hung Redis must not hold announcements up for long.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the subscriber checks that Redis still answers.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Announcements written concurrently per batch (one connection pipelines them).
const BATCH: usize = 256;

/// The key names of one cluster; `{cluster}` is a hash tag, so Redis Cluster keeps them in one
/// slot (the scripts touch several).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    pub index: String,
    pub seq: String,
    pub channel: String,
}

impl Keys {
    pub fn new(cluster_id: &str) -> Keys {
        let prefix = format!("foghorn:{{{cluster_id}}}:");
        Keys {
            index: format!("{prefix}edges"),
            seq: format!("{prefix}seq"),
            channel: format!("{prefix}events"),
            prefix,
        }
    }

    pub fn edge(&self, node_id: &str) -> String {
        format!("{}edge:{node_id}", self.prefix)
    }
}

/// One message on the cluster's channel.
#[derive(Debug, PartialEq)]
enum Event<'a> {
    /// `P {token} {replica} {node} {record json}`
    Held {
        token: u64,
        replica: &'a str,
        node_id: &'a str,
        record: &'a str,
    },
    /// `R {token} {replica} {node}`
    Released {
        token: u64,
        replica: &'a str,
        node_id: &'a str,
    },
    /// `W {weights json}`
    Weights(&'a str),
}

impl<'a> Event<'a> {
    fn parse(msg: &'a str) -> Option<Event<'a>> {
        if let Some(json) = msg.strip_prefix("W ") {
            return Some(Event::Weights(json));
        }
        let mut parts = msg.splitn(5, ' ');
        let kind = parts.next()?;
        let token = parts.next()?.parse().ok()?;
        let replica = parts.next()?;
        let node_id = parts.next()?;
        match (kind, parts.next()) {
            ("P", Some(record)) => Some(Event::Held {
                token,
                replica,
                node_id,
                record,
            }),
            ("R", None) => Some(Event::Released {
                token,
                replica,
                node_id,
            }),
            _ => None,
        }
    }
}

/// This replica's side of the edge-state sync.
#[derive(Debug, Clone)]
pub struct Replication {
    link: RedisLink,
    edges: Arc<EdgeState>,
    router: Arc<Router>,
    registry: Registry,
    metrics: Arc<Metrics>,
    cluster_id: String,
    /// Random per process; names this replica in records and announcements.
    replica: String,
    keys: Keys,
    ttl_ms: String,
    put: Arc<Script>,
    release: Arc<Script>,
    /// Subscribed and resynchronised (false while Redis is away).
    synced: Arc<AtomicBool>,
}

impl Replication {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        link: RedisLink,
        edges: Arc<EdgeState>,
        router: Arc<Router>,
        registry: Registry,
        metrics: Arc<Metrics>,
        cluster_id: &str,
        replica: &str,
        ttl: Duration,
    ) -> Replication {
        Replication {
            link,
            edges,
            router,
            registry,
            metrics,
            cluster_id: cluster_id.to_string(),
            replica: replica.to_string(),
            keys: Keys::new(cluster_id),
            ttl_ms: ttl.as_millis().to_string(),
            put: Arc::new(Script::new(PUT)),
            release: Arc::new(Script::new(RELEASE)),
            synced: Arc::default(),
        }
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether the sync is live: subscribed to the cluster's channel and resynchronised.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
        self.metrics.replication_synced.set(i64::from(synced));
    }

    /// Writes local changes until `stop`, then writes what is left once (the releases of the
    /// sessions that shutdown closed) and returns.
    pub async fn write(self, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                _ = self.edges.outbox_filled() => false,
                _ = stop.cancelled() => true,
            };
            let nodes = self.edges.take_outbox();
            if let Some(conn) = self.link.connection() {
                for chunk in nodes.chunks(BATCH) {
                    let writes = chunk.iter().map(|node| self.announce(conn.clone(), node));
                    futures_util::future::join_all(writes).await;
                }
            }
            // Without a connection the changes are dropped: the resync after Redis returns
            // announces every local edge again.
            if stopping {
                return;
            }
        }
    }

    /// Writes the current announcement of one node.
    async fn announce(&self, mut conn: ConnectionManager, node_id: &str) {
        let Some(announcement) = self.edges.announcement(node_id) else {
            return;
        };
        let key = self.keys.edge(node_id);
        match announcement {
            Announcement::Held {
                session_id,
                token,
                record,
            } => {
                let record = serde_json::to_string(&record).expect("edge records serialize");
                let mut call = self.put.key(&key);
                call.key(&self.keys.index)
                    .key(&self.keys.seq)
                    .arg(token)
                    .arg(&self.replica)
                    .arg(node_id)
                    .arg(record)
                    .arg(&self.ttl_ms)
                    .arg(&self.keys.channel);
                let Some(stored) = self.call::<i64>(call.invoke_async(&mut conn)).await else {
                    return;
                };
                if stored < 0 {
                    tracing::info!(%node_id, "a newer session of this edge holds it on another replica; closing ours");
                    self.edges.fence_lost(node_id, session_id);
                } else if !self.edges.set_token(node_id, session_id, stored as u64) {
                    // The session ended while its first record was being written.
                    self.release_record(&mut conn, &key, node_id, stored as u64)
                        .await;
                }
            }
            Announcement::Released { token } => {
                self.release_record(&mut conn, &key, node_id, token).await
            }
        }
    }

    async fn release_record(
        &self,
        conn: &mut ConnectionManager,
        key: &str,
        node_id: &str,
        token: u64,
    ) {
        let mut call = self.release.key(key);
        call.key(&self.keys.index)
            .arg(token)
            .arg(&self.replica)
            .arg(node_id)
            .arg(&self.keys.channel);
        self.call::<i64>(call.invoke_async(conn)).await;
    }

    /// Runs one call of the sync under [`CALL_TIMEOUT`], counting it.
    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(Ok(v)) => {
                self.metrics.replication_sent.inc();
                Some(v)
            }
            Ok(Err(e)) => {
                self.metrics.replication_errors.inc();
                tracing::debug!(error = %e, "edge-state sync: Redis refused a write");
                None
            }
            Err(_) => {
                self.metrics.replication_errors.inc();
                None
            }
        }
    }

    /// Announces a weights change to the other replicas (already stored in the registry).
    pub async fn announce_weights(&self, weights: &Weights) {
        let Some(mut conn) = self.link.connection() else {
            return;
        };
        let msg = format!(
            "W {}",
            serde_json::to_string(weights).expect("weights serialize")
        );
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.keys.channel).arg(msg);
        self.call(publish.query_async::<i64>(&mut conn)).await;
    }

    /// Subscribes, resynchronises and applies announcements until `stop`; starts over (with
    /// backoff) whenever Redis goes away.
    pub async fn subscribe(self, stop: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.follow(&stop).await {
                Ok(()) => return,
                Err(e) => {
                    self.set_synced(false);
                    tracing::warn!(error = %e, retry_in = ?delay, "edge-state sync: Redis unavailable; routing from local state");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// One subscription: returns `Ok` on `stop`, `Err` when Redis went away.
    async fn follow(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        let connect = async {
            let mut pubsub = self.link.client().get_async_pubsub().await?;
            pubsub.subscribe(&self.keys.channel).await?;
            redis::RedisResult::Ok(pubsub)
        };
        let pubsub = tokio::time::timeout(CALL_TIMEOUT, connect)
            .await
            .map_err(|_| anyhow::anyhow!("subscribing timed out"))??;
        let (mut sink, mut messages) = pubsub.split();
        // Subscribed first, then read back: whatever changes meanwhile arrives as a message.
        self.resync().await?;
        self.set_synced(true);
        tracing::info!(replica = %self.replica, "edge-state sync: subscribed and resynchronised");
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else { anyhow::bail!("subscription closed") };
                    let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
                    match std::str::from_utf8(&payload).ok().and_then(Event::parse) {
                        Some(event) => self.apply(event),
                        None => tracing::warn!("edge-state sync: unreadable message ignored"),
                    }
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(CALL_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => anyhow::bail!("Redis did not answer a ping"),
                    }
                }
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }

    fn apply(&self, event: Event<'_>) {
        match event {
            Event::Held { replica, .. } | Event::Released { replica, .. }
                if replica == self.replica => {}
            Event::Held {
                token,
                replica,
                node_id,
                record,
            } => match serde_json::from_str::<EdgeRecord>(record) {
                Ok(record) => {
                    self.metrics.replication_received.inc();
                    self.edges.apply_remote(node_id, replica, token, record);
                }
                Err(e) => {
                    tracing::warn!(%node_id, error = %e, "edge-state sync: bad record ignored")
                }
            },
            Event::Released { token, node_id, .. } => {
                self.metrics.replication_received.inc();
                self.edges.remote_released(node_id, token);
            }
            Event::Weights(json) => match serde_json::from_str::<Weights>(json) {
                Ok(weights) if weights != self.router.weights() => {
                    tracing::info!(?weights, "weights changed on another replica");
                    self.router.set_weights(weights);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "edge-state sync: bad weights ignored"),
            },
        }
    }

    /// Announces every local edge again, reads back the other replicas' edges, reloads weights.
    async fn resync(&self) -> anyhow::Result<()> {
        self.edges.announce_all();
        let mut conn = self
            .link
            .connection()
            .ok_or_else(|| anyhow::anyhow!("not connected"))?;
        let nodes: Vec<String> = tokio::time::timeout(
            CALL_TIMEOUT,
            redis::cmd("ZRANGE")
                .arg(&self.keys.index)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn),
        )
        .await??;
        let mut alive = HashSet::new();
        for chunk in nodes.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for node_id in chunk {
                pipe.cmd("HMGET")
                    .arg(self.keys.edge(node_id))
                    .arg("token")
                    .arg("replica")
                    .arg("record");
            }
            type Row = (Option<u64>, Option<String>, Option<String>);
            let rows: Vec<Row> =
                tokio::time::timeout(CALL_TIMEOUT, pipe.query_async(&mut conn)).await??;
            for (node_id, row) in chunk.iter().zip(rows) {
                let (Some(token), Some(replica), Some(record)) = row else {
                    continue; // expired since the index was read
                };
                if replica == self.replica {
                    continue;
                }
                alive.insert(node_id.clone());
                self.apply(Event::Held {
                    token,
                    replica: &replica,
                    node_id,
                    record: &record,
                });
            }
        }
        self.edges.retain_remote(&alive);
        match self.registry.cluster_weights(&self.cluster_id).await {
            Ok(Some(weights)) if weights != self.router.weights() => {
                self.router.set_weights(weights)
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not reload the weights"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_reject_garbage() {
        assert_eq!(
            Event::parse(r#"P 7 r1 node1 {"a": 1}"#),
            Some(Event::Held {
                token: 7,
                replica: "r1",
                node_id: "node1",
                record: r#"{"a": 1}"#
            })
        );
        assert_eq!(
            Event::parse("R 7 r1 node1"),
            Some(Event::Released {
                token: 7,
                replica: "r1",
                node_id: "node1"
            })
        );
        assert_eq!(
            Event::parse(r#"W {"cpu":1}"#),
            Some(Event::Weights(r#"{"cpu":1}"#))
        );
        for bad in [
            "",
            "P",
            "P x r n {}",
            "P 1 r n",
            "R 1 r n extra",
            "X 1 r n",
            "P -1 r n {}",
        ] {
            assert_eq!(Event::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let k = Keys::new("eu-1");
        for key in [
            k.edge("n1"),
            k.index.clone(),
            k.seq.clone(),
            k.channel.clone(),
        ] {
            assert!(key.starts_with("foghorn:{eu-1}:"), "{key}");
        }
    }
}
