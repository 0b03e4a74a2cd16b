//! Shared test support: throw-away databases on the private PostgreSQL that `./scripts/test`
//! starts, SQLite files in temp dirs, whole Foghorn servers on port 0, and raw edge connections.
#![allow(dead_code)]

/// Instantiates each `async fn name(db: Db)` of the including test file once per backend, as
/// `postgres::name` and `sqlite::name`.
#[allow(unused_macros)]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::common::Db::Postgres).await })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::common::Db::Sqlite).await })*
        }
    };
}

use std::time::Duration;

use foghorn::app::{self, Server};
use foghorn::config::Config;
use foghorn::proto::{
    edge_message, helmsman_control_client::HelmsmanControlClient, register, Capabilities,
    ControlMessage, EdgeMessage, NodeCredential, NodeStats, Register,
};
use foghorn::registry::{NewEnrollmentToken, Registry, Role};
use sqlx::Connection;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Which SQL backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Postgres,
    Sqlite,
}

/// A database that lives as long as this value (SQLite: its temp dir; PostgreSQL: a fresh
/// database on the throw-away test server, dropped with the server).
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub fn postgres_admin_url() -> String {
    std::env::var("FOGHORN_TEST_DATABASE_URL").expect(
        "FOGHORN_TEST_DATABASE_URL is not set: run the suite with ./scripts/test, which starts \
         a private PostgreSQL and Redis",
    )
}

pub fn redis_url() -> String {
    std::env::var("FOGHORN_TEST_REDIS_URL").expect(
        "FOGHORN_TEST_REDIS_URL is not set: run the suite with ./scripts/test, which starts \
         a private PostgreSQL and Redis",
    )
}

impl TestDb {
    pub async fn new(db: Db) -> TestDb {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
                TestDb {
                    url,
                    _dir: Some(dir),
                }
            }
            Db::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("fh_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("connect to the test PostgreSQL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                let base = admin
                    .rsplit_once('/')
                    .map(|(b, _)| b.to_string())
                    .expect("database URL has a path");
                TestDb {
                    url: format!("{base}/{name}"),
                    _dir: None,
                }
            }
        }
    }

    pub async fn registry(&self) -> Registry {
        Registry::open(&self.url, 8, Duration::from_secs(10))
            .await
            .expect("open registry")
    }
}

/// A Foghorn running in this process on loopback port 0.
pub struct TestServer {
    pub server: Option<Server>,
    pub db: TestDb,
    pub data: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(db: Db) -> TestServer {
        Self::start_with(db, |_| {}).await
    }

    pub async fn start_with(db: Db, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let db = TestDb::new(db).await;
        let data = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.server.http_addr = "127.0.0.1:0".parse().expect("addr");
        config.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
        config.server.data_dir = data.path().to_path_buf();
        config.server.shutdown_grace = Duration::from_secs(5);
        config.database.url = db.url.clone();
        config.database.max_connections = 8;
        config.cluster.id = "test".into();
        config.cluster.root_domain = "example.net".into();
        tweak(&mut config);
        let server = app::start(config).await.expect("server starts");
        TestServer {
            server: Some(server),
            db,
            data,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    pub fn registry(&self) -> &Registry {
        &self.server().state.registry
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.server().http_addr, path)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.server().grpc_addr)
    }

    /// A tenant on this cluster with an operator token; returns (tenant id, token).
    pub async fn operator(&self) -> (String, String) {
        let tenant = self
            .registry()
            .create_tenant("Operator Org", &self.server().state.config.cluster.id)
            .await
            .expect("tenant");
        let (_, token) = self
            .registry()
            .create_api_token(&tenant.id, Role::Operator)
            .await
            .expect("token");
        (tenant.id, token)
    }

    /// An enrollment token for this server's cluster with `uses` uses, valid for an hour.
    pub async fn enrollment_token(&self, tenant: &str, uses: i64) -> String {
        self.registry()
            .create_enrollment_token(&NewEnrollmentToken {
                cluster_id: self.server().state.config.cluster.id.clone(),
                tenant_id: tenant.into(),
                usage_limit: uses,
                expires_at: foghorn::registry::now_ms() + 3_600_000,
                expected_cidr: None,
            })
            .await
            .expect("enrollment token")
            .1
    }

    /// A stream named "main" of `tenant`: the stream and its key.
    pub async fn stream(&self, tenant: &str) -> (foghorn::registry::Stream, String) {
        self.registry()
            .create_stream(tenant, "main")
            .await
            .expect("stream")
    }

    /// `GET /api/v1/edges` with `token`, as JSON.
    pub async fn edges(&self, token: &str) -> serde_json::Value {
        let res = reqwest::Client::new()
            .get(self.http("/api/v1/edges"))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET /api/v1/edges");
        assert_eq!(res.status(), 200);
        res.json().await.expect("json")
    }

    /// Whether `node_id` is listed as routable.
    pub async fn routable(&self, token: &str, node_id: &str) -> bool {
        self.edges(token).await["edges"]
            .as_array()
            .expect("edges array")
            .iter()
            .any(|e| e["node_id"] == node_id && e["routable"] == true)
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// One raw control stream, driven frame by frame.
pub struct EdgeConn {
    pub tx: mpsc::Sender<EdgeMessage>,
    pub rx: Streaming<ControlMessage>,
}

pub fn register_with_token(token: &str) -> EdgeMessage {
    register_frame(Some(register::Auth::EnrollmentToken(token.to_string())))
}

pub fn register_with_credential(node_id: &str, credential: &str) -> EdgeMessage {
    register_frame(Some(register::Auth::NodeCredential(NodeCredential {
        node_id: node_id.into(),
        credential: credential.into(),
    })))
}

pub fn register_frame(auth: Option<register::Auth>) -> EdgeMessage {
    EdgeMessage {
        payload: Some(edge_message::Payload::Register(Register {
            protocol_version: foghorn::grpc::PROTOCOL_VERSION,
            auth,
            capabilities: Some(Capabilities {
                ingest: true,
                edge: true,
                ..Default::default()
            }),
            public_base_url: "https://edge.example.net".into(),
            hardware: None,
            host_fingerprint: "fp".into(),
            pre_registered_node_id: String::new(),
        })),
    }
}

pub fn stats_frame(streams: Vec<foghorn::proto::StreamStats>) -> EdgeMessage {
    stats_frame_at_cpu(250, streams)
}

/// A NodeStats frame of an edge in Paris at `cpu_tenths` load (RAM 4/16 GiB, 1 MB/s up of
/// 125 MB/s).
pub fn stats_frame_at_cpu(
    cpu_tenths: u32,
    streams: Vec<foghorn::proto::StreamStats>,
) -> EdgeMessage {
    EdgeMessage {
        payload: Some(edge_message::Payload::NodeStats(NodeStats {
            cpu_tenths,
            ram_max_bytes: 16 << 30,
            ram_used_bytes: 4 << 30,
            up_bytes_per_sec: 1_000_000,
            down_bytes_per_sec: 0,
            bw_limit_bytes_per_sec: 125_000_000,
            latitude: Some(48.85),
            longitude: Some(2.35),
            location_name: "Paris".into(),
            connections: 3,
            streams,
        })),
    }
}

impl EdgeConn {
    /// Opens a control stream and sends `first` as its first frame.
    pub async fn open(grpc_url: &str, first: EdgeMessage) -> EdgeConn {
        Self::open_from(grpc_url, first, None).await
    }

    /// Like [`EdgeConn::open`], from a given local address (e.g. 127.0.0.2: Linux answers the
    /// whole loopback /8), so tests can tell edges apart by address.
    pub async fn open_from(
        grpc_url: &str,
        first: EdgeMessage,
        local: Option<std::net::IpAddr>,
    ) -> EdgeConn {
        let channel = tonic::transport::Endpoint::from_shared(grpc_url.to_string())
            .expect("url")
            .local_address(local)
            .connect()
            .await
            .expect("connect gRPC");
        Self::over(channel, first).await
    }

    /// Opens a control stream over `channel` (e.g. one with TLS) and sends `first`.
    pub async fn over(channel: tonic::transport::Channel, first: EdgeMessage) -> EdgeConn {
        let mut client = HelmsmanControlClient::new(channel);
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.expect("queue first frame");
        let rx = client
            .connect(ReceiverStream::new(rx))
            .await
            .expect("Connect accepted")
            .into_inner();
        EdgeConn { tx, rx }
    }

    pub async fn send(&self, frame: EdgeMessage) {
        self.tx.send(frame).await.expect("stream open");
    }

    /// The next control frame (None when the stream ended), bounded so a bug fails instead of hangs.
    pub async fn recv(&mut self) -> Result<Option<ControlMessage>, tonic::Status> {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("a control frame within 10 s")
    }

    /// Expects a ConfigSeed next and returns it.
    pub async fn seed(&mut self) -> foghorn::proto::ConfigSeed {
        match self.recv().await {
            Ok(Some(ControlMessage {
                payload: Some(foghorn::proto::control_message::Payload::ConfigSeed(seed)),
            })) => seed,
            other => panic!("expected a ConfigSeed, got {other:?}"),
        }
    }

    /// Expects an IngestDecision next and returns it.
    pub async fn decision(&mut self) -> foghorn::proto::IngestDecision {
        match self.recv().await {
            Ok(Some(ControlMessage {
                payload: Some(foghorn::proto::control_message::Payload::IngestDecision(d)),
            })) => d,
            other => panic!("expected an IngestDecision, got {other:?}"),
        }
    }

    /// Expects an Error frame followed by the end of the stream; returns the error code.
    pub async fn error(&mut self) -> foghorn::proto::ErrorCode {
        self.error_frame().await.0
    }

    /// Like [`EdgeConn::error`], with the message.
    pub async fn error_frame(&mut self) -> (foghorn::proto::ErrorCode, String) {
        let code = match self.recv().await {
            Ok(Some(ControlMessage {
                payload: Some(foghorn::proto::control_message::Payload::Error(e)),
            })) => (
                foghorn::proto::ErrorCode::try_from(e.code).expect("known code"),
                e.message,
            ),
            other => panic!("expected an Error frame, got {other:?}"),
        };
        match self.recv().await {
            Err(_) | Ok(None) => {}
            Ok(Some(more)) => panic!("stream should end after an Error, got {more:?}"),
        }
        code
    }
}

/// Enrolls one edge with a fresh token; returns its connection, node id and credential.
pub async fn enroll(server: &TestServer, tenant: &str) -> (EdgeConn, String, String) {
    let token = server.enrollment_token(tenant, 1).await;
    let mut conn = EdgeConn::open(&server.grpc_url(), register_with_token(&token)).await;
    let seed = conn.seed().await;
    (conn, seed.node_id, seed.node_credential)
}

/// An IngestRequest frame.
pub fn ingest_frame(request_id: &str, stream_key: &str) -> EdgeMessage {
    EdgeMessage {
        payload: Some(edge_message::Payload::IngestRequest(
            foghorn::proto::IngestRequest {
                request_id: request_id.into(),
                stream_key: stream_key.into(),
                protocol: "rtmp".into(),
                publisher_ip: "192.0.2.1".into(),
            },
        )),
    }
}

impl TestServer {
    /// Another replica of this server's cluster: same registry, its own listeners.
    pub async fn replica(&self, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let data = tempfile::tempdir().expect("tempdir");
        let mut config = (*self.server().state.config).clone();
        config.server.http_addr = "127.0.0.1:0".parse().expect("addr");
        config.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
        config.server.data_dir = data.path().to_path_buf();
        tweak(&mut config);
        let server = app::start(config).await.expect("replica starts");
        TestServer {
            server: Some(server),
            db: TestDb {
                url: self.db.url.clone(),
                _dir: None,
            },
            data,
        }
    }

    /// `GET /ready` as JSON.
    pub async fn ready(&self) -> serde_json::Value {
        reqwest::get(self.http("/ready"))
            .await
            .expect("GET /ready")
            .json()
            .await
            .expect("json")
    }
}

/// Polls `check` every 10 ms until it holds; panics with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A private Redis server owned by one test, which may stop and restart it (on the same port).
/// The binary comes from `FOGHORN_TEST_REDIS_SERVER` (set by `./scripts/test`), else the PATH.
pub struct RedisProc {
    child: Option<std::process::Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisProc {
    pub async fn start() -> RedisProc {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let mut redis = RedisProc {
                child: None,
                port,
                dir: tempfile::tempdir().expect("tempdir"),
            };
            if redis.spawn().await {
                return redis;
            }
        }
        panic!("could not start a private redis-server");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server on `self.port`; true once it answers PING.
    async fn spawn(&mut self) -> bool {
        let bin = std::env::var("FOGHORN_TEST_REDIS_SERVER").unwrap_or("redis-server".into());
        let child = std::process::Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {bin}: {e} (run the suite with ./scripts/test)"));
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("url");
        for _ in 0..200 {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let _ = status; // exited: the port was taken
                self.child = None;
                return false;
            }
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
                {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.stop();
        false
    }

    /// Kills the server (like a crash: nothing is saved, connections drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Shuts the server down saving its data (`SHUTDOWN SAVE`), as an orderly restart does.
    pub async fn shutdown_saving(&mut self) {
        let mut conn = self.connection().await;
        // The server closes the connection as it exits: the reply is an error or nothing.
        let _ = redis::cmd("SHUTDOWN")
            .arg("SAVE")
            .query_async::<redis::Value>(&mut conn)
            .await;
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        assert!(
            self.dir.path().join("dump.rdb").exists(),
            "redis-server saved nothing"
        );
    }

    /// Starts it again, empty, on the same port.
    pub async fn restart(&mut self) {
        let _ = std::fs::remove_file(self.dir.path().join("dump.rdb"));
        self.restart_with_data().await;
    }

    /// Starts it again on the same port with what it saved (see [`RedisProc::shutdown_saving`]).
    pub async fn restart_with_data(&mut self) {
        assert!(
            self.spawn().await,
            "redis-server did not come back on {}",
            self.port
        );
    }

    /// A connection for inspecting keys.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the private Redis")
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy on loopback in front of one replica's Redis, which the test can cut (every
/// connection dropped, new ones refused) to partition that replica alone, and mend.
pub struct Proxy {
    pub port: u16,
    cut: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (cut, _) = tokio::sync::watch::channel(false);
        let cut = std::sync::Arc::new(cut);
        let task = tokio::spawn({
            let cut = cut.clone();
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if *cut.borrow() {
                        continue; // dropped at once
                    }
                    let mut watch = cut.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = watch.wait_for(|cut| *cut) => {}
                        }
                    });
                }
            }
        });
        Proxy { port, cut, task }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Drops every connection through the proxy and refuses new ones until [`Proxy::mend`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn mend(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/1.1 response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the whole response when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {:?} {}",
                self.status,
                self.headers,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts Foghorn's JSON error (`{"error":{"code","message"}}`) with `status`; returns the code.
    pub fn expect_json_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "not labelled JSON: {self:?}"
        );
        let body = self.json();
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {body}"));
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "no error.message in {body}"
        );
        code.to_string()
    }
}

/// Reads one response from `stream` (head, then a `Content-Length` body, else up to EOF),
/// bounded so a server that never answers fails the test instead of hanging it.
pub async fn read_response(stream: &mut tokio::net::TcpStream) -> RawResponse {
    tokio::time::timeout(Duration::from_secs(10), read_response_unbounded(stream))
        .await
        .expect("a response within 10 s")
}

async fn read_response_unbounded(stream: &mut tokio::net::TcpStream) -> RawResponse {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let mut body = buf[head_end..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>().expect("numeric content-length"));
    match length {
        Some(length) => {
            while body.len() < length {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "connection closed inside the body");
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(length);
        }
        None => {
            stream.read_to_end(&mut body).await.expect("read body");
        }
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Sends `request` as is on a new connection to `addr` and reads the answer.
pub async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> RawResponse {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send request");
    read_response(&mut stream).await
}

/// Waits (at most 10 s) until the server closes `stream`, discarding what it sends; returns
/// what it sent.
pub async fn until_closed(stream: &mut tokio::net::TcpStream, what: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .is_err()
    {
        panic!("{what}: the server did not close the connection within 10 s");
    }
    seen
}

/// How many connections wait in the accept queue of the IPv4 listener on `port` (Linux: the
/// `rx_queue` of a LISTEN socket in /proc/net/tcp). Zero once the server took every connection
/// made to it.
pub fn accept_queue(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = fields.get(3) == Some(&"0A");
            (listening && fields.get(1).is_some_and(|a| a.ends_with(&local))).then(|| {
                let queues = fields.get(4).expect("tx_queue:rx_queue");
                let rx = queues.split(':').nth(1).expect("rx_queue");
                usize::from_str_radix(rx, 16).expect("hex queue length")
            })
        })
        .sum()
}

/// Calls `PreRegisterEdge` sending its request message and then never ending the request stream,
/// as a stalled client does; resolves with the status the server ends the call with.
pub async fn stalled_pre_registration(grpc_url: &str) -> tokio::task::JoinHandle<tonic::Status> {
    use futures_util::StreamExt as _;
    let channel = tonic::transport::Endpoint::from_shared(grpc_url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect gRPC");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let request = futures_util::stream::iter([foghorn::proto::PreRegisterEdgeRequest::default()])
        .chain(futures_util::stream::pending());
    tokio::spawn(async move {
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/foghorn.v1.EdgeProvisioning/PreRegisterEdge",
        );
        let answer: Result<tonic::Response<foghorn::proto::PreRegisterEdgeResponse>, _> = grpc
            .client_streaming(
                tonic::Request::new(request),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await;
        answer.expect_err("a stalled request is not answered")
    })
}
