//! `ClusterEdgeSummary` content: what a cluster tells its peers about its healthy edges, with load
//! averaged over a window (DESIGN.md §7.1), and what a peer's summary becomes in the routing pool.
//!
//! Free of transport types: the `wire` module converts to and from the wire messages.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::edge::{Capabilities, EdgeView};
use crate::routing::RemoteEdge;

/// One healthy edge as a summary describes it. Load values are averages over the window.
///
/// Text is shared (`Arc<str>`): a summary is copied into the routing pool every time it is
/// applied, and a stream name is mentioned by many edges.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeSummary {
    pub node_id: Arc<str>,
    /// `https://edge-{node}.{cluster}.{root}` unless the edge registered another base URL.
    pub base_url: Arc<str>,
    pub position: Option<(f64, f64)>,
    /// Bytes per second.
    pub bw_used: u64,
    pub bw_limit: u64,
    pub cpu_tenths: u16,
    pub ram_used: u64,
    pub ram_max: u64,
    pub viewers: u32,
    pub capabilities: Capabilities,
    /// Internal names of the streams it carries, sorted.
    pub streams: Vec<Arc<str>>,
}

/// The healthy edges of one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSummary {
    pub cluster_id: String,
    pub window: Duration,
    pub edges: Vec<EdgeSummary>,
}

/// One observation of an edge's load.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    bw_used: u64,
    bw_limit: u64,
    cpu_tenths: u64,
    ram_used: u64,
    ram_max: u64,
    viewers: u64,
}

/// What is kept of one edge between summaries.
#[derive(Debug)]
struct Tracked {
    samples: VecDeque<(Instant, Load)>,
    /// The latest view of the edge (position, capabilities, streams, base URL).
    latest: EdgeSummary,
    seen_at: Instant,
}

/// Averages each edge's load over the last `window`, from samples taken every few seconds.
///
/// Only routable edges are sampled; an edge that stops being routable leaves the next summary
/// at once, whatever its history (peers must not send viewers to it).
#[derive(Debug)]
pub struct Smoother {
    window: Duration,
    edges: HashMap<String, Tracked>,
}

impl Smoother {
    pub fn new(window: Duration) -> Self {
        Smoother {
            window,
            edges: HashMap::new(),
        }
    }

    /// Takes one sample of every routable edge in `views`; `base_url` names an edge that
    /// registered none.
    pub fn observe(&mut self, now: Instant, views: &[EdgeView], base_url: impl Fn(&str) -> String) {
        for view in views.iter().filter(|v| v.routable) {
            let Some(stats) = &view.stats else { continue };
            let load = Load {
                bw_used: stats.up_bytes_per_sec,
                bw_limit: stats.bw_limit_bytes_per_sec,
                cpu_tenths: u64::from(stats.cpu_tenths),
                ram_used: stats.ram_used_bytes,
                ram_max: stats.ram_max_bytes,
                viewers: stats.viewers(),
            };
            let mut streams: Vec<&str> = stats
                .streams
                .iter()
                .map(|s| s.internal_name.as_str())
                .collect();
            streams.sort_unstable();
            streams.dedup();
            let latest = EdgeSummary {
                node_id: Arc::from(view.node_id.as_str()),
                base_url: Arc::from(view.info.base_url_or(|| base_url(&view.node_id))),
                position: stats.latitude.zip(stats.longitude),
                bw_used: 0,
                bw_limit: 0,
                cpu_tenths: 0,
                ram_used: 0,
                ram_max: 0,
                viewers: 0,
                capabilities: view.info.capabilities,
                streams: streams.into_iter().map(Arc::from).collect(),
            };
            let tracked = self
                .edges
                .entry(view.node_id.clone())
                .or_insert_with(|| Tracked {
                    samples: VecDeque::new(),
                    latest: latest.clone(),
                    seen_at: now,
                });
            tracked.samples.push_back((now, load));
            tracked.latest = latest;
            tracked.seen_at = now;
        }
        let window = self.window;
        for tracked in self.edges.values_mut() {
            while tracked
                .samples
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > window)
            {
                tracked.samples.pop_front();
            }
        }
        // Edges not seen in this sample are not routable now.
        self.edges.retain(|_, t| t.seen_at == now);
    }

    /// The summary of the edges seen in the last sample, with load averaged over the window.
    pub fn summary(&self, cluster_id: &str) -> ClusterSummary {
        let mut edges: Vec<EdgeSummary> = self
            .edges
            .values()
            .map(|tracked| {
                let n = tracked.samples.len().max(1) as u64;
                let sum = tracked
                    .samples
                    .iter()
                    .fold(Load::default(), |acc, (_, l)| Load {
                        bw_used: acc.bw_used.saturating_add(l.bw_used),
                        bw_limit: acc.bw_limit.saturating_add(l.bw_limit),
                        cpu_tenths: acc.cpu_tenths.saturating_add(l.cpu_tenths),
                        ram_used: acc.ram_used.saturating_add(l.ram_used),
                        ram_max: acc.ram_max.saturating_add(l.ram_max),
                        viewers: acc.viewers.saturating_add(l.viewers),
                    });
                EdgeSummary {
                    bw_used: sum.bw_used / n,
                    bw_limit: sum.bw_limit / n,
                    cpu_tenths: (sum.cpu_tenths / n).min(1000) as u16,
                    ram_used: sum.ram_used / n,
                    ram_max: sum.ram_max / n,
                    viewers: u32::try_from(sum.viewers / n).unwrap_or(u32::MAX),
                    ..tracked.latest.clone()
                }
            })
            .collect();
        edges.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        ClusterSummary {
            cluster_id: cluster_id.to_string(),
            window: self.window,
            edges,
        }
    }
}

impl ClusterSummary {
    /// The peer's edges as routing candidates, scored until `expires_at`.
    pub fn remote_edges(&self, expires_at: Instant) -> Vec<RemoteEdge> {
        self.edges
            .iter()
            .map(|e| RemoteEdge {
                node_id: e.node_id.clone(),
                base_url: e.base_url.clone(),
                serves_viewers: e.capabilities.edge,
                cpu_tenths: u64::from(e.cpu_tenths),
                ram_used: e.ram_used,
                ram_max: e.ram_max,
                up: e.bw_used,
                bw_limit: e.bw_limit,
                latitude: e.position.map(|p| p.0),
                longitude: e.position.map(|p| p.1),
                streams: e.streams.clone(),
                expires_at,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{EdgeInfo, Mode, Stats, StreamLoad};

    fn view(node: &str, routable: bool, up: u64, viewers: u32) -> EdgeView {
        EdgeView {
            node_id: node.into(),
            info: EdgeInfo {
                capabilities: Capabilities {
                    edge: true,
                    ..Capabilities::default()
                },
                ..EdgeInfo::default()
            },
            mode: Mode::Normal,
            connected: true,
            replica: None,
            routable,
            last_stats_age_ms: Some(0),
            connected_for_ms: Some(0),
            stats: Some(Stats {
                cpu_tenths: 100,
                ram_max_bytes: 1 << 30,
                ram_used_bytes: 1 << 29,
                up_bytes_per_sec: up,
                bw_limit_bytes_per_sec: 1_000_000,
                latitude: Some(50.0),
                longitude: Some(8.0),
                streams: vec![StreamLoad {
                    internal_name: "live+b".into(),
                    viewers,
                    ..StreamLoad::default()
                }],
                ..Stats::default()
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn load_is_averaged_over_the_window_and_unroutable_edges_leave_at_once() {
        let mut smoother = Smoother::new(Duration::from_secs(30));
        let url = |n: &str| format!("https://edge-{n}.c.example.net");
        let t0 = Instant::now();
        smoother.observe(t0, &[view("a", true, 100, 1), view("b", true, 10, 0)], url);
        tokio::time::advance(Duration::from_secs(10)).await;
        smoother.observe(
            Instant::now(),
            &[view("a", true, 300, 3), view("b", true, 10, 0)],
            url,
        );
        let summary = smoother.summary("c");
        assert_eq!(summary.edges.len(), 2);
        let a = &summary.edges[0];
        assert_eq!(
            (a.bw_used, a.viewers),
            (200, 2),
            "average of 100 and 300, 1 and 3"
        );
        assert_eq!(&*a.base_url, "https://edge-a.c.example.net");
        assert_eq!(a.streams, [Arc::from("live+b")]);
        assert_eq!(a.position, Some((50.0, 8.0)));

        // 31 s later the first sample is out of the window.
        tokio::time::advance(Duration::from_secs(21)).await;
        smoother.observe(
            Instant::now(),
            &[view("a", true, 500, 5), view("b", false, 10, 0)],
            url,
        );
        let summary = smoother.summary("c");
        assert_eq!(
            summary.edges.len(),
            1,
            "b is not routable: it leaves at once"
        );
        assert_eq!(summary.edges[0].bw_used, 400, "average of 300 and 500");

        let remote = summary.remote_edges(Instant::now() + Duration::from_secs(90));
        assert_eq!(remote[0].up, 400);
        assert!(remote[0].serves_viewers);
        assert_eq!(remote[0].latitude, Some(50.0));
    }
}
