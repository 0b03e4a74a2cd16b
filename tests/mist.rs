//! Whole-server tests of the MistServer load-balancer API.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{register_with_token, Db, EdgeConn, TestServer};
use foghorn::proto::{edge_message, EdgeMessage, NodeStats, StreamStats};
use reqwest::redirect::Policy;
use serde_json::Value;

fn stats(lat: f64, cpu: u32, streams: Vec<StreamStats>) -> EdgeMessage {
    EdgeMessage {
        payload: Some(edge_message::Payload::NodeStats(NodeStats {
            cpu_tenths: cpu,
            ram_max_bytes: 16 << 30,
            ram_used_bytes: 1 << 30,
            up_bytes_per_sec: 1_000_000,
            bw_limit_bytes_per_sec: 125_000_000,
            latitude: Some(lat),
            longitude: Some(0.0),
            connections: 4,
            streams,
            ..Default::default()
        })),
    }
}

fn stream(name: &str, inputs: u32, replicated: bool, viewers: u32) -> StreamStats {
    StreamStats {
        internal_name: name.into(),
        inputs,
        replicated,
        viewers,
        up_bytes_per_sec: 500_000,
        ..Default::default()
    }
}

/// An HTTP client whose requests come from `local`.
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .local_address(local.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistserver_load_balancer_api() {
    let server = TestServer::start(Db::Sqlite).await;
    let (tenant, op) = server.operator().await;
    let (s, _) = server.stream(&tenant).await;
    let name = s.internal_name.clone();
    let token = server.enrollment_token(&tenant, 3).await;

    // Origin on 127.0.0.2 (has the input), a replica on 127.0.0.3, a bare edge on 127.0.0.4 that
    // is the least loaded (it wins when nobody carries the stream).
    let mut conns = Vec::new();
    let mut nodes = Vec::new();
    for (ip, lat, cpu, streams) in [
        ("127.0.0.2", 10.0, 300, vec![stream(&name, 1, false, 3)]),
        ("127.0.0.3", 10.0, 300, vec![stream(&name, 0, true, 5)]),
        ("127.0.0.4", 10.0, 0, vec![]),
    ] {
        // No base URL of its own: the edge is reached as edge-{node}.{cluster}.{root}.
        let mut register = register_with_token(&token);
        if let Some(edge_message::Payload::Register(r)) = &mut register.payload {
            r.public_base_url.clear();
        }
        let mut c =
            EdgeConn::open_from(&server.grpc_url(), register, Some(ip.parse().expect("ip"))).await;
        nodes.push(c.seed().await.node_id);
        c.send(stats(lat, cpu, streams)).await;
        conns.push(c);
    }
    let host = |node: &str| format!("edge-{node}.test.example.net");
    let viewer = client_from("127.0.0.1");
    let get_text = |c: reqwest::Client, path: String| {
        let url = server.http(&path);
        async move {
            let res = c.get(url).send().await.expect("request");
            (res.status().as_u16(), res.text().await.expect("text"))
        }
    };
    // The read views answer the cluster's own edges (here the bare one) and operators.
    let edge = client_from("127.0.0.4");
    // Wait until all three are in the routing snapshot.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = get_text(edge.clone(), "/?lstserver=1".into()).await;
        let list: Value = serde_json::from_str(&body).expect("json");
        if list.as_object().map(|o| o.len()) == Some(3) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "edges never listed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Best host for the stream: the carriers get the bonus (50) but pay 150 more CPU score than
    // the bare edge (cpu 300 → 350 vs 500): the bare edge wins on score.
    let (status, body) = get_text(viewer.clone(), format!("/{name}")).await;
    assert_eq!((status, body.as_str()), (200, host(&nodes[2]).as_str()));
    // A playback id means its stream; ?proto= redirects.
    let res = viewer
        .get(server.http(&format!("/{}?proto=hls", s.playback_id)))
        .send()
        .await
        .expect("redirect");
    assert_eq!(res.status(), 307);
    assert_eq!(
        res.headers()["location"],
        format!("https://{}/hls/{name}/index.m3u8", host(&nodes[2])).as_str()
    );
    // MistServer's connector names, in any case; the rest of the viewer's query goes along.
    for (proto, path) in [
        ("HLS", format!("/hls/{name}/index.m3u8")),
        ("Dash", format!("/cmaf/{name}/index.mpd")),
        ("WebRTC", format!("/webrtc/{name}")),
        ("EBML", format!("/{name}.webm")),
        ("HTTPTS", format!("/{name}.ts")),
        ("http", format!("/{name}.html")),
    ] {
        let res = viewer
            .get(server.http(&format!("/{name}?tkn=a%2Fb&proto={proto}&x=1")))
            .send()
            .await
            .expect("redirect");
        assert_eq!(res.status(), 307, "proto={proto}");
        let location = res.headers()["location"].to_str().expect("location");
        assert!(
            location.ends_with(&format!("{path}?tkn=a%2Fb&x=1")),
            "proto={proto}: {location}"
        );
    }
    let (status, body) = get_text(viewer.clone(), format!("/{name}?proto=RTMPX")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown protocol"), "{body}");

    // ?source=: the origin, never the replica; from the origin itself: the fallback.
    let (_, body) = get_text(viewer.clone(), format!("/?source={name}")).await;
    assert_eq!(body, format!("dtsc://{}:4200/{name}", host(&nodes[0])));
    let (_, body) = get_text(client_from("127.0.0.2"), format!("/?source={name}")).await;
    assert_eq!(body, "push://");
    let (_, body) = get_text(
        client_from("127.0.0.2"),
        format!(
            "/?source={name}&fallback=dtsc://backup:4200/{}",
            name.replace('+', "%2B")
        ),
    )
    .await;
    assert_eq!(body, format!("dtsc://backup:4200/{name}"));
    let (_, body) = get_text(viewer.clone(), "/?source=live+nobody".into()).await;
    assert_eq!(body, "push://");

    // Read views: every tenant's streams and load, so not for anyone.
    let tenant_token = server
        .registry()
        .create_api_token(&tenant, foghorn::registry::Role::Tenant)
        .await
        .expect("tenant token")
        .1;
    for view in [
        "/?lstserver".to_string(),
        format!("/?streamstats={name}"),
        format!("/?stream={name}"),
        "/?viewers".into(),
        format!("/?host={}", host(&nodes[1])),
    ] {
        let (status, _) = get_text(viewer.clone(), view.clone()).await;
        assert_eq!(status, 401, "{view} without a token");
        let as_tenant = viewer
            .get(server.http(&view))
            .bearer_auth(&tenant_token)
            .send()
            .await
            .expect("request");
        assert_eq!(as_tenant.status(), 403, "{view} with a tenant token");
        let as_operator = viewer
            .get(server.http(&view))
            .bearer_auth(&op)
            .send()
            .await
            .expect("request");
        assert_eq!(as_operator.status(), 200, "{view} with an operator token");
    }
    // As MistServer: per stream, [viewers, bandwidth per viewer], summed over the edges (two
    // carriers at 500,000 B/s each, 3 + 5 viewers); `*` for all, a playback id for its stream.
    for asked in [name.as_str(), "*", s.playback_id.as_str()] {
        let (_, body) = get_text(edge.clone(), format!("/?streamstats={asked}")).await;
        let st: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(st, serde_json::json!({ &name: [8, 125_000] }), "{asked}");
    }
    let (_, body) = get_text(edge.clone(), "/?streamstats=live+nobody".into()).await;
    assert_eq!(body, "{}");
    let (status, body) = get_text(edge.clone(), format!("/?stream={name}")).await;
    assert_eq!((status, body.as_str()), (200, "8"));
    let (_, body) = get_text(edge.clone(), "/?stream=live+nobody".into()).await;
    assert_eq!(body, "0");
    let (_, body) = get_text(edge.clone(), "/?viewers=1".into()).await;
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v[&name], 8);
    let (status, body) = get_text(edge.clone(), format!("/?host={}", host(&nodes[1]))).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["node_id"],
        nodes[1].as_str()
    );
    let (status, _) = get_text(edge.clone(), "/?host=nope".into()).await;
    assert_eq!(status, 404);
    // ?ingest={cpu}: the CPU percent the input needs, as MistServer reads it (a number at the
    // start, anything else 0): the bare edge (0 % CPU) fits any need below 100 %, the others
    // (30 %) not 70 %; nobody fits 100 %.
    for asked in ["1", "", "abc", "70%", "99.9"] {
        let (status, body) = get_text(viewer.clone(), format!("/?ingest={asked}")).await;
        assert_eq!((status, body), (200, host(&nodes[2])), "ingest={asked}");
    }
    let (status, body) = get_text(viewer.clone(), "/?ingest=100".into()).await;
    assert_eq!(status, 503, "{body}");

    // Weights: operator only; a change is applied to every later decision.
    let (status, _) = get_text(viewer.clone(), "/?weights=".into()).await;
    assert_eq!(status, 401);
    let set = viewer
        .get(server.http("/?weights={\"cpu\":0,\"bonus\":1000}"))
        .bearer_auth(&op)
        .send()
        .await
        .expect("weights");
    assert_eq!(set.status(), 200);
    let w: Value = set.json().await.expect("json");
    assert_eq!(
        (w["cpu"].as_u64(), w["bonus"].as_u64(), w["ram"].as_u64()),
        (Some(0), Some(1000), Some(500))
    );
    // With CPU ignored and a big bonus, the carriers win; they tie, so the lower node id.
    let (_, body) = get_text(viewer.clone(), format!("/{name}")).await;
    let lower = std::cmp::min(&nodes[0], &nodes[1]);
    assert_eq!(body, host(lower));
    let bad = viewer
        .get(server.http("/?weights={\"cpu\":-3}"))
        .bearer_auth(&op)
        .send()
        .await
        .expect("weights");
    assert_eq!(bad.status(), 400);

    // Bad names are refused, not routed.
    let (status, _) = get_text(viewer.clone(), "/?source=a%2Fb".into()).await;
    assert_eq!(status, 400);
    drop(conns);
    server.stop().await;
}

/// A MistServer player asks `/{stream}` and then connects: each lookup charges the chosen edge as
/// a redirect does, so a burst spreads over equal edges instead of landing on one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistserver_lookups_are_charged_like_redirects() {
    let server = TestServer::start(Db::Sqlite).await;
    let (tenant, _) = server.operator().await;
    let (s, _) = server.stream(&tenant).await;
    let token = server.enrollment_token(&tenant, 3).await;
    let mut conns = Vec::new();
    let mut hosts = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let mut register = register_with_token(&token);
        if let Some(edge_message::Payload::Register(r)) = &mut register.payload {
            r.public_base_url.clear();
        }
        let mut c =
            EdgeConn::open_from(&server.grpc_url(), register, Some(ip.parse().expect("ip"))).await;
        hosts.push(format!("edge-{}.test.example.net", c.seed().await.node_id));
        // Equal edges, 10 MB/s each: a viewer (1 MB/s over 4 connections) is 2.5 % of one.
        let mut m = stats(10.0, 100, vec![]);
        if let Some(edge_message::Payload::NodeStats(n)) = &mut m.payload {
            n.bw_limit_bytes_per_sec = 10_000_000;
        }
        c.send(m).await;
        conns.push(c);
    }
    // All three in the routing snapshot (the read view answers the cluster's own edges).
    let edge = client_from("127.0.0.2");
    let list = server.http("/?lstserver=1");
    common::eventually(Duration::from_secs(5), "all three edges listed", || {
        let (edge, list) = (edge.clone(), list.clone());
        async move {
            let body = edge.get(list).send().await.expect("list").text().await;
            let listed: Value = serde_json::from_str(&body.expect("text")).expect("json");
            listed.as_object().map(|o| o.len()) == Some(3)
        }
    })
    .await;
    let viewer = client_from("127.0.0.1");
    let path = format!("/{}", s.playback_id);
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..30 {
        let res = viewer.get(server.http(&path)).send().await.expect("lookup");
        assert_eq!(res.status(), 200);
        *counts.entry(res.text().await.expect("text")).or_default() += 1;
    }
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        {
            let mut h = hosts.clone();
            h.sort();
            h
        },
        "{counts:?}"
    );
    // Without the charge every lookup goes to the same edge (equal scores, one tie order).
    assert!(counts.values().all(|&n| n <= 20), "{counts:?}");
}

/// CORS as MistServer's balancer gives it: a browser player on another origin may read the viewer
/// and MistServer answers (`*` by default), preflights are answered; `/api/v1` has none unless
/// configured, and a configured list names only listed origins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_for_players_on_other_origins() {
    for listed in [false, true] {
        let server = TestServer::start_with(Db::Sqlite, |c| {
            if listed {
                c.viewers.cors_origins = vec!["https://player.example".into()];
                c.server.api_cors_origins = vec!["https://dash.example".into()];
            }
        })
        .await;
        let (tenant, op) = server.operator().await;
        let (s, _) = server.stream(&tenant).await;
        let token = server.enrollment_token(&tenant, 1).await;
        let mut edge = EdgeConn::open(&server.grpc_url(), register_with_token(&token)).await;
        let node = edge.seed().await.node_id;
        edge.send(stats(10.0, 100, vec![])).await;
        common::eventually(Duration::from_secs(5), "edge routable", || {
            server.routable(&op, &node)
        })
        .await;
        let client = client_from("127.0.0.1");
        let send = |method: reqwest::Method, path: String, origin: &'static str| {
            client
                .request(method, server.http(&path))
                .header("origin", origin)
                .bearer_auth(&op)
                .send()
        };
        let allowed = |res: &reqwest::Response| {
            res.headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().expect("ascii").to_string())
        };
        let varies = |res: &reqwest::Response| {
            res.headers().get_all("vary").iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.to_ascii_lowercase().contains("origin"))
            })
        };
        let player = "https://player.example";
        let want = if listed { player } else { "*" };
        let id = &s.playback_id;
        // The viewer lane's 307, hyper's (a WHEP POST), /play JSON, its 404, MistServer's text.
        for (method, path, status) in [
            (
                reqwest::Method::GET,
                format!("/play/{id}/hls/index.m3u8"),
                307,
            ),
            (reqwest::Method::POST, format!("/play/{id}/whep"), 307),
            (reqwest::Method::GET, format!("/play/{id}"), 200),
            (
                reqwest::Method::GET,
                "/play/nope/hls/index.m3u8".into(),
                404,
            ),
            (reqwest::Method::GET, format!("/{id}"), 200),
            (reqwest::Method::GET, "/?source=nope".into(), 200),
        ] {
            let res = send(method.clone(), path.clone(), player)
                .await
                .expect("request");
            assert_eq!(res.status(), status, "{method} {path}");
            assert_eq!(allowed(&res).as_deref(), Some(want), "{method} {path}");
            assert_eq!(varies(&res), listed, "{method} {path}");
            let other = send(method.clone(), path.clone(), "https://other.example")
                .await
                .expect("request");
            let expected = (!listed).then_some("*");
            assert_eq!(allowed(&other).as_deref(), expected, "{method} {path}");
        }
        // The preflight of a WHEP POST with its headers.
        let res = client
            .request(
                reqwest::Method::OPTIONS,
                server.http(&format!("/play/{id}/whep")),
            )
            .header("origin", player)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .send()
            .await
            .expect("preflight");
        assert_eq!(res.status(), 204);
        assert_eq!(allowed(&res).as_deref(), Some(want));
        let h = res.headers();
        assert_eq!(
            h["access-control-allow-methods"],
            "GET, HEAD, POST, OPTIONS"
        );
        assert_eq!(
            h["access-control-allow-headers"],
            "content-type,authorization"
        );
        assert_eq!(h["access-control-max-age"], "600");
        // /api/v1: nothing unless listed; operations and the dashboard: nothing.
        let dash = "https://dash.example";
        let res = client
            .get(server.http("/api/v1/tenant/network"))
            .header("origin", dash)
            .bearer_auth(&op)
            .send()
            .await
            .expect("api");
        assert_eq!(res.status(), 200);
        assert_eq!(allowed(&res).as_deref(), listed.then_some(dash));
        let res = client
            .request(
                reqwest::Method::OPTIONS,
                server.http("/api/v1/tenant/network"),
            )
            .header("origin", dash)
            .header("access-control-request-method", "GET")
            .send()
            .await
            .expect("api preflight");
        assert_eq!(res.status(), if listed { 204 } else { 405 });
        for path in ["/health", "/ui", "/metrics"] {
            let res = send(reqwest::Method::GET, path.into(), player)
                .await
                .expect(path);
            assert_eq!(allowed(&res), None, "{path}");
        }
        drop(edge);
        server.stop().await;
    }
}

/// A simulated MistController on `ip`: `GET /s3cret.json` answers `body()` (what it says now).
async fn mist_controller(
    ip: &str,
    body: impl Fn() -> String + Send + Sync + 'static,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = std::sync::Arc::new(body);
    let app = axum::Router::new().route(
        "/s3cret.json",
        axum::routing::get(move || {
            let body = body.clone();
            async move { body() }
        }),
    );
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (addr, task)
}

/// MistController's load JSON for a server at `cpu` tenths carrying `stream`.
fn mist_load(cpu: u32, stream: &str) -> String {
    serde_json::json!({
        "cpu": cpu, "mem_total": 16u64 << 30, "mem_used": 1u64 << 30,
        "shm_total": 1u64 << 30, "shm_used": 1u64 << 20,
        "bw": [1_000_000, 1_000], "bwlimit": 125_000_000, "curr": [2, 1, 0, 0],
        "loc": {"lat": 52.0, "lon": 4.0, "name": "Lab"},
        "streams": {stream: {"curr": [2, 1, 0], "bw": [500_000, 0]}},
        "outputs": {"HTTP": "http://HOST:8080/$.html", "HLS": "http://HOST:8080/hls/$/index.m3u8"},
    })
    .to_string()
}

/// `?addserver=` / `?delserver=` as in MistUtilLoad, operator only: added MistServers are polled
/// on their MistController JSON and routed like Helmsman edges; one that answers garbage, hangs
/// or goes away is not routed; the list outlives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_mistservers_are_polled_and_routed() {
    let tweak = |c: &mut foghorn::config::Config| {
        c.edges.stats_interval = Duration::from_secs(1);
        c.edges.mist_passphrase = "s3cret".into();
    };
    let server = TestServer::start_with(Db::Postgres, tweak).await;
    let db_url = server.db.url.clone();
    let (tenant, op) = server.operator().await;
    let (s, _) = server.stream(&tenant).await;
    let name = s.internal_name.clone();
    let tenant_token = server
        .registry()
        .create_api_token(&tenant, foghorn::registry::Role::Tenant)
        .await
        .expect("tenant token")
        .1;

    let (low, low_task) = mist_controller("127.0.0.5", {
        let name = name.clone();
        move || mist_load(100, &name)
    })
    .await;
    let (high, _high_task) = mist_controller("127.0.0.6", {
        let name = name.clone();
        move || mist_load(400, &name)
    })
    .await;
    let (garbage, _garbage_task) = mist_controller("127.0.0.7", || "<html>nope".into()).await;
    // Accepts and never answers.
    let hanging_listener = tokio::net::TcpListener::bind("127.0.0.8:0")
        .await
        .expect("bind");
    let hanging = hanging_listener.local_addr().expect("addr");
    let _hanging_task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hanging_listener.accept().await {
            held.push(conn);
        }
    });

    let client = client_from("127.0.0.1");
    let call = |query: String, token: Option<String>| {
        let mut req = client.get(server.http(&format!("/?{query}")));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        async move {
            let res = req.send().await.expect("request");
            (res.status().as_u16(), res.text().await.expect("text"))
        }
    };
    let op_call = |query: String| call(query, Some(op.clone()));
    let lookup = || {
        let req = client.get(server.http(&format!("/{name}")));
        async move {
            let res = req.send().await.expect("lookup");
            (res.status().as_u16(), res.text().await.expect("text"))
        }
    };

    // Operator only.
    let add_low = format!("addserver={low}");
    assert_eq!(call(add_low.clone(), None).await.0, 401);
    assert_eq!(
        call(add_low.clone(), Some(tenant_token.clone())).await.0,
        403
    );
    // MistServer's replies.
    let (status, body) = op_call(add_low.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        serde_json::json!({ low.to_string(): "Starting monitoring" })
    );
    let (_, body) = op_call(add_low.clone()).await;
    assert_eq!(body, "\"Server already monitored - add request ignored\"");
    for server_name in [high.to_string(), garbage.to_string(), hanging.to_string()] {
        let (status, body) = op_call(format!("addserver={server_name}")).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = op_call(format!("addserver={}", "a".repeat(1100))).await;
    assert_eq!(status, 400);
    assert!(body.contains("too long"), "{body}");
    let (status, body) = op_call("addserver=a%20b:12".into()).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = op_call("addserver=host/notabandwidth".into()).await;
    assert_eq!(status, 400, "{body}");

    // The two that answer are routed, the garbage and the hanging one never are.
    let listed = || async {
        let (_, body) = op_call("lstserver".into()).await;
        let list: Value = serde_json::from_str(&body).expect("json");
        let mut hosts: Vec<String> = list.as_object().expect("object").keys().cloned().collect();
        hosts.sort();
        hosts
    };
    common::eventually(
        Duration::from_secs(15),
        "both answering servers routed",
        || async { listed().await == ["127.0.0.5", "127.0.0.6"] },
    )
    .await;
    let (status, body) = lookup().await;
    assert_eq!((status, body.as_str()), (200, "127.0.0.5"));
    let res = client
        .get(server.http(&format!("/{name}?proto=HLS")))
        .send()
        .await
        .expect("redirect");
    assert_eq!(res.status(), 307);
    assert_eq!(
        res.headers()["location"],
        format!("http://127.0.0.5:8080/hls/{name}/index.m3u8").as_str()
    );
    // Their load is read as a Helmsman edge's: viewers per stream.
    let (_, body) = op_call(format!("stream={name}")).await;
    assert_eq!(body, "4");
    // A few more polls: garbage and silence still keep those two out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(listed().await, ["127.0.0.5", "127.0.0.6"]);

    // The best one goes away: out at its next poll, viewers go to the other.
    low_task.abort();
    common::eventually(
        Duration::from_secs(10),
        "the vanished server unrouted",
        || async { lookup().await.1 == "127.0.0.6" },
    )
    .await;

    // delserver: MistServer's replies; the garbage one leaves the list.
    let (status, body) = op_call(format!("delserver={garbage}")).await;
    assert_eq!((status, body.as_str()), (200, "\"Offline\""));
    let (_, body) = op_call(format!("delserver={garbage}")).await;
    assert_eq!(
        body,
        "\"Server not monitored - could not delete from monitored server list!\""
    );
    assert_eq!(call(format!("delserver={high}"), None).await.0, 401);

    // A restart keeps the list: the answering server is routed again without being re-added.
    server.stop().await;
    let server = TestServer::start_with(Db::Postgres, |c| {
        tweak(c);
        c.database.url = db_url;
    })
    .await;
    let mut kept = server.registry().mist_servers("test").await.expect("list");
    kept.sort();
    let mut expected = vec![low.to_string(), high.to_string(), hanging.to_string()];
    expected.sort();
    assert_eq!(kept, expected);
    let client = client_from("127.0.0.1");
    let routed = || async {
        let res = client
            .get(server.http(&format!("/{name}")))
            .send()
            .await
            .expect("lookup");
        (res.status().as_u16(), res.text().await.expect("text"))
    };
    common::eventually(
        Duration::from_secs(15),
        "routed again after the restart",
        || async { routed().await == (200, "127.0.0.6".to_string()) },
    )
    .await;
    // Removed: out of routing at the next poll.
    let res = client
        .get(server.http(&format!("/?delserver={high}")))
        .bearer_auth(&op)
        .send()
        .await
        .expect("delserver");
    assert_eq!(res.text().await.expect("text"), "\"Offline\"");
    common::eventually(Duration::from_secs(10), "no edge left", || async {
        routed().await.0 == 503
    })
    .await;
    server.stop().await;
}
