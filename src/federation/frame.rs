//! The frames of a PeerChannel (DESIGN.md §7.1), decoded and checked by the `wire` module for both
//! carriers (the gRPC channel and the Redis relay between replicas), and the rules a channel
//! applies to them here.

use std::sync::Arc;

use super::ClusterSummary;

/// The federation protocol version this Foghorn speaks.
pub const FEDERATION_VERSION: u32 = 1;
/// Most stream names in one advert.
pub const MAX_ADVERT: usize = 100_000;
/// Longest stream name accepted from a peer.
pub const MAX_NAME: usize = 512;

/// One frame of a PeerChannel.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// The first frame of each side: who speaks, in which protocol version.
    Hello {
        cluster_id: String,
        protocol_version: u32,
    },
    /// The sender's edges, smoothed over the summary window. Shared: one summary goes to every
    /// channel.
    Summary(Arc<ClusterSummary>),
    Heartbeat {
        cluster_id: String,
        sent_at_unix_ms: i64,
    },
    /// The streams live on the sender's cluster.
    Advert {
        cluster_id: String,
        streams: Arc<Vec<String>>,
    },
}

impl Frame {
    /// The label of its kind, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Summary(_) => "summary",
            Frame::Heartbeat { .. } => "heartbeat",
            Frame::Advert { .. } => "stream_advert",
        }
    }

    /// The cluster the frame speaks for.
    pub fn cluster_id(&self) -> &str {
        match self {
            Frame::Hello { cluster_id, .. }
            | Frame::Heartbeat { cluster_id, .. }
            | Frame::Advert { cluster_id, .. } => cluster_id,
            Frame::Summary(summary) => &summary.cluster_id,
        }
    }
}

/// Whether a stream name from a peer is acceptable.
pub fn is_valid_stream_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME
}

/// What a channel checks of each frame a peer sends: that it speaks for the cluster the channel
/// authenticated, and that a Hello in this protocol version comes first. `Err` says why the
/// channel must end.
#[derive(Debug, Default)]
pub struct FrameRules {
    hello_seen: bool,
}

impl FrameRules {
    pub fn check(&mut self, peer: &str, frame: &Frame) -> Result<(), String> {
        if frame.cluster_id() != peer {
            return Err(format!(
                "a frame claims cluster {:?} on the channel of cluster {peer:?}",
                frame.cluster_id().chars().take(64).collect::<String>()
            ));
        }
        match frame {
            Frame::Hello {
                protocol_version, ..
            } => {
                if *protocol_version != FEDERATION_VERSION {
                    return Err(format!(
                        "federation protocol {protocol_version} is not supported (this Foghorn speaks {FEDERATION_VERSION})"
                    ));
                }
                self.hello_seen = true;
                Ok(())
            }
            _ if !self.hello_seen => Err("the first frame must be Hello".into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(cluster: &str, version: u32) -> Frame {
        Frame::Hello {
            cluster_id: cluster.into(),
            protocol_version: version,
        }
    }

    fn beat(cluster: &str) -> Frame {
        Frame::Heartbeat {
            cluster_id: cluster.into(),
            sent_at_unix_ms: 0,
        }
    }

    #[test]
    fn hello_first_in_our_version_then_anything_of_the_peer() {
        let mut rules = FrameRules::default();
        assert_eq!(
            rules.check("bravo", &beat("bravo")),
            Err("the first frame must be Hello".into())
        );
        assert!(rules.check("bravo", &hello("bravo", 2)).is_err());
        assert!(rules.check("bravo", &hello("bravo", 1)).is_ok());
        assert!(rules.check("bravo", &beat("bravo")).is_ok());
    }

    #[test]
    fn a_frame_speaks_only_for_the_channel_cluster() {
        let mut rules = FrameRules::default();
        let why = rules.check("bravo", &hello("charlie", 1)).unwrap_err();
        assert!(why.contains("charlie"), "{why}");
        assert!(rules.check("bravo", &hello("bravo", 1)).is_ok());
        let summary = Frame::Summary(Arc::new(ClusterSummary {
            cluster_id: "charlie".into(),
            window: std::time::Duration::from_secs(30),
            edges: Vec::new(),
        }));
        assert!(rules.check("bravo", &summary).is_err());
        let long = "x".repeat(10_000);
        let why = rules.check("bravo", &beat(&long)).unwrap_err();
        assert!(why.len() < 200, "the peer's text is cut: {why}");
    }
}
