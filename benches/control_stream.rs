//! Control-stream latencies over real gRPC on loopback against an in-process Foghorn (SQLite):
//! - `register_to_routable`: open the stream with node id + credential, receive the ConfigSeed,
//!   send the first NodeStats, until the edge state reports the node routable (target ≤ 50 ms);
//! - `close_to_unroutable`: drop the stream until the node is unroutable (target ≤ 50 ms).
//!
//! `cargo bench --bench control_stream`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use foghorn::app::{self, Server};
use foghorn::config::Config;
use foghorn::proto::{
    control_message, edge_message, helmsman_control_client::HelmsmanControlClient, register,
    Capabilities, ControlMessage, EdgeMessage, NodeCredential, NodeStats, Register,
};
use foghorn::registry::{NewEnrollmentToken, Role};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

fn register(auth: register::Auth) -> EdgeMessage {
    EdgeMessage {
        payload: Some(edge_message::Payload::Register(Register {
            protocol_version: foghorn::grpc::PROTOCOL_VERSION,
            auth: Some(auth),
            capabilities: Some(Capabilities {
                edge: true,
                ..Default::default()
            }),
            ..Default::default()
        })),
    }
}

fn stats() -> EdgeMessage {
    EdgeMessage {
        payload: Some(edge_message::Payload::NodeStats(NodeStats {
            cpu_tenths: 100,
            ram_max_bytes: 1 << 34,
            ram_used_bytes: 1 << 32,
            bw_limit_bytes_per_sec: 125_000_000,
            ..Default::default()
        })),
    }
}

struct Open {
    _tx: mpsc::Sender<EdgeMessage>,
    _rx: tonic::Streaming<ControlMessage>,
}

/// Opens a session and returns once the seed arrived and the first stats are sent.
/// `channel`, or a new connection every 32 iterations (outside the timed part): streams dropped
/// right after they open count as reset streams in the client's h2, which gives up on a
/// connection after ~1,000 of them. An edge has one stream per connection and never meets this.
async fn fresh(endpoint: &Endpoint, channel: Channel, i: u64) -> Channel {
    if i % 32 == 31 {
        endpoint.connect().await.expect("channel")
    } else {
        channel
    }
}

async fn connect(channel: Channel, first: EdgeMessage) -> (Open, String, String) {
    let (tx, rx) = mpsc::channel(4);
    tx.send(first).await.expect("queue");
    let mut inbound = HelmsmanControlClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
        .expect("connect")
        .into_inner();
    let seed = match inbound
        .message()
        .await
        .expect("read")
        .expect("frame")
        .payload
    {
        Some(control_message::Payload::ConfigSeed(seed)) => seed,
        other => panic!("expected a seed, got {other:?}"),
    };
    tx.send(stats()).await.expect("stats");
    (
        Open {
            _tx: tx,
            _rx: inbound,
        },
        seed.node_id,
        seed.node_credential,
    )
}

async fn until(server: &Server, node: &str, routable: bool) {
    while server.state.edges.is_routable(node) != routable {
        tokio::task::yield_now().await;
    }
}

fn control_stream(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let data = tempfile::tempdir().expect("tempdir");
    let (server, endpoint, channel, node, credential) = rt.block_on(async {
        let mut config = Config::default();
        config.server.http_addr = "127.0.0.1:0".parse().expect("addr");
        config.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
        config.server.data_dir = data.path().to_path_buf();
        config.log.filter = "error".into();
        let server = app::start(config).await.expect("server");
        let registry = &server.state.registry;
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
                usage_limit: 1,
                expires_at: foghorn::registry::now_ms() + 3_600_000,
                expected_cidr: None,
            })
            .await
            .expect("enrollment token");
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr))
                .expect("url");
        let channel = endpoint.connect().await.expect("channel");
        let (open, node, credential) = connect(
            channel.clone(),
            register(register::Auth::EnrollmentToken(token)),
        )
        .await;
        drop(open);
        until(&server, &node, false).await;
        (server, endpoint, channel, node, credential)
    });
    let auth = || {
        register(register::Auth::NodeCredential(NodeCredential {
            node_id: node.clone(),
            credential: credential.clone(),
        }))
    };

    let mut group = c.benchmark_group("control_stream");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("register_to_routable", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut channel = channel.clone();
                for i in 0..iters {
                    channel = fresh(&endpoint, channel, i).await;
                    let start = Instant::now();
                    let (open, _, _) = connect(channel.clone(), auth()).await;
                    until(&server, &node, true).await;
                    total += start.elapsed();
                    drop(open);
                    until(&server, &node, false).await;
                }
                total
            })
        })
    });
    group.bench_function("close_to_unroutable", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut channel = channel.clone();
                for i in 0..iters {
                    channel = fresh(&endpoint, channel, i).await;
                    let (open, _, _) = connect(channel.clone(), auth()).await;
                    until(&server, &node, true).await;
                    let start = Instant::now();
                    drop(open);
                    until(&server, &node, false).await;
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.finish();
    rt.block_on(server.shutdown()).expect("shutdown");
}

criterion_group!(benches, control_stream);
criterion_main!(benches);
