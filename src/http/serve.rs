//! The viewer/API listener: accepts connections and serves them with hyper (HTTP/1.1, and h2c
//! for clients that speak it).
//!
//! Each connection gets a [`Front`] service that knows the peer address. Viewer redirects
//! (`/play/{playback_id}/{proto}/...`, the one path that takes the whole viewer load) go straight
//! to [`super::play::redirect`]; everything else goes through the axum router, with the peer as
//! `ConnectInfo`. The redirect path so skips the router's per-request work (route lookup, path
//! parameters, extensions, body boxing), which is most of what separates it from a static reply.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::play;
use crate::app::AppState;

/// One connection's service.
#[derive(Clone)]
struct Front {
    state: AppState,
    router: axum::Router,
    peer: SocketAddr,
}

type Reply = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Reply;

    fn call(&self, req: hyper::Request<Incoming>) -> Reply {
        if play::is_redirect_path(req.uri().path()) {
            let (state, peer) = (self.state.clone(), self.peer);
            // The body is never read: a 307 makes the client send it again to the edge.
            let (parts, _body) = req.into_parts();
            return Box::pin(async move {
                Ok(play::redirect(&state, peer, &parts).await.into_response())
            });
        }
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let mut router = self.router.clone();
        Box::pin(async move { tower_service::Service::call(&mut router, req).await })
    }
}

/// Serves `listener` until `shutdown`, then stops accepting and lets open requests finish (the
/// caller bounds how long). TLS and plaintext as `tls.listeners` says.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = super::router(state.clone());
    let mut builder = Builder::new(TokioExecutor::new());
    // A client that never finishes its request head is dropped (hyper's default: 30 s).
    builder.http1().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let tls = state.tls.clone();
    crate::tls::accept_loop(listener, tls, shutdown, |peer| {
        let front = Front {
            state: state.clone(),
            router: router.clone(),
            peer,
        };
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        move |conn| async move {
            let conn = builder
                .serve_connection(TokioIo::new(conn), front)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::trace!(error = %e, "HTTP connection ended with an error");
            }
        }
    })
    .await;
    graceful.shutdown().await;
    Ok(())
}
