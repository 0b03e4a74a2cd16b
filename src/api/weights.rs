//! The score weights of this cluster (DESIGN.md §5): read and changed by operators only, shared by
//! every replica of the cluster.
//!
//! A change is stored in the registry first, then applied to this replica's router, then
//! announced to the other replicas, which read it back from the registry (as every replica does at
//! start): the registry is the one copy, so concurrent changes settle on what was stored last.

use crate::api::{require_operator, ApiError};
use crate::registry::Principal;
use crate::routing::Weights;
use crate::state::AppState;

/// The weights routing uses now.
pub fn weights(state: &AppState, caller: &Principal) -> Result<Weights, ApiError> {
    require_operator(caller)?;
    Ok(state.router.weights())
}

/// Applies `changes` to the current weights ([`Weights::merged`]: a JSON object naming any of
/// `cpu`, `ram`, `bw`, `geo`, `bonus`), stores them, routes with them and tells the other
/// replicas; answers the weights routing uses afterwards. A refused change (400) or a registry
/// that cannot store it (503) changes nothing.
pub async fn set_weights(
    state: &AppState,
    caller: &Principal,
    changes: &str,
) -> Result<Weights, ApiError> {
    require_operator(caller)?;
    let weights = state
        .router
        .weights()
        .merged(changes)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // Stored first: the registry is what every replica (and the next start) reads back.
    state
        .registry
        .set_cluster_weights(&state.config.cluster.id, &weights)
        .await?;
    state.router.set_weights(weights);
    if let Some(replication) = &state.replication {
        replication.announce_weights().await;
    }
    tracing::info!(?weights, by = %caller.token_id, "weights changed");
    Ok(state.router.weights())
}
