//! The HTTP error type: every failure answers `{"error":{"code","message"}}` with the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::registry::RegistryError;

/// An HTTP failure. Internal details are logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    /// No edge is eligible for this request right now (503, retry soon).
    #[error("{0}")]
    NoEdge(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::NoEdge(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_eligible_edge"),
        }
    }
}

impl ApiError {
    /// The JSON body: `{"error": {"code", "message"}}`.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.parts().1, "message": self.to_string() } })
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            RegistryError::Conflict(m) => ApiError::Conflict(m),
            RegistryError::Invalid(m) => ApiError::BadRequest(m),
            RegistryError::Forbidden(m) => ApiError::Forbidden(m),
            other => {
                tracing::error!(error = %other, "registry error");
                ApiError::Unavailable("registry unavailable, retry later".into())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
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
