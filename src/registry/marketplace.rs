//! The marketplace and a tenant's network: which clusters a tenant sees and uses, its preferred and
//! official cluster, private clusters, and the utilization each cluster's Foghorn publishes.

use serde::Serialize;
use sqlx::Arguments as _;
use sqlx::Row as _;

use super::clusters::{insert_cluster, CLUSTER_COLUMNS};
use super::enrollment::insert_enrollment_token;
use super::subscriptions::{lock_tenant, revalidate_preferred, usable_by, visible_to};
use super::{
    now_ms, Cluster, EnrollmentToken, NewCluster, NewEnrollmentToken, PricingModel, Registry,
    RegistryError, Result, Subscription, SubscriptionStatus, Tenant, Tier, Visibility,
};
use crate::secret;

/// Filters and page of a marketplace listing. Clusters come ordered by id; `after` is the last id
/// of the previous page.
#[derive(Debug, Clone, Default)]
pub struct MarketplaceFilter {
    pub pricing_model: Option<PricingModel>,
    pub tier: Option<Tier>,
    pub region: Option<String>,
    pub after: Option<String>,
    pub limit: u32,
}

/// Load of a cluster's healthy edges, as its Foghorn last published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClusterUtilization {
    /// Edges with an open control stream.
    pub edges: i64,
    /// Edges that are routable right now; the load below sums these.
    pub healthy_edges: i64,
    /// Bytes per second.
    pub bw_used: i64,
    /// Bytes per second.
    pub bw_limit: i64,
    pub viewers: i64,
    /// Unix milliseconds.
    pub reported_at: i64,
}

impl ClusterUtilization {
    /// The live load of this Foghorn's edges, stamped `at` (Unix milliseconds).
    pub fn from_live(load: &crate::edge::Utilization, at: i64) -> Self {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        ClusterUtilization {
            edges: n(load.edges),
            healthy_edges: n(load.healthy_edges),
            bw_used: n(load.bw_used),
            bw_limit: n(load.bw_limit),
            viewers: n(load.viewers),
            reported_at: at,
        }
    }
}

/// One marketplace entry: the cluster, where the caller stands with it, and its last published load.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketplaceRow {
    pub cluster: Cluster,
    pub subscription: Option<SubscriptionStatus>,
    pub utilization: Option<ClusterUtilization>,
}

/// What a tenant asks for when it creates a private cluster.
#[derive(Debug, Clone)]
pub struct NewPrivateCluster {
    pub tenant_id: String,
    pub name: String,
    pub region: String,
    pub description: String,
    /// Expiry of the first enrollment token, Unix milliseconds.
    pub enrollment_expires_at: i64,
    /// The cell that will serve it ([`super::choose_cell`]).
    pub cell_id: String,
}

/// A private cluster just created: the cluster, the owner's subscription and the first enrollment
/// token, whose secret is shown once.
#[derive(Debug, Clone)]
pub struct PrivateCluster {
    pub cluster: Cluster,
    pub subscription: Subscription,
    pub enrollment_token: EnrollmentToken,
    pub enrollment_secret: String,
}

/// `CLUSTER_COLUMNS` qualified with the alias `c`, for queries that join.
pub(super) fn cluster_columns_of_c() -> String {
    CLUSTER_COLUMNS
        .split(',')
        .map(|col| format!("c.{}", col.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds `value` to a query built at run time and returns its placeholder (`$n`).
fn placeholder<'q, T>(args: &mut sqlx::any::AnyArguments<'q>, value: T) -> String
where
    T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    args.add(value).expect("text and integers always bind");
    format!("${}", args.len())
}

/// A DNS label from a display name: lowercase ASCII letters and digits, other runs become `-`.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for ch in name.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= 40 {
            break;
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "private".into()
    } else {
        out
    }
}

impl Registry {
    /// The clusters `tenant_id` may see (all of them with `see_all`), filtered and paged.
    pub async fn marketplace(
        &self,
        tenant_id: &str,
        see_all: bool,
        filter: &MarketplaceFilter,
    ) -> Result<Vec<MarketplaceRow>> {
        let mut args = sqlx::any::AnyArguments::default();
        let tenant = placeholder(&mut args, tenant_id.to_string());
        let mut conditions = Vec::new();
        if !see_all {
            let now = placeholder(&mut args, now_ms());
            conditions.push(visible_to(&tenant, &now));
        }
        if let Some(model) = filter.pricing_model {
            let model = placeholder(&mut args, model.as_str());
            conditions.push(format!("c.pricing_model = {model}"));
        }
        if let Some(tier) = filter.tier {
            let tier = placeholder(&mut args, tier.as_str());
            conditions.push(format!("c.tier = {tier}"));
        }
        if let Some(region) = &filter.region {
            let region = placeholder(&mut args, region.clone());
            conditions.push(format!("c.region = {region}"));
        }
        if let Some(after) = &filter.after {
            let after = placeholder(&mut args, after.clone());
            conditions.push(format!("c.id > {after}"));
        }
        let limit = placeholder(&mut args, i64::from(filter.limit.clamp(1, 1000)));
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {}, s.status AS subscription_status, u.edges AS u_edges, \
             u.healthy_edges AS u_healthy_edges, u.bw_used AS u_bw_used, \
             u.bw_limit AS u_bw_limit, u.viewers AS u_viewers, \
             u.reported_at AS u_reported_at \
             FROM clusters c \
             LEFT JOIN subscriptions s ON s.cluster_id = c.id AND s.tenant_id = {tenant} \
             LEFT JOIN cluster_utilization u ON u.cluster_id = c.id \
             {where_clause} ORDER BY c.id LIMIT {limit}",
            cluster_columns_of_c()
        );
        let rows = sqlx::query_with(&sql, args).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let cluster: Cluster = sqlx::FromRow::from_row(row)?;
                let subscription = row
                    .try_get::<Option<String>, _>("subscription_status")?
                    .map(|s| s.parse::<SubscriptionStatus>())
                    .transpose()?;
                let utilization = match row.try_get::<Option<i64>, _>("u_reported_at")? {
                    None => None,
                    Some(reported_at) => Some(ClusterUtilization {
                        edges: row.try_get("u_edges")?,
                        healthy_edges: row.try_get("u_healthy_edges")?,
                        bw_used: row.try_get("u_bw_used")?,
                        bw_limit: row.try_get("u_bw_limit")?,
                        viewers: row.try_get("u_viewers")?,
                        reported_at,
                    }),
                };
                Ok(MarketplaceRow {
                    cluster,
                    subscription,
                    utilization,
                })
            })
            .collect()
    }

    /// Publishes the live load of `cluster_id` for the other Foghorns' marketplaces.
    pub async fn report_utilization(
        &self,
        cluster_id: &str,
        load: &ClusterUtilization,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO cluster_utilization (cluster_id, edges, healthy_edges, bw_used, \
             bw_limit, viewers, reported_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (cluster_id) DO UPDATE SET edges = excluded.edges, \
             healthy_edges = excluded.healthy_edges, bw_used = excluded.bw_used, \
             bw_limit = excluded.bw_limit, viewers = excluded.viewers, \
             reported_at = excluded.reported_at",
        )
        .bind(cluster_id)
        .bind(load.edges)
        .bind(load.healthy_edges)
        .bind(load.bw_used)
        .bind(load.bw_limit)
        .bind(load.viewers)
        .bind(load.reported_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The clusters a tenant may stream through: owned, official, actively subscribed; by id.
    pub async fn usable_clusters(&self, tenant_id: &str) -> Result<Vec<Cluster>> {
        let sql = format!(
            "SELECT {CLUSTER_COLUMNS} FROM clusters c WHERE {} ORDER BY c.id",
            usable_by("$1")
        );
        Ok(sqlx::query_as(&sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Sets (or with `None` clears, falling back to the official cluster) the preferred cluster.
    ///
    /// One conditional `UPDATE` under the tenant's row lock (see `lock_tenant`), so a subscription
    /// cancelled meanwhile cannot slip through: `Conflict` unless the tenant owns the cluster, it
    /// is its official cluster, or it holds an active subscription to it.
    pub async fn set_preferred_cluster(
        &self,
        tenant_id: &str,
        cluster_id: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if !lock_tenant(&mut tx, tenant_id).await? {
            return Err(RegistryError::NotFound("tenant"));
        }
        let done = match cluster_id {
            Some(cluster_id) => {
                let sql = format!(
                    "UPDATE tenants SET preferred_cluster_id = $2 WHERE id = $1 AND EXISTS \
                     (SELECT 1 FROM clusters c WHERE c.id = $2 AND {})",
                    usable_by("$1")
                );
                sqlx::query(&sql)
                    .bind(tenant_id)
                    .bind(cluster_id)
                    .execute(&mut *tx)
                    .await?
            }
            None => {
                sqlx::query("UPDATE tenants SET preferred_cluster_id = NULL WHERE id = $1")
                    .bind(tenant_id)
                    .execute(&mut *tx)
                    .await?
            }
        };
        tx.commit().await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::Conflict(format!(
                "cluster {:?} cannot be your preferred cluster: subscribe to it (and be approved) \
                 first; only a cluster you are actively subscribed to, own, or your official \
                 cluster can be preferred",
                cluster_id.unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// The cluster that is official for `billing_tier`: the lowest id among those that list it.
    pub async fn official_cluster_for_tier(&self, billing_tier: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM clusters WHERE ',' || official_for_tiers || ',' LIKE $1 \
             ORDER BY id LIMIT 1",
        )
        .bind(format!("%,{billing_tier},%"))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Changes a tenant's billing tier and, with it, its official cluster, in one transaction; a
    /// preferred cluster the tenant may no longer use is cleared. `Conflict` when no cluster is
    /// official for the tier.
    pub async fn set_billing_tier(&self, tenant_id: &str, billing_tier: &str) -> Result<Tenant> {
        if !super::clusters::is_valid_billing_tier(billing_tier) {
            return Err(RegistryError::Invalid(format!(
                "billing tier {billing_tier:?} must match [a-z0-9][a-z0-9-]{{0,62}}"
            )));
        }
        let official = self
            .official_cluster_for_tier(billing_tier)
            .await?
            .ok_or_else(|| {
                RegistryError::Conflict(format!(
                    "no cluster is official for billing tier {billing_tier:?}; mark one with \
                     `foghorn admin cluster update --id ID --official-for {billing_tier}` first"
                ))
            })?;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE tenants SET billing_tier = $1, official_cluster_id = $2 WHERE id = $3",
        )
        .bind(billing_tier)
        .bind(&official)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound("tenant"));
        }
        revalidate_preferred(&mut tx, tenant_id).await?;
        tx.commit().await?;
        self.tenant(tenant_id)
            .await?
            .ok_or(RegistryError::NotFound("tenant"))
    }

    /// Creates a private cluster, its owner's active subscription and a first enrollment token,
    /// all in one transaction (DESIGN.md §3).
    pub async fn create_private_cluster(&self, new: &NewPrivateCluster) -> Result<PrivateCluster> {
        let base = slug(&new.name);
        // The id is the name's slug and 24 random bits; a clash is retried with new bits.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self
                .try_create_private_cluster(new, format!("{base}-{}", secret::random_hex(3)))
                .await
            {
                Err(RegistryError::Conflict(_)) if attempts < 4 => continue,
                other => return other,
            }
        }
    }

    async fn try_create_private_cluster(
        &self,
        new: &NewPrivateCluster,
        id: String,
    ) -> Result<PrivateCluster> {
        let cluster = NewCluster {
            id,
            name: new.name.trim().to_string(),
            region: new.region.trim().to_string(),
            tier: Tier::SharedLb,
            pricing_model: PricingModel::TierInherit,
            visibility: Visibility::Private,
            requires_approval: true,
            owner_tenant_id: Some(new.tenant_id.clone()),
            official_for_tiers: Vec::new(),
            description: new.description.trim().to_string(),
            grpc_addr: String::new(),
            http_url: String::new(),
        };
        cluster.validate()?;
        let token = NewEnrollmentToken {
            cluster_id: cluster.id.clone(),
            tenant_id: new.tenant_id.clone(),
            usage_limit: 1,
            expires_at: new.enrollment_expires_at,
            expected_cidr: None,
        };
        token.validate()?;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        insert_cluster(&mut tx, &cluster, false, now).await?;
        sqlx::query("UPDATE clusters SET cell_id = $1 WHERE id = $2")
            .bind(&new.cell_id)
            .bind(&cluster.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO subscriptions (tenant_id, cluster_id, status, requested_at, decided_at, \
             decided_by) VALUES ($1, $2, 'active', $3, $3, $1)",
        )
        .bind(&new.tenant_id)
        .bind(&cluster.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let (enrollment_token, enrollment_secret) =
            insert_enrollment_token(&mut tx, &token).await?;
        tx.commit().await?;
        // Built from what was written: once committed, a failed re-read must not lose the
        // enrollment token, which is shown only in this answer.
        Ok(PrivateCluster {
            subscription: Subscription {
                tenant_id: new.tenant_id.clone(),
                cluster_id: cluster.id.clone(),
                status: SubscriptionStatus::Active,
                requested_at: now,
                decided_at: Some(now),
                decided_by: Some(new.tenant_id.clone()),
                invite_id: None,
            },
            cluster: cluster.to_cluster(now),
            enrollment_token,
            enrollment_secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::slug;

    #[test]
    fn slugs_are_dns_labels() {
        assert_eq!(slug("Acme Studio — Berlin #2"), "acme-studio-berlin-2");
        assert_eq!(slug("  ***  "), "private");
        assert_eq!(slug("ÄÖÜ"), "private");
        let long = slug(&"x".repeat(200));
        assert!(long.len() <= 40);
        assert!(crate::config::is_valid_label(&format!("{long}-abcdef")));
    }
}
