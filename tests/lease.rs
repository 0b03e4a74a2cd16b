//! The leader lease against the real Redis `./scripts/test` starts.

mod common;

use std::time::Duration;

use foghorn::replicas::{Lease, RedisLink};
use tokio_util::sync::CancellationToken;

async fn link() -> RedisLink {
    let link = RedisLink::new(&common::redis_url()).expect("redis url");
    // Supervises the connection for the rest of the test.
    tokio::spawn(link.clone().run(CancellationToken::new()));
    tokio::time::timeout(Duration::from_secs(10), link.connected())
        .await
        .expect("connected to Redis");
    assert!(link.connection().is_some(), "connected");
    link
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_handover_on_release_and_on_expiry() {
    let cluster = format!("lease-{}", uuid::Uuid::new_v4().simple());
    let ttl = Duration::from_millis(400);
    let mut a = Lease::new(link().await, &cluster, "replica-a", ttl);
    let mut b = Lease::new(link().await, &cluster, "replica-b", ttl);

    assert!(a.hold().await, "a free lease is taken");
    assert!(!b.hold().await, "a held lease is not");
    assert!(a.hold().await, "the holder renews");
    assert!(a.is_leader() && !b.is_leader());

    // Released on shutdown: the other replica takes over at once.
    a.release().await;
    assert!(!a.is_leader());
    assert!(b.hold().await);
    assert!(!a.hold().await);

    // The leader stops renewing: it stops counting itself leader before the key expires, and
    // the other replica can take over only after that.
    let stopped = tokio::time::Instant::now();
    while b.is_leader() {
        assert!(!a.hold().await, "two leaders at once");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stopped.elapsed() < ttl);
    let deadline = tokio::time::Instant::now() + ttl * 2;
    while !a.hold().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.is_leader() && !b.is_leader());
    assert!(!b.hold().await);
    a.release().await;
}
