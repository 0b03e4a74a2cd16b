//! Shared test support for the whole-server tests, one concern per file:
//!
//! - `db`: throw-away databases on the private PostgreSQL that `./scripts/test` starts and SQLite
//!   files in temp dirs, and `on_both!` to run a test on each;
//! - `server`: whole Foghorn servers in this process on port 0;
//! - `dns`: DNS questions over UDP and TCP, and a real BIND 9 primary;
//! - `edges`: simulated edges over raw control streams;
//! - `redis`: the shared Redis, private Redis servers a test may crash, Sentinel and Cluster
//!   deployments, `on_each_redis!` to run a test on one server and on a cluster, and a
//!   partitioning proxy;
//! - `https`: HTTPS by hand, trusting only a given CA;
//! - `pebble`: a real ACME CA (pebble) on free ports;
//! - `ports`: free port numbers for servers that take a fixed one (BIND, pebble, Redis);
//! - `raw_http`: HTTP/1.1 by hand over TCP;
//! - `wait`: `eventually`, for conditions another task brings about.
//!
//! Everything is re-exported here, so tests name it `common::X`. Each test binary uses a part of
//! it: items and re-exports that one binary leaves unused are not dead in the suite.
#![allow(dead_code)]

#[macro_use]
mod db;
mod dns;
mod edges;
mod https;
mod pebble;
mod ports;
mod raw_http;
#[macro_use]
mod redis;
mod server;
mod wait;

#[allow(unused_imports)]
pub use self::db::{postgres_admin_url, Db, TestDb};
#[allow(unused_imports)]
pub use self::dns::{ask, ask_with, code_of, exchange_tcp, exchange_udp, Bind};
#[allow(unused_imports)]
pub use self::edges::{
    enroll, ingest_frame, register_frame, register_with_credential, register_with_token,
    stalled_pre_registration, stats_frame, stats_frame_at_cpu, EdgeConn,
};
#[allow(unused_imports)]
pub use self::https::{ca_and_leaf, client_config, ders, https_get};
#[allow(unused_imports)]
pub use self::pebble::Pebble;
#[allow(unused_imports)]
pub use self::ports::free_port;
#[allow(unused_imports)]
pub use self::raw_http::{
    accept_queue, parse_head, raw_request, read_response, until_closed, RawResponse,
};
#[allow(unused_imports)]
pub use self::redis::{
    keys_on, redis_url, Proxy, RedisCluster, RedisKind, RedisProc, Sentinels, TestRedis,
    SENTINEL_MASTER,
};
#[allow(unused_imports)]
pub use self::server::TestServer;
#[allow(unused_imports)]
pub use self::wait::eventually;
