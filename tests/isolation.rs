//! Whole-server tests of tenant isolation on the viewer path (DESIGN.md §11): a Foghorn routes a
//! stream only when its tenant may use the Foghorn's cluster. For any other tenant's stream every
//! routing entry point answers exactly as for a stream that does not exist.

#[macro_use]
mod common;

use common::{enroll, eventually, ingest_frame, Db, TestServer};
use foghorn::proto::{edge_message, EdgeMessage, NodeStats, StreamStats};
use foghorn::registry::NewCluster;
use reqwest::redirect::Policy;
use std::time::Duration;

/// Viewers ask from 127.0.0.9: not the edge's address (`?source=` never answers the asking host).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .local_address(std::net::IpAddr::from([127, 0, 0, 9]))
        .build()
        .expect("client")
}

/// An edge carrying `streams`, each with an input (it claims to be their origin).
fn carrying(streams: &[&str]) -> EdgeMessage {
    EdgeMessage {
        payload: Some(edge_message::Payload::NodeStats(NodeStats {
            cpu_tenths: 100,
            ram_max_bytes: 16 << 30,
            ram_used_bytes: 1 << 30,
            up_bytes_per_sec: 1_000_000,
            bw_limit_bytes_per_sec: 125_000_000,
            latitude: Some(48.85),
            longitude: Some(2.35),
            connections: 4,
            streams: streams
                .iter()
                .map(|name| StreamStats {
                    internal_name: (*name).into(),
                    inputs: 1,
                    viewers: 2,
                    up_bytes_per_sec: 100_000,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })),
    }
}

/// Status, Location and body of `method path`.
async fn ask(server: &TestServer, method: reqwest::Method, path: &str) -> (u16, String, String) {
    let res = client()
        .request(method, server.http(path))
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .map(|l| l.to_str().expect("ascii").to_string())
        .unwrap_or_default();
    (status, location, res.text().await.expect("body"))
}

async fn own_cluster_only(db: Db) {
    let server = TestServer::start(db).await;
    let registry = server.registry().clone();
    // Tenant A uses this cluster; tenant B lives on another cluster and never subscribed here.
    let (a, _) = server.operator().await;
    let (a_stream, _) = server.stream(&a).await;
    registry
        .ensure_cluster(&NewCluster::platform("elsewhere", "Elsewhere"))
        .await
        .expect("cluster");
    let b = registry
        .create_tenant("Tenant B", "elsewhere")
        .await
        .expect("tenant B");
    let (b_stream, b_key) = registry.create_stream(&b.id, "main").await.expect("stream");

    // A's edge, which (hostile or confused) even reports B's stream as one it originates.
    let (mut edge, _, _) = enroll(&server, &a).await;
    edge.send(carrying(&[
        &a_stream.internal_name,
        &b_stream.internal_name,
    ]))
    .await;
    let a_path = format!("/play/{}/hls/index.m3u8", a_stream.playback_id);
    eventually(Duration::from_secs(5), "A's stream is served", || async {
        ask(&server, reqwest::Method::GET, &a_path).await.0 == 307
    })
    .await;
    let (_, _, source) = ask(
        &server,
        reqwest::Method::GET,
        &format!("/?source={}", a_stream.internal_name),
    )
    .await;
    assert!(source.starts_with("dtsc://"), "A's origin: {source}");

    // Every entry point answers for B's stream as for one that does not exist.
    let unknown_id = "AbsentPlaybackId0123";
    let unknown_name = "live+absent0123456789";
    let unknown_key = "sk_AbsentStreamKey0123456789";
    let cases = [
        (reqwest::Method::GET, "/play/{id}"),
        (reqwest::Method::GET, "/play/{id}/hls/index.m3u8"),
        (reqwest::Method::POST, "/play/{id}/whep"),
        (reqwest::Method::GET, "/{id}"),
        (reqwest::Method::GET, "/{id}?proto=hls"),
        (reqwest::Method::GET, "/{name}"),
        (reqwest::Method::GET, "/{name}?proto=hls"),
        (reqwest::Method::GET, "/?source={name}"),
        (
            reqwest::Method::GET,
            "/?source={id}&fallback=push://elsewhere",
        ),
        (reqwest::Method::GET, "/?streamstats={name}"),
        (reqwest::Method::GET, "/ingest/{key}"),
        (reqwest::Method::POST, "/ingest/{key}"),
    ];
    for (method, template) in cases {
        let fill = |id: &str, name: &str, key: &str| {
            template
                .replace("{id}", id)
                .replace("{name}", name)
                .replace("{key}", key)
        };
        let b_path = fill(&b_stream.playback_id, &b_stream.internal_name, &b_key);
        let unknown_path = fill(unknown_id, unknown_name, unknown_key);
        let got = ask(&server, method.clone(), &b_path).await;
        let absent = ask(&server, method.clone(), &unknown_path).await;
        assert_eq!(
            got, absent,
            "{method} {b_path} must answer as {unknown_path} does"
        );
        assert!(
            !got.1.contains("example.net") && !got.2.contains("example.net"),
            "{method} {b_path} names an edge: {got:?}"
        );
    }
    assert_eq!(
        ask(
            &server,
            reqwest::Method::GET,
            &format!("/play/{}", b_stream.playback_id)
        )
        .await
        .0,
        404
    );

    // A publisher with B's key on A's edge is refused as with an unknown key.
    edge.send(ingest_frame("r1", &b_key)).await;
    let refused = edge.decision().await;
    edge.send(ingest_frame("r2", unknown_key)).await;
    let unknown = edge.decision().await;
    assert!(!refused.accept);
    assert_eq!(refused.reason, unknown.reason);
    assert_eq!(refused.internal_name, "");

    // Once B subscribes to this cluster, its viewers are served here.
    registry
        .subscribe(&b.id, &server.server().state.config.cluster.id, None, false)
        .await
        .expect("subscribe");
    let b_path = format!("/play/{}/hls/index.m3u8", b_stream.playback_id);
    eventually(
        Duration::from_secs(10),
        "B's stream served once B subscribed",
        || async { ask(&server, reqwest::Method::GET, &b_path).await.0 == 307 },
    )
    .await;
    server.stop().await;
}

on_both!(own_cluster_only);
