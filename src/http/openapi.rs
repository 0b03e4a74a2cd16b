//! A router that writes its own OpenAPI document: every `/api/v1` route is added through
//! [`Documented::route`], which registers the handler and describes the operation in one call, so
//! the document served at `/api/v1/openapi.json` cannot drift from the routes.
//!
//! Schemas come from the same schemars derives the MCP tools use, generated as JSON Schema 2020-12
//! (the dialect of OpenAPI 3.1) with definitions under `#/components/schemas`.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::state::AppState;

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token.
    Public,
    /// Any valid token; the operation acts on the token's tenant.
    Tenant,
    /// An operator or admin token.
    Operator,
}

/// The description of one operation.
#[derive(Debug, Clone)]
pub struct Op {
    pub method: Method,
    /// axum (and OpenAPI) path syntax, relative to `/api/v1`: `/clusters/{cluster_id}`.
    pub path: &'static str,
    pub id: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Status of a successful answer.
    pub status: u16,
    /// Query parameters: name and description.
    pub query: &'static [(&'static str, &'static str)],
    /// Another success status with the same answer (`200` when a create finds it done already).
    pub also: Option<u16>,
}

impl Op {
    pub fn new(
        method: Method,
        path: &'static str,
        id: &'static str,
        summary: &'static str,
        access: Access,
    ) -> Self {
        Op {
            method,
            path,
            id,
            summary,
            access,
            status: 200,
            query: &[],
            also: None,
        }
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn also(mut self, status: u16) -> Self {
        self.also = Some(status);
        self
    }

    pub fn query(mut self, query: &'static [(&'static str, &'static str)]) -> Self {
        self.query = query;
        self
    }
}

/// Marks an operation without a request body.
pub enum NoBody {}

/// The router under construction and its document.
pub struct Documented {
    router: Router<AppState>,
    paths: Map<String, Value>,
    schemas: SchemaGenerator,
}

impl Default for Documented {
    fn default() -> Self {
        let settings = SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        });
        Documented {
            router: Router::new(),
            paths: Map::new(),
            schemas: settings.into_generator(),
        }
    }
}

impl Documented {
    /// Adds `handler` at `op.method op.path`, documented with request body `B` (or [`NoBody`])
    /// and answer `R`.
    pub fn route<B, R, H, T>(mut self, op: Op, handler: H) -> Self
    where
        B: MaybeSchema,
        R: JsonSchema,
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(op.method.clone()).expect("a standard HTTP method");
        self.router = self.router.route(op.path, on(filter, handler));
        let body = B::schema(&mut self.schemas);
        let answer = self.schemas.subschema_for::<R>();
        let operation = describe(&op, body, answer);
        let methods = self
            .paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        methods[op.method.as_str().to_ascii_lowercase()] = operation;
        self
    }

    /// The router, with `GET /openapi.json` serving the document.
    pub fn finish(mut self) -> Router<AppState> {
        let mut schemas = self.schemas.take_definitions(true);
        schemas.insert(
            "Error".into(),
            json!({
                "type": "object",
                "required": ["error"],
                "properties": { "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string" },
                        "message": { "type": "string" }
                    }
                }}
            }),
        );
        let document = json!({
            "openapi": "3.1.0",
            "info": {
                "title": "Foghorn API",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "Marketplace, subscriptions, preferred cluster, private clusters, \
                    enrollment tokens and streams of a Foghorn cluster. Every error answers \
                    {\"error\": {\"code\", \"message\"}}."
            },
            "servers": [{ "url": "/api/v1" }],
            "security": [{ "bearer": [] }],
            "components": {
                "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
                "schemas": schemas,
            },
            "paths": self.paths,
        });
        let document = std::sync::Arc::new(document);
        self.router.route(
            "/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
    }
}

/// A request body type, or [`NoBody`].
pub trait MaybeSchema {
    fn schema(generator: &mut SchemaGenerator) -> Option<Value>;
}

impl MaybeSchema for NoBody {
    fn schema(_: &mut SchemaGenerator) -> Option<Value> {
        None
    }
}

impl<T: JsonSchema> MaybeSchema for T {
    fn schema(generator: &mut SchemaGenerator) -> Option<Value> {
        Some(generator.subschema_for::<T>().to_value())
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn describe(op: &Op, body: Option<Value>, answer: schemars::Schema) -> Value {
    let answer = answer.to_value();
    let mut parameters: Vec<Value> = path_params(op.path)
        .map(|name| {
            json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
        })
        .collect();
    parameters.extend(op.query.iter().map(|(name, description)| {
        json!({
            "name": name, "in": "query", "required": false,
            "description": description, "schema": { "type": "string" }
        })
    }));
    let mut responses = Map::new();
    responses.insert(
        op.status.to_string(),
        json!({
            "description": "success",
            "content": { "application/json": { "schema": answer.clone() } }
        }),
    );
    responses.insert(
        "400".into(),
        error_response("malformed input: bad JSON, unknown field, bad id"),
    );
    if op.access != Access::Public {
        responses.insert("401".into(), error_response("missing or invalid token"));
        responses.insert("403".into(), error_response("not allowed for this token"));
    }
    responses.insert(
        "404".into(),
        error_response("not found, or not visible to the caller"),
    );
    if op.method != Method::GET {
        responses.insert(
            "409".into(),
            error_response("conflicts with the current state (already exists, not pending, not allowed as preferred, ...)"),
        );
    }
    if let Some(also) = op.also {
        responses.insert(
            also.to_string(),
            json!({
                "description": "success, nothing changed",
                "content": { "application/json": { "schema": answer.clone() } }
            }),
        );
    }
    responses.insert(
        "503".into(),
        error_response("registry unavailable; retry later"),
    );
    let mut operation = json!({
        "operationId": op.id,
        "summary": op.summary,
        "parameters": parameters,
        "responses": responses,
        "x-access": match op.access {
            Access::Public => "public",
            Access::Tenant => "tenant",
            Access::Operator => "operator",
        },
    });
    if op.access == Access::Public {
        operation["security"] = json!([]);
    }
    if let Some(schema) = body {
        operation["responses"]["408"] =
            error_response("body did not arrive within server.body_timeout");
        operation["responses"]["413"] = error_response("body larger than server.max_body_bytes");
        operation["responses"]["415"] = error_response("body is not application/json");
        operation["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": schema } }
        });
    }
    operation
}

/// The `{name}` segments of a path.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_parameters_are_found() {
        let names: Vec<_> =
            super::path_params("/clusters/{cluster_id}/invites/{invite_id}").collect();
        assert_eq!(names, ["cluster_id", "invite_id"]);
    }
}
