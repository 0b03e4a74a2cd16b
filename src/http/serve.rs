//! The viewer/API listener: accepts connections and serves them with hyper (HTTP/1.1, and h2c
//! for clients that speak it).
//!
//! Each connection starts in the viewer lane ([`super::lane`]), which answers the plain HTTP/1.1
//! viewer redirects (`GET /play/{playback_id}/{proto}/...`, the one path that takes the whole
//! viewer load) without hyper, and hands the connection to hyper at the first request it does not
//! take. There each connection gets a [`Front`] service that knows the peer address. Viewer
//! redirects hyper serves (POST, HTTP/1.0, h2c) go straight to [`super::play::redirect`];
//! everything else goes through the axum router, with the peer as `ConnectInfo`.
//!
//! Every answer is the JSON error of DESIGN §6, also those made before Foghorn's handlers run:
//! hyper's own answers to heads it cannot parse or that break `server.max_header_bytes` /
//! `server.max_headers` are rewritten on the connection ([`super::wire`]), a URI over
//! `server.max_uri_bytes` is refused here, and whatever the router answers passes
//! [`super::error::ensure_json`]. The redirect path keeps its own, lower bounds (2 KiB of query
//! string, 256 bytes after the protocol) and pays for none of this.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cors::Grant;
use super::wire::{Answers, JsonAnswers};
use super::{lane, play, ApiError};
use crate::cell::Cell;
use crate::state::AppState;

/// The axum router of each served cluster: the home cluster's built at start, an assigned
/// cluster's at its first request hyper serves (most never get one: viewers' redirects do not
/// need it).
struct Routers {
    home: axum::Router,
    assigned: parking_lot::Mutex<HashMap<String, (AppState, axum::Router)>>,
}

impl Routers {
    fn new(cell: &Cell) -> Routers {
        Routers {
            home: super::router(cell.home().clone()),
            assigned: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The router serving `state`'s cluster.
    fn of(&self, cell: &Cell, state: &AppState) -> axum::Router {
        if state.same(cell.home()) {
            return self.home.clone();
        }
        let mut assigned = self.assigned.lock();
        let id = &state.config.cluster.id;
        if let Some((built_for, router)) = assigned.get(id) {
            if built_for.same(state) {
                return router.clone();
            }
        }
        // Routers of clusters no longer served (or served by a newer state) go.
        assigned.retain(|id, (built_for, _)| cell.get(id).is_some_and(|s| s.same(built_for)));
        let router = super::router(state.clone());
        assigned.insert(id.clone(), (state.clone(), router.clone()));
        router
    }
}

/// One connection's service.
#[derive(Clone)]
struct Front {
    cell: Arc<Cell>,
    routers: Arc<Routers>,
    peer: SocketAddr,
    /// Set by the first request whose head hyper parsed (see [`serve`]'s shutdown).
    asked: Arc<AtomicBool>,
}

/// The host a request names: its `Host` header, else the authority of an absolute-form target
/// (HTTP/2 sends `:authority`, which hyper puts there).
fn host<B>(req: &hyper::Request<B>) -> Option<&str> {
    req.headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// The length of a request's URI as sent (origin form, or absolute form through a proxy).
fn uri_len(uri: &hyper::Uri) -> usize {
    uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, str::len)
}

type Reply = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Reply;

    fn call(&self, req: hyper::Request<Incoming>) -> Reply {
        self.asked.store(true, Ordering::Relaxed);
        let state = self.cell.for_host(|| host(&req)).into_owned();
        let path = req.uri().path();
        let cors = Grant::of(&state.config, path, || {
            req.headers()
                .get(hyper::header::ORIGIN)
                .map(|o| o.as_bytes())
        });
        if req.method() == hyper::Method::OPTIONS && Grant::covers(&state.config, path) {
            let preflight = cors.preflight(path, req.headers());
            return Box::pin(async move { Ok(preflight) });
        }
        let with_cors = move |mut response: Response| {
            cors.apply(response.headers_mut());
            Ok(response)
        };
        if play::is_redirect_path(path) {
            let peer = self.peer;
            // The body is never read: a 307 makes the client send it again to the edge.
            let (parts, _body) = req.into_parts();
            return Box::pin(async move {
                with_cors(play::redirect(&state, peer, &parts).await.into_response())
            });
        }
        if uri_len(req.uri()) > state.config.server.max_uri_bytes {
            let refused = ApiError::UriTooLong(format!(
                "the request URI must be at most {} bytes",
                state.config.server.max_uri_bytes
            ));
            return Box::pin(async move { with_cors(refused.into_response()) });
        }
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let mut router = self.routers.of(&self.cell, &state);
        Box::pin(async move {
            let response = tower_service::Service::call(&mut router, req).await?;
            with_cors(super::error::ensure_json(response))
        })
    }
}

/// Serves `listener` until `shutdown`, then stops accepting, ends idle and stalled connections
/// at once and lets the requests being answered finish (the caller bounds how long). TLS and
/// plaintext as `tls.listeners` says.
///
/// hyper's graceful shutdown closes an HTTP/1 connection at once when it waits between requests,
/// and lets a request it already parsed finish; but a connection whose *first* request head is
/// still arriving counts as busy, and would hold the drain up until the head timeout (30 s). So
/// a connection that never got a whole request head to [`Front`] is dropped instead: it has
/// nothing being answered. Stalled bodies end through [`super::body::read`], which answers 503
/// when shutdown begins.
pub async fn serve(
    listener: TcpListener,
    cell: Arc<Cell>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let routers = Arc::new(Routers::new(&cell));
    let state = cell.home();
    let limits = &state.config.server;
    let mut builder = Builder::new(TokioExecutor::new());
    // A client that never finishes its request head is dropped (hyper's default: 30 s). hyper's
    // read buffer holds the whole head, so its size is the head limit (431 beyond it).
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    // Announced to clients, which then do not send more; h2 itself answers a bare 431 to one
    // that does (see the README).
    builder
        .http2()
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let answers = Arc::new(Answers::new(limits.max_header_bytes, limits.max_headers));
    let connections = TaskTracker::new();
    let lane_stop = lane::Stop::following(shutdown.clone());
    let tls = state.tls.clone();
    crate::tls::accept_loop(listener, tls, shutdown.clone(), |peer| {
        let asked = Arc::new(AtomicBool::new(false));
        let front = Front {
            cell: cell.clone(),
            routers: routers.clone(),
            peer,
            asked: asked.clone(),
        };
        let (builder, answers, stop) = (builder.clone(), answers.clone(), shutdown.clone());
        let lane_stop = lane_stop.clone();
        let tracked = connections.token();
        move |conn| async move {
            let _tracked = tracked;
            // The viewer lane answers redirects until the first request it does not take.
            let (conn, read) = match lane::serve(conn, &front.cell, peer, &asked, &lane_stop).await
            {
                lane::Outcome::Closed => return,
                lane::Outcome::Handoff(conn, read) => (conn, read),
            };
            let conn = builder
                .serve_connection(TokioIo::new(JsonAnswers::new(conn, read, answers)), front)
                .into_owned();
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = stop.cancelled() => {
                    if !asked.load(Ordering::Relaxed) {
                        return; // dropped: nothing of it is being answered
                    }
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::trace!(error = %e, "HTTP connection ended with an error");
            }
        }
    })
    .await;
    connections.close();
    connections.wait().await;
    Ok(())
}
