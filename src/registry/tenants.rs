//! Tenants and their API tokens.

use serde::Serialize;
use sqlx::Row as _;

use super::clusters::text_enum;
use super::{new_id, now_ms, Registry, RegistryError, Result};
use crate::secret::{self, SecretKind};

text_enum!(
    /// What an API token may do: a tenant's own resources, a cluster's operations, or everything.
    Role { Tenant => "tenant", Operator => "operator", Admin => "admin" }
);

impl Role {
    /// Whether this role may use operator endpoints (edges, weights, explain).
    pub fn is_operator(self) -> bool {
        matches!(self, Role::Operator | Role::Admin)
    }
}

/// How stale an API token's `last_used_at` may get before a request refreshes it.
const LAST_USED_PRECISION_MS: i64 = 60_000;

/// A tenant row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub billing_tier: String,
    pub official_cluster_id: String,
    pub preferred_cluster_id: Option<String>,
    pub created_at: i64,
}

/// An API token as listed: never the secret, only its public lookup prefix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiToken {
    pub id: String,
    pub tenant_id: String,
    pub role: Role,
    pub lookup: String,
    pub created_at: i64,
}

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    pub role: Role,
    pub token_id: String,
}

impl Registry {
    /// Creates a tenant whose official (and, until set otherwise, preferred) cluster is given.
    pub async fn create_tenant(&self, name: &str, official_cluster_id: &str) -> Result<Tenant> {
        self.create_tenant_on(name, "free", official_cluster_id)
            .await
    }

    /// Creates a tenant on `billing_tier` with an explicitly chosen official cluster.
    pub async fn create_tenant_on(
        &self,
        name: &str,
        billing_tier: &str,
        official_cluster_id: &str,
    ) -> Result<Tenant> {
        if !super::clusters::is_valid_billing_tier(billing_tier) {
            return Err(RegistryError::Invalid(format!(
                "billing tier {billing_tier:?} must match [a-z0-9][a-z0-9-]{{0,62}}"
            )));
        }
        let name = name.trim();
        if name.is_empty() {
            return Err(RegistryError::Invalid(
                "tenant name must be 1 to 200 characters".into(),
            ));
        }
        super::check_text("tenant name", name, 200)?;
        if self.cluster(official_cluster_id).await?.is_none() {
            return Err(RegistryError::Invalid(format!(
                "official cluster {official_cluster_id:?} does not exist"
            )));
        }
        let id = new_id();
        sqlx::query(
            "INSERT INTO tenants (id, name, billing_tier, official_cluster_id, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(name)
        .bind(billing_tier)
        .bind(official_cluster_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.tenant(&id)
            .await?
            .ok_or(RegistryError::NotFound("tenant"))
    }

    /// The tenant with this id, if any.
    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        Ok(sqlx::query_as(
            "SELECT id, name, billing_tier, official_cluster_id, preferred_cluster_id, created_at \
             FROM tenants WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Mints an API token; the plain secret is returned once and never stored.
    pub async fn create_api_token(
        &self,
        tenant_id: &str,
        role: Role,
    ) -> Result<(ApiToken, String)> {
        if self.tenant(tenant_id).await?.is_none() {
            return Err(RegistryError::Invalid(format!(
                "tenant {tenant_id:?} does not exist"
            )));
        }
        let secret = secret::mint(SecretKind::ApiToken);
        let token = ApiToken {
            id: new_id(),
            tenant_id: tenant_id.to_string(),
            role,
            lookup: secret.lookup.clone(),
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO api_tokens (id, tenant_id, role, lookup, token_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.id)
        .bind(&token.tenant_id)
        .bind(role.as_str())
        .bind(&token.lookup)
        .bind(&secret.hash)
        .bind(token.created_at)
        .execute(&self.pool)
        .await?;
        Ok((token, secret.plain))
    }

    /// Resolves a bearer token to its principal; `None` for unknown, malformed or revoked tokens.
    pub async fn authenticate_api_token(&self, plain: &str) -> Result<Option<Principal>> {
        let Some(row) = self
            .find_by_secret(
                SecretKind::ApiToken,
                plain,
                "SELECT id, tenant_id, role, last_used_at, token_hash AS secret_hash \
                 FROM api_tokens WHERE lookup = $1 AND revoked_at IS NULL",
            )
            .await?
        else {
            return Ok(None);
        };
        let token_id: String = row.try_get("id")?;
        let role: String = row.try_get("role")?;
        // `last_used_at` is for people auditing tokens: minute precision is plenty, and a write
        // per request would serialize every API call on SQLite.
        let last_used: Option<i64> = row.try_get("last_used_at")?;
        let now = now_ms();
        if last_used.is_none_or(|at| now - at >= LAST_USED_PRECISION_MS) {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&token_id)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(Principal {
            tenant_id: row.try_get("tenant_id")?,
            role: role.parse()?,
            token_id,
        }))
    }

    /// Revokes a token of this tenant; `NotFound` when it is not theirs or does not exist.
    pub async fn revoke_api_token(&self, tenant_id: &str, token_id: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 \
             WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(token_id)
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound("api token"));
        }
        Ok(())
    }
}
