//! Whole-server tests of viewer and publisher routing: edges connected over real gRPC with exact
//! stats, decisions read over real HTTP, expected winners and scores computed by hand.

mod common;

use std::time::Duration;

use common::{enroll, register_with_token, Db, EdgeConn, TestServer};
use foghorn::proto::{edge_message, EdgeMessage, ModeChange, NodeMode, NodeStats, StreamStats};
use reqwest::redirect::Policy;
use serde_json::Value;

const GIB: u64 = 1 << 30;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

#[allow(clippy::too_many_arguments)]
fn stats(
    lat: f64,
    lon: f64,
    cpu_tenths: u32,
    ram_used: u64,
    ram_max: u64,
    up: u64,
    limit: u64,
    streams: Vec<StreamStats>,
) -> EdgeMessage {
    EdgeMessage {
        payload: Some(edge_message::Payload::NodeStats(NodeStats {
            cpu_tenths,
            ram_max_bytes: ram_max,
            ram_used_bytes: ram_used,
            up_bytes_per_sec: up,
            bw_limit_bytes_per_sec: limit,
            latitude: Some(lat),
            longitude: Some(lon),
            connections: 10,
            streams,
            ..Default::default()
        })),
    }
}

fn carrying(name: &str, up: u64, viewers: u32) -> Vec<StreamStats> {
    vec![StreamStats {
        internal_name: name.into(),
        up_bytes_per_sec: up,
        viewers,
        inputs: 0,
        replicated: true,
        ..Default::default()
    }]
}

/// `GET /play/{id}?explain=1&lat&lon` as an operator, once it lists `count` candidates.
async fn explain(
    server: &TestServer,
    op: &str,
    playback: &str,
    lat: f64,
    lon: f64,
    count: usize,
) -> Value {
    let url = server.http(&format!("/play/{playback}?explain=1&lat={lat}&lon={lon}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let res = client()
            .get(&url)
            .bearer_auth(op)
            .send()
            .await
            .expect("play");
        if res.status() == 200 {
            let body: Value = res.json().await.expect("json");
            if body["explain"]["candidates"].as_array().map(Vec::len) == Some(count) {
                return body;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw {count} candidates"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn parts_of<'a>(body: &'a Value, node: &str) -> &'a Value {
    body["explain"]["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .find(|c| c["node_id"] == node)
        .map(|c| &c["parts"])
        .unwrap_or_else(|| panic!("{node} not among the candidates: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worked_example_paris_viewer_london_and_new_york_edges() {
    let server = TestServer::start(Db::Sqlite).await;
    let (tenant, op) = server.operator().await;
    let (stream, _) = server.stream(&tenant).await;
    let name = stream.internal_name.as_str();

    // Edge A in London: 25 % CPU, 4 of 16 GiB, 50,000,000 B/s up, carrying the stream at
    // 131,072 B/s per viewer.
    let (a, node_a, _) = enroll(&server, &tenant).await;
    a.send(stats(
        51.5,
        -0.12,
        250,
        4 * GIB,
        16 * GIB,
        50_000_000,
        125_000_000,
        carrying(name, 1_310_720, 10),
    ))
    .await;
    explain(&server, &op, &stream.playback_id, 51.5, -0.12, 1).await;
    // One redirect while A is alone: A is charged that viewer, 131,072 B/s of pending bandwidth.
    let res = client()
        .get(server.http(&format!("/play/{}/hls/index.m3u8", stream.playback_id)))
        .send()
        .await
        .expect("redirect");
    assert_eq!(res.status(), 307);
    let location = res.headers()["location"].to_str().expect("ascii");
    assert!(
        location.starts_with(&format!(
            "https://edge.example.net/hls/{name}/index.m3u8?fh_sid="
        )),
        "{location}"
    );

    // Edge B in New York: 5 % CPU, 2 of 16 GiB, 10,000,000 B/s up, carrying the stream too.
    let (b, node_b, _) = enroll(&server, &tenant).await;
    b.send(stats(
        40.7,
        -74.0,
        50,
        2 * GIB,
        16 * GIB,
        10_000_000,
        125_000_000,
        carrying(name, 0, 0),
    ))
    .await;

    let body = explain(&server, &op, &stream.playback_id, 48.85, 2.35, 2).await;
    let pa = parts_of(&body, &node_a);
    let pb = parts_of(&body, &node_b);
    assert_eq!(
        (
            &pa["cpu"],
            &pa["ram"],
            &pa["bw"],
            &pa["geo"],
            &pa["bonus"],
            &pa["total"]
        ),
        (
            &Value::from(375),
            &Value::from(375),
            &Value::from(599),
            &Value::from(983),
            &Value::from(50),
            &Value::from(2382)
        ),
        "{pa}"
    );
    assert_eq!(pb["total"], 2592, "{pb}");
    assert_eq!(body["primary"]["node_id"], node_b.as_str());
    assert_eq!(body["primary"]["score"], 2592);
    assert_eq!(body["fallbacks"][0]["node_id"], node_a.as_str());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eligibility_rules_and_errors() {
    let server = TestServer::start(Db::Sqlite).await;
    let (tenant, op) = server.operator().await;
    let (stream, key) = server.stream(&tenant).await;
    let play = |suffix: &str| server.http(&format!("/play/{}{suffix}", stream.playback_id));

    // No edges at all: 503 with Retry-After.
    let res = client().get(play("")).send().await.expect("play");
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "2");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "no_eligible_edge");

    // The best-loaded edge drains: it is skipped.
    let (drainer, drain_node, _) = enroll(&server, &tenant).await;
    drainer
        .send(stats(48.0, 2.0, 0, 0, 16 * GIB, 0, 125_000_000, vec![]))
        .await;
    // An edge with no RAM figure, and one whose bandwidth is used up: never eligible.
    let (no_ram, _, _) = enroll(&server, &tenant).await;
    no_ram
        .send(stats(48.0, 2.0, 0, 0, 0, 0, 125_000_000, vec![]))
        .await;
    let (full, _, _) = enroll(&server, &tenant).await;
    full.send(stats(
        48.0,
        2.0,
        0,
        0,
        16 * GIB,
        125_000_000,
        125_000_000,
        vec![],
    ))
    .await;
    // The one that should win once the drainer is out.
    let (ok, ok_node, _) = enroll(&server, &tenant).await;
    ok.send(stats(
        48.0,
        2.0,
        900,
        15 * GIB,
        16 * GIB,
        100_000_000,
        125_000_000,
        vec![],
    ))
    .await;
    let body = explain(&server, &op, &stream.playback_id, 48.0, 2.0, 2).await;
    assert_eq!(body["primary"]["node_id"], drain_node.as_str());
    drainer
        .send(EdgeMessage {
            payload: Some(edge_message::Payload::ModeChange(ModeChange {
                mode: NodeMode::Draining as i32,
            })),
        })
        .await;
    let body = explain(&server, &op, &stream.playback_id, 48.0, 2.0, 1).await;
    assert_eq!(body["primary"]["node_id"], ok_node.as_str());
    // cpu 50 + ram 32 (500 − ⌊15·500/16⌋) + bw 200 + geo 1000, no bonus.
    assert_eq!(parts_of(&body, &ok_node)["total"], 50 + 32 + 200 + 1000);

    // Ties go to the lower node id: a twin of `ok` with identical stats.
    let (twin, twin_node, _) = enroll(&server, &tenant).await;
    twin.send(stats(
        48.0,
        2.0,
        900,
        15 * GIB,
        16 * GIB,
        100_000_000,
        125_000_000,
        vec![],
    ))
    .await;
    let body = explain(&server, &op, &stream.playback_id, 48.0, 2.0, 2).await;
    let lower = std::cmp::min(ok_node.clone(), twin_node.clone());
    assert_eq!(body["primary"]["node_id"], lower.as_str());

    // Unknown viewer position: geo is 0 for everyone.
    let res = client()
        .get(play("?explain=1"))
        .bearer_auth(&op)
        .send()
        .await
        .expect("play");
    let body: Value = res.json().await.expect("json");
    assert_eq!(parts_of(&body, &ok_node)["geo"], 0);

    // Errors.
    for (url, status) in [
        (server.http("/play/nope_nope"), 404),
        (server.http("/play/bad%24id"), 400),
        (play("?lat=91&lon=0"), 400),
        (play("?lat=1"), 400),
        (play("/gopher/x"), 400),
        (play("/hls/..%2Fsecret"), 400),
        (play("/hls/index.m3u8?lat=91&lon=0"), 400),
        (play("/hls/index.m3u8?lon=2"), 400),
        (
            play(&format!("/hls/index.m3u8?fh_sid={}", "a".repeat(300))),
            400,
        ),
        (
            play(&format!("/hls/index.m3u8?{}", "a=1&".repeat(600))),
            400,
        ),
        (server.http("/play/bad%24id/hls/index.m3u8"), 400),
        (server.http("/play/nope_nope/hls/index.m3u8"), 404),
        (server.http("/ingest/sk_unknown"), 404),
    ] {
        let res = client().get(&url).send().await.expect("request");
        assert_eq!(res.status(), status, "{url}");
        let body: Value = res.json().await.expect("json error");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    // The redirect answers GET, HEAD and POST; other methods get a JSON 405.
    let res = client()
        .put(play("/hls/index.m3u8"))
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD, POST");
    let body: Value = res.json().await.expect("json error");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let res = client()
        .head(play("/hls/index.m3u8"))
        .send()
        .await
        .expect("head");
    assert_eq!(res.status(), 307);
    assert!(res.headers().contains_key("location"));

    // explain needs an operator token.
    let res = client().get(play("?explain=1")).send().await.expect("play");
    assert_eq!(res.status(), 401);
    let (_, tenant_token) = server
        .registry()
        .create_api_token(&tenant, foghorn::registry::Role::Tenant)
        .await
        .expect("token");
    let res = client()
        .get(play("?explain=1"))
        .bearer_auth(&tenant_token)
        .send()
        .await
        .expect("play");
    assert_eq!(res.status(), 403);

    // Ingest: JSON with URLs on an ingest edge, POST is a 307 to WHIP.
    let res = client()
        .get(server.http(&format!("/ingest/{key}")))
        .send()
        .await
        .expect("ingest");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert!(body["urls"]["whip"]
        .as_str()
        .expect("whip")
        .ends_with(&format!("/webrtc/{key}")));
    // The same ports as the streams API hands out (RTMP 1935, SRT 8889), on the chosen edge.
    let host = body["edge"]["base_url"]
        .as_str()
        .and_then(|u| u.strip_prefix("https://"))
        .expect("edge base URL");
    assert_eq!(
        body["urls"]["rtmp"],
        format!("rtmp://{host}:1935/live/{key}")
    );
    assert_eq!(
        body["urls"]["srt"],
        format!("srt://{host}:8889?streamid={key}")
    );
    let res = client()
        .post(server.http(&format!("/ingest/{key}")))
        .send()
        .await
        .expect("ingest");
    assert_eq!(res.status(), 307);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_charged_once_and_closed_edges_leave_at_once() {
    let server = TestServer::start(Db::Sqlite).await;
    let (tenant, op) = server.operator().await;
    let (stream, _) = server.stream(&tenant).await;
    let token = server.enrollment_token(&tenant, 1).await;
    let conn = EdgeConn::open(&server.grpc_url(), register_with_token(&token)).await;
    let mut conn = conn;
    let node = conn.seed().await.node_id;
    conn.send(stats(48.0, 2.0, 0, 0, 16 * GIB, 0, 1_000_000, vec![]))
        .await;
    let bw = |body: &Value| parts_of(body, &node)["bw"].as_u64().expect("bw");
    let before = bw(&explain(&server, &op, &stream.playback_id, 48.0, 2.0, 1).await);
    assert_eq!(before, 1000);

    let url = server.http(&format!("/play/{}/hls/index.m3u8", stream.playback_id));
    let res = client().get(&url).send().await.expect("redirect");
    let location = res.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_string();
    let sid = location
        .split("fh_sid=")
        .nth(1)
        .expect("session id")
        .to_string();
    // The node average (0 B/s over 10 connections) is below the floor: 64 KiB/s is charged.
    let after_one = bw(&explain(&server, &op, &stream.playback_id, 48.0, 2.0, 1).await);
    assert_eq!(after_one, 1000 - 65_536 * 1000 / 1_000_000);
    // The same viewer coming back with its session is not charged again.
    for _ in 0..5 {
        let res = client()
            .get(format!("{url}?fh_sid={sid}"))
            .send()
            .await
            .expect("redirect");
        assert_eq!(res.status(), 307);
    }
    assert_eq!(
        bw(&explain(&server, &op, &stream.playback_id, 48.0, 2.0, 1).await),
        after_one
    );

    // The edge goes away: no longer offered.
    drop(conn);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let res = client().get(&url).send().await.expect("play");
        if res.status() == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "closed edge still offered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Every decision was counted by endpoint and result.
    let metrics = client()
        .get(server.http("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let count = |endpoint: &str, result: &str| -> u64 {
        let key = format!(
            "foghorn_routing_decisions_total{{endpoint=\"{endpoint}\",result=\"{result}\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} in {metrics}"))
    };
    assert_eq!(count("play_json", "local"), 3, "the three explains");
    assert!(count("play", "local") >= 6, "the redirects");
    assert_eq!(count("play", "remote"), 0);
    assert!(count("play", "none") >= 1, "the 503 after the edge left");
    server.stop().await;
}

/// Issue 14 item 8 through the real server: with stats every 20 s, the bandwidth redirects charge
/// an edge is forgotten `edges.pending_ttl` after them (2 s here; 30 s by default), not when the
/// edge's reports get round to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_is_forgotten_after_its_ttl_with_a_long_stats_interval() {
    let ttl = Duration::from_secs(2);
    let server = TestServer::start_with(Db::Sqlite, |c| {
        c.edges.stats_interval = Duration::from_secs(20);
        c.edges.pending_ttl = ttl;
    })
    .await;
    let (tenant, _) = server.operator().await;
    let (stream, _) = server.stream(&tenant).await;
    let (conn, _, _) = enroll(&server, &tenant).await;
    // The only report: 1 MB/s over 10 connections, so each new viewer is charged 100 kB/s.
    conn.send(stats(
        48.0,
        2.0,
        0,
        0,
        16 * GIB,
        1_000_000,
        125_000_000,
        vec![],
    ))
    .await;
    let url = server.http(&format!("/play/{}/hls/index.m3u8", stream.playback_id));
    let pending = || async {
        let list: Value = client()
            .get(server.http("/?lstserver"))
            .send()
            .await
            .expect("lstserver")
            .json()
            .await
            .expect("json");
        list["edge.example.net"]["pending"].as_u64()
    };
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(5);
    while client().get(&url).send().await.expect("play").status() != 307 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "edge never routable"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // `started` is before the first charged redirect: nothing may go before `started + ttl`.
    for _ in 0..9 {
        assert_eq!(client().get(&url).send().await.expect("play").status(), 307);
    }
    assert_eq!(pending().await, Some(1_000_000), "ten new viewers charged");

    common::eventually(
        ttl + Duration::from_secs(3),
        "pending forgotten",
        || async { pending().await == Some(0) },
    )
    .await;
    assert!(
        started.elapsed() >= ttl,
        "forgotten after {:?}, before the TTL",
        started.elapsed()
    );
    drop(conn);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_position_from_geoip_and_trusted_proxies() {
    let mmdb =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geoip-test.mmdb");
    let server = TestServer::start_with(Db::Sqlite, |c| {
        c.geoip.mmdb_path = mmdb.display().to_string();
        c.viewers.trusted_proxies = vec!["127.0.0.7".into()];
    })
    .await;
    let (tenant, op) = server.operator().await;
    let (stream, _) = server.stream(&tenant).await;
    // Identical edges but for place: Paris and New York.
    let (paris, paris_node, _) = enroll(&server, &tenant).await;
    paris
        .send(stats(
            48.85,
            2.35,
            100,
            GIB,
            16 * GIB,
            0,
            125_000_000,
            vec![],
        ))
        .await;
    let (ny, ny_node, _) = enroll(&server, &tenant).await;
    ny.send(stats(
        40.7,
        -74.0,
        100,
        GIB,
        16 * GIB,
        0,
        125_000_000,
        vec![],
    ))
    .await;
    explain(&server, &op, &stream.playback_id, 0.0, 0.0, 2).await;

    let primary_from = |local: &'static str, xff: Option<&'static str>| {
        let url = server.http(&format!("/play/{}", stream.playback_id));
        async move {
            let client = reqwest::Client::builder()
                .local_address(local.parse::<std::net::IpAddr>().expect("ip"))
                .build()
                .expect("client");
            let mut req = client.get(url);
            if let Some(xff) = xff {
                req = req.header("x-forwarded-for", xff);
            }
            let body: Value = req.send().await.expect("play").json().await.expect("json");
            body["primary"]["node_id"]
                .as_str()
                .expect("primary")
                .to_string()
        }
    };
    // The database places 127.0.0.5 in Paris and 127.0.0.6 in New York.
    assert_eq!(primary_from("127.0.0.5", None).await, paris_node);
    assert_eq!(primary_from("127.0.0.6", None).await, ny_node);
    // A trusted proxy's X-Forwarded-For is believed (203.0.113.9 is in New York)...
    assert_eq!(
        primary_from("127.0.0.7", Some("203.0.113.9")).await,
        ny_node
    );
    // ...anyone else's is not: 127.0.0.5 stays in Paris.
    assert_eq!(
        primary_from("127.0.0.5", Some("203.0.113.9")).await,
        paris_node
    );
    server.stop().await;
}
