//! `/health` (the process answers), `/ready` (it can do its job), `/metrics` (Prometheus text).

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

/// 200 once the registry answers and the listeners are up. Redis is reported but does not make
/// the replica unready: routing continues from in-process state, and pulling every replica out of
/// the load balancer because their shared Redis is down would turn a degradation into an outage.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let registry_ok = matches!(
        tokio::time::timeout(CHECK_TIMEOUT, state.registry.ping()).await,
        Ok(Ok(()))
    );
    // "degraded": the edge-state sync is not live (Redis unreachable, or not yet resynchronised;
    // its subscriber pings Redis every second); routing goes on from in-process state meanwhile.
    let redis = match &state.replication {
        Some(sync) if sync.is_synced() => "ok",
        Some(_) => "degraded",
        None => "not configured",
    };
    let served = match state.cell.get().and_then(std::sync::Weak::upgrade) {
        Some(cell) => cell.certificates(),
        None => vec![(state.config.cluster.id.clone(), state.tls.clone())],
    };
    let source = match state.config.tls.effective_source() {
        crate::config::TlsSource::Acme => "acme",
        crate::config::TlsSource::Files => "files",
        crate::config::TlsSource::Dev | crate::config::TlsSource::Auto => "dev",
    };
    let certificates = crate::acme::report(state.acme.as_deref(), source, &served);
    let started = state.is_started();
    let ready = started && registry_ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "listeners": if started { "up" } else { "down" },
            "registry": if registry_ok { "ok" } else { "down" },
            "redis": redis,
            "edges_connected": state.edges.connected_count(),
            "replica": &state.replica_id,
            "leader": state.leadership.is_leader(),
            "dns_updates": state.dns_updates.report(state.leadership.is_leader()),
            "certificates": certificates,
        })),
    )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
