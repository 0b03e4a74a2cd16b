//! Whole-server tests of the HTTP surface and the gRPC health/reflection services.

mod common;

use common::{Db, TestServer};
use foghorn::registry::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_metrics_and_json_errors() {
    let server = TestServer::start(Db::Postgres).await;
    let health = reqwest::get(server.http("/health")).await.expect("health");
    assert_eq!(health.status(), 200);

    let ready = reqwest::get(server.http("/ready")).await.expect("ready");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["ready"], true);
    assert_eq!(body["registry"], "ok");
    assert_eq!(body["redis"], "not configured");

    let metrics = reqwest::get(server.http("/metrics"))
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    assert!(text.contains("foghorn_edges_connected 0"), "{text}");
    assert!(text.contains("foghorn_edge_sessions_total 0"), "{text}");

    let missing = reqwest::get(server.http("/no/such/thing"))
        .await
        .expect("404");
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_endpoint_needs_an_operator_token() {
    let server = TestServer::start(Db::Sqlite).await;
    let (tenant, operator) = server.operator().await;
    let (_, tenant_token) = server
        .registry()
        .create_api_token(&tenant, Role::Tenant)
        .await
        .expect("token");
    let client = reqwest::Client::new();
    let url = server.http("/api/v1/edges");

    let none = client.get(&url).send().await.expect("send");
    assert_eq!(none.status(), 401);
    let body: serde_json::Value = none.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unauthorized");

    for bad in ["fhk_nope", "Basic abc", &"x".repeat(10_000)] {
        let res = client
            .get(&url)
            .header("authorization", format!("Bearer {bad}"))
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 401, "{bad:.20}");
    }
    let res = client
        .get(&url)
        .bearer_auth(&tenant_token)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 403);
    let res = client
        .get(&url)
        .bearer_auth(&operator)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["cluster_id"], "test");
    assert_eq!(body["edges"], serde_json::json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_state_is_reported_by_ready_without_making_it_unready() {
    let server = TestServer::start_with(Db::Sqlite, |c| c.redis.url = common::redis_url()).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let body: serde_json::Value = reqwest::get(server.http("/ready"))
            .await
            .expect("ready")
            .json()
            .await
            .expect("json");
        if body["redis"] == "ok" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis never ok: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await;

    // Nothing listens on port 1 of loopback: Redis is down, the replica still serves.
    let server =
        TestServer::start_with(Db::Sqlite, |c| c.redis.url = "redis://127.0.0.1:1/".into()).await;
    let res = reqwest::get(server.http("/ready")).await.expect("ready");
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["redis"], "degraded");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_and_reflection_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };

    let server = TestServer::start(Db::Sqlite).await;
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "foghorn.v1.HelmsmanControl".into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list, got {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"foghorn.v1.HelmsmanControl".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    server.stop().await;
}

/// Every answer is the JSON error of DESIGN §6, also those made before Foghorn's handlers run:
/// requests hyper cannot parse or that break the head limits, method mismatches, extractor
/// refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_the_json_error() {
    let server = TestServer::start(Db::Sqlite).await;
    let addr = server.server().http_addr;
    let big = "a".repeat(20 * 1024);
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let long_uri = format!("/api/v1/marketplace?cursor={}", "a".repeat(10 * 1024));
    let cases: Vec<(String, Vec<u8>, u16)> = vec![
        (
            "garbage request line".into(),
            b"GARBAGE\r\n\r\n".to_vec(),
            400,
        ),
        (
            "header line without a colon".into(),
            b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n".to_vec(),
            400,
        ),
        (
            "unknown HTTP version".into(),
            b"GET /health HTTP/7.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bad Content-Length".into(),
            b"POST /api/v1/streams HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n".to_vec(),
            400,
        ),
        (
            "20 KiB header".into(),
            format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").into_bytes(),
            431,
        ),
        (
            "150 headers".into(),
            format!("GET /health HTTP/1.1\r\nHost: x\r\n{many}\r\n").into_bytes(),
            431,
        ),
        (
            "20 KiB URI on the redirect path".into(),
            format!("GET /play/abc/hls/index.m3u8?x={big} HTTP/1.1\r\nHost: x\r\n\r\n")
                .into_bytes(),
            431,
        ),
        (
            "10 KiB URI".into(),
            format!("GET {long_uri} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            414,
        ),
        (
            "method mismatch".into(),
            b"DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            405,
        ),
        (
            "method mismatch under /api/v1".into(),
            b"PATCH /api/v1/streams HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(),
            405,
        ),
        (
            "path that is not UTF-8".into(),
            b"GET /play/%FF HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "stream key that is not UTF-8".into(),
            b"GET /ingest/%FF%FE HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (what, request, status) in cases {
        let res = common::raw_request(addr, &request).await;
        assert_eq!(res.status, status, "{what}: {res:?}");
        let code = res.expect_json_error(status);
        assert!(!code.is_empty(), "{what}");
        if status == 405 {
            assert!(res.header("allow").is_some(), "{what}: Allow in {res:?}");
        }
    }

    // A keep-alive connection still gets JSON for a bad second request.
    use tokio::io::AsyncWriteExt;
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    assert_eq!(common::read_response(&mut conn).await.status, 200);
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nbroken\r\n\r\n")
        .await
        .expect("send");
    common::read_response(&mut conn)
        .await
        .expect_json_error(400);
    server.stop().await;
}

/// A POST of `path` announcing `length` bytes of JSON body, with `token`, head only.
fn post_head(path: &str, token: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

/// Request bodies (REST and /mcp) are bounded in size and time: a `Content-Length` over the
/// limit is refused at once, before the body is read; a body that stalls, or trickles in a byte
/// at a time, is cut `server.body_timeout` after it was started, with a JSON 408. A gRPC call
/// whose request message stalls ends with `DEADLINE_EXCEEDED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_bounded_in_time_and_size() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start_with(Db::Sqlite, |c| {
        c.server.body_timeout = std::time::Duration::from_millis(500)
    })
    .await;
    let (_, token) = server.operator().await;
    let addr = server.server().http_addr;
    // A gRPC call whose one request message never ends is cut the same way.
    let stalled = common::stalled_pre_registration(&server.grpc_url()).await;
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), stalled)
        .await
        .expect("the stalled call ends")
        .expect("call task");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");

    for path in ["/api/v1/streams", "/mcp"] {
        // Announced too large: refused before any of it is sent (a server waiting for the body
        // would answer 408 after the timeout instead).
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conn.write_all(post_head(path, &token, 10_000_000).as_bytes())
            .await
            .expect("send head");
        let code = common::read_response(&mut conn)
            .await
            .expect_json_error(413);
        assert_eq!(code, "payload_too_large", "{path}");

        // Stalled after a few bytes.
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conn.write_all(format!("{}{{\"name\"", post_head(path, &token, 100)).as_bytes())
            .await
            .expect("send");
        let code = common::read_response(&mut conn)
            .await
            .expect_json_error(408);
        assert_eq!(code, "request_timeout", "{path}");
        common::until_closed(&mut conn, path).await;

        // Trickling a byte every 100 ms for 5 s: each byte comes well within the timeout, the
        // whole body does not; the answer comes while the client is still sending.
        let conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut read, mut write) = conn.into_split();
        write
            .write_all(post_head(path, &token, 100).as_bytes())
            .await
            .expect("send head");
        let trickle = tokio::spawn(async move {
            for _ in 0..50 {
                if write.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        let mut head = Vec::new();
        let read_head = async {
            use tokio::io::AsyncReadExt;
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                assert_eq!(read.read(&mut byte).await.expect("read"), 1, "closed");
                head.push(byte[0]);
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), read_head)
            .await
            .expect("an answer");
        assert!(
            head.starts_with(b"HTTP/1.1 408 "),
            "{path}: {}",
            String::from_utf8_lossy(&head)
        );
        assert!(
            !trickle.is_finished(),
            "{path}: the answer waited for the client to stop sending"
        );
        trickle.abort();
    }
    server.stop().await;
}

/// Graceful shutdown ends idle and stalled connections at once (silent, a half-sent first or
/// later request head, a stalled REST or MCP body, a half-sent HTTP/2 preface and a stalled
/// `PreRegisterEdge` on the gRPC port)
/// and waits only for the request being answered, which completes. Every limit that could
/// otherwise end those connections (head and body timeouts, the grace) is far beyond the test's
/// bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_stalled_connections_and_finishes_answers() {
    use sqlx::Connection as _;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    let mut server = TestServer::start_with(Db::Postgres, |c| {
        c.server.body_timeout = std::time::Duration::from_secs(3600);
        c.server.shutdown_grace = std::time::Duration::from_secs(60);
    })
    .await;
    let (tenant, token) = server.operator().await;
    let (stream, _) = server.stream(&tenant).await;
    let http = server.server().http_addr;
    let grpc = server.server().grpc_addr;
    let health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

    let mut idle = TcpStream::connect(http).await.expect("connect");
    idle.write_all(health).await.expect("send");
    assert_eq!(common::read_response(&mut idle).await.status, 200);
    let silent = TcpStream::connect(http).await.expect("connect");
    // A viewer answered by the viewer lane (no edge here: its JSON 503), waiting there for more.
    let mut viewer = TcpStream::connect(http).await.expect("connect");
    viewer
        .write_all(
            format!(
                "GET /play/{}/hls/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n",
                stream.playback_id
            )
            .as_bytes(),
        )
        .await
        .expect("send");
    assert_eq!(common::read_response(&mut viewer).await.status, 503);
    let mut half_first = TcpStream::connect(http).await.expect("connect");
    half_first
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send");
    let mut half_later = TcpStream::connect(http).await.expect("connect");
    half_later.write_all(health).await.expect("send");
    assert_eq!(common::read_response(&mut half_later).await.status, 200);
    half_later.write_all(b"GET /heal").await.expect("send");
    let mut stalled = Vec::new();
    for path in ["/api/v1/streams", "/mcp"] {
        let mut conn = TcpStream::connect(http).await.expect("connect");
        conn.write_all(format!("{}{{\"na", post_head(path, &token, 100)).as_bytes())
            .await
            .expect("send");
        stalled.push((path, conn));
    }
    let stalled_call = common::stalled_pre_registration(&server.grpc_url()).await;
    let mut grpc_half = TcpStream::connect(grpc).await.expect("connect");
    grpc_half
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("send");

    // A request being answered: listing streams waits on a lock this test holds.
    let mut locker = sqlx::PgConnection::connect(&server.db.url)
        .await
        .expect("connect to the test database");
    sqlx::query("BEGIN")
        .execute(&mut locker)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE streams IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock streams");
    let answer = tokio::spawn({
        let url = server.http("/api/v1/streams");
        let token = token.clone();
        async move {
            let res = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("the request in progress is answered");
            (res.status(), res.text().await.expect("whole body"))
        }
    });
    let watch = sqlx::PgPool::connect(&server.db.url)
        .await
        .expect("connect to the test database");
    common::eventually(
        std::time::Duration::from_secs(10),
        "the listing waits on the lock",
        || {
            let watch = watch.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    .fetch_one(&watch)
                    .await
                    .expect("pg_locks")
                    > 0
            }
        },
    )
    .await;
    // Every connection above was taken by the server before it stops accepting.
    for port in [http.port(), grpc.port()] {
        common::eventually(
            std::time::Duration::from_secs(10),
            "the listeners accepted every connection",
            || async move { common::accept_queue(port) == 0 },
        )
        .await;
    }

    let stopping = tokio::spawn(server.server.take().expect("running").shutdown());
    let mut silent = silent;
    for (what, conn) in [
        ("idle keep-alive", &mut idle),
        ("silent", &mut silent),
        ("idle viewer in the lane", &mut viewer),
        ("half-sent first head", &mut half_first),
        ("half-sent second head", &mut half_later),
        ("half-sent HTTP/2 preface on gRPC", &mut grpc_half),
    ] {
        let sent = common::until_closed(conn, what).await;
        assert!(
            sent.is_empty(),
            "{what}: {}",
            String::from_utf8_lossy(&sent)
        );
    }
    for (path, conn) in &mut stalled {
        let sent = String::from_utf8_lossy(&common::until_closed(conn, path).await).to_string();
        assert!(
            sent.is_empty() || sent.starts_with("HTTP/1.1 503 "),
            "stalled body on {path}: {sent}"
        );
    }
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), stalled_call)
        .await
        .expect("the stalled gRPC call ends at once")
        .expect("call task");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        !answer.is_finished(),
        "the listing cannot finish before the lock goes"
    );
    assert!(!stopping.is_finished(), "shutdown waits for the listing");
    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("release the lock");
    let (status, body) = answer.await.expect("answer task");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"main\""), "{body}");
    tokio::time::timeout(std::time::Duration::from_secs(10), stopping)
        .await
        .expect("shutdown ends once the answer is out")
        .expect("shutdown task")
        .expect("clean shutdown");
}
