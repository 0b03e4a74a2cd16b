//! Clusters: the unit of deployment, of the marketplace, and of a Foghorn's authority.

use serde::Serialize;

use super::{now_ms, Registry, RegistryError, Result};
use crate::config::is_valid_label;
use crate::routing::Weights;

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            /// Every accepted spelling, for error messages and CLI help.
            pub const ALL: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = RegistryError;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(RegistryError::Invalid(format!(
                        "{other:?} is not one of {}", Self::ALL.join(", ")
                    ))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(
    /// Who runs the cluster and who shares it.
    Tier { SharedCommunity => "shared-community", SharedLb => "shared-lb", Dedicated => "dedicated" }
);
text_enum!(
    /// How usage of the cluster is billed.
    PricingModel {
        FreeUnmetered => "FREE_UNMETERED",
        TierInherit => "TIER_INHERIT",
        Metered => "METERED",
        Monthly => "MONTHLY",
    }
);
text_enum!(
    /// Who may see the cluster in the marketplace.
    Visibility { Public => "public", Unlisted => "unlisted", Private => "private" }
);

/// A cluster row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    pub id: String,
    pub name: String,
    pub region: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub tier: Tier,
    pub pricing_model: PricingModel,
    pub price_cents: i64,
    pub visibility: Visibility,
    pub requires_approval: bool,
    pub owner_tenant_id: Option<String>,
    /// Billing tiers this cluster is the official cluster of.
    pub official_for_tiers: Vec<String>,
    pub description: String,
    pub grpc_addr: String,
    pub http_url: String,
    /// Capacity hint: most edges the cluster takes (`None`: not stated).
    pub max_edges: Option<i64>,
    /// Capacity hint: bandwidth the cluster can serve, bytes per second like the edges' stats
    /// (`None`: not stated).
    pub max_bandwidth: Option<i64>,
    pub created_at: i64,
}

/// What it takes to create a cluster; the rest has defaults.
#[derive(Debug, Clone)]
pub struct NewCluster {
    pub id: String,
    pub name: String,
    pub region: String,
    pub tier: Tier,
    pub pricing_model: PricingModel,
    pub visibility: Visibility,
    pub requires_approval: bool,
    pub owner_tenant_id: Option<String>,
    /// Billing tiers this cluster is the official cluster of (`free`, `pro`, ...).
    pub official_for_tiers: Vec<String>,
    pub description: String,
    pub grpc_addr: String,
    pub http_url: String,
}

impl NewCluster {
    /// The row this creates, stamped `created_at`.
    pub(super) fn to_cluster(&self, created_at: i64) -> Cluster {
        Cluster {
            id: self.id.clone(),
            name: self.name.clone(),
            region: self.region.clone(),
            latitude: None,
            longitude: None,
            tier: self.tier,
            pricing_model: self.pricing_model,
            price_cents: 0,
            visibility: self.visibility,
            requires_approval: self.requires_approval,
            owner_tenant_id: self.owner_tenant_id.clone(),
            official_for_tiers: self.official_for_tiers.clone(),
            description: self.description.clone(),
            grpc_addr: self.grpc_addr.clone(),
            http_url: self.http_url.clone(),
            max_edges: None,
            max_bandwidth: None,
            created_at,
        }
    }

    /// A public platform cluster with default tier and pricing.
    pub fn platform(id: impl Into<String>, name: impl Into<String>) -> Self {
        NewCluster {
            id: id.into(),
            name: name.into(),
            region: String::new(),
            tier: Tier::SharedCommunity,
            pricing_model: PricingModel::FreeUnmetered,
            visibility: Visibility::Public,
            requires_approval: false,
            owner_tenant_id: None,
            official_for_tiers: Vec::new(),
            description: String::new(),
            grpc_addr: String::new(),
            http_url: String::new(),
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        if !is_valid_label(&self.id) {
            return Err(RegistryError::Invalid(format!(
                "cluster id {:?} must match [a-z0-9][a-z0-9-]{{0,62}}",
                self.id
            )));
        }
        if self.name.trim().is_empty() {
            return Err(RegistryError::Invalid(
                "cluster name must be 1 to 200 characters".into(),
            ));
        }
        super::check_text("cluster name", &self.name, 200)?;
        super::check_text("region", &self.region, 100)?;
        super::check_text("description", &self.description, 2000)?;
        super::check_text("gRPC address", &self.grpc_addr, 300)?;
        super::check_text("HTTP URL", &self.http_url, 300)?;
        if let Some(bad) = self
            .official_for_tiers
            .iter()
            .find(|t| !is_valid_billing_tier(t))
        {
            return Err(RegistryError::Invalid(format!(
                "billing tier {bad:?} must match [a-z0-9][a-z0-9-]{{0,62}}"
            )));
        }
        Ok(())
    }
}

/// Changes to a cluster's description, pricing, location and capacity; `None` leaves a field as
/// it is, `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterChanges {
    pub name: Option<String>,
    pub region: Option<String>,
    pub description: Option<String>,
    /// (latitude, longitude) in degrees.
    pub location: Option<Option<(f64, f64)>>,
    pub pricing_model: Option<PricingModel>,
    /// Cents per GB (`METERED`) or per month (`MONTHLY`).
    pub price_cents: Option<i64>,
    pub max_edges: Option<Option<i64>>,
    /// Bytes per second.
    pub max_bandwidth: Option<Option<i64>>,
    pub visibility: Option<Visibility>,
    pub requires_approval: Option<bool>,
    /// Replaces the billing tiers the cluster is official for (empty: none).
    pub official_for_tiers: Option<Vec<String>>,
}

impl ClusterChanges {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == ClusterChanges::default()
    }

    /// `cluster` with these changes, checked.
    fn apply(&self, mut cluster: Cluster) -> Result<Cluster> {
        if let Some(name) = &self.name {
            cluster.name = name.trim().to_string();
        }
        if let Some(region) = &self.region {
            cluster.region = region.trim().to_string();
        }
        if let Some(description) = &self.description {
            cluster.description = description.trim().to_string();
        }
        if let Some(location) = self.location {
            if let Some((lat, lon)) = location {
                if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                    return Err(RegistryError::Invalid(format!(
                        "location {lat},{lon} is not a latitude in -90..90 and a longitude in \
                         -180..180"
                    )));
                }
            }
            (cluster.latitude, cluster.longitude) = location.unzip();
        }
        if let Some(model) = self.pricing_model {
            cluster.pricing_model = model;
        }
        if let Some(price) = self.price_cents {
            if !(0..=100_000_000_000).contains(&price) {
                return Err(RegistryError::Invalid(
                    "price_cents must be between 0 and 100000000000".into(),
                ));
            }
            cluster.price_cents = price;
        }
        for (field, change, value) in [
            ("max_edges", self.max_edges, &mut cluster.max_edges),
            (
                "max_bandwidth",
                self.max_bandwidth,
                &mut cluster.max_bandwidth,
            ),
        ] {
            if let Some(new) = change {
                if new.is_some_and(|n| n <= 0) {
                    return Err(RegistryError::Invalid(format!(
                        "{field} must be a positive number (or cleared)"
                    )));
                }
                *value = new;
            }
        }
        if let Some(visibility) = self.visibility {
            cluster.visibility = visibility;
        }
        if let Some(approval) = self.requires_approval {
            cluster.requires_approval = approval;
        }
        if let Some(tiers) = &self.official_for_tiers {
            cluster.official_for_tiers = tiers.clone();
            cluster.official_for_tiers.sort();
            cluster.official_for_tiers.dedup();
        }
        Ok(cluster)
    }
}

/// Billing tiers are labels like cluster ids (`free`, `pro`, `enterprise`).
pub fn is_valid_billing_tier(tier: &str) -> bool {
    is_valid_label(tier)
}

pub(super) const CLUSTER_COLUMNS: &str = "id, name, region, latitude, longitude, tier, \
     pricing_model, price_cents, visibility, requires_approval, owner_tenant_id, \
     official_for_tiers, description, grpc_addr, http_url, max_edges, max_bandwidth_bps, \
     created_at";

impl<'r> sqlx::FromRow<'r, super::Row> for Cluster {
    fn from_row(row: &'r super::Row) -> sqlx::Result<Self> {
        use sqlx::Row;
        let parse = |col: &str, e: RegistryError| sqlx::Error::ColumnDecode {
            index: col.into(),
            source: Box::new(e),
        };
        Ok(Cluster {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            region: row.try_get("region")?,
            latitude: row.try_get("latitude")?,
            longitude: row.try_get("longitude")?,
            tier: row
                .try_get::<String, _>("tier")?
                .parse()
                .map_err(|e| parse("tier", e))?,
            pricing_model: row
                .try_get::<String, _>("pricing_model")?
                .parse()
                .map_err(|e| parse("pricing_model", e))?,
            price_cents: row.try_get("price_cents")?,
            visibility: row
                .try_get::<String, _>("visibility")?
                .parse()
                .map_err(|e| parse("visibility", e))?,
            requires_approval: row.try_get::<i64, _>("requires_approval")? != 0,
            owner_tenant_id: row.try_get("owner_tenant_id")?,
            official_for_tiers: row
                .try_get::<String, _>("official_for_tiers")?
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            description: row.try_get("description")?,
            grpc_addr: row.try_get("grpc_addr")?,
            http_url: row.try_get("http_url")?,
            // The column predates this field and says bps: it holds bytes per second.
            max_edges: row.try_get("max_edges")?,
            max_bandwidth: row.try_get("max_bandwidth_bps")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Inserts a validated cluster on `conn` (a pooled connection or a transaction).
pub(super) async fn insert_cluster(
    conn: &mut sqlx::AnyConnection,
    new: &NewCluster,
    if_absent: bool,
    created_at: i64,
) -> Result<()> {
    let sql = format!(
        "INSERT INTO clusters (id, name, region, tier, pricing_model, visibility, \
         requires_approval, owner_tenant_id, official_for_tiers, description, grpc_addr, \
         http_url, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13){}",
        if if_absent {
            " ON CONFLICT (id) DO NOTHING"
        } else {
            ""
        }
    );
    sqlx::query(&sql)
        .bind(&new.id)
        .bind(&new.name)
        .bind(&new.region)
        .bind(new.tier.as_str())
        .bind(new.pricing_model.as_str())
        .bind(new.visibility.as_str())
        .bind(i64::from(new.requires_approval))
        .bind(new.owner_tenant_id.clone())
        .bind(new.official_for_tiers.join(","))
        .bind(&new.description)
        .bind(&new.grpc_addr)
        .bind(&new.http_url)
        .bind(created_at)
        .execute(conn)
        .await
        .map_err(|e| RegistryError::unique(e, format!("cluster {:?} already exists", new.id)))?;
    Ok(())
}

impl Registry {
    /// Makes sure the registry has this Foghorn's own cluster (a public platform cluster, from
    /// `cluster.id`, `cluster.name` and `cluster.region`); an existing row is left as it is.
    pub async fn register_own_cluster(
        &self,
        config: &crate::config::Config,
    ) -> Result<Cluster, RegistryError> {
        let mut local = NewCluster::platform(&config.cluster.id, &config.cluster.name);
        local.region = config.cluster.region.clone();
        self.ensure_cluster(&local).await
    }

    /// Creates a cluster; `Conflict` when the id is taken or another cluster is already official
    /// for one of its billing tiers (a tier has one official cluster, or tenants could not tell
    /// which one they get).
    pub async fn create_cluster(&self, new: &NewCluster) -> Result<Cluster> {
        new.validate()?;
        for tier in &new.official_for_tiers {
            if let Some(other) = self.official_cluster_for_tier(tier).await? {
                return Err(RegistryError::Conflict(format!(
                    "cluster {other:?} is already the official cluster of billing tier {tier:?}"
                )));
            }
        }
        let mut conn = self.pool.acquire().await?;
        insert_cluster(&mut conn, new, false, now_ms()).await?;
        drop(conn);
        self.cluster(&new.id)
            .await?
            .ok_or(RegistryError::NotFound("cluster"))
    }

    /// Changes cluster `id` (see [`ClusterChanges`]) and returns it as stored; `NotFound` when it
    /// does not exist, `Conflict` when another cluster is already official for one of the tiers.
    /// Tenants keep their official cluster until their tier changes (DESIGN.md §3).
    pub async fn update_cluster(&self, id: &str, changes: &ClusterChanges) -> Result<Cluster> {
        let current = self
            .cluster(id)
            .await?
            .ok_or(RegistryError::NotFound("cluster"))?;
        let updated = changes.apply(current)?;
        // The same checks as a new cluster's.
        NewCluster {
            id: updated.id.clone(),
            name: updated.name.clone(),
            region: updated.region.clone(),
            tier: updated.tier,
            pricing_model: updated.pricing_model,
            visibility: updated.visibility,
            requires_approval: updated.requires_approval,
            owner_tenant_id: updated.owner_tenant_id.clone(),
            official_for_tiers: updated.official_for_tiers.clone(),
            description: updated.description.clone(),
            grpc_addr: updated.grpc_addr.clone(),
            http_url: updated.http_url.clone(),
        }
        .validate()?;
        for tier in changes.official_for_tiers.iter().flatten() {
            match self.official_cluster_for_tier(tier).await? {
                Some(other) if other != id => {
                    return Err(RegistryError::Conflict(format!(
                        "cluster {other:?} is already the official cluster of billing tier \
                         {tier:?}; take it off there first (foghorn admin cluster update --id \
                         {other} --official-for ...)"
                    )))
                }
                _ => {}
            }
        }
        sqlx::query(
            "UPDATE clusters SET name = $1, region = $2, description = $3, latitude = $4, \
             longitude = $5, pricing_model = $6, price_cents = $7, max_edges = $8, \
             max_bandwidth_bps = $9, visibility = $10, requires_approval = $11, \
             official_for_tiers = $12 WHERE id = $13",
        )
        .bind(&updated.name)
        .bind(&updated.region)
        .bind(&updated.description)
        .bind(updated.latitude)
        .bind(updated.longitude)
        .bind(updated.pricing_model.as_str())
        .bind(updated.price_cents)
        .bind(updated.max_edges)
        .bind(updated.max_bandwidth)
        .bind(updated.visibility.as_str())
        .bind(i64::from(updated.requires_approval))
        .bind(updated.official_for_tiers.join(","))
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.cluster(id)
            .await?
            .ok_or(RegistryError::NotFound("cluster"))
    }

    /// Creates the cluster unless one with that id exists; returns the stored row either way.
    pub async fn ensure_cluster(&self, new: &NewCluster) -> Result<Cluster> {
        new.validate()?;
        let mut conn = self.pool.acquire().await?;
        insert_cluster(&mut conn, new, true, now_ms()).await?;
        drop(conn);
        self.cluster(&new.id)
            .await?
            .ok_or(RegistryError::NotFound("cluster"))
    }

    /// The cluster with this id, if any.
    pub async fn cluster(&self, id: &str) -> Result<Option<Cluster>> {
        let sql = format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE id = $1");
        Ok(sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// All clusters, by id.
    pub async fn clusters(&self) -> Result<Vec<Cluster>> {
        let sql = format!("SELECT {CLUSTER_COLUMNS} FROM clusters ORDER BY id");
        Ok(sqlx::query_as(&sql).fetch_all(&self.pool).await?)
    }

    /// The score weights stored for cluster `id` (`None`: never changed, the defaults apply).
    pub async fn cluster_weights(&self, id: &str) -> Result<Option<Weights>> {
        let stored: Option<Option<String>> =
            sqlx::query_scalar("SELECT weights FROM clusters WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        match stored.flatten() {
            None => Ok(None),
            Some(json) => serde_json::from_str(&json).map(Some).map_err(|e| {
                RegistryError::Invalid(format!("stored weights of cluster {id:?}: {e}"))
            }),
        }
    }

    /// Stores the score weights of cluster `id`.
    pub async fn set_cluster_weights(&self, id: &str, weights: &Weights) -> Result<()> {
        let json = serde_json::to_string(weights).expect("weights serialize");
        let done = sqlx::query("UPDATE clusters SET weights = $1 WHERE id = $2")
            .bind(json)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound("cluster"));
        }
        Ok(())
    }
}
