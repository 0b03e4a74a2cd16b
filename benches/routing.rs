//! Routing decisions (DESIGN.md §10: ≥ 500,000 decisions/s per core with 1,000 local + 10,000
//! remote edges, exactly the exhaustive winner) and snapshot rebuilds.
//!
//! `cargo bench --bench routing`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use foghorn::edge::Pending;
use foghorn::routing::{Candidate, Need, Pool, Position, Request, Snapshot, StreamRef, Weights};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// Edges around real-looking sites: local ones near Frankfurt, remote ones spread over ten
/// other metro areas, loads random, a few streams carried here and there.
fn pool(local: usize, remote: usize, rng: &mut StdRng) -> Vec<Candidate> {
    let sites = [
        (40.7, -74.0),
        (51.5, -0.12),
        (48.85, 2.35),
        (35.7, 139.7),
        (-33.9, 151.2),
        (37.8, -122.4),
        (1.35, 103.8),
        (-23.5, -46.6),
        (55.75, 37.6),
        (19.4, -99.1),
    ];
    let fresh = Instant::now() + Duration::from_secs(3600);
    (0..local + remote)
        .map(|i| {
            let remote_edge = i >= local;
            let (lat, lon) = if remote_edge {
                sites[i % sites.len()]
            } else {
                (50.11, 8.68)
            };
            let streams: Vec<StreamRef> = if i % 50 == 0 {
                vec![StreamRef::named("live+popular")]
            } else {
                vec![]
            };
            Candidate {
                node_id: Arc::from(format!("{i:012x}").as_str()),
                cluster_id: Arc::from(if remote_edge { "peer" } else { "local" }),
                remote: remote_edge,
                base_url: Arc::from(""),
                serves_viewers: true,
                takes_ingest: true,
                cpu_tenths: rng.random_range(0..900),
                ram_used: rng.random_range(1u64..15) << 30,
                ram_max: 16 << 30,
                up: rng.random_range(0..100_000_000),
                bw_limit: 125_000_000,
                position: Position::from_degrees(
                    lat + rng.random_range(-2.0..2.0),
                    lon + rng.random_range(-2.0..2.0),
                ),
                fresh_until: fresh,
                pending: Arc::new(Pending::default()),
                streams: streams.into(),
                connections: 0,
                ip: None,
            }
        })
        .collect()
}

/// The peered cluster whose edges the viewers' tenant may use.
static PEERS: std::sync::LazyLock<[Arc<str>; 1]> = std::sync::LazyLock::new(|| [Arc::from("peer")]);

/// A viewer at `viewer` asking for the popular stream.
fn viewing(viewer: Option<Position>, now: Instant) -> Request<'static> {
    Request {
        viewer,
        stream: Some("live+popular"),
        need: Need::Viewers,
        now,
        remote_clusters: &*PEERS,
    }
}

fn decisions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut rng = StdRng::seed_from_u64(42);
    let viewers: Vec<Option<Position>> = (0..1024)
        .map(|_| {
            Position::from_degrees(rng.random_range(35.0..60.0), rng.random_range(-10.0..30.0))
        })
        .collect();
    let mut group = c.benchmark_group("routing/decision");
    group.throughput(Throughput::Elements(1));
    // The cell sizes of `scripts/bench-edges` (18,000) and its projection (100,000) too.
    for (local, remote) in [
        (100, 0),
        (1_000, 0),
        (1_000, 10_000),
        (18_000, 0),
        (100_000, 0),
    ] {
        let snapshot = Snapshot::build(Weights::default(), pool(local, remote, &mut rng));
        let now = Instant::now();
        // Every viewer's answer is checked against the exhaustive scan before timing.
        for v in &viewers {
            let req = viewing(*v, now);
            assert_eq!(snapshot.rank(&req, 1), snapshot.rank_exhaustive(&req, 1));
        }
        let label = format!("{local}_local_{remote}_remote");
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("fast_top1", &label), |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(snapshot.rank(&viewing(viewers[i], now), 1))
            })
        });
        group.bench_function(BenchmarkId::new("fast_top5", &label), |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(snapshot.rank(&viewing(viewers[i], now), 5))
            })
        });
        if local + remote <= 1_000 {
            group.bench_function(BenchmarkId::new("exhaustive_top1", &label), |b| {
                b.iter(|| {
                    i = (i + 1) & 1023;
                    black_box(snapshot.rank_exhaustive(&viewing(viewers[i], now), 1))
                })
            });
        }
    }
    group.finish();

    // A flood: one stream, viewers of unknown position, every decision charged to its winner
    // when it is local (as `/play` does), the local pool rebuilt every 400 decisions (20 ms at
    // 20,000 req/s) or every 2,000 (20 ms at 100,000 req/s) and paired with the remote pool built
    // once, as the router does. This is what `scripts/bench-http` does to the router.
    let mut group = c.benchmark_group("routing/flood");
    group.throughput(Throughput::Elements(1));
    for (local, remote, every) in [
        (1_000, 0, 400),
        (1_000, 10_000, 400),
        (1_000, 10_000, 2_000),
    ] {
        let (remote_edges, local_edges): (Vec<Candidate>, Vec<Candidate>) =
            pool(local, remote, &mut rng)
                .into_iter()
                .partition(|c| c.remote);
        let w = Weights::default();
        let remote_pool = Arc::new(Pool::build(w, remote_edges));
        let build = || {
            Snapshot::from_pools(
                Arc::new(Pool::build(w, local_edges.clone())),
                remote_pool.clone(),
            )
        };
        let mut snapshot = build();
        let mut n = 0u64;
        group.bench_function(
            BenchmarkId::new(
                "charged_top1",
                format!("{local}_local_{remote}_remote_rebuild_{every}"),
            ),
            |b| {
                b.iter(|| {
                    n += 1;
                    if n.is_multiple_of(every) {
                        snapshot = build();
                    }
                    let req = viewing(None, Instant::now());
                    let top = snapshot.rank(&req, 1);
                    if let Some(p) = top.first() {
                        if !snapshot.candidate(p).remote {
                            snapshot.charge(p.index, 128 * 1024, req.now);
                        }
                    }
                    black_box(top)
                })
            },
        );
    }
    // A flood that ran a cluster nearly dry: every decision charged its winner (local or
    // remote) as `/play` does, 1 MiB/s (the largest per-viewer estimate, so that `cargo test`,
    // which runs this setup in a debug build, gets there in seconds), until nine edges in ten
    // had no bandwidth left, with no
    // rebuild since (the remote pool is rebuilt only when a peer's summary comes). Then each
    // decision charges its winner 1 byte/s, so the tenth left never runs dry and every
    // iteration meets the same pool.
    let (local, remote) = (1_000, 10_000);
    let snapshot = Snapshot::build(Weights::default(), pool(local, remote, &mut rng));
    let dry = |s: &Snapshot| {
        s.candidates()
            .filter(|c| c.up + c.pending.current() >= c.bw_limit)
            .count()
    };
    while dry(&snapshot) * 10 < snapshot.len() * 9 {
        for _ in 0..10_000 {
            let req = viewing(None, Instant::now());
            if let Some(p) = snapshot.rank(&req, 1).first() {
                snapshot.charge(p.index, 1 << 20, req.now);
            }
        }
    }
    group.bench_function(
        BenchmarkId::new(
            "nine_in_ten_exhausted_top1",
            format!("{local}_local_{remote}_remote"),
        ),
        |b| {
            b.iter(|| {
                let req = viewing(None, Instant::now());
                let top = snapshot.rank(&req, 1);
                if let Some(p) = top.first() {
                    snapshot.charge(p.index, 1, req.now);
                }
                black_box(top)
            })
        },
    );
    group.finish();

    let mut group = c.benchmark_group("routing/rebuild");
    for (local, remote) in [(1_000, 0), (1_000, 10_000)] {
        let candidates = pool(local, remote, &mut rng);
        group.bench_function(
            BenchmarkId::from_parameter(format!("{local}_local_{remote}_remote")),
            |b| b.iter(|| black_box(Snapshot::build(Weights::default(), candidates.clone()))),
        );
    }
    // What an edge change costs the router: the local pool only, paired with the remote pool.
    let (remote_edges, local_edges): (Vec<Candidate>, Vec<Candidate>) =
        pool(1_000, 10_000, &mut rng)
            .into_iter()
            .partition(|c| c.remote);
    let remote_pool = Arc::new(Pool::build(Weights::default(), remote_edges));
    group.bench_function("local_pool_1000_with_10000_remote", |b| {
        b.iter(|| {
            black_box(Snapshot::from_pools(
                Arc::new(Pool::build(Weights::default(), local_edges.clone())),
                remote_pool.clone(),
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
