//! The federation core against in-memory ports: arrangement, channel rules and supervision, on a
//! paused clock.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt as _;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ports::{
    Inbound, LinkError, Outbound, PullAnswer, PullNotice, QueryAnswer, Received, RemotePull,
    StreamCandidate, StreamQuery,
};
use super::*;
use crate::edge::{Capabilities, EdgeCommands, EdgeInfo, EdgeState, Stats};
use crate::leadership::Leadership;
use crate::metrics::Metrics;
use crate::routing::Router;

const PULL_FROM: &str = "dtsc://edge-0000000000e1.eu.example.net:4200/live+a";

/// A peer `eu` as this cluster's calls see it; every call is recorded.
#[derive(Debug, Default)]
struct FakeLink {
    calls: Mutex<Vec<String>>,
    live: bool,
    accept: bool,
    fail: bool,
}

impl FakeLink {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }
}

impl PeerLink for FakeLink {
    fn open_channel<'a>(
        &'a self,
        peer: &'a str,
        _outbound: Outbound,
    ) -> BoxFuture<'a, Result<Inbound, LinkError>> {
        self.calls.lock().push(format!("open {peer}"));
        Box::pin(async { Ok(Box::pin(futures_util::stream::pending()) as Inbound) })
    }

    fn query_stream<'a>(
        &'a self,
        peer: &'a str,
        query: StreamQuery,
    ) -> BoxFuture<'a, Result<QueryAnswer, LinkError>> {
        self.calls
            .lock()
            .push(format!("query {peer} {}", query.stream));
        let answer = if self.fail {
            Err(LinkError::Unavailable("down".into()))
        } else {
            Ok(QueryAnswer {
                live: self.live,
                candidates: vec![StreamCandidate {
                    node_id: "0000000000e1".into(),
                    base_url: "https://cdn-1.eu.example.net".into(),
                    dtsc_url: PULL_FROM.into(),
                    score: 7,
                }],
            })
        };
        Box::pin(async move { answer })
    }

    fn notify_origin_pull<'a>(
        &'a self,
        peer: &'a str,
        notice: PullNotice,
    ) -> BoxFuture<'a, Result<PullAnswer, LinkError>> {
        self.calls
            .lock()
            .push(format!("notify {peer} {}", notice.destination_node_id));
        let answer = PullAnswer {
            accepted: self.accept,
            dtsc_url: if self.accept {
                PULL_FROM.into()
            } else {
                String::new()
            },
            reason: if self.accept {
                String::new()
            } else {
                "no".into()
            },
        };
        Box::pin(async move { Ok(answer) })
    }

    fn arrange_origin_pull<'a>(
        &'a self,
        peer: &'a str,
        pull: RemotePull,
    ) -> BoxFuture<'a, Result<PullAnswer, LinkError>> {
        self.calls.lock().push(format!(
            "arrange {peer} {} from {} {}",
            pull.destination_node_id, pull.source_cluster_id, pull.source_dtsc_url
        ));
        let answer = if self.fail {
            Err(LinkError::Unavailable("down".into()))
        } else {
            Ok(PullAnswer {
                accepted: self.accept,
                ..PullAnswer::default()
            })
        };
        Box::pin(async move { answer })
    }
}

#[derive(Debug, Default)]
struct Directory {
    always_on: Vec<String>,
}

impl PeerDirectory for Directory {
    fn topology_version(&self) -> BoxFuture<'_, Result<i64, LinkError>> {
        Box::pin(async { Ok(0) })
    }

    fn always_on_peers<'a>(
        &'a self,
        _me: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, LinkError>> {
        let peers = self.always_on.clone();
        Box::pin(async move { Ok(peers) })
    }

    fn share_a_tenant<'a>(
        &'a self,
        _a: &'a str,
        _b: &'a str,
    ) -> BoxFuture<'a, Result<bool, LinkError>> {
        Box::pin(async { Ok(true) })
    }

    fn tenant_may_use_both<'a>(
        &'a self,
        _tenant: &'a str,
        _a: &'a str,
        _b: &'a str,
    ) -> BoxFuture<'a, Result<bool, LinkError>> {
        Box::pin(async { Ok(true) })
    }

    fn stream_owner<'a>(
        &'a self,
        _stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, LinkError>> {
        Box::pin(async { Ok(Some("t1".into())) })
    }
}

/// The control streams of the edges: what each was told.
#[derive(Debug, Default)]
struct Edges(Mutex<Vec<(String, String, String)>>);

impl EdgeCommands for Edges {
    fn origin_pull(&self, node_id: &str, stream: &str, dtsc_url: &str) -> bool {
        self.0
            .lock()
            .push((node_id.into(), stream.into(), dtsc_url.into()));
        true
    }
}

struct World {
    hub: Arc<Hub>,
    link: Arc<FakeLink>,
    told: Arc<Edges>,
}

/// Cluster `me` with one routable local edge, `0000000000a1`.
fn world(me: &str, link: FakeLink, directory: Directory, leadership: Leadership) -> World {
    let edges = Arc::new(EdgeState::new(Duration::from_secs(15)));
    let metrics = Arc::new(Metrics::new());
    let router = Router::new(edges.clone(), me, "example.net", metrics.clone());
    let info = EdgeInfo {
        capabilities: Capabilities {
            edge: true,
            ..Capabilities::default()
        },
        ..EdgeInfo::default()
    };
    let session = edges.attach("0000000000a1", info, 0);
    let stats = Stats {
        ram_max_bytes: 16 << 30,
        bw_limit_bytes_per_sec: 125_000_000,
        ..Stats::default()
    };
    assert!(edges.apply_stats(&session, stats));
    router.rebuild();
    let peers = Arc::new(Peers::new(
        me,
        Ttls {
            summary: Duration::from_secs(90),
            heartbeat: Duration::from_secs(30),
            unadvertised: Duration::from_secs(30),
        },
        router.clone(),
    ));
    let link = Arc::new(link);
    let told = Arc::new(Edges::default());
    let hub = Hub::new(Parts {
        cluster_id: me.into(),
        root_domain: "example.net".into(),
        config: crate::config::FederationConfig::default(),
        stats_interval: Duration::from_secs(5),
        peers,
        edges,
        router,
        metrics,
        leadership: Arc::new(leadership),
        link: link.clone(),
        directory: Arc::new(directory),
        edge_commands: told.clone(),
        relay: None,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
    });
    World { hub, link, told }
}

fn live_peer(accept: bool) -> FakeLink {
    FakeLink {
        live: true,
        accept,
        ..FakeLink::default()
    }
}

#[tokio::test(start_paused = true)]
async fn one_query_and_one_pull_then_no_more_calls() {
    let w = world(
        "us",
        live_peer(true),
        Directory::default(),
        Leadership::always(),
    );
    let arranged = w.hub.arrange("eu", "t1", "live+a", None).await;
    assert_eq!(arranged, Ok(Arrangement::Local));
    assert_eq!(
        w.link.calls(),
        ["query eu live+a", "notify eu 0000000000a1"]
    );
    assert_eq!(
        *w.told.0.lock(),
        [(
            "0000000000a1".to_string(),
            "live+a".to_string(),
            PULL_FROM.to_string()
        )],
        "the chosen edge is told to pull"
    );
    assert_eq!(
        w.hub.peers.origin("live+a").map(|o| o.dtsc_url),
        Some(PULL_FROM.to_string())
    );
    assert_eq!(w.hub.peers.wanted(), ["eu"], "the peer's channel is wanted");

    for _ in 0..10 {
        assert_eq!(
            w.hub.arrange("eu", "t1", "live+a", None).await,
            Ok(Arrangement::Local)
        );
    }
    assert_eq!(w.link.calls().len(), 2, "later viewers cost no call");
}

#[tokio::test(start_paused = true)]
async fn a_refused_pull_sends_viewers_to_the_peer_edge_until_it_is_asked_again() {
    let w = world(
        "us",
        live_peer(false),
        Directory::default(),
        Leadership::always(),
    );
    let remote = Ok(Arrangement::Remote {
        base_url: "https://cdn-1.eu.example.net".into(),
    });
    assert_eq!(w.hub.arrange("eu", "t1", "live+a", None).await, remote);
    assert!(w.told.0.lock().is_empty(), "no edge pulls");
    assert_eq!(w.hub.arrange("eu", "t1", "live+a", None).await, remote);
    assert_eq!(w.link.calls().len(), 2, "the refusal stands a while");

    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(w.hub.arrange("eu", "t1", "live+a", None).await, remote);
    assert_eq!(w.link.calls().len(), 4, "asked again after 5 s");
}

#[tokio::test(start_paused = true)]
async fn a_failed_peer_is_not_asked_for_every_viewer() {
    let link = FakeLink {
        fail: true,
        ..FakeLink::default()
    };
    let w = world("us", link, Directory::default(), Leadership::always());
    assert!(matches!(
        w.hub.arrange("eu", "t1", "live+a", None).await,
        Err(LinkError::Unavailable(_))
    ));
    assert_eq!(
        w.hub.arrange("eu", "t1", "live+a", None).await,
        Ok(Arrangement::Local),
        "meanwhile viewers are routed locally without a call"
    );
    assert_eq!(w.link.calls().len(), 1);
    tokio::time::advance(Duration::from_secs(6)).await;
    let _ = w.hub.arrange("eu", "t1", "live+a", None).await;
    assert_eq!(w.link.calls().len(), 2);
}

fn remote_pull(source: &str, dtsc_url: &str) -> RemotePull {
    RemotePull {
        stream: "live+a".into(),
        tenant_id: "t1".into(),
        source_cluster_id: source.into(),
        source_dtsc_url: dtsc_url.into(),
        destination_node_id: "0000000000a1".into(),
    }
}

/// `ArrangeOriginPull` from the cluster where the stream is live: its origin is taken (only on
/// an edge in its zone), the edge is told, `?source=` answers it, and no call is made.
#[tokio::test(start_paused = true)]
async fn a_peer_sending_viewers_here_gets_the_pull_from_its_origin_arranged() {
    let w = world(
        "us",
        live_peer(true),
        Directory::default(),
        Leadership::always(),
    );
    let outside = "dtsc://edge-0000000000e1.ap.example.net:4200/live+a";
    assert!(matches!(
        w.hub
            .answer_arrange("eu", &remote_pull("eu", outside))
            .await,
        Err(LinkError::Malformed(_))
    ));
    assert!(w.hub.peers.origin("live+a").is_none() && w.told.0.lock().is_empty());

    let answer = w
        .hub
        .answer_arrange("eu", &remote_pull("eu", PULL_FROM))
        .await;
    assert_eq!(
        answer.map(|a| (a.accepted, a.dtsc_url)),
        Ok((true, PULL_FROM.into()))
    );
    let pull = (
        "0000000000a1".to_string(),
        "live+a".to_string(),
        PULL_FROM.to_string(),
    );
    assert_eq!(*w.told.0.lock(), [pull]);
    assert_eq!(
        w.hub.peers.origin("live+a").map(|o| o.peer),
        Some("eu".into())
    );
    assert_eq!(
        w.hub.peers.wanted(),
        ["eu"],
        "wanted while the stream is live there"
    );
    assert!(w.link.calls().is_empty());
}

/// `ArrangeOriginPull` for a stream live on a third cluster: the pull is asked of that cluster
/// (`NotifyOriginPull`), as for a viewer here; once arranged, another peer's ask costs no call.
#[tokio::test(start_paused = true)]
async fn a_pull_from_a_third_cluster_is_asked_of_it() {
    let w = world(
        "us",
        live_peer(true),
        Directory::default(),
        Leadership::always(),
    );
    let answer = w.hub.answer_arrange("ap", &remote_pull("eu", "")).await;
    assert_eq!(
        answer.map(|a| (a.accepted, a.dtsc_url)),
        Ok((true, PULL_FROM.into()))
    );
    assert_eq!(w.link.calls(), ["notify eu 0000000000a1"]);
    let again = w.hub.answer_arrange("sa", &remote_pull("eu", "")).await;
    assert_eq!(again.map(|a| a.accepted), Ok(true));
    assert_eq!(w.link.calls().len(), 1, "arranged already");
    assert_eq!(w.told.0.lock().len(), 2, "the edge is told each time");
}

/// The asking side: a peer is asked once per stream; an arrangement stands 30 s, a refusal or
/// failure 5 s, and meanwhile no viewer costs a call.
#[tokio::test(start_paused = true)]
async fn a_peer_is_asked_to_pull_once_per_stream() {
    let w = world(
        "us",
        live_peer(true),
        Directory::default(),
        Leadership::always(),
    );
    assert_eq!(w.hub.remote_pull("ap", "live+a"), None);
    for _ in 0..3 {
        assert!(
            w.hub
                .arrange_remote("ap", "t1", "live+a", "eu", "0000000000b1")
                .await
        );
    }
    assert_eq!(w.link.calls(), ["arrange ap 0000000000b1 from eu "]);
    assert_eq!(w.hub.remote_pull("ap", "live+a"), Some(true));
    assert_eq!(w.hub.remote_pull("sa", "live+a"), None, "per peer");
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(w.hub.remote_pull("ap", "live+a"), None);

    // Live here, with no origin edge in the snapshot: nothing to pull, no call.
    assert!(
        !w.hub
            .arrange_remote("ap", "t1", "live+b", "us", "0000000000b1")
            .await
    );
    assert_eq!(w.link.calls().len(), 1);

    let refusing = world(
        "us",
        live_peer(false),
        Directory::default(),
        Leadership::always(),
    );
    assert!(
        !refusing
            .hub
            .arrange_remote("ap", "t1", "live+a", "eu", "0000000000b1")
            .await
    );
    assert!(
        !refusing
            .hub
            .arrange_remote("ap", "t1", "live+a", "eu", "0000000000b1")
            .await
    );
    assert_eq!(refusing.link.calls().len(), 1);
    assert_eq!(refusing.hub.remote_pull("ap", "live+a"), Some(false));
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(
        refusing.hub.remote_pull("ap", "live+a"),
        None,
        "asked again after 5 s"
    );
}

fn received(frame: Frame) -> Result<Received, LinkError> {
    Ok(Received { frame, bytes: 64 })
}

fn hello(cluster: &str) -> Frame {
    Frame::Hello {
        cluster_id: cluster.into(),
        protocol_version: FEDERATION_VERSION,
    }
}

/// What this side sent on a channel, up to its end.
async fn sent(mailbox: Arc<Mailbox<Sent>>) -> (Vec<&'static str>, Option<Closing>) {
    let mut kinds = Vec::new();
    let mut end = None;
    let mut stream = std::pin::pin!(mailbox.stream());
    while let Some(item) = stream.next().await {
        match item {
            Ok(frame) => kinds.push(frame.kind()),
            Err(closing) => end = Some(closing),
        }
    }
    (kinds, end)
}

#[tokio::test(start_paused = true)]
async fn a_channel_refuses_a_peer_that_skips_hello() {
    let w = world(
        "us",
        FakeLink::default(),
        Directory::default(),
        Leadership::always(),
    );
    let beat = Frame::Heartbeat {
        cluster_id: "eu".into(),
        sent_at_unix_ms: 0,
    };
    let inbound: Inbound = Box::pin(
        futures_util::stream::iter([received(beat)]).chain(futures_util::stream::pending()),
    );
    let (kinds, end) = sent(w.hub.accept_channel("eu".into(), inbound)).await;
    assert_eq!(kinds.first(), Some(&"hello"), "{kinds:?}");
    assert_eq!(
        end,
        Some(Closing::Refused("the first frame must be Hello".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dropped_after_the_heartbeat_ttl() {
    let w = world(
        "us",
        FakeLink::default(),
        Directory::default(),
        Leadership::always(),
    );
    let inbound: Inbound = Box::pin(
        futures_util::stream::iter([received(hello("eu"))]).chain(futures_util::stream::pending()),
    );
    let started = tokio::time::Instant::now();
    let (kinds, end) = sent(w.hub.accept_channel("eu".into(), inbound)).await;
    assert_eq!(end, Some(Closing::Silent));
    assert_eq!(kinds[0], "hello");
    assert!(kinds[1..].iter().all(|k| *k == "heartbeat"), "{kinds:?}");
    let ttl = crate::config::FederationConfig::default().heartbeat_ttl;
    assert!(started.elapsed() >= ttl, "{:?}", started.elapsed());
    assert_eq!(w.hub.peers.open_channels("eu"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_flooding_peer_is_cut_off() {
    let w = world(
        "us",
        FakeLink::default(),
        Directory::default(),
        Leadership::always(),
    );
    let beats = (0..1_000).map(|_| {
        received(Frame::Heartbeat {
            cluster_id: "eu".into(),
            sent_at_unix_ms: 0,
        })
    });
    let inbound: Inbound = Box::pin(
        futures_util::stream::iter(std::iter::once(received(hello("eu"))).chain(beats))
            .chain(futures_util::stream::pending()),
    );
    let (_, end) = sent(w.hub.accept_channel("eu".into(), inbound)).await;
    assert!(matches!(end, Some(Closing::Flooded(_))), "{end:?}");
}

#[tokio::test(start_paused = true)]
async fn only_the_leader_dials_and_only_peers_above_it() {
    let directory = || Directory {
        always_on: vec!["aa".into(), "zz".into()],
    };
    let follower = world(
        "mm",
        FakeLink::default(),
        directory(),
        Leadership::by_lease(),
    );
    let stop = CancellationToken::new();
    tokio::spawn(follower.hub.clone().supervise(stop.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(follower.link.calls().is_empty(), "a follower dials nobody");

    let leader = world("mm", FakeLink::default(), directory(), Leadership::always());
    tokio::spawn(leader.hub.clone().supervise(stop.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        leader.link.calls(),
        ["open zz"],
        "of each pair the lower id dials"
    );
    assert_eq!(leader.hub.peers.channel_state("zz"), "open");
    stop.cancel();
}
