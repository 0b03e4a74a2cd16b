//! A Foghorn for `scripts/bench-http`: the real server (SQLite in a temp dir) plus 10,000 remote
//! edges injected as a peer's summary would, a tenant, a stream and an enrollment token for the
//! simulator. Prints one JSON line with what the script needs, then serves until Ctrl-C.
//!
//! `cargo run --release --example bench_server -- HTTP_ADDR GRPC_ADDR [REMOTE_EDGES]`

use std::time::Duration;

use foghorn::registry::{NewEnrollmentToken, Role};
use foghorn::routing::RemoteEdge;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The allocator of the `foghorn` binary, so the benchmark measures what operators run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn remote_edges(n: usize) -> Vec<RemoteEdge> {
    let sites = [
        (40.7, -74.0),
        (51.5, -0.12),
        (35.7, 139.7),
        (-33.9, 151.2),
        (37.8, -122.4),
        (1.35, 103.8),
        (-23.5, -46.6),
        (55.75, 37.6),
        (19.4, -99.1),
        (28.6, 77.2),
    ];
    let mut rng = StdRng::seed_from_u64(7);
    let expires_at = tokio::time::Instant::now() + Duration::from_secs(24 * 3600);
    (0..n)
        .map(|i| {
            let (lat, lon) = sites[i % sites.len()];
            RemoteEdge {
                node_id: format!("{:012x}", 0xf000_0000_0000u64 + i as u64).into(),
                base_url: format!("https://edge-{i}.peer.example.net").into(),
                serves_viewers: true,
                cpu_tenths: rng.random_range(0..900),
                ram_used: rng.random_range(1u64..15) << 30,
                ram_max: 16 << 30,
                up: rng.random_range(0..100_000_000),
                bw_limit: 125_000_000,
                latitude: Some(lat + rng.random_range(-2.0..2.0)),
                longitude: Some(lon + rng.random_range(-2.0..2.0)),
                streams: Vec::new(),
                expires_at,
            }
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (http, grpc) = match (args.get(1), args.get(2)) {
        (Some(h), Some(g)) => (h.clone(), g.clone()),
        _ => anyhow::bail!("usage: bench_server HTTP_ADDR GRPC_ADDR [REMOTE_EDGES]"),
    };
    let remote: usize = args.get(3).map_or(Ok(10_000), |s| s.parse())?;
    let data = tempfile::tempdir()?;
    let mut config = foghorn::config::Config::default();
    config.server.http_addr = http.parse()?;
    config.server.grpc_addr = grpc.parse()?;
    config.server.data_dir = data.path().to_path_buf();
    config.log.filter = "warn".into();
    let server = foghorn::app::start(config).await?;
    let state = &server.state;
    let tenant = state.registry.create_tenant("bench", "local").await?;
    let (_, operator) = state
        .registry
        .create_api_token(&tenant.id, Role::Operator)
        .await?;
    let (_, enroll) = state
        .registry
        .create_enrollment_token(&NewEnrollmentToken {
            cluster_id: "local".into(),
            tenant_id: tenant.id.clone(),
            usage_limit: 100_000,
            expires_at: foghorn::registry::now_ms() + 24 * 3_600_000,
            expected_cidr: None,
        })
        .await?;
    let (stream, _) = state.registry.create_stream(&tenant.id, "bench").await?;
    state
        .router
        .set_remote_edges("peer", remote_edges(remote), tokio::time::Instant::now());
    println!(
        "{}",
        serde_json::json!({
            "playback_id": stream.playback_id,
            "enrollment_token": enroll,
            "operator_token": operator,
            "remote_edges": remote,
            // The cluster certificate (ECDSA P-256 from the dev CA) nginx serves in the HTTPS runs.
            "tls_dir": data.path().join("tls"),
        })
    );
    tokio::signal::ctrl_c().await?;
    server.shutdown().await
}
