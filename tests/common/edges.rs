//! Simulated edges: raw Helmsman control streams driven frame by frame, the frames an edge
//! sends, and a stalled provisioning client.

use std::time::Duration;

use foghorn::proto::{
    edge_message, helmsman_control_client::HelmsmanControlClient, register, Capabilities,
    ControlMessage, EdgeMessage, NodeCredential, NodeStats, Register,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::server::TestServer;

/// One raw control stream, driven frame by frame.
pub struct EdgeConn {
    pub tx: mpsc::Sender<EdgeMessage>,
    pub rx: Streaming<ControlMessage>,
}

pub fn register_with_token(token: &str) -> EdgeMessage {
    register_frame(Some(register::Auth::EnrollmentToken(token.to_string())))
}

pub fn register_with_credential(node_id: &str, credential: &str) -> EdgeMessage {
    register_frame(Some(register::Auth::NodeCredential(NodeCredential {
        node_id: node_id.into(),
        credential: credential.into(),
    })))
}

pub fn register_frame(auth: Option<register::Auth>) -> EdgeMessage {
    EdgeMessage {
        payload: Some(edge_message::Payload::Register(Register {
            protocol_version: foghorn::grpc::PROTOCOL_VERSION,
            auth,
            capabilities: Some(Capabilities {
                ingest: true,
                edge: true,
                ..Default::default()
            }),
            public_base_url: "https://edge.example.net".into(),
            hardware: None,
            host_fingerprint: "fp".into(),
            pre_registered_node_id: String::new(),
        })),
    }
}

pub fn stats_frame(streams: Vec<foghorn::proto::StreamStats>) -> EdgeMessage {
    stats_frame_at_cpu(250, streams)
}

/// A NodeStats frame of an edge in Paris at `cpu_tenths` load (RAM 4/16 GiB, 1 MB/s up of
/// 125 MB/s).
pub fn stats_frame_at_cpu(
    cpu_tenths: u32,
    streams: Vec<foghorn::proto::StreamStats>,
) -> EdgeMessage {
    EdgeMessage {
        payload: Some(edge_message::Payload::NodeStats(NodeStats {
            cpu_tenths,
            ram_max_bytes: 16 << 30,
            ram_used_bytes: 4 << 30,
            up_bytes_per_sec: 1_000_000,
            down_bytes_per_sec: 0,
            bw_limit_bytes_per_sec: 125_000_000,
            latitude: Some(48.85),
            longitude: Some(2.35),
            location_name: "Paris".into(),
            connections: 3,
            streams,
        })),
    }
}

impl EdgeConn {
    /// Opens a control stream and sends `first` as its first frame.
    pub async fn open(grpc_url: &str, first: EdgeMessage) -> EdgeConn {
        Self::open_from(grpc_url, first, None).await
    }

    /// Like [`EdgeConn::open`], from a given local address (e.g. 127.0.0.2: Linux answers the
    /// whole loopback /8), so tests can tell edges apart by address.
    pub async fn open_from(
        grpc_url: &str,
        first: EdgeMessage,
        local: Option<std::net::IpAddr>,
    ) -> EdgeConn {
        let channel = tonic::transport::Endpoint::from_shared(grpc_url.to_string())
            .expect("url")
            .local_address(local)
            .connect()
            .await
            .expect("connect gRPC");
        Self::over(channel, first).await
    }

    /// Opens a control stream over `channel` (e.g. one with TLS) and sends `first`.
    pub async fn over(channel: tonic::transport::Channel, first: EdgeMessage) -> EdgeConn {
        let mut client = HelmsmanControlClient::new(channel);
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.expect("queue first frame");
        let rx = client
            .connect(ReceiverStream::new(rx))
            .await
            .expect("Connect accepted")
            .into_inner();
        EdgeConn { tx, rx }
    }

    pub async fn send(&self, frame: EdgeMessage) {
        self.tx.send(frame).await.expect("stream open");
    }

    /// The next control frame (None when the stream ended), bounded so a bug fails instead of hangs.
    pub async fn recv(&mut self) -> Result<Option<ControlMessage>, tonic::Status> {
        self.recv_within(Duration::from_secs(10)).await
    }

    /// The next control frame, waiting at most `within`.
    pub async fn recv_within(
        &mut self,
        within: Duration,
    ) -> Result<Option<ControlMessage>, tonic::Status> {
        tokio::time::timeout(within, self.rx.message())
            .await
            .unwrap_or_else(|_| panic!("a control frame within {within:?}"))
    }

    /// Expects a ConfigSeed next and returns it.
    pub async fn seed(&mut self) -> foghorn::proto::ConfigSeed {
        match self.recv().await {
            Ok(Some(ControlMessage {
                payload: Some(foghorn::proto::control_message::Payload::ConfigSeed(seed)),
            })) => seed,
            other => panic!("expected a ConfigSeed, got {other:?}"),
        }
    }

    /// Expects an IngestDecision next and returns it.
    pub async fn decision(&mut self) -> foghorn::proto::IngestDecision {
        match self.recv().await {
            Ok(Some(ControlMessage {
                payload: Some(foghorn::proto::control_message::Payload::IngestDecision(d)),
            })) => d,
            other => panic!("expected an IngestDecision, got {other:?}"),
        }
    }

    /// Expects an Error frame followed by the end of the stream; returns the error code.
    pub async fn error(&mut self) -> foghorn::proto::ErrorCode {
        self.error_frame().await.0
    }

    /// Like [`EdgeConn::error`], with the message.
    pub async fn error_frame(&mut self) -> (foghorn::proto::ErrorCode, String) {
        let code = match self.recv().await {
            Ok(Some(ControlMessage {
                payload: Some(foghorn::proto::control_message::Payload::Error(e)),
            })) => (
                foghorn::proto::ErrorCode::try_from(e.code).expect("known code"),
                e.message,
            ),
            other => panic!("expected an Error frame, got {other:?}"),
        };
        match self.recv().await {
            Err(_) | Ok(None) => {}
            Ok(Some(more)) => panic!("stream should end after an Error, got {more:?}"),
        }
        code
    }
}

/// Enrolls one edge with a fresh token; returns its connection, node id and credential.
pub async fn enroll(server: &TestServer, tenant: &str) -> (EdgeConn, String, String) {
    let token = server.enrollment_token(tenant, 1).await;
    let mut conn = EdgeConn::open(&server.grpc_url(), register_with_token(&token)).await;
    let seed = conn.seed().await;
    (conn, seed.node_id, seed.node_credential)
}

/// An IngestRequest frame.
pub fn ingest_frame(request_id: &str, stream_key: &str) -> EdgeMessage {
    EdgeMessage {
        payload: Some(edge_message::Payload::IngestRequest(
            foghorn::proto::IngestRequest {
                request_id: request_id.into(),
                stream_key: stream_key.into(),
                protocol: "rtmp".into(),
                publisher_ip: "192.0.2.1".into(),
            },
        )),
    }
}

/// Calls `PreRegisterEdge` sending its request message and then never ending the request stream,
/// as a stalled client does; resolves with the status the server ends the call with.
pub async fn stalled_pre_registration(grpc_url: &str) -> tokio::task::JoinHandle<tonic::Status> {
    use futures_util::StreamExt as _;
    let channel = tonic::transport::Endpoint::from_shared(grpc_url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect gRPC");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let request = futures_util::stream::iter([foghorn::proto::PreRegisterEdgeRequest::default()])
        .chain(futures_util::stream::pending());
    tokio::spawn(async move {
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/foghorn.v1.EdgeProvisioning/PreRegisterEdge",
        );
        let answer: Result<tonic::Response<foghorn::proto::PreRegisterEdgeResponse>, _> = grpc
            .client_streaming(
                tonic::Request::new(request),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await;
        answer.expect_err("a stalled request is not answered")
    })
}
