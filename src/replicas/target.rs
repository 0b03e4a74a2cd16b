//! Where the replicas' Redis is, and the connections to it: one server, the master that
//! Sentinel names, or a Redis Cluster. Everything above ([`super::RedisLink`] and its users)
//! sees one kind of connection, [`Conn`], whichever it is.
//!
//! - **Server.** One connection manager on the URL's server.
//! - **Sentinel.** The master is asked of the sentinels each time a connection is made, so a
//!   connection made after a failover goes to the new master (redis-rs does not move an open
//!   connection by itself). An open connection is left ([`Conn::stale`]) as soon as the sentinels
//!   name another master (the link's check asks one of them, on a connection kept for that), or
//!   the server says it is a replica (`ROLE`), or refuses a command with `READONLY`: a master that
//!   survives its failover keeps taking writes until the sentinels demote it, seconds later, and
//!   replicas on either side of it would not hear each other meanwhile.
//! - **Cluster.** redis-rs's cluster connection routes each command to its slot's node and
//!   follows `MOVED`, `ASK` and topology changes. Every key of one Foghorn cluster shares one hash
//!   tag, so each script's keys are in one slot. Pub/sub is classic `PUBLISH`, which Redis Cluster
//!   delivers on every node: the subscription holds one node, and the next one of the URL's
//!   nodes when that one fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection, PubSub,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, IntoConnectionInfo, RedisFuture, RedisResult, Value};
use tokio::sync::Notify;

use crate::config::{RedisNodes, RedisUrl};

/// Bound on connecting to one node (and on asking the sentinels where the master is).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on one command of the cluster connection, its retries included.
const CLUSTER_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The deployment `redis.url` names.
pub(super) enum Target {
    Server(redis::Client),
    Sentinel(Sentinel),
    Cluster(Cluster),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Server(_) => "Server",
            Target::Sentinel(_) => "Sentinel",
            Target::Cluster(_) => "Cluster",
        })
    }
}

pub(super) struct Sentinel {
    /// redis-rs's sentinel client takes `&mut self` (it caches its sentinel connections).
    client: tokio::sync::Mutex<SentinelClient>,
    master: String,
    /// The master's address last resolved, to log a failover as one.
    current: parking_lot::Mutex<Option<String>>,
    /// The sentinels, for the checks' question (which master they name).
    sentinels: Vec<redis::Client>,
    /// The connection to the sentinel the checks ask, kept between checks.
    asking: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// The sentinel asked next when that connection fails.
    next: AtomicUsize,
}

pub(super) struct Cluster {
    client: ClusterClient,
    /// One client per node of the URL, for the subscription.
    nodes: Vec<redis::Client>,
    /// The node the next subscription tries first.
    next: AtomicUsize,
}

impl Target {
    /// Reads `url`; connects to nothing.
    pub(super) fn new(url: &str) -> anyhow::Result<Target> {
        Ok(match RedisUrl::parse(url)? {
            RedisUrl::Server(url) => Target::Server(redis::Client::open(url)?),
            RedisUrl::Sentinel { nodes, master } => {
                Target::Sentinel(Sentinel::new(&nodes, master)?)
            }
            RedisUrl::Cluster { nodes } => Target::Cluster(Cluster::new(&nodes)?),
        })
    }

    /// A connection for commands (for Sentinel: to the master the sentinels name now).
    pub(super) async fn connect(&self) -> anyhow::Result<Conn> {
        let inner = match self {
            Target::Server(client) => Inner::Server(manager(client.clone()).await?),
            Target::Sentinel(sentinel) => {
                let (client, addr) = sentinel.master().await?;
                return Ok(Conn {
                    inner: Inner::Server(manager(client).await?),
                    stale: Arc::default(),
                    master: Some(addr),
                });
            }
            Target::Cluster(cluster) => Inner::Cluster(
                tokio::time::timeout(
                    CLUSTER_RESPONSE_TIMEOUT,
                    cluster.client.get_async_connection(),
                )
                .await
                .context("connecting to the Redis Cluster timed out")?
                .context("connecting to the Redis Cluster")?,
            ),
        };
        Ok(Conn {
            inner,
            stale: Arc::default(),
            master: None,
        })
    }

    /// A connection for a subscription: the server, the master, or a node of the cluster (the
    /// one after the last tried, so a dead node is left for the next).
    pub(super) async fn pubsub(&self) -> anyhow::Result<PubSub> {
        let client = match self {
            Target::Server(client) => client.clone(),
            Target::Sentinel(sentinel) => sentinel.master().await?.0,
            Target::Cluster(cluster) => {
                let at = cluster.next.fetch_add(1, Ordering::Relaxed) % cluster.nodes.len().max(1);
                cluster.nodes.get(at).context("no cluster node")?.clone()
            }
        };
        Ok(client.get_async_pubsub().await?)
    }

    /// Whether `conn` still reaches a Redis that takes writes: a PING; for Sentinel, `ROLE`
    /// must say master (a demoted one answers PING) and the sentinels must not name another
    /// one; for a cluster, one master answering is enough (a node down costs its slots'
    /// commands, which fail and are retried by their callers, not the whole link).
    pub(super) async fn check(&self, conn: &mut Conn) -> anyhow::Result<()> {
        match (self, &mut conn.inner) {
            (Target::Sentinel(sentinel), Inner::Server(c)) => {
                let role: redis::Role = redis::cmd("ROLE").query_async(c).await?;
                if !matches!(role, redis::Role::Primary { .. }) {
                    tracing::warn!(master = %sentinel.master, "the Redis master was demoted; asking the sentinels again");
                    conn.stale.notify_one();
                    anyhow::bail!("the Redis server is no longer the master");
                }
                // No answer from the sentinels says nothing about the master: only another name
                // does.
                if let (Some(named), Some(ours)) = (sentinel.named().await, &conn.master) {
                    if named != *ours {
                        tracing::warn!(master = %sentinel.master, from = %ours, to = %named, "Redis failover: the sentinels name another master; leaving this one");
                        conn.stale.notify_one();
                        anyhow::bail!("the sentinels name another master");
                    }
                }
            }
            (_, Inner::Server(c)) => {
                redis::cmd("PING").query_async::<()>(c).await?;
            }
            (_, Inner::Cluster(c)) => {
                c.route_command(&redis::cmd("PING"), any_master()).await?;
            }
        }
        Ok(())
    }
}

/// To every master of the cluster, done when one answers (the others still run it).
fn any_master() -> RoutingInfo {
    RoutingInfo::MultiNode((
        MultipleNodeRoutingInfo::AllMasters,
        Some(ResponsePolicy::OneSucceeded),
    ))
}

/// A connection manager on `client`, one attempt per (re)connection: its own retries sleep at
/// least a second (backon's minimum, which `max_delay` does not lower); the link retries sooner.
async fn manager(client: redis::Client) -> RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_number_of_retries(0);
    ConnectionManager::new_with_config(client, config).await
}

impl Sentinel {
    fn new(nodes: &RedisNodes, master: String) -> anyhow::Result<Sentinel> {
        let first = nodes.hosts.first().context("no sentinel")?;
        // The URL's credentials and database are the master's; the sentinels get none.
        let data = nodes.url(first, true).into_connection_info()?;
        let node = SentinelNodeConnectionInfo {
            tls_mode: nodes.tls.then_some(redis::TlsMode::Secure),
            redis_connection_info: Some(data.redis),
        };
        let client = SentinelClient::build(
            nodes.urls(false),
            master.clone(),
            Some(node),
            SentinelServerType::Master,
        )?;
        let sentinels = nodes
            .urls(false)
            .into_iter()
            .map(redis::Client::open)
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(Sentinel {
            client: tokio::sync::Mutex::new(client),
            master,
            current: parking_lot::Mutex::new(None),
            sentinels,
            asking: tokio::sync::Mutex::new(None),
            next: AtomicUsize::new(0),
        })
    }

    /// The master's `HOST:PORT` as a sentinel names it now (one question on a kept connection,
    /// where resolving connects to the master too); `None` when no sentinel answers.
    async fn named(&self) -> Option<String> {
        let mut asking = self.asking.lock().await;
        for _ in 0..self.sentinels.len() {
            if asking.is_none() {
                let at = self.next.fetch_add(1, Ordering::Relaxed) % self.sentinels.len();
                let connect = self.sentinels.get(at)?.get_multiplexed_async_connection();
                *asking = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            let Some(conn) = asking.as_mut() else {
                continue;
            };
            let mut ask = redis::cmd("SENTINEL");
            ask.arg("GET-MASTER-ADDR-BY-NAME").arg(&self.master);
            let named =
                tokio::time::timeout(CONNECT_TIMEOUT, ask.query_async::<(String, u16)>(conn));
            match named.await {
                Ok(Ok((host, port))) => return Some(format!("{host}:{port}")),
                _ => *asking = None,
            }
        }
        None
    }

    /// A client for the master the sentinels name now (checked with `ROLE` by redis-rs), and
    /// its `HOST:PORT`.
    async fn master(&self) -> anyhow::Result<(redis::Client, String)> {
        let client = tokio::time::timeout(CONNECT_TIMEOUT * 2, async {
            self.client.lock().await.async_get_client().await
        })
        .await
        .context("asking the sentinels for the master timed out")?
        .with_context(|| format!("asking the sentinels for master {:?}", self.master))?;
        let addr = client.get_connection_info().addr.to_string();
        let former = self.current.lock().replace(addr.clone());
        match former {
            Some(former) if former != addr => {
                tracing::warn!(master = %self.master, from = %former, to = %addr, "Redis failover: the sentinels name a new master")
            }
            Some(_) => {}
            None => {
                tracing::info!(master = %self.master, at = %addr, "Redis master found through the sentinels")
            }
        }
        Ok((client, addr))
    }
}

impl Cluster {
    fn new(nodes: &RedisNodes) -> anyhow::Result<Cluster> {
        let urls = nodes.urls(true);
        // A call gives up within its caller's bound anyway; retries are for MOVED/ASK and for
        // a node that just failed over, which take milliseconds, not redis-rs's default seconds.
        let client = ClusterClient::builder(urls.clone())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(CLUSTER_RESPONSE_TIMEOUT)
            .retries(4)
            .min_retry_wait(10)
            .max_retry_wait(250)
            .build()?;
        let nodes = urls
            .into_iter()
            .map(redis::Client::open)
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(Cluster {
            client,
            nodes,
            next: AtomicUsize::new(0),
        })
    }
}

/// A connection to the replicas' Redis, cheap to clone (clones share it): to a server, or
/// routed across a cluster.
#[derive(Clone)]
pub struct Conn {
    inner: Inner,
    /// Notified when the server is found to be no longer the master: this connection is to be
    /// left.
    stale: Arc<Notify>,
    /// The master's `HOST:PORT` (Sentinel only).
    master: Option<String>,
}

#[derive(Clone)]
enum Inner {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Resolves once the server is found to be no longer the master (Sentinel; or a
    /// command refused with `READONLY` anywhere).
    pub(super) async fn stale(&self) {
        self.stale.notified().await
    }

    /// Passes `result` on, noting a `READONLY` refusal (also from inside a script).
    fn note<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result {
            let read_only = e.kind() == redis::ErrorKind::ReadOnly
                || e.code() == Some("READONLY")
                || e.detail().is_some_and(|d| d.contains("READONLY"));
            if read_only {
                self.stale.notify_one();
            }
        }
        result
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = match &mut self.inner {
                Inner::Server(c) => c.req_packed_command(cmd).await,
                Inner::Cluster(c) => c.req_packed_command(cmd).await,
            };
            self.note(result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = match &mut self.inner {
                Inner::Server(c) => c.req_packed_commands(pipeline, offset, count).await,
                Inner::Cluster(c) => c.req_packed_commands(pipeline, offset, count).await,
            };
            self.note(result)
        })
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Server(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_make_their_target_or_say_why_not() {
        let target = |url: &str| Target::new(url).map(|t| format!("{t:?}"));
        assert_eq!(
            target("redis://127.0.0.1:6379/").ok().as_deref(),
            Some("Server")
        );
        assert_eq!(
            target("redis+sentinel://127.0.0.1:26379,[::1]:26380/mymaster/2")
                .ok()
                .as_deref(),
            Some("Sentinel")
        );
        assert_eq!(
            target("redis+cluster://u:p@127.0.0.1:7000,127.0.0.1:7001")
                .ok()
                .as_deref(),
            Some("Cluster")
        );
        let why = |url: &str| format!("{:#}", Target::new(url).expect_err(url));
        assert!(why("redis+sentinel://127.0.0.1:26379").contains("MASTER_NAME"));
        // TLS forms make their targets (the connection verifies the server against the system's
        // roots, `SSL_CERT_FILE` included).
        assert_eq!(target("rediss://h:1/").ok().as_deref(), Some("Server"));
        assert_eq!(
            target("rediss+sentinel://h:1/m").ok().as_deref(),
            Some("Sentinel")
        );
        assert_eq!(
            target("rediss+cluster://h:1").ok().as_deref(),
            Some("Cluster")
        );
    }
}
