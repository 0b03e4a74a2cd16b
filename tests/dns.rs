//! DNS that follows the edges (issue 20), through the binary's real listeners: the built-in
//! authoritative server asked over UDP and TCP with hickory's message codec while simulated
//! edges enroll, report, go quiet and come back; replicas answering alike; bad packets.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{
    ask, ask_with, code_of, eventually, exchange_tcp, exchange_udp, register_frame, Bind, Db,
    EdgeConn, RedisProc, TestServer,
};
use foghorn::proto::{edge_message, register, Capabilities, EdgeMessage, NodeStats};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// The addresses of an answer, sorted.
fn addresses(message: &Message) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

async fn a_of(server: SocketAddr, name: &str) -> Vec<IpAddr> {
    addresses(&ask(server, name, RecordType::A).await)
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

/// A Register frame enrolling with `token` as an edge with these capabilities.
fn register_as(token: &str, edge: bool, ingest: bool) -> EdgeMessage {
    let mut frame = register_frame(Some(register::Auth::EnrollmentToken(token.into())));
    if let Some(edge_message::Payload::Register(r)) = &mut frame.payload {
        r.capabilities = Some(Capabilities {
            edge,
            ingest,
            ..Default::default()
        });
    }
    frame
}

fn stats(cpu_tenths: u32) -> EdgeMessage {
    EdgeMessage {
        payload: Some(edge_message::Payload::NodeStats(NodeStats {
            cpu_tenths,
            ram_max_bytes: 16 << 30,
            ram_used_bytes: 1 << 30,
            up_bytes_per_sec: 1_000_000,
            bw_limit_bytes_per_sec: 125_000_000,
            ..Default::default()
        })),
    }
}

/// An edge connected from `from` that reports `cpu_tenths` every 100 ms until `stop` (then its
/// stream closes). Returns its node id and credential.
async fn edge(
    server: &TestServer,
    register: EdgeMessage,
    from: &str,
    cpu_tenths: u32,
    stop: CancellationToken,
) -> (String, String) {
    let mut conn = EdgeConn::open_from(&server.grpc_url(), register, Some(ip(from))).await;
    let seed = conn.seed().await;
    tokio::spawn(async move {
        loop {
            if conn.tx.send(stats(cpu_tenths)).await.is_err() {
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                frame = conn.rx.message() => if !matches!(frame, Ok(Some(_))) { return },
            }
        }
    });
    (seed.node_id, seed.node_credential)
}

fn dns_server(server: &TestServer) -> SocketAddr {
    server.server().dns_addr.expect("DNS on")
}

/// Edges enroll and appear under their own names and in the pools (by capability, the less
/// loaded first); one that goes away stays for the hold, then leaves; one that reconnects
/// never leaves; the cell answers for `foghorn`, the apex, SOA and NS; nothing outside the zones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_the_built_in_server_follows_the_edges() {
    let server = TestServer::start_with(Db::Postgres, |c| {
        c.dns.listen = "127.0.0.1:0".into();
        c.dns.addresses = vec!["192.0.2.10".into(), "2001:db8::10".into()];
        c.dns.pool_size = 2;
        c.dns.hold = Duration::from_secs(2);
        c.edges.stats_interval = Duration::from_millis(200);
    })
    .await;
    let dns = dns_server(&server);
    let zone = "test.example.net.";

    // The cell's names.
    assert_eq!(
        a_of(dns, &format!("foghorn.{zone}")).await,
        [ip("192.0.2.10")]
    );
    let aaaa = ask(dns, zone, RecordType::AAAA).await;
    assert!(aaaa.metadata.authoritative);
    assert_eq!(addresses(&aaaa), [ip("2001:db8::10")]);
    let soa = ask(dns, zone, RecordType::SOA).await;
    match &soa.answers[..] {
        [record] => match &record.data {
            RData::SOA(soa) => {
                assert_eq!(soa.mname.to_ascii(), format!("foghorn.{zone}"));
            }
            other => panic!("an SOA, not {other:?}"),
        },
        other => panic!("one SOA, not {other:?}"),
    }
    let ns = ask(dns, zone, RecordType::NS).await;
    assert_eq!(ns.answers.len(), 1);
    assert_eq!(
        addresses(&{
            let mut glue = ns.clone();
            glue.answers = ns.additionals.clone();
            glue
        })
        .len(),
        2,
        "glue"
    );
    let missing = ask(dns, &format!("edge-000000000000.{zone}"), RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        missing.authorities.len(),
        1,
        "the SOA, for negative caching"
    );
    for outside in [
        "example.org.",
        "example.net.",
        "other.example.net.",
        "x.other.example.net.",
    ] {
        let refused = ask(dns, outside, RecordType::A).await;
        assert_eq!(
            refused.metadata.response_code,
            ResponseCode::Refused,
            "{outside}"
        );
        assert!(refused.answers.is_empty());
    }

    // Three edges: A (edge + ingest, 90 % CPU), B (edge, 10 %), C (edge + ingest, 50 %).
    let (tenant, _) = server.operator().await;
    let token = server.enrollment_token(&tenant, 3).await;
    let (stop_a, stop_b, stop_c) = (
        CancellationToken::new(),
        CancellationToken::new(),
        CancellationToken::new(),
    );
    let (a, a_credential) = edge(
        &server,
        register_as(&token, true, true),
        "127.0.0.2",
        900,
        stop_a.clone(),
    )
    .await;
    let (b, b_credential) = edge(
        &server,
        register_as(&token, true, false),
        "127.0.0.3",
        100,
        stop_b.clone(),
    )
    .await;
    let (c, _) = edge(
        &server,
        register_as(&token, true, true),
        "127.0.0.4",
        500,
        stop_c.clone(),
    )
    .await;
    let name = |node: &str| format!("edge-{node}.{zone}");
    eventually(WAIT, "every edge has its name", || async {
        a_of(dns, &name(&a)).await == [ip("127.0.0.2")]
            && a_of(dns, &name(&b)).await == [ip("127.0.0.3")]
            && a_of(dns, &name(&c)).await == [ip("127.0.0.4")]
    })
    .await;
    // Viewers' pool of two: B and C (A is the busiest); publishers' pool: A and C (B ingests not).
    assert_eq!(
        a_of(dns, &format!("edge.{zone}")).await,
        [ip("127.0.0.3"), ip("127.0.0.4")]
    );
    assert_eq!(
        a_of(dns, &format!("EDGE-INGEST.{}", zone.to_uppercase())).await,
        [ip("127.0.0.2"), ip("127.0.0.4")],
        "names are case-insensitive"
    );
    assert!(ask(dns, &name(&a), RecordType::AAAA)
        .await
        .answers
        .is_empty());

    // A goes away: held for 2 s (its name answers, and it fills the publishers' pool), then gone.
    stop_a.cancel();
    eventually(WAIT, "A unroutable", || async {
        !server.server().state.edges.is_routable(&a)
    })
    .await;
    let gone_at = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a_of(dns, &name(&a)).await, [ip("127.0.0.2")], "held");
    eventually(WAIT, "A's name goes after the hold", || async {
        ask(dns, &name(&a), RecordType::A)
            .await
            .metadata
            .response_code
            == ResponseCode::NXDomain
    })
    .await;
    assert!(
        gone_at.elapsed() >= Duration::from_millis(1500),
        "not before the hold"
    );
    assert_eq!(
        a_of(dns, &format!("edge-ingest.{zone}")).await,
        [ip("127.0.0.4")]
    );

    // A comes back with its credential.
    let stop_a = CancellationToken::new();
    edge(
        &server,
        common::register_with_credential(&a, &a_credential),
        "127.0.0.2",
        900,
        stop_a.clone(),
    )
    .await;
    eventually(WAIT, "A answered again", || async {
        a_of(dns, &name(&a)).await == [ip("127.0.0.2")]
    })
    .await;

    // B reconnects (closed, back 600 ms later): its name never stops answering.
    stop_b.cancel();
    let watch = async {
        for _ in 0..20 {
            assert_eq!(a_of(dns, &name(&b)).await, [ip("127.0.0.3")], "B flapped");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let back = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        edge(
            &server,
            common::register_with_credential(&b, &b_credential),
            "127.0.0.3",
            100,
            CancellationToken::new(),
        )
        .await
    };
    tokio::join!(watch, back);
    server.stop().await;
}

/// Bad and unusual questions: garbage is dropped or answered FORMERR, and the server answers on;
/// updates, other classes and transfers (not allowed here, and never over UDP) are refused; ANY
/// gets one RRset; UDP answers stop at 1232 bytes (512 without EDNS) with TC, TCP has them whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_bad_questions_are_refused_and_answers_are_bounded() {
    let server = TestServer::start_with(Db::Sqlite, |c| {
        c.dns.listen = "127.0.0.1:0".into();
        c.dns.addresses = vec!["192.0.2.10".into(), "2001:db8::10".into()];
    })
    .await;
    let dns = dns_server(&server);
    let zone = "test.example.net.";

    // Garbage: too short for a header (dropped), a header claiming a question it lacks (FORMERR).
    assert_eq!(exchange_udp(dns, b"\x01\x02\x03").await, None);
    let formerr = exchange_udp(dns, &[0xab, 0xcd, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7])
        .await
        .expect("an answer");
    let formerr = Message::from_vec(&formerr).expect("message");
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    for _ in 0..50 {
        let junk: Vec<u8> = (0..rand::random_range(0..600))
            .map(|_| rand::random())
            .collect();
        if let Some(answer) = exchange_udp(dns, &junk).await {
            let answer = Message::from_vec(&answer).expect("a DNS message");
            assert_ne!(
                answer.metadata.response_code,
                ResponseCode::NoError,
                "{junk:?}"
            );
        }
    }
    assert_eq!(
        a_of(dns, &format!("foghorn.{zone}")).await,
        [ip("192.0.2.10")],
        "still up"
    );

    // Two questions in one message.
    let mut two = Message::new(7, MessageType::Query, OpCode::Query);
    two.add_query(Query::query(
        Name::from_ascii(zone).expect("name"),
        RecordType::A,
    ));
    two.add_query(Query::query(
        Name::from_ascii(zone).expect("name"),
        RecordType::AAAA,
    ));
    assert_eq!(code_of(dns, &two).await, ResponseCode::FormErr);

    // An update.
    let mut update = Message::new(8, MessageType::Query, OpCode::Update);
    update.add_query(Query::query(
        Name::from_ascii(zone).expect("name"),
        RecordType::SOA,
    ));
    assert_eq!(code_of(dns, &update).await, ResponseCode::Refused);

    // Class CH.
    let mut chaos = Message::new(9, MessageType::Query, OpCode::Query);
    let mut q = Query::query(
        Name::from_ascii(format!("foghorn.{zone}")).expect("name"),
        RecordType::TXT,
    );
    q.set_query_class(DNSClass::CH);
    chaos.add_query(q);
    assert_eq!(code_of(dns, &chaos).await, ResponseCode::Refused);

    // Transfers: refused over UDP and TCP (no network is allowed).
    for tcp in [false, true] {
        let axfr = ask_with(dns, zone, RecordType::AXFR, None, tcp).await;
        assert_eq!(
            axfr.metadata.response_code,
            ResponseCode::Refused,
            "tcp {tcp}"
        );
        assert!(axfr.answers.is_empty());
    }

    // ANY: one RRset.
    let any = ask(dns, &format!("foghorn.{zone}"), RecordType::ANY).await;
    assert_eq!(any.answers.len(), 1, "{any:?}");

    // Six 250-byte challenge texts: 1.5 KB.
    let texts: Vec<String> = (0..6).map(|i| format!("{i}").repeat(250)).collect();
    server.server().state.dns.set_challenges(texts.clone());
    let challenge = format!("_acme-challenge.{zone}");
    let mut big = ask(dns, &challenge, RecordType::TXT).await;
    for _ in 0..40 {
        if !big.answers.is_empty() || big.metadata.truncation {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        big = ask(dns, &challenge, RecordType::TXT).await;
    }
    let udp = ask_with(dns, &challenge, RecordType::TXT, Some(4096), false).await;
    assert!(udp.metadata.truncation, "TC over UDP");
    assert!(udp.to_vec().expect("encode").len() <= 1232);
    assert!(udp.answers.len() < 6);
    let plain = ask_with(dns, &challenge, RecordType::TXT, None, false).await;
    assert!(plain.metadata.truncation);
    assert!(plain.to_vec().expect("encode").len() <= 512);
    let whole = ask_with(dns, &challenge, RecordType::TXT, None, true).await;
    assert!(!whole.metadata.truncation);
    assert_eq!(whole.answers.len(), 6);
    server.stop().await;
}

/// Two replicas sharing a Redis answer alike for an edge connected to one of them, and for a
/// private cluster the cell serves; a network in `dns.allow_transfer` may transfer a zone over
/// TCP, whole, SOA first and last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_every_replica_answers_and_transfers_follow_the_allow_list() {
    let redis = RedisProc::start().await;
    let url = redis.url();
    let first = TestServer::start_with(Db::Postgres, |c| {
        c.redis.url = url;
        c.dns.listen = "127.0.0.1:0".into();
        c.dns.addresses = vec!["192.0.2.10".into()];
        c.dns.allow_transfer = vec!["127.0.0.0/8".into()];
    })
    .await;
    let second = first.replica(|_| {}).await;
    let zone = "test.example.net.";
    let (tenant, _) = first.operator().await;
    let token = first.enrollment_token(&tenant, 1).await;
    let (node, _) = edge(
        &first,
        register_as(&token, true, false),
        "127.0.0.5",
        100,
        CancellationToken::new(),
    )
    .await;
    for replica in [&first, &second] {
        let dns = dns_server(replica);
        eventually(WAIT, "each replica answers for the edge", || async {
            a_of(dns, &format!("edge-{node}.{zone}")).await == [ip("127.0.0.5")]
        })
        .await;
    }

    // A private cluster of the cell: its own zone.
    let created = foghorn::api::create_private_cluster_for(
        first.registry(),
        "example.net",
        &tenant,
        serde_json::from_value(serde_json::json!({ "name": "Home Lab" })).expect("input"),
        None,
    )
    .await
    .expect("private cluster");
    let private = created.cluster.id;
    for replica in [&first, &second] {
        let dns = dns_server(replica);
        eventually(WAIT, "the private cluster's zone", || async {
            a_of(dns, &format!("foghorn.{private}.example.net.")).await == [ip("192.0.2.10")]
        })
        .await;
    }

    let axfr = ask_with(dns_server(&second), zone, RecordType::AXFR, None, true).await;
    assert_eq!(axfr.metadata.response_code, ResponseCode::NoError);
    let types: Vec<RecordType> = axfr.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types.first(), Some(&RecordType::SOA));
    assert_eq!(types.last(), Some(&RecordType::SOA));
    assert!(types.contains(&RecordType::NS));
    assert!(axfr
        .answers
        .iter()
        .any(|r| r.name.to_ascii() == format!("edge-{node}.{zone}")));
    let udp = ask_with(dns_server(&second), zone, RecordType::AXFR, None, false).await;
    assert_eq!(
        udp.metadata.response_code,
        ResponseCode::Refused,
        "never over UDP"
    );
    second.stop().await;
    first.stop().await;
}

/// `dns_updates` of `/ready`.
async fn dns_updates(server: &TestServer) -> serde_json::Value {
    server.ready().await["dns_updates"].clone()
}

/// RFC 2136 to a real BIND 9: the leader adds an edge's records when it becomes routable and
/// removes them after the hold, sends nothing while nothing changes (the serial stays), puts back
/// what someone changed by hand at the next read-back; BIND refuses an unsigned update and one
/// signed with the wrong key, which Foghorn reports in `/ready` and `/metrics`, as it does a
/// primary it cannot reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_updates_keep_a_bind_primary_in_step() {
    let bind = Bind::start().await;
    let primary = bind.addr;
    let secret = bind.secret.clone();
    let server = TestServer::start_with(Db::Sqlite, |c| {
        c.dns.addresses = vec!["192.0.2.10".into()];
        c.dns.hold = Duration::from_secs(1);
        c.dns.update_server = primary.to_string();
        c.dns.tsig_key_name = "foghorn".into();
        c.dns.tsig_secret = secret;
        c.dns.update_interval = Duration::from_secs(5);
        c.edges.stats_interval = Duration::from_millis(200);
    })
    .await;
    let zone = "test.example.net.";
    eventually(WAIT, "the cell's name at BIND", || async {
        a_of(primary, &format!("foghorn.{zone}")).await == [ip("192.0.2.10")]
    })
    .await;
    assert_eq!(dns_updates(&server).await, "ok");

    let (tenant, _) = server.operator().await;
    let token = server.enrollment_token(&tenant, 1).await;
    let stop = CancellationToken::new();
    let (node, _) = edge(
        &server,
        register_as(&token, true, true),
        "127.0.0.6",
        200,
        stop.clone(),
    )
    .await;
    eventually(WAIT, "routable", || async {
        server.server().state.edges.is_routable(&node)
    })
    .await;
    let routable_at = std::time::Instant::now();
    let name = format!("edge-{node}.{zone}");
    eventually(WAIT, "the edge's name at BIND", || async {
        a_of(primary, &name).await == [ip("127.0.0.6")]
    })
    .await;
    eprintln!("routable -> answered by BIND: {:?}", routable_at.elapsed());
    assert_eq!(
        a_of(primary, &format!("edge.{zone}")).await,
        [ip("127.0.0.6")]
    );
    assert_eq!(
        a_of(primary, &format!("edge-ingest.{zone}")).await,
        [ip("127.0.0.6")]
    );

    // Nothing changes (the edge keeps reporting the same load): nothing is sent.
    let serial = bind.serial().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(bind.serial().await, serial, "no churn");

    // A record added by hand under the managed names goes at the next read-back (5 s).
    let mut update = Message::new(77, MessageType::Query, OpCode::Update);
    update.add_query(Query::query(
        Name::from_ascii(zone).expect("name"),
        RecordType::SOA,
    ));
    update.add_authority(hickory_proto::rr::Record::from_rdata(
        Name::from_ascii(format!("edge.{zone}")).expect("name"),
        60,
        RData::A(hickory_proto::rr::rdata::A(
            "198.51.100.9".parse().expect("ip"),
        )),
    ));
    // Unsigned: BIND refuses it.
    let answer = exchange_tcp(primary, &update.to_vec().expect("encode"))
        .await
        .expect("answer");
    assert_eq!(
        Message::from_vec(&answer)
            .expect("msg")
            .metadata
            .response_code,
        ResponseCode::Refused
    );
    // Signed with the key: accepted, then undone by Foghorn.
    let signer = hickory_proto::rr::TSigner::new(
        data_encoding::BASE64
            .decode(bind.secret.as_bytes())
            .expect("b64"),
        hickory_proto::rr::rdata::tsig::TsigAlgorithm::HmacSha256,
        Name::from_ascii("foghorn.").expect("name"),
        300,
    )
    .expect("signer");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    update.finalize(&signer, now).expect("sign");
    let answer = exchange_tcp(primary, &update.to_vec().expect("encode"))
        .await
        .expect("answer");
    assert_eq!(
        Message::from_vec(&answer)
            .expect("msg")
            .metadata
            .response_code,
        ResponseCode::NoError
    );
    assert_eq!(a_of(primary, &format!("edge.{zone}")).await.len(), 2);
    eventually(
        Duration::from_secs(15),
        "the stray record removed",
        || async { a_of(primary, &format!("edge.{zone}")).await == [ip("127.0.0.6")] },
    )
    .await;

    // The edge goes: its records leave BIND after the hold.
    stop.cancel();
    eventually(WAIT, "the edge's name gone from BIND", || async {
        ask(primary, &name, RecordType::A)
            .await
            .metadata
            .response_code
            == ResponseCode::NXDomain
    })
    .await;
    assert!(a_of(primary, &format!("edge.{zone}")).await.is_empty());

    // A Foghorn with the wrong key is refused, and says so.
    let wrong = TestServer::start_with(Db::Sqlite, |c| {
        c.dns.addresses = vec!["192.0.2.99".into()];
        c.dns.update_server = primary.to_string();
        c.dns.tsig_key_name = "foghorn".into();
        c.dns.tsig_secret = data_encoding::BASE64.encode(&[7u8; 32]);
    })
    .await;
    eventually(WAIT, "the refusal in /ready", || async {
        dns_updates(&wrong).await["failing"][zone]
            .as_str()
            .is_some_and(|e| e.contains("refused") && e.contains("NOTAUTH") && e.contains("BADSIG"))
    })
    .await;
    let metrics = reqwest::get(wrong.http("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("foghorn_dns_updates_total{outcome=\"Refused\"}"),
        "{metrics}"
    );
    assert_eq!(
        a_of(primary, &format!("foghorn.{zone}")).await,
        [ip("192.0.2.10")],
        "nothing changed"
    );
    wrong.stop().await;

    // A primary nobody answers at.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let unreachable = TestServer::start_with(Db::Sqlite, |c| {
        c.dns.update_server = closed.to_string();
        c.dns.tsig_key_name = "foghorn".into();
        c.dns.tsig_secret = data_encoding::BASE64.encode(&[7u8; 32]);
    })
    .await;
    eventually(WAIT, "the outage in /ready", || async {
        dns_updates(&unreachable).await["failing"][zone]
            .as_str()
            .is_some_and(|e| e.contains("connecting to"))
    })
    .await;
    unreachable.stop().await;
    server.stop().await;
}

/// Deleting a node takes its records away at once (not after the hold) on every replica, ends
/// its session and refuses its credential; bad ids and strangers change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_a_deleted_node_leaves_at_once() {
    let redis = RedisProc::start().await;
    let url = redis.url();
    let first = TestServer::start_with(Db::Postgres, |c| {
        c.redis.url = url;
        c.dns.listen = "127.0.0.1:0".into();
        c.dns.hold = Duration::from_secs(600);
    })
    .await;
    let second = first.replica(|_| {}).await;
    let zone = "test.example.net.";
    let (tenant, operator) = first.operator().await;
    let token = first.enrollment_token(&tenant, 2).await;
    let (node, credential) = edge(
        &first,
        register_as(&token, true, false),
        "127.0.0.8",
        100,
        CancellationToken::new(),
    )
    .await;
    let (kept, _) = edge(
        &first,
        register_as(&token, true, false),
        "127.0.0.9",
        100,
        CancellationToken::new(),
    )
    .await;
    let name = format!("edge-{node}.{zone}");
    for replica in [&first, &second] {
        let dns = dns_server(replica);
        eventually(WAIT, "both edges answered", || async {
            a_of(dns, &name).await == [ip("127.0.0.8")]
                && a_of(dns, &format!("edge-{kept}.{zone}")).await == [ip("127.0.0.9")]
        })
        .await;
    }

    let client = reqwest::Client::new();
    let delete = |server: &TestServer, node: &str, token: &str| {
        client
            .delete(server.http(&format!("/api/v1/clusters/test/nodes/{node}")))
            .bearer_auth(token)
            .send()
    };
    // A stranger (another tenant's token), a malformed id, an unknown node: refused, nothing gone.
    let stranger = first
        .registry()
        .create_tenant("Stranger", "test")
        .await
        .expect("tenant");
    let (_, stranger_token) = first
        .registry()
        .create_api_token(&stranger.id, foghorn::registry::Role::Tenant)
        .await
        .expect("token");
    let refused = delete(&second, &node, &stranger_token)
        .await
        .expect("answer");
    assert!(refused.status().is_client_error(), "{}", refused.status());
    assert_eq!(
        delete(&second, "..%2Fetc", &operator)
            .await
            .expect("answer")
            .status(),
        400
    );
    assert_eq!(
        delete(&second, "0123456789ab", &operator)
            .await
            .expect("answer")
            .status(),
        404
    );
    assert_eq!(a_of(dns_server(&first), &name).await, [ip("127.0.0.8")]);

    // Deleted through the replica that does not hold its session.
    let deleted = delete(&second, &node, &operator).await.expect("answer");
    assert_eq!(deleted.status(), 200);
    let deleted_at = std::time::Instant::now();
    for replica in [&first, &second] {
        let dns = dns_server(replica);
        eventually(WAIT, "its name gone from every replica", || async {
            ask(dns, &name, RecordType::A).await.metadata.response_code == ResponseCode::NXDomain
        })
        .await;
        assert_eq!(
            a_of(dns, &format!("edge-{kept}.{zone}")).await,
            [ip("127.0.0.9")]
        );
    }
    assert!(
        deleted_at.elapsed() < Duration::from_secs(5),
        "at once, not after the 600 s hold"
    );
    assert!(first.server().state.edges.get(&node).is_none());
    // It cannot come back with its credential.
    let mut again = EdgeConn::open_from(
        &first.grpc_url(),
        common::register_with_credential(&node, &credential),
        Some(ip("127.0.0.8")),
    )
    .await;
    let (code, message) = again.error_frame().await;
    assert_ne!(code, foghorn::proto::ErrorCode::Unspecified, "{message}");
    second.stop().await;
    first.stop().await;
}

/// ACME challenge values published in the registry (as the leader does for DNS-01) are served by
/// every replica, both values of one name at once (the apex's and the wildcard's), and go when
/// removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_acme_challenges_are_answered_by_every_replica() {
    let redis = RedisProc::start().await;
    let url = redis.url();
    let first = TestServer::start_with(Db::Postgres, |c| {
        c.redis.url = url;
        c.dns.listen = "127.0.0.1:0".into();
    })
    .await;
    let second = first.replica(|_| {}).await;
    let name = "_acme-challenge.test.example.net.";
    let texts = |m: &Message| {
        let mut out: Vec<String> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(t.to_string()),
                _ => None,
            })
            .collect();
        out.sort();
        out
    };
    let values = vec!["apex-value".to_string(), "wildcard-value".to_string()];
    first
        .registry()
        .set_acme_challenges("test", &values, foghorn::registry::now_ms() + 600_000)
        .await
        .expect("challenges");
    for replica in [&first, &second] {
        let dns = dns_server(replica);
        eventually(WAIT, "both values on each replica", || async {
            texts(&ask(dns, name, RecordType::TXT).await) == values
        })
        .await;
    }
    first
        .registry()
        .set_acme_challenges("test", &[], 0)
        .await
        .expect("cleared");
    for replica in [&first, &second] {
        let dns = dns_server(replica);
        eventually(WAIT, "gone from each replica", || async {
            ask(dns, name, RecordType::TXT).await.metadata.response_code == ResponseCode::NXDomain
        })
        .await;
    }
    second.stop().await;
    first.stop().await;
}
