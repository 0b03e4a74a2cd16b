//! Databases for one test: a fresh database on the throw-away PostgreSQL that `./scripts/test`
//! starts, or an SQLite file in a temp dir, and `on_both!` to run a test on each.

use std::time::Duration;

use foghorn::registry::Registry;
use sqlx::Connection;

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

/// The administrative URL of the test PostgreSQL server (set by `./scripts/test`).
pub fn postgres_admin_url() -> String {
    std::env::var("FOGHORN_TEST_DATABASE_URL").expect(
        "FOGHORN_TEST_DATABASE_URL is not set: run the suite with ./scripts/test, which starts \
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

    /// Another handle on this database that owns nothing: the database lives as long as `self`.
    pub(super) fn another_handle(&self) -> TestDb {
        TestDb {
            url: self.url.clone(),
            _dir: None,
        }
    }
}
