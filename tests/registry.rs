//! One storage test suite, run against PostgreSQL and SQLite alike.

#[macro_use]
mod common;

use std::net::IpAddr;

use common::{Db, TestDb};
use foghorn::registry::{
    now_ms, EnrollError, EnrollRequest, IngestVerdict, NewCluster, NewEnrollmentToken,
    NodeAuthError, NodeProfile, PeerEndpoint, Registry, RegistryError, Role, SubscriptionStatus,
    Tier,
};

on_both!(
    clusters_round_trip_and_conflict,
    tenants_need_an_existing_official_cluster,
    api_tokens_authenticate_and_revoke,
    enrollment_refusals_leave_nothing_behind,
    enrollment_consumes_and_credentials_authenticate,
    credentials_checked_together_each_get_their_own_answer,
    racing_edges_single_use_token_exactly_one_wins,
    racing_edges_multi_use_token_exactly_the_limit_wins,
    private_clusters_take_only_their_owners_streams,
    expected_cidr_is_enforced,
    streams_keys_and_live_location,
    migrations_are_idempotent,
    racing_tenants_for_one_invite_exactly_one_joins,
    topology_version_moves_with_every_topology_change,
    cells_report_live_and_clusters_are_assigned_to_them,
);

async fn setup(db: Db) -> (TestDb, Registry, String) {
    let test_db = TestDb::new(db).await;
    let registry = test_db.registry().await;
    registry
        .create_cluster(&NewCluster::platform("alpha", "Alpha"))
        .await
        .expect("cluster");
    let tenant = registry
        .create_tenant("Acme", "alpha")
        .await
        .expect("tenant");
    (test_db, registry, tenant.id)
}

fn token_for(cluster: &str, tenant: &str, uses: i64) -> NewEnrollmentToken {
    NewEnrollmentToken {
        cluster_id: cluster.into(),
        tenant_id: tenant.into(),
        usage_limit: uses,
        expires_at: now_ms() + 60_000,
        expected_cidr: None,
    }
}

fn enroll_req(token: &str, cluster: &str) -> EnrollRequest {
    EnrollRequest {
        token: token.into(),
        cluster_id: cluster.into(),
        peer_ip: Some("127.0.0.1".parse().expect("ip")),
        requested_node_id: None,
        profile: NodeProfile {
            capabilities: "edge".into(),
            ..NodeProfile::default()
        },
    }
}

async fn clusters_round_trip_and_conflict(db: Db) {
    let (_db, registry, _) = setup(db).await;
    let mut new = NewCluster::platform("beta-1", "Beta");
    new.tier = Tier::Dedicated;
    new.requires_approval = true;
    let created = registry.create_cluster(&new).await.expect("create");
    assert_eq!(created.tier, Tier::Dedicated);
    assert!(created.requires_approval);
    assert_eq!(
        registry.cluster("beta-1").await.expect("get"),
        Some(created)
    );
    assert!(matches!(
        registry.create_cluster(&new).await,
        Err(RegistryError::Conflict(_))
    ));
    // ensure_cluster is a no-op on an existing id and keeps the stored row.
    let again = registry
        .ensure_cluster(&NewCluster::platform("beta-1", "Renamed"))
        .await
        .expect("ensure");
    assert_eq!(again.name, "Beta");
    assert!(matches!(
        registry
            .create_cluster(&NewCluster::platform("Bad_Id", "x"))
            .await,
        Err(RegistryError::Invalid(_))
    ));
    let ids: Vec<String> = registry
        .clusters()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, vec!["alpha".to_string(), "beta-1".to_string()]);
}

async fn tenants_need_an_existing_official_cluster(db: Db) {
    let (_db, registry, tenant_id) = setup(db).await;
    let tenant = registry
        .tenant(&tenant_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(tenant.official_cluster_id, "alpha");
    assert_eq!(tenant.preferred_cluster_id, None);
    assert!(matches!(
        registry.create_tenant("X", "nope").await,
        Err(RegistryError::Invalid(_))
    ));
    assert!(matches!(
        registry.create_tenant("  ", "alpha").await,
        Err(RegistryError::Invalid(_))
    ));
}

async fn api_tokens_authenticate_and_revoke(db: Db) {
    let (_db, registry, tenant) = setup(db).await;
    let (token, plain) = registry
        .create_api_token(&tenant, Role::Operator)
        .await
        .expect("token");
    assert!(plain.starts_with("fhk_"));
    let principal = registry
        .authenticate_api_token(&plain)
        .await
        .expect("auth")
        .expect("valid");
    assert_eq!(principal.tenant_id, tenant);
    assert_eq!(principal.role, Role::Operator);
    // Same lookup prefix, wrong secret: refused.
    let mut forged = plain.clone();
    let last = forged.pop().expect("non-empty");
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(
        registry
            .authenticate_api_token(&forged)
            .await
            .expect("auth"),
        None
    );
    assert_eq!(
        registry
            .authenticate_api_token("garbage")
            .await
            .expect("auth"),
        None
    );
    // Another tenant cannot revoke it.
    let other = registry
        .create_tenant("Other", "alpha")
        .await
        .expect("tenant");
    assert!(matches!(
        registry.revoke_api_token(&other.id, &token.id).await,
        Err(RegistryError::NotFound(_))
    ));
    registry
        .revoke_api_token(&tenant, &token.id)
        .await
        .expect("revoke");
    assert_eq!(
        registry.authenticate_api_token(&plain).await.expect("auth"),
        None
    );
}

async fn enrollment_refusals_leave_nothing_behind(db: Db) {
    let (_db, registry, tenant) = setup(db).await;
    registry
        .create_cluster(&NewCluster::platform("other", "Other"))
        .await
        .expect("cluster");

    // Unknown and malformed tokens.
    let fake = format!("enroll_{}", "ab".repeat(24));
    assert!(matches!(
        registry.enroll(&enroll_req(&fake, "alpha")).await,
        Err(EnrollError::Unknown)
    ));
    assert!(matches!(
        registry.enroll(&enroll_req("not-a-token", "alpha")).await,
        Err(EnrollError::Unknown)
    ));

    // Wrong cluster.
    let (_, other_token) = registry
        .create_enrollment_token(&token_for("other", &tenant, 1))
        .await
        .expect("token");
    assert!(matches!(
        registry.enroll(&enroll_req(&other_token, "alpha")).await,
        Err(EnrollError::WrongCluster(c)) if c == "other"
    ));

    // Revoked.
    let (revoked, revoked_plain) = registry
        .create_enrollment_token(&token_for("alpha", &tenant, 1))
        .await
        .expect("token");
    registry
        .revoke_enrollment_token(&revoked.id)
        .await
        .expect("revoke");
    assert!(matches!(
        registry.enroll(&enroll_req(&revoked_plain, "alpha")).await,
        Err(EnrollError::Revoked)
    ));

    // Expired: tokens cannot be created in the past, so age one in the database.
    let (expiring, expiring_plain) = registry
        .create_enrollment_token(&token_for("alpha", &tenant, 1))
        .await
        .expect("token");
    assert!(registry
        .create_enrollment_token(&NewEnrollmentToken {
            expires_at: now_ms() - 1,
            ..token_for("alpha", &tenant, 1)
        })
        .await
        .is_err());
    let pool = sqlx::AnyPool::connect(&_db.url).await.expect("pool");
    sqlx::query("UPDATE enrollment_tokens SET expires_at = $1 WHERE id = $2")
        .bind(now_ms() - 1)
        .bind(&expiring.id)
        .execute(&pool)
        .await
        .expect("age token");
    pool.close().await;
    assert!(matches!(
        registry.enroll(&enroll_req(&expiring_plain, "alpha")).await,
        Err(EnrollError::Expired)
    ));

    // Used up.
    let (used, used_plain) = registry
        .create_enrollment_token(&token_for("alpha", &tenant, 1))
        .await
        .expect("token");
    registry
        .enroll(&enroll_req(&used_plain, "alpha"))
        .await
        .expect("first use");
    assert!(matches!(
        registry.enroll(&enroll_req(&used_plain, "alpha")).await,
        Err(EnrollError::UsedUp)
    ));
    let used = registry
        .enrollment_token(&used.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(used.usage_count, 1);

    // Only the one successful enrollment created a node; every refusal consumed nothing.
    assert_eq!(registry.node_count().await.expect("count"), 1);
    for id in [&revoked.id, &expiring.id] {
        let t = registry
            .enrollment_token(id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(t.usage_count, 0);
    }
}

async fn enrollment_consumes_and_credentials_authenticate(db: Db) {
    let (_db, registry, tenant) = setup(db).await;
    let (token, plain) = registry
        .create_enrollment_token(&token_for("alpha", &tenant, 2))
        .await
        .expect("token");
    assert!(plain.starts_with("enroll_"));
    let a = registry
        .enroll(&enroll_req(&plain, "alpha"))
        .await
        .expect("a");
    let b = registry
        .enroll(&enroll_req(&plain, "alpha"))
        .await
        .expect("b");
    assert_ne!(a.node.node_id, b.node.node_id);
    assert_eq!(a.node.node_id.len(), 12);
    assert!(a
        .node
        .node_id
        .bytes()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(a.node.status, "active");
    assert_eq!(a.node.owner_tenant_id.as_deref(), Some(tenant.as_str()));
    assert_eq!(a.node.external_ip.as_deref(), Some("127.0.0.1"));
    let t = registry
        .enrollment_token(&token.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(t.usage_count, 2);

    let profile = NodeProfile {
        public_base_url: "https://e.example".into(),
        ..NodeProfile::default()
    };
    let ip: Option<IpAddr> = Some("::ffff:10.0.0.9".parse().expect("ip"));
    let node = registry
        .authenticate_node(&a.node.node_id, &a.credential, "alpha", ip, &profile)
        .await
        .expect("credential works");
    assert_eq!(node.public_base_url, "https://e.example");
    assert_eq!(node.external_ip.as_deref(), Some("10.0.0.9"));
    assert!(matches!(
        registry
            .authenticate_node(&a.node.node_id, &b.credential, "alpha", None, &profile)
            .await,
        Err(NodeAuthError::BadCredential)
    ));
    assert!(matches!(
        registry
            .authenticate_node("ffffffffffff", &a.credential, "alpha", None, &profile)
            .await,
        Err(NodeAuthError::BadCredential)
    ));
    assert!(matches!(
        registry
            .authenticate_node(&a.node.node_id, &a.credential, "other", None, &profile)
            .await,
        Err(NodeAuthError::WrongCluster(_))
    ));

    // A pre-registered id is honoured once, for the token that reserved it; an id the edge picks
    // itself is refused; reusing one is refused; refusals consume nothing.
    let (_, plain2) = registry
        .create_enrollment_token(&token_for("alpha", &tenant, 2))
        .await
        .expect("token");
    let mut req = enroll_req(&plain2, "alpha");
    req.requested_node_id = Some("0123456789ab".into());
    assert!(matches!(
        registry.enroll(&req).await,
        Err(EnrollError::NotPreRegistered(_))
    ));
    let reserved = registry
        .pre_register(&plain2, None, Some("0123456789ab"), Some("host-1"))
        .await
        .expect("pre-register")
        .reservation;
    assert_eq!(reserved.node_id, "0123456789ab");
    let again = registry
        .pre_register(&plain2, None, None, Some("host-1"))
        .await
        .expect("same reservation")
        .reservation;
    assert_eq!(
        again, reserved,
        "the same host asking again gets the same reservation"
    );
    let anonymous = registry
        .pre_register(&plain2, None, None, None)
        .await
        .expect("another reservation")
        .reservation;
    let anonymous_again = registry
        .pre_register(&plain2, None, None, None)
        .await
        .expect("yet another reservation")
        .reservation;
    assert_ne!(
        anonymous.node_id, anonymous_again.node_id,
        "no host, no sharing"
    );
    assert!(matches!(
        registry
            .pre_register(&plain2, None, Some(&"a".repeat(59)), None)
            .await,
        Err(EnrollError::NodeIdUnavailable(_))
    ));
    assert_eq!(
        registry
            .enrollment_token(&reserved.enrollment_token_id)
            .await
            .expect("read")
            .expect("token")
            .usage_count,
        0,
        "pre-registration does not consume"
    );
    let c = registry.enroll(&req).await.expect("pre-registered id");
    assert_eq!(c.node.node_id, "0123456789ab");
    assert!(matches!(
        registry.enroll(&req).await,
        Err(EnrollError::NotPreRegistered(_))
    ));
    assert!(matches!(
        registry
            .pre_register(&plain2, None, Some("0123456789ab"), None)
            .await,
        Err(EnrollError::NodeIdUnavailable(_))
    ));
    assert_eq!(registry.node_count().await.expect("count"), 3);
}

/// Reconnecting edges' credentials are checked in batches (one read, one write for the batch):
/// every edge of a batch still gets its own answer and its own row written, and a refusal in the
/// batch costs the others nothing.
async fn credentials_checked_together_each_get_their_own_answer(db: Db) {
    let (_db, registry, tenant) = setup(db).await;
    registry
        .create_cluster(&NewCluster::platform("beta", "Beta"))
        .await
        .expect("cluster");
    let (_, plain) = registry
        .create_enrollment_token(&token_for("alpha", &tenant, 40))
        .await
        .expect("token");
    let mut nodes = Vec::new();
    for _ in 0..40 {
        let enrolled = registry
            .enroll(&enroll_req(&plain, "alpha"))
            .await
            .expect("enroll");
        nodes.push((enrolled.node.node_id, enrolled.credential));
    }
    // 40 good claims with profiles of their own, and refusals of every kind among them, all
    // asked at once (one batch, padded to 64 rows).
    let profile = |i: usize| NodeProfile {
        public_base_url: format!("https://edge-{i}.example"),
        capabilities: "edge".into(),
        cpu_cores: i as i64,
        ..NodeProfile::default()
    };
    let ip = |i: usize| Some(IpAddr::from([10, 0, 0, i as u8]));
    let mut claims = Vec::new();
    for (i, (id, credential)) in nodes.iter().enumerate() {
        claims.push((id.clone(), credential.clone(), "alpha", i, "ok"));
        if i % 10 == 0 {
            let other = &nodes[(i + 1) % nodes.len()].1;
            claims.push((id.clone(), other.clone(), "alpha", i, "bad credential"));
            claims.push((id.clone(), credential.clone(), "beta", i, "wrong cluster"));
            claims.push((
                format!("ffff{i:08}"),
                credential.clone(),
                "alpha",
                i,
                "unknown",
            ));
        }
    }
    let answers = futures_util::future::join_all(claims.iter().map(|(id, cred, cluster, i, _)| {
        let profile = profile(*i);
        let registry = registry.clone();
        async move {
            registry
                .authenticate_node(id, cred, cluster, ip(*i), &profile)
                .await
        }
    }))
    .await;
    for ((id, _, _, i, expect), answer) in claims.iter().zip(answers) {
        match (*expect, answer) {
            ("ok", Ok(node)) => {
                assert_eq!(&node.node_id, id);
                assert_eq!(node.public_base_url, format!("https://edge-{i}.example"));
                assert_eq!(node.cpu_cores, *i as i64);
                assert_eq!(node.external_ip, ip(*i).map(|ip| ip.to_string()));
            }
            ("bad credential" | "unknown", Err(NodeAuthError::BadCredential)) => {}
            ("wrong cluster", Err(NodeAuthError::WrongCluster(c))) => assert_eq!(c, "alpha"),
            (expect, answer) => panic!("claim {i} for {id}: expected {expect}, got {answer:?}"),
        }
    }
    // What each admitted edge reported is what its row holds.
    for (i, (id, _)) in nodes.iter().enumerate() {
        let node = registry.node(id).await.expect("read").expect("node");
        assert_eq!(node.public_base_url, format!("https://edge-{i}.example"));
        assert_eq!(node.cpu_cores, i as i64);
        assert_eq!(node.external_ip, ip(i).map(|ip| ip.to_string()));
        assert!(node.last_seen_at.is_some());
    }
    // A batch of one still works, after the batch above.
    let (id, credential) = &nodes[7];
    let node = registry
        .authenticate_node(id, credential, "alpha", None, &profile(99))
        .await
        .expect("alone");
    assert_eq!(node.cpu_cores, 99);
    assert_eq!(node.external_ip, None);
}

/// Starts `racers` enrollments with one token at the same instant (a barrier lets every racer pass
/// the read-only validation before any commits, so the conditional UPDATE decides); returns how
/// many won and checks the token's usage count matches.
async fn race(registry: &Registry, tenant: &str, uses: i64, racers: usize) -> usize {
    let (token, plain) = registry
        .create_enrollment_token(&token_for("alpha", tenant, uses))
        .await
        .expect("token");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(racers));
    let attempts: Vec<_> = (0..racers)
        .map(|_| {
            let registry = registry.clone();
            let req = enroll_req(&plain, "alpha");
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                registry.enroll(&req).await
            })
        })
        .collect();
    let mut wins = 0;
    for attempt in attempts {
        match attempt.await.expect("task") {
            Ok(_) => wins += 1,
            Err(EnrollError::UsedUp) => {}
            Err(other) => panic!("unexpected refusal {other}"),
        }
    }
    let t = registry
        .enrollment_token(&token.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(t.usage_count as usize, wins);
    wins
}

async fn racing_edges_single_use_token_exactly_one_wins(db: Db) {
    let (_db, registry, tenant) = setup(db).await;
    for round in 0..5 {
        assert_eq!(race(&registry, &tenant, 1, 8).await, 1, "round {round}");
    }
    assert_eq!(registry.node_count().await.expect("count"), 5);
}

async fn racing_edges_multi_use_token_exactly_the_limit_wins(db: Db) {
    let (_db, registry, tenant) = setup(db).await;
    assert_eq!(race(&registry, &tenant, 3, 12).await, 3);
    assert_eq!(registry.node_count().await.expect("count"), 3);
}

async fn expected_cidr_is_enforced(db: Db) {
    let (_db, registry, tenant) = setup(db).await;
    let (_, plain) = registry
        .create_enrollment_token(&NewEnrollmentToken {
            expected_cidr: Some("203.0.113.0/24".parse().expect("cidr")),
            ..token_for("alpha", &tenant, 1)
        })
        .await
        .expect("token");
    let mut req = enroll_req(&plain, "alpha");
    assert!(matches!(
        registry.enroll(&req).await,
        Err(EnrollError::OutsideCidr(..))
    ));
    req.peer_ip = None;
    assert!(matches!(
        registry.enroll(&req).await,
        Err(EnrollError::OutsideCidr(..))
    ));
    assert_eq!(registry.node_count().await.expect("count"), 0);
    req.peer_ip = Some("::ffff:203.0.113.77".parse().expect("ip"));
    registry.enroll(&req).await.expect("inside the network");
}

async fn streams_keys_and_live_location(db: Db) {
    let (_db, registry, tenant) = setup(db).await;
    let (stream, key) = registry
        .create_stream(&tenant, "main")
        .await
        .expect("stream");
    assert!(key.starts_with("sk_"));
    assert!(stream.playback_id.len() >= 16);
    assert!(stream
        .playback_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert!(stream.internal_name.starts_with("live+"));
    assert!(matches!(
        registry.create_stream(&tenant, "main").await,
        Err(RegistryError::Conflict(_))
    ));
    assert!(matches!(
        registry.create_stream(&tenant, "bad/name").await,
        Err(RegistryError::Invalid(_))
    ));

    let (_, token) = registry
        .create_enrollment_token(&token_for("alpha", &tenant, 2))
        .await
        .expect("token");
    let node = registry
        .enroll(&enroll_req(&token, "alpha"))
        .await
        .expect("node");
    let other = registry
        .enroll(&enroll_req(&token, "alpha"))
        .await
        .expect("node");
    let node_id = node.node.node_id;

    assert_eq!(
        registry
            .check_ingest("sk_wrong", "alpha")
            .await
            .expect("ok"),
        IngestVerdict::UnknownKey
    );
    let IngestVerdict::Accept(accepted) = registry.check_ingest(&key, "alpha").await.expect("ok")
    else {
        panic!("a valid key on a platform cluster is accepted");
    };
    assert_eq!(accepted.id, stream.id);
    assert_eq!(accepted.live_node_id, None, "checking writes nothing");
    registry
        .mark_live(&stream.id, "alpha", &node_id)
        .await
        .expect("mark");
    let live = registry
        .stream(&stream.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(live.live_node_id.as_deref(), Some(node_id.as_str()));
    assert_eq!(live.live_cluster_id.as_deref(), Some("alpha"));

    // A stream live on one node cannot be claimed by another from its stats.
    assert!(!registry
        .claim_live(&stream.internal_name, "alpha", &other.node.node_id)
        .await
        .expect("claim"));

    // Another node cannot end it; its own node can.
    assert!(!registry
        .end_stream(&stream.internal_name, &other.node.node_id)
        .await
        .expect("ok"));
    assert!(registry
        .end_stream(&stream.internal_name, &node_id)
        .await
        .expect("ok"));
    let ended = registry
        .stream_by_playback_id(&stream.playback_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(ended.live_node_id, None);
    assert_eq!(ended.live_since, None);

    // Once not live anywhere, the node reporting it as an origin claims it; a disconnect clears it.
    assert!(registry
        .claim_live(&stream.internal_name, "alpha", &other.node.node_id)
        .await
        .expect("claim"));
    assert!(!registry
        .claim_live("live+unknown", "alpha", &other.node.node_id)
        .await
        .expect("claim"));
    assert_eq!(
        registry
            .end_streams_of_node(&other.node.node_id)
            .await
            .expect("end"),
        1
    );
    let cleared = registry
        .stream(&stream.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(cleared.live_node_id, None);
    assert_eq!(
        registry
            .streams_of_tenant(&tenant)
            .await
            .expect("list")
            .len(),
        1
    );
}

async fn migrations_are_idempotent(db: Db) {
    let (test_db, registry, _) = setup(db).await;
    registry.migrate().await.expect("second migrate is a no-op");
    let again = test_db.registry().await;
    assert_eq!(again.clusters().await.expect("list").len(), 1);
}

async fn private_clusters_take_only_their_owners_streams(db: Db) {
    let (_db, registry, owner) = setup(db).await;
    let outsider = registry
        .create_tenant("Outsider", "alpha")
        .await
        .expect("tenant");
    let mut private = NewCluster::platform("acme-private", "Acme private");
    private.owner_tenant_id = Some(owner.clone());
    private.visibility = foghorn::registry::Visibility::Private;
    registry.create_cluster(&private).await.expect("cluster");
    let (own, own_key) = registry.create_stream(&owner, "own").await.expect("stream");
    let (theirs, their_key) = registry
        .create_stream(&outsider.id, "theirs")
        .await
        .expect("stream");

    assert!(matches!(
        registry.check_ingest(&own_key, "acme-private").await.expect("ok"),
        IngestVerdict::Accept(s) if s.id == own.id
    ));
    assert_eq!(
        registry
            .check_ingest(&their_key, "acme-private")
            .await
            .expect("ok"),
        IngestVerdict::NotPermitted
    );
    // A platform cluster takes the streams of tenants that may use it: its official tenants
    // and active subscribers, not pending ones.
    assert!(matches!(
        registry
            .check_ingest(&their_key, "alpha")
            .await
            .expect("ok"),
        IngestVerdict::Accept(_)
    ));
    let mut gated = NewCluster::platform("gated", "Gated");
    gated.requires_approval = true;
    registry.create_cluster(&gated).await.expect("cluster");
    let verdict = |key: String| {
        let registry = registry.clone();
        async move { registry.check_ingest(&key, "gated").await.expect("ok") }
    };
    assert_eq!(
        verdict(their_key.clone()).await,
        IngestVerdict::NotPermitted
    );
    let asked = registry
        .subscribe(&outsider.id, "gated", None, false)
        .await
        .expect("subscribe");
    assert_eq!(asked.subscription.status, SubscriptionStatus::Pending);
    assert_eq!(
        verdict(their_key.clone()).await,
        IngestVerdict::NotPermitted
    );
    registry
        .decide_subscription("gated", &outsider.id, true, "ops")
        .await
        .expect("approve");
    assert!(matches!(
        verdict(their_key.clone()).await,
        IngestVerdict::Accept(_)
    ));

    let (_, token) = registry
        .create_enrollment_token(&token_for("acme-private", &owner, 1))
        .await
        .expect("token");
    let node = registry
        .enroll(&enroll_req(&token, "acme-private"))
        .await
        .expect("node");
    // Nor can its edge claim the outsider's stream by reporting it in stats.
    assert!(!registry
        .claim_live(&theirs.internal_name, "acme-private", &node.node.node_id,)
        .await
        .expect("claim"));
    assert!(registry
        .claim_live(&own.internal_name, "acme-private", &node.node.node_id,)
        .await
        .expect("claim"));
}

/// Eight tenants race for one single-use invite to a private cluster: exactly one subscription is
/// activated, the invite is used by that tenant, and every loser is refused with nothing written.
async fn racing_tenants_for_one_invite_exactly_one_joins(db: Db) {
    let (_db, registry, owner) = setup(db).await;
    let mut private = NewCluster::platform("acme-lab", "Acme lab");
    private.owner_tenant_id = Some(owner.clone());
    private.visibility = foghorn::registry::Visibility::Private;
    private.requires_approval = true;
    registry.create_cluster(&private).await.expect("cluster");
    let (invite, token) = registry
        .create_invite("acme-lab", None, now_ms() + 60_000, &owner)
        .await
        .expect("invite");
    let mut racers = Vec::new();
    for i in 0..8 {
        let tenant = registry
            .create_tenant(&format!("Racer {i}"), "alpha")
            .await
            .expect("tenant");
        racers.push(tenant.id);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(racers.len()));
    let attempts: Vec<_> = racers
        .iter()
        .map(|tenant| {
            let (registry, tenant, token, barrier) = (
                registry.clone(),
                tenant.clone(),
                token.clone(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                registry
                    .subscribe(&tenant, "acme-lab", Some(&token), false)
                    .await
                    .map(|s| (tenant, s))
            })
        })
        .collect();
    let mut winners = Vec::new();
    for attempt in attempts {
        match attempt.await.expect("task") {
            Ok((tenant, done)) => {
                assert_eq!(done.subscription.status, SubscriptionStatus::Active);
                winners.push(tenant);
            }
            Err(RegistryError::Forbidden(_) | RegistryError::NotFound(_)) => {}
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one tenant joins");
    let used = registry
        .invite("acme-lab", &invite.id)
        .await
        .expect("read")
        .expect("invite");
    assert_eq!(used.used_by.as_deref(), Some(winners[0].as_str()));
    for tenant in racers.iter().filter(|t| **t != winners[0]) {
        assert_eq!(
            registry
                .subscription(tenant, "acme-lab")
                .await
                .expect("read"),
            None,
            "a loser has no subscription row"
        );
    }
}

/// The counter federation polls moves with every change of official or preferred clusters,
/// subscriptions and clusters, and not with the registry's other writes (streams, tokens).
async fn topology_version_moves_with_every_topology_change(db: Db) {
    let (_db, registry, tenant) = setup(db).await;
    let version = || async { registry.topology_version().await.expect("version") };
    let mut last = version().await;
    let mut moved = |what: &str, now: i64| {
        assert!(now > last, "{what} did not move the topology version");
        last = now;
    };

    registry
        .create_cluster(&NewCluster::platform("bravo", "Bravo"))
        .await
        .expect("cluster");
    moved("a new cluster", version().await);
    registry
        .subscribe(&tenant, "bravo", None, true)
        .await
        .expect("subscribe");
    moved("a subscription", version().await);
    registry
        .set_preferred_cluster(&tenant, Some("bravo"))
        .await
        .expect("preferred");
    moved("a preferred cluster", version().await);
    assert_eq!(
        registry.always_on_pairs().await.expect("pairs"),
        [("bravo".to_string(), "alpha".to_string())],
        "the preferred and the official cluster pair always-on"
    );
    let endpoint = PeerEndpoint {
        grpc_addr: "https://127.0.0.1:9".into(),
        tls_ca_pem: String::new(),
    };
    registry
        .set_cluster_endpoint("bravo", &endpoint)
        .await
        .expect("endpoint");
    moved("a cluster's address", version().await);
    registry
        .cancel_subscription(&tenant, "bravo")
        .await
        .expect("cancel");
    moved("a cancelled subscription", version().await);

    let unchanged = version().await;
    registry
        .create_stream(&tenant, "show")
        .await
        .expect("stream");
    registry
        .create_api_token(&tenant, Role::Tenant)
        .await
        .expect("token");
    assert_eq!(
        version().await,
        unchanged,
        "streams and tokens are not topology"
    );
}

/// Cells report themselves live (a dedicated cluster's takes no private cluster); clusters are
/// assigned to a cell, moved between cells and given back their own Foghorn, under the rules of
/// `assign_cell`; the assignment moves the topology version (the cells' reports do not).
async fn cells_report_live_and_clusters_are_assigned_to_them(db: Db) {
    use foghorn::registry::CellReport;
    let (_db, registry, _) = setup(db).await;
    for (id, tier) in [("bravo", Tier::SharedLb), ("solo", Tier::Dedicated)] {
        registry
            .create_cluster(&NewCluster {
                tier,
                ..NewCluster::platform(id, id)
            })
            .await
            .expect("cluster");
    }
    registry
        .create_cluster(&NewCluster::platform("lab", "Lab"))
        .await
        .expect("cluster");
    // "lab" had a Foghorn of its own before a cell serves it.
    for (id, addr) in [
        ("lab", "https://lab-own:1"),
        ("alpha", "https://alpha-cell:2"),
    ] {
        let endpoint = PeerEndpoint {
            grpc_addr: addr.into(),
            tls_ca_pem: String::new(),
        };
        registry
            .set_cluster_endpoint(id, &endpoint)
            .await
            .expect("endpoint");
    }
    let endpoint = |id: &'static str| {
        let registry = registry.clone();
        async move {
            registry
                .peer_endpoint(id)
                .await
                .expect("read")
                .expect("exists")
                .grpc_addr
        }
    };
    let version = registry.topology_version().await.expect("version");
    for id in ["alpha", "bravo", "solo"] {
        let report = CellReport {
            id,
            edges: 3,
            started_at: 7,
        };
        registry.report_cell(&report).await.expect("report");
    }
    assert_eq!(registry.topology_version().await.expect("version"), version);
    let live: Vec<(String, bool, i64)> = registry
        .live_cells()
        .await
        .expect("cells")
        .iter()
        .map(|c| (c.id().to_string(), c.hosts_private, c.edges))
        .collect();
    assert_eq!(
        live,
        [
            ("alpha".to_string(), true, 3),
            ("bravo".to_string(), true, 3),
            ("solo".to_string(), false, 3)
        ]
    );
    // A report for a cluster that does not exist writes nothing.
    let ghost = CellReport {
        id: "ghost",
        edges: 0,
        started_at: 0,
    };
    registry.report_cell(&ghost).await.expect("report");
    assert_eq!(registry.live_cells().await.expect("cells").len(), 3);

    assert_eq!(
        registry.serving_cell("lab").await.expect("cell"),
        Some("lab".into())
    );
    assert_eq!(endpoint("lab").await, "https://lab-own:1");
    registry
        .assign_cell("lab", Some("alpha"))
        .await
        .expect("assign");
    assert!(registry.topology_version().await.expect("version") > version);
    assert_eq!(
        endpoint("lab").await,
        "https://alpha-cell:2",
        "reached at its cell, not at its stale own address"
    );
    assert_eq!(
        registry.serving_cell("lab").await.expect("cell"),
        Some("alpha".into())
    );
    assert_eq!(
        registry.cell_clusters("alpha").await.expect("served"),
        ["lab"]
    );
    let refused = [
        ("lab", Some("nope"), "not found"),
        ("nope", Some("alpha"), "not found"),
        ("bravo", Some("lab"), "served by cell"),
        ("alpha", Some("bravo"), "serves 1 cluster"),
        ("bravo", Some("bravo"), "its own cell"),
    ];
    for (cluster, cell, why) in refused {
        let e = registry
            .assign_cell(cluster, cell)
            .await
            .expect_err("refused");
        assert!(e.to_string().contains(why), "{cluster} → {cell:?}: {e}");
    }
    // Moved to another cell, then back to a Foghorn of its own.
    registry
        .assign_cell("lab", Some("bravo"))
        .await
        .expect("move");
    assert_eq!(
        registry.serving_cell("lab").await.expect("cell"),
        Some("bravo".into())
    );
    assert!(registry
        .cell_clusters("alpha")
        .await
        .expect("served")
        .is_empty());
    registry.assign_cell("lab", None).await.expect("own");
    assert_eq!(endpoint("lab").await, "https://lab-own:1");
    assert_eq!(
        registry.serving_cell("lab").await.expect("cell"),
        Some("lab".into())
    );
}
