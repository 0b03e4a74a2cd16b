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
