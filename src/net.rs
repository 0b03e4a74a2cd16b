//! Small address helpers shared by every boundary that looks at a peer's IP.

use std::net::IpAddr;

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as dual-stack listeners report IPv4 peers) as
/// the IPv4 address it carries; any other address unchanged. Compare and store addresses in this
/// form so one client is one address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Connections a listener lets wait for `accept` (the kernel caps it at `net.core.somaxconn`,
/// 4096 on current Linux). tokio's default of 1,024 drops the SYNs of a reconnect storm, and
/// every dropped edge waits out a SYN retransmit (1 s, then 3 s, ...) before trying again.
pub const LISTEN_BACKLOG: u32 = 65_535;

/// A listener on `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (as `TcpListener::bind` sets
/// it), so a restarted Foghorn binds at once.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A gRPC endpoint for a client of Foghorn (`foghorn sim`, `frameworks`): over TLS for an
/// `https://` URL, trusting `ca_pem` when given, else the public web's roots; `tls_domain` is the
/// name to check the certificate against when the URL names an address.
pub fn grpc_endpoint(
    url: &str,
    ca_pem: Option<String>,
    tls_domain: Option<String>,
) -> anyhow::Result<tonic::transport::Endpoint> {
    use anyhow::Context as _;
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .with_context(|| format!("{url:?} is not a URL"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true);
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let tls = tonic::transport::ClientTlsConfig::new();
    let mut tls = match ca_pem {
        Some(pem) => tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        None => tls.with_webpki_roots(),
    };
    if let Some(domain) = tls_domain {
        tls = tls.domain_name(domain);
    }
    endpoint.tls_config(tls).context("TLS settings")
}

/// An error with its causes, outermost first, on one line: tonic's own text is often only
/// "transport error", and what went wrong (refused, reset, a TLS alert) is further down.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        next = cause.source();
    }
    text
}
