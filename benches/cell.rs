//! A cell serving many clusters (issue 18): the home cluster's routing decision with 1,000 other
//! clusters of 3 edges each served beside it, against the same decision in a cell serving it
//! alone (target: within 10 %). Each cluster has its own edge state and snapshot, so the other
//! clusters cost the decision nothing but cache room.
//!
//! `cargo bench --bench cell`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use foghorn::edge::{Capabilities, EdgeInfo, EdgeState, SessionHandle, Stats, StreamLoad};
use foghorn::metrics::Metrics;
use foghorn::routing::{Ask, Position, Router};
use tokio::time::Instant;

const ROOT: &str = "example.net";
const HOME_EDGES: usize = 1_000;
const OTHER_CLUSTERS: usize = 1_000;
const EDGES_PER_OTHER: usize = 3;

fn stats(i: usize) -> Stats {
    Stats {
        cpu_tenths: (i * 37 % 1000) as u16,
        ram_max_bytes: 16 << 30,
        ram_used_bytes: (i as u64 % 16) << 30,
        up_bytes_per_sec: (i as u64 % 100) * 100_000,
        down_bytes_per_sec: 0,
        bw_limit_bytes_per_sec: 125_000_000,
        latitude: Some(40.0 + (i % 200) as f64 / 10.0),
        longitude: Some(-5.0 + (i % 300) as f64 / 10.0),
        location_name: "bench".into(),
        connections: 10,
        streams: vec![StreamLoad {
            internal_name: format!("live+{:016x}", i % 50),
            viewers: 5,
            inputs: 0,
            up_bytes_per_sec: 5_000,
            down_bytes_per_sec: 0,
            replicated: true,
        }],
    }
}

/// One served cluster's routing: `n` connected edges reporting, the snapshot built.
fn cluster(id: &str, n: usize) -> (Arc<Router>, Vec<SessionHandle>) {
    let edges = Arc::new(EdgeState::new(Duration::from_secs(3600)));
    let handles = (0..n)
        .map(|i| {
            let info = EdgeInfo {
                cluster_id: id.into(),
                owner_tenant_id: None,
                capabilities: Capabilities {
                    edge: true,
                    ingest: true,
                    ..Capabilities::default()
                },
                public_base_url: String::new(),
                peer_ip: None,
            };
            let h = edges.attach(&format!("{id:.6}{i:06x}"), info, 0);
            edges.apply_stats(&h, stats(i));
            h
        })
        .collect();
    let router = Router::new(edges, id, ROOT, Arc::new(Metrics::new()));
    router.rebuild();
    (router, handles)
}

fn decisions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let (home, _home_edges) = cluster("home", HOME_EDGES);
    let viewer = Position::from_degrees(48.85, 2.35);
    let decide = |router: &Router| {
        let snapshot = router.snapshot();
        black_box(snapshot.decide_best(
            black_box(viewer),
            Ask::local_viewer(black_box("live+0000000000000007")),
            Instant::now(),
        ))
    };
    let mut group = c.benchmark_group("cell");
    group.throughput(Throughput::Elements(1));
    group.bench_function("home_decision_1000_edges_served_alone", |b| {
        b.iter(|| decide(&home))
    });
    let others: Vec<_> = (0..OTHER_CLUSTERS)
        .map(|i| cluster(&format!("lab-{i:04}"), EDGES_PER_OTHER))
        .collect();
    group.bench_function("home_decision_1000_edges_beside_1000_idle_clusters", |b| {
        b.iter(|| decide(&home))
    });
    // Decisions for the other clusters interleaved, as a cell's viewers would send them, so
    // their snapshots compete with the home cluster's for the caches.
    let mut next = 0usize;
    group.bench_function("home_decision_1000_edges_beside_1000_clusters", |b| {
        b.iter(|| {
            next = (next + 1) % OTHER_CLUSTERS;
            decide(&others[next].0);
            decide(&home)
        })
    });
    group.bench_function("other_cluster_decision_alone_in_the_mix", |b| {
        b.iter(|| {
            next = (next + 1) % OTHER_CLUSTERS;
            decide(&others[next].0)
        })
    });
    group.finish();
    drop(others);
}

criterion_group!(benches, decisions);
criterion_main!(benches);
