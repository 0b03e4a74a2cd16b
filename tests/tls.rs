//! Whole-server tests of the cluster certificate: the dev CA on first start, the wildcard in every
//! ConfigSeed and in PreRegisterEdge, TLS and plaintext on the same listeners, operator files read
//! again and pushed to connected edges, and a TLS-only listener turning plaintext away.

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{register_with_credential, register_with_token, Db, EdgeConn, TestServer};
use foghorn::config::ListenerTls;
use foghorn::proto::edge_provisioning_client::EdgeProvisioningClient;
use foghorn::proto::PreRegisterEdgeRequest;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// The name every test connects as: covered by the cluster wildcard `*.test.example.net`.
const FOGHORN_NAME: &str = "foghorn.test.example.net";

fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

fn client_config(ca_pem: &str, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in ders(ca_pem) {
        roots.add(cert).expect("CA certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// `GET path` over HTTPS/1.1, trusting only `ca_pem` and checking the certificate against `name`.
/// Returns the whole response and the certificate chain the server presented.
async fn https_get(
    addr: SocketAddr,
    ca_pem: &str,
    name: &str,
    path: &str,
) -> std::io::Result<(String, Vec<CertificateDer<'static>>)> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(client_config(ca_pem, b"http/1.1"));
    let server_name = ServerName::try_from(name.to_string()).expect("a DNS name");
    let mut tls = connector.connect(server_name, tcp).await?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("a server certificate")
        .iter()
        .map(|c| c.clone().into_owned())
        .collect();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = Vec::new();
    // hyper closes without a TLS close_notify: what was read until then is the whole response.
    match tls.read_to_end(&mut response).await {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok((String::from_utf8_lossy(&response).into_owned(), presented))
}

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
