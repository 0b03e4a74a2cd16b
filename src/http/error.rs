//! ApiError as HTTP: every failure answers `{"error":{"code","message"}}` with the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api::ApiError;

impl ApiError {
    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Unavailable(_) | ApiError::NoEdge(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Foghorn's JSON error for any error answer that is not one yet (axum's 405 on a method
/// mismatch and its extractor refusals, rmcp's plain-text refusals): same status and headers
/// (`Allow` stays), the body becomes `{"error":{"code","message"}}`. A 4xx keeps its text as the
/// message when it is short plain text at hand; a 5xx gets a generic one (internals are logged
/// where they happen, never sent). Anything else passes untouched.
pub fn ensure_json(response: Response) -> Response {
    use axum::http::header;
    use futures_util::FutureExt as _;

    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let labelled_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let essence = v.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
        });
    if labelled_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Error bodies are in memory (axum's and rmcp's are); one poll reads them or gives up.
    let text = if status.is_client_error() {
        axum::body::to_bytes(body, 512)
            .now_or_never()
            .and_then(Result::ok)
            .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
            .map(|text| text.trim().to_string())
            .filter(|text| !text.is_empty())
    } else {
        None
    };
    let reason = status.canonical_reason().unwrap_or("error");
    let message = match (text, parts.headers.get(header::ALLOW)) {
        (Some(text), _) => text,
        (None, Some(allow)) => format!(
            "{reason}: use {}",
            allow.to_str().unwrap_or("another method")
        ),
        (None, None) => reason.to_string(),
    };
    let code = match status {
        StatusCode::SERVICE_UNAVAILABLE => "unavailable".to_string(),
        _ => reason.to_ascii_lowercase().replace([' ', '-'], "_"),
    };
    let body = json!({ "error": { "code": code, "message": message } }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = (self.status(), self.code());
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Edges report every few seconds; the registry usually recovers slower.
            let after = if code == "no_eligible_edge" { "2" } else { "5" };
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(after),
            );
        }
        response
    }
}
