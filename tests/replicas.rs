//! Whole-server tests of several replicas of one cluster sharing a registry (PostgreSQL) and a
//! Redis of their own, which the tests stop and restart: cross-replica routing, fencing of
//! reconnects, the leader lease, weights, Redis outages, and key hygiene.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    enroll, eventually, ingest_frame, register_with_credential, Db, EdgeConn, Proxy, RedisProc,
    TestServer,
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

/// Starts replica A of cluster "test" on PostgreSQL and `redis`, with `tweak` applied to it and to
/// the replicas started from it.
async fn first_replica(redis: &RedisProc, tweak: fn(&mut foghorn::config::Config)) -> TestServer {
    let url = redis.url();
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

fn replica_id(server: &TestServer) -> String {
    server.server().state.replica_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_on_one_replica_is_routed_by_the_others() {
    let redis = RedisProc::start().await;
    let a = first_replica(&redis, |_| {}).await;
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

    // Nothing of the edge is left in Redis, and every key left expires by itself.
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(!keys.is_empty(), "the lease and token counter are there");
    for key in &keys {
        assert!(key.starts_with("foghorn:{test}:"), "namespaced: {key}");
        assert!(!key.contains(":edge:"), "released edge left behind: {key}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("PTTL");
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }

    for r in [a, b, c] {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_to_another_replica_replaces_the_old_session() {
    let redis = RedisProc::start().await;
    let a = first_replica(&redis, |_| {}).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_stopped_leader_is_replaced() {
    let redis = RedisProc::start().await;
    let a = first_replica(&redis, |c| c.redis.leader_ttl = Duration::from_secs(1)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_changed_on_one_replica_apply_on_all() {
    let redis = RedisProc::start().await;
    let a = first_replica(&redis, |_| {}).await;
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
    let a = first_replica(&redis, |c| {
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

    let asked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let viewers_stop = tokio_util::sync::CancellationToken::new();
    let viewers = tokio::spawn({
        // Their own token: they stop (and are awaited) before the edges go away.
        let (asked, failed, stop) = (asked.clone(), failed.clone(), viewers_stop.clone());
        let urls: Vec<String> = [&a, &b]
            .iter()
            .map(|r| r.http(&format!("/play/{}/hls/index.m3u8", stream.playback_id)))
            .collect();
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

    viewers_stop.cancel();
    viewers.await.expect("viewers");
    stop.cancel();
    for r in reporters {
        r.await.expect("reporter");
    }
    assert!(asked.load(Ordering::Relaxed) > 50, "the viewers asked");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "a viewer request failed");
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_on_one_replica_count_on_the_others() {
    for share in [true, false] {
        let redis = RedisProc::start().await;
        let a = first_replica(
            &redis,
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
