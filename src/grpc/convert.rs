//! proto <-> domain conversion for the control stream: edge frames in, seeds' parts, decisions
//! and ends out. Decoding checks nothing; the bounds are the session's ([`crate::edge::session`]).

use crate::edge::session::{
    Credentials, EndCode, Frame, Hardware, IngestDecision, IngestRequest, Register, StatsReport,
};
use crate::edge::{Capabilities, Mode, StreamLoad};
use crate::proto::{self, control_message, edge_message, register, ControlMessage, ErrorCode};

pub fn capabilities(c: Option<&proto::Capabilities>) -> Capabilities {
    c.map(|c| Capabilities {
        ingest: c.ingest,
        edge: c.edge,
        storage: c.storage,
        processing: c.processing,
    })
    .unwrap_or_default()
}

/// A mode from the wire; `UNSPECIFIED` and unknown values are refused rather than guessed.
pub fn mode(raw: i32) -> Result<Mode, String> {
    match proto::NodeMode::try_from(raw) {
        Ok(proto::NodeMode::Normal) => Ok(Mode::Normal),
        Ok(proto::NodeMode::Draining) => Ok(Mode::Draining),
        Ok(proto::NodeMode::Maintenance) => Ok(Mode::Maintenance),
        _ => Err(format!("mode {raw} is not NORMAL, DRAINING or MAINTENANCE")),
    }
}

pub fn mode_to_proto(mode: Mode) -> proto::NodeMode {
    match mode {
        Mode::Normal => proto::NodeMode::Normal,
        Mode::Draining => proto::NodeMode::Draining,
        Mode::Maintenance => proto::NodeMode::Maintenance,
    }
}

/// An edge frame as the session takes it.
pub fn frame(message: proto::EdgeMessage) -> Frame {
    use edge_message::Payload;
    match message.payload {
        None => Frame::Empty,
        Some(Payload::Register(r)) => Frame::Register(self::register(r)),
        Some(Payload::NodeStats(s)) => Frame::NodeStats(stats(s)),
        Some(Payload::IngestRequest(r)) => Frame::IngestRequest(IngestRequest {
            request_id: r.request_id,
            stream_key: r.stream_key,
            protocol: r.protocol,
            publisher_ip: r.publisher_ip,
        }),
        Some(Payload::StreamEnded(e)) => Frame::StreamEnded {
            internal_name: e.internal_name,
        },
        Some(Payload::ModeChange(c)) => Frame::ModeChange(mode(c.mode)),
        Some(Payload::ConfigApplied(a)) => Frame::ConfigApplied {
            seed_version: a.seed_version,
            success: a.success,
            error: a.error,
        },
    }
}

pub fn register(r: proto::Register) -> Register {
    let hw = r.hardware.unwrap_or_default();
    Register {
        protocol_version: r.protocol_version,
        auth: r.auth.map(|auth| match auth {
            register::Auth::EnrollmentToken(token) => Credentials::EnrollmentToken(token),
            register::Auth::NodeCredential(c) => Credentials::Node {
                node_id: c.node_id,
                credential: c.credential,
            },
        }),
        capabilities: capabilities(r.capabilities.as_ref()),
        public_base_url: r.public_base_url,
        hardware: Hardware {
            cpu_cores: hw.cpu_cores,
            ram_bytes: hw.ram_bytes,
            disk_bytes: hw.disk_bytes,
        },
        host_fingerprint: r.host_fingerprint,
        pre_registered_node_id: r.pre_registered_node_id,
    }
}

/// A NodeStats frame as reported, to be checked by the session.
pub fn stats(p: proto::NodeStats) -> StatsReport {
    StatsReport {
        cpu_tenths: p.cpu_tenths,
        ram_max_bytes: p.ram_max_bytes,
        ram_used_bytes: p.ram_used_bytes,
        up_bytes_per_sec: p.up_bytes_per_sec,
        down_bytes_per_sec: p.down_bytes_per_sec,
        bw_limit_bytes_per_sec: p.bw_limit_bytes_per_sec,
        latitude: p.latitude,
        longitude: p.longitude,
        location_name: p.location_name,
        connections: p.connections,
        streams: p
            .streams
            .into_iter()
            .map(|s| StreamLoad {
                internal_name: s.internal_name,
                viewers: s.viewers,
                inputs: s.inputs,
                up_bytes_per_sec: s.up_bytes_per_sec,
                down_bytes_per_sec: s.down_bytes_per_sec,
                replicated: s.replicated,
            })
            .collect(),
    }
}

pub fn error_code(code: EndCode) -> ErrorCode {
    match code {
        EndCode::EnrollmentRequired => ErrorCode::EnrollmentRequired,
        EndCode::EnrollmentFailed => ErrorCode::EnrollmentFailed,
        EndCode::Unauthenticated => ErrorCode::Unauthenticated,
        EndCode::ProtocolVersion => ErrorCode::ProtocolVersion,
        EndCode::ProtocolViolation => ErrorCode::ProtocolViolation,
        EndCode::LimitExceeded => ErrorCode::LimitExceeded,
        EndCode::SessionReplaced => ErrorCode::SessionReplaced,
        EndCode::ShuttingDown => ErrorCode::ShuttingDown,
        EndCode::Internal => ErrorCode::Internal,
        EndCode::Gone => ErrorCode::Unspecified,
    }
}

pub fn ingest_decision(decision: &IngestDecision) -> ControlMessage {
    let (accept, internal_name, reason) = match &decision.outcome {
        Ok(internal_name) => (true, internal_name.clone(), String::new()),
        Err(reason) => (false, String::new(), reason.clone()),
    };
    ControlMessage {
        payload: Some(control_message::Payload::IngestDecision(
            proto::IngestDecision {
                request_id: decision.request_id.clone(),
                accept,
                internal_name,
                reason,
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of a NodeStats reaches the session's report, unchanged and unchecked.
    #[test]
    fn stats_are_decoded_as_reported() {
        let p = proto::NodeStats {
            cpu_tenths: 5000,
            ram_max_bytes: 1,
            ram_used_bytes: 2,
            up_bytes_per_sec: 3,
            down_bytes_per_sec: 4,
            bw_limit_bytes_per_sec: 5,
            latitude: Some(1.5),
            longitude: None,
            location_name: "Ams".into(),
            connections: 6,
            streams: vec![proto::StreamStats {
                internal_name: "live+a".into(),
                viewers: 7,
                inputs: 1,
                up_bytes_per_sec: 8,
                down_bytes_per_sec: 9,
                replicated: true,
            }],
        };
        let report = stats(p);
        assert_eq!(
            (report.cpu_tenths, report.latitude, report.longitude),
            (5000, Some(1.5), None)
        );
        assert_eq!(report.connections, 6);
        assert_eq!(
            report.streams,
            vec![StreamLoad {
                internal_name: "live+a".into(),
                viewers: 7,
                inputs: 1,
                up_bytes_per_sec: 8,
                down_bytes_per_sec: 9,
                replicated: true,
            }]
        );
    }

    #[test]
    fn frames_keep_their_kind_and_empty_frames_stay_empty() {
        assert_eq!(frame(proto::EdgeMessage { payload: None }), Frame::Empty);
        let unknown_mode = proto::EdgeMessage {
            payload: Some(edge_message::Payload::ModeChange(proto::ModeChange {
                mode: 0,
            })),
        };
        assert!(matches!(frame(unknown_mode), Frame::ModeChange(Err(_))));
        let node = proto::EdgeMessage {
            payload: Some(edge_message::Payload::Register(proto::Register {
                auth: Some(register::Auth::NodeCredential(proto::NodeCredential {
                    node_id: "n".into(),
                    credential: "c".into(),
                })),
                ..Default::default()
            })),
        };
        let Frame::Register(r) = frame(node) else {
            panic!("a Register");
        };
        assert_eq!(
            r.auth,
            Some(Credentials::Node {
                node_id: "n".into(),
                credential: "c".into()
            })
        );
    }
}
