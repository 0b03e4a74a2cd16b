//! Federation end to end (DESIGN.md §7): three Foghorns of three clusters on one PostgreSQL
//! registry, edges simulated over their real control streams, viewers over real HTTP, peers over
//! real gRPC. Intervals are shortened so each test runs in seconds.

mod common;

use std::time::Duration;

use common::*;
use foghorn::config::Config;
use foghorn::proto::{
    control_message, edge_message, federation_client::FederationClient, peer_message,
    ClusterEdgeSummary, Hello, PeerMessage, Register, StreamStats,
};
use foghorn::registry::Role;
use reqwest::redirect::Policy;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const ROOT: &str = "example.net";
const WAIT: Duration = Duration::from_secs(10);

fn federated(config: &mut Config, cluster: &str) {
    config.cluster.id = cluster.into();
    config.redis.url = String::new();
    let f = &mut config.federation;
    f.summary_interval = Duration::from_millis(300);
    f.heartbeat_interval = Duration::from_millis(100);
    f.summary_ttl = Duration::from_secs(3);
    f.heartbeat_ttl = Duration::from_secs(1);
    f.reconcile_interval = Duration::from_millis(300);
    f.reconnect_max = Duration::from_millis(300);
    // A call that arranges a pull may nest another (alpha → bravo → charlie, dialing on demand);
    // twenty tests of three debug-built Foghorns each start at once on two cores, where the
    // production default of 2 s most likely ran out once in CI, and the viewer (rightly) went to
    // the fallback edge.
    f.rpc_timeout = Duration::from_secs(8);
}

/// Foghorns of clusters alpha, bravo and charlie on one registry.
async fn three() -> (TestServer, TestServer, TestServer) {
    let alpha = TestServer::start_with(Db::Postgres, |c| federated(c, "alpha")).await;
    let bravo = alpha.replica(|c| federated(c, "bravo")).await;
    let charlie = alpha.replica(|c| federated(c, "charlie")).await;
    (alpha, bravo, charlie)
}

/// A tenant whose official cluster is `official`, with a tenant API token.
async fn tenant(server: &TestServer, official: &str) -> (String, String) {
    let registry = server.registry();
    let t = registry
        .create_tenant("Streamer", official)
        .await
        .expect("tenant");
    let (_, token) = registry
        .create_api_token(&t.id, Role::Tenant)
        .await
        .expect("token");
    (t.id, token)
}

/// A tenant of alpha subscribed to bravo that prefers it (alpha and bravo peer always-on), with a
/// tenant API token.
async fn preferring_bravo(alpha: &TestServer) -> (String, String) {
    let (t, token) = tenant(alpha, "alpha").await;
    subscribe(alpha, &t, "bravo").await;
    alpha
        .registry()
        .set_preferred_cluster(&t, Some("bravo"))
        .await
        .expect("preferred");
    (t, token)
}

async fn subscribe(server: &TestServer, tenant: &str, cluster: &str) {
    server
        .registry()
        .subscribe(tenant, cluster, None, true)
        .await
        .expect("subscribe");
}

/// One simulated edge of `server`'s cluster: its control stream and node id.
struct Edge {
    conn: EdgeConn,
    node_id: String,
}

fn stats(cpu_tenths: u32, streams: &[(&str, u32)]) -> foghorn::proto::EdgeMessage {
    let streams = streams
        .iter()
        .map(|(name, inputs)| StreamStats {
            internal_name: name.to_string(),
            inputs: *inputs,
            up_bytes_per_sec: 100_000,
            viewers: 1,
            ..Default::default()
        })
        .collect();
    stats_frame_at_cpu(cpu_tenths, streams)
}

impl Edge {
    /// Enrolls an edge (standard base URL) owned by `owner` and sends its first stats.
    async fn start(server: &TestServer, owner: &str, cpu_tenths: u32) -> Edge {
        Edge::start_at(server, owner, cpu_tenths, "").await
    }

    /// Like [`Edge::start`], with the base URL `base_url` (empty: the standard one).
    async fn start_at(server: &TestServer, owner: &str, cpu_tenths: u32, base_url: &str) -> Edge {
        let token = server.enrollment_token(owner, 1).await;
        let (edge, _) = Edge::enroll(server, &token, base_url).await;
        edge.report(cpu_tenths, &[]).await;
        edge
    }

    /// Enrolls an edge with enrollment token `token` and base URL `base_url` (empty: the
    /// standard one); returns it with its first ConfigSeed.
    async fn enroll(
        server: &TestServer,
        token: &str,
        base_url: &str,
    ) -> (Edge, foghorn::proto::ConfigSeed) {
        let mut register = register_with_token(token);
        if let Some(edge_message::Payload::Register(Register {
            public_base_url, ..
        })) = &mut register.payload
        {
            *public_base_url = base_url.to_string();
        }
        let mut conn = EdgeConn::open(&server.grpc_url(), register).await;
        let seed = conn.seed().await;
        let edge = Edge {
            conn,
            node_id: seed.node_id.clone(),
        };
        (edge, seed)
    }

    async fn report(&self, cpu_tenths: u32, streams: &[(&str, u32)]) {
        self.conn.send(stats(cpu_tenths, streams)).await;
    }

    /// Waits until `server`'s routing holds this edge (`token`: an operator's).
    async fn routable(&self, server: &TestServer, token: &str) {
        eventually(WAIT, "the edge is routable", || {
            server.routable(token, &self.node_id)
        })
        .await;
    }

    fn url(&self, cluster: &str) -> String {
        format!("https://edge-{}.{cluster}.{ROOT}", self.node_id)
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// `GET /play/{id}` (JSON) with a returning session, so no redirect is charged to an edge.
async fn play(server: &TestServer, playback_id: &str) -> Value {
    play_for_host(server, "127.0.0.1", playback_id).await
}

/// `GET /play/{id}` sent to `server` with `Host: host`.
async fn play_for_host(server: &TestServer, host: &str, playback_id: &str) -> Value {
    let res = http()
        .get(server.http(&format!("/play/{playback_id}?fh_sid=test")))
        .header("host", host)
        .send()
        .await
        .expect("GET /play");
    res.json().await.expect("json")
}

/// The 307 target of `/play/{id}/hls/index.m3u8`, or `None` on any other answer (503 while no
/// edge is eligible); a returning viewer's, so no redirect is charged to an edge.
async fn try_redirect(server: &TestServer, playback_id: &str) -> Option<String> {
    try_location(
        server,
        &format!("/play/{playback_id}/hls/index.m3u8?fh_sid=test"),
    )
    .await
}

/// Like [`try_redirect`] for a new viewer (no session id): the redirect is charged to its edge.
async fn try_redirect_new(server: &TestServer, playback_id: &str) -> Option<String> {
    try_location(server, &format!("/play/{playback_id}/hls/index.m3u8")).await
}

/// The `location` of `server`'s answer to `GET path` when it is a 307.
async fn try_location(server: &TestServer, path: &str) -> Option<String> {
    let res = http()
        .get(server.http(path))
        .send()
        .await
        .expect("GET /play redirect");
    (res.status() == 307).then(|| {
        res.headers()["location"]
            .to_str()
            .expect("location")
            .to_string()
    })
}

/// The 307 target of `/play/{id}/hls/index.m3u8`.
async fn redirect(server: &TestServer, playback_id: &str) -> String {
    let res = http()
        .get(server.http(&format!("/play/{playback_id}/hls/index.m3u8?fh_sid=test")))
        .send()
        .await
        .expect("GET /play redirect");
    assert_eq!(res.status(), 307, "{:?}", res.text().await);
    res.headers()["location"]
        .to_str()
        .expect("location")
        .to_string()
}

async fn network(server: &TestServer, token: &str) -> Value {
    let res = http()
        .get(server.http("/api/v1/tenant/network"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET network");
    assert_eq!(res.status(), 200);
    res.json().await.expect("json")
}

/// The `channel` and `edges_scored` of `cluster` in a tenant's network as `server` sees it.
async fn peering(server: &TestServer, token: &str, cluster: &str) -> (String, bool) {
    let net = network(server, token).await;
    let c = net["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["id"] == cluster)
        .unwrap_or_else(|| panic!("{cluster} in {net}"))
        .clone();
    (
        c["channel"].as_str().expect("channel").to_string(),
        c["edges_scored"].as_bool().expect("edges_scored"),
    )
}

/// The value of a metric line starting with `prefix` (0 when absent).
async fn metric(server: &TestServer, prefix: &str) -> f64 {
    let text = reqwest::get(server.http("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().expect("number"))
}

fn candidates(play: &Value) -> Vec<(String, bool, u64)> {
    std::iter::once(&play["primary"])
        .chain(play["fallbacks"].as_array().into_iter().flatten())
        .filter(|c| !c.is_null())
        .map(|c| {
            (
                c["node_id"].as_str().expect("node").to_string(),
                c["remote"].as_bool().expect("remote"),
                c["score"].as_u64().expect("score"),
            )
        })
        .collect()
}

/// Always-on tier: a tenant preferring bravo over its official alpha keeps the two peered; a
/// viewer on alpha goes to bravo's edge only when it beats alpha's best edge by more than 200;
/// another tenant of alpha never sees bravo's edges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_on_pair_scores_remote_edges_with_the_penalty() {
    let (alpha, bravo, charlie) = three().await;
    let (t, token) = preferring_bravo(&alpha).await;
    let (stream, _) = alpha.stream(&t).await;
    let (other, _) = tenant(&alpha, "alpha").await;
    let (other_stream, _) = alpha.stream(&other).await;

    let (operator, _) = alpha.operator().await;
    let ea = Edge::start(&alpha, &operator, 400).await;
    let eb = Edge::start(&bravo, &operator, 0).await;
    // cpu 400 ‰ scores 300, cpu 0 scores 500; everything else is equal: bravo's edge minus the
    // 200 penalty ties alpha's, and the tie goes to the local edge.
    eventually(WAIT, "alpha scores bravo's edge", || async {
        candidates(&play(&alpha, &stream.playback_id).await)
            .iter()
            .any(|c| c.0 == eb.node_id && c.1)
    })
    .await;
    let seen = candidates(&play(&alpha, &stream.playback_id).await);
    assert_eq!(seen[0], (ea.node_id.clone(), false, seen[0].2), "{seen:?}");
    assert_eq!(
        seen[1],
        (eb.node_id.clone(), true, seen[0].2),
        "tie: {seen:?}"
    );
    assert!(redirect(&alpha, &stream.playback_id)
        .await
        .starts_with(&ea.url("alpha")));

    // One point more load on alpha's edge: bravo's now beats it by 201.
    ea.report(402, &[]).await;
    eventually(WAIT, "bravo's edge wins by more than 200", || async {
        try_redirect(&alpha, &stream.playback_id)
            .await
            .is_some_and(|l| l.starts_with(&format!("{}/hls/", eb.url("bravo"))))
    })
    .await;
    // Both directions exchange summaries: bravo scores alpha's edge too.
    eventually(WAIT, "bravo scores alpha's edge", || async {
        candidates(&play(&bravo, &stream.playback_id).await)
            .iter()
            .any(|c| c.0 == ea.node_id && c.1)
    })
    .await;
    let (channel, scored) = peering(&alpha, &token, "bravo").await;
    assert_eq!((channel.as_str(), scored), ("open", true));

    // A tenant of alpha that is not subscribed to bravo never gets bravo's edges.
    let theirs = candidates(&play(&alpha, &other_stream.playback_id).await);
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0].0, ea.node_id);
    // Charlie is nobody's peer.
    assert_eq!(metric(&charlie, "foghorn_federation_channels ").await, 0.0);
    for s in [alpha, bravo, charlie] {
        s.stop().await;
    }
}

/// The channel of a peer: its cluster id and credential in metadata, and the frames to send.
async fn open_channel(
    server: &TestServer,
    cluster: &str,
    credential: &str,
    frames: Vec<PeerMessage>,
) -> Result<tonic::Streaming<PeerMessage>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = FederationClient::new(channel);
    let (tx, rx) = mpsc::channel(frames.len().max(16));
    for f in frames {
        tx.send(f).await.expect("queue");
    }
    // Keep the request stream open for the test's lifetime.
    std::mem::forget(tx);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if !cluster.is_empty() {
        req.metadata_mut()
            .insert("x-foghorn-cluster", cluster.parse().expect("ascii"));
    }
    if !credential.is_empty() {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {credential}").parse().expect("ascii"),
        );
    }
    client.peer_channel(req).await.map(|r| r.into_inner())
}

/// A channel of `cluster` that says Hello and then keeps heartbeating, as a live peer does.
async fn open_live_channel(
    server: &TestServer,
    cluster: &str,
    credential: &str,
) -> tonic::Streaming<PeerMessage> {
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(16);
    tx.send(hello(cluster)).await.expect("queue");
    let beat = heartbeat(cluster);
    tokio::spawn(async move {
        while tx.send(beat.clone()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("x-foghorn-cluster", cluster.parse().expect("ascii"));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {credential}").parse().expect("ascii"),
    );
    FederationClient::new(channel)
        .peer_channel(req)
        .await
        .expect("a live channel opens")
        .into_inner()
}

fn heartbeat(cluster: &str) -> PeerMessage {
    PeerMessage {
        payload: Some(peer_message::Payload::Heartbeat(
            foghorn::proto::PeerHeartbeat {
                cluster_id: cluster.into(),
                sent_at_unix_ms: 0,
            },
        )),
    }
}

/// The credential cluster `from` (whose Foghorn is `server`) presents to cluster `to`, registered
/// as that Foghorn does before it calls `to`.
async fn credential(server: &TestServer, from: &str, to: &str) -> String {
    let secret =
        std::fs::read_to_string(server.data.path().join("federation.key")).expect("federation.key");
    let credential = foghorn::secret::peer_credential_for(secret.trim(), to);
    server
        .registry()
        .register_peer_credential(from, to, &credential)
        .await
        .expect("register");
    credential
}

fn hello(cluster: &str) -> PeerMessage {
    PeerMessage {
        payload: Some(peer_message::Payload::Hello(Hello {
            cluster_id: cluster.into(),
            protocol_version: 1,
        })),
    }
}

/// The status that ends a channel (after any frames the server sent first).
async fn end_of(mut stream: tonic::Streaming<PeerMessage>) -> tonic::Status {
    loop {
        match tokio::time::timeout(WAIT, stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the channel ended without an error"),
            Ok(Err(status)) => return status,
            Err(_) => panic!("the channel was not ended"),
        }
    }
}

/// Unsubscribed clusters, wrong or missing credentials, and frames speaking for another cluster
/// are all refused, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribed_and_impostor_peers_are_refused() {
    let (alpha, bravo, charlie) = three().await;
    let (t, _) = tenant(&alpha, "alpha").await;
    subscribe(&alpha, &t, "bravo").await; // alpha and bravo share a tenant; charlie shares none

    let code = |r: Result<tonic::Streaming<PeerMessage>, tonic::Status>| match r {
        Ok(_) => panic!("channel accepted"),
        Err(s) => s.code(),
    };
    let charlies = credential(&charlie, "charlie", "alpha").await;
    let bravos = credential(&bravo, "bravo", "alpha").await;
    let from_charlie = open_channel(&alpha, "charlie", &charlies, vec![hello("charlie")]);
    assert_eq!(code(from_charlie.await), tonic::Code::PermissionDenied);
    let stolen = open_channel(&alpha, "bravo", &charlies, vec![hello("bravo")]);
    assert_eq!(code(stolen.await), tonic::Code::Unauthenticated);
    // What bravo presents to charlie is no good towards alpha: a peer cannot replay it.
    let replayed = credential(&bravo, "bravo", "charlie").await;
    let replay = open_channel(&alpha, "bravo", &replayed, vec![hello("bravo")]);
    assert_eq!(code(replay.await), tonic::Code::Unauthenticated);
    let anonymous = open_channel(&alpha, "", "", vec![]);
    assert_eq!(code(anonymous.await), tonic::Code::Unauthenticated);
    let garbage = open_channel(&alpha, "bravo", "fpc_nope", vec![]);
    assert_eq!(code(garbage.await), tonic::Code::Unauthenticated);

    // Bravo's own credential opens a channel, but a frame speaking for charlie ends it.
    let impostor = open_channel(&alpha, "bravo", &bravos, vec![hello("charlie")])
        .await
        .expect("bravo may open a channel");
    assert_eq!(end_of(impostor).await.code(), tonic::Code::PermissionDenied);
    let summary = PeerMessage {
        payload: Some(peer_message::Payload::Summary(ClusterEdgeSummary {
            cluster_id: "charlie".into(),
            ..Default::default()
        })),
    };
    let impostor = open_channel(&alpha, "bravo", &bravos, vec![hello("bravo"), summary])
        .await
        .expect("bravo may open a channel");
    assert_eq!(end_of(impostor).await.code(), tonic::Code::PermissionDenied);
    let empty = open_channel(
        &alpha,
        "bravo",
        &bravos,
        vec![PeerMessage { payload: None }],
    )
    .await
    .expect("bravo may open a channel");
    assert_eq!(end_of(empty).await.code(), tonic::Code::PermissionDenied);
    assert!(metric(&alpha, "foghorn_federation_refusals_total ").await >= 8.0);

    // Nobody peers with charlie, and alpha never dialed it.
    assert_eq!(metric(&charlie, "foghorn_federation_channels ").await, 0.0);
    for s in [alpha, bravo, charlie] {
        s.stop().await;
    }
}

/// A peer that floods its channel is cut off; channels of one peer past four replace the oldest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_cut_off_and_extra_channels_replace_the_oldest() {
    let (alpha, bravo, charlie) = three().await;
    let (t, _) = tenant(&alpha, "alpha").await;
    subscribe(&alpha, &t, "bravo").await;
    let bravos = credential(&bravo, "bravo", "alpha").await;
    let mut flood = vec![hello("bravo")];
    flood.extend(std::iter::repeat_n(heartbeat("bravo"), 400));
    let refusals = metric(&alpha, "foghorn_federation_refusals_total ").await;
    let flooding = open_channel(&alpha, "bravo", &bravos, flood)
        .await
        .expect("bravo may open a channel");
    assert_eq!(
        end_of(flooding).await.code(),
        tonic::Code::ResourceExhausted
    );
    assert!(metric(&alpha, "foghorn_federation_refusals_total ").await > refusals);

    // The allowance is the peer's, not the channel's: a new channel does not refill it.
    // 101 frames would pass on a fresh allowance of 200.
    let mut more = vec![hello("bravo")];
    more.extend(std::iter::repeat_n(heartbeat("bravo"), 100));
    let again = open_channel(&alpha, "bravo", &bravos, more)
        .await
        .expect("bravo may open a channel");
    assert_eq!(end_of(again).await.code(), tonic::Code::ResourceExhausted);
    tokio::time::sleep(Duration::from_secs(1)).await; // refills 50 frames

    let mut channels = Vec::new();
    for _ in 0..5 {
        channels.push(open_live_channel(&alpha, "bravo", &bravos).await);
    }
    let oldest = channels.remove(0);
    assert_eq!(end_of(oldest).await.code(), tonic::Code::Aborted);
    eventually(WAIT, "alpha holds the four newest channels", || async {
        metric(&alpha, "foghorn_federation_channels ").await == 4.0
    })
    .await;
    drop(channels);
    for s in [alpha, bravo, charlie] {
        s.stop().await;
    }
}

/// Waits until the registry records `stream` live on `cluster`.
async fn live_on(server: &TestServer, stream: &str, cluster: &str) {
    eventually(WAIT, "the stream is live", || async {
        server
            .registry()
            .stream(stream)
            .await
            .expect("stream")
            .expect("exists")
            .live_cluster_id
            .as_deref()
            == Some(cluster)
    })
    .await;
}

fn origin_pull(frame: Option<foghorn::proto::ControlMessage>) -> Option<(String, String)> {
    match frame?.payload? {
        control_message::Payload::OriginPull(p) => Some((p.internal_name, p.source_url)),
        _ => None,
    }
}

/// Stream-scoped tier: a viewer on alpha asks for a stream live on charlie (a cluster the tenant
/// is subscribed to, not always-on with alpha): alpha opens a channel, queries charlie, arranges
/// the pull into its own edge and redirects there; later viewers cost no cross-cluster call; the
/// channel closes once the stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_origin_pull_then_no_more_calls_then_close() {
    let (alpha, bravo, charlie) = three().await;
    let (t, token) = tenant(&alpha, "alpha").await;
    subscribe(&alpha, &t, "charlie").await;
    let (stream, _) = alpha.stream(&t).await;
    let name = stream.internal_name.clone();
    let (operator, _) = alpha.operator().await;
    let mut ea = Edge::start(&alpha, &operator, 100).await;
    let ec = Edge::start(&charlie, &operator, 100).await;
    ec.report(100, &[(&name, 1)]).await; // a publisher on charlie's edge
    live_on(&alpha, &stream.id, "charlie").await;
    assert_eq!(peering(&alpha, &token, "charlie").await.0, "none");

    // The first viewer: QueryStream + NotifyOriginPull, OriginPull to alpha's edge, 307 there.
    let location = redirect(&alpha, &stream.playback_id).await;
    assert!(location.starts_with(&ea.url("alpha")), "{location}");
    let dtsc = format!("dtsc://edge-{}.charlie.{ROOT}:4200/{name}", ec.node_id);
    let pull = origin_pull(ea.conn.recv().await.expect("frame"));
    assert_eq!(pull, Some((name.clone(), dtsc.clone())));
    assert_eq!(source(&alpha, &name).await, dtsc);
    let out = "foghorn_federation_rpcs_total{rpc=\"query_stream\",direction=\"out\"}";
    let notify = "foghorn_federation_rpcs_total{rpc=\"notify_origin_pull\",direction=\"out\"}";
    assert_eq!(metric(&alpha, out).await, 1.0);
    assert_eq!(metric(&alpha, notify).await, 1.0);
    let served = "foghorn_federation_rpcs_total{rpc=\"notify_origin_pull\",direction=\"in\"}";
    assert_eq!(metric(&charlie, served).await, 1.0);
    eventually(WAIT, "the channel with charlie opens", || async {
        peering(&alpha, &token, "charlie").await == ("open".to_string(), true)
    })
    .await;

    // Later viewers: scored from the local cache, zero cross-cluster calls.
    for _ in 0..20 {
        let location = redirect(&alpha, &stream.playback_id).await;
        assert!(location.starts_with(&ea.url("alpha")), "{location}");
    }
    assert_eq!(metric(&alpha, out).await, 1.0);
    assert_eq!(metric(&alpha, notify).await, 1.0);

    // The stream ends on charlie: the arrangement goes, and the channel closes.
    ec.report(100, &[]).await;
    eventually(WAIT, "the on-demand channel closes", || async {
        metric(&alpha, "foghorn_federation_channels ").await == 0.0
            && metric(&charlie, "foghorn_federation_channels ").await == 0.0
    })
    .await;
    assert_eq!(
        peering(&alpha, &token, "charlie").await,
        ("none".into(), false)
    );
    assert_eq!(source(&alpha, &name).await, "push://none");
    for s in [alpha, bravo, charlie] {
        s.stop().await;
    }
}

/// A cluster with no edge of its own for the stream sends the viewer to the peer's edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_local_edge_the_viewer_goes_to_the_peer() {
    let (alpha, bravo, charlie) = three().await;
    let (t, _) = tenant(&alpha, "alpha").await;
    subscribe(&alpha, &t, "charlie").await;
    let (stream, _) = alpha.stream(&t).await;
    let (operator, _) = alpha.operator().await;
    let ec = Edge::start(&charlie, &operator, 100).await;
    ec.report(100, &[(&stream.internal_name, 1)]).await;
    live_on(&alpha, &stream.id, "charlie").await;
    eventually(WAIT, "alpha redirects to charlie's edge", || async {
        try_redirect(&alpha, &stream.playback_id)
            .await
            .is_some_and(|l| l.starts_with(&format!("{}/hls/", ec.url("charlie"))))
    })
    .await;
    for s in [alpha, bravo, charlie] {
        s.stop().await;
    }
}

/// A peer that dies stops being scored within the heartbeat TTL; local routing goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_stops_being_scored() {
    let (alpha, bravo, charlie) = three().await;
    let (t, token) = preferring_bravo(&alpha).await;
    let (stream, _) = alpha.stream(&t).await;
    let (operator, _) = alpha.operator().await;
    let ea = Edge::start(&alpha, &operator, 900).await;
    let eb = Edge::start(&bravo, &operator, 0).await;
    eventually(WAIT, "bravo's edge wins", || async {
        try_redirect(&alpha, &stream.playback_id)
            .await
            .is_some_and(|l| l.starts_with(&eb.url("bravo")))
    })
    .await;
    bravo.stop().await;
    let died = tokio::time::Instant::now();
    eventually(WAIT, "bravo's edge is no longer scored", || async {
        try_redirect(&alpha, &stream.playback_id)
            .await
            .is_some_and(|l| l.starts_with(&ea.url("alpha")))
    })
    .await;
    // Heartbeat TTL 1 s (the summary TTL, 3 s, is longer): well before the summary would expire.
    assert!(
        died.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        died.elapsed()
    );
    assert!(!peering(&alpha, &token, "bravo").await.1);
    for s in [alpha, charlie] {
        s.stop().await;
    }
}

/// Reconciliation: a tenant moving its preferred cluster from bravo to charlie opens alpha ↔
/// charlie and closes alpha ↔ bravo, which nobody needs any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_change_is_picked_up_by_reconciliation() {
    let (alpha, bravo, charlie) = three().await;
    let (t, token) = tenant(&alpha, "alpha").await;
    subscribe(&alpha, &t, "bravo").await;
    subscribe(&alpha, &t, "charlie").await;
    alpha
        .registry()
        .set_preferred_cluster(&t, Some("bravo"))
        .await
        .expect("preferred");
    let (operator, _) = alpha.operator().await;
    let _eb = Edge::start(&bravo, &operator, 0).await;
    let _ec = Edge::start(&charlie, &operator, 0).await;
    eventually(WAIT, "alpha and bravo peer", || async {
        peering(&alpha, &token, "bravo").await == ("open".to_string(), true)
    })
    .await;
    assert_eq!(
        peering(&alpha, &token, "charlie").await,
        ("none".into(), false)
    );

    alpha
        .registry()
        .set_preferred_cluster(&t, Some("charlie"))
        .await
        .expect("preferred");
    eventually(
        WAIT,
        "alpha and charlie peer, alpha and bravo no longer",
        || async {
            peering(&alpha, &token, "charlie").await == ("open".to_string(), true)
                && peering(&alpha, &token, "bravo").await == ("none".to_string(), false)
        },
    )
    .await;
    eventually(WAIT, "bravo sees the channel closed", || async {
        metric(&bravo, "foghorn_federation_channels ").await == 0.0
    })
    .await;
    for s in [alpha, bravo, charlie] {
        s.stop().await;
    }
}

/// A stream live only on a cluster its tenant does not use (any more) gets a JSON 404, on the
/// redirect path and the JSON one, never a redirect to an edge that cannot pull it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_live_only_on_an_unused_cluster_is_not_found() {
    let (alpha, bravo, charlie) = three().await;
    let (t, _) = tenant(&alpha, "alpha").await;
    subscribe(&alpha, &t, "charlie").await;
    let (stream, _) = alpha.stream(&t).await;
    let name = stream.internal_name.clone();
    let (operator, _) = alpha.operator().await;
    let _ea = Edge::start(&alpha, &operator, 100).await;
    let ec = Edge::start(&charlie, &operator, 100).await;
    ec.report(100, &[(&name, 1)]).await; // a publisher on charlie's edge
    live_on(&alpha, &stream.id, "charlie").await;
    alpha
        .registry()
        .cancel_subscription(&t, "charlie")
        .await
        .expect("cancel");

    let redirect_url = alpha.http(&format!("/play/{}/hls/index.m3u8", stream.playback_id));
    eventually(WAIT, "a JSON 404 instead of a redirect", || async {
        let res = http().get(&redirect_url).send().await.expect("GET /play");
        res.status() == 404 && res.headers()["content-type"] == "application/json"
    })
    .await;
    let res = http()
        .get(alpha.http(&format!("/play/{}", stream.playback_id)))
        .send()
        .await
        .expect("GET /play JSON");
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    for s in [alpha, bravo, charlie] {
        s.stop().await;
    }
}

/// What `server` answers an edge's `?source={stream}` (with a `push://none` fallback).
async fn source(server: &TestServer, stream: &str) -> String {
    http()
        .get(server.http(&format!("/?source={stream}&fallback=push://none")))
        .send()
        .await
        .expect("source")
        .text()
        .await
        .expect("text")
}

/// Waits until `server` scores `peer`'s edges for the tenant of `token` (without asking for a
/// viewer decision, which could arrange pulls).
async fn scored(server: &TestServer, token: &str, peer: &str) {
    eventually(WAIT, "the peer's edges are scored", || async {
        peering(server, token, peer).await == ("open".to_string(), true)
    })
    .await;
}

const ARRANGE_OUT: &str =
    "foghorn_federation_rpcs_total{rpc=\"arrange_origin_pull\",direction=\"out\"}";
const ARRANGE_IN: &str =
    "foghorn_federation_rpcs_total{rpc=\"arrange_origin_pull\",direction=\"in\"}";

/// A viewer sent to a peer's edge that lacks the stream: the pull into the peer is arranged
/// first. The stream is live on alpha, the viewer asks alpha, and bravo's idle edge beats alpha's
/// loaded one: before the 307 to bravo's edge, bravo has told that edge to pull from alpha's
/// origin, and its `?source=` answers the origin's DTSC URL. Later viewers cost no call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_peer_edge_without_the_stream_arranges_the_pull_there_first() {
    let (alpha, bravo, charlie) = three().await;
    let (t, token) = preferring_bravo(&alpha).await;
    let (stream, _) = alpha.stream(&t).await;
    let name = stream.internal_name.clone();
    let (operator, op) = alpha.operator().await;
    let ea = Edge::start(&alpha, &operator, 1000).await;
    ea.report(1000, &[(&name, 1)]).await; // the publisher, on alpha's loaded edge
    let mut eb = Edge::start(&bravo, &operator, 0).await;
    live_on(&alpha, &stream.id, "alpha").await;
    ea.routable(&alpha, &op).await;
    scored(&alpha, &token, "bravo").await;
    // An operator's explain shows where the viewer would go, and arranges nothing.
    let explain = alpha.http(&format!("/play/{}?explain=1", stream.playback_id));
    eventually(WAIT, "explain shows bravo's edge first", || async {
        let explained: Value = http()
            .get(&explain)
            .bearer_auth(&op)
            .send()
            .await
            .expect("explain")
            .json()
            .await
            .expect("json");
        explained["primary"]["node_id"] == eb.node_id.as_str()
    })
    .await;
    assert_eq!(metric(&alpha, ARRANGE_OUT).await, 0.0);

    let location = redirect(&alpha, &stream.playback_id).await;
    assert!(location.starts_with(&eb.url("bravo")), "{location}");
    let dtsc = format!("dtsc://edge-{}.alpha.{ROOT}:4200/{name}", ea.node_id);
    let pull = origin_pull(eb.conn.recv().await.expect("frame"));
    assert_eq!(pull, Some((name.clone(), dtsc.clone())));
    assert_eq!(source(&bravo, &name).await, dtsc);
    assert_eq!(metric(&alpha, ARRANGE_OUT).await, 1.0);
    assert_eq!(metric(&bravo, ARRANGE_IN).await, 1.0);
    let bravo_asked = "foghorn_federation_rpcs_total{rpc=\"query_stream\",direction=\"out\"}";
    assert_eq!(
        metric(&bravo, bravo_asked).await,
        0.0,
        "arranged by alpha's call, not by bravo's own"
    );

    // Later viewers, by redirect or JSON: the arrangement stands, no call.
    for _ in 0..10 {
        let location = redirect(&alpha, &stream.playback_id).await;
        assert!(location.starts_with(&eb.url("bravo")), "{location}");
    }
    let json = play(&alpha, &stream.playback_id).await;
    assert_eq!(json["primary"]["node_id"], eb.node_id.as_str(), "{json}");
    assert_eq!(metric(&alpha, ARRANGE_OUT).await, 1.0);
    for s in [alpha, bravo, charlie] {
        s.stop().await;
    }
}

/// The same with the stream live on a third cluster: alpha pulls it from charlie into its own
/// edge, and when the viewer goes to bravo's edge instead, bravo arranges its own pull from
/// charlie (`NotifyOriginPull`) before the 307.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_edge_pulls_a_stream_live_on_a_third_cluster_from_there() {
    let (alpha, bravo, charlie) = three().await;
    let (t, token) = preferring_bravo(&alpha).await;
    subscribe(&alpha, &t, "charlie").await;
    let (stream, _) = alpha.stream(&t).await;
    let name = stream.internal_name.clone();
    let (operator, op) = alpha.operator().await;
    let ea = Edge::start(&alpha, &operator, 1000).await;
    let mut eb = Edge::start(&bravo, &operator, 0).await;
    // The publisher, on charlie's edge: busier than bravo's by more than its stream bonus, so
    // bravo's edge wins once alpha scores charlie's too.
    let ec = Edge::start(&charlie, &operator, 300).await;
    ec.report(300, &[(&name, 1)]).await;
    live_on(&alpha, &stream.id, "charlie").await;
    ea.routable(&alpha, &op).await; // else alpha, with no edge for the pull, sends it to charlie
    scored(&alpha, &token, "bravo").await;

    let location = redirect(&alpha, &stream.playback_id).await;
    assert!(location.starts_with(&eb.url("bravo")), "{location}");
    let dtsc = format!("dtsc://edge-{}.charlie.{ROOT}:4200/{name}", ec.node_id);
    let pull = origin_pull(eb.conn.recv().await.expect("frame"));
    assert_eq!(pull, Some((name.clone(), dtsc.clone())));
    assert_eq!(source(&bravo, &name).await, dtsc);
    assert_eq!(metric(&bravo, ARRANGE_IN).await, 1.0);
    let notified = "foghorn_federation_rpcs_total{rpc=\"notify_origin_pull\",direction=\"in\"}";
    assert_eq!(
        metric(&charlie, notified).await,
        2.0,
        "alpha's pull and bravo's"
    );
    for s in [alpha, bravo, charlie] {
        s.stop().await;
    }
}

/// An edge asking `?source=` for a stream live on another cluster its tenant uses, before any
/// viewer asked this Foghorn (one reached the edge some other way, e.g. through DNS, or a pull
/// arranged earlier was dropped): the pull is arranged then, and the answer is the origin's DTSC
/// URL instead of `push://`. Once per stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_asking_for_a_stream_live_elsewhere_gets_the_pull_arranged() {
    let (alpha, bravo, charlie) = three().await;
    let (t, _) = tenant(&alpha, "alpha").await;
    subscribe(&alpha, &t, "charlie").await;
    let (stream, _) = alpha.stream(&t).await;
    let name = stream.internal_name.clone();
    let (operator, op) = alpha.operator().await;
    let mut ea = Edge::start(&alpha, &operator, 100).await;
    let ec = Edge::start(&charlie, &operator, 100).await;
    ec.report(100, &[(&name, 1)]).await;
    live_on(&alpha, &stream.id, "charlie").await;
    ea.routable(&alpha, &op).await;

    let dtsc = format!("dtsc://edge-{}.charlie.{ROOT}:4200/{name}", ec.node_id);
    assert_eq!(source(&alpha, &name).await, dtsc);
    let pull = origin_pull(ea.conn.recv().await.expect("frame"));
    assert_eq!(pull, Some((name.clone(), dtsc.clone())));
    assert_eq!(source(&alpha, &name).await, dtsc);
    let notify = "foghorn_federation_rpcs_total{rpc=\"notify_origin_pull\",direction=\"out\"}";
    assert_eq!(metric(&alpha, notify).await, 1.0, "once per stream");
    // A stream of nobody's (or malformed) still gets the fallback.
    assert_eq!(source(&alpha, "live+nosuchstream").await, "push://none");
    for s in [alpha, bravo, charlie] {
        s.stop().await;
    }
}

/// A peer that cannot pull the stream is left out: alpha's origin edge has its own base URL,
/// outside alpha's zone, so bravo will not pull from it; the viewer goes to alpha's edge, and the
/// refusal stands a while (no call per viewer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_cannot_pull_the_stream_is_not_chosen() {
    let (alpha, bravo, charlie) = three().await;
    let (t, token) = preferring_bravo(&alpha).await;
    let (stream, _) = alpha.stream(&t).await;
    let name = stream.internal_name.clone();
    let (operator, op) = alpha.operator().await;
    let origin = "https://origin.elsewhere.test";
    let ea = Edge::start_at(&alpha, &operator, 1000, origin).await;
    ea.report(1000, &[(&name, 1)]).await;
    let _eb = Edge::start(&bravo, &operator, 0).await;
    live_on(&alpha, &stream.id, "alpha").await;
    ea.routable(&alpha, &op).await;
    scored(&alpha, &token, "bravo").await;

    for _ in 0..5 {
        let location = redirect(&alpha, &stream.playback_id).await;
        assert!(location.starts_with(origin), "{location}");
    }
    assert_eq!(metric(&alpha, ARRANGE_OUT).await, 1.0);
    assert_eq!(source(&bravo, &name).await, "push://none");
    for s in [alpha, bravo, charlie] {
        s.stop().await;
    }
}

/// A loopback TCP proxy in front of a peer's gRPC listener that the test can cut: the
/// connections through it end at once and new ones are refused, as when the peer's machine dies.
struct Cuttable {
    addr: std::net::SocketAddr,
    target: std::sync::Arc<std::sync::OnceLock<std::net::SocketAddr>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    async fn start() -> Cuttable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let target = std::sync::Arc::new(std::sync::OnceLock::<std::net::SocketAddr>::new());
        let to = target.clone();
        let accept = tokio::spawn(async move {
            // Dropped with the accept task: every connection through the proxy ends with it.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Some(&to) = to.get() else { continue };
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Cuttable {
            addr,
            target,
            accept,
        }
    }

    fn cut(&self) {
        self.accept.abort();
    }
}

/// A peer whose connection dies is reported `connecting` (this side redials) and its edges stop
/// being scored as soon as the channel fails, long before the heartbeat TTL (30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cut_off_is_shown_and_unscored_at_once() {
    let proxy = Cuttable::start().await;
    let long_ttls = |c: &mut Config| {
        c.federation.heartbeat_ttl = Duration::from_secs(30);
        c.federation.summary_ttl = Duration::from_secs(90);
    };
    let alpha = TestServer::start_with(Db::Postgres, |c| {
        federated(c, "alpha");
        long_ttls(c);
    })
    .await;
    let proxied = format!("http://{}", proxy.addr);
    let bravo = alpha
        .replica(|c| {
            federated(c, "bravo");
            long_ttls(c);
            c.federation.advertise_grpc = proxied;
        })
        .await;
    proxy
        .target
        .set(bravo.server().grpc_addr)
        .expect("target set once");
    let (t, token) = preferring_bravo(&alpha).await;
    let (stream, _) = alpha.stream(&t).await;
    let (operator, _) = alpha.operator().await;
    let ea = Edge::start(&alpha, &operator, 1000).await;
    let eb = Edge::start(&bravo, &operator, 0).await;
    eventually(WAIT, "alpha sends viewers to bravo's edge", || async {
        try_redirect(&alpha, &stream.playback_id)
            .await
            .is_some_and(|l| l.starts_with(&eb.url("bravo")))
    })
    .await;
    assert_eq!(
        peering(&alpha, &token, "bravo").await,
        ("open".to_string(), true)
    );

    proxy.cut();
    let cut = std::time::Instant::now();
    eventually(
        WAIT,
        "bravo reported connecting, its edge unscored, viewers on alpha's edge",
        || async {
            let (channel, scored) = peering(&alpha, &token, "bravo").await;
            channel == "connecting"
                && !scored
                && try_redirect(&alpha, &stream.playback_id)
                    .await
                    .is_some_and(|l| l.starts_with(&ea.url("alpha")))
        },
    )
    .await;
    println!(
        "peer cut off: connecting and unscored after {} ms (heartbeat TTL 30 s)",
        cut.elapsed().as_millis()
    );
    for s in [alpha, bravo] {
        s.stop().await;
    }
}

/// Redirects to a peer's edges are charged here until the peer's next summary: a flood of new
/// viewers on alpha spreads over bravo's two equal edges instead of all landing on the one with
/// the lower node id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_a_peer_are_charged_until_its_next_summary() {
    let (alpha, bravo, charlie) = three().await;
    let (t, _) = preferring_bravo(&alpha).await;
    let (stream, _) = alpha.stream(&t).await;
    let (operator, _) = alpha.operator().await;
    // Alpha's own edge is loaded: bravo's two idle edges beat it by far more than the penalty.
    let _ea = Edge::start(&alpha, &operator, 1000).await;
    let b1 = Edge::start(&bravo, &operator, 0).await;
    let b2 = Edge::start(&bravo, &operator, 0).await;
    eventually(WAIT, "alpha scores both of bravo's edges", || async {
        candidates(&play(&alpha, &stream.playback_id).await)
            .iter()
            .filter(|c| c.1)
            .count()
            == 2
    })
    .await;
    // New viewers (no session id): each redirect is charged to its edge.
    let url = alpha.http(&format!("/play/{}/hls/index.m3u8", stream.playback_id));
    let (mut to_b1, mut to_b2) = (0, 0);
    for _ in 0..10 {
        let res = http().get(&url).send().await.expect("GET /play");
        assert_eq!(res.status(), 307);
        let location = res.headers()["location"].to_str().expect("location");
        if location.starts_with(&b1.url("bravo")) {
            to_b1 += 1;
        } else if location.starts_with(&b2.url("bravo")) {
            to_b2 += 1;
        } else {
            panic!("a viewer sent to {location}");
        }
    }
    assert!(
        to_b1 >= 3 && to_b2 >= 3,
        "10 new viewers: {to_b1} to one of bravo's edges, {to_b2} to the other"
    );
    for s in [alpha, bravo, charlie] {
        s.stop().await;
    }
}

/// A peer's edge is charged for the viewers sent to it until a newer summary of the peer could
/// have measured them, however often heartbeats re-apply the summary in between (here about four
/// times a second): an edge with room for eight new viewers gets eight, then viewers get a 503.
/// Before, every heartbeat handed the edge a fresh ledger, and a slow flood filled it again after
/// each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_edge_gets_no_more_viewers_than_it_has_room_for_across_heartbeats() {
    let slow_summaries = |cluster: &'static str| {
        move |c: &mut Config| {
            federated(c, cluster);
            c.federation.summary_interval = Duration::from_secs(60);
            c.federation.summary_ttl = Duration::from_secs(120);
        }
    };
    let alpha = TestServer::start_with(Db::Postgres, slow_summaries("alpha")).await;
    let bravo = alpha.replica(slow_summaries("bravo")).await;
    let (t, _) = preferring_bravo(&alpha).await;
    let (stream, _) = alpha.stream(&t).await;
    let (operator, _) = alpha.operator().await;
    // Bravo's only edge, 1 MB/s short of its limit from its first report on (the summary
    // averages its reports): room for eight viewers at the 128 KiB/s each new viewer of a peer's
    // edge is charged.
    let token = bravo.enrollment_token(&operator, 1).await;
    let (edge, _) = Edge::enroll(&bravo, &token, "").await;
    let mut frame = stats(100, &[]);
    if let Some(edge_message::Payload::NodeStats(s)) = &mut frame.payload {
        s.up_bytes_per_sec = 124_000_000;
        s.bw_limit_bytes_per_sec = 125_000_000;
    }
    edge.conn.send(frame).await;
    // Bravo's first summary goes out two stats intervals after it started.
    eventually(WAIT * 2, "alpha scores bravo's edge", || async {
        candidates(&play(&alpha, &stream.playback_id).await).len() == 1
    })
    .await;
    let mut sent = 0;
    for _ in 0..14 {
        if let Some(location) = try_redirect_new(&alpha, &stream.playback_id).await {
            assert!(location.starts_with(&edge.url("bravo")), "{location}");
            sent += 1;
        }
        // Past at least one heartbeat that moves the expiry of bravo's edges.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        sent, 8,
        "new viewers sent to an edge with room for eight, over 4 s"
    );
    for s in [alpha, bravo] {
        s.stop().await;
    }
}

/// Sets the tenant's preferred cluster through `server`'s tenant API, as the tenant would.
async fn prefer(server: &TestServer, token: &str, cluster: &str) {
    let res = http()
        .put(server.http("/api/v1/tenant/preferred-cluster"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "cluster_id": cluster }))
        .send()
        .await
        .expect("PUT preferred-cluster");
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

/// The change feed: with the periodic reconciliation an hour away, a preferred-cluster change
/// made through another Foghorn's API opens the new always-on pair (channel open, remote edges
/// scored) and closes the old one within `WAIT`, twenty times over. Prints the delays (median and
/// worst) for `docs/BENCHMARKS.md`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_changes_reach_every_foghorn_within_seconds() {
    let start = |cluster: &'static str| {
        move |c: &mut Config| {
            federated(c, cluster);
            c.federation.reconcile_interval = Duration::from_secs(3600);
            c.federation.topology_poll = Config::default().federation.topology_poll;
        }
    };
    let alpha = TestServer::start_with(Db::Postgres, start("alpha")).await;
    let bravo = alpha.replica(start("bravo")).await;
    let charlie = alpha.replica(start("charlie")).await;
    let (t, token) = tenant(&alpha, "alpha").await;
    subscribe(&alpha, &t, "bravo").await;
    subscribe(&alpha, &t, "charlie").await;
    let (operator, _) = alpha.operator().await;
    let _eb = Edge::start(&bravo, &operator, 0).await;
    let _ec = Edge::start(&charlie, &operator, 0).await;

    let mut delays = Vec::new();
    for n in 0..20 {
        let (to, from) = if n % 2 == 0 {
            ("bravo", "charlie")
        } else {
            ("charlie", "bravo")
        };
        // The change goes through a Foghorn that does not dial (bravo or charlie): only the
        // shared registry can tell alpha.
        let via = if n % 2 == 0 { &charlie } else { &bravo };
        // Changes at varied moments of alpha's polling, not in step with it.
        tokio::time::sleep(Duration::from_millis(n * 379 % 1000)).await;
        let asked = std::time::Instant::now();
        prefer(via, &token, to).await;
        eventually(
            WAIT,
            "the new pair open and scored, the old one closed",
            || async {
                peering(&alpha, &token, to).await == ("open".to_string(), true)
                    && peering(&alpha, &token, from).await == ("none".to_string(), false)
            },
        )
        .await;
        delays.push(asked.elapsed());
    }
    delays.sort();
    let (median, worst) = (delays[delays.len() / 2], delays[delays.len() - 1]);
    println!(
        "preferred cluster changed 20 times: open, scored and old pair closed after median {} ms, worst {} ms",
        median.as_millis(),
        worst.as_millis()
    );
    for s in [alpha, bravo, charlie] {
        s.stop().await;
    }
}

/// With replicas, only the leader dials out, and every replica scores the peer's edges (relayed
/// through the cluster's Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_remote_edges_and_only_the_leader_dials() {
    let redis = RedisProc::start().await;
    let url = redis.url();
    let leader = TestServer::start_with(Db::Postgres, |c| {
        federated(c, "alpha");
        c.redis.url = url.clone();
    })
    .await;
    eventually(WAIT, "the first replica leads", || async {
        metric(&leader, "foghorn_leader ").await == 1.0
    })
    .await;
    let follower = leader
        .replica(|c| {
            federated(c, "alpha");
            c.redis.url = url.clone();
        })
        .await;
    let bravo = leader.replica(|c| federated(c, "bravo")).await;
    let (t, token) = preferring_bravo(&leader).await;
    let (stream, _) = leader.stream(&t).await;
    let (operator, _) = leader.operator().await;
    let eb = Edge::start(&bravo, &operator, 0).await;
    for replica in [&leader, &follower] {
        eventually(WAIT, "every replica scores bravo's edge", || async {
            try_redirect(replica, &stream.playback_id)
                .await
                .is_some_and(|l| l.starts_with(&eb.url("bravo")))
        })
        .await;
    }
    assert_eq!(metric(&follower, "foghorn_leader ").await, 0.0);
    assert_eq!(metric(&leader, "foghorn_federation_channels ").await, 1.0);
    assert_eq!(metric(&follower, "foghorn_federation_channels ").await, 0.0);
    assert_eq!(metric(&bravo, "foghorn_federation_channels ").await, 1.0);
    assert_eq!(
        peering(&follower, &token, "bravo").await,
        ("open".into(), true)
    );
    for s in [follower, leader, bravo] {
        s.stop().await;
    }
}

/// With replicas, an origin pull arranged on one replica reaches the edge held by another, every
/// replica answers the edge's `?source=`, and a replica that starts later learns the arrangement
/// from the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_pass_on_origin_pulls_and_a_late_replica_catches_up() {
    let redis = RedisProc::start().await;
    let url = redis.url();
    let with_redis = |c: &mut Config| {
        federated(c, "alpha");
        c.redis.url = url.clone();
    };
    let leader = TestServer::start_with(Db::Postgres, with_redis).await;
    eventually(WAIT, "the first replica leads", || async {
        metric(&leader, "foghorn_leader ").await == 1.0
    })
    .await;
    let follower = leader.replica(with_redis).await;
    let charlie = leader.replica(|c| federated(c, "charlie")).await;
    let (t, token) = tenant(&leader, "alpha").await;
    subscribe(&leader, &t, "charlie").await;
    let (stream, _) = leader.stream(&t).await;
    let name = stream.internal_name.clone();
    let (operator, op_token) = leader.operator().await;
    let mut ea = Edge::start(&leader, &operator, 100).await;
    let ec = Edge::start(&charlie, &operator, 100).await;
    ec.report(100, &[(&name, 1)]).await;
    live_on(&leader, &stream.id, "charlie").await;
    eventually(WAIT, "the follower sees the leader's edge", || {
        follower.routable(&op_token, &ea.node_id)
    })
    .await;

    // A viewer on the follower: the pull is arranged there, and the leader tells its edge.
    let location = redirect(&follower, &stream.playback_id).await;
    assert!(location.starts_with(&ea.url("alpha")), "{location}");
    let dtsc = format!("dtsc://edge-{}.charlie.{ROOT}:4200/{name}", ec.node_id);
    let pull = tokio::time::timeout(WAIT, ea.conn.recv())
        .await
        .expect("the edge is told in time")
        .expect("frame");
    assert_eq!(origin_pull(pull), Some((name.clone(), dtsc.clone())));
    let source = |server: &TestServer| {
        let url = server.http(&format!("/?source={name}&fallback=push://x"));
        async move {
            http()
                .get(url)
                .send()
                .await
                .expect("source")
                .text()
                .await
                .expect("text")
        }
    };
    assert_eq!(source(&leader).await, dtsc);
    assert_eq!(source(&follower).await, dtsc);
    // Only the leader dials the on-demand peer.
    eventually(WAIT, "the leader opens the channel", || async {
        metric(&leader, "foghorn_federation_channels ").await == 1.0
    })
    .await;
    assert_eq!(metric(&follower, "foghorn_federation_channels ").await, 0.0);

    let late = leader.replica(with_redis).await;
    eventually(WAIT, "the late replica learns the arrangement", || async {
        source(&late).await == dtsc
    })
    .await;
    eventually(WAIT, "the late replica scores charlie's edges", || async {
        peering(&late, &token, "charlie").await == ("open".to_string(), true)
    })
    .await;
    for s in [late, follower, leader, charlie] {
        s.stop().await;
    }
}

/// The answer to `GET /play/{id}/hls/index.m3u8` sent to `server` with `Host: host`: the status
/// and the `location`, if any.
async fn redirect_for_host(server: &TestServer, host: &str, playback_id: &str) -> (u16, String) {
    let res = http()
        .get(server.http(&format!("/play/{playback_id}/hls/index.m3u8?fh_sid=test")))
        .header("host", host)
        .send()
        .await
        .expect("GET /play redirect");
    let location = res
        .headers()
        .get("location")
        .map(|l| l.to_str().expect("location").to_string())
        .unwrap_or_default();
    (res.status().as_u16(), location)
}

/// Creates a private cluster on `cell` through `server`'s API as the tenant of `token`; returns
/// its id and first enrollment token.
async fn create_private(server: &TestServer, token: &str, cell: &str) -> (String, String) {
    let res = http()
        .post(server.http("/api/v1/private-clusters"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "name": "Home Lab", "cell": cell }))
        .send()
        .await
        .expect("POST private-clusters");
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.expect("json");
    let id = created["cluster"]["id"].as_str().expect("id");
    let enrollment = created["enrollment_token"]["token"]
        .as_str()
        .expect("token");
    (id.to_string(), enrollment.to_string())
}

/// Issue 18's journey on a running cell: a tenant whose official cluster is bravo creates a private
/// cluster through the API on alpha's cell (two replicas sharing Redis); both replicas serve it
/// within seconds, without a restart; an edge enrolls with the cluster's token on that same
/// Foghorn and gets its own cluster's wildcard; viewers naming the cluster's Foghorn by `Host` on
/// either replica are redirected to it, while the home cluster's name still reaches alpha's own
/// edges; another tenant's playback id is a 404 there; and bravo, the tenant's official cluster on
/// another cell, scores the private edge through the always-on pair the private cluster being
/// preferred opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_cluster_created_on_a_running_cell_is_served_by_it() {
    let redis = RedisProc::start().await;
    let url = redis.url();
    let cell = |c: &mut Config| {
        federated(c, "alpha");
        c.redis.url = url.clone();
        c.federation.topology_poll = Duration::from_millis(100);
    };
    let alpha = TestServer::start_with(Db::Postgres, cell).await;
    let alpha2 = alpha.replica(cell).await;
    let bravo = alpha.replica(|c| federated(c, "bravo")).await;
    let (t, token) = tenant(&alpha, "bravo").await;
    let (operator, _) = alpha.operator().await;
    let home_edge = Edge::start(&alpha, &operator, 0).await;

    let (private, enrollment) = create_private(&alpha, &token, "alpha").await;
    for replica in [&alpha, &alpha2] {
        eventually(
            WAIT,
            "each replica of the cell serves the new cluster",
            || async { replica.server().cell.serves(&private) },
        )
        .await;
    }
    prefer(&alpha, &token, &private).await;

    // The token works on the cell's Foghorn: the edge belongs to the private cluster, whose
    // certificate (what its edges' seeds carry over TLS) is its own wildcard.
    let (edge, seed) = Edge::enroll(&alpha, &enrollment, "").await;
    assert_eq!(seed.cluster_id, private);
    assert_eq!(
        seed.balancer_base_url,
        format!("https://foghorn.{private}.{ROOT}")
    );
    let served = alpha.server().cell.get(&private).expect("served");
    let names = &served.tls.bundle().names;
    assert!(names.contains(&format!("*.{private}.{ROOT}")), "{names:?}");
    edge.report(0, &[]).await;

    let (stream, _) = alpha.stream(&t).await;
    let foghorn_host = format!("foghorn.{private}.{ROOT}");
    for (replica, host) in [
        (&alpha, foghorn_host.clone()),
        (&alpha2, foghorn_host.to_uppercase()),
        (&alpha2, format!("{private}.{ROOT}:443")),
    ] {
        eventually(
            WAIT,
            "viewers of the private cluster reach its edge",
            || async {
                redirect_for_host(replica, &host, &stream.playback_id)
                    .await
                    .1
                    .starts_with(&format!("{}/hls/", edge.url(&private)))
            },
        )
        .await;
    }
    // The home cluster's viewers stay on the home cluster's edges (the tenant may not use alpha:
    // no edge at all for its stream there).
    let (other, _) = tenant(&alpha, "alpha").await;
    let (theirs, _) = alpha.stream(&other).await;
    let (status, location) = redirect_for_host(
        &alpha,
        &format!("foghorn.alpha.{ROOT}"),
        &theirs.playback_id,
    )
    .await;
    assert_eq!(status, 307);
    assert!(location.starts_with(&home_edge.url("alpha")), "{location}");
    let (status, _) = redirect_for_host(&alpha, "127.0.0.1", &theirs.playback_id).await;
    assert_eq!(status, 307, "an unknown Host is the home cluster");
    // Another tenant's stream is unknown on the private cluster.
    for replica in [&alpha, &alpha2] {
        let (status, location) =
            redirect_for_host(replica, &foghorn_host, &theirs.playback_id).await;
        assert_eq!((status, location.as_str()), (404, ""));
    }

    // The official cluster scores the private edge, remote, through the always-on pair.
    eventually(WAIT, "bravo scores the private cluster's edge", || async {
        candidates(&play(&bravo, &stream.playback_id).await)
            .iter()
            .any(|c| c.0 == edge.node_id && c.1)
    })
    .await;
    // One subscription per replica, whatever the number of clusters it serves: two channels
    // each for alpha and the private cluster (bravo keeps its state to itself).
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut redis.connection().await)
        .await
        .expect("CLIENT LIST");
    let mut subscriptions: Vec<u32> = clients
        .lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("sub=")))
        .filter_map(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .collect();
    subscriptions.sort_unstable();
    assert_eq!(subscriptions, [4, 4], "{clients}");
    for s in [alpha2, alpha, bravo] {
        s.stop().await;
    }
}

/// Clusters of one cell peer in process (issue 18 §5): a tenant of alpha that prefers its private
/// cluster on alpha's cell gets the always-on pair at once, each cluster scoring the other's edge
/// as remote, though the gRPC address alpha's cell publishes answers nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_of_one_cell_peer_in_process() {
    let alpha = TestServer::start_with(Db::Postgres, |c| {
        federated(c, "alpha");
        c.federation.topology_poll = Duration::from_millis(100);
        c.federation.advertise_grpc = "http://127.0.0.1:9".into();
    })
    .await;
    let (t, token) = tenant(&alpha, "alpha").await;
    let (private, enrollment) = create_private(&alpha, &token, "alpha").await;
    eventually(WAIT, "the cell serves the new cluster", || async {
        alpha.server().cell.serves(&private)
    })
    .await;
    prefer(&alpha, &token, &private).await;
    let (operator, _) = alpha.operator().await;
    let home_edge = Edge::start(&alpha, &operator, 0).await;
    let (edge, _) = Edge::enroll(&alpha, &enrollment, "").await;
    edge.report(0, &[]).await;
    let (stream, _) = alpha.stream(&t).await;

    eventually(WAIT, "alpha scores the private cluster's edge", || async {
        candidates(&play(&alpha, &stream.playback_id).await)
            .iter()
            .any(|c| c.0 == edge.node_id && c.1)
    })
    .await;
    let host = format!("foghorn.{private}.{ROOT}");
    eventually(WAIT, "the private cluster scores alpha's edge", || async {
        candidates(&play_for_host(&alpha, &host, &stream.playback_id).await)
            .iter()
            .any(|c| c.0 == home_edge.node_id && c.1)
    })
    .await;
    assert_eq!(
        peering(&alpha, &token, &private).await,
        ("open".into(), true)
    );
    alpha.stop().await;
}

/// A private cluster moved to another cell (issue 18 §3): the old cell stops serving it within a
/// poll and ends its edges' sessions; the edge, coming back with its node credential, is told
/// where the cluster is served now, and that cell admits it with the same credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_moved_to_another_cell_takes_its_edges_along() {
    let cell = |cluster: &'static str| {
        move |c: &mut Config| {
            federated(c, cluster);
            c.federation.topology_poll = Duration::from_millis(100);
        }
    };
    let alpha = TestServer::start_with(Db::Postgres, cell("alpha")).await;
    let bravo = alpha.replica(cell("bravo")).await;
    let (_, token) = tenant(&alpha, "alpha").await;
    let (private, enrollment) = create_private(&alpha, &token, "alpha").await;
    eventually(WAIT, "alpha's cell serves the new cluster", || async {
        alpha.server().cell.serves(&private)
    })
    .await;
    let (mut edge, seed) = Edge::enroll(&alpha, &enrollment, "").await;
    edge.report(0, &[]).await;

    alpha
        .registry()
        .assign_cell(&private, Some("bravo"))
        .await
        .expect("move");
    eventually(WAIT, "bravo's cell takes the cluster over", || async {
        bravo.server().cell.serves(&private) && !alpha.server().cell.serves(&private)
    })
    .await;
    let (code, _) = edge.conn.error_frame().await;
    assert_eq!(code, foghorn::proto::ErrorCode::ShuttingDown);

    let credential = || register_with_credential(&seed.node_id, &seed.node_credential);
    let mut refused = EdgeConn::open(&alpha.grpc_url(), credential()).await;
    let (code, message) = refused.error_frame().await;
    assert_eq!(
        code,
        foghorn::proto::ErrorCode::Unauthenticated,
        "{message}"
    );
    let at = alpha
        .registry()
        .peer_endpoint("bravo")
        .await
        .expect("registry")
        .expect("bravo")
        .grpc_addr;
    assert!(
        message.ends_with(&format!("connect to its Foghorn at {at}")),
        "{message}"
    );
    let mut moved = EdgeConn::open(&bravo.grpc_url(), credential()).await;
    let again = moved.seed().await;
    assert_eq!((again.node_id, again.cluster_id), (seed.node_id, private));
    for s in [bravo, alpha] {
        s.stop().await;
    }
}
