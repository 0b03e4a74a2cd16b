//! `foghorn.v1.EdgeProvisioning`: pre-registration of self-hosted edges (DESIGN.md §8).
//!
//! Any Foghorn answers for any cluster: the registry is shared, and the answer tells the CLI which
//! cluster's Foghorn the edge must dial.

use std::net::IpAddr;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::cell::Cell;
use crate::proto::edge_provisioning_server::EdgeProvisioning;
use crate::proto::{
    EdgeStatusRequest, EdgeStatusResponse, PreRegisterEdgeRequest, PreRegisterEdgeResponse,
};
use crate::registry::EnrollError;

/// Longest token or node id looked at.
const MAX_FIELD_BYTES: usize = 256;

/// The EdgeProvisioning service.
#[derive(Clone)]
pub struct ProvisioningService {
    cell: Arc<Cell>,
}

impl ProvisioningService {
    pub fn new(cell: Arc<Cell>) -> Self {
        ProvisioningService { cell }
    }
}

#[tonic::async_trait]
impl EdgeProvisioning for ProvisioningService {
    async fn pre_register_edge(
        &self,
        request: Request<PreRegisterEdgeRequest>,
    ) -> Result<Response<PreRegisterEdgeResponse>, Status> {
        let secure = super::conn_info(&request).tls;
        let req = request.into_inner();
        for (name, value) in [
            ("enrollment_token", &req.enrollment_token),
            ("external_ip", &req.external_ip),
            ("preferred_node_id", &req.preferred_node_id),
            ("host_fingerprint", &req.host_fingerprint),
        ] {
            if value.len() > MAX_FIELD_BYTES {
                return Err(Status::invalid_argument(format!("{name} is too long")));
            }
        }
        if req.enrollment_token.is_empty() {
            return Err(Status::invalid_argument("enrollment_token is required"));
        }
        let external_ip = match req.external_ip.as_str() {
            "" => None,
            text => Some(text.parse::<IpAddr>().map_err(|_| {
                Status::invalid_argument(format!("external_ip {text:?} is not an IP address"))
            })?),
        };
        let preferred = Some(req.preferred_node_id.as_str()).filter(|id| !id.is_empty());
        let state = self.cell.home();
        let pre = state
            .registry
            .pre_register(
                &req.enrollment_token,
                external_ip,
                preferred,
                Some(req.host_fingerprint.as_str()),
            )
            .await
            .map_err(|e| match e {
                EnrollError::Registry(e) => {
                    tracing::error!(error = %e, "pre-registration failed in the registry");
                    Status::unavailable("registry unavailable, retry later")
                }
                EnrollError::NodeIdUnavailable(_) => Status::already_exists(e.public_message()),
                EnrollError::Unknown => Status::unauthenticated(e.public_message()),
                refused => Status::permission_denied(refused.public_message()),
            })?;
        let reservation = &pre.reservation;
        // One read gives the address edges dial and the CA the cluster's Foghorns published.
        let at = state
            .registry
            .peer_endpoint(&reservation.cluster_id)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "reading the token's cluster");
                Status::unavailable("registry unavailable, retry later")
            })?
            .ok_or_else(|| Status::not_found("the token's cluster no longer exists"))?;
        let root = &state.config.cluster.root_domain;
        let id = &reservation.cluster_id;
        let zone = crate::names::Zone::new(id, root);
        // This Foghorn holds the certificates of the clusters its cell serves; another cluster's
        // CA is the one its Foghorns published for their peers.
        let served = self.cell.get(id);
        let own = served.is_some();
        let bundle = served.map_or_else(|| state.tls.bundle(), |s| s.tls.bundle());
        let ca_bundle_pem = if own {
            bundle.ca_pem.clone()
        } else {
            at.tls_ca_pem
        };
        let foghorn_grpc_addr = if at.grpc_addr.is_empty() {
            format!(
                "{}:{}",
                zone.foghorn_host(),
                state.config.server.grpc_addr.port()
            )
        } else {
            at.grpc_addr
        };
        tracing::info!(
            node_id = %reservation.node_id,
            cluster = %id,
            "edge pre-registered"
        );
        Ok(Response::new(PreRegisterEdgeResponse {
            edge_domain: zone.edge_host(&reservation.node_id),
            pool_domain: zone.pool_host(),
            foghorn_grpc_addr,
            balancer_base_url: zone.foghorn_url(),
            ca_bundle_pem,
            // The key only where it cannot be read off the wire.
            tls: (own && secure).then(|| super::helmsman::tls_bundle(&bundle)),
            token_expires_at_unix: pre.token_expires_at / 1000,
            node_id: reservation.node_id.clone(),
            cluster_id: id.clone(),
        }))
    }

    async fn edge_status(
        &self,
        request: Request<EdgeStatusRequest>,
    ) -> Result<Response<EdgeStatusResponse>, Status> {
        let req = request.into_inner();
        if req.enrollment_token.is_empty() || req.enrollment_token.len() > MAX_FIELD_BYTES {
            return Err(Status::invalid_argument(
                "enrollment_token is required (at most 256 bytes)",
            ));
        }
        if !crate::registry::is_valid_node_id(&req.node_id) {
            return Err(Status::invalid_argument("node_id is not a node id"));
        }
        let home = self.cell.home();
        let cluster = home
            .registry
            .node_of_token(&req.enrollment_token, &req.node_id)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "edge status: the registry failed");
                Status::unavailable("registry unavailable, retry later")
            })?
            .ok_or_else(|| {
                Status::permission_denied("this enrollment token did not provision that node")
            })?;
        let Some(served) = self.cell.get(&cluster) else {
            let at = home
                .registry
                .peer_endpoint(&cluster)
                .await
                .ok()
                .flatten()
                .map(|e| e.grpc_addr)
                .unwrap_or_default();
            return Err(Status::failed_precondition(format!(
                "cluster {cluster} is served by another Foghorn; ask it at {at}"
            )));
        };
        Ok(Response::new(EdgeStatusResponse {
            connected: served.edges.get(&req.node_id).is_some(),
            routable: served.edges.is_routable(&req.node_id),
            cluster_id: cluster,
        }))
    }
}
