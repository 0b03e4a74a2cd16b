//! The tenant and operator REST API under `/api/v1`: thin handlers over [`crate::api`].
//!
//! Every route is added through [`Documented`], so `/api/v1/openapi.json` lists exactly these.

use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::openapi::{Access, Documented, NoBody, Op};
use super::params::Params;
use super::{ApiError, Operator};
use crate::api::{self, *};
use crate::edge::EdgeView;
use crate::registry::{Principal, Tenant};
use crate::state::AppState;

/// The caller of a tenant route: any valid token.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Caller(
            super::auth::principal_from_headers(&parts.headers, state).await?,
        ))
    }
}

/// Where the caller is (GeoIP of its address), if known.
pub struct Near(pub Option<crate::routing::Position>);

impl FromRequestParts<AppState> for Near {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Near(super::viewer::Viewer::position_of(state, parts)))
    }
}

/// A JSON request body: `application/json` (or no content type, or JSON sent as a form the way
/// `curl -d` does), at most `server.max_body_bytes` arriving within `server.body_timeout`
/// ([`super::body::read`]), read by the rules of [`crate::api::input`]
/// (an object, no unknown fields, nullable settings given explicitly). Every refusal is the JSON
/// error body.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        // `curl -d` labels JSON as a form; such a body is read as JSON when it is JSON. Other
        // declared types are refused.
        let mut form = false;
        if let Some(kind) = req.headers().get(header::CONTENT_TYPE) {
            let kind = kind.to_str().unwrap_or("");
            let essence = kind.split(';').next().unwrap_or("").trim();
            form = essence.eq_ignore_ascii_case("application/x-www-form-urlencoded");
            if !form && !essence.eq_ignore_ascii_case("application/json") {
                return Err(ApiError::UnsupportedMediaType(
                    "the body must be application/json".into(),
                ));
            }
        }
        let (parts, body) = req.into_parts();
        let bytes = super::body::read(&parts.headers, body, state).await?;
        if form && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be JSON, sent as application/json".into(),
            ));
        }
        let value = crate::api::input::from_json(&bytes)?;
        Ok(Body(value))
    }
}

/// The body of an action that takes no input (approve, reject, cancel, revoke): none, or `{}`,
/// which many clients send with every POST. Anything else is refused, so a field meant to change
/// the action (`{"reject": true}` sent to `approve`) is never silently ignored.
pub struct NoInput;

/// An object with no fields: any field is unknown.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Nothing {}

impl FromRequest<AppState> for NoInput {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = super::body::read(&parts.headers, body, state).await?;
        if !bytes.trim_ascii().is_empty() {
            crate::api::input::from_json::<Nothing>(&bytes).map_err(|e| {
                ApiError::BadRequest(format!("this request takes no body (or {{}}): {e}"))
            })?;
        }
        Ok(NoInput)
    }
}

/// Path parameters; a segment that is not valid UTF-8 is a JSON 400 like everything else.
pub struct Ids<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Ids<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(ids)) => Ok(Ids(ids)),
            Err(e) => Err(ApiError::BadRequest(format!("bad path: {}", e.body_text()))),
        }
    }
}

/// A successful answer with its status.
struct Answer<T>(StatusCode, T);

impl<T: Serialize> IntoResponse for Answer<T> {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

type Reply<T> = Result<Answer<T>, ApiError>;

fn ok<T>(value: T) -> Reply<T> {
    Ok(Answer(StatusCode::OK, value))
}

fn created<T>(value: T) -> Reply<T> {
    Ok(Answer(StatusCode::CREATED, value))
}

const MARKETPLACE_QUERY: &[(&str, &str)] = &[
    (
        "pricing_model",
        "FREE_UNMETERED, TIER_INHERIT, METERED or MONTHLY",
    ),
    ("tier", "shared-community, shared-lb or dedicated"),
    ("region", "region label"),
    ("cursor", "next_cursor of the previous page"),
    ("limit", "page size, 1 to 200 (default 50)"),
];

/// The `/api/v1` router (nested by the caller) with its OpenAPI document.
pub fn router() -> Router<AppState> {
    use Access::{Operator as Op_, Tenant as T};
    let get = Method::GET;
    let post = Method::POST;
    Documented::default()
        .route::<NoBody, MarketplacePage, _, _>(
            Op::new(
                get.clone(),
                "/marketplace",
                "browseMarketplace",
                "Clusters the caller may see, with pricing, subscription status and live load",
                T,
            )
            .query(MARKETPLACE_QUERY),
            marketplace,
        )
        .route::<NoBody, ClusterSummary, _, _>(
            Op::new(
                get.clone(),
                "/clusters/{cluster_id}",
                "getCluster",
                "One cluster the caller may see",
                T,
            ),
            cluster,
        )
        .route::<UpdateCluster, ClusterSummary, _, _>(
            Op::new(
                Method::PATCH,
                "/clusters/{cluster_id}",
                "updateCluster",
                "Set a cluster's name, region, description, pricing, location and capacity \
                 (cluster owner or operator)",
                T,
            ),
            update_cluster,
        )
        .route::<Subscribe, SubscribeResult, _, _>(
            Op::new(
                post.clone(),
                "/subscriptions",
                "subscribe",
                "Connect (active) or request access (pending); an invite token activates at once",
                T,
            )
            .status(201)
            .also(200),
            subscribe,
        )
        .route::<NoBody, Vec<SubscriptionView>, _, _>(
            Op::new(
                get.clone(),
                "/subscriptions",
                "listSubscriptions",
                "The caller's subscriptions, every status",
                T,
            ),
            subscriptions,
        )
        .route::<NoBody, SubscriptionView, _, _>(
            Op::new(
                Method::DELETE,
                "/subscriptions/{cluster_id}",
                "cancelSubscription",
                "Cancel an active or pending subscription",
                T,
            ),
            cancel,
        )
        .route::<NoBody, Vec<SubscriptionRequest>, _, _>(
            Op::new(
                get.clone(),
                "/clusters/{cluster_id}/subscription-requests",
                "listSubscriptionRequests",
                "Pending requests (cluster owner or operator)",
                T,
            ),
            requests,
        )
        .route::<NoBody, SubscriptionRequest, _, _>(
            Op::new(
                post.clone(),
                "/clusters/{cluster_id}/subscription-requests/{tenant_id}/approve",
                "approveSubscription",
                "Approve a pending request (cluster owner or operator)",
                T,
            ),
            approve,
        )
        .route::<NoBody, SubscriptionRequest, _, _>(
            Op::new(
                post.clone(),
                "/clusters/{cluster_id}/subscription-requests/{tenant_id}/reject",
                "rejectSubscription",
                "Reject a pending request (cluster owner or operator)",
                T,
            ),
            reject,
        )
        .route::<CreateInvite, InviteCreated, _, _>(
            Op::new(
                post.clone(),
                "/clusters/{cluster_id}/invites",
                "createInvite",
                "Invite token, shown once; optionally bound to one tenant",
                T,
            )
            .status(201),
            create_invite,
        )
        .route::<NoBody, Vec<InviteView>, _, _>(
            Op::new(
                get.clone(),
                "/clusters/{cluster_id}/invites",
                "listInvites",
                "Invites of a cluster (never their tokens)",
                T,
            ),
            invites,
        )
        .route::<NoBody, InviteView, _, _>(
            Op::new(
                Method::DELETE,
                "/clusters/{cluster_id}/invites/{invite_id}",
                "revokeInvite",
                "Revoke an open invite",
                T,
            ),
            revoke_invite,
        )
        .route::<SetPreferredCluster, Network, _, _>(
            Op::new(
                Method::PUT,
                "/tenant/preferred-cluster",
                "setPreferredCluster",
                "Set the preferred cluster (409 unless subscribed, owned or official)",
                T,
            ),
            preferred,
        )
        .route::<NoBody, Network, _, _>(
            Op::new(
                get.clone(),
                "/tenant/network",
                "getNetwork",
                "Official, preferred and subscribed clusters with their peering",
                T,
            ),
            network,
        )
        .route::<CreatePrivateCluster, PrivateClusterCreated, _, _>(
            Op::new(
                post.clone(),
                "/private-clusters",
                "createPrivateCluster",
                "A private cluster, its owner subscription and a first enrollment token",
                T,
            )
            .status(201),
            private_cluster,
        )
        .route::<EnrollmentTokenOptions, EnrollmentTokenCreated, _, _>(
            Op::new(
                post.clone(),
                "/clusters/{cluster_id}/enrollment-tokens",
                "createEnrollmentToken",
                "Enrollment token for edges, shown once",
                T,
            )
            .status(201),
            enrollment_token,
        )
        .route::<NoBody, Vec<NodeView>, _, _>(
            Op::new(
                get.clone(),
                "/clusters/{cluster_id}/nodes",
                "listNodes",
                "Nodes of a cluster the caller manages, with live state",
                T,
            ),
            nodes,
        )
        .route::<NoBody, api::DeletedNode, _, _>(
            Op::new(
                Method::DELETE,
                "/clusters/{cluster_id}/nodes/{node_id}",
                "deleteNode",
                "Delete a node: its credential stops working, its session ends, its DNS records go",
                T,
            ),
            delete_node,
        )
        .route::<CreateStream, StreamView, _, _>(
            Op::new(
                post.clone(),
                "/streams",
                "createStream",
                "A stream: key (shown once), playback id, ingest and playback URLs",
                T,
            )
            .status(201),
            create_stream,
        )
        .route::<NoBody, Vec<StreamView>, _, _>(
            Op::new(
                get.clone(),
                "/streams",
                "listStreams",
                "The caller's streams",
                T,
            ),
            streams,
        )
        .route::<NoBody, StreamView, _, _>(
            Op::new(
                get.clone(),
                "/streams/{stream_id}",
                "getStream",
                "One of the caller's streams",
                T,
            ),
            stream,
        )
        .route::<SetBillingTier, Tenant, _, _>(
            Op::new(
                Method::PUT,
                "/tenants/{tenant_id}/billing-tier",
                "setBillingTier",
                "Change a tenant's billing tier; its official cluster follows (operators)",
                Op_,
            ),
            billing_tier,
        )
        .route::<NoBody, EdgeList, _, _>(
            Op::new(
                get,
                "/edges",
                "listEdges",
                "This cluster's edges with last stats and routability (operators)",
                Op_,
            ),
            edges,
        )
        .finish()
}

async fn marketplace(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(query): RawQuery,
) -> Reply<MarketplacePage> {
    let params = Params::parse(query.as_deref().unwrap_or(""))?;
    if let Some(unknown) = params
        .names()
        .find(|n| !MARKETPLACE_QUERY.iter().any(|(known, _)| known == n))
    {
        return Err(ApiError::BadRequest(format!(
            "unknown query parameter {unknown:?}"
        )));
    }
    let text = |name| params.get(name).map(|v| v.into_owned());
    let query = MarketplaceQuery {
        pricing_model: text("pricing_model"),
        tier: text("tier"),
        region: text("region"),
        cursor: text("cursor"),
        limit: text("limit")
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::BadRequest(format!("limit {v:?} is not a number")))
            })
            .transpose()?,
    };
    ok(api::browse_marketplace(&state, &caller, query).await?)
}

async fn cluster(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Ids(id): Ids<String>,
) -> Reply<ClusterSummary> {
    ok(api::cluster_summary(&state, &caller, &id).await?)
}

async fn update_cluster(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Ids(id): Ids<String>,
    Body(input): Body<UpdateCluster>,
) -> Reply<ClusterSummary> {
    ok(api::update_cluster(&state, &caller, &id, input).await?)
}

async fn subscribe(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Body(input): Body<Subscribe>,
) -> Reply<SubscribeResult> {
    let done = api::subscribe(&state, &caller, input).await?;
    if done.changed {
        created(done)
    } else {
        ok(done)
    }
}

async fn subscriptions(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Reply<Vec<SubscriptionView>> {
    ok(api::list_subscriptions(&state, &caller).await?)
}

async fn cancel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Ids(cluster_id): Ids<String>,
    _: NoInput,
) -> Reply<SubscriptionView> {
    ok(api::cancel_subscription(&state, &caller, &cluster_id).await?)
}

async fn requests(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Ids(cluster_id): Ids<String>,
) -> Reply<Vec<SubscriptionRequest>> {
    ok(api::subscription_requests(&state, &caller, &cluster_id).await?)
}

async fn approve(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Ids((cluster_id, tenant_id)): Ids<(String, String)>,
    _: NoInput,
) -> Reply<SubscriptionRequest> {
    ok(api::decide_subscription(&state, &caller, &cluster_id, &tenant_id, true).await?)
}

async fn reject(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Ids((cluster_id, tenant_id)): Ids<(String, String)>,
    _: NoInput,
) -> Reply<SubscriptionRequest> {
    ok(api::decide_subscription(&state, &caller, &cluster_id, &tenant_id, false).await?)
}

async fn create_invite(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Ids(cluster_id): Ids<String>,
    Body(input): Body<CreateInvite>,
) -> Reply<InviteCreated> {
    created(api::create_invite(&state, &caller, &cluster_id, input).await?)
}

async fn invites(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Ids(cluster_id): Ids<String>,
) -> Reply<Vec<InviteView>> {
    ok(api::list_invites(&state, &caller, &cluster_id).await?)
}

async fn revoke_invite(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Ids((cluster_id, invite_id)): Ids<(String, String)>,
    _: NoInput,
) -> Reply<InviteView> {
    ok(api::revoke_invite(&state, &caller, &cluster_id, &invite_id).await?)
}

async fn preferred(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Body(input): Body<SetPreferredCluster>,
) -> Reply<Network> {
    ok(api::set_preferred_cluster(&state, &caller, input).await?)
}

async fn network(State(state): State<AppState>, Caller(caller): Caller) -> Reply<Network> {
    ok(api::network(&state, &caller).await?)
}

async fn private_cluster(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Near(near): Near,
    Body(input): Body<CreatePrivateCluster>,
) -> Reply<PrivateClusterCreated> {
    created(api::create_private_cluster(&state, &caller, input, near).await?)
}

async fn enrollment_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Ids(cluster_id): Ids<String>,
    Body(options): Body<EnrollmentTokenOptions>,
) -> Reply<EnrollmentTokenCreated> {
    let input = CreateEnrollmentToken::from_parts(cluster_id, options);
    created(api::create_enrollment_token(&state, &caller, input).await?)
}

async fn nodes(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Ids(cluster_id): Ids<String>,
) -> Reply<Vec<NodeView>> {
    ok(api::list_nodes(&state, &caller, &cluster_id).await?)
}

async fn delete_node(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Ids((cluster_id, node_id)): Ids<(String, String)>,
    _: NoInput,
) -> Reply<api::DeletedNode> {
    ok(api::delete_node(&state, &caller, &cluster_id, &node_id).await?)
}

async fn create_stream(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Body(input): Body<CreateStream>,
) -> Reply<StreamView> {
    created(api::create_stream(&state, &caller, input).await?)
}

async fn streams(State(state): State<AppState>, Caller(caller): Caller) -> Reply<Vec<StreamView>> {
    ok(api::list_streams(&state, &caller).await?)
}

async fn stream(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Ids(id): Ids<String>,
) -> Reply<StreamView> {
    ok(api::get_stream(&state, &caller, &id).await?)
}

async fn billing_tier(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Ids(tenant_id): Ids<String>,
    Body(input): Body<SetBillingTier>,
) -> Reply<Tenant> {
    ok(api::set_billing_tier(&state, &caller, &tenant_id, input).await?)
}

/// `GET /edges`: this cluster's edges.
#[derive(Serialize, schemars::JsonSchema)]
pub struct EdgeList {
    cluster_id: String,
    /// Each edge with its registration, mode, liveness and last stats.
    #[schemars(with = "Vec<serde_json::Value>")]
    edges: Vec<EdgeView>,
}

async fn edges(State(state): State<AppState>, _op: Operator) -> Reply<EdgeList> {
    let routed = state.router.routed_now();
    let mut edges = state.edges.list();
    for edge in &mut edges {
        edge.routable = edge.routable_given(&routed);
    }
    ok(EdgeList {
        cluster_id: state.config.cluster.id.clone(),
        edges,
    })
}
