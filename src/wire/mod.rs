//! Protobuf ↔ domain conversion of the federation messages, below both carriers: the gRPC
//! PeerChannel and the Redis relay between replicas decode the same frames with the same checks.
//! Everything a peer sends is bounded and checked here before the domain sees it.

mod summary;

use std::sync::Arc;

pub use summary::{
    summary_from_proto, summary_to_proto, SummaryError, MAX_EDGES, MAX_STREAM_MENTIONS,
    MAX_STREAM_NAMES,
};

use crate::federation::ports::{
    PullAnswer, PullNotice, QueryAnswer, RemotePull, StreamCandidate, StreamQuery,
};
use crate::federation::{is_valid_stream_name, Frame, MAX_ADVERT};
use crate::proto::{self, peer_message::Payload, PeerMessage};
use crate::routing::Position;

/// Largest federation message accepted (a summary of 10,000 edges is ~0.5 MB; of the 100,000 a
/// summary may hold, ~5 MB).
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// The wire form of `frame`; `root` is the platform's root domain.
pub fn frame_to_proto(frame: &Frame, root: &str) -> PeerMessage {
    let payload = match frame {
        Frame::Hello {
            cluster_id,
            protocol_version,
        } => Payload::Hello(proto::Hello {
            cluster_id: cluster_id.clone(),
            protocol_version: *protocol_version,
        }),
        Frame::Summary(summary) => Payload::Summary(summary_to_proto(summary, root)),
        Frame::Heartbeat {
            cluster_id,
            sent_at_unix_ms,
        } => Payload::Heartbeat(proto::PeerHeartbeat {
            cluster_id: cluster_id.clone(),
            sent_at_unix_ms: *sent_at_unix_ms,
        }),
        Frame::Advert {
            cluster_id,
            streams,
        } => Payload::StreamAdvert(proto::StreamAdvert {
            cluster_id: cluster_id.clone(),
            streams: streams.to_vec(),
        }),
    };
    PeerMessage {
        payload: Some(payload),
    }
}

/// A frame of `peer`, checked: a summary must speak for `peer` and be sane in every field
/// ([`summary_from_proto`]), an advert is bounded in size and names. `Err` says what is wrong.
pub fn frame_from_proto(message: PeerMessage, peer: &str, root: &str) -> Result<Frame, String> {
    Ok(match message.payload.ok_or("empty frame")? {
        Payload::Hello(hello) => Frame::Hello {
            cluster_id: hello.cluster_id,
            protocol_version: hello.protocol_version,
        },
        Payload::Summary(wire) => Frame::Summary(Arc::new(
            summary_from_proto(&wire, peer, root).map_err(|e| format!("bad summary: {e}"))?,
        )),
        Payload::Heartbeat(beat) => Frame::Heartbeat {
            cluster_id: beat.cluster_id,
            sent_at_unix_ms: beat.sent_at_unix_ms,
        },
        Payload::StreamAdvert(advert) => {
            if advert.streams.len() > MAX_ADVERT
                || !advert.streams.iter().all(|s| is_valid_stream_name(s))
            {
                return Err("bad stream advert".into());
            }
            Frame::Advert {
                cluster_id: advert.cluster_id,
                streams: Arc::new(advert.streams),
            }
        }
    })
}

/// Encodes `frame` for the relay between replicas.
pub fn encode_frame(frame: &Frame, root: &str) -> Vec<u8> {
    use prost::Message as _;
    frame_to_proto(frame, root).encode_to_vec()
}

/// Decodes and checks a frame of `peer` relayed by another replica.
pub fn decode_frame(bytes: &[u8], peer: &str, root: &str) -> Result<Frame, String> {
    use prost::Message as _;
    let message = PeerMessage::decode(bytes).map_err(|_| "undecodable frame".to_string())?;
    frame_from_proto(message, peer, root)
}

/// A viewer position from the optional wire degrees (none when out of range).
fn position(lat: Option<f64>, lon: Option<f64>) -> Option<Position> {
    lat.zip(lon)
        .and_then(|(lat, lon)| Position::from_degrees(lat, lon))
}

pub fn query_to_proto(q: StreamQuery) -> proto::QueryStreamRequest {
    proto::QueryStreamRequest {
        stream: q.stream,
        tenant_id: q.tenant_id,
        viewer_lat: q.viewer.map(|p| p.latitude()),
        viewer_lon: q.viewer.map(|p| p.longitude()),
        source_selection: q.source_selection,
    }
}

pub fn query_from_proto(q: proto::QueryStreamRequest) -> StreamQuery {
    StreamQuery {
        viewer: position(q.viewer_lat, q.viewer_lon),
        stream: q.stream,
        tenant_id: q.tenant_id,
        source_selection: q.source_selection,
    }
}

pub fn answer_to_proto(a: QueryAnswer) -> proto::QueryStreamResponse {
    proto::QueryStreamResponse {
        live: a.live,
        candidates: a
            .candidates
            .into_iter()
            .map(|c| proto::StreamCandidate {
                node_id: c.node_id,
                base_url: c.base_url,
                dtsc_url: c.dtsc_url,
                score: c.score,
            })
            .collect(),
    }
}

pub fn answer_from_proto(a: proto::QueryStreamResponse) -> QueryAnswer {
    QueryAnswer {
        live: a.live,
        candidates: a
            .candidates
            .into_iter()
            .map(|c| StreamCandidate {
                node_id: c.node_id,
                base_url: c.base_url,
                dtsc_url: c.dtsc_url,
                score: c.score,
            })
            .collect(),
    }
}

pub fn notice_to_proto(n: PullNotice) -> proto::NotifyOriginPullRequest {
    proto::NotifyOriginPullRequest {
        stream: n.stream,
        tenant_id: n.tenant_id,
        destination_cluster_id: n.destination_cluster_id,
        destination_node_id: n.destination_node_id,
    }
}

pub fn notice_from_proto(n: proto::NotifyOriginPullRequest) -> PullNotice {
    PullNotice {
        stream: n.stream,
        tenant_id: n.tenant_id,
        destination_cluster_id: n.destination_cluster_id,
        destination_node_id: n.destination_node_id,
    }
}

pub fn remote_pull_to_proto(p: RemotePull) -> proto::ArrangeOriginPullRequest {
    proto::ArrangeOriginPullRequest {
        stream: p.stream,
        tenant_id: p.tenant_id,
        source_cluster_id: p.source_cluster_id,
        source_dtsc_url: p.source_dtsc_url,
        destination_node_id: p.destination_node_id,
    }
}

pub fn remote_pull_from_proto(p: proto::ArrangeOriginPullRequest) -> RemotePull {
    RemotePull {
        stream: p.stream,
        tenant_id: p.tenant_id,
        source_cluster_id: p.source_cluster_id,
        source_dtsc_url: p.source_dtsc_url,
        destination_node_id: p.destination_node_id,
    }
}

pub fn pull_to_proto(a: PullAnswer) -> proto::NotifyOriginPullResponse {
    proto::NotifyOriginPullResponse {
        accepted: a.accepted,
        dtsc_url: a.dtsc_url,
        reason: a.reason,
    }
}

pub fn pull_from_proto(a: proto::NotifyOriginPullResponse) -> PullAnswer {
    PullAnswer {
        accepted: a.accepted,
        dtsc_url: a.dtsc_url,
        reason: a.reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Hello {
                cluster_id: "eu".into(),
                protocol_version: 1,
            },
            Frame::Heartbeat {
                cluster_id: "eu".into(),
                sent_at_unix_ms: 1_700_000_000_000,
            },
            Frame::Advert {
                cluster_id: "eu".into(),
                streams: Arc::new(vec!["live+a".into(), "live+b".into()]),
            },
            Frame::Summary(Arc::new(crate::federation::ClusterSummary {
                cluster_id: "eu".into(),
                window: std::time::Duration::from_secs(30),
                edges: Vec::new(),
            })),
        ];
        for frame in frames {
            let bytes = encode_frame(&frame, "example.net");
            assert_eq!(decode_frame(&bytes, "eu", "example.net"), Ok(frame));
        }
    }

    #[test]
    fn adverts_are_bounded() {
        let advert = |streams: Vec<String>| PeerMessage {
            payload: Some(Payload::StreamAdvert(proto::StreamAdvert {
                cluster_id: "eu".into(),
                streams,
            })),
        };
        let check = |m| frame_from_proto(m, "eu", "example.net");
        assert!(check(advert(vec!["live+a".into()])).is_ok());
        assert!(check(advert(vec![String::new()])).is_err());
        assert!(check(advert(vec!["x".repeat(513)])).is_err());
        assert!(check(advert(vec!["a".into(); MAX_ADVERT + 1])).is_err());
        assert_eq!(
            check(PeerMessage { payload: None }),
            Err("empty frame".into())
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame(&bytes, "eu", "example.net");
        }

        #[test]
        fn adverts_decode_exactly_when_every_name_is_sane(
            names in proptest::collection::vec(".{0,600}", 0..8),
        ) {
            let message = PeerMessage {
                payload: Some(Payload::StreamAdvert(proto::StreamAdvert {
                    cluster_id: "eu".into(),
                    streams: names.clone(),
                })),
            };
            let sane = names.iter().all(|n| !n.is_empty() && n.len() <= 512);
            prop_assert_eq!(frame_from_proto(message, "eu", "example.net").is_ok(), sane);
        }
    }
}
