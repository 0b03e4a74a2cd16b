//! Edge-state hot paths: applying NodeStats with 10,000 connected edges (DESIGN.md §10 target:
//! ≥ 100,000 per second), and resident memory per connected edge (target ≤ 4 KiB).
//!
//! `cargo bench --bench edge_state`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use foghorn::edge::{Capabilities, EdgeInfo, EdgeState, SessionHandle, Stats, StreamLoad};

const EDGES: usize = 10_000;

fn info() -> EdgeInfo {
    EdgeInfo {
        cluster_id: "bench".into(),
        owner_tenant_id: None,
        capabilities: Capabilities {
            edge: true,
            ingest: true,
            ..Capabilities::default()
        },
        public_base_url: "https://edge.example.net".into(),
        peer_ip: None,
    }
}

fn stats(i: usize, streams: usize) -> Stats {
    Stats {
        cpu_tenths: (i % 1000) as u16,
        ram_max_bytes: 16 << 30,
        ram_used_bytes: (i as u64 % 16) << 30,
        up_bytes_per_sec: i as u64 * 1_000,
        down_bytes_per_sec: 0,
        bw_limit_bytes_per_sec: 125_000_000,
        latitude: Some(48.0 + (i % 100) as f64 / 100.0),
        longitude: Some(2.0),
        location_name: "bench".into(),
        connections: 10,
        streams: (0..streams)
            .map(|s| StreamLoad {
                internal_name: format!("live+{s:016x}"),
                viewers: 5,
                inputs: 0,
                up_bytes_per_sec: 5_000,
                down_bytes_per_sec: 0,
                replicated: true,
            })
            .collect(),
    }
}

fn connected(n: usize) -> (EdgeState, Vec<SessionHandle>) {
    let state = EdgeState::new(Duration::from_secs(15));
    let handles = (0..n)
        .map(|i| {
            let h = state.attach(&format!("{i:012x}"), info(), 0);
            state.apply_stats(&h, stats(i, 2));
            h
        })
        .collect();
    (state, handles)
}

fn apply_stats(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let (state, handles) = connected(EDGES);
    let mut group = c.benchmark_group("edge_state");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("apply_node_stats_10k_edges_2_streams", |b| {
        b.iter_batched(
            || {
                i = (i + 7919) % EDGES;
                (i, stats(i, 2))
            },
            |(i, s)| black_box(state.apply_stats(&handles[i], s)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Resident memory added by 10,000 connected edges with stats, divided per edge (Linux only).
fn memory_per_edge(c: &mut Criterion) {
    fn rss_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb * 1024)
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    if let Some(before) = rss_bytes() {
        let (state, handles) = connected(EDGES);
        let after = rss_bytes().unwrap_or(before);
        let per_edge = after.saturating_sub(before) / EDGES as u64;
        println!("edge_state/memory: {per_edge} bytes resident per connected edge (edge state only, 2 streams each)");
        black_box((&state, &handles));
    }
    c.bench_function("edge_state/list_10k_edges", |b| {
        let (state, _handles) = connected(EDGES);
        b.iter(|| black_box(state.list().len()))
    });
}

// Memory first: before anything else has allocated and freed, so the allocator cannot hand back
// freed pages and hide what 10,000 edges cost.
criterion_group!(benches, memory_per_edge, apply_stats);
criterion_main!(benches);
