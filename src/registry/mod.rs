//! The registry: the SQL store behind clusters, tenants, tokens, nodes and streams.
//!
//! One code path serves PostgreSQL (production, shared by all Foghorns of the platform) and SQLite
//! (the embedded default) through sqlx's `Any` driver. The two migration folders create the same
//! tables with portable types (TEXT, BIGINT, DOUBLE PRECISION; times in Unix milliseconds; flags as
//! 0/1), so every query here is written once with `$n` placeholders and runs on both.

mod acme;
mod cells;
mod clusters;
mod enrollment;
mod federation;
mod marketplace;
mod mist;
mod node_auth;
mod playback;
mod streams;
mod subscriptions;
mod tenants;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor};

pub use acme::StoredCertificate;
pub use cells::{choose_cell, Cell, CellReport, Placement, CELL_TTL_MS};
pub use clusters::{Cluster, ClusterChanges, NewCluster, PricingModel, Tier, Visibility};
pub use enrollment::{
    is_valid_node_id, EnrollError, EnrollRequest, Enrolled, EnrollmentToken, NewEnrollmentToken,
    Node, NodeAuthError, NodeProfile, PreRegistration, Reservation,
};
pub use federation::{PeerCluster, PeerEndpoint};
pub use marketplace::{
    ClusterUtilization, MarketplaceFilter, MarketplaceRow, NewPrivateCluster, PrivateCluster,
};
pub use playback::{PlaybackCache, Resolved};
pub use streams::{IngestVerdict, Stream};
pub use subscriptions::{Invite, InviteStatus, Subscribed, Subscription, SubscriptionStatus};
pub use tenants::{ApiToken, Principal, Role, Tenant};

/// Which SQL engine the registry talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Registry failures, kept apart so each boundary can map them deliberately.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
    /// The caller may see the thing but not do this to it.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("registry unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    #[error("registry migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl RegistryError {
    /// Maps a unique-constraint violation to `Conflict(what)`, anything else to `Unavailable`.
    fn unique(err: sqlx::Error, what: impl Into<String>) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                RegistryError::Conflict(what.into())
            }
            _ => RegistryError::Unavailable(err),
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Handle to the registry; cheap to clone (a pool inside).
#[derive(Clone, Debug)]
pub struct Registry {
    pool: AnyPool,
    backend: Backend,
    /// Node credentials waiting to be checked together (see `node_auth`).
    auth: Arc<node_auth::AuthQueue>,
}

impl Registry {
    /// Connects to `url` (creating the SQLite file and its folder if needed) without migrating.
    pub async fn connect(url: &str, max_connections: u32, timeout: Duration) -> Result<Registry> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(timeout);
        let mut url = url.to_string();
        if backend == Backend::Sqlite {
            create_sqlite_parent(&url)?;
            // The embedded registry is created on first start, whatever URL spelled it.
            if !url.contains("mode=") {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str("mode=rwc");
            }
            // WAL lets readers run beside the single writer. With WAL, synchronous=NORMAL keeps
            // the database consistent across crashes and syncs at checkpoints rather than on every
            // commit (a power cut may lose the last commits, never corrupt). Foreign keys are off
            // by default in SQLite and the schema relies on them.
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        Ok(Registry {
            pool,
            backend,
            auth: Arc::default(),
        })
    }

    /// Connects and brings the schema up to date.
    pub async fn open(url: &str, max_connections: u32, timeout: Duration) -> Result<Registry> {
        let registry = Self::connect(url, max_connections, timeout).await?;
        registry.migrate().await?;
        Ok(registry)
    }

    /// Applies the migrations of this backend that have not run yet.
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
        }
        Ok(())
    }

    /// One round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool, waiting for checked-out connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The file of an SQLite registry URL (`None` for other engines, or a URL sqlx cannot read).
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    Some(options.get_filename().to_path_buf())
}

fn create_sqlite_parent(url: &str) -> Result<()> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    if let Some(parent) = options.get_filename().parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|e| {
                RegistryError::Invalid(format!(
                    "cannot create the SQLite folder {}: {e}",
                    parent.display()
                ))
            })?;
        }
    }
    Ok(())
}

impl Registry {
    /// The row that holds the secret `plain`: `select` reads candidate rows by lookup prefix (`$1`)
    /// and names the stored hash `secret_hash`; the one whose hash matches, compared in constant
    /// time, is returned. Malformed secrets match nothing without a query.
    async fn find_by_secret(
        &self,
        kind: crate::secret::SecretKind,
        plain: &str,
        select: &str,
    ) -> Result<Option<AnyRow>> {
        use sqlx::Row as _;
        let Some(lookup) = crate::secret::lookup_prefix(kind, plain) else {
            return Ok(None);
        };
        let rows = sqlx::query(select)
            .bind(&lookup)
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            let hash: String = row.try_get("secret_hash")?;
            if crate::secret::verify(plain, &hash) {
                return Ok(Some(row));
            }
        }
        Ok(None)
    }
}

/// Checks free text given by a user: at most `max` bytes and no control characters (PostgreSQL
/// cannot store NUL, and nothing shown in a marketplace needs the others).
pub fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(RegistryError::Invalid(format!(
            "{field} must be at most {max} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(RegistryError::Invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// Wall-clock time in Unix milliseconds, as stored in every `*_at` column.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Fresh opaque id for rows that have no natural key.
fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Rows are decoded through `FromRow` on `AnyRow`; this alias keeps signatures short.
type Row = AnyRow;
