//! MCP (Model Context Protocol) at `/mcp`, over streamable HTTP with the `rmcp` crate.
//!
//! Every request needs the same bearer token as the REST API: a middleware authenticates it and
//! puts the [`Principal`] in the request's extensions, which rmcp hands to each tool with the
//! HTTP request parts. Each tool calls the same [`crate::api`] function as its REST route, so
//! the rules are one code path. Failures come back as tool results with `isError` and the same
//! `{"error": {"code", "message"}}` body the REST API answers.
//!
//! The server is stateless (no MCP session is kept between requests), so any replica behind the
//! load balancer can answer any request.
//!
//! JSON-RPC is checked before rmcp sees a message ([`jsonrpc`]): the body is read bounded in size
//! and time like every body ([`super::body`]), a body that is not JSON is a parse error (-32700),
//! a message that is not JSON-RPC an invalid request (-32600), and params that do not fit the
//! method invalid params (-32602), each a JSON-RPC error response with HTTP 400 (rmcp would answer
//! such bodies with plain text). Tool arguments that do not fit the tool's schema are invalid
//! params too, with the API's error body as `data` ([`Parameters`]). Transport refusals (405, 406,
//! 415) are rmcp's, made the JSON error of DESIGN §6 by [`super::error::ensure_json`].

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::tool::{Extension, ToolCallContext, ToolRouter};
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool, tool_handler, tool_router, ErrorData, ServerHandler};
use serde::Serialize;

use super::ApiError;
use crate::api::{self, *};
use crate::registry::Principal;
use crate::state::AppState;

/// The MCP endpoint, authenticated like `/api/v1`.
pub fn router(state: AppState) -> Router<AppState> {
    let factory_state = state.clone();
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(state.config.server.max_body_bytes)
        .with_cancellation_token(state.shutdown.child_token())
        // Foghorn answers on public names (`foghorn.{cluster}.{root}`), and every request carries
        // a bearer token a DNS-rebinding page cannot attach, so the Host check protecting
        // unauthenticated local servers does not apply.
        .disable_allowed_hosts();
    let service = StreamableHttpService::new(
        move || Ok(Tools::new(factory_state.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(state.clone(), jsonrpc))
        .layer(axum::middleware::from_fn_with_state(state, authenticate))
}

/// Reads a POSTed JSON message and checks that it is JSON-RPC before rmcp parses it again; other
/// requests (methods and media types rmcp refuses without reading the body) go through as they
/// are.
async fn jsonrpc(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let is_json = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let essence = v.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
        });
    if req.method() != axum::http::Method::POST || !is_json {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match super::body::read(&parts.headers, body, &state).await {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    if let Err(refusal) = check_message(&bytes) {
        return refusal.into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// A JSON-RPC error response (HTTP 400: the message was not accepted).
struct RpcRefusal {
    id: serde_json::Value,
    code: rmcp::model::ErrorCode,
    message: String,
}

impl IntoResponse for RpcRefusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": self.id,
            "error": { "code": self.code.0, "message": self.message },
        });
        (axum::http::StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    }
}

/// Whether `bytes` is one JSON-RPC message rmcp can take; else the JSON-RPC error saying why.
fn check_message(bytes: &[u8]) -> Result<(), RpcRefusal> {
    use rmcp::model::{ClientJsonRpcMessage, ErrorCode};
    let Err(invalid) = serde_json::from_slice::<ClientJsonRpcMessage>(bytes) else {
        return Ok(());
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| RpcRefusal {
        id: serde_json::Value::Null,
        code: ErrorCode::PARSE_ERROR,
        message: format!("Parse error: {e}"),
    })?;
    let id = value
        .get("id")
        .filter(|id| id.is_string() || id.is_number())
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let is_call = value.get("jsonrpc").and_then(|v| v.as_str()) == Some("2.0")
        && value.get("method").is_some_and(|m| m.is_string());
    Err(if is_call {
        // A well-formed call of a method rmcp knows (unknown methods parse, and are answered
        // -32601 by rmcp) whose params do not fit it.
        RpcRefusal {
            id,
            code: ErrorCode::INVALID_PARAMS,
            message: format!("Invalid params: {invalid}"),
        }
    } else {
        RpcRefusal {
            id,
            code: ErrorCode::INVALID_REQUEST,
            message: "Invalid Request: expected one JSON-RPC 2.0 object with \"jsonrpc\": \"2.0\" \
                      and a method, or a response"
                .into(),
        }
    })
}

/// Refuses requests without a valid bearer token before rmcp sees them.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match super::auth::principal_from_headers(req.headers(), &state).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// A tool's arguments, deserialized like a REST body. rmcp's own `Parameters` answers arguments
/// that do not fit with a plain-text tool result; these are a JSON-RPC invalid-params error
/// (-32602) whose `data` is the API's error body (`bad_request`, naming the field). rmcp's
/// `#[tool]` macro finds the input schema by this type's name, which is why it is the same.
pub struct Parameters<T>(pub T);

impl<T: schemars::JsonSchema> schemars::JsonSchema for Parameters<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

impl<S, T: serde::de::DeserializeOwned> FromContextPart<ToolCallContext<'_, S>> for Parameters<T> {
    fn from_context_part(context: &mut ToolCallContext<'_, S>) -> Result<Self, ErrorData> {
        let arguments = serde_json::Value::Object(context.arguments.take().unwrap_or_default());
        serde_path_to_error::deserialize(arguments)
            .map(Parameters)
            .map_err(|e| {
                let at = e.path().to_string();
                let message = if at == "." || at.is_empty() {
                    format!("invalid arguments: {}", e.into_inner())
                } else {
                    format!("invalid arguments at {at}: {}", e.into_inner())
                };
                let body = ApiError::BadRequest(message.clone()).body();
                ErrorData::invalid_params(message, Some(body))
            })
    }
}

/// The tools, bound to one server's state.
#[derive(Clone)]
pub struct Tools {
    state: AppState,
    tool_router: ToolRouter<Tools>,
}

/// The request's HTTP parts, where [`authenticate`] left the caller.
type Parts = Extension<axum::http::request::Parts>;

fn caller(parts: &Parts) -> Result<&Principal, ErrorData> {
    parts
        .0
        .extensions
        .get::<Principal>()
        .ok_or_else(|| ErrorData::internal_error("request was not authenticated", None))
}

/// The tool result of an API call: its JSON, or the API error body flagged `isError`.
fn reply<T: Serialize>(result: Result<T, ApiError>) -> Result<CallToolResult, ErrorData> {
    match result {
        Ok(value) => {
            let value = serde_json::to_value(value)
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
            // Structured content must be an object; lists are wrapped.
            let value = if value.is_object() {
                value
            } else {
                serde_json::json!({ "items": value })
            };
            Ok(CallToolResult::structured(value))
        }
        Err(e) => Ok(CallToolResult::structured_error(e.body())),
    }
}

#[tool_router]
impl Tools {
    fn new(state: AppState) -> Self {
        Tools {
            state,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "List the clusters you can use or subscribe to, with region, tier, pricing, \
            whether approval is needed, your subscription status and live utilization \
            (bandwidth used / limit over healthy edges, edge count, viewers). Filter by \
            pricing_model, tier or region; page with cursor and limit."
    )]
    async fn browse_marketplace(
        &self,
        parts: Parts,
        Parameters(query): Parameters<MarketplaceQuery>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(api::browse_marketplace(&self.state, caller(&parts)?, query).await)
    }

    #[tool(
        description = "Subscribe to a cluster. Active at once unless the cluster requires \
            approval (then pending until its owner, or a platform operator for a platform \
            cluster, approves); an invite token activates at once. A rejected request stands: \
            asking again is refused, only an invite token helps."
    )]
    async fn subscribe_to_cluster(
        &self,
        parts: Parts,
        Parameters(input): Parameters<Subscribe>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(api::subscribe(&self.state, caller(&parts)?, input).await)
    }

    #[tool(
        description = "Make a cluster your preferred one: new streams get its ingest and playback \
            URLs. It must be a cluster you are actively subscribed to, own, or your official \
            cluster. cluster_id is required: null goes back to the official cluster."
    )]
    async fn set_preferred_cluster(
        &self,
        parts: Parts,
        Parameters(input): Parameters<SetPreferredCluster>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(api::set_preferred_cluster(&self.state, caller(&parts)?, input).await)
    }

    #[tool(
        description = "Create a private cluster for your own edges. Returns the cluster and a \
            first enrollment token (shown once) with the `frameworks edge provision` command."
    )]
    async fn create_private_cluster(
        &self,
        parts: Parts,
        Parameters(input): Parameters<CreatePrivateCluster>,
    ) -> Result<CallToolResult, ErrorData> {
        let near = super::viewer::Viewer::position_of(&self.state, &parts.0);
        reply(api::create_private_cluster(&self.state, caller(&parts)?, input, near).await)
    }

    #[tool(
        description = "Create an enrollment token (shown once) for a cluster you own, or, with an \
            operator token, a platform cluster: ttl like 30d, usage_limit, optional expected_cidr \
            the edges connect from."
    )]
    async fn create_enrollment_token(
        &self,
        parts: Parts,
        Parameters(input): Parameters<CreateEnrollmentToken>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(api::create_enrollment_token(&self.state, caller(&parts)?, input).await)
    }

    #[tool(
        description = "Ingest (RTMP, WHIP, SRT) and playback (HLS, DASH, WHEP) URLs of one of \
            your streams, or of all of them, for your preferred cluster and, when different, \
            your official cluster."
    )]
    async fn get_streaming_config(
        &self,
        parts: Parts,
        Parameters(query): Parameters<StreamingConfigQuery>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(api::streaming_config(&self.state, caller(&parts)?, query).await)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("foghorn", env!("CARGO_PKG_VERSION")))
            .with_instructions(
            "Foghorn: browse the cluster marketplace, subscribe, choose your preferred cluster, \
             create private clusters and enrollment tokens, and get streaming URLs.",
        )
    }
}
