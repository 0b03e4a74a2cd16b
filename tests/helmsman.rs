//! Whole-server tests of the Helmsman control stream: real Foghorn on loopback, real tonic clients,
//! real registry (SQLite and PostgreSQL).

#[macro_use]
mod common;

use std::time::Duration;

use common::{
    enroll, ingest_frame, register_frame, register_with_credential, register_with_token,
    stats_frame, Db, EdgeConn, TestServer,
};
use foghorn::proto::{
    control_message, edge_message, ControlMessage, EdgeMessage, ErrorCode, ModeChange, NodeMode,
    StreamEnded, StreamStats,
};
use foghorn::registry::{now_ms, NewCluster, NewEnrollmentToken};

/// Polls `check` until it holds (the server applies frames asynchronously and sends no ack);
/// fails after 5 s instead of hanging.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

on_both!(
    live_streams_follow_the_edge_session,
    enrolled_edge_is_routable_with_stats_and_unroutable_once_closed,
    racing_edges_for_a_single_use_token_exactly_one_enrolls,
    ingest_is_validated_and_live_location_recorded,
);

async fn enrolled_edge_is_routable_with_stats_and_unroutable_once_closed(db: Db) {
    let server = TestServer::start(db).await;
    let (tenant, op) = server.operator().await;
    let token = server.enrollment_token(&tenant, 1).await;
    let mut conn = EdgeConn::open(&server.grpc_url(), register_with_token(&token)).await;
    let seed = conn.seed().await;
    let node = seed.node_id.clone();
    assert_eq!(node.len(), 12);
    assert!(node
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert!(seed.node_credential.starts_with("nc_"));
    assert_eq!(seed.cluster_id, "test");
    assert_eq!(seed.tenant_id, tenant);
    assert_eq!(seed.edge_domain, format!("edge-{node}.test.example.net"));
    assert_eq!(seed.pool_domain, "edge.test.example.net");
    assert_eq!(seed.balancer_base_url, "https://foghorn.test.example.net");
    assert_eq!(seed.stats_interval_ms, 5_000);
    assert_eq!(seed.mode, NodeMode::Normal as i32);

    // Connected but no stats yet: listed, not routable.
    eventually("the edge is listed", || async {
        server.edges(&op).await["edges"][0]["node_id"] == node.as_str()
    })
    .await;
    assert!(!server.routable(&op, &node).await);

    conn.send(stats_frame(vec![StreamStats {
        internal_name: "live+abc".into(),
        viewers: 7,
        inputs: 1,
        ..Default::default()
    }]))
    .await;
    eventually("stats make it routable", || server.routable(&op, &node)).await;
    let listed = server.edges(&op).await;
    let edge = &listed["edges"][0];
    assert_eq!(listed["cluster_id"], "test");
    assert_eq!(edge["stats"]["cpu_tenths"], 250);
    assert_eq!(edge["stats"]["streams"][0]["internal_name"], "live+abc");
    assert_eq!(edge["stats"]["streams"][0]["viewers"], 7);
    assert_eq!(edge["connected"], true);

    drop(conn);
    eventually("closing the stream makes it unroutable", || async {
        !server.routable(&op, &node).await
    })
    .await;
    assert_eq!(server.edges(&op).await["edges"][0]["connected"], false);
    server.stop().await;
}

async fn racing_edges_for_a_single_use_token_exactly_one_enrolls(db: Db) {
    let server = TestServer::start(db).await;
    let (tenant, _) = server.operator().await;
    let token = server.enrollment_token(&tenant, 1).await;
    let url = server.grpc_url();
    let racers: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let mut conn = EdgeConn::open(&url, register_with_token(&token)).await;
                match conn.recv().await {
                    Ok(Some(ControlMessage {
                        payload: Some(control_message::Payload::ConfigSeed(_)),
                    })) => Ok(conn),
                    Ok(Some(ControlMessage {
                        payload: Some(control_message::Payload::Error(e)),
                    })) => Err(e.code),
                    other => panic!("unexpected {other:?}"),
                }
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        match racer.await.expect("task") {
            Ok(conn) => winners.push(conn),
            Err(code) => assert_eq!(code, ErrorCode::EnrollmentFailed as i32),
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(server.registry().node_count().await.expect("count"), 1);
    server.stop().await;
}

async fn ingest_is_validated_and_live_location_recorded(db: Db) {
    let server = TestServer::start(db).await;
    let (tenant, _) = server.operator().await;
    let (stream, key) = server.stream(&tenant).await;
    let (mut conn, node, _) = enroll(&server, &tenant).await;

    conn.send(ingest_frame("r1", &format!("sk_{}", "0".repeat(48))))
        .await;
    let refused = conn.decision().await;
    assert_eq!(refused.request_id, "r1");
    assert!(!refused.accept);
    assert_eq!(refused.reason, "unknown stream key");

    conn.send(ingest_frame("r2", &key)).await;
    let accepted = conn.decision().await;
    assert_eq!(accepted.request_id, "r2");
    assert!(accepted.accept, "{accepted:?}");
    assert_eq!(accepted.internal_name, stream.internal_name);
    let live = server
        .registry()
        .stream(&stream.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(live.live_node_id.as_deref(), Some(node.as_str()));
    assert_eq!(live.live_cluster_id.as_deref(), Some("test"));

    conn.send(EdgeMessage {
        payload: Some(edge_message::Payload::StreamEnded(StreamEnded {
            internal_name: stream.internal_name.clone(),
            reason: "publisher left".into(),
        })),
    })
    .await;
    let registry = server.registry().clone();
    let id = stream.id.clone();
    eventually("StreamEnded clears the live location", || {
        let registry = registry.clone();
        let id = id.clone();
        async move {
            registry
                .stream(&id)
                .await
                .expect("get")
                .expect("exists")
                .live_node_id
                .is_none()
        }
    })
    .await;

    // Draining: a fresh ConfigSeed with the new mode, and new ingests are refused.
    conn.send(EdgeMessage {
        payload: Some(edge_message::Payload::ModeChange(ModeChange {
            mode: NodeMode::Draining as i32,
        })),
    })
    .await;
    let seed = conn.seed().await;
    assert_eq!(seed.mode, NodeMode::Draining as i32);
    assert_eq!(seed.seed_version, 2);
    assert!(
        seed.node_credential.is_empty(),
        "credential is sent only once"
    );
    conn.send(ingest_frame("r3", &key)).await;
    let refused = conn.decision().await;
    assert!(!refused.accept);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_with_credential_replaces_the_old_session() {
    let server = TestServer::start(Db::Sqlite).await;
    let (tenant, op) = server.operator().await;
    let (mut first, node, credential) = enroll(&server, &tenant).await;
    first.send(stats_frame(vec![])).await;
    eventually("first session routable", || server.routable(&op, &node)).await;

    let mut second = EdgeConn::open(
        &server.grpc_url(),
        register_with_credential(&node, &credential),
    )
    .await;
    let seed = second.seed().await;
    assert_eq!(seed.node_id, node);
    assert!(
        seed.node_credential.is_empty(),
        "a reconnect never gets the credential again"
    );
    assert_eq!(first.error().await, ErrorCode::SessionReplaced);
    // The replacement needs stats of its own before it is routable again.
    assert!(!server.routable(&op, &node).await);
    second.send(stats_frame(vec![])).await;
    eventually("second session routable", || server.routable(&op, &node)).await;
    assert_eq!(
        server.edges(&op).await["edges"].as_array().map(Vec::len),
        Some(1)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_tokens_are_refused_and_register_nothing() {
    let server = TestServer::start(Db::Sqlite).await;
    let (tenant, op) = server.operator().await;
    let url = server.grpc_url();
    let registry = server.registry();
    let nodes_before = registry.node_count().await.expect("count");

    let mut c = EdgeConn::open(&url, register_with_credential("0123456789ab", "nc_nope")).await;
    assert_eq!(c.error().await, ErrorCode::Unauthenticated);

    let mut c = EdgeConn::open(&url, register_with_token("enroll_bogus")).await;
    assert_eq!(c.error().await, ErrorCode::EnrollmentFailed);

    // A used-up token.
    let token = server.enrollment_token(&tenant, 1).await;
    let (_ok, node, _) = {
        let mut conn = EdgeConn::open(&url, register_with_token(&token)).await;
        let seed = conn.seed().await;
        (conn, seed.node_id, seed.node_credential)
    };
    let mut c = EdgeConn::open(&url, register_with_token(&token)).await;
    assert_eq!(c.error().await, ErrorCode::EnrollmentFailed);

    // A token of another cluster.
    registry
        .create_cluster(&NewCluster::platform("elsewhere", "Elsewhere"))
        .await
        .expect("cluster");
    let (_, foreign) = registry
        .create_enrollment_token(&NewEnrollmentToken {
            cluster_id: "elsewhere".into(),
            tenant_id: tenant.clone(),
            usage_limit: 5,
            expires_at: now_ms() + 60_000,
            expected_cidr: None,
        })
        .await
        .expect("token");
    let mut c = EdgeConn::open(&url, register_with_token(&foreign)).await;
    assert_eq!(c.error().await, ErrorCode::EnrollmentFailed);

    // A token bound to a network the edge is not in (the test connects from 127.0.0.1).
    let (_, bound) = registry
        .create_enrollment_token(&NewEnrollmentToken {
            cluster_id: "test".into(),
            tenant_id: tenant.clone(),
            usage_limit: 5,
            expires_at: now_ms() + 60_000,
            expected_cidr: Some("203.0.113.0/24".parse().expect("cidr")),
        })
        .await
        .expect("token");
    let mut c = EdgeConn::open(&url, register_with_token(&bound)).await;
    let (code, message) = c.error_frame().await;
    assert_eq!(code, ErrorCode::EnrollmentFailed);
    assert!(
        !message.contains("203.0.113"),
        "the expected network is not revealed: {message}"
    );

    // An edge cannot choose its own node id: only an id PreRegisterEdge reserved for this very
    // token is honoured, anything else is refused and consumes nothing.
    let fresh = server.enrollment_token(&tenant, 1).await;
    let mut chosen = register_with_token(&fresh);
    if let Some(edge_message::Payload::Register(r)) = &mut chosen.payload {
        r.pre_registered_node_id = "foghorn".into();
    }
    let mut c = EdgeConn::open(&url, chosen).await;
    let (code, message) = c.error_frame().await;
    assert_eq!(code, ErrorCode::EnrollmentFailed);
    assert!(message.contains("not pre-registered"), "{message}");
    drop(c);
    let mut c = EdgeConn::open(&url, register_with_token(&fresh)).await;
    let picked = c.seed().await.node_id;
    assert_ne!(picked, "foghorn");
    assert_eq!(picked.len(), 12);
    drop(c);

    // No auth at all; wrong protocol version.
    let mut c = EdgeConn::open(&url, register_frame(None)).await;
    assert_eq!(c.error().await, ErrorCode::EnrollmentRequired);
    let mut old = register_with_token(&token);
    if let Some(edge_message::Payload::Register(r)) = &mut old.payload {
        r.protocol_version = 99;
    }
    let mut c = EdgeConn::open(&url, old).await;
    assert_eq!(c.error().await, ErrorCode::ProtocolVersion);

    // Only the two legitimate enrollments exist, in the registry and in the edge list.
    assert_eq!(
        registry.node_count().await.expect("count"),
        nodes_before + 2
    );
    let listed = server.edges(&op).await;
    let mut ids: Vec<&str> = listed["edges"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["node_id"].as_str())
        .collect();
    let mut expected = vec![node.as_str(), picked.as_str()];
    ids.sort_unstable();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    server.stop().await;
}

/// A frame whose field 2 (`node_stats`, a message) arrives as a varint: undecodable as EdgeMessage.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbage {
    #[prost(uint64, tag = "2")]
    not_a_message: u64,
}

async fn send_garbage(url: &str) -> ErrorCode {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<Garbage, ControlMessage>::default();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/foghorn.v1.HelmsmanControl/Connect");
    let frames = tokio_stream::iter(vec![Garbage { not_a_message: 42 }]);
    let mut inbound = grpc
        .streaming(tonic::Request::new(frames), path, codec)
        .await
        .expect("call accepted")
        .into_inner();
    match tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("answer in time")
    {
        Ok(Some(ControlMessage {
            payload: Some(control_message::Payload::Error(e)),
        })) => ErrorCode::try_from(e.code).expect("known code"),
        other => panic!("expected an Error frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_end_only_the_offending_stream() {
    let server =
        TestServer::start_with(Db::Sqlite, |c| c.edges.max_message_bytes = 16 * 1024).await;
    let (tenant, op) = server.operator().await;
    let url = server.grpc_url();
    let (healthy, node, _) = enroll(&server, &tenant).await;
    healthy.send(stats_frame(vec![])).await;
    eventually("healthy edge routable", || server.routable(&op, &node)).await;

    // Out of order: stats before Register.
    let mut c = EdgeConn::open(&url, stats_frame(vec![])).await;
    assert_eq!(c.error().await, ErrorCode::ProtocolViolation);

    // Register twice.
    let (mut c, _, _) = enroll(&server, &tenant).await;
    c.send(register_with_token("enroll_again")).await;
    assert_eq!(c.error().await, ErrorCode::ProtocolViolation);

    // Values out of range.
    let (mut c, _, _) = enroll(&server, &tenant).await;
    let mut bad = stats_frame(vec![]);
    if let Some(edge_message::Payload::NodeStats(s)) = &mut bad.payload {
        s.cpu_tenths = 5_000;
    }
    c.send(bad).await;
    assert_eq!(c.error().await, ErrorCode::ProtocolViolation);

    // An over-long string field.
    let (mut c, _, _) = enroll(&server, &tenant).await;
    let mut long = stats_frame(vec![]);
    if let Some(edge_message::Payload::NodeStats(s)) = &mut long.payload {
        s.location_name = "x".repeat(1_000);
    }
    c.send(long).await;
    assert_eq!(c.error().await, ErrorCode::ProtocolViolation);

    // An oversized frame (above edges.max_message_bytes).
    let (mut c, _, _) = enroll(&server, &tenant).await;
    let many: Vec<StreamStats> = (0..2_000)
        .map(|i| StreamStats {
            internal_name: format!("live+{i:08}"),
            ..Default::default()
        })
        .collect();
    c.send(stats_frame(many)).await;
    assert_eq!(c.error().await, ErrorCode::LimitExceeded);

    // Undecodable bytes.
    assert_eq!(send_garbage(&url).await, ErrorCode::ProtocolViolation);

    // An empty frame.
    let (mut c, _, _) = enroll(&server, &tenant).await;
    c.send(EdgeMessage { payload: None }).await;
    assert_eq!(c.error().await, ErrorCode::ProtocolViolation);

    // The healthy edge never noticed.
    healthy.send(stats_frame(vec![])).await;
    assert!(server.routable(&op, &node).await);
    let metrics = reqwest::get(server.http("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("foghorn_edge_protocol_errors_total 7"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_stats_make_an_edge_unroutable() {
    let server = TestServer::start_with(Db::Sqlite, |c| {
        c.edges.stats_interval = Duration::from_millis(100);
    })
    .await;
    let (tenant, op) = server.operator().await;
    let (conn, node, _) = enroll(&server, &tenant).await;
    conn.send(stats_frame(vec![])).await;
    eventually("routable", || server.routable(&op, &node)).await;
    // The stream stays open but the edge falls silent: after 3 intervals it is not routable.
    eventually("stale after 3 intervals", || async {
        !server.routable(&op, &node).await
    })
    .await;
    let view = server.edges(&op).await;
    assert_eq!(view["edges"][0]["connected"], true);
    assert!(view["edges"][0]["last_stats_age_ms"].as_u64().expect("age") >= 300);
    conn.send(stats_frame(vec![])).await;
    eventually("fresh stats revive it", || server.routable(&op, &node)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_connected_edges_and_keeps_their_streams_live() {
    let server = TestServer::start(Db::Sqlite).await;
    let (tenant, _) = server.operator().await;
    let (stream, key) = server.stream(&tenant).await;
    let (mut conn, node, _) = enroll(&server, &tenant).await;
    conn.send(ingest_frame("r", &key)).await;
    assert!(conn.decision().await.accept);
    let registry = server.db.registry().await;
    let stopping = tokio::spawn(async move { server.stop().await });
    assert_eq!(conn.error().await, ErrorCode::ShuttingDown);
    stopping.await.expect("shutdown completes");
    // The edge did not die, Foghorn did: the stream is still recorded live on it.
    let live = registry
        .stream(&stream.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(live.live_node_id, Some(node));
}

async fn live_streams_follow_the_edge_session(db: Db) {
    let server = TestServer::start(db).await;
    let (tenant, op) = server.operator().await;
    let (stream, key) = server.stream(&tenant).await;
    let (mut conn, node, credential) = enroll(&server, &tenant).await;
    conn.send(ingest_frame("r", &key)).await;
    assert!(conn.decision().await.accept);
    let live_on = |registry: foghorn::registry::Registry, id: String| async move {
        registry
            .stream(&id)
            .await
            .expect("get")
            .expect("exists")
            .live_node_id
    };
    assert_eq!(
        live_on(server.registry().clone(), stream.id.clone()).await,
        Some(node.clone())
    );

    // The edge disappears without StreamEnded: the stream is no longer live anywhere.
    drop(conn);
    eventually("a dead edge's streams are not live", || {
        let (r, id) = (server.registry().clone(), stream.id.clone());
        async move { live_on(r, id).await.is_none() }
    })
    .await;

    // It comes back still carrying the stream as an origin: its stats put the stream back.
    let mut conn = EdgeConn::open(
        &server.grpc_url(),
        register_with_credential(&node, &credential),
    )
    .await;
    conn.seed().await;
    let origin = StreamStats {
        internal_name: stream.internal_name.clone(),
        viewers: 1,
        inputs: 1,
        ..Default::default()
    };
    conn.send(stats_frame(vec![origin])).await;
    eventually("stats reclaim the stream", || {
        let (r, id, n) = (server.registry().clone(), stream.id.clone(), node.clone());
        async move { live_on(r, id).await == Some(n) }
    })
    .await;
    eventually("the edge routable again", || async {
        server.routable(&op, &node).await
    })
    .await;

    // A burst of ingests beyond the per-edge limit is answered (some perhaps "busy"), never
    // disconnected.
    for i in 0..40 {
        conn.send(ingest_frame(
            &format!("b{i}"),
            &format!("sk_{}", "1".repeat(48)),
        ))
        .await;
    }
    let mut answered = std::collections::HashSet::new();
    while answered.len() < 40 {
        let d = conn.decision().await;
        assert!(!d.accept);
        answered.insert(d.request_id);
    }
    conn.send(stats_frame(vec![])).await;
    assert!(server.routable(&op, &node).await);
    server.stop().await;
}

/// A Register frame with `auth` and `public_base_url`.
fn register_at(mut frame: EdgeMessage, public_base_url: &str) -> EdgeMessage {
    if let Some(edge_message::Payload::Register(r)) = &mut frame.payload {
        r.public_base_url = public_base_url.into();
    }
    frame
}

/// Issue 14 item 7: an edge's `public_base_url` is a clean absolute URL or its Register is refused
/// with an `Error` naming the field, registering nothing; what is accepted is normalised, and the
/// viewer's `Location` built from it is a valid URI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_urls_are_valid_absolute_urls_or_refused_at_register() {
    let server = TestServer::start(Db::Sqlite).await;
    let (tenant, _) = server.operator().await;
    let url = server.grpc_url();
    let token = server.enrollment_token(&tenant, 100).await;
    let registry = server.registry();
    let nodes_before = registry.node_count().await.expect("count");
    // Each found accepted before: spaces, raw non-ASCII, a port out of range, an empty host,
    // a query, a fragment, control characters; and user info, another scheme, a relative URL.
    let refused = [
        "https://edge one.example.net",
        "https://edge.example.net/my path",
        "https://édge.example.net",
        "https://edge.example.net:99999",
        "https://",
        "https://edge.example.net/?a=1",
        "https://edge.example.net/#top",
        "https://edge.example.net/\u{7}",
        "https://edge.example.net/a\r\nb",
        "https://user:pw@edge.example.net",
        "ftp://edge.example.net",
        "edge.example.net",
    ];
    for bad in refused {
        let mut c = EdgeConn::open(&url, register_at(register_with_token(&token), bad)).await;
        let (code, message) = c.error_frame().await;
        assert_eq!(code, ErrorCode::ProtocolViolation, "{bad:?}: {message}");
        assert!(message.contains("public_base_url"), "{bad:?}: {message}");
    }
    assert_eq!(
        registry.node_count().await.expect("count"),
        nodes_before,
        "nothing registered"
    );

    // Accepted in normal form; a redirect to the edge is a valid URI on its host and path.
    let mut edge = EdgeConn::open(
        &url,
        register_at(
            register_with_token(&token),
            "https://Edge-1.Example.NET:8443/mist/",
        ),
    )
    .await;
    let seed = edge.seed().await;
    edge.send(stats_frame(Vec::new())).await;
    let (stream, _) = server.stream(&tenant).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let play = server.http(&format!("/play/{}/hls/index.m3u8", stream.playback_id));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let location = loop {
        let res = http.get(&play).send().await.expect("play");
        if res.status() == 307 {
            break res.headers()["location"]
                .to_str()
                .expect("ASCII")
                .to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edge never took viewers"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let prefix = format!(
        "https://edge-1.example.net:8443/mist/hls/{}/index.m3u8?fh_sid=",
        stream.internal_name
    );
    assert!(location.starts_with(&prefix), "{location}");
    let uri: reqwest::Url = location.parse().expect("a valid URI");
    assert_eq!(uri.host_str(), Some("edge-1.example.net"));
    assert!(uri.fragment().is_none());

    // A reconnect with the node's credential is checked the same way.
    drop(edge);
    let mut again = EdgeConn::open(
        &url,
        register_at(
            register_with_credential(&seed.node_id, &seed.node_credential),
            "https://edge-1.example.net/#x",
        ),
    )
    .await;
    let (code, message) = again.error_frame().await;
    assert_eq!(code, ErrorCode::ProtocolViolation, "{message}");
    server.stop().await;
}
