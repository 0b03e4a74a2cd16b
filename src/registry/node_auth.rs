//! Node authentication in batches.
//!
//! A Foghorn that restarts, or a network that comes back, has every edge reconnect at once, each
//! with its node credential: one read of its row and one write of what it reports now. One query
//! each made the registry most of a reconnect's cost (on SQLite, every query is also a hand-off to
//! sqlx's worker thread). So credentials are checked in batches: whoever asks while no batch runs
//! starts a drain task; everyone who asks meanwhile waits in the queue and goes in the next batch,
//! read with one `SELECT ... IN` and recorded with one `UPDATE ... FROM (VALUES ...)`. A lone
//! reconnect is a batch of one and waits for nothing; batches grow only as fast as edges arrive
//! while one is running.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::enrollment::{Node, NodeAuthError, NodeProfile, NodeWithCredential, NODE_COLUMNS};
use super::{now_ms, Backend, Registry, RegistryError};
use crate::net::canonical_ip;
use crate::secret;

/// Most credentials checked by one query (a power of two, see [`padded`]). Nine parameters a row
/// in the `UPDATE`: well under SQLite's 32,766 and PostgreSQL's 65,535.
const MAX_BATCH: usize = 512;

/// A reconnecting node's claim and what it reports.
struct Claim {
    node_id: String,
    credential: String,
    cluster_id: String,
    peer_ip: Option<IpAddr>,
    profile: NodeProfile,
}

struct Waiting {
    claim: Claim,
    reply: oneshot::Sender<Result<Node, NodeAuthError>>,
}

/// The claims waiting for the next batch, and whether a drain task runs.
#[derive(Default)]
pub(super) struct AuthQueue(Mutex<Queue>);

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    draining: bool,
}

impl fmt::Debug for AuthQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queue = self.0.lock();
        f.debug_struct("AuthQueue")
            .field("waiting", &queue.waiting.len())
            .field("draining", &queue.draining)
            .finish()
    }
}

/// A drain that has not ended normally (its task panicked or was dropped): its claims are told
/// the registry failed, and the next claim starts a new drain.
struct Draining<'a>(&'a AuthQueue);

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        let waiting = {
            let mut queue = self.0 .0.lock();
            queue.draining = false;
            std::mem::take(&mut queue.waiting)
        };
        drop(waiting); // each caller gets `WorkerCrashed`
    }
}

impl Registry {
    /// Authenticates a reconnecting node of `cluster_id` and records what it now reports.
    pub async fn authenticate_node(
        &self,
        node_id: &str,
        credential: &str,
        cluster_id: &str,
        peer_ip: Option<IpAddr>,
        profile: &NodeProfile,
    ) -> Result<Node, NodeAuthError> {
        let (reply, answer) = oneshot::channel();
        let claim = Claim {
            node_id: node_id.to_string(),
            credential: credential.to_string(),
            cluster_id: cluster_id.to_string(),
            peer_ip,
            profile: profile.clone(),
        };
        let lead = {
            let mut queue = self.auth.0.lock();
            queue.waiting.push(Waiting { claim, reply });
            !std::mem::replace(&mut queue.draining, true)
        };
        if lead {
            // A task of its own: the batch must finish for everyone in it even if this caller
            // goes away (its edge hung up).
            let registry = self.clone();
            tokio::spawn(async move { registry.drain_claims().await });
        }
        answer.await.map_err(|_| {
            NodeAuthError::Registry(RegistryError::Unavailable(sqlx::Error::WorkerCrashed))
        })?
    }

    async fn drain_claims(&self) {
        let draining = Draining(&self.auth);
        loop {
            let mut batch = {
                let mut queue = self.auth.0.lock();
                if queue.waiting.is_empty() {
                    // Ended under the lock that queues claims: the next one leads a new drain.
                    queue.draining = false;
                    drop(queue);
                    std::mem::forget(draining);
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            while !batch.is_empty() {
                let rest = batch.split_off(batch.len().min(MAX_BATCH));
                self.check_claims(batch).await;
                batch = rest;
            }
        }
    }

    /// Checks one batch of claims and answers each.
    async fn check_claims(&self, batch: Vec<Waiting>) {
        let ids: Vec<&str> = batch.iter().map(|w| w.claim.node_id.as_str()).collect();
        let rows = match self.nodes_with_credentials(&ids).await {
            Ok(rows) => rows,
            Err(e) => return fail_all(batch.into_iter().map(|w| w.reply), &e),
        };
        let rows: HashMap<&str, &NodeWithCredential> =
            rows.iter().map(|r| (r.node.node_id.as_str(), r)).collect();
        let now = now_ms();
        let mut admitted = Vec::with_capacity(batch.len());
        for Waiting { claim, reply } in batch {
            match check(&claim, rows.get(claim.node_id.as_str()).copied(), now) {
                Ok(node) => admitted.push((reply, node)),
                Err(refused) => {
                    let _ = reply.send(Err(refused));
                }
            }
        }
        if admitted.is_empty() {
            return;
        }
        let nodes: Vec<&Node> = admitted.iter().map(|(_, node)| node).collect();
        match self.record_seen(&nodes).await {
            Ok(()) => {
                for (reply, node) in admitted {
                    let _ = reply.send(Ok(node));
                }
            }
            Err(e) => fail_all(admitted.into_iter().map(|(reply, _)| reply), &e),
        }
    }

    /// The rows of these nodes with their credential hashes (those that exist).
    async fn nodes_with_credentials(
        &self,
        ids: &[&str],
    ) -> Result<Vec<NodeWithCredential>, sqlx::Error> {
        let n = padded(ids.len());
        let sql = format!(
            "SELECT {NODE_COLUMNS}, credential_hash FROM nodes WHERE node_id IN ({})",
            placeholders(self.backend, n, 1)
        );
        let mut query = sqlx::query_as(&sql);
        for i in 0..n {
            query = query.bind(ids[i.min(ids.len() - 1)]);
        }
        query.fetch_all(&self.pool).await
    }

    /// Writes what the admitted nodes report now, in one statement.
    async fn record_seen(&self, nodes: &[&Node]) -> Result<(), sqlx::Error> {
        let n = padded(nodes.len());
        let sql = format!(
            "UPDATE nodes SET external_ip = v.column2, host_fingerprint = v.column3, \
             capabilities = v.column4, public_base_url = v.column5, cpu_cores = v.column6, \
             ram_bytes = v.column7, disk_bytes = v.column8, last_seen_at = v.column9 \
             FROM (VALUES {}) AS v WHERE nodes.node_id = v.column1",
            placeholders(self.backend, n, 9)
        );
        let mut query = sqlx::query(&sql);
        for i in 0..n {
            // Padding repeats the last row: the same values written to the same node.
            let node = nodes[i.min(nodes.len() - 1)];
            query = query
                .bind(&node.node_id)
                .bind(&node.external_ip)
                .bind(&node.host_fingerprint)
                .bind(&node.capabilities)
                .bind(&node.public_base_url)
                .bind(node.cpu_cores)
                .bind(node.ram_bytes)
                .bind(node.disk_bytes)
                .bind(node.last_seen_at);
        }
        query.execute(&self.pool).await.map(drop)
    }
}

/// The node a claim authenticates, as it is recorded now, or why not.
fn check(claim: &Claim, row: Option<&NodeWithCredential>, now: i64) -> Result<Node, NodeAuthError> {
    // Hash the presented credential even for an unknown node so timing does not tell them apart.
    let stored = row.and_then(|r| r.credential_hash.as_deref());
    if !secret::verify(&claim.credential, stored.unwrap_or("")) {
        return Err(NodeAuthError::BadCredential);
    }
    let Some(row) = row else {
        return Err(NodeAuthError::BadCredential);
    };
    let mut node = row.node.clone();
    if node.cluster_id != claim.cluster_id {
        return Err(NodeAuthError::WrongCluster(node.cluster_id));
    }
    if node.status != "active" {
        return Err(NodeAuthError::NotActive(node.status));
    }
    let profile = &claim.profile;
    node.external_ip = claim.peer_ip.map(|ip| canonical_ip(ip).to_string());
    node.host_fingerprint.clone_from(&profile.host_fingerprint);
    node.capabilities.clone_from(&profile.capabilities);
    node.public_base_url.clone_from(&profile.public_base_url);
    node.cpu_cores = profile.cpu_cores;
    node.ram_bytes = profile.ram_bytes;
    node.disk_bytes = profile.disk_bytes;
    node.last_seen_at = Some(now);
    Ok(node)
}

/// Tells every waiter of a batch that the registry failed.
fn fail_all(
    replies: impl Iterator<Item = oneshot::Sender<Result<Node, NodeAuthError>>>,
    e: &sqlx::Error,
) {
    tracing::warn!(error = %e, "node authentication batch failed in the registry");
    for reply in replies {
        let failed = sqlx::Error::Io(std::io::Error::other(e.to_string()));
        let _ = reply.send(Err(NodeAuthError::Registry(RegistryError::Unavailable(
            failed,
        ))));
    }
}

/// The number of rows a batch of `n` is padded to (repeating its last row): a few statement
/// shapes, each prepared once per connection, rather than one per batch size.
fn padded(n: usize) -> usize {
    n.next_power_of_two().min(MAX_BATCH)
}

/// `$1, $2, ...` for `rows` rows of `width` parameters: one list when `width` is 1, else
/// parenthesised rows. SQLite gets anonymous `?`s in the same order: it keeps `$N` as a named
/// parameter, looked up by a linear search of the statement's names when parsed and when bound,
/// quadratic in a statement of thousands of them.
fn placeholders(backend: Backend, rows: usize, width: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(rows * width * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        if width > 1 {
            sql.push('(');
        }
        for col in 0..width {
            if col > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Postgres => {
                    let _ = write!(sql, "${}", row * width + col + 1);
                }
                Backend::Sqlite => sql.push('?'),
            }
        }
        if width > 1 {
            sql.push(')');
        }
    }
    sql
}
