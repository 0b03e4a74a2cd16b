//! Subscriptions, approval, invites, private clusters, enrollment tokens, nodes and billing tiers.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    check_cluster_id, check_uuid, managed_cluster, parse_ttl, sees_all, truncate, visible_cluster,
    ClusterSummary,
};
use crate::api::ApiError;
use crate::edge::Stats;
use crate::registry::{
    choose_cell, Cell, ClusterChanges, EnrollmentToken, Invite, NewEnrollmentToken,
    NewPrivateCluster, Placement, Principal, Registry, Subscription, SubscriptionStatus, Tenant,
};
use crate::routing::Position;
use crate::state::AppState;

/// Default lifetime of an enrollment token (DESIGN.md §3).
const ENROLLMENT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default lifetime of an invite.
const INVITE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Input of `POST /subscriptions` and `subscribe_to_cluster`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    pub cluster_id: String,
    /// An invite (`inv_...`) from the cluster's owner: activates at once, even when the cluster
    /// requires approval or is not listed.
    pub invite_token: Option<String>,
}

/// A subscription as its tenant sees it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SubscriptionView {
    pub cluster_id: String,
    /// `pending`, `active`, `rejected` or `cancelled`; only `active` counts as subscribed.
    pub status: String,
    pub requested_at: i64,
    pub decided_at: Option<i64>,
    /// Whether an invite activated it.
    pub via_invite: bool,
}

impl From<&Subscription> for SubscriptionView {
    fn from(s: &Subscription) -> Self {
        SubscriptionView {
            cluster_id: s.cluster_id.clone(),
            status: s.status.to_string(),
            requested_at: s.requested_at,
            decided_at: s.decided_at,
            via_invite: s.invite_id.is_some(),
        }
    }
}

/// The answer to a subscribe call.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SubscribeResult {
    #[serde(flatten)]
    pub subscription: SubscriptionView,
    /// False when the tenant already had this subscription.
    pub changed: bool,
    /// What happens next, in words.
    pub message: String,
}

/// `POST /subscriptions`, `subscribe_to_cluster`: Connect (`active`) or Request Access (`pending`).
pub async fn subscribe(
    state: &AppState,
    caller: &Principal,
    input: Subscribe,
) -> Result<SubscribeResult, ApiError> {
    check_cluster_id(&input.cluster_id)?;
    if input.invite_token.as_ref().is_some_and(|t| t.len() > 200) {
        return Err(ApiError::BadRequest("invite_token is too long".into()));
    }
    let done = state
        .registry
        .subscribe(
            &caller.tenant_id,
            &input.cluster_id,
            input.invite_token.as_deref(),
            sees_all(caller),
        )
        .await?;
    let approver = if done.platform_cluster {
        "a platform operator"
    } else {
        "its owner"
    };
    let message = match (done.subscription.status, done.changed) {
        (SubscriptionStatus::Active, _) => format!(
            "subscribed to {}; set it as your preferred cluster with \
             PUT /api/v1/tenant/preferred-cluster",
            input.cluster_id
        ),
        (_, true) => format!(
            "access to {} requested; {approver} must approve it",
            input.cluster_id
        ),
        (_, false) => format!(
            "access to {} was already requested; {approver} must approve it",
            input.cluster_id
        ),
    };
    Ok(SubscribeResult {
        subscription: SubscriptionView::from(&done.subscription),
        changed: done.changed,
        message,
    })
}

/// `GET /subscriptions`: every subscription of the caller's tenant.
pub async fn list_subscriptions(
    state: &AppState,
    caller: &Principal,
) -> Result<Vec<SubscriptionView>, ApiError> {
    let all = state
        .registry
        .subscriptions_of_tenant(&caller.tenant_id)
        .await?;
    Ok(all.iter().map(SubscriptionView::from).collect())
}

/// `DELETE /subscriptions/{cluster_id}`.
pub async fn cancel_subscription(
    state: &AppState,
    caller: &Principal,
    cluster_id: &str,
) -> Result<SubscriptionView, ApiError> {
    check_cluster_id(cluster_id)?;
    let cancelled = state
        .registry
        .cancel_subscription(&caller.tenant_id, cluster_id)
        .await?;
    Ok(SubscriptionView::from(&cancelled))
}

/// A subscription request as the cluster's manager sees it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SubscriptionRequest {
    pub tenant_id: String,
    pub tenant_name: String,
    pub cluster_id: String,
    pub status: String,
    pub requested_at: i64,
    pub decided_at: Option<i64>,
}

async fn request_view(state: &AppState, s: &Subscription) -> Result<SubscriptionRequest, ApiError> {
    let tenant_name = state
        .registry
        .tenant(&s.tenant_id)
        .await?
        .map(|t| t.name)
        .unwrap_or_default();
    Ok(SubscriptionRequest {
        tenant_id: s.tenant_id.clone(),
        tenant_name,
        cluster_id: s.cluster_id.clone(),
        status: s.status.to_string(),
        requested_at: s.requested_at,
        decided_at: s.decided_at,
    })
}

/// `GET /clusters/{id}/subscription-requests`: pending requests, for the cluster's manager.
pub async fn subscription_requests(
    state: &AppState,
    caller: &Principal,
    cluster_id: &str,
) -> Result<Vec<SubscriptionRequest>, ApiError> {
    managed_cluster(state, caller, cluster_id).await?;
    let pending = state
        .registry
        .subscriptions_of_cluster(cluster_id, SubscriptionStatus::Pending)
        .await?;
    let mut out = Vec::with_capacity(pending.len());
    for s in &pending {
        out.push(request_view(state, s).await?);
    }
    Ok(out)
}

/// `POST /clusters/{id}/subscription-requests/{tenant}/approve|reject`.
pub async fn decide_subscription(
    state: &AppState,
    caller: &Principal,
    cluster_id: &str,
    tenant_id: &str,
    approve: bool,
) -> Result<SubscriptionRequest, ApiError> {
    managed_cluster(state, caller, cluster_id).await?;
    check_uuid("tenant", tenant_id)?;
    let decided = state
        .registry
        .decide_subscription(cluster_id, tenant_id, approve, &caller.tenant_id)
        .await?;
    request_view(state, &decided).await
}

/// Input of `POST /clusters/{id}/invites`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvite {
    /// Only this tenant may use the invite (it also lets that tenant see the cluster).
    pub tenant_id: Option<String>,
    /// Lifetime like `7d` (default) or `12h`; 1m to 365d.
    pub ttl: Option<String>,
}

/// An invite as its cluster's manager sees it (never the token).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InviteView {
    pub id: String,
    pub cluster_id: String,
    pub tenant_id: Option<String>,
    /// `open`, `used` or `revoked`.
    pub status: String,
    pub expires_at: i64,
    pub used_by: Option<String>,
    pub used_at: Option<i64>,
    pub created_at: i64,
}

impl From<&Invite> for InviteView {
    fn from(i: &Invite) -> Self {
        InviteView {
            id: i.id.clone(),
            cluster_id: i.cluster_id.clone(),
            tenant_id: i.invited_tenant_id.clone(),
            status: i.status.to_string(),
            expires_at: i.expires_at,
            used_by: i.used_by.clone(),
            used_at: i.used_at,
            created_at: i.created_at,
        }
    }
}

/// A new invite with its token, shown once.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InviteCreated {
    pub invite: InviteView,
    /// Give this to the invited tenant; it is not shown again.
    pub token: String,
}

/// `POST /clusters/{id}/invites`.
pub async fn create_invite(
    state: &AppState,
    caller: &Principal,
    cluster_id: &str,
    input: CreateInvite,
) -> Result<InviteCreated, ApiError> {
    managed_cluster(state, caller, cluster_id).await?;
    if let Some(tenant) = &input.tenant_id {
        check_uuid("tenant", tenant)?;
    }
    let expires_at = parse_ttl(input.ttl.as_deref(), INVITE_TTL)?;
    let (invite, token) = state
        .registry
        .create_invite(
            cluster_id,
            input.tenant_id.as_deref(),
            expires_at,
            &caller.tenant_id,
        )
        .await?;
    Ok(InviteCreated {
        invite: InviteView::from(&invite),
        token,
    })
}

/// `GET /clusters/{id}/invites`.
pub async fn list_invites(
    state: &AppState,
    caller: &Principal,
    cluster_id: &str,
) -> Result<Vec<InviteView>, ApiError> {
    managed_cluster(state, caller, cluster_id).await?;
    let invites = state.registry.invites_of_cluster(cluster_id).await?;
    Ok(invites.iter().map(InviteView::from).collect())
}

/// `DELETE /clusters/{id}/invites/{invite_id}`.
pub async fn revoke_invite(
    state: &AppState,
    caller: &Principal,
    cluster_id: &str,
    invite_id: &str,
) -> Result<InviteView, ApiError> {
    managed_cluster(state, caller, cluster_id).await?;
    check_uuid("invite", invite_id)?;
    let invite = state.registry.revoke_invite(cluster_id, invite_id).await?;
    Ok(InviteView::from(&invite))
}

/// Input of `POST /private-clusters` and `create_private_cluster`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePrivateCluster {
    /// Display name; the cluster id is derived from it.
    pub name: String,
    /// A region label; Foghorn cells whose home cluster is in this region serve it first.
    pub region: Option<String>,
    pub description: Option<String>,
    /// The Foghorn cell to serve it (a cell is named by its home cluster's id); by default the
    /// live cell nearest to you.
    pub cell: Option<String>,
}

/// An enrollment token as listed (never the secret).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EnrollmentTokenView {
    pub id: String,
    pub cluster_id: String,
    pub usage_limit: i64,
    pub usage_count: i64,
    pub expires_at: i64,
    pub expected_cidr: Option<String>,
}

impl From<&EnrollmentToken> for EnrollmentTokenView {
    fn from(t: &EnrollmentToken) -> Self {
        EnrollmentTokenView {
            id: t.id.clone(),
            cluster_id: t.cluster_id.clone(),
            usage_limit: t.usage_limit,
            usage_count: t.usage_count,
            expires_at: t.expires_at,
            expected_cidr: t.expected_cidr.clone(),
        }
    }
}

/// A new enrollment token with its secret, shown once, and how to use it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EnrollmentTokenCreated {
    #[serde(flatten)]
    pub enrollment_token: EnrollmentTokenView,
    /// The secret (`enroll_...`); it is not shown again.
    pub token: String,
    /// Provisions an edge with it over SSH.
    pub provision_command: String,
}

/// `foghorn` names where the edges dial (the serving cell's gRPC address) when it is known.
fn token_created(
    token: &EnrollmentToken,
    secret: String,
    foghorn: Option<&str>,
) -> EnrollmentTokenCreated {
    let foghorn = foghorn
        .filter(|a| !a.is_empty())
        .map(|a| format!("--foghorn {a} "))
        .unwrap_or_default();
    EnrollmentTokenCreated {
        enrollment_token: EnrollmentTokenView::from(token),
        provision_command: format!(
            "frameworks edge provision {foghorn}--enrollment-token {secret} --ssh user@host"
        ),
        token: secret,
    }
}

/// The Foghorn cell serving a cluster, and where to reach it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ServingCell {
    /// The cell: its home cluster's id.
    pub cell: String,
    /// Where the cluster's edges dial (gRPC: Helmsman control and enrollment).
    pub grpc_addr: String,
    /// The cell's HTTP address as its operator published it (may be empty).
    pub http_url: String,
    /// Where the cluster's viewers are sent once its DNS name resolves:
    /// `https://foghorn.{cluster}.{root}`.
    pub viewer_url: String,
}

/// The answer to `POST /private-clusters`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PrivateClusterCreated {
    pub cluster: ClusterSummary,
    pub subscription: SubscriptionView,
    /// The Foghorn cell that serves the cluster.
    pub foghorn: ServingCell,
    pub enrollment_token: EnrollmentTokenCreated,
}

/// The region of the tenant's preferred cluster (else its official one): where its viewers are,
/// as far as the registry knows.
async fn home_region(registry: &Registry, tenant_id: &str) -> Result<Option<String>, ApiError> {
    let Some(tenant) = registry.tenant(tenant_id).await? else {
        return Ok(None);
    };
    let home = tenant
        .preferred_cluster_id
        .unwrap_or(tenant.official_cluster_id);
    Ok(registry.cluster(&home).await?.map(|c| c.region))
}

/// `POST /private-clusters`, `create_private_cluster`: the cluster, the owner subscription and a
/// first enrollment token, in one transaction, assigned to a live Foghorn cell: the one asked
/// for, else one in the asked region, else the nearest to `near` (the caller's position, from
/// GeoIP), else one in the region of the tenant's preferred cluster; ties go to the cell with
/// fewer edges, then the older. No live cell takes it: 503, nothing created.
pub async fn create_private_cluster(
    state: &AppState,
    caller: &Principal,
    input: CreatePrivateCluster,
    near: Option<Position>,
) -> Result<PrivateClusterCreated, ApiError> {
    let root = &state.config.cluster.root_domain;
    let created =
        create_private_cluster_for(&state.registry, root, &caller.tenant_id, input, near).await?;
    // Assigned to this Foghorn's own cell (the usual case on a shared cell): served before the
    // answer, so the token works the moment the tenant has it. Other cells pick it up at their
    // next poll (a second).
    if created.foghorn.cell == state.config.cluster.id {
        let id = &created.cluster.id;
        if !state.serve_soon(id, SERVE_WITHIN).await {
            tracing::warn!(cluster = %id, "the private cluster is not served yet; the cell's next poll picks it up");
        }
    }
    Ok(created)
}

/// How long creating a private cluster waits for this Foghorn's cell to serve it.
const SERVE_WITHIN: Duration = Duration::from_secs(2);

/// [`create_private_cluster`] for tenant `tenant_id` on the registry itself (the admin command
/// runs it without a Foghorn).
pub async fn create_private_cluster_for(
    registry: &Registry,
    root_domain: &str,
    tenant_id: &str,
    input: CreatePrivateCluster,
    near: Option<Position>,
) -> Result<PrivateClusterCreated, ApiError> {
    let expires_at = parse_ttl(None, ENROLLMENT_TTL)?;
    if let Some(cell) = &input.cell {
        check_cluster_id(cell)?;
    }
    let cells = registry.live_cells().await?;
    let placement = Placement {
        cell: input.cell.clone(),
        region: input.region.clone(),
        near,
        fallback_region: home_region(registry, tenant_id).await?,
    };
    let cell: Cell = choose_cell(&cells, &placement).cloned().ok_or_else(|| {
        ApiError::Unavailable(match &input.cell {
            Some(cell) => format!(
                "Foghorn cell {cell:?} is not live or does not take private clusters; \
                 leave `cell` out to get the nearest one"
            ),
            None => "no live Foghorn cell takes private clusters right now; retry later".into(),
        })
    })?;
    let created = registry
        .create_private_cluster(&NewPrivateCluster {
            tenant_id: tenant_id.to_string(),
            name: input.name,
            region: input.region.unwrap_or_default(),
            description: input.description.unwrap_or_default(),
            enrollment_expires_at: expires_at,
            cell_id: cell.id().to_string(),
        })
        .await?;
    let zone = crate::names::Zone::new(&created.cluster.id, root_domain);
    let foghorn = ServingCell {
        cell: cell.id().to_string(),
        grpc_addr: cell.home.grpc_addr.clone(),
        http_url: cell.home.http_url.clone(),
        viewer_url: format!("https://{}", zone.foghorn_host()),
    };
    Ok(PrivateClusterCreated {
        cluster: ClusterSummary::of(&created.cluster, tenant_id),
        subscription: SubscriptionView::from(&created.subscription),
        enrollment_token: token_created(
            &created.enrollment_token,
            created.enrollment_secret,
            Some(&foghorn.grpc_addr),
        ),
        foghorn,
    })
}

/// Body of `POST /clusters/{id}/enrollment-tokens`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentTokenOptions {
    /// Lifetime like `30d` (default) or `12h`; 1m to 365d.
    pub ttl: Option<String>,
    /// How many edges may enroll with it (default 1, at most 100000).
    pub usage_limit: Option<i64>,
    /// Only edges connecting from this network may use it, e.g. `203.0.113.0/24`.
    pub expected_cidr: Option<String>,
}

/// Input of the `create_enrollment_token` tool: the cluster and the options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    pub cluster_id: String,
    pub ttl: Option<String>,
    pub usage_limit: Option<i64>,
    pub expected_cidr: Option<String>,
}

/// `POST /clusters/{id}/enrollment-tokens`, `create_enrollment_token`: for the cluster's manager.
pub async fn create_enrollment_token(
    state: &AppState,
    caller: &Principal,
    input: CreateEnrollmentToken,
) -> Result<EnrollmentTokenCreated, ApiError> {
    let cluster = managed_cluster(state, caller, &input.cluster_id).await?;
    let expected_cidr = input
        .expected_cidr
        .as_deref()
        .map(|text| {
            text.parse::<ipnet::IpNet>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "expected_cidr {:?} is not a network like 203.0.113.0/24",
                    truncate(text)
                ))
            })
        })
        .transpose()?;
    let new = NewEnrollmentToken {
        cluster_id: cluster.id.clone(),
        // Nodes enrolled with it belong to the cluster's owner (the caller's tenant for a
        // platform cluster).
        tenant_id: cluster
            .owner_tenant_id
            .clone()
            .unwrap_or_else(|| caller.tenant_id.clone()),
        usage_limit: input.usage_limit.unwrap_or(1),
        expires_at: parse_ttl(input.ttl.as_deref(), ENROLLMENT_TTL)?,
        expected_cidr,
    };
    let (token, secret) = state.registry.create_enrollment_token(&new).await?;
    let foghorn = serving_grpc(state, &cluster.id).await?;
    Ok(token_created(&token, secret, foghorn.as_deref()))
}

/// Where the edges of `cluster` dial: the gRPC address published for it (by its cell), if any.
async fn serving_grpc(state: &AppState, cluster: &str) -> Result<Option<String>, ApiError> {
    Ok(state
        .registry
        .peer_endpoint(cluster)
        .await?
        .map(|at| at.grpc_addr))
}

impl CreateEnrollmentToken {
    /// The tool input from the REST path and body.
    pub fn from_parts(cluster_id: String, options: EnrollmentTokenOptions) -> Self {
        CreateEnrollmentToken {
            cluster_id,
            ttl: options.ttl,
            usage_limit: options.usage_limit,
            expected_cidr: options.expected_cidr,
        }
    }
}

/// A node of a cluster, from the registry and, for this Foghorn's own cluster, its live state.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NodeView {
    pub node_id: String,
    pub cluster_id: String,
    /// `active`, or what an operator set.
    pub status: String,
    pub external_ip: Option<String>,
    pub capabilities: String,
    pub public_base_url: String,
    pub enrolled_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    /// Open control stream right now (only known for this Foghorn's cluster).
    pub connected: Option<bool>,
    /// Receiving viewers right now (only known for this Foghorn's cluster).
    pub routable: Option<bool>,
    /// Bytes per second sent, from the last stats.
    pub bandwidth_used: Option<u64>,
    pub viewers: Option<u64>,
    /// CPU load in tenths of a percent (0 to 1000), from the last stats.
    pub cpu_tenths: Option<u16>,
    /// RAM in use and installed, bytes, from the last stats.
    pub ram_used_bytes: Option<u64>,
    pub ram_max_bytes: Option<u64>,
    /// `normal`, `draining` or `maintenance` (only known for this Foghorn's cluster, while the
    /// edge is known here).
    pub mode: Option<crate::edge::Mode>,
}

/// `GET /clusters/{id}/nodes`: for the cluster's manager.
pub async fn list_nodes(
    state: &AppState,
    caller: &Principal,
    cluster_id: &str,
) -> Result<Vec<NodeView>, ApiError> {
    let cluster = managed_cluster(state, caller, cluster_id).await?;
    // Live state where this Foghorn's cell serves the cluster.
    let served = state.served(&cluster.id);
    let local = served.is_some();
    let nodes = state.registry.nodes_of_cluster(&cluster.id).await?;
    let routed = served
        .as_ref()
        .map(|s| s.router.routed_now())
        .unwrap_or_default();
    Ok(nodes
        .into_iter()
        .map(|node| {
            let live = served.as_ref().and_then(|s| s.edges.get(&node.node_id));
            let stats = live.as_ref().and_then(|v| v.stats.as_ref());
            NodeView {
                connected: local.then(|| live.as_ref().is_some_and(|v| v.connected)),
                routable: local.then(|| live.as_ref().is_some_and(|v| v.routable_given(&routed))),
                bandwidth_used: stats.map(|s| s.up_bytes_per_sec),
                viewers: stats.map(Stats::viewers),
                cpu_tenths: stats.map(|s| s.cpu_tenths),
                ram_used_bytes: stats.map(|s| s.ram_used_bytes),
                ram_max_bytes: stats.map(|s| s.ram_max_bytes),
                mode: live.as_ref().map(|v| v.mode),
                node_id: node.node_id,
                cluster_id: node.cluster_id,
                status: node.status,
                external_ip: node.external_ip,
                capabilities: node.capabilities,
                public_base_url: node.public_base_url,
                enrolled_at: node.enrolled_at,
                last_seen_at: node.last_seen_at,
            }
        })
        .collect())
}

/// Answer of `DELETE /clusters/{cluster_id}/nodes/{node_id}`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeletedNode {
    pub node_id: String,
    pub cluster_id: String,
}

/// Deletes a node of a cluster the caller manages: its credential stops working, its session
/// ends and its DNS records go at once, on every Foghorn (through the registry's topology
/// counter, within `federation.topology_poll`; at once on this one when its cell serves the
/// cluster). To add the host again, provision it anew.
pub async fn delete_node(
    state: &AppState,
    caller: &Principal,
    cluster_id: &str,
    node_id: &str,
) -> Result<DeletedNode, ApiError> {
    let cluster = managed_cluster(state, caller, cluster_id).await?;
    if !crate::registry::is_valid_node_id(node_id) {
        return Err(ApiError::BadRequest(format!(
            "{node_id:?} is not a node id (12 lowercase hex characters or a label)"
        )));
    }
    if !state.registry.delete_node(&cluster.id, node_id).await? {
        return Err(ApiError::NotFound(format!(
            "node {node_id} not found in cluster {}",
            cluster.id
        )));
    }
    if let Some(served) = state.served(&cluster.id) {
        served.edges.forget(node_id);
    }
    tracing::info!(node_id, cluster = %cluster.id, "node deleted");
    Ok(DeletedNode {
        node_id: node_id.to_string(),
        cluster_id: cluster.id,
    })
}

/// Body of `PUT /tenants/{id}/billing-tier` (operators).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBillingTier {
    /// e.g. `free`, `pro`; the tenant's official cluster becomes the one official for it.
    pub billing_tier: String,
}

/// `PUT /tenants/{id}/billing-tier`: operators change a tenant's tier; its official cluster
/// follows.
pub async fn set_billing_tier(
    state: &AppState,
    caller: &Principal,
    tenant_id: &str,
    input: SetBillingTier,
) -> Result<Tenant, ApiError> {
    super::require_operator(caller)?;
    check_uuid("tenant", tenant_id)?;
    Ok(state
        .registry
        .set_billing_tier(tenant_id, &input.billing_tier)
        .await?)
}

/// Body of `PATCH /clusters/{id}`: what the cluster's manager changes. An absent field stays as
/// it is; `null` clears a nullable one and is refused for the others.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCluster {
    #[serde(default, deserialize_with = "super::input::set")]
    #[schemars(with = "String")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "super::input::set")]
    #[schemars(with = "String")]
    pub region: Option<String>,
    #[serde(default, deserialize_with = "super::input::set")]
    #[schemars(with = "String")]
    pub description: Option<String>,
    /// Degrees, -90 to 90; given with `longitude`, both `null` to forget the location.
    #[serde(default, deserialize_with = "super::input::patch")]
    pub latitude: Option<Option<f64>>,
    /// Degrees, -180 to 180.
    #[serde(default, deserialize_with = "super::input::patch")]
    pub longitude: Option<Option<f64>>,
    /// `FREE_UNMETERED`, `TIER_INHERIT`, `METERED` or `MONTHLY`.
    #[serde(default, deserialize_with = "super::input::set")]
    #[schemars(with = "String")]
    pub pricing_model: Option<String>,
    /// Price in cents: per GB for `METERED`, per month for `MONTHLY`.
    #[serde(default, deserialize_with = "super::input::set")]
    #[schemars(with = "i64")]
    pub price_cents: Option<i64>,
    /// Capacity hint: most edges the cluster takes; `null` forgets it.
    #[serde(default, deserialize_with = "super::input::patch")]
    pub max_edges: Option<Option<i64>>,
    /// Capacity hint: bandwidth the cluster can serve, bytes per second; `null` forgets it.
    #[serde(default, deserialize_with = "super::input::patch")]
    pub max_bandwidth: Option<Option<i64>>,
}

/// `PATCH /clusters/{id}`: the cluster's owner (or a platform operator, for a platform cluster)
/// sets its description, pricing, location and capacity.
pub async fn update_cluster(
    state: &AppState,
    caller: &Principal,
    cluster_id: &str,
    input: UpdateCluster,
) -> Result<ClusterSummary, ApiError> {
    managed_cluster(state, caller, cluster_id).await?;
    let location = match (input.latitude, input.longitude) {
        (None, None) => None,
        (Some(Some(lat)), Some(Some(lon))) => Some(Some((lat, lon))),
        (Some(None), Some(None)) => Some(None),
        _ => {
            return Err(ApiError::BadRequest(
                "latitude and longitude go together: give both, or both null".into(),
            ))
        }
    };
    let changes = ClusterChanges {
        name: input.name,
        region: input.region,
        description: input.description,
        location,
        pricing_model: input.pricing_model.as_deref().map(str::parse).transpose()?,
        price_cents: input.price_cents,
        max_edges: input.max_edges,
        max_bandwidth: input.max_bandwidth,
        ..ClusterChanges::default()
    };
    if changes.is_empty() {
        return Err(ApiError::BadRequest(
            "nothing to change: give at least one field".into(),
        ));
    }
    let cluster = state.registry.update_cluster(cluster_id, &changes).await?;
    Ok(ClusterSummary::of(&cluster, &caller.tenant_id))
}

/// `GET /clusters/{id}`: one cluster the caller may see (404 when hidden or absent alike).
pub async fn cluster_summary(
    state: &AppState,
    caller: &Principal,
    cluster_id: &str,
) -> Result<ClusterSummary, ApiError> {
    let cluster = visible_cluster(state, caller, cluster_id).await?;
    Ok(ClusterSummary::of(&cluster, &caller.tenant_id))
}
