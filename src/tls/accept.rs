//! TLS and plaintext on the same port. A TLS client opens with a handshake record, whose first byte
//! (0x16) no HTTP/1 request line, HTTP/2 preface or gRPC client sends first; so each listener
//! peeks at one byte and either runs the TLS handshake or serves the connection as it is. Existing
//! plaintext clients (MistServer, Helmsman before it has the CA) keep working while new ones use
//! TLS, and `tls.listeners = "required"` turns plaintext away once every client speaks TLS.

use std::future::Future;
use std::io::{self, ErrorKind, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::Tls;
use crate::config::ListenerTls;

/// How long a new connection may take to send its first byte and finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// An accepted connection, encrypted or not.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the client spoke TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }
}

/// Tells TLS from plaintext on `tcp` and completes the TLS handshake. Errors: the client went
/// silent, closed before a byte, failed the handshake, or spoke plaintext where TLS is required.
pub async fn accept(tcp: TcpStream, tls: &Tls) -> io::Result<Conn> {
    let policy = tls.listeners();
    if policy == ListenerTls::Off {
        return Ok(Conn::Plain(tcp));
    }
    let timed_out = |_| io::Error::new(ErrorKind::TimedOut, "no TLS handshake in time");
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first))
        .await
        .map_err(timed_out)??;
    if n == 0 {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            "closed before sending anything",
        ));
    }
    if first[0] == TLS_HANDSHAKE {
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(tcp))
            .await
            .map_err(timed_out)??;
        return Ok(Conn::Tls(Box::new(stream)));
    }
    if policy == ListenerTls::Required {
        return Err(io::Error::new(
            ErrorKind::PermissionDenied,
            "plaintext connection on a listener that requires TLS",
        ));
    }
    Ok(Conn::Plain(tcp))
}

/// Accepts connections on `listener` until `shutdown`. For each, `each(peer)` (called here, in
/// accept order) gives what serves it; then in the connection's own task: TCP_NODELAY, [`accept`],
/// and serving. A slow or failed handshake holds up no other client.
pub async fn accept_loop<F, S, Fut>(
    listener: TcpListener,
    tls: Arc<Tls>,
    shutdown: CancellationToken,
    mut each: F,
) where
    F: FnMut(SocketAddr) -> S,
    S: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // One client gave up during the TCP handshake: nothing wrong with the listener.
                Err(e) if matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
                ) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: spinning on accept would not help.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Replies and control frames are small writes each; do not hold them back for an ACK.
        let _ = tcp.set_nodelay(true);
        let (tls, serve, stop) = (tls.clone(), each(peer), shutdown.clone());
        tokio::spawn(async move {
            // A client still silent or mid-handshake when shutdown starts is dropped: it has no
            // request to finish, and must not hold the drain up.
            let accepted = tokio::select! {
                accepted = accept(tcp, &tls) => accepted,
                () = stop.cancelled() => return,
            };
            match accepted {
                Ok(conn) => serve(conn).await,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "connection dropped before it was served")
                }
            }
        });
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
