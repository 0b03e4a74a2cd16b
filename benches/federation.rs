//! `ClusterEdgeSummary` for 1,000 and 10,000 edges (DESIGN.md §10: build + send + apply ≤ 50 ms,
//! ≤ 1 MB): build (average the window's samples), encode (wire form + protobuf), and apply on the
//! peer (decode, check, convert, rebuild the remote routing pool). Prints the encoded size.
//!
//!   cargo bench --bench federation

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use foghorn::edge::{Capabilities, EdgeInfo, EdgeState, EdgeView, Mode, Stats, StreamLoad};
use foghorn::federation::Smoother;
use foghorn::grpc::peer::{summary_from_proto, summary_to_proto};
use foghorn::metrics::Metrics;
use foghorn::proto::ClusterEdgeSummary;
use foghorn::routing::Router;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

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

fn summary(c: &mut Criterion) {
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
        group.bench_with_input(BenchmarkId::new("apply", n), &n, |b, _| {
            b.iter(|| {
                let wire = ClusterEdgeSummary::decode(bytes.as_slice()).expect("decode");
                let summary = summary_from_proto(&wire, "eu", ROOT).expect("valid");
                let edges = summary.remote_edges(Instant::now() + Duration::from_secs(90));
                router.set_remote_edges("eu", edges);
            })
        });
        group.bench_with_input(BenchmarkId::new("build_encode_apply", n), &n, |b, _| {
            b.iter(|| {
                let bytes = summary_to_proto(&smoother.summary("eu"), ROOT).encode_to_vec();
                let wire = ClusterEdgeSummary::decode(bytes.as_slice()).expect("decode");
                let summary = summary_from_proto(&wire, "eu", ROOT).expect("valid");
                router.set_remote_edges(
                    "eu",
                    summary.remote_edges(Instant::now() + Duration::from_secs(90)),
                );
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
