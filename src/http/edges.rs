//! `GET /api/v1/edges`: the edges of this cluster with last stats, streams and routability.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::Operator;
use crate::app::AppState;
use crate::edge::EdgeView;

pub fn router() -> Router<AppState> {
    Router::new().route("/edges", get(list))
}

#[derive(Serialize)]
struct EdgeList {
    cluster_id: String,
    edges: Vec<EdgeView>,
}

async fn list(State(state): State<AppState>, _op: Operator) -> Json<EdgeList> {
    Json(EdgeList {
        cluster_id: state.config.cluster.id.clone(),
        edges: state.edges.list(),
    })
}
