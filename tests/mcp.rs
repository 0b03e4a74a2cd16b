//! MCP at `/mcp` with a real MCP client (rmcp over streamable HTTP): the six tools, their input
//! schemas, the same rules as REST, tenant isolation and authentication.

#[macro_use]
mod common;

use common::{Db, TestServer};
use foghorn::registry::{NewCluster, Role};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

type Client = RunningService<RoleClient, ()>;

async fn connect(server: &TestServer, token: &str) -> Result<Client, String> {
    let config =
        StreamableHttpClientTransportConfig::with_uri(server.http("/mcp")).auth_header(token);
    let transport = StreamableHttpClientTransport::from_config(config);
    ().serve(transport).await.map_err(|e| e.to_string())
}

/// Calls `tool` with `args`; the structured answer and whether it is an error.
async fn call(client: &Client, tool: &'static str, args: Value) -> (bool, Value) {
    let args = args.as_object().expect("object arguments").clone();
    let result: CallToolResult = client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let value = result
        .structured_content
        .clone()
        .unwrap_or_else(|| panic!("{tool}: structured content in {result:?}"));
    (result.is_error == Some(true), value)
}

async fn tenant_token(server: &TestServer, name: &str) -> String {
    let registry = server.registry();
    let tenant = registry.create_tenant(name, "test").await.expect("tenant");
    registry
        .create_api_token(&tenant.id, Role::Tenant)
        .await
        .expect("token")
        .1
}

async fn tools_follow_the_rest_rules(db: Db) {
    let server = TestServer::start(db).await;
    server
        .registry()
        .create_cluster(&NewCluster::platform("eu-west", "EU West"))
        .await
        .expect("cluster");
    let a_token = tenant_token(&server, "A").await;
    let b_token = tenant_token(&server, "B").await;
    let a = connect(&server, &a_token).await.expect("connect");

    // Six tools, each with an object input schema.
    let tools = a.list_all_tools().await.expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "browse_marketplace",
            "create_enrollment_token",
            "create_private_cluster",
            "get_streaming_config",
            "set_preferred_cluster",
            "subscribe_to_cluster",
        ]
    );
    for tool in &tools {
        assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
        assert!(tool.description.as_deref().is_some_and(|d| d.len() > 20));
    }
    let subscribe = tools
        .iter()
        .find(|t| t.name == "subscribe_to_cluster")
        .expect("subscribe tool");
    assert_eq!(subscribe.input_schema["required"], json!(["cluster_id"]));

    // Browse, subscribe, prefer: the same answers as REST.
    let (error, page) = call(&a, "browse_marketplace", json!({ "region": "nowhere" })).await;
    assert!(!error);
    assert_eq!(page["clusters"], json!([]), "no cluster is in that region");
    let (error, page) = call(&a, "browse_marketplace", json!({})).await;
    assert!(!error, "{page}");
    let listed: Vec<&str> = page["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .map(|c| c["id"].as_str().expect("id"))
        .collect();
    assert_eq!(listed, ["eu-west", "test"]);

    let (error, refused) = call(
        &a,
        "set_preferred_cluster",
        json!({ "cluster_id": "eu-west" }),
    )
    .await;
    assert!(error, "not subscribed yet: {refused}");
    assert_eq!(refused["error"]["code"], "conflict");
    let (error, sub) = call(
        &a,
        "subscribe_to_cluster",
        json!({ "cluster_id": "eu-west" }),
    )
    .await;
    assert!(!error, "{sub}");
    assert_eq!(sub["status"], "active");
    let (error, network) = call(
        &a,
        "set_preferred_cluster",
        json!({ "cluster_id": "eu-west" }),
    )
    .await;
    assert!(!error, "{network}");
    assert_eq!(network["preferred_cluster_id"], "eu-west");

    // Going back to the official cluster takes an explicit null: `{}` (or no arguments) is
    // refused and changes nothing.
    let prefer = tools
        .iter()
        .find(|t| t.name == "set_preferred_cluster")
        .expect("set_preferred_cluster tool");
    assert_eq!(
        prefer.input_schema.get("required"),
        Some(&json!(["cluster_id"])),
        "{:?}",
        prefer.input_schema
    );
    for arguments in [Some(json!({})), None] {
        let mut request = CallToolRequestParams::new("set_preferred_cluster");
        if let Some(args) = arguments {
            request = request.with_arguments(args.as_object().expect("object").clone());
        }
        // Arguments that do not fit the tool's schema are invalid params (-32602).
        match a.call_tool(request).await {
            Err(rmcp::ServiceError::McpError(e)) => {
                assert_eq!(e.code, rmcp::model::ErrorCode::INVALID_PARAMS, "{e:?}");
                assert!(e.message.contains("missing field `cluster_id`"), "{e:?}");
            }
            other => panic!("expected invalid params, got {other:?}"),
        }
    }
    let network = reqwest::Client::new()
        .get(server.http("/api/v1/tenant/network"))
        .bearer_auth(&a_token)
        .send()
        .await
        .expect("network")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(network["preferred_cluster_id"], "eu-west", "unchanged");
    let (error, network) = call(&a, "set_preferred_cluster", json!({ "cluster_id": null })).await;
    assert!(!error, "{network}");
    assert_eq!(network["preferred_cluster_id"], "test");
    let (error, network) = call(
        &a,
        "set_preferred_cluster",
        json!({ "cluster_id": "eu-west" }),
    )
    .await;
    assert!(!error, "{network}");

    // Private cluster and an enrollment token for it.
    let (error, created) = call(&a, "create_private_cluster", json!({ "name": "A Lab" })).await;
    assert!(!error, "{created}");
    let private = created["cluster"]["id"].as_str().expect("id").to_string();
    assert!(created["enrollment_token"]["token"]
        .as_str()
        .expect("token")
        .starts_with("enroll_"));
    let (error, token) = call(
        &a,
        "create_enrollment_token",
        json!({ "cluster_id": private, "ttl": "2h", "usage_limit": 3 }),
    )
    .await;
    assert!(!error, "{token}");
    assert_eq!(token["usage_limit"], 3);

    // Streaming config follows the preferred cluster.
    let created = reqwest::Client::new()
        .post(server.http("/api/v1/streams"))
        .bearer_auth(&a_token)
        .json(&json!({ "name": "main" }))
        .send()
        .await
        .expect("create stream")
        .json::<Value>()
        .await
        .expect("json");
    let stream_id = created["id"].as_str().expect("id").to_string();
    let (error, config) = call(
        &a,
        "get_streaming_config",
        json!({ "stream_id": stream_id }),
    )
    .await;
    assert!(!error, "{config}");
    let stream = &config["items"][0];
    assert_eq!(stream["ingest"][0]["cluster_id"], "eu-west");
    assert_eq!(stream["ingest"][1]["cluster_id"], "test");
    assert!(stream.get("stream_key").is_none());
    let (_, all) = call(&a, "get_streaming_config", json!({})).await;
    assert_eq!(all["items"].as_array().expect("items").len(), 1);

    // Bad input: a JSON error result or a protocol error, never a change.
    let (error, bad) = call(
        &a,
        "subscribe_to_cluster",
        json!({ "cluster_id": "NOT VALID" }),
    )
    .await;
    assert!(error);
    assert_eq!(bad["error"]["code"], "bad_request");
    let unknown_field = a
        .call_tool(
            CallToolRequestParams::new("subscribe_to_cluster").with_arguments(
                json!({ "cluster_id": "eu-west", "owner": "me" })
                    .as_object()
                    .expect("object")
                    .clone(),
            ),
        )
        .await;
    let refused = unknown_field.expect_err("unknown fields are invalid params");
    let rmcp::ServiceError::McpError(refused) = refused else {
        panic!("expected a JSON-RPC error, got {refused:?}");
    };
    assert_eq!(refused.code, rmcp::model::ErrorCode::INVALID_PARAMS);
    assert!(
        refused.message.contains("unknown field `owner`"),
        "{refused:?}"
    );
    assert_eq!(
        refused.data.as_ref().map(|d| &d["error"]["code"]),
        Some(&json!("bad_request"))
    );

    // Tenant B sees none of A's things.
    let b = connect(&server, &b_token).await.expect("connect B");
    let (error, answer) = call(
        &b,
        "get_streaming_config",
        json!({ "stream_id": stream_id }),
    )
    .await;
    assert!(error);
    assert_eq!(answer["error"]["code"], "not_found");
    let (error, answer) = call(
        &b,
        "create_enrollment_token",
        json!({ "cluster_id": private }),
    )
    .await;
    assert!(error);
    assert_eq!(answer["error"]["code"], "not_found");
    let (error, answer) = call(&b, "subscribe_to_cluster", json!({ "cluster_id": private })).await;
    assert!(error);
    assert_eq!(answer["error"]["code"], "not_found");
    let (_, all) = call(&b, "get_streaming_config", json!({})).await;
    assert_eq!(all["items"], json!([]));

    // No token, or a wrong one: no session at all.
    assert!(connect(&server, "fhk_wrong").await.is_err());
    let res = reqwest::Client::new()
        .post(server.http("/mcp"))
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "unauthorized");

    a.cancel().await.ok();
    b.cancel().await.ok();
    server.stop().await;
}

/// POSTs `body` to `/mcp` as a raw JSON-RPC client would; the status and the body as JSON (the
/// test fails on a body that is not JSON).
async fn post_raw(
    server: &TestServer,
    token: &str,
    content_type: &str,
    accept: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(server.http("/mcp"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .header("accept", accept)
        .header("mcp-protocol-version", "2025-06-18")
        .body(body)
        .send()
        .await
        .expect("POST /mcp");
    let status = res.status().as_u16();
    let kind = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = res.text().await.expect("body");
    assert!(
        kind.starts_with("application/json"),
        "{status} labelled {kind:?}: {text}"
    );
    let value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
    (status, value)
}

const JSON: &str = "application/json";
const BOTH: &str = "application/json, text/event-stream";

/// `/mcp` speaks JSON-RPC properly, and everything that is not JSON-RPC is the JSON error of
/// DESIGN §6: a body that is not JSON is -32700, a message that is not JSON-RPC -32600, params
/// that do not fit the method or the tool -32602; wrong methods, media types and sizes are
/// 405/406/415/413 with `{"error":{"code","message"}}`; a tool's failure is its error body.
async fn protocol_errors_are_json(db: Db) {
    let server = TestServer::start(db).await;
    let token = tenant_token(&server, "A").await;

    // JSON-RPC errors.
    let rpc = |id: Value, method: &str, params: Value| {
        json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }).to_string()
    };
    let (status, body) = post_raw(&server, &token, JSON, BOTH, "{not json").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], Value::Null);
    assert_eq!(body["error"]["code"], -32700, "{body}");
    for not_rpc in [
        "[]",
        "5",
        r#"{"jsonrpc":"2.0","id":1}"#,
        r#"{"id":1,"method":"ping"}"#,
    ] {
        let (status, body) = post_raw(&server, &token, JSON, BOTH, not_rpc).await;
        assert_eq!(status, 400, "{not_rpc}: {body}");
        assert_eq!(body["error"]["code"], -32600, "{not_rpc}: {body}");
    }
    let (status, body) = post_raw(
        &server,
        &token,
        JSON,
        BOTH,
        rpc(json!(7), "tools/call", json!("not an object")),
    )
    .await;
    assert_eq!(body["error"]["code"], -32602, "{status}: {body}");
    assert_eq!(body["id"], 7, "{body}");
    let (_, body) = post_raw(
        &server,
        &token,
        JSON,
        BOTH,
        rpc(json!(9), "no/such", json!({})),
    )
    .await;
    assert_eq!(body["error"]["code"], -32601, "{body}");
    let call = |tool: &str, args: Value| {
        rpc(
            json!(8),
            "tools/call",
            json!({ "name": tool, "arguments": args }),
        )
    };
    // Arguments that do not fit the tool's schema: invalid params, with the API's error body.
    let (status, body) = post_raw(
        &server,
        &token,
        JSON,
        BOTH,
        call("subscribe_to_cluster", json!({ "cluster_id": 5 })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["error"]["code"], -32602, "{body}");
    assert_eq!(
        body["error"]["data"]["error"]["code"], "bad_request",
        "{body}"
    );
    let (_, body) = post_raw(
        &server,
        &token,
        JSON,
        BOTH,
        call(
            "subscribe_to_cluster",
            json!({ "cluster_id": "test", "owner": "me" }),
        ),
    )
    .await;
    assert_eq!(body["error"]["code"], -32602, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown field `owner`")),
        "{body}"
    );
    // A tool that fails: a result flagged isError whose content is the error body, as JSON.
    let (status, body) = post_raw(
        &server,
        &token,
        JSON,
        BOTH,
        call("subscribe_to_cluster", json!({ "cluster_id": "no-such" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let result = &body["result"];
    assert_eq!(result["isError"], true, "{body}");
    assert_eq!(result["structuredContent"]["error"]["code"], "not_found");
    for item in result["content"].as_array().expect("content") {
        let text = item["text"].as_str().expect("text content");
        let parsed: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("tool error content is not JSON ({e}): {text}"));
        assert_eq!(parsed["error"]["code"], "not_found");
    }

    // Transport refusals: the JSON error of DESIGN §6.
    let (status, body) = post_raw(
        &server,
        &token,
        JSON,
        JSON,
        rpc(json!(1), "ping", json!({})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (406, Some("not_acceptable")),
        "{body}"
    );
    let (status, body) = post_raw(&server, &token, "text/plain", BOTH, "hello").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_media_type")),
        "{body}"
    );
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(server.server().state.config.server.max_body_bytes)
    );
    let (status, body) = post_raw(&server, &token, JSON, BOTH, huge).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    for method in [
        reqwest::Method::GET,
        reqwest::Method::DELETE,
        reqwest::Method::PUT,
    ] {
        let res = reqwest::Client::new()
            .request(method.clone(), server.http("/mcp"))
            .bearer_auth(&token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 405, "{method}");
        assert_eq!(
            res.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some("POST")
        );
        let body: Value = res.json().await.expect("JSON error");
        assert_eq!(body["error"]["code"], "method_not_allowed", "{method}");
    }
    server.stop().await;
}

on_both!(tools_follow_the_rest_rules, protocol_errors_are_json);
