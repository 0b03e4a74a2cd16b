//! Subscriptions and cluster invites: who may use which cluster.
//!
//! Only an `active` subscription counts as subscribed, everywhere. A cluster that requires approval
//! turns a request into a `pending` row that its owner (or a platform operator, for a platform
//! cluster) approves or rejects; a valid invite skips the approval. An invite is single-use: it is
//! consumed by one conditional `UPDATE ... WHERE status = 'open'` in the transaction that activates
//! the subscription, so of two tenants racing for one invite exactly one gets it.

use serde::Serialize;
use sqlx::Row as _;

use super::clusters::{text_enum, CLUSTER_COLUMNS};
use super::{new_id, now_ms, Cluster, Registry, RegistryError, Result};
use crate::secret::{self, SecretKind};

text_enum!(
    /// Where a tenant stands with a cluster.
    SubscriptionStatus {
        Pending => "pending",
        Active => "active",
        Rejected => "rejected",
        Cancelled => "cancelled",
    }
);

text_enum!(
    /// Whether an invite can still be used.
    InviteStatus { Open => "open", Used => "used", Revoked => "revoked" }
);

/// A subscription row: one per (tenant, cluster).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subscription {
    pub tenant_id: String,
    pub cluster_id: String,
    pub status: SubscriptionStatus,
    pub requested_at: i64,
    pub decided_at: Option<i64>,
    /// Tenant whose token approved, rejected or cancelled it.
    pub decided_by: Option<String>,
    /// The invite that activated it, if one did.
    pub invite_id: Option<String>,
}

/// An invite as listed (never the token).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Invite {
    pub id: String,
    pub cluster_id: String,
    /// Only this tenant may use it; `None`: whoever holds the token.
    pub invited_tenant_id: Option<String>,
    #[serde(skip)]
    pub lookup: String,
    pub status: InviteStatus,
    pub expires_at: i64,
    pub used_by: Option<String>,
    pub used_at: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
}

/// What [`Registry::subscribe`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribed {
    pub subscription: Subscription,
    /// False when the tenant already had this subscription (active, or pending without an invite).
    pub changed: bool,
    /// Whether the cluster belongs to the platform (no owner): its requests are decided by a
    /// platform operator.
    pub platform_cluster: bool,
}

const SUBSCRIPTION_COLUMNS: &str =
    "tenant_id, cluster_id, status, requested_at, decided_at, decided_by, invite_id";
const INVITE_COLUMNS: &str = "id, cluster_id, invited_tenant_id, lookup, status, expires_at, \
     used_by, used_at, created_by, created_at";

fn decode_err(col: &str, e: RegistryError) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: col.into(),
        source: Box::new(e),
    }
}

impl<'r> sqlx::FromRow<'r, super::Row> for Subscription {
    fn from_row(row: &'r super::Row) -> sqlx::Result<Self> {
        Ok(Subscription {
            tenant_id: row.try_get("tenant_id")?,
            cluster_id: row.try_get("cluster_id")?,
            status: row
                .try_get::<String, _>("status")?
                .parse()
                .map_err(|e| decode_err("status", e))?,
            requested_at: row.try_get("requested_at")?,
            decided_at: row.try_get("decided_at")?,
            decided_by: row.try_get("decided_by")?,
            invite_id: row.try_get("invite_id")?,
        })
    }
}

impl<'r> sqlx::FromRow<'r, super::Row> for Invite {
    fn from_row(row: &'r super::Row) -> sqlx::Result<Self> {
        Ok(Invite {
            id: row.try_get("id")?,
            cluster_id: row.try_get("cluster_id")?,
            invited_tenant_id: row.try_get("invited_tenant_id")?,
            lookup: row.try_get("lookup")?,
            status: row
                .try_get::<String, _>("status")?
                .parse()
                .map_err(|e| decode_err("status", e))?,
            expires_at: row.try_get("expires_at")?,
            used_by: row.try_get("used_by")?,
            used_at: row.try_get("used_at")?,
            created_by: row.try_get("created_by")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// SQL condition: cluster `c` is visible to the tenant bound at `tenant` (a placeholder such as
/// `$1`) at the time bound at `now` (DESIGN.md §3): public, owned, its official cluster, actively
/// subscribed, or invited by an open invite bound to it.
pub(super) fn visible_to(tenant: &str, now: &str) -> String {
    format!(
        "(c.visibility = 'public' \
         OR c.owner_tenant_id = {tenant} \
         OR c.id = (SELECT t.official_cluster_id FROM tenants t WHERE t.id = {tenant}) \
         OR EXISTS (SELECT 1 FROM subscriptions s WHERE s.cluster_id = c.id \
                    AND s.tenant_id = {tenant} AND s.status = 'active') \
         OR EXISTS (SELECT 1 FROM cluster_invites i WHERE i.cluster_id = c.id \
                    AND i.invited_tenant_id = {tenant} AND i.status = 'open' \
                    AND i.expires_at > {now}))"
    )
}

/// SQL condition: the tenant `tenant` (a placeholder or a column) may use cluster `c` — stream
/// through it, make it its preferred cluster: it owns it, it is its official cluster, or it holds
/// an active subscription to it.
pub(super) fn usable_by(tenant: &str) -> String {
    format!(
        "(c.owner_tenant_id = {tenant} \
         OR c.id = (SELECT t.official_cluster_id FROM tenants t WHERE t.id = {tenant}) \
         OR EXISTS (SELECT 1 FROM subscriptions s WHERE s.cluster_id = c.id \
                    AND s.tenant_id = {tenant} AND s.status = 'active'))"
    )
}

/// Locks the tenant's row until the transaction ends (a no-op update: portable, unlike `SELECT ...
/// FOR UPDATE`). Every transaction that changes what a tenant may use, or its preferred cluster,
/// takes it first, so a preferred cluster is never set on a subscription being cancelled.
pub(super) async fn lock_tenant(conn: &mut sqlx::AnyConnection, tenant_id: &str) -> Result<bool> {
    let done = sqlx::query("UPDATE tenants SET billing_tier = billing_tier WHERE id = $1")
        .bind(tenant_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Clears a preferred cluster the tenant may no longer use, so it falls back to the official one.
pub(super) async fn revalidate_preferred(
    conn: &mut sqlx::AnyConnection,
    tenant_id: &str,
) -> Result<()> {
    let sql = format!(
        "UPDATE tenants SET preferred_cluster_id = NULL WHERE id = $1 \
         AND preferred_cluster_id IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM clusters c WHERE c.id = tenants.preferred_cluster_id AND {})",
        usable_by("$1")
    );
    sqlx::query(&sql).bind(tenant_id).execute(conn).await?;
    Ok(())
}

impl Registry {
    /// The cluster `id` if tenant `tenant_id` may see it; `None` whether it is hidden or absent, so
    /// callers cannot tell the two apart.
    pub async fn visible_cluster(&self, tenant_id: &str, id: &str) -> Result<Option<Cluster>> {
        let sql = format!(
            "SELECT {CLUSTER_COLUMNS} FROM clusters c WHERE c.id = $3 AND {}",
            visible_to("$1", "$2")
        );
        Ok(sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(now_ms())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The subscription of `tenant_id` to `cluster_id`, whatever its status.
    pub async fn subscription(
        &self,
        tenant_id: &str,
        cluster_id: &str,
    ) -> Result<Option<Subscription>> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE tenant_id = $1 AND cluster_id = $2"
        );
        Ok(sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(cluster_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Every subscription of a tenant (all statuses), by cluster id.
    pub async fn subscriptions_of_tenant(&self, tenant_id: &str) -> Result<Vec<Subscription>> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE tenant_id = $1 ORDER BY cluster_id"
        );
        Ok(sqlx::query_as(&sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Subscriptions to a cluster with the given status, oldest request first.
    pub async fn subscriptions_of_cluster(
        &self,
        cluster_id: &str,
        status: SubscriptionStatus,
    ) -> Result<Vec<Subscription>> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE cluster_id = $1 AND status = $2 \
             ORDER BY requested_at, tenant_id"
        );
        Ok(sqlx::query_as(&sql)
            .bind(cluster_id)
            .bind(status.as_str())
            .fetch_all(&self.pool)
            .await?)
    }

    /// Subscribes `tenant_id` to `cluster_id` (DESIGN.md §3).
    ///
    /// `see_all` is for platform operators, who see every cluster. Without a valid invite the
    /// cluster must be visible to the tenant, else `NotFound` (hidden and absent look the same).
    /// An invalid invite for a visible cluster is `Forbidden`. A cluster that requires approval
    /// yields `pending` unless an invite is used; everything else is `active` at once.
    pub async fn subscribe(
        &self,
        tenant_id: &str,
        cluster_id: &str,
        invite_token: Option<&str>,
        see_all: bool,
    ) -> Result<Subscribed> {
        let visible = if see_all {
            self.cluster(cluster_id).await?
        } else {
            self.visible_cluster(tenant_id, cluster_id).await?
        };
        let invite =
            match invite_token.filter(|t| !t.is_empty()) {
                None => None,
                Some(token) => match self.find_invite(token).await? {
                    Some(invite) if invite_usable(&invite, tenant_id, cluster_id) => Some(invite),
                    _ if visible.is_none() => return Err(RegistryError::NotFound("cluster")),
                    _ => return Err(RegistryError::Forbidden(
                        "the invite token is not valid for this cluster: unknown, used, revoked, \
                         expired or issued to another tenant"
                            .into(),
                    )),
                },
            };
        let cluster = match visible {
            Some(c) => c,
            None if invite.is_some() => self
                .cluster(cluster_id)
                .await?
                .ok_or(RegistryError::NotFound("cluster"))?,
            None => return Err(RegistryError::NotFound("cluster")),
        };
        let platform_cluster = cluster.owner_tenant_id.is_none();
        let existing = self.subscription(tenant_id, cluster_id).await?;
        if let Some(current) = &existing {
            // A rejection stands until the cluster's manager sends an invite: asking again would
            // let a rejected tenant fill the owner's queue. It is refused as such rather than
            // answered like a fresh request.
            if current.status == SubscriptionStatus::Rejected && invite.is_none() {
                let who = if platform_cluster {
                    "an invite from a platform operator"
                } else {
                    "an invite from its owner"
                };
                return Err(RegistryError::Conflict(format!(
                    "your request for cluster {cluster_id:?} was rejected; only {who} lets you \
                     subscribe now (POST /subscriptions with invite_token)"
                )));
            }
            let settled = match current.status {
                SubscriptionStatus::Active => true,
                SubscriptionStatus::Pending => invite.is_none(),
                SubscriptionStatus::Rejected | SubscriptionStatus::Cancelled => false,
            };
            if settled {
                return Ok(Subscribed {
                    subscription: current.clone(),
                    changed: false,
                    platform_cluster,
                });
            }
        }
        let owner = cluster.owner_tenant_id.as_deref() == Some(tenant_id);
        let status = if invite.is_some() || owner || !cluster.requires_approval {
            SubscriptionStatus::Active
        } else {
            SubscriptionStatus::Pending
        };
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        if let Some(invite) = &invite {
            let used = sqlx::query(
                "UPDATE cluster_invites SET status = 'used', used_by = $1, used_at = $2 \
                 WHERE id = $3 AND status = 'open' AND expires_at > $2",
            )
            .bind(tenant_id)
            .bind(now)
            .bind(&invite.id)
            .execute(&mut *tx)
            .await?;
            if used.rows_affected() != 1 {
                return Err(RegistryError::Forbidden(
                    "the invite token was used or revoked meanwhile".into(),
                ));
            }
        }
        let decided = (status == SubscriptionStatus::Active).then_some(now);
        sqlx::query(
            "INSERT INTO subscriptions (tenant_id, cluster_id, status, requested_at, decided_at, \
             decided_by, invite_id) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, cluster_id) DO UPDATE SET status = excluded.status, \
             requested_at = excluded.requested_at, decided_at = excluded.decided_at, \
             decided_by = excluded.decided_by, invite_id = excluded.invite_id",
        )
        .bind(tenant_id)
        .bind(cluster_id)
        .bind(status.as_str())
        .bind(now)
        .bind(decided)
        .bind(decided.map(|_| tenant_id.to_string()))
        .bind(invite.as_ref().map(|i| i.id.clone()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let subscription = self
            .subscription(tenant_id, cluster_id)
            .await?
            .ok_or(RegistryError::NotFound("subscription"))?;
        Ok(Subscribed {
            subscription,
            changed: true,
            platform_cluster,
        })
    }

    /// Cancels an active or pending subscription; a preferred cluster it made usable is cleared
    /// in the same transaction. An owner cannot cancel the subscription to its own cluster.
    pub async fn cancel_subscription(
        &self,
        tenant_id: &str,
        cluster_id: &str,
    ) -> Result<Subscription> {
        let owned: Option<Option<String>> =
            sqlx::query_scalar("SELECT owner_tenant_id FROM clusters WHERE id = $1")
                .bind(cluster_id)
                .fetch_optional(&self.pool)
                .await?;
        if owned.flatten().as_deref() == Some(tenant_id) {
            return Err(RegistryError::Conflict(
                "you own this cluster; its owner subscription cannot be cancelled".into(),
            ));
        }
        let mut tx = self.pool.begin().await?;
        lock_tenant(&mut tx, tenant_id).await?;
        let done = sqlx::query(
            "UPDATE subscriptions SET status = 'cancelled', decided_at = $1, decided_by = $2 \
             WHERE tenant_id = $2 AND cluster_id = $3 AND status IN ('active', 'pending')",
        )
        .bind(now_ms())
        .bind(tenant_id)
        .bind(cluster_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound("subscription"));
        }
        revalidate_preferred(&mut tx, tenant_id).await?;
        tx.commit().await?;
        self.subscription(tenant_id, cluster_id)
            .await?
            .ok_or(RegistryError::NotFound("subscription"))
    }

    /// Approves or rejects a pending request; `Conflict` when it is not pending.
    pub async fn decide_subscription(
        &self,
        cluster_id: &str,
        tenant_id: &str,
        approve: bool,
        decided_by: &str,
    ) -> Result<Subscription> {
        let status = if approve {
            SubscriptionStatus::Active
        } else {
            SubscriptionStatus::Rejected
        };
        let done = sqlx::query(
            "UPDATE subscriptions SET status = $1, decided_at = $2, decided_by = $3 \
             WHERE cluster_id = $4 AND tenant_id = $5 AND status = 'pending'",
        )
        .bind(status.as_str())
        .bind(now_ms())
        .bind(decided_by)
        .bind(cluster_id)
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        let current = self
            .subscription(tenant_id, cluster_id)
            .await?
            .ok_or(RegistryError::NotFound("subscription request"))?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::Conflict(format!(
                "the subscription is {}, not pending",
                current.status
            )));
        }
        Ok(current)
    }

    /// Creates an invite to `cluster_id`; the token is returned once.
    pub async fn create_invite(
        &self,
        cluster_id: &str,
        invited_tenant_id: Option<&str>,
        expires_at: i64,
        created_by: &str,
    ) -> Result<(Invite, String)> {
        if expires_at <= now_ms() {
            return Err(RegistryError::Invalid(
                "expiry must be in the future".into(),
            ));
        }
        // Whether the bound tenant exists is not checked: the answer would tell any cluster owner
        // which tenant ids exist. An invite bound to nobody is never usable.
        let secret = secret::mint(SecretKind::ClusterInvite);
        let invite = Invite {
            id: new_id(),
            cluster_id: cluster_id.to_string(),
            invited_tenant_id: invited_tenant_id.map(str::to_string),
            lookup: secret.lookup.clone(),
            status: InviteStatus::Open,
            expires_at,
            used_by: None,
            used_at: None,
            created_by: created_by.to_string(),
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO cluster_invites (id, cluster_id, invited_tenant_id, lookup, token_hash, \
             created_by, expires_at, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8)",
        )
        .bind(&invite.id)
        .bind(&invite.cluster_id)
        .bind(invite.invited_tenant_id.clone())
        .bind(&invite.lookup)
        .bind(&secret.hash)
        .bind(&invite.created_by)
        .bind(invite.expires_at)
        .bind(invite.created_at)
        .execute(&self.pool)
        .await?;
        // Built from what was written: a failed re-read must not lose the one-time token.
        Ok((invite, secret.plain))
    }

    /// The invite `id` of `cluster_id`, if any.
    pub async fn invite(&self, cluster_id: &str, id: &str) -> Result<Option<Invite>> {
        let sql = format!(
            "SELECT {INVITE_COLUMNS} FROM cluster_invites WHERE id = $1 AND cluster_id = $2"
        );
        Ok(sqlx::query_as(&sql)
            .bind(id)
            .bind(cluster_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Invites of a cluster, newest first.
    pub async fn invites_of_cluster(&self, cluster_id: &str) -> Result<Vec<Invite>> {
        let sql = format!(
            "SELECT {INVITE_COLUMNS} FROM cluster_invites WHERE cluster_id = $1 \
             ORDER BY created_at DESC, id"
        );
        Ok(sqlx::query_as(&sql)
            .bind(cluster_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Revokes an open invite of `cluster_id`.
    pub async fn revoke_invite(&self, cluster_id: &str, id: &str) -> Result<Invite> {
        let done = sqlx::query(
            "UPDATE cluster_invites SET status = 'revoked' \
             WHERE id = $1 AND cluster_id = $2 AND status = 'open'",
        )
        .bind(id)
        .bind(cluster_id)
        .execute(&self.pool)
        .await?;
        let invite = self
            .invite(cluster_id, id)
            .await?
            .ok_or(RegistryError::NotFound("invite"))?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::Conflict(format!(
                "the invite is {}, not open",
                invite.status
            )));
        }
        Ok(invite)
    }

    /// Finds the invite whose hash matches `plain`, comparing hashes in constant time.
    async fn find_invite(&self, plain: &str) -> Result<Option<Invite>> {
        let sql = format!(
            "SELECT {INVITE_COLUMNS}, token_hash AS secret_hash FROM cluster_invites \
             WHERE lookup = $1"
        );
        let row = self
            .find_by_secret(SecretKind::ClusterInvite, plain, &sql)
            .await?;
        Ok(row.map(|r| sqlx::FromRow::from_row(&r)).transpose()?)
    }
}

/// Whether `invite` lets `tenant_id` subscribe to `cluster_id` now.
fn invite_usable(invite: &Invite, tenant_id: &str, cluster_id: &str) -> bool {
    invite.cluster_id == cluster_id
        && invite.status == InviteStatus::Open
        && invite.expires_at > now_ms()
        && invite
            .invited_tenant_id
            .as_deref()
            .is_none_or(|t| t == tenant_id)
}
