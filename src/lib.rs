//! Foghorn: the control plane of a live-video edge cluster.
//!
//! Crate map:
//! - [`config`]: typed, layered, validated configuration.
//! - [`registry`]: the SQL store (PostgreSQL or SQLite) of clusters, tenants, tokens, nodes, streams.
//! - [`edge`]: in-process state of connected edges: sessions, stats, liveness; the rules of a
//!   control session. No transport types.
//! - [`federation`]: peering with other clusters' Foghorns: edge summaries, remote edges.
//! - [`routing`]: the score and the exact, pruned choice of edges from an immutable snapshot.
//! - [`grpc`]: tonic adapters: the Helmsman control stream, health and reflection.
//! - [`api`]: what tenants and operators can do, shared by the REST API and the MCP tools.
//! - [`http`]: axum routers: health, readiness, metrics, the operator API.
//! - [`app`]: wiring, start and graceful shutdown of the whole server.
//! - [`logging`]: the tracing subscriber, which no secret gets through.
//! - [`admin`]: `foghorn admin ...` commands acting on the registry.
//! - [`sim`]: a Helmsman simulator speaking the real protocol, for tests, benches and demos.
//! - [`tls`]: the cluster certificate (dev CA or operator files) and TLS on the listeners.
//! - [`cli`]: the `frameworks` operator CLI.

pub mod admin;
pub mod api;
pub mod app;

pub mod cli;
pub mod config;
pub mod edge;
pub mod federation;
pub mod geoip;
pub mod grpc;
pub mod http;
pub mod leadership;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod net;
pub mod registry;
pub mod replicas;
pub mod retry;
pub mod routing;
pub mod secret;
pub mod sim;
pub mod state;
pub mod tls;
pub mod wire;

/// Generated protobuf and gRPC code for `proto/foghorn/v1`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("foghorn.v1");

    /// Encoded descriptor set of every proto, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/foghorn_descriptor.bin"));
}
