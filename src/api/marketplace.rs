//! Browsing the marketplace, the tenant's network, and its preferred cluster.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{caller_tenant, check_cluster_id, truncate, ClusterSummary};
use crate::api::ApiError;
use crate::registry::{
    now_ms, Cluster, ClusterUtilization, MarketplaceFilter, Principal, SubscriptionStatus,
};
use crate::state::AppState;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

/// Filters and page of `GET /marketplace` and the `browse_marketplace` tool.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketplaceQuery {
    /// Only clusters with this pricing model (`FREE_UNMETERED`, `TIER_INHERIT`, `METERED`,
    /// `MONTHLY`).
    pub pricing_model: Option<String>,
    /// Only clusters of this tier (`shared-community`, `shared-lb`, `dedicated`).
    pub tier: Option<String>,
    /// Only clusters in this region.
    pub region: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

/// One page of the marketplace.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MarketplacePage {
    pub clusters: Vec<MarketplaceCluster>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A marketplace entry.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MarketplaceCluster {
    #[serde(flatten)]
    pub cluster: ClusterSummary,
    /// Where the caller stands: `pending`, `active`, `rejected`, `cancelled`, or absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_status: Option<String>,
    /// Live load; absent when the cluster's Foghorn has never reported.
    pub utilization: Option<Utilization>,
}

/// Load of a cluster's healthy edges.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
pub struct Utilization {
    /// Edges with an open control stream.
    pub edges: i64,
    /// Edges routable right now; bandwidth and viewers are summed over these.
    pub healthy_edges: i64,
    /// Bytes per second sent by the healthy edges.
    pub bandwidth_used: i64,
    /// Bytes per second the healthy edges may send.
    pub bandwidth_limit: i64,
    /// `bandwidth_used / bandwidth_limit`, 0 when there is no limit.
    pub bandwidth_utilization: f64,
    pub viewers: i64,
    /// `live`: this Foghorn's own edge state; `reported`: the cluster's Foghorn published it
    /// `age_ms` ago.
    pub source: &'static str,
    pub age_ms: i64,
}

impl Utilization {
    fn of(load: &ClusterUtilization, source: &'static str) -> Self {
        Utilization {
            edges: load.edges,
            healthy_edges: load.healthy_edges,
            bandwidth_used: load.bw_used,
            bandwidth_limit: load.bw_limit,
            bandwidth_utilization: if load.bw_limit > 0 {
                load.bw_used as f64 / load.bw_limit as f64
            } else {
                0.0
            },
            viewers: load.viewers,
            source,
            age_ms: (now_ms() - load.reported_at).max(0),
        }
    }
}

/// The load of `cluster`: live for the clusters this Foghorn's cell serves, else as last
/// published.
fn utilization_of(
    state: &AppState,
    cluster: &Cluster,
    reported: Option<&ClusterUtilization>,
) -> Option<Utilization> {
    match state.served(&cluster.id) {
        Some(served) => {
            let live = ClusterUtilization::from_live(&served.edges.utilization(), now_ms());
            Some(Utilization::of(&live, "live"))
        }
        None => reported.map(|load| Utilization::of(load, "reported")),
    }
}

/// `GET /marketplace`, `browse_marketplace`: the clusters the caller may see (DESIGN.md §3).
pub async fn browse_marketplace(
    state: &AppState,
    caller: &Principal,
    query: MarketplaceQuery,
) -> Result<MarketplacePage, ApiError> {
    let bad = |e: crate::registry::RegistryError| ApiError::BadRequest(e.to_string());
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    if let Some(cursor) = &query.cursor {
        check_cluster_id(cursor).map_err(|_| {
            ApiError::BadRequest(format!("cursor {:?} is not valid", truncate(cursor)))
        })?;
    }
    if let Some(region) = &query.region {
        crate::registry::check_text("region", region, 100)?;
    }
    let filter = MarketplaceFilter {
        pricing_model: query
            .pricing_model
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(bad)?,
        tier: query
            .tier
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(bad)?,
        region: query.region,
        after: query.cursor,
        // One more than asked tells whether another page follows.
        limit: limit + 1,
    };
    let mut rows = state
        .registry
        .marketplace(&caller.tenant_id, super::sees_all(caller), &filter)
        .await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.cluster.id.clone())
    } else {
        None
    };
    let clusters = rows
        .iter()
        .map(|row| MarketplaceCluster {
            cluster: ClusterSummary::of(&row.cluster, &caller.tenant_id),
            subscription_status: row.subscription.map(|s| s.to_string()),
            utilization: utilization_of(state, &row.cluster, row.utilization.as_ref()),
        })
        .collect();
    Ok(MarketplacePage {
        clusters,
        next_cursor,
    })
}

/// Input of `PUT /tenant/preferred-cluster` and `set_preferred_cluster`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPreferredCluster {
    /// A cluster the tenant is actively subscribed to, owns, or its official cluster; `null`
    /// goes back to the official cluster. Required: `{}` changes nothing and is refused.
    #[serde(deserialize_with = "super::input::present")]
    #[schemars(with = "super::input::Nullable<String>")]
    pub cluster_id: Option<String>,
}

/// `GET /tenant/network`: the clusters a tenant streams through.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Network {
    pub tenant_id: String,
    pub billing_tier: String,
    pub official_cluster_id: String,
    /// The preferred cluster (the official one unless set).
    pub preferred_cluster_id: String,
    /// Official, preferred, owned and actively subscribed clusters, by id.
    pub clusters: Vec<NetworkCluster>,
}

/// One cluster of a tenant's network and how it peers.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NetworkCluster {
    #[serde(flatten)]
    pub cluster: ClusterSummary,
    /// Any of `official`, `preferred`, `owned`, `subscribed`.
    pub roles: Vec<&'static str>,
    /// `always-on` for the preferred and official clusters when they differ, `on-demand` for
    /// other subscribed clusters, `none` when no peering is needed.
    pub peering: &'static str,
    /// The federation channel between the Foghorn answering and this cluster: `local` (the
    /// cluster answering), `open`, `connecting` (being dialed, or needed by a stream), `down`
    /// (the last channel failed and the peer has not dialed back) or `none`.
    pub channel: &'static str,
    /// Whether this cluster's edges are scored for viewers here now (its last summary is within
    /// its TTLs); always true for the cluster answering.
    pub edges_scored: bool,
}

/// `GET /tenant/network`.
pub async fn network(state: &AppState, caller: &Principal) -> Result<Network, ApiError> {
    let tenant = caller_tenant(state, caller).await?;
    let preferred = tenant
        .preferred_cluster_id
        .clone()
        .unwrap_or_else(|| tenant.official_cluster_id.clone());
    let subscriptions = state.registry.subscriptions_of_tenant(&tenant.id).await?;
    let clusters = state.registry.usable_clusters(&tenant.id).await?;
    let clusters = clusters
        .iter()
        .map(|cluster| {
            let mut roles = Vec::new();
            if cluster.id == tenant.official_cluster_id {
                roles.push("official");
            }
            if cluster.id == preferred {
                roles.push("preferred");
            }
            if cluster.owner_tenant_id.as_deref() == Some(tenant.id.as_str()) {
                roles.push("owned");
            }
            if subscriptions
                .iter()
                .any(|s| s.cluster_id == cluster.id && s.status == SubscriptionStatus::Active)
            {
                roles.push("subscribed");
            }
            // The preferred and official clusters peer permanently when they are two clusters.
            let pair = roles.contains(&"official") || roles.contains(&"preferred");
            let peering = match (pair, preferred != tenant.official_cluster_id) {
                (true, true) => "always-on",
                (true, false) => "none",
                (false, _) => "on-demand",
            };
            let here = cluster.id == state.config.cluster.id;
            let peers = &state.federation.peers;
            NetworkCluster {
                cluster: ClusterSummary::of(cluster, &tenant.id),
                roles,
                peering,
                channel: if here {
                    "local"
                } else {
                    peers.channel_state(&cluster.id)
                },
                edges_scored: here || peers.is_scored(&cluster.id),
            }
        })
        .collect();
    Ok(Network {
        tenant_id: tenant.id,
        billing_tier: tenant.billing_tier,
        official_cluster_id: tenant.official_cluster_id,
        preferred_cluster_id: preferred,
        clusters,
    })
}

/// `PUT /tenant/preferred-cluster`, `set_preferred_cluster`; answers the new network.
pub async fn set_preferred_cluster(
    state: &AppState,
    caller: &Principal,
    input: SetPreferredCluster,
) -> Result<Network, ApiError> {
    if let Some(id) = &input.cluster_id {
        check_cluster_id(id)?;
    }
    state
        .registry
        .set_preferred_cluster(&caller.tenant_id, input.cluster_id.as_deref())
        .await?;
    network(state, caller).await
}
