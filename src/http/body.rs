//! Request bodies, read bounded in size and in time. Every handler that reads a body (the REST
//! API's JSON bodies, MCP messages) reads it through [`read`]; routes that read none pay nothing,
//! and hyper closes the connection behind a body left unread.
//!
//! - A `Content-Length` over `server.max_body_bytes` is refused (413) before a byte is read, so
//!   a client announcing a huge body learns at once, and a `100-continue` client sends nothing.
//! - A body still arriving `server.body_timeout` after Foghorn started reading it is cut (408),
//!   however it trickles: the deadline is for the whole body, not between chunks.
//! - A body still arriving when shutdown starts is cut (503, retry elsewhere): that request is
//!   not being answered yet, and waiting for a stalled client would hold the drain up.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use futures_util::StreamExt as _;

use super::ApiError;
use crate::state::AppState;

/// The whole body, at most `server.max_body_bytes`, within `server.body_timeout`.
pub async fn read(headers: &HeaderMap, body: Body, state: &AppState) -> Result<Bytes, ApiError> {
    let limits = &state.config.server;
    let max = limits.max_body_bytes;
    let too_large = || ApiError::PayloadTooLarge(format!("the body is larger than {max} bytes"));
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let collect = async {
        let mut chunks = body.into_data_stream();
        let mut whole: Vec<u8> = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk =
                chunk.map_err(|_| ApiError::BadRequest("the body could not be read".into()))?;
            if whole.len() + chunk.len() > max {
                return Err(too_large());
            }
            whole.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(whole))
    };
    let deadline = tokio::time::Instant::now() + limits.body_timeout;
    tokio::select! {
        // A body already complete is taken even when shutdown has begun.
        biased;
        read = tokio::time::timeout_at(deadline, collect) => read.unwrap_or_else(|_| {
            Err(ApiError::RequestTimeout(format!(
                "the body did not arrive within {}",
                humantime::format_duration(limits.body_timeout)
            )))
        }),
        () = state.shutdown.cancelled() => Err(ApiError::Unavailable(
            "this server is shutting down; send the request again".into(),
        )),
    }
}
