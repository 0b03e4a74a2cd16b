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
    let (_, body) = get_text(edge.clone(), format!("/?streamstats={name}")).await;
    let st: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(st[host(&nodes[0])]["inputs"], 1);
    assert_eq!(st[host(&nodes[1])]["replicated"], true);
    assert!(st.get(host(&nodes[2])).is_none());
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
    let (status, body) = get_text(viewer.clone(), "/?ingest=1".into()).await;
    assert_eq!((status, body), (200, host(&nodes[2])));

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
