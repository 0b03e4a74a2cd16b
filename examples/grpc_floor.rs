//! The floor under Foghorn's resident memory per connected edge: a bare tonic server (the same
//! tonic, hyper and h2 as Foghorn, the same allocator and HTTP/2 keep-alive settings) that holds
//! one open server-streaming call (`grpc.health.v1.Health/Watch`) per connection and does nothing
//! else. What it holds per connection is what the gRPC transport alone costs; whatever Foghorn
//! holds per edge above that is Foghorn's own.
//!
//!   grpc_floor serve ADDR                  listens on ADDR (its resident memory is read from
//!                                          /proc by whoever runs it)
//!   grpc_floor connect URL N               opens N connections to URL, one open Watch on each,
//!                                          prints "connected N" and holds them until killed
//!
//! `./scripts/bench-edges` runs it beside Foghorn for each edge count it measures.

use std::time::Duration;

use anyhow::Context;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn serve(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    // As Foghorn's gRPC listener (`grpc::serve`).
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health)
        .serve(addr)
        .await
        .context("serving")
}

async fn connect(url: String, n: usize) -> anyhow::Result<()> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        // A channel of its own for each: one HTTP/2 connection per simulated edge.
        let channel = tonic::transport::Endpoint::from_shared(url.clone())?
            .connect()
            .await
            .context("connecting")?;
        let mut watch = HealthClient::new(channel)
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .context("Watch")?
            .into_inner();
        watch.message().await.context("the first status")?;
        held.push(watch);
    }
    println!("connected {}", held.len());
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2), args.get(3)) {
        (Some("serve"), Some(addr), None) => serve(addr.parse()?).await,
        (Some("connect"), Some(url), Some(n)) => connect(url.clone(), n.parse()?).await,
        _ => anyhow::bail!("usage: grpc_floor serve ADDR | grpc_floor connect URL N"),
    }
}
