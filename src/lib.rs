//! Foghorn: the control plane of a live-video edge cluster.
//!
//! Crate map, from the domain up (no module imports one above it; only `app` knows them all):
//! - [`names`]: every public host name of DESIGN.md §2; [`net`], [`secret`], [`retry`],
//!   [`metrics`], [`geoip`]: small shared helpers.
//! - [`config`]: configuration: schema, layering (defaults, file, environment, flags), validation.
//! - [`edge`]: in-process state of connected edges (sessions, stats, liveness, pending
//!   bandwidth) and the rules of a control session (§4). No transport types.
//! - [`routing`]: the score and the exact, pruned choice of edges from an immutable snapshot;
//!   one routing decision for every caller.
//! - [`leadership`]: whether this replica leads its cell.
//! - [`federation`]: peering with other clusters' Foghorns (§7): the [`federation::Hub`],
//!   channels, mailbox, supervision, feed, on-demand arrangement, behind small ports.
//! - [`registry`]: the SQL store (PostgreSQL or SQLite) of clusters, tenants, tokens, nodes,
//!   streams; federation's directory.
//! - [`wire`]: protobuf ↔ domain conversion of federation frames, for gRPC and the Redis relay.
//! - [`replicas`]: Redis shared by a cell's replicas: edge-state sync, fencing, leader lease, the
//!   federation relay.
//! - [`tls`]: the cluster certificate (dev CA or operator files) and TLS on the listeners.
//! - [`state`]: [`state::AppState`], what every adapter shares about one served cluster;
//!   [`cell`]: the clusters this Foghorn serves, and which one a request is for.
//! - [`api`]: what tenants and operators can do, shared by the REST API and the MCP tools.
//! - [`grpc`]: tonic adapters: the Helmsman control stream, provisioning, federation (server
//!   and client), health and reflection.
//! - [`http`]: hyper + axum: the viewer redirect, MistServer API, tenant API, MCP, health.
//! - [`app`]: wiring, start and graceful shutdown of the whole server.
//! - [`logging`]: the tracing subscriber, which no secret gets through.
//! - [`admin`]: `foghorn admin ...` commands acting on the registry.
//! - [`sim`]: a Helmsman simulator speaking the real protocol, for tests, benches and demos.
//! - [`cli`]: the `frameworks` operator CLI.

pub mod acme;
pub mod admin;
pub mod api;
pub mod app;
pub mod cell;
pub mod cli;
pub mod config;
pub mod dns;
pub mod edge;
pub mod federation;
pub mod geoip;
pub mod grpc;
pub mod http;
pub mod leadership;
pub mod logging;
pub mod metrics;
pub mod mist_servers;
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
