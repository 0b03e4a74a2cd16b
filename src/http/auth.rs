//! Bearer-token extractors for the API.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::ApiError;
use crate::registry::Principal;
use crate::state::AppState;

/// Longest Authorization header value looked at; anything longer is not one of our tokens.
const MAX_AUTHORIZATION_BYTES: usize = 256;

/// A request authenticated with an operator or admin token.
#[derive(Debug, Clone)]
pub struct Operator(pub Principal);

async fn principal(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    principal_from_headers(&parts.headers, state).await
}

/// Authenticates the bearer token of a request; 401 when missing or invalid.
pub async fn principal_from_headers(
    headers: &axum::http::HeaderMap,
    state: &AppState,
) -> Result<Principal, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
    if header.len() > MAX_AUTHORIZATION_BYTES {
        return Err(ApiError::Unauthorized("invalid token".into()));
    }
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::Unauthorized("Authorization must be `Bearer <token>`".into()))?;
    state
        .registry
        .authenticate_api_token(token)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("invalid token".into()))
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let p = principal(parts, state).await?;
        crate::api::require_operator(&p)?;
        Ok(Operator(p))
    }
}
