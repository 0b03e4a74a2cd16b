//! Whole-server tests of several replicas of one cluster sharing a registry (PostgreSQL) and a
//! Redis of their own, which the tests stop and restart: cross-replica routing, fencing of
//! reconnects, the leader lease, weights, Redis outages, and key hygiene. The scenarios that do
//! not stop Redis run both on one server and on a three-master Redis Cluster (`standalone::` and
//! `cluster::`); Sentinel failovers and a cluster node's loss are in `tests/redis_ha.rs`.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    enroll, eventually, ingest_frame, register_with_credential, Db, EdgeConn, Proxy, RedisKind,
    RedisProc, TestRedis, TestServer,
};
use foghorn::proto::{edge_message, EdgeMessage, ErrorCode, NodeStats};
use reqwest::redirect::Policy;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

fn stats(cpu_tenths: u32) -> EdgeMessage {
    EdgeMessage {
        payload: Some(edge_message::Payload::NodeStats(NodeStats {
            cpu_tenths,
            ram_max_bytes: 16 << 30,
            ram_used_bytes: 4 << 30,
            up_bytes_per_sec: 1_000_000,
            bw_limit_bytes_per_sec: 125_000_000,
            latitude: Some(48.85),
            longitude: Some(2.35),
            connections: 3,
            ..Default::default()
        })),
    }
}

/// Starts replica A of cluster "test" on PostgreSQL and the Redis at `url`, with `tweak` applied
/// to it and to the replicas started from it.
async fn first_replica(url: String, tweak: fn(&mut foghorn::config::Config)) -> TestServer {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("foghorn=debug")
        .with_test_writer()
        .try_init();
    TestServer::start_with(Db::Postgres, |c| {
        c.redis.url = url;
        tweak(&mut *c);
    })
    .await
}

async fn synced(server: &TestServer) {
    eventually(WAIT, "Redis sync live", || async {
        server.ready().await["redis"] == "ok"
    })
    .await;
}

/// The edge as `server` lists it.
async fn edge_view(server: &TestServer, op: &str, node: &str) -> Option<Value> {
    server.edges(op).await["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["node_id"] == node)
        .cloned()
}

/// `GET /play/{playback}/hls/index.m3u8` through `server`: the status and Location.
async fn play(server: &TestServer, playback: &str) -> (u16, String) {
    let res = client()
        .get(server.http(&format!("/play/{playback}/hls/index.m3u8")))
        .send()
        .await
        .expect("play");
    let location = res
        .headers()
        .get("location")
        .map(|l| l.to_str().expect("ascii").to_string())
        .unwrap_or_default();
    (res.status().as_u16(), location)
}

/// Samples the leadership of some replicas every 2 ms, counting the samples with two leaders.
struct LeaderWatch {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<u64>,
}

impl LeaderWatch {
    fn start(servers: &[&TestServer]) -> LeaderWatch {
        let leaderships: Vec<_> = servers
            .iter()
            .map(|r| r.server().state.leadership.clone())
            .collect();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut overlaps = 0;
                while !stop.is_cancelled() {
                    if leaderships.iter().filter(|l| l.is_leader()).count() > 1 {
                        overlaps += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                overlaps
            }
        });
        LeaderWatch { stop, task }
    }

    async fn overlaps(self) -> u64 {
        self.stop.cancel();
        self.task.await.expect("leader watch")
    }
}

/// Viewers asking every replica for a stream's HLS playlist all along, counting the requests
/// that were not redirected to an edge.
struct Viewers {
    asked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Viewers {
    fn start(replicas: &[&TestServer], playback_id: &str) -> Viewers {
        let asked = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let urls: Vec<String> = replicas
            .iter()
            .map(|r| r.http(&format!("/play/{playback_id}/hls/index.m3u8")))
            .collect();
        let task = tokio::spawn({
            let (asked, failed, stop) = (asked.clone(), failed.clone(), stop.clone());
            async move {
                let http = client();
                while !stop.is_cancelled() {
                    for url in &urls {
                        let answer = http.get(url).send().await;
                        asked.fetch_add(1, Ordering::Relaxed);
                        if !matches!(&answer, Ok(r) if r.status() == 307) {
                            eprintln!("viewer request failed: {url}: {answer:?}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Viewers {
            asked,
            failed,
            stop,
            task,
        }
    }

    /// Stops them; how many requests they made and how many failed.
    async fn stop(self) -> (u64, u64) {
        self.stop.cancel();
        self.task.await.expect("viewers");
        (
            self.asked.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn replica_id(server: &TestServer) -> String {
    server.server().state.replica_id.clone()
}

on_each_redis!(
    an_edge_on_one_replica_is_routed_by_the_others,
    a_reconnect_to_another_replica_replaces_the_old_session,
    one_leader_at_a_time_and_a_stopped_leader_is_replaced,
    weights_changed_on_one_replica_apply_on_all,
    redirects_on_one_replica_count_on_the_others,
);

async fn an_edge_on_one_replica_is_routed_by_the_others(kind: RedisKind) {
    let redis = TestRedis::start(kind).await;
    let a = first_replica(redis.url(), |_| {}).await;
    let b = a.replica(|_| {}).await;
    let c = a.replica(|_| {}).await;
    for r in [&a, &b, &c] {
        synced(r).await;
    }
    let (tenant, op) = a.operator().await;
    let (stream, _) = a.stream(&tenant).await;

    // Connected to A, routable through B and C, listed there as held by A.
    let (edge, node, _) = enroll(&a, &tenant).await;
    edge.send(stats(250)).await;
    for r in [&b, &c] {
        eventually(WAIT, "edge routable via another replica", || {
            r.routable(&op, &node)
        })
        .await;
        let view = edge_view(r, &op, &node).await.expect("listed");
        assert_eq!(view["replica"], replica_id(&a), "{view}");
        assert_eq!(view["connected"], true);
        // Decisions read a snapshot rebuilt at most every 20 ms after the edge state changed.
        eventually(WAIT, "viewers redirected", || async {
            play(r, &stream.playback_id).await.0 == 307
        })
        .await;
        let (status, location) = play(r, &stream.playback_id).await;
        assert_eq!(status, 307);
        assert!(
            location.starts_with(&format!(
                "https://edge.example.net/hls/{}/",
                stream.internal_name
            )),
            "{location}"
        );
    }
    assert_eq!(a.ready().await["edges_connected"], 1);
    assert_eq!(b.ready().await["edges_connected"], 0, "B holds no session");

    // Stats reach the other replicas.
    edge.send(stats(900)).await;
    eventually(WAIT, "new stats on B", || async {
        edge_view(&b, &op, &node).await.expect("listed")["stats"]["cpu_tenths"] == 900
    })
    .await;

    // The stream closes on A: unroutable everywhere.
    drop(edge);
    for r in [&a, &b, &c] {
        eventually(WAIT, "edge unroutable after its stream closed", || async {
            !r.routable(&op, &node).await && play(r, &stream.playback_id).await.0 == 503
        })
        .await;
    }

    // Nothing of the edge is left in Redis, and every key left expires by itself; on a cluster,
    // they are all on one node (one hash tag, one slot).
    let keys = redis.keys().await;
    assert!(!keys.is_empty(), "the lease and token counter are there");
    for (key, ttl, node) in &keys {
        assert!(key.starts_with("foghorn:{test}:"), "namespaced: {key}");
        assert!(!key.contains(":edge:"), "released edge left behind: {key}");
        assert!(*ttl > 0, "{key} has no TTL ({ttl})");
        assert_eq!(
            *node, keys[0].2,
            "{key} is on another node than {}",
            keys[0].0
        );
    }

    for r in [a, b, c] {
        r.stop().await;
    }
}

async fn a_reconnect_to_another_replica_replaces_the_old_session(kind: RedisKind) {
    let redis = TestRedis::start(kind).await;
    let a = first_replica(redis.url(), |_| {}).await;
    let b = a.replica(|_| {}).await;
    synced(&a).await;
    synced(&b).await;
    let (tenant, op) = a.operator().await;
    let (stream, key) = a.stream(&tenant).await;

    // The edge publishes a stream through A.
    let (mut old, node, credential) = enroll(&a, &tenant).await;
    old.send(ingest_frame("r1", &key)).await;
    assert!(old.decision().await.accept);
    old.send(stats(100)).await;
    let live_on = || async {
        a.registry()
            .stream(&stream.id)
            .await
            .expect("get")
            .expect("exists")
            .live_node_id
    };
    assert_eq!(live_on().await.as_deref(), Some(node.as_str()));
    eventually(WAIT, "routable via B", || b.routable(&op, &node)).await;

    // The edge reconnects to B while its session on A is still open: A closes the old one.
    let mut new = EdgeConn::open(&b.grpc_url(), register_with_credential(&node, &credential)).await;
    new.seed().await;
    assert_eq!(old.error().await, ErrorCode::SessionReplaced);
    new.send(stats(200)).await;
    eventually(WAIT, "A sees the edge held by B", || async {
        edge_view(&a, &op, &node)
            .await
            .is_some_and(|v| v["replica"] == replica_id(&b) && v["routable"] == true)
    })
    .await;
    assert_eq!(a.ready().await["edges_connected"], 0);
    assert_eq!(b.ready().await["edges_connected"], 1);
    // Both replicas route to it, and the stream stays live on the edge (the replaced session does
    // not end it).
    for r in [&a, &b] {
        eventually(WAIT, "viewers redirected", || async {
            play(r, &stream.playback_id).await.0 == 307
        })
        .await;
    }
    assert_eq!(live_on().await.as_deref(), Some(node.as_str()));

    // And back to A: B's session is the old one now.
    let mut third =
        EdgeConn::open(&a.grpc_url(), register_with_credential(&node, &credential)).await;
    third.seed().await;
    assert_eq!(new.error().await, ErrorCode::SessionReplaced);
    third.send(stats(300)).await;
    eventually(WAIT, "B sees the edge held by A again", || async {
        edge_view(&b, &op, &node).await.is_some_and(|v| {
            v["replica"] == replica_id(&a)
                && v["routable"] == true
                && v["stats"]["cpu_tenths"] == 300
        })
    })
    .await;
    assert_eq!(a.ready().await["edges_connected"], 1);
    assert_eq!(b.ready().await["edges_connected"], 0);

    drop(third);
    for r in [&a, &b] {
        eventually(WAIT, "unroutable once closed", || async {
            !r.routable(&op, &node).await
        })
        .await;
    }
    a.stop().await;
    b.stop().await;
}

async fn one_leader_at_a_time_and_a_stopped_leader_is_replaced(kind: RedisKind) {
    let redis = TestRedis::start(kind).await;
    let a = first_replica(redis.url(), |c| c.redis.leader_ttl = Duration::from_secs(1)).await;
    let b = a.replica(|_| {}).await;
    let c = a.replica(|_| {}).await;
    let mut replicas = vec![a, b, c];

    // Every replica's leadership is sampled for the whole test.
    let watch = LeaderWatch::start(&replicas.iter().collect::<Vec<_>>());

    let leaders = |rs: &[TestServer]| {
        rs.iter()
            .enumerate()
            .filter(|(_, r)| r.server().state.leadership.is_leader())
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    eventually(WAIT, "a leader is elected", || async {
        leaders(&replicas).len() == 1
    })
    .await;
    let first = leaders(&replicas)[0];
    assert_eq!(replicas[first].ready().await["leader"], true);

    // The leader stops; another replica takes over well within 15 s.
    let stopped = replicas.remove(first);
    stopped.stop().await;
    eventually(Duration::from_secs(15), "another replica leads", || async {
        leaders(&replicas).len() == 1
    })
    .await;
    let second = leaders(&replicas)[0];
    let other = 1 - second;
    assert_eq!(replicas[other].ready().await["leader"], false);

    assert_eq!(watch.overlaps().await, 0, "two leaders at once");
    for r in replicas {
        r.stop().await;
    }
}

async fn weights_changed_on_one_replica_apply_on_all(kind: RedisKind) {
    let redis = TestRedis::start(kind).await;
    let a = first_replica(redis.url(), |_| {}).await;
    let b = a.replica(|_| {}).await;
    synced(&a).await;
    synced(&b).await;
    let (_, op) = a.operator().await;

    let weights = |r: &TestServer| {
        let url = r.http("/?weights=");
        let op = op.clone();
        async move {
            let res = client()
                .get(url)
                .bearer_auth(op)
                .send()
                .await
                .expect("weights");
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.expect("json")
        }
    };
    let res = client()
        .get(a.http("/?weights={\"cpu\":100,\"geo\":2000}"))
        .bearer_auth(&op)
        .send()
        .await
        .expect("set weights");
    assert_eq!(res.status(), 200);
    eventually(WAIT, "B applies A's weights", || async {
        let w = weights(&b).await;
        w["cpu"] == 100 && w["geo"] == 2000
    })
    .await;
    // A replica started later (or after a restart) starts from them too.
    let c = a.replica(|_| {}).await;
    let w = weights(&c).await;
    assert_eq!(
        (w["cpu"].clone(), w["geo"].clone()),
        (100.into(), 2000.into()),
        "{w}"
    );
    for r in [a, b, c] {
        r.stop().await;
    }
}

/// Whether `server` lists every one of `nodes` as routable.
async fn routes_all(server: &TestServer, op: &str, nodes: &[String]) -> bool {
    let edges = server.edges(op).await;
    nodes.iter().all(|n| {
        edges["edges"].as_array().is_some_and(|l| {
            l.iter()
                .any(|e| e["node_id"] == *n && e["routable"] == true)
        })
    })
}

/// How Redis comes back after an outage.
#[derive(Debug, Clone, Copy)]
enum Comeback {
    /// Killed, started again with nothing (lease, records, fencing counter gone).
    Empty,
    /// Shut down saving, started again with its data (records and lease of before the outage).
    WithData,
}

/// Within this of Redis answering again, the cluster is whole again (DESIGN: 2 s; the margin is
/// for a loaded CI machine, the measured figure is printed).
const RECOVERY: Duration = Duration::from_secs(5);

/// Two replicas, one edge on each, viewers asking both all along; Redis goes away for `outage`
/// twice (back empty, then back with its data), a weight change is made on A while it is away.
/// After each comeback: every replica is synced, exactly one leads, both edges are routable on
/// both replicas, B has A's weights; a replica started at the end sees every edge. No viewer
/// request fails throughout.
async fn replicas_recover_from_a_redis_outage(outage: Duration) {
    let mut redis = RedisProc::start().await;
    // A stats interval of 400 ms (the edges report every 100 ms): edges held elsewhere age out
    // 1.2 s into the outage, and an edge's own replica keeps it through a 1 s stall of a loaded
    // 2-core machine (at 200 ms, a 600 ms stall of the test process cost a viewer a 503). The
    // leader TTL is the default one.
    let a = first_replica(redis.url(), |c| {
        c.edges.stats_interval = Duration::from_millis(400);
    })
    .await;
    let b = a.replica(|_| {}).await;
    synced(&a).await;
    synced(&b).await;
    let (tenant, op) = a.operator().await;
    let (stream, _) = a.stream(&tenant).await;

    let stop = tokio_util::sync::CancellationToken::new();
    let mut nodes = Vec::new();
    let mut reporters = Vec::new();
    for r in [&a, &b] {
        let (edge, node, _) = enroll(r, &tenant).await;
        nodes.push(node);
        let stop = stop.clone();
        reporters.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                edge.send(stats(100)).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(edge);
        }));
    }
    eventually(WAIT, "both edges routable on both replicas", || async {
        routes_all(&a, &op, &nodes).await && routes_all(&b, &op, &nodes).await
    })
    .await;

    // Their own stop: they stop (and are awaited) before the edges go away.
    let viewers = Viewers::start(&[&a, &b], &stream.playback_id);
    let cpu_weight = |r: &TestServer| {
        let (url, op) = (r.http("/?weights="), op.clone());
        async move {
            let w: Value = client()
                .get(url)
                .bearer_auth(op)
                .send()
                .await
                .expect("weights")
                .json()
                .await
                .expect("json");
            w["cpu"].as_u64().expect("cpu weight")
        }
    };

    for (round, comeback) in [Comeback::Empty, Comeback::WithData]
        .into_iter()
        .enumerate()
    {
        match comeback {
            Comeback::Empty => redis.stop(),
            Comeback::WithData => redis.shutdown_saving().await,
        }
        eventually(WAIT, "/ready reports Redis degraded", || async {
            let (ra, rb) = (a.ready().await, b.ready().await);
            ra["redis"] == "degraded" && rb["redis"] == "degraded" && ra["ready"] == true
        })
        .await;
        // Each replica keeps its own edge fresh; the other's ages out; nobody can lead.
        for (r, own, other) in [(&a, &nodes[0], &nodes[1]), (&b, &nodes[1], &nodes[0])] {
            eventually(WAIT, "the other replica's edge aged out", || async {
                !r.routable(&op, other).await
            })
            .await;
            assert!(r.routable(&op, own).await, "own edge stays routable");
        }
        eventually(WAIT, "no leader without Redis", || async {
            a.ready().await["leader"] == false && b.ready().await["leader"] == false
        })
        .await;
        // Weights changed while Redis is away: stored in the registry, announced to nobody.
        let cpu = 101 + round as u64;
        let res = client()
            .get(a.http(&format!("/?weights={{\"cpu\":{cpu}}}")))
            .bearer_auth(&op)
            .send()
            .await
            .expect("set weights");
        assert_eq!(res.status(), 200, "weights are changed during the outage");
        tokio::time::sleep(outage).await;

        match comeback {
            Comeback::Empty => redis.restart().await,
            Comeback::WithData => redis.restart_with_data().await,
        }
        let back = tokio::time::Instant::now();
        eventually(
            RECOVERY,
            "the cluster whole again after Redis came back",
            || async {
                let (ra, rb) = (a.ready().await, b.ready().await);
                let leaders = [&ra, &rb].iter().filter(|r| r["leader"] == true).count();
                ra["redis"] == "ok"
                    && rb["redis"] == "ok"
                    && leaders == 1
                    && routes_all(&a, &op, &nodes).await
                    && routes_all(&b, &op, &nodes).await
                    && cpu_weight(&b).await == cpu
            },
        )
        .await;
        println!(
            "outage {outage:?}, Redis back {comeback:?}: cluster whole {:?} after Redis answered",
            back.elapsed()
        );
    }

    // A replica started after the outages sees every edge, and its viewers are served.
    let c = a.replica(|_| {}).await;
    eventually(RECOVERY, "a new replica routes every edge", || async {
        routes_all(&c, &op, &nodes).await
    })
    .await;
    assert_eq!(play(&c, &stream.playback_id).await.0, 307);

    let (asked, failed) = viewers.stop().await;
    stop.cancel();
    for r in reporters {
        r.await.expect("reporter");
    }
    assert!(asked > 50, "the viewers asked");
    assert_eq!(failed, 0, "a viewer request failed");
    for r in [a, b, c] {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_recover_from_a_1s_redis_outage() {
    replicas_recover_from_a_redis_outage(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_recover_from_a_10s_redis_outage() {
    replicas_recover_from_a_redis_outage(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_recover_from_a_60s_redis_outage() {
    replicas_recover_from_a_redis_outage(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_redis_is_replaced_and_its_edges_age_out() {
    let redis = RedisProc::start().await;
    let proxy = Proxy::start(redis.port).await;
    // A reaches Redis through the proxy only; it starts first and leads.
    let a = TestServer::start_with(Db::Postgres, |c| {
        c.redis.url = proxy.url();
        c.redis.leader_ttl = Duration::from_secs(1);
        c.edges.stats_interval = Duration::from_millis(200);
    })
    .await;
    eventually(WAIT, "A leads", || async {
        a.ready().await["leader"] == true
    })
    .await;
    let b = a.replica(|c| c.redis.url = redis.url()).await;
    synced(&a).await;
    synced(&b).await;
    let (tenant, op) = a.operator().await;
    let (edge, node, _) = enroll(&a, &tenant).await;
    edge.send(stats(100)).await;
    eventually(WAIT, "B routes to A's edge", || b.routable(&op, &node)).await;

    let watch = LeaderWatch::start(&[&a, &b]);
    assert_eq!(b.ready().await["leader"], false);

    // A loses Redis (it keeps running, and its edge keeps reporting to it).
    proxy.cut();
    let reporter = tokio::spawn(async move {
        for _ in 0..30 {
            edge.send(stats(100)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        edge
    });
    eventually(Duration::from_secs(15), "B takes the lead", || async {
        b.ready().await["leader"] == true
    })
    .await;
    assert_eq!(a.ready().await["leader"], false);
    assert_eq!(a.ready().await["redis"], "degraded");
    // B no longer hears about A's edge: it ages out there, and stays routable on A.
    eventually(WAIT, "A's edge aged out on B", || async {
        !b.routable(&op, &node).await
    })
    .await;
    assert!(a.routable(&op, &node).await);

    // A comes back: it follows, and B sees its edge again.
    proxy.mend();
    synced(&a).await;
    eventually(WAIT, "B routes to A's edge again", || {
        b.routable(&op, &node)
    })
    .await;
    assert_eq!(a.ready().await["leader"], false, "B keeps the lead");
    assert_eq!(watch.overlaps().await, 0, "two leaders at once");
    let edge = reporter.await.expect("reporter");
    drop(edge);
    a.stop().await;
    b.stop().await;
}

/// Redirects charged on one replica count on the others (issue 23 §2): an edge with room for 16
/// viewers until its next stats gets 10 through A, then only the 6 left through B; with sharing
/// off (`redis.pending_share_interval = 0s`) B would send it 16 more.
async fn redirects_on_one_replica_count_on_the_others(kind: RedisKind) {
    for share in [true, false] {
        let redis = TestRedis::start(kind).await;
        let a = first_replica(
            redis.url(),
            if share {
                |_| {}
            } else {
                |c| c.redis.pending_share_interval = Duration::ZERO
            },
        )
        .await;
        let b = a.replica(|_| {}).await;
        for r in [&a, &b] {
            synced(r).await;
        }
        let (tenant, op) = a.operator().await;
        let (stream, _) = a.stream(&tenant).await;
        let (edge, node, _) = enroll(&a, &tenant).await;
        // Nothing sent yet, 2,000,000 B/s of room, no viewers: each redirect is expected to take
        // 128 KiB/s, so the 17th finds it full (16 × 131,072 = 2,097,152).
        let mut m = stats(100);
        if let Some(edge_message::Payload::NodeStats(n)) = &mut m.payload {
            n.up_bytes_per_sec = 0;
            n.bw_limit_bytes_per_sec = 2_000_000;
            n.connections = 0;
        }
        edge.send(m).await;
        for r in [&a, &b] {
            eventually(WAIT, "edge routable", || async {
                play(r, &stream.playback_id).await.0 == 307
            })
            .await;
        }
        // The probes above charged one redirect each: 2 so far. Eight more through A.
        for _ in 0..8 {
            assert_eq!(play(&a, &stream.playback_id).await.0, 307);
        }
        let pending_on = |r: &TestServer| {
            let url = r.http("/?lstserver");
            let op = op.clone();
            let node = node.clone();
            async move {
                let list: Value = client()
                    .get(url)
                    .bearer_auth(op)
                    .send()
                    .await
                    .expect("lstserver")
                    .json()
                    .await
                    .expect("json");
                list.as_object()
                    .expect("object")
                    .values()
                    .find(|e| e["node_id"] == node.as_str())
                    .map_or(0, |e| e["pending"].as_u64().expect("pending"))
            }
        };
        if share {
            // B learns of A's nine within a batch interval (its own probe is the tenth).
            eventually(WAIT, "A's redirects counted on B", || async {
                pending_on(&b).await == 10 * 131_072
            })
            .await;
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(pending_on(&b).await, 131_072, "B counts its own probe only");
        }
        let mut through_b = 0;
        while play(&b, &stream.playback_id).await.0 == 307 {
            through_b += 1;
            assert!(through_b <= 20, "B never found the edge full");
        }
        assert_eq!(through_b, if share { 6 } else { 15 }, "share: {share}");
        if share {
            // And A learns of B's.
            eventually(WAIT, "B's redirects counted on A", || async {
                play(&a, &stream.playback_id).await.0 == 503
            })
            .await;
        }
        drop(edge);
        for r in [a, b] {
            r.stop().await;
        }
    }
}

/// An edge enrolled on `server`, reporting every 100 ms with the CPU load `cpu` holds, until
/// `stop`; its node id and credential, and the task (which hands the connection back).
async fn reporting_edge(
    server: &TestServer,
    tenant: &str,
    cpu: Arc<AtomicU32>,
    stop: tokio_util::sync::CancellationToken,
) -> (String, String, tokio::task::JoinHandle<EdgeConn>) {
    let (edge, node, credential) = enroll(server, tenant).await;
    let task = tokio::spawn(async move {
        while !stop.is_cancelled() {
            edge.send(stats(cpu.load(Ordering::Relaxed))).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        edge
    });
    (node, credential, task)
}

/// Whether exactly one of `replicas` leads.
fn one_leader(replicas: &[&TestServer]) -> bool {
    let leaders = replicas
        .iter()
        .filter(|r| r.server().state.leadership.is_leader())
        .count();
    leaders == 1
}

/// Whether each of `a` and `b` lists the other's edge with the CPU load it last reported, and
/// both are synced.
async fn replicating(a: &TestServer, b: &TestServer, op: &str, edges: [(&str, u32); 2]) -> bool {
    let sees = |r: &TestServer, (node, cpu): (&str, u32)| {
        let r = r.http("/api/v1/edges");
        let (node, op) = (node.to_string(), op.to_string());
        async move {
            let edges: Value = client()
                .get(r)
                .bearer_auth(op)
                .send()
                .await
                .expect("edges")
                .json()
                .await
                .expect("json");
            edges["edges"].as_array().is_some_and(|l| {
                l.iter().any(|e| {
                    e["node_id"] == node && e["stats"]["cpu_tenths"] == cpu && e["routable"] == true
                })
            })
        }
    };
    a.ready().await["redis"] == "ok"
        && b.ready().await["redis"] == "ok"
        && sees(b, edges[0]).await
        && sees(a, edges[1]).await
}

/// The record of `node` that `server` holds (JSON), if any (and if `server` answers).
async fn record_on(server: &RedisProc, node: &str) -> Option<String> {
    let mut conn = server.try_connection().await.ok()?;
    redis::cmd("HGET")
        .arg(format!("foghorn:{{test}}:edge:{node}"))
        .arg("record")
        .query_async(&mut conn)
        .await
        .ok()?
}

/// How a Sentinel failover comes about.
#[derive(Debug, Clone, Copy)]
enum Failover {
    /// The master is killed; the sentinels promote the replica.
    Crash,
    /// `SENTINEL FAILOVER`: the master lives on, demoted to a replica (it answers, and refuses
    /// writes with READONLY).
    Demotion,
}

/// After a Sentinel failover, replication between the replicas and a leader are back within
/// this (the spec's figure; the measured one is printed).
const AFTER_FAILOVER: Duration = Duration::from_secs(10);

/// Two replicas on Redis Sentinel (a master, a replica, three sentinels), an edge on each,
/// viewers asking both all along. The master is killed (and comes back as a replica), then a
/// failover demotes the new master while it keeps running. After each failover, a stats change
/// on either replica reaches the other and one replica leads within 10 s; never two leaders; no
/// viewer request fails; an edge reconnecting to the other replica still replaces its old
/// session (fencing tokens from the last master).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failovers_are_followed() {
    let mut sentinels = common::Sentinels::start().await;
    let a = first_replica(sentinels.url(), |_| {}).await;
    let b = a.replica(|_| {}).await;
    synced(&a).await;
    synced(&b).await;
    let (tenant, op) = a.operator().await;
    let (stream, _) = a.stream(&tenant).await;

    let stop = tokio_util::sync::CancellationToken::new();
    let cpu = [Arc::new(AtomicU32::new(100)), Arc::new(AtomicU32::new(200))];
    let (node_a, credential_a, reporter_a) =
        reporting_edge(&a, &tenant, cpu[0].clone(), stop.clone()).await;
    let (node_b, _, reporter_b) = reporting_edge(&b, &tenant, cpu[1].clone(), stop.clone()).await;
    eventually(
        WAIT,
        "each replica replicates its edge to the other",
        || replicating(&a, &b, &op, [(&node_a, 100), (&node_b, 200)]),
    )
    .await;
    eventually(WAIT, "a leader", || async { one_leader(&[&a, &b]) }).await;
    let watch = LeaderWatch::start(&[&a, &b]);
    let viewers = Viewers::start(&[&a, &b], &stream.playback_id);

    for (round, failover) in [Failover::Crash, Failover::Demotion]
        .into_iter()
        .enumerate()
    {
        let old = sentinels.master().await;
        let old_port = sentinels.servers[old].port;
        let started = tokio::time::Instant::now();
        match failover {
            Failover::Crash => sentinels.servers[old].stop(),
            Failover::Demotion => {
                let mut conn = sentinels.sentinels[0].connection().await;
                let _: String = redis::cmd("SENTINEL")
                    .arg("FAILOVER")
                    .arg(common::SENTINEL_MASTER)
                    .query_async(&mut conn)
                    .await
                    .expect("SENTINEL FAILOVER");
            }
        }
        eventually(
            Duration::from_secs(30),
            "every sentinel names the new master",
            || async { sentinels.master_port().await.is_some_and(|p| p != old_port) },
        )
        .await;
        let failed_over = tokio::time::Instant::now();
        let new = sentinels.master().await;
        // Changes made from now on must travel through the new master.
        let (cpu_a, cpu_b) = (300 + round as u32, 400 + round as u32);
        cpu[0].store(cpu_a, Ordering::Relaxed);
        cpu[1].store(cpu_b, Ordering::Relaxed);
        let whole = |cpu_a: u32, cpu_b: u32| {
            let (a, b, op, node_a, node_b) = (&a, &b, &op, &node_a, &node_b);
            let master = &sentinels.servers[new];
            async move {
                replicating(a, b, op, [(node_a, cpu_a), (node_b, cpu_b)]).await
                    && one_leader(&[a, b])
                    && record_on(master, node_a).await.is_some_and(|record| {
                        serde_json::from_str::<Value>(&record).expect("a JSON record")["stats"]
                            ["cpu_tenths"]
                            == cpu_a
                    })
            }
        };
        eventually(
            AFTER_FAILOVER,
            "replication through the new master and a leader back after the failover",
            || whole(cpu_a, cpu_b),
        )
        .await;
        println!(
            "Sentinel {failover:?}: new master named {:?} after the old one went, replication and a leader back {:?} after that",
            failed_over - started,
            failed_over.elapsed()
        );
        if let Failover::Demotion = failover {
            // The old master took writes until the sentinels demoted it: still whole after.
            eventually(
                Duration::from_secs(60),
                "the old master demoted",
                || async {
                    let Ok(mut conn) = sentinels.servers[old].try_connection().await else {
                        return false;
                    };
                    let role = redis::cmd("ROLE").query_async(&mut conn).await;
                    matches!(role, Ok(redis::Role::Replica { .. }))
                },
            )
            .await;
            cpu[0].store(cpu_a + 10, Ordering::Relaxed);
            cpu[1].store(cpu_b + 10, Ordering::Relaxed);
            eventually(AFTER_FAILOVER, "whole after the demotion", || {
                whole(cpu_a + 10, cpu_b + 10)
            })
            .await;
        }
        if let Failover::Crash = failover {
            // The old master comes back (empty, believing itself master): the sentinels make
            // it a replica of the new one, which the next round fails over to.
            sentinels.servers[old].restart().await;
            sentinels.settled().await;
        }
    }

    let (asked, failed) = viewers.stop().await;
    assert!(asked > 50, "the viewers asked");
    assert_eq!(failed, 0, "a viewer request failed");
    assert_eq!(watch.overlaps().await, 0, "two leaders at once");

    // Fencing after the failovers: A's edge reconnects to B, and A closes the old session.
    stop.cancel();
    let mut old = reporter_a.await.expect("reporter");
    let mut new = EdgeConn::open(
        &b.grpc_url(),
        register_with_credential(&node_a, &credential_a),
    )
    .await;
    new.seed().await;
    assert_eq!(old.error().await, ErrorCode::SessionReplaced);
    drop(reporter_b.await.expect("reporter"));
    drop(new);
    a.stop().await;
    b.stop().await;
}

/// Three-master Redis Cluster: the node the replicas' subscriptions start on (not the one that
/// holds the cluster's keys) dies. The subscriptions move to another node: a stats change on
/// either replica reaches the other within 10 s, and one replica keeps leading. Then the scripts
/// are flushed: a replica started now, and the others, load them again with the node still down,
/// and every replica routes to every edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cluster_node_moves_the_subscription() {
    let mut cluster = common::RedisCluster::start().await;
    let home = cluster.node_of("foghorn:{test}:edges").await;
    let first = (home + 1) % 3;
    let url = cluster.url_in_order(&[first, home, (home + 2) % 3]);
    let a = first_replica(url, |_| {}).await;
    let b = a.replica(|_| {}).await;
    synced(&a).await;
    synced(&b).await;
    let (tenant, op) = a.operator().await;

    let stop = tokio_util::sync::CancellationToken::new();
    let cpu = [Arc::new(AtomicU32::new(100)), Arc::new(AtomicU32::new(200))];
    let (node_a, _, reporter_a) = reporting_edge(&a, &tenant, cpu[0].clone(), stop.clone()).await;
    let (node_b, _, reporter_b) = reporting_edge(&b, &tenant, cpu[1].clone(), stop.clone()).await;
    eventually(
        WAIT,
        "each replica replicates its edge to the other",
        || replicating(&a, &b, &op, [(&node_a, 100), (&node_b, 200)]),
    )
    .await;
    eventually(WAIT, "a leader", || async { one_leader(&[&a, &b]) }).await;
    let watch = LeaderWatch::start(&[&a, &b]);

    cluster.nodes[first].stop();
    let lost = tokio::time::Instant::now();
    cpu[0].store(300, Ordering::Relaxed);
    cpu[1].store(400, Ordering::Relaxed);
    eventually(
        AFTER_FAILOVER,
        "replication after the subscriptions' node died",
        || async {
            replicating(&a, &b, &op, [(&node_a, 300), (&node_b, 400)]).await
                && one_leader(&[&a, &b])
        },
    )
    .await;
    println!(
        "cluster node lost: replication back {:?} after",
        lost.elapsed()
    );

    // Redis forgets the scripts (as a restarted or failed-over node does): they are loaded again
    // with a node down.
    let mut home_conn = cluster.nodes[home].connection().await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut home_conn)
        .await
        .expect("SCRIPT FLUSH");
    let c = a.replica(|_| {}).await;
    synced(&c).await;
    let (node_c, _, reporter_c) = reporting_edge(&c, &tenant, cpu[0].clone(), stop.clone()).await;
    let nodes = [node_a.clone(), node_b.clone(), node_c];
    for r in [&a, &b, &c] {
        eventually(WAIT, "every replica routes every edge", || {
            routes_all(r, &op, &nodes)
        })
        .await;
    }
    assert_eq!(watch.overlaps().await, 0, "two leaders at once");
    stop.cancel();
    for reporter in [reporter_a, reporter_b, reporter_c] {
        drop(reporter.await.expect("reporter"));
    }
    for r in [a, b, c] {
        r.stop().await;
    }
}

/// Three-master Redis Cluster: the slot of the cluster's keys moves to another node, as a
/// reshard moves it, while two replicas replicate their edges and one leads. Redis answers ASK
/// during the move and MOVED after it: the replicas follow, a stats change on either reaches the
/// other within 10 s, never two leaders, and every key ends on the new node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_slot_is_followed() {
    let cluster = common::RedisCluster::start().await;
    let a = first_replica(cluster.url(), |_| {}).await;
    let b = a.replica(|_| {}).await;
    synced(&a).await;
    synced(&b).await;
    let (tenant, op) = a.operator().await;

    let stop = tokio_util::sync::CancellationToken::new();
    let cpu = [Arc::new(AtomicU32::new(100)), Arc::new(AtomicU32::new(200))];
    let (node_a, _, reporter_a) = reporting_edge(&a, &tenant, cpu[0].clone(), stop.clone()).await;
    let (node_b, _, reporter_b) = reporting_edge(&b, &tenant, cpu[1].clone(), stop.clone()).await;
    eventually(
        WAIT,
        "each replica replicates its edge to the other",
        || replicating(&a, &b, &op, [(&node_a, 100), (&node_b, 200)]),
    )
    .await;
    eventually(WAIT, "a leader", || async { one_leader(&[&a, &b]) }).await;
    let watch = LeaderWatch::start(&[&a, &b]);

    let key = "foghorn:{test}:edges";
    let to = (cluster.node_of(key).await + 1) % 3;
    cluster.move_slot_of(key, to).await;
    let moved = tokio::time::Instant::now();
    cpu[0].store(300, Ordering::Relaxed);
    cpu[1].store(400, Ordering::Relaxed);
    eventually(
        AFTER_FAILOVER,
        "replication after the slot moved",
        || async {
            replicating(&a, &b, &op, [(&node_a, 300), (&node_b, 400)]).await
                && one_leader(&[&a, &b])
        },
    )
    .await;
    println!("slot moved: replication back {:?} after", moved.elapsed());
    assert_eq!(cluster.node_of(key).await, to);
    let keys = common::keys_on(&cluster.nodes).await;
    assert!(!keys.is_empty());
    for (key, _, port) in &keys {
        assert_eq!(*port, cluster.nodes[to].port, "{key} left behind");
    }
    assert_eq!(watch.overlaps().await, 0, "two leaders at once");
    stop.cancel();
    for reporter in [reporter_a, reporter_b] {
        drop(reporter.await.expect("reporter"));
    }
    a.stop().await;
    b.stop().await;
}
