//! `ClusterEdgeSummary` for 1,000 and 10,000 edges (DESIGN.md §10: build + send + apply ≤ 50 ms,
//! ≤ 1 MB): build (average the window's samples), encode (wire form + protobuf), and apply on the
//! peer (decode, check, convert, rebuild the remote routing pool). Prints the encoded size.
//!
//! `build_send_apply` does it all over a real `PeerChannel`: tonic client and server on
//! loopback TCP (HTTP/2, the federation message limits), the server decoding, checking and
//! applying each summary through the peer state exactly as a Foghorn does, then answering with a
//! heartbeat, which the client awaits before the next summary.
//!
//!   cargo bench --bench federation

use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use foghorn::edge::{Capabilities, EdgeInfo, EdgeState, EdgeView, Mode, Stats, StreamLoad};
use foghorn::federation::{Peers, Smoother, Ttls};
use foghorn::metrics::Metrics;
use foghorn::proto::federation_client::FederationClient;
use foghorn::proto::federation_server::{Federation, FederationServer};
use foghorn::proto::{
    peer_message, ArrangeOriginPullRequest, ClusterEdgeSummary, NotifyOriginPullRequest,
    NotifyOriginPullResponse, PeerHeartbeat, PeerMessage, QueryStreamRequest, QueryStreamResponse,
};
use foghorn::routing::Router;
use foghorn::wire::MAX_MESSAGE_BYTES;
use foghorn::wire::{summary_from_proto, summary_to_proto};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

// The allocator of the `foghorn` binary: a summary is thousands of small allocations.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROOT: &str = "example.net";

fn views(n: usize, rng: &mut StdRng) -> Vec<EdgeView> {
    (0..n)
        .map(|i| EdgeView {
            node_id: format!("{:012x}", i * 7919 + 1),
            info: EdgeInfo {
                cluster_id: "eu".into(),
                capabilities: Capabilities {
                    ingest: true,
                    edge: true,
                    ..Capabilities::default()
                },
                ..EdgeInfo::default()
            },
            mode: Mode::Normal,
            connected: true,
            replica: None,
            routable: true,
            last_stats_age_ms: Some(1_000),
            connected_for_ms: Some(60_000),
            stats: Some(Stats {
                cpu_tenths: rng.random_range(0..1000),
                ram_max_bytes: 32 << 30,
                ram_used_bytes: rng.random_range(1u64..30) << 30,
                up_bytes_per_sec: rng.random_range(0..100_000_000),
                bw_limit_bytes_per_sec: 125_000_000,
                latitude: Some(rng.random_range(35.0..60.0)),
                longitude: Some(rng.random_range(-10.0..30.0)),
                // A few streams per edge, from a catalogue of 200.
                streams: (0..3)
                    .map(|_| StreamLoad {
                        internal_name: format!("live+{:016x}", rng.random_range(0..200u64)),
                        viewers: rng.random_range(0..500),
                        inputs: 0,
                        ..StreamLoad::default()
                    })
                    .collect(),
                ..Stats::default()
            }),
        })
        .collect()
}

/// The receiving Foghorn's side of a channel: applies every summary to its peer state (which
/// rebuilds its remote routing pool), then acknowledges it.
struct Receiver {
    peers: Arc<Peers>,
}

type Frames = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Federation for Receiver {
    type PeerChannelStream = Frames;

    async fn peer_channel(
        &self,
        request: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<Frames>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let peers = self.peers.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = inbound.next().await {
                if let Some(peer_message::Payload::Summary(wire)) = frame.payload {
                    let summary = summary_from_proto(&wire, "eu", ROOT).expect("valid");
                    peers.on_summary("eu", summary);
                    let ack = PeerMessage {
                        payload: Some(peer_message::Payload::Heartbeat(PeerHeartbeat {
                            cluster_id: "us".into(),
                            sent_at_unix_ms: 0,
                        })),
                    };
                    if tx.send(Ok(ack)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn query_stream(
        &self,
        _: Request<QueryStreamRequest>,
    ) -> Result<Response<QueryStreamResponse>, Status> {
        Err(Status::unimplemented("not in this bench"))
    }

    async fn notify_origin_pull(
        &self,
        _: Request<NotifyOriginPullRequest>,
    ) -> Result<Response<NotifyOriginPullResponse>, Status> {
        Err(Status::unimplemented("not in this bench"))
    }

    async fn arrange_origin_pull(
        &self,
        _: Request<ArrangeOriginPullRequest>,
    ) -> Result<Response<NotifyOriginPullResponse>, Status> {
        Err(Status::unimplemented("not in this bench"))
    }
}

/// A channel to a [`Receiver`] on loopback: the sender of summaries and the stream of acks.
async fn channel_to_receiver() -> (mpsc::Sender<PeerMessage>, Streaming<PeerMessage>) {
    let router = Router::new(
        Arc::new(EdgeState::new(Duration::from_secs(15))),
        "us",
        ROOT,
        Arc::new(Metrics::new()),
    );
    let ttls = Ttls {
        summary: Duration::from_secs(90),
        heartbeat: Duration::from_secs(30),
        unadvertised: Duration::from_secs(30),
    };
    let receiver = Receiver {
        peers: Arc::new(Peers::new("us", ttls, router)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                FederationServer::new(receiver)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect");
    let mut client = FederationClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel(4);
    let acks = client
        .peer_channel(ReceiverStream::new(rx))
        .await
        .expect("channel")
        .into_inner();
    (tx, acks)
}

fn summary(c: &mut Criterion) {
    let network = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("cluster_edge_summary");
    for n in [1_000usize, 10_000] {
        let mut rng = StdRng::seed_from_u64(11);
        let mut smoother = Smoother::new(Duration::from_secs(30));
        let url = |node: &str| format!("https://edge-{node}.eu.{ROOT}");
        // Six samples: 30 s at the default 5 s interval.
        for _ in 0..6 {
            smoother.observe(Instant::now(), &views(n, &mut rng), url);
        }
        let built = smoother.summary("eu");
        let bytes = summary_to_proto(&built, ROOT).encode_to_vec();
        let mut without_streams = built.clone();
        without_streams
            .edges
            .iter_mut()
            .for_each(|e| e.streams.clear());
        let bare = summary_to_proto(&without_streams, ROOT).encode_to_vec();
        println!(
            "{n} edges: {} bytes ({:.1} per edge) with 3 streams each, {} bytes ({:.1} per edge) \
             without streams",
            bytes.len(),
            bytes.len() as f64 / n as f64,
            bare.len(),
            bare.len() as f64 / n as f64
        );

        group.bench_with_input(BenchmarkId::new("build", n), &n, |b, _| {
            b.iter(|| black_box(smoother.summary("eu")))
        });
        group.bench_with_input(BenchmarkId::new("encode", n), &n, |b, _| {
            b.iter(|| black_box(summary_to_proto(&built, ROOT).encode_to_vec()))
        });
        let router = Router::new(
            Arc::new(EdgeState::new(Duration::from_secs(15))),
            "us",
            ROOT,
            Arc::new(Metrics::new()),
        );
        // What the worker a summary arrives on does: decode, check, queue it for the router.
        let arrive = |bytes: &[u8]| {
            let wire = ClusterEdgeSummary::decode(bytes).expect("decode");
            let summary = summary_from_proto(&wire, "eu", ROOT).expect("valid");
            let edges = summary.remote_edges(Instant::now() + Duration::from_secs(90));
            router.set_remote_edges("eu", edges, Instant::now());
        };
        group.bench_with_input(BenchmarkId::new("apply", n), &n, |b, _| {
            b.iter(|| {
                arrive(&bytes);
                // What the routing builder then does with it.
                router.rebuild();
            })
        });
        // The part of "apply" paid where the frame arrives (decode, checks, the summary queued
        // for the router); the builder's conversion and index of the edges are not timed.
        group.bench_with_input(BenchmarkId::new("apply_arrival", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let started = std::time::Instant::now();
                    arrive(&bytes);
                    timed += started.elapsed();
                    router.rebuild();
                }
                timed
            })
        });
        group.bench_with_input(BenchmarkId::new("build_encode_apply", n), &n, |b, _| {
            b.iter(|| {
                arrive(&summary_to_proto(&smoother.summary("eu"), ROOT).encode_to_vec());
                router.rebuild();
            })
        });
        let (tx, mut acks) = network.block_on(channel_to_receiver());
        group.bench_with_input(BenchmarkId::new("build_send_apply", n), &n, |b, _| {
            b.iter(|| {
                let frame = PeerMessage {
                    payload: Some(peer_message::Payload::Summary(summary_to_proto(
                        &smoother.summary("eu"),
                        ROOT,
                    ))),
                };
                network.block_on(async {
                    tx.send(frame).await.expect("send");
                    acks.message().await.expect("ack").expect("frame");
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = summary
}
criterion_main!(benches);
