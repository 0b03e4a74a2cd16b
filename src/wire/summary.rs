//! Federation summaries to and from the wire (`foghorn.v1.ClusterEdgeSummary`).
//!
//! Compact on purpose (DESIGN.md §10, ≤ 100 bytes per edge without streams): 12-hex node ids
//! travel as 6 bytes, base URLs that follow the naming of DESIGN.md §2 are left out, positions
//! are fixed-point, RAM is in MiB, and stream names are sent once per summary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::edge::Capabilities;
use crate::federation::{peer_base_url, ClusterSummary, EdgeSummary};
use crate::names::Zone;
use crate::proto;

/// Longest stream name, node id or URL accepted from a peer.
const MAX_TEXT: usize = 512;
/// Most edges one summary may describe.
pub const MAX_EDGES: usize = 100_000;
/// Most distinct stream names one summary may list.
pub const MAX_STREAM_NAMES: usize = 100_000;
/// Most stream mentions (an edge carrying a stream) one summary may hold: each costs ~56 bytes
/// here and in the routing pool, names themselves being shared. 10,000 edges carrying 100
/// streams each; ~56 MB at the cap.
pub const MAX_STREAM_MENTIONS: usize = 1_000_000;

/// Why a peer's summary was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SummaryError {
    #[error("summary for cluster {0:?} on a channel of cluster {1:?}")]
    WrongCluster(String, String),
    #[error("edge {0}: stream index {1} out of range")]
    StreamIndex(usize, u32),
    #[error("edge {0}: {1}")]
    Field(usize, &'static str),
    #[error("too large: {0}")]
    TooLarge(&'static str),
}

fn is_default_base_url(url: &str, node_id: &str, cluster: &str, root: &str) -> bool {
    Zone::new(cluster, root).is_edge_base_url(url, node_id)
}

/// The wire fields `(node_id, node_name)` of a node id.
fn encode_node_id(id: &str) -> (Vec<u8>, String) {
    let hex12 = id.len() == 12 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match hex::decode(id) {
        Ok(bytes) if hex12 => (bytes, String::new()),
        _ => (Vec::new(), id.to_string()),
    }
}

fn decode_node_id(bytes: &[u8], name: &str) -> Option<String> {
    match (bytes.len(), name.is_empty()) {
        (6, true) => Some(hex::encode(bytes)),
        (0, false) if crate::names::is_valid_node_id(name) => Some(name.to_string()),
        _ => None,
    }
}

fn capability_bits(c: Capabilities) -> u32 {
    u32::from(c.ingest)
        | u32::from(c.edge) << 1
        | u32::from(c.storage) << 2
        | u32::from(c.processing) << 3
}

fn capabilities_of(bits: u32) -> Capabilities {
    Capabilities {
        ingest: bits & 1 != 0,
        edge: bits & 2 != 0,
        storage: bits & 4 != 0,
        processing: bits & 8 != 0,
    }
}

const MIB: u64 = 1 << 20;

/// The wire form of `summary`; `root` is the platform's root domain.
pub fn summary_to_proto(summary: &ClusterSummary, root: &str) -> proto::ClusterEdgeSummary {
    let mut names: HashMap<&str, u32> = HashMap::new();
    let mut streams = Vec::new();
    let edges = summary
        .edges
        .iter()
        .map(|e| {
            let indexes = e
                .streams
                .iter()
                .map(|s| {
                    *names.entry(s).or_insert_with(|| {
                        streams.push(s.to_string());
                        (streams.len() - 1) as u32
                    })
                })
                .collect();
            let (node_id, node_name) = encode_node_id(&e.node_id);
            proto::EdgeSummary {
                node_id,
                node_name,
                base_url: if is_default_base_url(&e.base_url, &e.node_id, &summary.cluster_id, root)
                {
                    String::new()
                } else {
                    e.base_url.to_string()
                },
                dtsc_url: String::new(),
                lat_e5: e.position.map(|p| (p.0 * 1e5).round() as i32),
                lon_e5: e.position.map(|p| (p.1 * 1e5).round() as i32),
                bw_used: e.bw_used,
                bw_limit: e.bw_limit,
                cpu_tenths: u32::from(e.cpu_tenths),
                ram_used_mib: e.ram_used.div_ceil(MIB),
                ram_max_mib: e.ram_max / MIB,
                viewers: e.viewers,
                capabilities: capability_bits(e.capabilities),
                streams: indexes,
            }
        })
        .collect();
    proto::ClusterEdgeSummary {
        cluster_id: summary.cluster_id.clone(),
        window_ms: u32::try_from(summary.window.as_millis()).unwrap_or(u32::MAX),
        streams,
        edges,
    }
}

/// A peer's summary, checked: it must speak for `peer_cluster`, and every field must be sane.
pub fn summary_from_proto(
    wire: &proto::ClusterEdgeSummary,
    peer_cluster: &str,
    root: &str,
) -> Result<ClusterSummary, SummaryError> {
    if wire.cluster_id != peer_cluster {
        return Err(SummaryError::WrongCluster(
            wire.cluster_id.clone(),
            peer_cluster.to_string(),
        ));
    }
    if wire.edges.len() > MAX_EDGES {
        return Err(SummaryError::TooLarge("more than 100,000 edges"));
    }
    if wire.streams.len() > MAX_STREAM_NAMES {
        return Err(SummaryError::TooLarge("more than 100,000 stream names"));
    }
    if wire
        .streams
        .iter()
        .any(|s| s.is_empty() || s.len() > MAX_TEXT)
    {
        return Err(SummaryError::Field(0, "stream name"));
    }
    if wire.edges.iter().map(|e| e.streams.len()).sum::<usize>() > MAX_STREAM_MENTIONS {
        return Err(SummaryError::TooLarge(
            "more than 1,000,000 stream mentions",
        ));
    }
    // Each name allocated once, when first mentioned, and shared by the edges that carry it.
    let mut names: Vec<Option<Arc<str>>> = vec![None; wire.streams.len()];
    let edges = wire
        .edges
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let node_id = decode_node_id(&e.node_id, &e.node_name)
                .ok_or(SummaryError::Field(i, "node_id"))?;
            if e.base_url.len() > MAX_TEXT {
                return Err(SummaryError::Field(i, "base_url"));
            }
            let base_url = peer_base_url(&e.base_url, &node_id, peer_cluster, root);
            let position = match (e.lat_e5, e.lon_e5) {
                (Some(lat), Some(lon)) => {
                    let (lat, lon) = (f64::from(lat) / 1e5, f64::from(lon) / 1e5);
                    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                        return Err(SummaryError::Field(i, "position"));
                    }
                    Some((lat, lon))
                }
                _ => None,
            };
            let streams = e
                .streams
                .iter()
                .map(|&k| {
                    let (slot, name) = names
                        .get_mut(k as usize)
                        .zip(wire.streams.get(k as usize))
                        .ok_or(SummaryError::StreamIndex(i, k))?;
                    Ok(slot.get_or_insert_with(|| Arc::from(name.as_str())).clone())
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(EdgeSummary {
                node_id: node_id.into(),
                base_url: base_url.into(),
                position,
                bw_used: e.bw_used,
                bw_limit: e.bw_limit,
                cpu_tenths: e.cpu_tenths.min(1000) as u16,
                ram_used: e.ram_used_mib.saturating_mul(MIB),
                ram_max: e.ram_max_mib.saturating_mul(MIB),
                viewers: e.viewers,
                capabilities: capabilities_of(e.capabilities),
                streams,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ClusterSummary {
        cluster_id: peer_cluster.to_string(),
        window: Duration::from_millis(u64::from(wire.window_ms)),
        edges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn default_base_url(node_id: &str, cluster: &str, root: &str) -> String {
        Zone::new(cluster, root).edge_base_url(node_id)
    }

    fn edge(i: usize, streams: Vec<Arc<str>>) -> EdgeSummary {
        let node_id = format!("{i:012x}");
        EdgeSummary {
            base_url: default_base_url(&node_id, "eu", "example.net").into(),
            node_id: node_id.into(),
            position: Some((52.52, 13.405)),
            bw_used: 87_500_000,
            bw_limit: 125_000_000,
            cpu_tenths: 431,
            ram_used: 9 << 30,
            ram_max: 32 << 30,
            viewers: 1_234,
            capabilities: Capabilities {
                ingest: true,
                edge: true,
                ..Capabilities::default()
            },
            streams,
        }
    }

    #[test]
    fn a_summary_round_trips_and_stays_compact() {
        let summary = ClusterSummary {
            cluster_id: "eu".into(),
            window: Duration::from_secs(30),
            edges: (0..1000).map(|i| edge(i, Vec::new())).collect(),
        };
        let wire = summary_to_proto(&summary, "example.net");
        let bytes = wire.encode_to_vec();
        assert!(
            bytes.len() <= 100 * 1000,
            "{} bytes for 1,000 edges",
            bytes.len()
        );
        let back = proto::ClusterEdgeSummary::decode(bytes.as_slice()).expect("decode");
        let back = summary_from_proto(&back, "eu", "example.net").expect("valid");
        assert_eq!(back, summary);
    }

    #[test]
    fn stream_names_are_sent_once_and_peers_are_checked() {
        let live = |n: &str| Arc::<str>::from(n);
        let summary = ClusterSummary {
            cluster_id: "eu".into(),
            window: Duration::from_secs(30),
            edges: vec![
                edge(1, vec![live("live+a"), live("live+b")]),
                edge(2, vec![live("live+b")]),
            ],
        };
        let wire = summary_to_proto(&summary, "example.net");
        assert_eq!(wire.streams, ["live+a", "live+b"]);
        assert_eq!(
            summary_from_proto(&wire, "us", "example.net"),
            Err(SummaryError::WrongCluster("eu".into(), "us".into())),
            "a peer speaks only for its own cluster"
        );
        let mut bad = wire.clone();
        bad.edges[1].streams = vec![7];
        assert_eq!(
            summary_from_proto(&bad, "eu", "example.net"),
            Err(SummaryError::StreamIndex(1, 7))
        );
        let mut bad = wire.clone();
        bad.edges[0].lat_e5 = Some(9_100_000);
        assert!(summary_from_proto(&bad, "eu", "example.net").is_err());
        for (id, name) in [
            (b"../et".to_vec(), ""),
            (Vec::new(), "../etc"),
            (vec![1; 6], "x"),
        ] {
            let mut bad = wire.clone();
            bad.edges[0].node_id = id;
            bad.edges[0].node_name = name.into();
            assert!(summary_from_proto(&bad, "eu", "example.net").is_err());
        }
        // An operator's id hint travels by name.
        let mut named = summary.clone();
        named.edges[0].node_id = "berlin-1".into();
        named.edges[0].base_url = default_base_url("berlin-1", "eu", "example.net").into();
        let wire = summary_to_proto(&named, "example.net");
        assert_eq!(wire.edges[0].node_name, "berlin-1");
        assert_eq!(summary_from_proto(&wire, "eu", "example.net"), Ok(named));
    }

    #[test]
    fn oversized_summaries_are_refused_before_anything_is_copied() {
        let mut wire = summary_to_proto(
            &ClusterSummary {
                cluster_id: "eu".into(),
                window: Duration::from_secs(30),
                edges: vec![edge(1, vec!["live+a".into()])],
            },
            "example.net",
        );
        // Each edge carries every one of 200 streams: 1,000,000 mentions at 5,000 edges.
        wire.streams = (0..200).map(|i| format!("live+{i}")).collect();
        let all: Vec<u32> = (0..200).collect();
        wire.edges = (0..5_001u32)
            .map(|i| proto::EdgeSummary {
                node_id: vec![0, 0, 0, 0, (i >> 8) as u8, i as u8],
                streams: all.clone(),
                ..wire.edges[0].clone()
            })
            .collect();
        assert_eq!(
            summary_from_proto(&wire, "eu", "example.net"),
            Err(SummaryError::TooLarge(
                "more than 1,000,000 stream mentions"
            ))
        );
        wire.edges.truncate(5_000);
        let fine = summary_from_proto(&wire, "eu", "example.net").expect("at the cap");
        assert!(
            Arc::ptr_eq(&fine.edges[0].streams[7], &fine.edges[4_999].streams[7]),
            "a name is shared by the edges that carry it"
        );

        wire.streams[3] = "x".repeat(513);
        assert!(summary_from_proto(&wire, "eu", "example.net").is_err());
        wire.streams = (0..=MAX_STREAM_NAMES).map(|i| i.to_string()).collect();
        assert_eq!(
            summary_from_proto(&wire, "eu", "example.net"),
            Err(SummaryError::TooLarge("more than 100,000 stream names"))
        );
        let edge = wire.edges[0].clone();
        wire.edges = vec![edge; MAX_EDGES + 1];
        assert_eq!(
            summary_from_proto(&wire, "eu", "example.net"),
            Err(SummaryError::TooLarge("more than 100,000 edges"))
        );
    }
}
