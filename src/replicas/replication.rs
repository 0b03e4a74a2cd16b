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
//! - **Fencing.** A session takes a token from `foghorn:{cluster}:seq` when it attaches, higher
//!   than any token the node had (in Redis or known here, in case Redis lost its counter); a write
//!   under a lower token than the stored one is refused, and that session is closed
//!   (`SESSION_REPLACED`). Replicas apply an announcement only if its token is not lower than the
//!   one they know, so of two sessions of a node, the newest lives. A session that attached while
//!   Redis was away takes its token with its first write once Redis is back.
//! - **Subscriber.** Applies the other replicas' announcements as they come, on the cell's one
//!   subscription ([`super::Subscriber`]). Each time the cluster is subscribed (anew), it
//!   resynchronises: the local edges are announced again (Redis may have lost them, with the
//!   releases still owed), the other replicas' edges are read back from the index, and the
//!   weights are reloaded. A ping every second notices a Redis that went away; until it is back,
//!   edges held elsewhere age out by the liveness rule and local routing goes on. Writes that
//!   fail are queued again, with backoff.
//!
//! Every key but the token counter expires with the liveness window; the counter expires a day
//! after the last write (a cluster with live edges writes every stats interval).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{Conn, RedisLink};
use crate::edge::EdgeCommands;
use crate::edge::{Announcement, EdgeRecord, EdgeState};
use crate::federation::{Frame, Origin, Peers};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::routing::Router;

/// Hands out a fencing token for a new session of a node: above the counter, the node's stored
/// token, and `floor` (the highest this replica knows). KEYS: edge hash, token counter.
/// ARGV: floor. Needs Redis 5+ (scripts replicate their effects, so `TIME` may precede writes).
const TOKEN: &str = r#"
local held = tonumber(redis.call('HGET', KEYS[1], 'token') or '0')
local token = redis.call('INCR', KEYS[2])
local floor = math.max(held + 1, tonumber(ARGV[1]))
if token < floor then
    token = floor
    redis.call('SET', KEYS[2], string.format('%d', token))
end
redis.call('PEXPIRE', KEYS[2], 86400000)
return token
"#;

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
        redis.call('SET', KEYS[3], string.format('%d', token))
    end
elseif token < held then
    return -held
elseif tonumber(redis.call('GET', KEYS[3]) or '0') < token then
    redis.call('SET', KEYS[3], string.format('%d', token))
end
redis.call('PEXPIRE', KEYS[3], 86400000)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
token = string.format('%d', token)
redis.call('HSET', KEYS[1], 'token', token, 'replica', ARGV[2], 'record', ARGV[4],
    'at', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], string.format('%d', now + tonumber(ARGV[5])), ARGV[3])
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

/// Redis's clock, on the node that holds the cluster's keys (in a Redis Cluster, `TIME` alone
/// goes to any node, maybe one that is down). KEYS: the index.
const NOW: &str = "return redis.call('TIME')";

/// Bound on each Redis call of the sync: a hung Redis must not hold announcements up for long.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the Redis calls an edge session waits for (its token when it attaches).
const TOKEN_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest wait before the sync tries Redis again (writes, subscription): a Redis that answers
/// again is used within it.
const RETRY_MAX: Duration = Duration::from_millis(500);
/// Announcements written concurrently per batch (one connection pipelines them).
const BATCH: usize = 256;
/// Edges per message of shared pending debits (about 25 bytes each).
const DEBITS_PER_MESSAGE: usize = 2048;

/// The key names of one cluster; `{cluster}` is a hash tag, so Redis Cluster keeps them in one
/// slot (the scripts touch several).
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
    index: String,
    seq: String,
    channel: String,
    /// What replicas relay to each other about the cluster's federation peers (binary messages).
    peers: String,
}

impl Keys {
    fn new(cluster_id: &str) -> Keys {
        let prefix = super::key_prefix(cluster_id);
        Keys {
            index: format!("{prefix}edges"),
            seq: format!("{prefix}seq"),
            channel: format!("{prefix}events"),
            peers: format!("{prefix}peers"),
            prefix,
        }
    }

    fn edge(&self, node_id: &str) -> String {
        format!("{}edge:{node_id}", self.prefix)
    }
}

/// The two channels of a cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Channel {
    /// `foghorn:{cluster}:events`: the edges' announcements ([`Event`]).
    Events,
    /// `foghorn:{cluster}:peers`: news about federation peers ([`PeerNews`]).
    Peers,
}

impl Channel {
    /// The cluster and channel a channel name is of.
    pub(super) fn parse(name: &str) -> Option<(&str, Channel)> {
        let rest = name.strip_prefix("foghorn:{")?;
        let (cluster, channel) = rest.split_once("}:")?;
        match channel {
            "events" => Some((cluster, Channel::Events)),
            "peers" => Some((cluster, Channel::Peers)),
            _ => None,
        }
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
    /// `W`: the weights changed in the registry.
    Weights,
    /// `D {replica} {node}={bytes/s} ...`: redirects `replica` charged to edges since its last
    /// such message.
    Debits { replica: &'a str, debits: &'a str },
}

/// The `{node}={bytes/s}` entries of a [`Event::Debits`]; malformed entries are skipped.
fn debit_entries(debits: &str) -> impl Iterator<Item = (&str, u64)> {
    debits.split(' ').filter_map(|entry| {
        let (node, bytes) = entry.split_once('=')?;
        Some((node, bytes.parse().ok()?))
    })
}

impl<'a> Event<'a> {
    fn parse(msg: &'a str) -> Option<Event<'a>> {
        if msg == "W" {
            return Some(Event::Weights);
        }
        if let Some(rest) = msg.strip_prefix("D ") {
            let (replica, debits) = rest.split_once(' ')?;
            return Some(Event::Debits { replica, debits });
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

/// What one replica relays to the others about a federation peer of the cluster.
#[derive(Debug, PartialEq)]
pub enum PeerNews<'a> {
    /// A frame the peer sent on a channel held by the sending replica (encoded `PeerMessage`).
    Frame(&'a [u8]),
    /// A viewer on the sending replica needs `stream` from the peer (the leader opens the
    /// channel).
    Want(&'a str),
    /// The sending replica arranged (or knows of) an origin pull of `stream` from the peer; the
    /// replica holding the edge's control stream tells the edge.
    Origin {
        stream: &'a str,
        dtsc_url: &'a str,
        node_id: &'a str,
    },
    /// The sending replica just (re)subscribed: the others answer with what they know of their
    /// peers (the last summary and advert of each peer they hold a channel with, as `Reply`, and
    /// the origin pulls), so it scores remote edges without waiting for the next summary.
    Sync,
    /// A frame for replica `to` only (answering its `Sync`), received `age` ago.
    Reply {
        to: &'a str,
        age: Duration,
        frame: &'a [u8],
    },
    /// The sending replica's last channel with the peer failed.
    Down,
}

/// How often one replica's `Sync` is answered at most.
const SYNC_ANSWER_EVERY: Duration = Duration::from_secs(5);

/// The peer field of news about no peer in particular.
const NO_PEER: &str = "-";

/// `{replica} {peer} F|W|O|S|R|D {payload}` on the peers channel (`D`: an empty payload); an origin's payload is
/// `{node_id} {dtsc_url} {stream}`, a reply's `{to} {age_ms} {frame}`. A peer is a valid cluster
/// id (`-` for a `Sync`).
fn parse_peer_news(msg: &[u8]) -> Option<(&str, &str, PeerNews<'_>)> {
    let mut parts = msg.splitn(4, |b| *b == b' ');
    let replica = std::str::from_utf8(parts.next()?).ok()?;
    let peer = std::str::from_utf8(parts.next()?).ok()?;
    let kind = parts.next()?;
    let payload = parts.next()?;
    let news = match kind {
        b"F" => PeerNews::Frame(payload),
        b"W" => PeerNews::Want(std::str::from_utf8(payload).ok()?),
        b"O" => {
            let mut fields = std::str::from_utf8(payload).ok()?.splitn(3, ' ');
            let node_id = fields.next()?;
            let dtsc_url = fields.next()?;
            let stream = fields.next()?;
            let sane = crate::registry::is_valid_node_id(node_id)
                && dtsc_url.starts_with("dtsc://")
                && !stream.is_empty()
                && stream.len() <= 512;
            if !sane {
                return None;
            }
            PeerNews::Origin {
                stream,
                dtsc_url,
                node_id,
            }
        }
        b"D" if payload.is_empty() => PeerNews::Down,
        b"S" if payload.is_empty() && peer == NO_PEER => {
            return Some((replica, peer, PeerNews::Sync))
        }
        b"R" => {
            let mut fields = payload.splitn(3, |b| *b == b' ');
            let to = std::str::from_utf8(fields.next()?).ok()?;
            let age_ms: u64 = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
            PeerNews::Reply {
                to,
                age: Duration::from_millis(age_ms),
                frame: fields.next()?,
            }
        }
        _ => return None,
    };
    if !crate::config::is_valid_label(peer) {
        return None;
    }
    Some((replica, peer, news))
}

/// What the edge-state sync needs of federation: the peers to feed, and the edges' control
/// streams, to pass on origin pulls arranged by another replica.
#[derive(Debug, Clone)]
pub struct PeerRelay {
    pub peers: Arc<Peers>,
    pub edge_commands: Arc<dyn EdgeCommands>,
    pub root_domain: String,
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
    token: Arc<Script>,
    put: Arc<Script>,
    release: Arc<Script>,
    now: Arc<Script>,
    /// Subscribed and resynchronised (false while Redis is away).
    synced: Arc<AtomicBool>,
    /// Federation peers, fed by what the other replicas relay.
    federation: PeerRelay,
    /// When each replica's `Sync` was last answered.
    sync_answers: Arc<parking_lot::Mutex<std::collections::HashMap<String, tokio::time::Instant>>>,
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
        federation: PeerRelay,
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
            token: Arc::new(Script::new(TOKEN)),
            put: Arc::new(Script::new(PUT)),
            release: Arc::new(Script::new(RELEASE)),
            now: Arc::new(Script::new(NOW)),
            synced: Arc::default(),
            federation,
            sync_answers: Arc::default(),
        }
    }

    /// Whether the sync is live: subscribed to the cluster's channel and resynchronised.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub(super) fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
        self.metrics.replication_synced.set(i64::from(synced));
    }

    /// Writes local changes until `stop`, then writes what is left once (the releases of the
    /// sessions that shutdown closed) and returns.
    pub async fn write(self, stop: CancellationToken) {
        let mut backoff = Duration::ZERO;
        let mut delays = None;
        loop {
            let stopping = tokio::select! {
                _ = async {
                    tokio::time::sleep(backoff).await;
                    self.edges.outbox_filled().await;
                } => false,
                _ = stop.cancelled() => true,
            };
            let nodes = self.edges.take_outbox();
            let mut failed = false;
            for chunk in nodes.chunks(BATCH) {
                let writes = chunk.iter().map(|node| self.announce(node));
                failed |= futures_util::future::join_all(writes)
                    .await
                    .contains(&false);
            }
            if stopping {
                return;
            }
            // Failed writes are back in the outbox: wait before trying Redis again.
            backoff = if failed {
                delays
                    .get_or_insert_with(|| {
                        crate::retry::backoff(Duration::from_millis(50), RETRY_MAX)
                    })
                    .next()
                    .unwrap_or(RETRY_MAX)
            } else {
                delays = None;
                Duration::ZERO
            };
        }
    }

    /// Takes the fencing token of a new session of `node_id`, above `floor`; 0 when Redis cannot
    /// be asked quickly (the session then takes one with its first write).
    pub async fn take_token(&self, node_id: &str, floor: u64) -> u64 {
        let Some(mut conn) = self.link.connection() else {
            return 0;
        };
        let mut call = self.token.key(self.keys.edge(node_id));
        call.key(&self.keys.seq).arg(floor);
        self.bounded(TOKEN_TIMEOUT, call.invoke_async::<u64>(&mut conn))
            .await
            .unwrap_or(0)
    }

    /// Whether Redis holds `node_id` under a newer session than `token` (another replica took the
    /// edge over); false when unknown.
    pub async fn superseded(&self, node_id: &str, token: u64) -> bool {
        let Some(mut conn) = self.link.connection() else {
            return false;
        };
        let mut get = redis::cmd("HGET");
        get.arg(self.keys.edge(node_id)).arg("token");
        let held = self.bounded(TOKEN_TIMEOUT, get.query_async::<Option<u64>>(&mut conn));
        matches!(held.await, Some(Some(held)) if held > token)
    }

    /// Writes the current announcement of one node; false (and queued again) when Redis did not
    /// take it.
    async fn announce(&self, node_id: &str) -> bool {
        let Some(announcement) = self.edges.announcement(node_id) else {
            return true;
        };
        let written = match self.link.connection() {
            Some(conn) => self.write_one(conn, node_id, &announcement).await,
            None => false,
        };
        if !written {
            self.edges.retry(node_id, &announcement);
        }
        written
    }

    async fn write_one(&self, mut conn: Conn, node_id: &str, announcement: &Announcement) -> bool {
        let key = self.keys.edge(node_id);
        match announcement {
            Announcement::Held {
                session_id,
                token,
                record,
            } => {
                let record = serde_json::to_string(record).expect("edge records serialize");
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
                    return false;
                };
                if stored < 0 {
                    tracing::info!(%node_id, "a newer session of this edge holds it on another replica; closing ours");
                    self.edges.fence_lost(node_id, *session_id);
                } else if *token == 0 && !self.edges.set_token(node_id, *session_id, stored as u64)
                {
                    // The session ended while its first record was being written.
                    let released = Announcement::Released {
                        token: stored as u64,
                    };
                    if !self
                        .release_record(&mut conn, &key, node_id, stored as u64)
                        .await
                    {
                        self.edges.retry(node_id, &released);
                    }
                }
                true
            }
            Announcement::Released { token } => {
                self.release_record(&mut conn, &key, node_id, *token).await
            }
        }
    }

    async fn release_record(&self, conn: &mut Conn, key: &str, node_id: &str, token: u64) -> bool {
        let mut call = self.release.key(key);
        call.key(&self.keys.index)
            .arg(token)
            .arg(&self.replica)
            .arg(node_id)
            .arg(&self.keys.channel);
        self.call::<i64>(call.invoke_async(conn)).await.is_some()
    }

    /// Runs one write of the sync under [`CALL_TIMEOUT`], counting it.
    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        let done = self.bounded(CALL_TIMEOUT, fut).await;
        if done.is_some() {
            self.metrics.replication_sent.inc();
        }
        done
    }

    /// Runs one Redis call under `timeout`; `None` (counted as an error) when it failed or
    /// took longer.
    async fn bounded<T>(
        &self,
        timeout: Duration,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.metrics.replication_errors.inc();
                tracing::debug!(error = %e, "edge-state sync: Redis refused a call");
                None
            }
            Err(_) => {
                self.metrics.replication_errors.inc();
                None
            }
        }
    }

    /// Tells the other replicas that the weights changed (they are stored in the registry, from
    /// which every replica reloads them, so concurrent changes settle on what was stored last).
    pub async fn announce_weights(&self) {
        let Some(mut conn) = self.link.connection() else {
            return;
        };
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.keys.channel).arg("W");
        self.call(publish.query_async::<i64>(&mut conn)).await;
    }

    /// Relays news about federation peer `peer` to the other replicas (fire and forget: every
    /// frame is periodic, and a lost one is made up by the next).
    pub fn relay_peer_news(&self, peer: &str, news: PeerNews<'_>) {
        let Some(mut conn) = self.link.connection() else {
            return;
        };
        let origin;
        let reply;
        let (kind, payload): (&[u8], &[u8]) = match news {
            PeerNews::Frame(bytes) => (b"F", bytes),
            PeerNews::Want(stream) => (b"W", stream.as_bytes()),
            PeerNews::Origin {
                stream,
                dtsc_url,
                node_id,
            } => {
                origin = format!("{node_id} {dtsc_url} {stream}");
                (b"O", origin.as_bytes())
            }
            PeerNews::Sync => (b"S", b""),
            PeerNews::Down => (b"D", b""),
            PeerNews::Reply { to, age, frame } => {
                reply = [format!("{to} {} ", age.as_millis()).as_bytes(), frame].concat();
                (b"R", reply.as_slice())
            }
        };
        let mut msg = Vec::with_capacity(self.replica.len() + peer.len() + payload.len() + 4);
        for part in [self.replica.as_bytes(), peer.as_bytes(), kind] {
            msg.extend_from_slice(part);
            msg.push(b' ');
        }
        msg.extend_from_slice(payload);
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.keys.peers).arg(msg);
        let this = self.clone();
        tokio::spawn(async move {
            this.call(publish.query_async::<i64>(&mut conn)).await;
        });
    }

    /// Applies what another replica relayed about a federation peer.
    fn apply_peer_news(&self, msg: &[u8]) {
        let Some((replica, peer, news)) = parse_peer_news(msg) else {
            tracing::warn!("federation relay: unreadable message ignored");
            return;
        };
        if replica == self.replica || peer == self.cluster_id {
            return;
        }
        self.metrics.replication_received.inc();
        let peers = &self.federation.peers;
        match news {
            PeerNews::Sync => self.answer_sync(replica),
            PeerNews::Reply { to, age, frame } => {
                if to == self.replica {
                    self.apply_peer_frame(peer, frame, age);
                }
            }
            PeerNews::Want(stream) => peers.want(peer, stream),
            PeerNews::Down => peers.peer_down(peer),
            PeerNews::Origin {
                stream,
                dtsc_url,
                node_id,
            } => {
                let origin = Origin {
                    peer: peer.to_string(),
                    dtsc_url: dtsc_url.to_string(),
                    node_id: node_id.to_string(),
                };
                // The origin ends with the want: when the peer's adverts stop listing the stream,
                // or no advert comes at all.
                peers.want(peer, stream);
                // Told once: a repeated relay (after a resync) finds the origin known.
                if peers.set_origin(stream, origin)
                    && self
                        .federation
                        .edge_commands
                        .origin_pull(node_id, stream, dtsc_url)
                {
                    tracing::info!(%peer, %stream, node = %node_id, source = %dtsc_url, "cross-cluster origin pull arranged by another replica passed on to the edge");
                }
            }
            PeerNews::Frame(bytes) => self.apply_peer_frame(peer, bytes, Duration::ZERO),
        }
    }

    /// Applies a frame `peer` sent to another replica `age` ago, checked as on a channel.
    fn apply_peer_frame(&self, peer: &str, bytes: &[u8], age: Duration) {
        match crate::wire::decode_frame(bytes, peer, &self.federation.root_domain) {
            Ok(frame) if frame.cluster_id() == peer => {
                crate::federation::apply_frame(&self.federation.peers, peer, frame, age)
            }
            Ok(_) => tracing::warn!(%peer, "federation relay: a frame of another cluster ignored"),
            Err(why) => tracing::warn!(%peer, %why, "federation relay: bad frame ignored"),
        }
    }

    /// Answers `replica`'s `Sync` (at most every `SYNC_ANSWER_EVERY`, off the subscriber loop):
    /// the last summary and advert of every peer this replica holds a channel with, addressed to
    /// it alone, and every origin pull known here.
    fn answer_sync(&self, replica: &str) {
        {
            let mut answered = self.sync_answers.lock();
            answered.retain(|_, at| at.elapsed() < SYNC_ANSWER_EVERY);
            if answered.contains_key(replica) {
                return;
            }
            answered.insert(replica.to_string(), tokio::time::Instant::now());
        }
        let this = self.clone();
        let to = replica.to_string();
        tokio::spawn(async move { this.relay_what_peers_said(&to) });
    }

    fn relay_what_peers_said(&self, to: &str) {
        let peers = &self.federation.peers;
        let root = &self.federation.root_domain;
        for held in peers.held() {
            let summary = held
                .summary
                .map(|(s, age)| (Frame::Summary(Arc::new(s)), age));
            let advert = held.streams.map(|streams| {
                let advert = Frame::Advert {
                    cluster_id: held.peer.clone(),
                    streams: Arc::new(streams),
                };
                (advert, Duration::ZERO)
            });
            for (frame, age) in [summary, advert].into_iter().flatten() {
                let frame = crate::wire::encode_frame(&frame, root);
                let reply = PeerNews::Reply {
                    to,
                    age,
                    frame: &frame,
                };
                self.relay_peer_news(&held.peer, reply);
            }
        }
        for (stream, origin) in peers.origins() {
            self.relay_peer_news(
                &origin.peer,
                PeerNews::Origin {
                    stream: &stream,
                    dtsc_url: &origin.dtsc_url,
                    node_id: &origin.node_id,
                },
            );
        }
    }

    /// Tells the other replicas, every `every`, what redirects this one charged to each edge
    /// since the last time, so their scores count them too (without it, N replicas could each fill
    /// an edge between two of its stats reports). One `PUBLISH` per batch, none on the viewer's
    /// path; up to [`DEBITS_PER_MESSAGE`] edges per message, the messages of one batch
    /// pipelined. Debits made while Redis is away stay local.
    pub async fn share_pending(self, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let debits = self.edges.take_debits();
            if debits.is_empty() {
                continue;
            }
            let Some(mut conn) = self.link.connection() else {
                continue;
            };
            let mut pipe = redis::pipe();
            for batch in debits.chunks(DEBITS_PER_MESSAGE) {
                let mut msg = format!("D {}", self.replica);
                for (node_id, bytes) in batch {
                    let _ = write!(msg, " {node_id}={bytes}");
                }
                pipe.publish(&self.keys.channel, msg).ignore();
            }
            let sent = self
                .bounded(CALL_TIMEOUT, pipe.query_async::<()>(&mut conn))
                .await;
            if sent.is_none() {
                tracing::debug!(cluster = %self.cluster_id, "edge-state sync: pending debits not shared");
            }
        }
    }

    /// The cluster this sync is of.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The channels the cluster's messages come on.
    pub(super) fn channels(&self) -> [&str; 2] {
        [&self.keys.channel, &self.keys.peers]
    }

    /// Applies a message that came on the cluster's `channel`.
    pub(super) fn receive(&self, channel: Channel, payload: &[u8]) {
        match channel {
            Channel::Peers => self.apply_peer_news(payload),
            Channel::Events => match std::str::from_utf8(payload).ok().and_then(Event::parse) {
                Some(event) => self.apply(event),
                None => {
                    tracing::warn!(cluster = %self.cluster_id, "edge-state sync: unreadable message ignored")
                }
            },
        }
    }

    /// Once the cluster's channels are subscribed: resynchronises (taking one of `permits`),
    /// asks the other replicas what they know of the peers, and is synced; tried again with
    /// backoff until it succeeds or `connection` (the subscription) ends.
    pub(super) async fn catch_up(self, permits: Arc<Semaphore>, connection: CancellationToken) {
        let mut delays = crate::retry::backoff(Duration::from_millis(50), RETRY_MAX);
        loop {
            let resynced = tokio::select! {
                resynced = async {
                    let _permit = permits.acquire().await;
                    self.resync().await
                } => resynced,
                _ = connection.cancelled() => return,
            };
            let e = match resynced {
                Ok(()) => break,
                Err(e) => e,
            };
            let delay = delays.next().unwrap_or(RETRY_MAX);
            tracing::warn!(cluster = %self.cluster_id, error = %e, retry_in = ?delay, "edge-state sync: could not resynchronise");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = connection.cancelled() => return,
            }
        }
        self.relay_peer_news(NO_PEER, PeerNews::Sync);
        self.set_synced(true);
        // The subscription may have ended meanwhile; its end marked the cluster unsynced first.
        if connection.is_cancelled() {
            self.set_synced(false);
            return;
        }
        tracing::debug!(cluster = %self.cluster_id, replica = %self.replica, "edge-state sync: subscribed and resynchronised");
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
            } => self.apply_held(node_id, replica, token, record, 0),
            Event::Released { token, node_id, .. } => {
                self.metrics.replication_received.inc();
                self.edges.remote_released(node_id, token);
            }
            Event::Weights => {
                let this = self.clone();
                tokio::spawn(async move { this.reload_weights().await });
            }
            Event::Debits { replica, .. } if replica == self.replica => {}
            Event::Debits { debits, .. } => self
                .edges
                .apply_debits(debit_entries(debits), tokio::time::Instant::now()),
        }
    }

    /// Applies another replica's record of `node_id`, written `aged_ms` ago.
    fn apply_held(&self, node_id: &str, replica: &str, token: u64, record: &str, aged_ms: u64) {
        match serde_json::from_str::<EdgeRecord>(record) {
            Ok(mut record) => {
                record.stats_age_ms = record.stats_age_ms.saturating_add(aged_ms);
                self.metrics.replication_received.inc();
                self.edges.apply_remote(node_id, replica, token, record);
            }
            Err(e) => tracing::warn!(%node_id, error = %e, "edge-state sync: bad record ignored"),
        }
    }

    /// Announces every local edge again, reads back the other replicas' edges, reloads weights.
    /// Edges held elsewhere that Redis no longer has are left to age out by the liveness rule
    /// (Redis may have come back empty, before their replicas wrote them again).
    async fn resync(&self) -> anyhow::Result<()> {
        let mut conn = self
            .link
            .connection()
            .ok_or_else(|| anyhow::anyhow!("not connected"))?;
        // The shared connection may still be the one Redis dropped: the first command after an
        // outage fails and reconnects it. Only then is it worth writing through.
        let mut pinged = false;
        for _ in 0..3 {
            if self.link.ping(CALL_TIMEOUT).await {
                pinged = true;
                break;
            }
        }
        anyhow::ensure!(pinged, "Redis does not answer on the shared connection");
        self.edges.announce_all();
        let (secs, micros): (u64, u64) = tokio::time::timeout(
            CALL_TIMEOUT,
            self.now.key(&self.keys.index).invoke_async(&mut conn),
        )
        .await??;
        let now_ms = secs * 1000 + micros / 1000;
        let nodes: Vec<String> = tokio::time::timeout(
            CALL_TIMEOUT,
            redis::cmd("ZRANGE")
                .arg(&self.keys.index)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn),
        )
        .await??;
        for chunk in nodes.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for node_id in chunk {
                pipe.cmd("HMGET")
                    .arg(self.keys.edge(node_id))
                    .arg("token")
                    .arg("replica")
                    .arg("record")
                    .arg("at");
            }
            let rows: Vec<Vec<Option<String>>> =
                tokio::time::timeout(CALL_TIMEOUT, pipe.query_async(&mut conn)).await??;
            for (node_id, row) in chunk.iter().zip(rows) {
                let [Some(token), Some(replica), Some(record), Some(at)] = &row[..] else {
                    continue; // expired since the index was read
                };
                let (Ok(token), Ok(at)) = (token.parse::<u64>(), at.parse::<u64>()) else {
                    tracing::warn!(%node_id, "edge-state sync: unreadable record skipped");
                    continue;
                };
                if *replica != self.replica {
                    // The stats have aged since the record was written.
                    self.apply_held(node_id, replica, token, record, now_ms.saturating_sub(at));
                }
            }
        }
        self.reload_weights().await;
        Ok(())
    }

    /// Applies the cluster's weights as stored in the registry.
    async fn reload_weights(&self) {
        match self.registry.cluster_weights(&self.cluster_id).await {
            Ok(Some(weights)) if weights != self.router.weights() => {
                tracing::info!(?weights, "weights changed");
                self.router.set_weights(weights)
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not reload the weights"),
        }
    }
}

/// The other replicas as federation's relay: news goes out on the cluster's peers channel.
impl crate::federation::Relay for Replication {
    fn frame(&self, peer: &str, frame: &Frame) {
        let bytes = crate::wire::encode_frame(frame, &self.federation.root_domain);
        self.relay_peer_news(peer, PeerNews::Frame(&bytes));
    }

    fn want(&self, peer: &str, stream: &str) {
        self.relay_peer_news(peer, PeerNews::Want(stream));
    }

    fn down(&self, peer: &str) {
        self.relay_peer_news(peer, PeerNews::Down);
    }

    fn origin(&self, stream: &str, origin: &Origin) {
        self.relay_peer_news(
            &origin.peer,
            PeerNews::Origin {
                stream,
                dtsc_url: &origin.dtsc_url,
                node_id: &origin.node_id,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_news_parses_and_rejects_garbage() {
        assert_eq!(
            parse_peer_news(b"r1 bravo F \x00\x01 x"),
            Some(("r1", "bravo", PeerNews::Frame(b"\x00\x01 x")))
        );
        assert_eq!(
            parse_peer_news(b"r1 bravo W live+a"),
            Some(("r1", "bravo", PeerNews::Want("live+a")))
        );
        assert_eq!(
            parse_peer_news(b"r1 bravo D "),
            Some(("r1", "bravo", PeerNews::Down))
        );
        assert_eq!(parse_peer_news(b"r1 bravo D x"), None);
        assert_eq!(parse_peer_news(b"r1 bravo X y"), None);
        assert_eq!(parse_peer_news(b"r1 bravo"), None);
        assert_eq!(parse_peer_news(b"r1 bravo W \xff"), None);
        assert_eq!(
            parse_peer_news(
                b"r1 bravo O 0123456789ab dtsc://edge-x.bravo.example.net:4200/live+a live a"
            ),
            Some((
                "r1",
                "bravo",
                PeerNews::Origin {
                    stream: "live a",
                    dtsc_url: "dtsc://edge-x.bravo.example.net:4200/live+a",
                    node_id: "0123456789ab"
                }
            ))
        );
        for bad in [
            &b"r1 bravo O ../x dtsc://h/s s"[..],
            b"r1 bravo O 0123456789ab http://h/s s",
            b"r1 bravo O 0123456789ab dtsc://h/s ",
            b"r1 bravo O 0123456789ab dtsc://h/s",
            b"r1 - S x",
        ] {
            assert_eq!(
                parse_peer_news(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_peer_news(b"r1 - S "),
            Some(("r1", "-", PeerNews::Sync))
        );
        assert_eq!(parse_peer_news(b"r1 bravo S "), None);
        assert_eq!(parse_peer_news(b"r1 - W live+a"), None, "not a cluster id");
        assert_eq!(
            parse_peer_news(b"r1 bravo R r2 1500 \x00 x"),
            Some((
                "r1",
                "bravo",
                PeerNews::Reply {
                    to: "r2",
                    age: Duration::from_millis(1500),
                    frame: b"\x00 x"
                }
            ))
        );
        assert_eq!(parse_peer_news(b"r1 bravo R r2 soon x"), None);
    }

    #[test]
    fn channel_names_give_their_cluster() {
        let keys = Keys::new("lab-1");
        assert_eq!(
            Channel::parse(&keys.channel),
            Some(("lab-1", Channel::Events))
        );
        assert_eq!(Channel::parse(&keys.peers), Some(("lab-1", Channel::Peers)));
        for bad in [
            "foghorn:{lab-1}:seq",
            "foghorn:lab-1:events",
            "other:{a}:events",
            "",
        ] {
            assert_eq!(Channel::parse(bad), None, "{bad}");
        }
    }

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
        assert_eq!(Event::parse("W"), Some(Event::Weights));
        assert_eq!(
            Event::parse("D r1 node1=131072 node2=5"),
            Some(Event::Debits {
                replica: "r1",
                debits: "node1=131072 node2=5"
            })
        );
        // Malformed entries of a debit message are skipped, the rest applied.
        assert_eq!(
            debit_entries("a=1 b c=x =3 d=18446744073709551615 e=-1").collect::<Vec<_>>(),
            [("a", 1), ("", 3), ("d", u64::MAX)]
        );
        for bad in [
            "",
            "D",
            "D r1",
            "W {}",
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
        // Redis Cluster hashes only what is between the first `{` and the next `}` when that
        // is not empty: keys with the same such tag are in one slot.
        fn hash_tag(key: &str) -> Option<&str> {
            let (_, rest) = key.split_once('{')?;
            let (tag, _) = rest.split_once('}')?;
            (!tag.is_empty()).then_some(tag)
        }
        let k = Keys::new("eu-1");
        let lease = format!("{}leader", super::super::key_prefix("eu-1"));
        for key in [
            k.edge("n1"),
            k.index.clone(),
            k.seq.clone(),
            k.channel.clone(),
            k.peers.clone(),
            lease,
        ] {
            assert!(key.starts_with("foghorn:{eu-1}:"), "{key}");
            assert_eq!(hash_tag(&key), Some("eu-1"), "{key}");
        }
    }
}
