//! Router tests: the HTTP surface driven in process with `tower::ServiceExt::oneshot`, no socket,
//! against a real registry: authentication, body and id validation, and the OpenAPI document.

#[macro_use]
mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Db, TestServer};
use foghorn::registry::Role;
use serde_json::Value;
use tower::ServiceExt;

async fn send(server: &TestServer, req: Request<Body>) -> (StatusCode, Value) {
    let router = foghorn::http::router(server.server().state.clone());
    let res = router.oneshot(req).await.expect("infallible");
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, serde_json::from_slice(&bytes).expect("JSON body"))
}

async fn token(server: &TestServer) -> String {
    let tenant = server
        .registry()
        .create_tenant("Router", "test")
        .await
        .expect("tenant");
    server
        .registry()
        .create_api_token(&tenant.id, Role::Tenant)
        .await
        .expect("token")
        .1
}

async fn requests_are_validated_before_any_work(db: Db) {
    let server = TestServer::start(db).await;
    let token = token(&server).await;
    let auth = format!("Bearer {token}");
    let post = |path: &str, body: Body| {
        Request::post(format!("/api/v1{path}"))
            .header("authorization", auth.clone())
            .header("content-type", "application/json")
            .body(body)
            .expect("request")
    };

    let (status, body) = send(
        &server,
        Request::get("/api/v1/openapi.json")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["paths"]["/marketplace"]["get"].is_object());

    let (status, body) = send(
        &server,
        Request::get("/api/v1/streams")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );

    let (status, body) = send(&server, post("/streams", Body::from("{\"name\":"))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );
    let (status, body) = send(
        &server,
        post(
            "/streams",
            Body::from(format!("{{\"name\":\"{}\"}}", "x".repeat(100_000))),
        ),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let (status, _) = send(
        &server,
        post(
            "/subscriptions",
            Body::from("{\"cluster_id\":\"test\",\"x\":1}"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown field");
    let (status, body) = send(
        &server,
        Request::get("/api/v1/streams/%FF%FE")
            .header("authorization", auth.clone())
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = send(&server, post("/streams", Body::from("{\"name\":\"ok\"}"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server.stop().await;
}

on_both!(requests_are_validated_before_any_work);
