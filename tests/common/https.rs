//! HTTPS by hand for the tests: rustls clients trusting only a given CA.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The certificates of a PEM text.
pub fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

pub fn client_config(ca_pem: &str, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
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
pub async fn https_get(
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

/// A CA of the test's own, named `ca_name`, and a leaf it signed for `names`: the CA's PEM, the
/// leaf's PEM and the leaf's key PEM (for servers the tests start with TLS: pebble, Redis).
pub fn ca_and_leaf(ca_name: &str, names: &[&str]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("names")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf");
    (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
}
