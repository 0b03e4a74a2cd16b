//! Enrollment tokens and nodes: how a self-hosted edge gets an identity.
//!
//! A token is validated without locking, then consumed by one conditional `UPDATE ... WHERE
//! usage_count < usage_limit` inside the same transaction that creates the node. The conditional
//! update is the row lock: of two edges racing for the last use, exactly one sees a row affected,
//! on PostgreSQL and SQLite alike, and the loser's transaction creates nothing.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use sqlx::Row as _;

use super::{new_id, now_ms, Registry, RegistryError, Result};
use crate::net::canonical_ip;
use crate::secret::{self, SecretKind};

/// An enrollment token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnrollmentToken {
    pub id: String,
    pub cluster_id: String,
    pub tenant_id: String,
    pub lookup: String,
    pub usage_limit: i64,
    pub usage_count: i64,
    pub expires_at: i64,
    pub expected_cidr: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// Parameters of a new enrollment token.
#[derive(Debug, Clone)]
pub struct NewEnrollmentToken {
    pub cluster_id: String,
    pub tenant_id: String,
    pub usage_limit: i64,
    /// Absolute expiry, Unix milliseconds.
    pub expires_at: i64,
    pub expected_cidr: Option<IpNet>,
}

/// What a node says about itself when it registers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeProfile {
    /// Comma-separated subset of `ingest,edge,storage,processing`.
    pub capabilities: String,
    pub public_base_url: String,
    pub host_fingerprint: String,
    pub cpu_cores: i64,
    pub ram_bytes: i64,
    pub disk_bytes: i64,
}

/// A first-boot enrollment.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    pub token: String,
    /// The cluster this Foghorn serves; a token for another cluster is refused.
    pub cluster_id: String,
    pub peer_ip: Option<IpAddr>,
    /// Node id reserved by pre-registration, honoured when valid and unused.
    pub requested_node_id: Option<String>,
    pub profile: NodeProfile,
}

/// A node row (never the credential).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Node {
    pub node_id: String,
    pub cluster_id: String,
    pub owner_tenant_id: Option<String>,
    pub status: String,
    pub external_ip: Option<String>,
    pub host_fingerprint: String,
    pub capabilities: String,
    pub public_base_url: String,
    pub cpu_cores: i64,
    pub ram_bytes: i64,
    pub disk_bytes: i64,
    pub enrolled_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub created_at: i64,
}

pub(super) const NODE_COLUMNS: &str = "node_id, cluster_id, owner_tenant_id, status, external_ip, \
     host_fingerprint, capabilities, public_base_url, cpu_cores, ram_bytes, disk_bytes, \
     enrolled_at, last_seen_at, created_at";

/// A node row with its credential hash, for checking a credential and nothing else.
#[derive(sqlx::FromRow)]
pub(super) struct NodeWithCredential {
    #[sqlx(flatten)]
    pub(super) node: Node,
    pub(super) credential_hash: Option<String>,
}

/// A node id held by pre-registration until the node enrolls with the same token.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Reservation {
    pub node_id: String,
    pub cluster_id: String,
    pub enrollment_token_id: String,
    pub external_ip: Option<String>,
    pub host_fingerprint: Option<String>,
    pub created_at: i64,
}

/// What pre-registration answers: the reservation and until when its token can register.
#[derive(Debug, Clone, PartialEq)]
pub struct PreRegistration {
    pub reservation: Reservation,
    /// Unix milliseconds.
    pub token_expires_at: i64,
}

/// Reservations a token may hold beyond its remaining uses (hosts provisioned and abandoned).
pub const MAX_SPARE_RESERVATIONS: i64 = 16;

pub use crate::names::is_valid_node_id;

/// A successful enrollment: the node and its credential, to be sent once and forgotten.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub node: Node,
    pub credential: String,
}

/// Why an enrollment was refused. Every variant leaves the registry unchanged.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("unknown enrollment token")]
    Unknown,
    #[error("enrollment token revoked")]
    Revoked,
    #[error("enrollment token expired")]
    Expired,
    #[error("enrollment token already used up")]
    UsedUp,
    #[error("enrollment token belongs to cluster {0:?}, not this one")]
    WrongCluster(String),
    #[error("address {0} is outside the token's expected network {1}")]
    OutsideCidr(String, String),
    #[error("node id {0:?} is invalid or already taken")]
    NodeIdUnavailable(String),
    #[error("node id {0:?} was not pre-registered with this enrollment token")]
    NotPreRegistered(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl EnrollError {
    /// What the edge is told. The expected network of a token is not revealed: it would tell the
    /// holder of a stolen token where to connect from.
    pub fn public_message(&self) -> String {
        match self {
            EnrollError::OutsideCidr(..) => {
                "this enrollment token is not valid from the connecting address".into()
            }
            other => other.to_string(),
        }
    }
}

impl From<sqlx::Error> for EnrollError {
    fn from(e: sqlx::Error) -> Self {
        EnrollError::Registry(e.into())
    }
}

/// Why a reconnecting node was refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeAuthError {
    #[error("unknown node or wrong credential")]
    BadCredential,
    #[error("node belongs to cluster {0:?}, not this one")]
    WrongCluster(String),
    #[error("node is {0}")]
    NotActive(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<sqlx::Error> for NodeAuthError {
    fn from(e: sqlx::Error) -> Self {
        NodeAuthError::Registry(e.into())
    }
}

impl<'r> sqlx::FromRow<'r, super::Row> for EnrollmentToken {
    fn from_row(row: &'r super::Row) -> sqlx::Result<Self> {
        Ok(EnrollmentToken {
            id: row.try_get("id")?,
            cluster_id: row.try_get("cluster_id")?,
            tenant_id: row.try_get("tenant_id")?,
            lookup: row.try_get("lookup")?,
            usage_limit: row.try_get("usage_limit")?,
            usage_count: row.try_get("usage_count")?,
            expires_at: row.try_get("expires_at")?,
            expected_cidr: row.try_get("expected_cidr")?,
            created_at: row.try_get("created_at")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    }
}

const TOKEN_COLUMNS: &str = "id, cluster_id, tenant_id, lookup, usage_limit, usage_count, \
     expires_at, expected_cidr, created_at, revoked_at";

impl NewEnrollmentToken {
    pub(super) fn validate(&self) -> Result<()> {
        if self.usage_limit < 1 || self.usage_limit > 100_000 {
            return Err(RegistryError::Invalid(
                "usage limit must be between 1 and 100000".into(),
            ));
        }
        if self.expires_at <= now_ms() {
            return Err(RegistryError::Invalid(
                "expiry must be in the future".into(),
            ));
        }
        Ok(())
    }
}

/// Inserts a validated token on `conn` (a pooled connection or a transaction); returns the row and
/// the secret, shown once.
pub(super) async fn insert_enrollment_token(
    conn: &mut sqlx::AnyConnection,
    new: &NewEnrollmentToken,
) -> Result<(EnrollmentToken, String)> {
    let secret = secret::mint(SecretKind::EnrollmentToken);
    let token = EnrollmentToken {
        id: new_id(),
        cluster_id: new.cluster_id.clone(),
        tenant_id: new.tenant_id.clone(),
        lookup: secret.lookup.clone(),
        usage_limit: new.usage_limit,
        usage_count: 0,
        expires_at: new.expires_at,
        expected_cidr: new.expected_cidr.map(|c| c.to_string()),
        created_at: now_ms(),
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO enrollment_tokens (id, cluster_id, tenant_id, lookup, token_hash, \
         usage_limit, usage_count, expires_at, expected_cidr, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9)",
    )
    .bind(&token.id)
    .bind(&token.cluster_id)
    .bind(&token.tenant_id)
    .bind(&token.lookup)
    .bind(&secret.hash)
    .bind(token.usage_limit)
    .bind(token.expires_at)
    .bind(token.expected_cidr.clone())
    .bind(token.created_at)
    .execute(conn)
    .await?;
    Ok((token, secret.plain))
}

/// A fresh node id: 6 random bytes as 12 lowercase hex characters.
pub fn new_node_id() -> String {
    secret::random_hex(6)
}

impl Registry {
    /// Mints an enrollment token for `cluster_id` on behalf of `tenant_id`; the secret is returned once.
    pub async fn create_enrollment_token(
        &self,
        new: &NewEnrollmentToken,
    ) -> Result<(EnrollmentToken, String)> {
        new.validate()?;
        if self.cluster(&new.cluster_id).await?.is_none() {
            return Err(RegistryError::Invalid(format!(
                "cluster {:?} does not exist",
                new.cluster_id
            )));
        }
        if self.tenant(&new.tenant_id).await?.is_none() {
            return Err(RegistryError::Invalid(format!(
                "tenant {:?} does not exist",
                new.tenant_id
            )));
        }
        let mut conn = self.pool.acquire().await?;
        insert_enrollment_token(&mut conn, new).await
    }

    /// The token with this id, if any.
    pub async fn enrollment_token(&self, id: &str) -> Result<Option<EnrollmentToken>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE id = $1");
        Ok(sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Revokes a token; later enrollments with it fail, nodes already enrolled keep working.
    pub async fn revoke_enrollment_token(&self, id: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE enrollment_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound("enrollment token"));
        }
        Ok(())
    }

    /// Finds the token whose hash matches `plain`, comparing hashes in constant time.
    async fn find_enrollment_token(&self, plain: &str) -> Result<Option<EnrollmentToken>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS}, token_hash AS secret_hash FROM enrollment_tokens \
             WHERE lookup = $1"
        );
        let row = self
            .find_by_secret(SecretKind::EnrollmentToken, plain, &sql)
            .await?;
        Ok(row.map(|r| sqlx::FromRow::from_row(&r)).transpose()?)
    }

    /// The cluster of `node_id` when the enrollment token `plain` reserved or enrolled it (in any
    /// state but revoked: a spent token still proves who provisioned the node); `None`
    /// otherwise.
    pub async fn node_of_token(&self, plain: &str, node_id: &str) -> Result<Option<String>> {
        let Some(token) = self.find_enrollment_token(plain).await? else {
            return Ok(None);
        };
        if token.revoked_at.is_some() {
            return Ok(None);
        }
        let ours: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM nodes WHERE node_id = $1 AND enrollment_token_id = $2 \
             UNION SELECT 1 FROM node_reservations WHERE node_id = $1 AND enrollment_token_id = $2",
        )
        .bind(node_id)
        .bind(&token.id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(ours.map(|_| token.cluster_id))
    }

    /// Finds `plain` and checks that it may enroll a node connecting from `ip` right now,
    /// without consuming it.
    async fn usable_enrollment_token(
        &self,
        plain: &str,
        ip: Option<IpAddr>,
    ) -> Result<EnrollmentToken, EnrollError> {
        let token = self
            .find_enrollment_token(plain)
            .await?
            .ok_or(EnrollError::Unknown)?;
        if token.revoked_at.is_some() {
            return Err(EnrollError::Revoked);
        }
        if token.expires_at <= now_ms() {
            return Err(EnrollError::Expired);
        }
        if token.usage_count >= token.usage_limit {
            return Err(EnrollError::UsedUp);
        }
        if let Some(cidr) = &token.expected_cidr {
            let net: IpNet = cidr.parse().map_err(|_| {
                RegistryError::Invalid(format!("stored CIDR {cidr:?} is malformed"))
            })?;
            match ip {
                Some(ip) if net.contains(&canonical_ip(ip)) => {}
                other => {
                    return Err(EnrollError::OutsideCidr(
                        other.map_or_else(|| "unknown".into(), |ip| ip.to_string()),
                        cidr.clone(),
                    ))
                }
            }
        }
        Ok(token)
    }

    /// Pre-registers a node: checks the token without consuming it and reserves a node id for it.
    ///
    /// Asking again with the same token and host fingerprint answers the same reservation, so a
    /// provisioning run can be repeated; without a fingerprint every call reserves a new id.
    /// Reservations do not use up the token (only registering does); a token keeps at most
    /// [`MAX_SPARE_RESERVATIONS`] more than it has uses left, the oldest giving way.
    pub async fn pre_register(
        &self,
        token: &str,
        external_ip: Option<IpAddr>,
        preferred_node_id: Option<&str>,
        host_fingerprint: Option<&str>,
    ) -> Result<PreRegistration, EnrollError> {
        let token = self.usable_enrollment_token(token, external_ip).await?;
        let fingerprint = host_fingerprint.filter(|f| !f.is_empty());
        let held: Vec<Reservation> = sqlx::query_as(
            "SELECT node_id, cluster_id, enrollment_token_id, external_ip, host_fingerprint, \
             created_at FROM node_reservations WHERE enrollment_token_id = $1 \
             ORDER BY created_at, node_id",
        )
        .bind(&token.id)
        .fetch_all(&self.pool)
        .await?;
        if let Some(same) = fingerprint.and_then(|f| {
            held.iter()
                .find(|r| r.host_fingerprint.as_deref() == Some(f))
        }) {
            return Ok(PreRegistration {
                reservation: same.clone(),
                token_expires_at: token.expires_at,
            });
        }
        let node_id = match preferred_node_id.filter(|id| !id.is_empty()) {
            Some(id) if is_valid_node_id(id) => id.to_string(),
            Some(id) => return Err(EnrollError::NodeIdUnavailable(id.to_string())),
            None => new_node_id(),
        };
        if self.node(&node_id).await?.is_some() {
            return Err(EnrollError::NodeIdUnavailable(node_id));
        }
        let reservation = Reservation {
            node_id,
            cluster_id: token.cluster_id.clone(),
            enrollment_token_id: token.id.clone(),
            external_ip: external_ip.map(|ip| canonical_ip(ip).to_string()),
            host_fingerprint: fingerprint.map(str::to_string),
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO node_reservations (node_id, cluster_id, enrollment_token_id, \
             external_ip, host_fingerprint, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&reservation.node_id)
        .bind(&reservation.cluster_id)
        .bind(&reservation.enrollment_token_id)
        .bind(reservation.external_ip.clone())
        .bind(reservation.host_fingerprint.clone())
        .bind(reservation.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| match RegistryError::unique(e, "node id") {
            RegistryError::Conflict(_) => {
                EnrollError::NodeIdUnavailable(reservation.node_id.clone())
            }
            other => other.into(),
        })?;
        let keep = (token.usage_limit - token.usage_count).max(0) + MAX_SPARE_RESERVATIONS;
        let excess = (held.len() as i64 + 1 - keep).max(0) as usize;
        for old in held.iter().take(excess) {
            sqlx::query("DELETE FROM node_reservations WHERE node_id = $1")
                .bind(&old.node_id)
                .execute(&self.pool)
                .await?;
        }
        Ok(PreRegistration {
            reservation,
            token_expires_at: token.expires_at,
        })
    }

    /// Validates and consumes an enrollment token and creates the node, all or nothing.
    ///
    /// A requested node id must have been reserved by [`Registry::pre_register`] for this token;
    /// without one, the token's reservation for this host fingerprint is used, else a fresh id.
    pub async fn enroll(&self, req: &EnrollRequest) -> Result<Enrolled, EnrollError> {
        let token = self
            .usable_enrollment_token(&req.token, req.peer_ip)
            .await?;
        let now = now_ms();
        if token.cluster_id != req.cluster_id {
            return Err(EnrollError::WrongCluster(token.cluster_id));
        }
        let node_id = match &req.requested_node_id {
            Some(id) if !id.is_empty() => {
                if !is_valid_node_id(id) {
                    return Err(EnrollError::NodeIdUnavailable(id.clone()));
                }
                // Only an id this token reserved: an edge does not pick its own identity.
                let reserved_by: Option<String> = sqlx::query_scalar(
                    "SELECT enrollment_token_id FROM node_reservations WHERE node_id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                if reserved_by.as_deref() != Some(token.id.as_str()) {
                    return Err(EnrollError::NotPreRegistered(id.clone()));
                }
                id.clone()
            }
            _ => {
                let fingerprint = &req.profile.host_fingerprint;
                let reserved: Option<String> = if fingerprint.is_empty() {
                    None
                } else {
                    sqlx::query_scalar(
                        "SELECT node_id FROM node_reservations WHERE enrollment_token_id = $1 \
                         AND host_fingerprint = $2 ORDER BY created_at LIMIT 1",
                    )
                    .bind(&token.id)
                    .bind(fingerprint)
                    .fetch_optional(&self.pool)
                    .await?
                };
                reserved.unwrap_or_else(new_node_id)
            }
        };
        let credential = secret::mint(SecretKind::NodeCredential);

        let mut tx = self.pool.begin().await?;
        // Write first: on SQLite this takes the write lock before any read in the transaction,
        // so concurrent enrollments queue instead of failing with SQLITE_BUSY.
        let consumed = sqlx::query(
            "UPDATE enrollment_tokens SET usage_count = usage_count + 1 \
             WHERE id = $1 AND revoked_at IS NULL AND usage_count < usage_limit AND expires_at > $2",
        )
        .bind(&token.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if consumed.rows_affected() != 1 {
            return Err(EnrollError::UsedUp);
        }
        let p = &req.profile;
        let inserted = sqlx::query(
            "INSERT INTO nodes (node_id, cluster_id, owner_tenant_id, status, external_ip, \
             host_fingerprint, credential_hash, capabilities, public_base_url, cpu_cores, \
             ram_bytes, disk_bytes, enrollment_token_id, enrolled_at, last_seen_at, created_at) \
             VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $13)",
        )
        .bind(&node_id)
        .bind(&token.cluster_id)
        .bind(&token.tenant_id)
        .bind(req.peer_ip.map(|ip| canonical_ip(ip).to_string()))
        .bind(&p.host_fingerprint)
        .bind(&credential.hash)
        .bind(&p.capabilities)
        .bind(&p.public_base_url)
        .bind(p.cpu_cores)
        .bind(p.ram_bytes)
        .bind(p.disk_bytes)
        .bind(&token.id)
        .bind(now)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            return Err(match RegistryError::unique(e, "node id") {
                RegistryError::Conflict(_) => EnrollError::NodeIdUnavailable(node_id),
                other => other.into(),
            });
        }
        // The node's reservation is spent; a token used up leaves none behind.
        sqlx::query(
            "DELETE FROM node_reservations WHERE node_id = $1 OR (enrollment_token_id = $2 \
             AND EXISTS (SELECT 1 FROM enrollment_tokens t WHERE t.id = $2 \
                         AND t.usage_count >= t.usage_limit))",
        )
        .bind(&node_id)
        .bind(&token.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        // Built from what was just written rather than read back: once the commit has consumed
        // the token, a failed re-read must not cost the edge its one-time credential.
        let node = Node {
            node_id,
            cluster_id: token.cluster_id,
            owner_tenant_id: Some(token.tenant_id),
            status: "active".into(),
            external_ip: req.peer_ip.map(|ip| canonical_ip(ip).to_string()),
            host_fingerprint: p.host_fingerprint.clone(),
            capabilities: p.capabilities.clone(),
            public_base_url: p.public_base_url.clone(),
            cpu_cores: p.cpu_cores,
            ram_bytes: p.ram_bytes,
            disk_bytes: p.disk_bytes,
            enrolled_at: Some(now),
            last_seen_at: Some(now),
            created_at: now,
        };
        Ok(Enrolled {
            node,
            credential: credential.plain,
        })
    }

    /// The node with this id, if any.
    pub async fn node(&self, node_id: &str) -> Result<Option<Node>> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = $1");
        Ok(sqlx::query_as(&sql)
            .bind(node_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// All nodes of a cluster, by id.
    pub async fn nodes_of_cluster(&self, cluster_id: &str) -> Result<Vec<Node>> {
        let sql =
            format!("SELECT {NODE_COLUMNS} FROM nodes WHERE cluster_id = $1 ORDER BY node_id");
        Ok(sqlx::query_as(&sql)
            .bind(cluster_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Deletes node `node_id` of `cluster_id`: its credential stops working, the streams it had
    /// live are offline, and every Foghorn forgets the edge within a topology poll (see the
    /// `deleted_nodes` migration). False when there is no such node in that cluster.
    pub async fn delete_node(&self, cluster_id: &str, node_id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Streams live on it point at it: offline first (a write, so on SQLite it takes the write
        // lock before anything is read).
        sqlx::query(
            "UPDATE streams SET live_node_id = NULL, live_cluster_id = NULL, live_since = NULL \
             WHERE live_node_id = $1",
        )
        .bind(node_id)
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM nodes WHERE node_id = $1 AND cluster_id = $2")
            .bind(node_id)
            .bind(cluster_id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO deleted_nodes (node_id, cluster_id, deleted_at) VALUES ($1, $2, $3)",
        )
        .bind(node_id)
        .bind(cluster_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Nodes deleted after entry `after` (0: all): `(seq, node id, cluster id)`, oldest first.
    pub async fn deleted_nodes_since(&self, after: i64) -> Result<Vec<(i64, String, String)>> {
        let rows = sqlx::query(
            "SELECT seq, node_id, cluster_id FROM deleted_nodes WHERE seq > $1 ORDER BY seq",
        )
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("seq")?,
                    r.try_get("node_id")?,
                    r.try_get("cluster_id")?,
                ))
            })
            .collect()
    }

    /// The last entry of the deleted nodes (0: none yet).
    pub async fn last_deleted_node(&self) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM deleted_nodes")
                .fetch_one(&self.pool)
                .await?
                .try_get("seq")?,
        )
    }

    /// Counts nodes (all clusters); used by tests to prove refusals create nothing.
    pub async fn node_count(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM nodes")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }
}
