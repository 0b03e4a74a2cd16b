//! Whole Foghorn servers in the test process, on loopback port 0, with helpers for what tests
//! ask them most (an operator, enrollment tokens, a stream, the edge list).

use std::time::Duration;

use foghorn::app::{self, Server};
use foghorn::config::Config;
use foghorn::registry::{NewEnrollmentToken, Registry, Role};

use super::db::{Db, TestDb};

/// With `FOGHORN_TEST_LOG` set (a tracing filter, e.g. `foghorn=debug`), the servers' logs go
/// to the test's output (shown for failing tests, or all with `--nocapture`).
fn log_if_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if let Ok(filter) = std::env::var("FOGHORN_TEST_LOG") {
        ONCE.call_once(|| {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        });
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
        log_if_asked();
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
            db: self.db.another_handle(),
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
