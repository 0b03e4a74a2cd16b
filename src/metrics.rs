//! Prometheus metrics of one Foghorn instance.
//!
//! Each server owns its registry (no process-global recorder), so several Foghorns started in one
//! test process keep separate counters.

use std::sync::Mutex;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Outcome label of enrollments, authentications and ingest decisions.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    Accepted,
    Refused,
    Failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrameLabels {
    pub kind: &'static str,
}

/// The metrics Foghorn exports at `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    pub edges_connected: Gauge,
    pub edge_sessions: Counter,
    pub edge_frames: Family<FrameLabels, Counter>,
    pub edge_protocol_errors: Counter,
    pub enrollments: Family<OutcomeLabels, Counter>,
    pub node_authentications: Family<OutcomeLabels, Counter>,
    pub ingest_decisions: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("foghorn");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            edges_connected: Gauge::default(),
            edge_sessions: Counter::default(),
            edge_frames: Family::default(),
            edge_protocol_errors: Counter::default(),
            enrollments: Family::default(),
            node_authentications: Family::default(),
            ingest_decisions: Family::default(),
        };
        registry.register(
            "edges_connected",
            "Edges with an open control stream",
            m.edges_connected.clone(),
        );
        registry.register(
            "edge_sessions",
            "Control streams opened and authenticated",
            m.edge_sessions.clone(),
        );
        registry.register(
            "edge_frames",
            "Frames received from edges, by kind",
            m.edge_frames.clone(),
        );
        registry.register(
            "edge_protocol_errors",
            "Control streams ended for bad, oversized or out-of-order frames",
            m.edge_protocol_errors.clone(),
        );
        registry.register(
            "enrollments",
            "First-boot enrollments by outcome",
            m.enrollments.clone(),
        );
        registry.register(
            "node_authentications",
            "Reconnect authentications by outcome",
            m.node_authentications.clone(),
        );
        registry.register(
            "ingest_decisions",
            "Ingest requests by outcome",
            m.ingest_decisions.clone(),
        );
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = registry;
        m
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn outcome(family: &Family<OutcomeLabels, Counter>, outcome: Outcome) {
        family.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}
