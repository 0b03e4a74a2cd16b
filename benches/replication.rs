//! Two replicas of one cluster (in process, one SQLite registry) sharing a private Redis:
//! - `stats`: an edge on replica A sends NodeStats over real gRPC; the delay until replica B's edge
//!   state holds them (median, p99 over 1,000 updates);
//! - `attach` / `close`: a session opens on A (first stats sent) until B routes to it, and closes
//!   until B no longer does (100 each);
//! - `load`: 1,000 simulated edges on A at the default stats interval (5 s); Redis commands, bytes
//!   and memory per second over 30 s, read from `INFO`;
//! - `overshoot`: a flood of viewers through both replicas at once onto 10 edges, between two of
//!   their stats reports, with the replicas sharing their pending debits and without: how far each
//!   edge's load (viewers sent × the 128 KiB/s expected of each) goes past its limit.
//!
//! `cargo bench --bench replication` (needs `redis-server` on the PATH or in
//! `FOGHORN_TEST_REDIS_SERVER`). Servers, Redis and edges come from the test support
//! (`tests/common`). Under `cargo test` it runs a few iterations of each as a check.

use std::time::{Duration, Instant};

use foghorn::proto::{edge_message, EdgeMessage, NodeStats};

#[path = "../tests/common/mod.rs"]
mod common;

use common::{enroll, Db, RedisProc, TestServer};

struct Sizes {
    stats: usize,
    sessions: usize,
    edges: usize,
    load_for: Duration,
    /// Edges, their bandwidth limit and viewers offered, of the overshoot flood.
    flood: (usize, u64, usize),
}

fn stats(connections: u32) -> EdgeMessage {
    EdgeMessage {
        payload: Some(edge_message::Payload::NodeStats(NodeStats {
            cpu_tenths: 100,
            ram_max_bytes: 1 << 34,
            ram_used_bytes: 1 << 32,
            bw_limit_bytes_per_sec: 125_000_000,
            latitude: Some(50.1),
            longitude: Some(8.7),
            connections,
            ..Default::default()
        })),
    }
}

async fn until(what: impl Fn() -> bool) {
    while !what() {
        tokio::task::yield_now().await;
    }
}

fn percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "replication/{name}: median {:.0} µs, p99 {:.0} µs, max {:.0} µs over {}",
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        samples.last().expect("samples").as_secs_f64() * 1e6,
        samples.len()
    );
}

/// Counters of `INFO` that the load is measured with.
async fn info(conn: &mut redis::aio::MultiplexedConnection) -> [f64; 4] {
    let text: String = redis::cmd("INFO").query_async(conn).await.expect("INFO");
    let field = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO has no {name}"))
    };
    [
        field("total_commands_processed"),
        field("total_net_input_bytes"),
        field("total_net_output_bytes"),
        field("used_memory"),
    ]
}

async fn bench(sizes: Sizes) {
    let redis = RedisProc::start().await;
    let mut conn = redis.connection().await;
    let url = redis.url();
    let a = TestServer::start_with(Db::Sqlite, |c| c.redis.url = url).await;
    let b = a.replica(|_| {}).await;
    for r in [&a, &b] {
        let sync = r.server().state.replication.as_ref().expect("replicated");
        until(|| sync.is_synced()).await;
    }
    let (tenant, _) = a.operator().await;
    let b_edges = &b.server().state.edges;

    // Sessions opening and closing on A, seen from B.
    let (mut attach, mut close) = (Vec::new(), Vec::new());
    for _ in 0..sizes.sessions {
        let (edge, node, _) = enroll(&a, &tenant).await;
        let start = Instant::now();
        edge.send(stats(1)).await;
        until(|| b_edges.is_routable(&node)).await;
        attach.push(start.elapsed());
        let start = Instant::now();
        drop(edge);
        until(|| !b_edges.is_routable(&node)).await;
        close.push(start.elapsed());
    }
    percentiles("attach", attach);
    percentiles("close", close);

    // Stats of one edge on A, seen from B.
    let (edge, node, _) = enroll(&a, &tenant).await;
    let mut samples = Vec::with_capacity(sizes.stats);
    for i in 1..=sizes.stats as u32 {
        let start = Instant::now();
        edge.send(stats(i)).await;
        until(|| {
            b_edges
                .get(&node)
                .and_then(|v| v.stats)
                .is_some_and(|s| s.connections == i)
        })
        .await;
        samples.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    percentiles("stats", samples);
    drop(edge);

    // Redis load of many edges at the default interval.
    let token = a.enrollment_token(&tenant, sizes.edges as i64).await;
    let sim = tokio::spawn(foghorn::sim::run(foghorn::sim::SimArgs {
        grpc: a.grpc_url(),
        enrollment_token: Some(token),
        pre_registered_node_id: None,
        edges: sizes.edges,
        first_edge: 0,
        local_address: None,
        state_dir: None,
        region_center: (50.11, 8.68),
        region_radius_km: 300.0,
        publish: None,
        publish_for: None,
        interval: None,
        reconnect_every: None,
        ca: None,
        tls_domain: None,
        seed: Some(7),
    }));
    let routable = || b_edges.list().iter().filter(|e| e.routable).count();
    while routable() < sizes.edges {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past the burst of attaches, into steady state.
    tokio::time::sleep(Duration::from_secs(6).min(sizes.load_for)).await;
    let before = info(&mut conn).await;
    let started = Instant::now();
    tokio::time::sleep(sizes.load_for).await;
    let after = info(&mut conn).await;
    let secs = started.elapsed().as_secs_f64();
    let per = |i: usize| (after[i] - before[i]) / secs;
    println!(
        "replication/load: {} edges at a 5 s interval: {:.0} commands/s, {:.1} KB/s in, {:.1} KB/s out, {:.2} MB used",
        sizes.edges,
        per(0),
        per(1) / 1e3,
        per(2) / 1e3,
        after[3] / 1e6,
    );
    sim.abort();
    a.stop().await;
    b.stop().await;
}

/// Viewers through A and B at once (`viewers` in all, half each, as fast as each answers) onto
/// `edges` edges of `limit` B/s on A, between two of their stats reports. Returns the viewers
/// each edge got.
async fn flood(share: bool, edges: usize, limit: u64, viewers: usize) -> Vec<usize> {
    let redis = RedisProc::start().await;
    let url = redis.url();
    let a = TestServer::start_with(Db::Sqlite, |c| {
        c.redis.url = url;
        if !share {
            c.redis.pending_share_interval = Duration::ZERO;
        }
    })
    .await;
    let b = a.replica(|_| {}).await;
    for r in [&a, &b] {
        let sync = r.server().state.replication.as_ref().expect("replicated");
        until(|| sync.is_synced()).await;
    }
    let (tenant, _) = a.operator().await;
    let (stream, _) = a.stream(&tenant).await;
    let mut held = Vec::new();
    let token = a.enrollment_token(&tenant, edges as i64).await;
    for i in 0..edges {
        // Each at its own host, to count the viewers each got from the redirects.
        let mut register = common::register_with_token(&token);
        if let Some(edge_message::Payload::Register(r)) = &mut register.payload {
            r.public_base_url = format!("https://e{i}.example.net");
        }
        let mut edge = common::EdgeConn::open(&a.grpc_url(), register).await;
        let node = edge.seed().await.node_id;
        edge.send(EdgeMessage {
            payload: Some(edge_message::Payload::NodeStats(NodeStats {
                cpu_tenths: 100,
                ram_max_bytes: 1 << 34,
                ram_used_bytes: 1 << 32,
                bw_limit_bytes_per_sec: limit,
                ..Default::default()
            })),
        })
        .await;
        held.push((edge, node));
    }
    for r in [&a, &b] {
        let state = &r.server().state;
        until(|| {
            let routed = state.router.routed_now();
            held.iter().all(|(_, n)| routed.contains(n))
        })
        .await;
    }
    let path = format!("/play/{}/hls/index.m3u8", stream.playback_id);
    let send = |r: &TestServer, n: usize| {
        let url = r.http(&path);
        async move {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client");
            let mut hosts = Vec::with_capacity(n);
            for _ in 0..n {
                let res = client.get(&url).send().await.expect("play");
                if let Some(l) = res.headers().get("location") {
                    hosts.push(
                        l.to_str()
                            .expect("ascii")
                            .split('/')
                            .nth(2)
                            .expect("host")
                            .to_string(),
                    );
                }
            }
            hosts
        }
    };
    let (from_a, from_b) = tokio::join!(send(&a, viewers / 2), send(&b, viewers - viewers / 2));
    let mut per_edge = std::collections::BTreeMap::<String, usize>::new();
    for host in from_a.into_iter().chain(from_b) {
        *per_edge.entry(host).or_default() += 1;
    }
    drop(held);
    a.stop().await;
    b.stop().await;
    per_edge.into_values().collect()
}

async fn overshoot((edges, limit, viewers): (usize, u64, usize)) {
    // An edge takes viewers while its pending stays below its limit.
    let room = limit.div_ceil(128 * 1024) as usize;
    for share in [true, false] {
        let got = flood(share, edges, limit, viewers).await;
        let worst = got.iter().max().copied().unwrap_or(0) as f64 / room as f64;
        let mean = got.iter().sum::<usize>() as f64 / (room * edges) as f64;
        println!(
            "replication/overshoot: {}: {viewers} viewers through 2 replicas onto {edges} edges with room for {room} each: {} sent, fullest edge at {worst:.2}× its limit, all edges {mean:.2}×",
            if share { "debits shared every 100 ms" } else { "not shared" },
            got.iter().sum::<usize>(),
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this without it, as a check.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full {
        Sizes {
            stats: 1000,
            sessions: 100,
            edges: 1000,
            load_for: Duration::from_secs(30),
            flood: (10, 125_000_000, 30_000),
        }
    } else {
        Sizes {
            stats: 20,
            sessions: 3,
            edges: 10,
            load_for: Duration::from_secs(1),
            flood: (2, 10_000_000, 600),
        }
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let flood = sizes.flood;
            bench(sizes).await;
            overshoot(flood).await;
        });
}
