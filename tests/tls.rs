//! Whole-server tests of the cluster certificate: the dev CA on first start, the wildcard in every
//! ConfigSeed and in PreRegisterEdge, TLS and plaintext on the same listeners, operator files read
//! again and pushed to connected edges, a TLS-only listener turning plaintext away, and
//! certificates from ACME against a real pebble (issued, pushed, renewed, kept across leaders,
//! a refused renewal, DNS-01 through the built-in server and through RFC 2136 to BIND 9).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{
    ask, ders, eventually, free_port, https_get, register_with_credential, register_with_token,
    Bind, Db, EdgeConn, Pebble, RedisProc, TestServer,
};
use foghorn::config::{Config, ListenerTls, TlsSource};
use foghorn::proto::edge_provisioning_client::EdgeProvisioningClient;
use foghorn::proto::PreRegisterEdgeRequest;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// The name every test connects as: covered by the cluster wildcard `*.test.example.net`.
const FOGHORN_NAME: &str = "foghorn.test.example.net";

/// A gRPC channel over TLS to `addr`, trusting only `ca_pem`.
async fn tls_channel(addr: SocketAddr, ca_pem: &str) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("url")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name(FOGHORN_NAME),
        )?
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_certificate_reaches_edges_and_serves_both_listeners() {
    let server = TestServer::start(Db::Sqlite).await;
    let (tenant, _op) = server.operator().await;
    let ca_pem = std::fs::read_to_string(server.data.path().join("tls/ca.pem"))
        .expect("the dev CA was made on first start");
    let http = server.server().http_addr;
    let grpc = server.server().grpc_addr;

    // Peers are told to dial over TLS and what to trust there.
    let published = server
        .registry()
        .peer_endpoint("test")
        .await
        .expect("registry")
        .expect("this cluster");
    assert_eq!(published.grpc_addr, format!("https://{grpc}"));
    assert_eq!(published.tls_ca_pem, ca_pem);

    // PreRegisterEdge hands out the CA, and over TLS only the wildcard with its key.
    let token = server.enrollment_token(&tenant, 1).await;
    let ask = PreRegisterEdgeRequest {
        enrollment_token: token.clone(),
        external_ip: "127.0.0.1".into(),
        ..Default::default()
    };
    let plaintext = Endpoint::from_shared(server.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let pre = EdgeProvisioningClient::new(plaintext)
        .pre_register_edge(ask.clone())
        .await
        .expect("pre-registered")
        .into_inner();
    assert_eq!(pre.ca_bundle_pem, ca_pem);
    assert_eq!(pre.tls, None, "no private key over plaintext");
    let secure = tls_channel(grpc, &ca_pem)
        .await
        .expect("TLS to the gRPC port");
    let pre = EdgeProvisioningClient::new(secure)
        .pre_register_edge(ask)
        .await
        .expect("pre-registered")
        .into_inner();
    assert_eq!(pre.ca_bundle_pem, ca_pem);
    let pre_tls = pre.tls.expect("the wildcard for the cert stage");

    // The edge enrolls over TLS on the gRPC port and gets the same wildcard in its ConfigSeed.
    let channel = tls_channel(grpc, &ca_pem)
        .await
        .expect("TLS to the gRPC port");
    let mut edge = EdgeConn::over(channel, register_with_token(&token)).await;
    let seed = edge.seed().await;
    let bundle = seed
        .tls
        .clone()
        .expect("the ConfigSeed carries the cluster certificate");
    assert_eq!(bundle, pre_tls);
    assert!(bundle.private_key_pem.contains("PRIVATE KEY"));
    let now = foghorn::registry::now_ms() / 1000;
    assert!(
        bundle.expires_at_unix > now + 80 * 86_400,
        "a fresh dev certificate runs ~90 days"
    );

    // It is good for the edge's own name.
    let edge_name = seed.edge_domain.clone();
    let verifier = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ders(&ca_pem).remove(0)).expect("CA");
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier")
    };
    let wildcard = ders(&bundle.cert_chain_pem);
    rustls::client::danger::ServerCertVerifier::verify_server_cert(
        &*verifier,
        &wildcard[0],
        &wildcard[1..],
        &ServerName::try_from(edge_name.clone()).expect("name"),
        &[],
        rustls::pki_types::UnixTime::now(),
    )
    .expect("the wildcard covers edge-{node}.test.example.net");

    // Foghorn's listeners present a leaf of their own from the same CA, not the wildcard whose
    // key every edge holds; it names Foghorn, not the edges.
    let (health, presented) = https_get(http, &ca_pem, FOGHORN_NAME, "/health")
        .await
        .expect("HTTPS on the HTTP port");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert_ne!(presented, wildcard);
    let own = std::fs::read_to_string(server.data.path().join("tls/cluster-foghorn.pem"))
        .expect("Foghorn's own leaf");
    assert_eq!(presented, ders(&own));
    assert!(
        https_get(http, &ca_pem, &edge_name, "/health")
            .await
            .is_err(),
        "Foghorn does not present itself as an edge"
    );

    // Plaintext still works on both ports: existing edges and MistServer are not cut off; such an
    // edge gets everything but the certificate, whose key would cross the wire in the clear.
    let mut plain = EdgeConn::open(
        &server.grpc_url(),
        register_with_credential(&seed.node_id, &seed.node_credential),
    )
    .await;
    let plain_seed = plain.seed().await;
    assert_eq!(plain_seed.node_id, seed.node_id);
    assert_eq!(plain_seed.tls, None);
    let body = reqwest::get(format!("http://{http}/health"))
        .await
        .expect("plaintext HTTP")
        .status();
    assert!(body.is_success());

    // A certificate is checked: another CA, or a name outside the cluster, is refused.
    let (other_ca, _) = test_ca("Someone else");
    assert!(https_get(http, &other_ca, FOGHORN_NAME, "/health")
        .await
        .is_err());
    assert!(
        https_get(http, &ca_pem, "foghorn.other.example.net", "/health")
            .await
            .is_err()
    );
    drop(edge);
}

/// A CA of the test's own, as an operator's would be: its PEM and its issuer.
fn test_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("CA");
    (cert.pem(), Issuer::new(params, key))
}

/// A leaf for the test cluster's wildcard, signed by `issuer`: (chain PEM, key PEM).
fn test_leaf(issuer: &Issuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["*.test.example.net".to_string()]).expect("names");
    let cert = params.signed_by(&key, issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

/// Replaces `path` as certbot would: a new file renamed over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_files_are_read_again_and_pushed_to_connected_edges() {
    let files = tempfile::tempdir().expect("tempdir");
    let (cert_path, key_path, ca_path) = (
        files.path().join("cluster.pem"),
        files.path().join("cluster.key"),
        files.path().join("ca.pem"),
    );
    let (ca_pem, issuer) = test_ca("Operator CA");
    let (first_cert, first_key) = test_leaf(&issuer);
    replace(&cert_path, &first_cert);
    replace(&key_path, &first_key);
    replace(&ca_path, &ca_pem);
    let paths = (cert_path.clone(), key_path.clone(), ca_path.clone());
    let server = TestServer::start_with(Db::Sqlite, move |c| {
        c.tls.cert_path = paths.0.display().to_string();
        c.tls.key_path = paths.1.display().to_string();
        c.tls.ca_path = paths.2.display().to_string();
        c.tls.check_interval = Duration::from_millis(100);
        c.tls.listeners = ListenerTls::Required;
    })
    .await;
    assert!(
        !server.data.path().join("tls").exists(),
        "no dev CA when the operator gives a certificate"
    );
    let (tenant, _op) = server.operator().await;
    let http = server.server().http_addr;
    let grpc = server.server().grpc_addr;

    // TLS only: a plaintext request is closed unanswered.
    let mut plain = TcpStream::connect(http).await.expect("tcp");
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer))
        .await
        .expect("closed at once");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    let token = server.enrollment_token(&tenant, 1).await;
    let channel = tls_channel(grpc, &ca_pem).await.expect("TLS gRPC");
    let mut edge = EdgeConn::over(channel, register_with_token(&token)).await;
    let seed = edge.seed().await;
    assert_eq!(
        seed.tls.as_ref().map(|t| t.cert_chain_pem.as_str()),
        Some(first_cert.as_str())
    );
    assert_eq!(seed.seed_version, 1);

    // The operator's ACME client renews: the connected edge gets a new seed with the new
    // certificate, and new TLS connections are served with it.
    let (second_cert, second_key) = test_leaf(&issuer);
    replace(&key_path, &second_key);
    replace(&cert_path, &second_cert);
    // The next frame is the new seed: nothing else goes to an edge that sends nothing.
    let pushed = edge.seed().await;
    assert_eq!(pushed.seed_version, 2);
    let pushed_tls = pushed.tls.expect("the new certificate");
    assert_eq!(pushed_tls.cert_chain_pem, second_cert);
    assert_eq!(pushed_tls.private_key_pem, second_key);
    assert!(
        pushed.node_credential.is_empty(),
        "the credential is sent once only"
    );
    let (_, presented) = https_get(http, &ca_pem, FOGHORN_NAME, "/health")
        .await
        .expect("HTTPS");
    assert_eq!(presented, ders(&second_cert));

    // A broken file changes nothing: the current certificate stays, no seed goes out.
    replace(&cert_path, "not a certificate");
    let quiet = tokio::time::timeout(Duration::from_millis(600), edge.recv()).await;
    assert!(quiet.is_err(), "no seed for a broken file: {quiet:?}");
    let (health, presented) = https_get(http, &ca_pem, FOGHORN_NAME, "/health")
        .await
        .expect("still serving");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert_eq!(presented, ders(&second_cert));
}

#[tokio::test]
async fn a_certificate_that_cannot_be_used_stops_startup() {
    let files = tempfile::tempdir().expect("tempdir");
    let (_, issuer) = test_ca("Operator CA");
    let (cert, _) = test_leaf(&issuer);
    let (_, other_key) = test_leaf(&issuer);
    let cert_path = files.path().join("cluster.pem");
    let key_path = files.path().join("cluster.key");
    replace(&cert_path, &cert);
    replace(&key_path, &other_key);
    let db = common::TestDb::new(Db::Sqlite).await;
    let mut config = foghorn::config::Config::default();
    config.server.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    config.server.data_dir = files.path().join("data");
    config.database.url = db.url.clone();
    config.tls.cert_path = cert_path.display().to_string();
    config.tls.key_path = key_path.display().to_string();
    let err = foghorn::app::start(config.clone())
        .await
        .err()
        .expect("a key of another certificate is refused");
    assert!(format!("{err:#}").contains("does not fit"), "{err:#}");

    config.tls.key_path = files.path().join("missing.key").display().to_string();
    let err = foghorn::app::start(config)
        .await
        .err()
        .expect("a missing key is refused");
    assert!(format!("{err:#}").contains("tls.key_path"), "{err:#}");
}

/// The cell secret the ACME tests' replicas share (it seals the stored keys).
const CELL_SECRET: &str = "fpc_0123456789abcdef0123456789abcdef0123456789abcdef";

/// A Foghorn taking its certificates from `pebble`, answering DNS-01 on `dns` with its built-in
/// server (`None`: through the RFC 2136 primary set by the caller), telling edges to trust
/// `trust` (pebble's root); renewal 10 s ahead (or a third of a short lifetime).
fn acme(c: &mut Config, pebble: &Pebble, dns: Option<SocketAddr>, trust: &Path) {
    c.tls.source = TlsSource::Acme;
    c.tls.acme.directory = pebble.directory.clone();
    c.tls.acme.ca_path = pebble.listener_ca_path.display().to_string();
    c.tls.acme.email = "ops@example.net".into();
    c.tls.ca_path = trust.display().to_string();
    c.tls.renew_before = Duration::from_secs(10);
    c.tls.check_interval = Duration::from_secs(1);
    if let Some(dns) = dns {
        c.dns.listen = dns.to_string();
    }
    c.dns.addresses = vec!["127.0.0.1".into()];
    c.federation.credential = CELL_SECRET.into();
}

/// The cluster's stored certificate once there is one other than `after` (by issue time).
async fn stored_after(
    server: &TestServer,
    after: Option<i64>,
    within: Duration,
) -> foghorn::registry::StoredCertificate {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(stored) = server
            .registry()
            .acme_certificate("test")
            .await
            .expect("registry")
        {
            if Some(stored.issued_at) != after {
                return stored;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new certificate within {within:?}; /ready says {}",
            server.ready().await["certificates"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leaf the listeners present for `FOGHORN_NAME`, verified against `root`.
async fn presented_leaf(addr: SocketAddr, root: &str) -> CertificateDer<'static> {
    let (health, presented) = https_get(addr, root, FOGHORN_NAME, "/health")
        .await
        .expect("an HTTPS handshake verified with pebble's root");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    presented[0].clone()
}

/// Waits until the listener at `addr` presents `leaf`.
async fn presents(addr: SocketAddr, root: &str, leaf: &CertificateDer<'static>) {
    eventually(
        Duration::from_secs(5),
        "the listener presents it",
        || async { presented_leaf(addr, root).await == *leaf },
    )
    .await;
}

/// The next ConfigSeed's certificate chain, waiting at most `within`.
async fn next_seed_chain(edge: &mut EdgeConn, within: Duration) -> String {
    match edge.recv_within(within).await {
        Ok(Some(foghorn::proto::ControlMessage {
            payload: Some(foghorn::proto::control_message::Payload::ConfigSeed(seed)),
        })) => seed.tls.expect("a certificate over TLS").cert_chain_pem,
        other => panic!("expected a ConfigSeed, got {other:?}"),
    }
}

/// ACME end to end against a real pebble resolving DNS-01 through Foghorn's built-in DNS: the
/// leader orders the cluster's certificate (apex and wildcard, both TXT values at once); the
/// listeners present it by SNI (verified with pebble's root), PreRegisterEdge and the ConfigSeed
/// carry it; a second replica installs the stored one at start without ordering; the leader
/// renews before expiry and the connected edge and the other replica get the new one; after the
/// leader stops, the replica that takes over orders nothing while the certificate is valid and
/// renews it when due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_certificates_are_issued_pushed_renewed_and_kept() {
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let pebble = Pebble::start(dns, Duration::from_secs(30), &[]).await;
    let (root, trust) = pebble.issuing_root().await;
    let redis = RedisProc::start().await;
    let url = redis.url();
    let started = std::time::Instant::now();
    let first = TestServer::start_with(Db::Postgres, |c| {
        acme(c, &pebble, Some(dns), &trust);
        c.redis.url = url;
    })
    .await;
    let issued = stored_after(&first, None, Duration::from_secs(60)).await;
    println!(
        "first issuance: {:?} from start to stored ({} bytes of chain)",
        started.elapsed(),
        issued.cert_chain_pem.len()
    );
    let leaf = ders(&issued.cert_chain_pem).remove(0);
    assert!(
        !issued.key_sealed.contains("PRIVATE KEY"),
        "the key is stored sealed"
    );
    assert!(
        first.ready().await["leader"] == true,
        "the first replica leads"
    );
    // The listeners present it, for the apex and any name of the zone.
    let http = first.server().http_addr;
    presents(http, &root, &leaf).await;
    let (_, apex) = https_get(http, &root, "test.example.net", "/health")
        .await
        .expect("the apex is named too");
    assert_eq!(apex[0], leaf);

    // PreRegisterEdge hands out pebble's root and the certificate; an edge enrolling over TLS
    // gets it in its ConfigSeed.
    let grpc = first.server().grpc_addr;
    let (tenant, _op) = first.operator().await;
    let token = first.enrollment_token(&tenant, 1).await;
    let pre = EdgeProvisioningClient::new(tls_channel(grpc, &root).await.expect("TLS"))
        .pre_register_edge(PreRegisterEdgeRequest {
            enrollment_token: token.clone(),
            external_ip: "127.0.0.1".into(),
            ..Default::default()
        })
        .await
        .expect("pre-registered")
        .into_inner();
    assert_eq!(pre.ca_bundle_pem, root);
    let pre_tls = pre.tls.expect("the certificate for the cert stage");
    assert_eq!(pre_tls.cert_chain_pem, issued.cert_chain_pem);
    let mut edge = EdgeConn::over(
        tls_channel(grpc, &root).await.expect("TLS"),
        register_with_token(&token),
    )
    .await;
    let seed = edge.seed().await;
    let bundle = seed.tls.expect("the certificate over TLS");
    assert_eq!(bundle.cert_chain_pem, issued.cert_chain_pem);
    assert_eq!(bundle.private_key_pem, pre_tls.private_key_pem);
    assert!(bundle.private_key_pem.contains("PRIVATE KEY"));

    // A second replica (its own data directory) installs the stored certificate before its
    // first connection and orders nothing.
    let second = first.replica(|c| c.dns.listen = "127.0.0.1:0".into()).await;
    assert_eq!(presented_leaf(second.server().http_addr, &root).await, leaf);
    assert_eq!(
        stored_after(&second, None, Duration::ZERO).await.issued_at,
        issued.issued_at
    );

    // What an operator watches.
    let ready = first.ready().await;
    let certificates = &ready["certificates"];
    assert_eq!(certificates["source"], "acme", "{ready}");
    assert_eq!(certificates["directory"], pebble.directory.as_str());
    // A 30-second certificate is always within 7 days of expiry.
    assert_eq!(certificates["attention"][0]["cluster"], "test", "{ready}");
    assert_eq!(certificates["attention"][0]["issued"], true, "{ready}");
    assert_eq!(
        certificates["attention"][0]["error"],
        serde_json::Value::Null
    );
    let metrics = reqwest::get(first.http("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(&format!(
            "foghorn_certificate_expiry_seconds{{cluster=\"test\"}} {}",
            issued.not_after
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("foghorn_certificate_renewal_failures_total 0"),
        "{metrics}"
    );

    // Renewal before expiry: the connected edge gets the new certificate in a new ConfigSeed,
    // the other replica presents it too.
    let renewed_chain = next_seed_chain(&mut edge, Duration::from_secs(40)).await;
    let now = foghorn::registry::now_ms() / 1000;
    assert!(now < issued.not_after, "renewed before the first expired");
    let renewed = stored_after(&first, Some(issued.issued_at), Duration::ZERO).await;
    assert_eq!(renewed_chain, renewed.cert_chain_pem);
    assert!(renewed.not_after > issued.not_after);
    let renewed_leaf = ders(&renewed.cert_chain_pem).remove(0);
    let second_http = second.server().http_addr;
    presents(second_http, &root, &renewed_leaf).await;

    // The leader goes (a third replica answers DNS on its address, where pebble asks); the
    // replica that takes over orders nothing while the certificate is valid, then renews it
    // when due, through the DNS of another replica.
    first.stop().await;
    let third_replica = second.replica(|c| c.dns.listen = dns.to_string()).await;
    eventually(Duration::from_secs(20), "another replica leads", || async {
        second.ready().await["leader"] == true || third_replica.ready().await["leader"] == true
    })
    .await;
    assert_eq!(
        stored_after(&second, None, Duration::ZERO).await.issued_at,
        renewed.issued_at,
        "no order while the certificate is valid and not due"
    );
    let third = stored_after(&second, Some(renewed.issued_at), Duration::from_secs(40)).await;
    assert!(third.not_after > renewed.not_after);
    presents(second_http, &root, &ders(&third.cert_chain_pem).remove(0)).await;
    third_replica.stop().await;
    second.stop().await;
}

/// A CA that refuses the renewal (pebble restarted with the zone on its blocklist: it also
/// forgot the account, which Foghorn makes again): the failure is logged with the CA's problem
/// document, counted, shown in /ready and retried later; the current certificate stays in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_a_refused_renewal_keeps_the_certificate_in_use() {
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let pebble = Pebble::start(dns, Duration::from_secs(30), &[]).await;
    let (root, trust) = pebble.issuing_root().await;
    let server = TestServer::start_with(Db::Sqlite, |c| acme(c, &pebble, Some(dns), &trust)).await;
    let issued = stored_after(&server, None, Duration::from_secs(60)).await;
    let leaf = ders(&issued.cert_chain_pem).remove(0);
    let http = server.server().http_addr;
    presents(http, &root, &leaf).await;

    let mut pebble = pebble;
    pebble.restart(&["test.example.net"]).await;
    eventually(Duration::from_secs(40), "the renewal fails", || async {
        let ready = server.ready().await;
        ready["certificates"]["attention"][0]["failures"].as_u64() >= Some(1)
    })
    .await;
    let ready = server.ready().await;
    let error = ready["certificates"]["attention"][0]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("an error in {ready}"))
        .to_string();
    assert!(
        error.contains("rejectedIdentifier") || error.contains("blocked"),
        "the CA's problem document: {error}\npebble: {}",
        pebble.log()
    );
    let metrics = reqwest::get(server.http("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("foghorn_certificate_renewal_failures_total 1"),
        "{metrics}"
    );
    // Nothing half-installed: the stored and presented certificate are the first one, and the
    // challenge values are gone.
    let stored = stored_after(&server, None, Duration::ZERO).await;
    assert_eq!(stored.issued_at, issued.issued_at);
    assert_eq!(presented_leaf(http, &root).await, leaf);
    assert!(server
        .registry()
        .acme_challenges()
        .await
        .expect("registry")
        .is_empty());
    server.stop().await;
}

/// DNS-01 through RFC 2136: pebble asks a real BIND 9, to which the leader publishes the
/// challenge values with TSIG-signed updates (and removes them after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_through_rfc2136_to_bind() {
    let bind = Bind::start().await;
    let pebble = Pebble::start(bind.addr, Duration::from_secs(3600), &[]).await;
    let (root, trust) = pebble.issuing_root().await;
    let (primary, secret) = (bind.addr, bind.secret.clone());
    let server = TestServer::start_with(Db::Sqlite, |c| {
        acme(c, &pebble, None, &trust);
        c.dns.update_server = primary.to_string();
        c.dns.tsig_key_name = "foghorn".into();
        c.dns.tsig_secret = secret;
        c.dns.update_interval = Duration::from_secs(5);
    })
    .await;
    let issued = stored_after(&server, None, Duration::from_secs(60)).await;
    let leaf = ders(&issued.cert_chain_pem).remove(0);
    let http = server.server().http_addr;
    presents(http, &root, &leaf).await;
    eventually(
        Duration::from_secs(10),
        "the challenge values leave BIND",
        || async {
            ask(
                primary,
                "_acme-challenge.test.example.net.",
                hickory_proto::rr::RecordType::TXT,
            )
            .await
            .answers
            .is_empty()
        },
    )
    .await;
    assert_eq!(server.ready().await["dns_updates"], "ok");
    server.stop().await;
}
