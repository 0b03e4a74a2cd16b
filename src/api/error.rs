//! The API's error: what went wrong, in words for the caller. The HTTP adapter maps each kind
//! to its status (in the HTTP adapter); the MCP tools send the same code and message.

use serde_json::json;

use crate::registry::RegistryError;

/// A failed API call. Internal details are logged, never sent.
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
    /// The request body did not arrive within `server.body_timeout`.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UriTooLong(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request line and headers are over `server.max_header_bytes` or `server.max_headers`.
    #[error("{0}")]
    HeadersTooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    /// No edge is eligible for this request right now (503, retry soon).
    #[error("{0}")]
    NoEdge(String),
}

impl ApiError {
    /// The stable machine-readable code, e.g. `not_found`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UriTooLong(_) => "uri_too_long",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::HeadersTooLarge(_) => "request_header_fields_too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::NoEdge(_) => "no_eligible_edge",
        }
    }

    /// The JSON body: `{"error": {"code", "message"}}`.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code(), "message": self.to_string() } })
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
