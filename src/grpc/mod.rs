//! tonic adapters: the gRPC listener with HelmsmanControl, EdgeProvisioning, Federation,
//! `grpc.health.v1` and server reflection.

mod bounded;
mod codec;
mod convert;
pub mod federation;
mod helmsman;
mod provisioning;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cell::Cell;
use crate::proto::edge_provisioning_server::EdgeProvisioningServer;
use crate::proto::federation_server::FederationServer;
use crate::proto::helmsman_control_server::HelmsmanControlServer;
use crate::state::AppState;

pub use codec::CompactCodec;
pub use federation::{FederationService, GrpcPeerLink};
pub use helmsman::{EdgeLinks, HelmsmanService};
pub use provisioning::ProvisioningService;

pub use crate::edge::PROTOCOL_VERSION;

/// Serves gRPC on `listener` until `shutdown` fires and open streams have ended.
pub async fn serve(
    cell: Arc<Cell>,
    links: Arc<EdgeLinks>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<HelmsmanControlServer<HelmsmanService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");
    let state = cell.home().clone();
    let max_message = state.config.edges.max_message_bytes;
    let helmsman = HelmsmanControlServer::new(HelmsmanService::new(cell.clone(), links))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(4 * 1024 * 1024);

    health
        .set_serving::<EdgeProvisioningServer<ProvisioningService>>()
        .await;
    let provisioning = EdgeProvisioningServer::new(ProvisioningService::new(cell.clone()))
        .max_decoding_message_size(16 * 1024);

    health
        .set_serving::<FederationServer<FederationService>>()
        .await;
    let federation = FederationServer::new(FederationService::new(cell))
        .max_decoding_message_size(crate::wire::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::wire::MAX_MESSAGE_BYTES);

    let not_serving = health.clone();
    let shutdown_accept = shutdown.child_token();
    let stop = async move {
        shutdown.cancelled().await;
        not_serving
            .set_not_serving::<HelmsmanControlServer<HelmsmanService>>()
            .await;
        not_serving
            .set_not_serving::<EdgeProvisioningServer<ProvisioningService>>()
            .await;
        not_serving
            .set_not_serving::<FederationServer<FederationService>>()
            .await;
    };
    let (body_timeout, stopping) = (state.config.server.body_timeout, state.shutdown.clone());
    tonic::transport::Server::builder()
        .layer(tower::util::MapRequestLayer::new(move |request| {
            bounded::bound(request, body_timeout, &stopping)
        }))
        // Dead edges behind a silent network are noticed within ~20 s even between stats frames.
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(helmsman)
        .add_service(provisioning)
        .add_service(federation)
        .serve_with_incoming_shutdown(incoming(listener, state, shutdown_accept), stop)
        .await
}

/// The connections of `listener`, TLS or plaintext as `tls.listeners` says, each handed to tonic
/// once its handshake is done and its HTTP/2 preface arrived ([`Started`]). (tonic's own
/// `TcpIncoming` would neither tell TLS from plaintext nor set TCP_NODELAY on a listener bound by
/// the caller.)
fn incoming(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> impl tokio_stream::Stream<Item = std::io::Result<Started>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let background = state.background.clone();
    background.spawn(async move {
        let stop = shutdown.clone();
        let starting = shutdown.clone();
        let accepting = crate::tls::accept_loop(listener, state.tls.clone(), shutdown, |peer| {
            let (tx, starting) = (tx.clone(), starting.clone());
            move |conn| async move {
                let started = tokio::select! {
                    started = tokio::time::timeout(PREFACE_TIMEOUT, Started::read(conn)) => started,
                    // Nothing asked yet: dropped, not handed to tonic's drain.
                    () = starting.cancelled() => return,
                };
                match started {
                    Ok(Ok(started)) => {
                        let _ = tx.send(Ok(started)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "gRPC connection dropped before its preface")
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "gRPC connection sent no HTTP/2 preface in time")
                    }
                }
            }
        });
        tokio::select! {
            () = accepting => {}
            // tonic stopped taking connections.
            () = tx.closed() => stop.cancel(),
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The client connection preface of HTTP/2, which every gRPC client sends first.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a connection may take to send its preface once accepted (and through TLS).
const PREFACE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection whose HTTP/2 preface was read here, handed to tonic with the preface in front of
/// what follows. hyper's HTTP/2 server sets no limit on the time a client takes to send its
/// preface, and its graceful shutdown waits for a connection still in that handshake to finish
/// it: a half-sent preface would hold every shutdown up for the whole grace period. Read here,
/// the preface is bounded by [`PREFACE_TIMEOUT`], and a connection still sending it when
/// shutdown begins is dropped (it has asked nothing).
pub struct Started {
    conn: crate::tls::Conn,
    /// How many bytes of [`PREFACE`] tonic has not read yet.
    unread: usize,
}

impl Started {
    async fn read(mut conn: crate::tls::Conn) -> std::io::Result<Started> {
        use tokio::io::AsyncReadExt as _;
        let mut preface = [0u8; PREFACE.len()];
        conn.read_exact(&mut preface).await?;
        if &preface != PREFACE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not an HTTP/2 client preface",
            ));
        }
        Ok(Started {
            conn,
            unread: PREFACE.len(),
        })
    }
}

impl tokio::io::AsyncRead for Started {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.unread > 0 {
            let from = PREFACE.len() - this.unread;
            let n = this.unread.min(buf.remaining());
            buf.put_slice(&PREFACE[from..from + n]);
            this.unread -= n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.conn).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Started {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().conn).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().conn).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().conn).poll_shutdown(cx)
    }
}

/// What each request knows of its connection: where it comes from and whether it is encrypted.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnInfo {
    pub remote: Option<std::net::SocketAddr>,
    /// The client spoke TLS. Secrets that are not the client's own (the cluster's private key)
    /// only ever go out on such connections.
    pub tls: bool,
}

impl tonic::transport::server::Connected for Started {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            remote: self.conn.tcp().peer_addr().ok(),
            tls: self.conn.is_tls(),
        }
    }
}

/// The connection `request` came on (plaintext and unknown when not recorded).
fn conn_info<T>(request: &tonic::Request<T>) -> ConnInfo {
    request
        .extensions()
        .get::<ConnInfo>()
        .copied()
        .unwrap_or_default()
}
