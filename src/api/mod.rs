//! What tenants and operators can do: the operations behind the REST API (`/api/v1`) and the MCP
//! tools (`/mcp`).
//!
//! Each operation is one function taking the state, the authenticated caller and a typed input,
//! and returning a serializable answer or an [`ApiError`]. The transports only extract and
//! convert, so REST and MCP apply the same rules by construction. Inputs are read by the rules
//! of [`input`] (objects only, unknown fields refused, clearing said explicitly); their JSON
//! schemas (schemars) document both the OpenAPI operations and the MCP tools.
//!
//! Isolation: a cluster the caller may not see answers 404 exactly like one that does not exist;
//! a cluster it may see but not manage answers 403. Streams, subscriptions and tokens are always
//! looked up scoped to the caller's tenant.

mod clusters;
mod error;
pub mod input;
mod marketplace;
mod streams;
mod weights;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::is_valid_label;
use crate::registry::{Cluster, Principal, Role, Tenant};
use crate::state::AppState;

pub use clusters::*;
pub use error::ApiError;
pub use marketplace::*;
pub use streams::*;
pub use weights::*;

/// Longest TTL accepted for invites and enrollment tokens.
const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// Refuses ids that cannot be cluster ids before any lookup.
fn check_cluster_id(id: &str) -> Result<(), ApiError> {
    if is_valid_label(id) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{:?} is not a cluster id ([a-z0-9][a-z0-9-]{{0,62}})",
            truncate(id)
        )))
    }
}

/// Refuses ids that cannot be row ids (UUIDs) before any lookup.
fn check_uuid(what: &str, id: &str) -> Result<(), ApiError> {
    match uuid::Uuid::try_parse(id) {
        Ok(_) => Ok(()),
        Err(_) => Err(ApiError::BadRequest(format!(
            "{:?} is not a {what} id",
            truncate(id)
        ))),
    }
}

/// At most 64 characters of untrusted input, for error messages.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Parses a TTL like `30d` or `12h`, between 1 minute and a year.
fn parse_ttl(ttl: Option<&str>, default: std::time::Duration) -> Result<i64, ApiError> {
    let ttl = match ttl {
        None => default,
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            ApiError::BadRequest(format!(
                "ttl {:?}: {e} (write it like 30m, 12h, 7d)",
                truncate(text)
            ))
        })?,
    };
    if !(std::time::Duration::from_secs(60)..=MAX_TTL).contains(&ttl) {
        return Err(ApiError::BadRequest(
            "ttl must be between 1m and 365d".into(),
        ));
    }
    Ok(crate::registry::now_ms().saturating_add(ttl.as_millis() as i64))
}

/// 403 unless the caller holds an operator or admin token.
pub fn require_operator(caller: &Principal) -> Result<(), ApiError> {
    if caller.role.is_operator() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "an operator or admin token is required".into(),
        ))
    }
}

/// The caller's tenant row.
async fn caller_tenant(state: &AppState, caller: &Principal) -> Result<Tenant, ApiError> {
    state
        .registry
        .tenant(&caller.tenant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("tenant not found".into()))
}

/// Whether the caller sees every cluster (platform operators and admins).
fn sees_all(caller: &Principal) -> bool {
    caller.role.is_operator()
}

/// The cluster `id` as the caller may see it; 404 when hidden or absent alike.
async fn visible_cluster(
    state: &AppState,
    caller: &Principal,
    id: &str,
) -> Result<Cluster, ApiError> {
    check_cluster_id(id)?;
    let found = if sees_all(caller) {
        state.registry.cluster(id).await?
    } else {
        state
            .registry
            .visible_cluster(&caller.tenant_id, id)
            .await?
    };
    found.ok_or_else(|| ApiError::NotFound(format!("cluster {id:?} not found")))
}

/// The cluster `id` if the caller manages it: its owner, a platform operator for a platform
/// cluster, or an admin. 404 when the caller cannot see it, 403 when it can but does not manage it.
async fn managed_cluster(
    state: &AppState,
    caller: &Principal,
    id: &str,
) -> Result<Cluster, ApiError> {
    let cluster = visible_cluster(state, caller, id).await?;
    let manages = match &cluster.owner_tenant_id {
        Some(owner) => *owner == caller.tenant_id || caller.role == Role::Admin,
        None => caller.role.is_operator(),
    };
    if manages {
        Ok(cluster)
    } else {
        Err(ApiError::Forbidden(format!(
            "only the owner of cluster {id:?} (or a platform operator, for a platform cluster) \
             may do this"
        )))
    }
}

/// A cluster as shown to tenants: never its owner's identity unless it is the caller.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ClusterSummary {
    pub id: String,
    pub name: String,
    pub region: String,
    pub description: String,
    /// `shared-community`, `shared-lb` or `dedicated`.
    pub tier: String,
    /// `FREE_UNMETERED`, `TIER_INHERIT`, `METERED` or `MONTHLY`.
    pub pricing_model: String,
    /// Price in cents for `METERED` (per GB) and `MONTHLY` (per month) clusters.
    pub price_cents: i64,
    /// `public`, `unlisted` or `private`.
    pub visibility: String,
    pub requires_approval: bool,
    /// Whether the caller's tenant owns the cluster.
    pub owned: bool,
    /// Where the cluster is, degrees; absent when not stated.
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// Capacity hint: most edges the cluster takes.
    pub max_edges: Option<i64>,
    /// Capacity hint: bandwidth the cluster can serve, bytes per second.
    pub max_bandwidth: Option<i64>,
}

impl ClusterSummary {
    fn of(cluster: &Cluster, caller_tenant: &str) -> Self {
        ClusterSummary {
            id: cluster.id.clone(),
            name: cluster.name.clone(),
            region: cluster.region.clone(),
            description: cluster.description.clone(),
            tier: cluster.tier.to_string(),
            pricing_model: cluster.pricing_model.to_string(),
            price_cents: cluster.price_cents,
            visibility: cluster.visibility.to_string(),
            requires_approval: cluster.requires_approval,
            owned: cluster.owner_tenant_id.as_deref() == Some(caller_tenant),
            latitude: cluster.latitude,
            longitude: cluster.longitude,
            max_edges: cluster.max_edges,
            max_bandwidth: cluster.max_bandwidth,
        }
    }
}

/// Input naming one cluster.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterRef {
    /// Cluster id, e.g. `eu-west`.
    pub cluster_id: String,
}
