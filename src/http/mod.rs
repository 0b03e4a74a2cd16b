//! axum routers: health, readiness, metrics, viewers, MistServer, the REST API under `/api/v1`,
//! MCP at `/mcp` and the dashboard at `/ui`.

mod auth;
mod body;
mod cors;
mod error;
mod health;
mod lane;
mod mcp;
mod mist;
mod openapi;
mod params;
mod play;
mod serve;
mod tenant;
mod ui;
mod viewer;
mod wire;

use axum::extract::DefaultBodyLimit;
use axum::Router;

use crate::state::AppState;

pub use crate::api::ApiError;
pub use auth::Operator;
pub use serve::serve;

/// The whole HTTP surface of one Foghorn.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.server.max_body_bytes;
    Router::new()
        .merge(health::router())
        .merge(play::router())
        .merge(mist::router())
        .nest("/api/v1", tenant::router())
        .merge(mcp::router(state.clone()))
        .merge(ui::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Whether `bytes` may be sent as a header value as they are: visible ASCII, space and tab (what
/// `HeaderValue::to_str` accepts).
fn header_text(bytes: &[u8]) -> bool {
    // A fold without early exit, which the compiler vectorises: a redirect's whole `Location`
    // goes through here on the viewer's hot path.
    bytes.iter().fold(true, |ok, &b| {
        ok & ((b'\x20'..=b'\x7e').contains(&b) | (b == b'\t'))
    })
}
