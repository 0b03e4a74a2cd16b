//! Two replicas of one cluster (in process, one SQLite registry) sharing a private Redis:
//! - `stats`: an edge on replica A sends NodeStats over real gRPC; the delay until replica B's edge
//!   state holds them (median, p99 over 1,000 updates);
//! - `attach` / `close`: a session opens on A (first stats sent) until B routes to it, and closes
//!   until B no longer does (100 each);
//! - `load`: 1,000 simulated edges on A at the default stats interval (5 s); Redis commands, bytes
//!   and memory per second over 30 s, read from `INFO`.
//!
//! `cargo bench --bench replication` (needs `redis-server` on the PATH or in
//! `FOGHORN_TEST_REDIS_SERVER`). Under `cargo test` it runs a few iterations of each as a check.

use std::time::{Duration, Instant};

use foghorn::app::{self, Server};
use foghorn::config::Config;
use foghorn::proto::{
    control_message, edge_message, helmsman_control_client::HelmsmanControlClient, register,
    Capabilities, ControlMessage, EdgeMessage, NodeStats, Register,
};
use foghorn::registry::{NewEnrollmentToken, Role};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

struct Sizes {
    stats: usize,
    sessions: usize,
    edges: usize,
    load_for: Duration,
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

struct Open {
    tx: mpsc::Sender<EdgeMessage>,
    _rx: tonic::Streaming<ControlMessage>,
}

/// Enrolls a new edge on `channel`'s replica; returns once its ConfigSeed arrived.
async fn enroll(channel: Channel, token: &str) -> (Open, String) {
    let (tx, rx) = mpsc::channel(4);
    let register = EdgeMessage {
        payload: Some(edge_message::Payload::Register(Register {
            protocol_version: foghorn::grpc::PROTOCOL_VERSION,
            auth: Some(register::Auth::EnrollmentToken(token.to_string())),
            capabilities: Some(Capabilities {
                edge: true,
                ..Default::default()
            }),
            public_base_url: "https://edge.example.net".into(),
            ..Default::default()
        })),
    };
    tx.send(register).await.expect("queue");
    let mut inbound = HelmsmanControlClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
        .expect("connect")
        .into_inner();
    let node = match inbound
        .message()
        .await
        .expect("read")
        .expect("frame")
        .payload
    {
        Some(control_message::Payload::ConfigSeed(seed)) => seed.node_id,
        other => panic!("expected a seed, got {other:?}"),
    };
    (Open { tx, _rx: inbound }, node)
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

/// A redis-server child on a free port, killed on drop.
struct Redis(std::process::Child, u16);

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let bin = std::env::var("FOGHORN_TEST_REDIS_SERVER").unwrap_or("redis-server".into());
        let child = std::process::Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {bin}: {e}"));
        Redis(child, port)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.1)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

async fn replica(db: &str, data: &std::path::Path, redis: &str) -> Server {
    let mut config = Config::default();
    config.server.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    config.server.data_dir = data.to_path_buf();
    config.database.url = db.to_string();
    config.redis.url = redis.to_string();
    config.log.filter = "error".into();
    app::start(config).await.expect("replica starts")
}

async fn bench(sizes: Sizes) {
    let redis = Redis::start();
    let data = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}?mode=rwc", data.path().join("r.db").display());
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = loop {
        match client.get_multiplexed_async_connection().await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let a = replica(&db, data.path(), &redis.url()).await;
    let b = replica(&db, data.path(), &redis.url()).await;
    for r in [&a, &b] {
        let sync = r.state.replication.as_ref().expect("replicated");
        until(|| sync.is_synced()).await;
    }
    let registry = &a.state.registry;
    let tenant = registry
        .create_tenant("bench", "local")
        .await
        .expect("tenant");
    registry
        .create_api_token(&tenant.id, Role::Operator)
        .await
        .expect("token");
    let (_, token) = registry
        .create_enrollment_token(&NewEnrollmentToken {
            cluster_id: "local".into(),
            tenant_id: tenant.id,
            usage_limit: (sizes.sessions + sizes.edges + 1) as i64,
            expires_at: foghorn::registry::now_ms() + 3_600_000,
            expected_cidr: None,
        })
        .await
        .expect("enrollment token");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", a.grpc_addr))
        .expect("url")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("channel");

    // Sessions opening and closing on A, seen from B.
    let (mut attach, mut close) = (Vec::new(), Vec::new());
    for _ in 0..sizes.sessions {
        let (open, node) = enroll(channel.clone(), &token).await;
        let start = Instant::now();
        open.tx.send(stats(1)).await.expect("stats");
        until(|| b.state.edges.is_routable(&node)).await;
        attach.push(start.elapsed());
        let start = Instant::now();
        drop(open);
        until(|| !b.state.edges.is_routable(&node)).await;
        close.push(start.elapsed());
    }
    percentiles("attach", attach);
    percentiles("close", close);

    // Stats of one edge on A, seen from B.
    let (open, node) = enroll(channel.clone(), &token).await;
    let mut samples = Vec::with_capacity(sizes.stats);
    for i in 1..=sizes.stats as u32 {
        let start = Instant::now();
        open.tx.send(stats(i)).await.expect("stats");
        until(|| {
            b.state
                .edges
                .get(&node)
                .and_then(|v| v.stats)
                .is_some_and(|s| s.connections == i)
        })
        .await;
        samples.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    percentiles("stats", samples);
    drop(open);

    // Redis load of many edges at the default interval.
    let sim = tokio::spawn(foghorn::sim::run(foghorn::sim::SimArgs {
        grpc: format!("http://{}", a.grpc_addr),
        enrollment_token: Some(token.clone()),
        edges: sizes.edges,
        state_dir: None,
        region_center: (50.11, 8.68),
        region_radius_km: 300.0,
        publish: None,
        publish_for: None,
        interval: None,
        reconnect_every: None,
        seed: Some(7),
    }));
    let routable = || b.state.edges.list().iter().filter(|e| e.routable).count();
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
    a.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
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
        }
    } else {
        Sizes {
            stats: 20,
            sessions: 3,
            edges: 10,
            load_for: Duration::from_secs(1),
        }
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench(sizes));
}
