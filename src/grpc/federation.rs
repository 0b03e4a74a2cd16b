//! `foghorn.v1.Federation` over gRPC (DESIGN.md §7): the server side of PeerChannels,
//! `QueryStream`, `NotifyOriginPull` and `ArrangeOriginPull`, and the client ([`GrpcPeerLink`]) that federation dials
//! peers with. Both only authenticate, convert ([`crate::wire`]) and call [`crate::federation`].
//!
//! Every call carries the caller's cluster id and its peer credential in metadata; the callee
//! checks the credential against the registry and refuses a caller that shares no tenant with it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::cell::Cell;
use crate::edge::EdgeCommands;
use crate::federation::ports::{
    Inbound, Outbound, PullAnswer, PullNotice, QueryAnswer, Received, RemotePull, StreamQuery,
};
use crate::federation::{Closing, LinkError, PeerLink};
use crate::names::Zone;
use crate::proto::{
    self, federation_client::FederationClient, federation_server::Federation, PeerMessage,
};
use crate::registry::{PeerEndpoint, Registry, RegistryError};
use crate::state::AppState;
use crate::wire::{self, MAX_MESSAGE_BYTES};

/// Metadata key naming the calling cluster.
pub const CLUSTER_HEADER: &str = "x-foghorn-cluster";
/// The cluster called, which the callee's cell may serve among others.
pub const CALLEE_HEADER: &str = "x-foghorn-callee";
/// How often a credential in use is registered again (keeps it from being forgotten as idle).
const REREGISTER: Duration = Duration::from_secs(24 * 3600);

/// A registry failure during a federation call: logged; the peer learns only that it may retry.
fn registry_status(e: RegistryError) -> Status {
    tracing::warn!(error = %e, "registry unavailable during a federation call");
    Status::unavailable("registry unavailable, retry later")
}

/// How a domain refusal or failure is told to a peer.
fn status(e: LinkError) -> Status {
    match e {
        LinkError::Unavailable(m) => Status::unavailable(m),
        LinkError::TimedOut(m) => Status::deadline_exceeded(m),
        LinkError::Refused(m) => Status::permission_denied(m),
        LinkError::NotFound(m) => Status::not_found(m),
        LinkError::Malformed(m) => Status::invalid_argument(m),
    }
}

/// What a peer's answer means to the domain.
fn link_error(s: Status) -> LinkError {
    use tonic::Code;
    let m = s.message().to_string();
    match s.code() {
        Code::DeadlineExceeded => LinkError::TimedOut(m),
        Code::PermissionDenied | Code::Unauthenticated | Code::FailedPrecondition => {
            LinkError::Refused(m)
        }
        Code::NotFound => LinkError::NotFound(m),
        Code::InvalidArgument => LinkError::Malformed(m),
        _ => LinkError::Unavailable(m),
    }
}

/// A peer's channel as the domain reads it: each message decoded and checked, with its size.
fn inbound(stream: Streaming<PeerMessage>, peer: String, root: String) -> Inbound {
    Box::pin(stream.map(move |message| {
        use prost::Message as _;
        let message = message.map_err(|s| LinkError::Unavailable(s.message().to_string()))?;
        let bytes = message.encoded_len();
        let frame = wire::frame_from_proto(message, &peer, &root).map_err(LinkError::Malformed)?;
        Ok(Received { frame, bytes })
    }))
}

/// The status a channel this side ended finishes with, chosen per way of ending.
fn closing_status(closing: &Closing) -> Status {
    let why = closing.reason();
    match closing {
        Closing::Refused(_) => Status::permission_denied(why),
        Closing::ShuttingDown => Status::unavailable(why),
        Closing::Silent => Status::deadline_exceeded(why),
        Closing::Flooded(_) => Status::resource_exhausted(why),
        Closing::Replaced => Status::aborted(why),
    }
}

fn refuse(state: &AppState, status: Status) -> Status {
    state.metrics.federation_refusals.inc();
    tracing::warn!(code = ?status.code(), message = status.message(), "refused a peer");
    status
}

/// The calling cluster, authenticated: a valid credential of the cluster it names, another
/// cluster than this one, and one that shares a tenant with this one.
async fn authenticate(state: &AppState, md: &MetadataMap) -> Result<String, Status> {
    let me = &state.config.cluster.id;
    let claimed = md
        .get(CLUSTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|c| crate::config::is_valid_label(c))
        .ok_or_else(|| {
            refuse(
                state,
                Status::unauthenticated(format!("missing or malformed {CLUSTER_HEADER}")),
            )
        })?;
    let credential = md
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !state
        .registry
        .authenticate_peer(claimed, me, credential)
        .await
        .map_err(registry_status)?
    {
        return Err(refuse(
            state,
            Status::unauthenticated(format!("not a peer credential of cluster {claimed:?}")),
        ));
    }
    if claimed == me {
        return Err(refuse(
            state,
            Status::permission_denied("a cluster does not peer with itself"),
        ));
    }
    if !state
        .registry
        .clusters_share_a_tenant(me, claimed)
        .await
        .map_err(registry_status)?
    {
        return Err(refuse(
            state,
            Status::permission_denied(format!(
                "cluster {claimed:?} shares no active subscription with cluster {me:?}"
            )),
        ));
    }
    Ok(claimed.to_string())
}

/// The Federation service.
#[derive(Clone, Debug)]
pub struct FederationService {
    cell: Arc<Cell>,
}

impl FederationService {
    pub fn new(cell: Arc<Cell>) -> Self {
        FederationService { cell }
    }

    /// The state of the cluster a call is for: the one its [`CALLEE_HEADER`] names when this
    /// cell serves it, the home cluster without the header (callers that predate cells).
    fn callee(&self, md: &MetadataMap) -> Result<AppState, Status> {
        let Some(value) = md.get(CALLEE_HEADER) else {
            return Ok(self.cell.home().clone());
        };
        let named = value
            .to_str()
            .ok()
            .filter(|c| crate::config::is_valid_label(c))
            .ok_or_else(|| {
                refuse(
                    self.cell.home(),
                    Status::invalid_argument(format!("malformed {CALLEE_HEADER}")),
                )
            })?;
        self.cell.get(named).ok_or_else(|| {
            refuse(
                self.cell.home(),
                Status::not_found(format!("cluster {named:?} is not served by this Foghorn")),
            )
        })
    }
}

type PeerStream = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Federation for FederationService {
    type PeerChannelStream = PeerStream;

    async fn peer_channel(
        &self,
        request: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<PeerStream>, Status> {
        let state = &self.callee(request.metadata())?;
        if state.shutdown.is_cancelled() {
            return Err(Status::unavailable("Foghorn is shutting down"));
        }
        let peer = authenticate(state, request.metadata()).await?;
        let root = state.config.cluster.root_domain.clone();
        let frames = inbound(request.into_inner(), peer.clone(), root.clone());
        let out = state.federation.accept_channel(peer, frames);
        let sent = out.stream().map(move |sent| match sent {
            Ok(frame) => Ok(wire::frame_to_proto(&frame, &root)),
            Err(closing) => Err(closing_status(&closing)),
        });
        Ok(Response::new(Box::pin(sent)))
    }

    async fn query_stream(
        &self,
        request: Request<proto::QueryStreamRequest>,
    ) -> Result<Response<proto::QueryStreamResponse>, Status> {
        let state = &self.callee(request.metadata())?;
        let caller = authenticate(state, request.metadata()).await?;
        let query = wire::query_from_proto(request.into_inner());
        let answer = state
            .federation
            .answer_query(&caller, &query)
            .await
            .map_err(status)?;
        Ok(Response::new(wire::answer_to_proto(answer)))
    }

    async fn notify_origin_pull(
        &self,
        request: Request<proto::NotifyOriginPullRequest>,
    ) -> Result<Response<proto::NotifyOriginPullResponse>, Status> {
        let state = &self.callee(request.metadata())?;
        let caller = authenticate(state, request.metadata()).await?;
        let notice = wire::notice_from_proto(request.into_inner());
        let answer = state
            .federation
            .answer_pull(&caller, &notice)
            .await
            .map_err(status)?;
        Ok(Response::new(wire::pull_to_proto(answer)))
    }

    async fn arrange_origin_pull(
        &self,
        request: Request<proto::ArrangeOriginPullRequest>,
    ) -> Result<Response<proto::NotifyOriginPullResponse>, Status> {
        let state = &self.callee(request.metadata())?;
        let caller = authenticate(state, request.metadata()).await?;
        let pull = wire::remote_pull_from_proto(request.into_inner());
        let answer = state
            .federation
            .answer_arrange(&caller, &pull)
            .await
            .map_err(status)?;
        Ok(Response::new(wire::pull_to_proto(answer)))
    }
}

// ---- client side ----

/// How this Foghorn reaches its peers: tonic clients by address, calls authenticated with this
/// cluster's credential towards each peer.
#[derive(Debug)]
pub struct GrpcPeerLink {
    registry: Registry,
    me: String,
    root: String,
    /// This Foghorn's secret, from which its credential towards each peer is derived.
    secret: String,
    timeout: Duration,
    /// Peers whose credential this process registered, and when (refreshed daily).
    registered: Mutex<HashMap<String, Instant>>,
    /// gRPC clients by address (a tonic channel reconnects by itself).
    clients: Mutex<HashMap<String, FederationClient<Channel>>>,
}

impl GrpcPeerLink {
    pub fn new(
        registry: Registry,
        cluster_id: &str,
        root_domain: &str,
        secret: String,
        timeout: Duration,
    ) -> Self {
        GrpcPeerLink {
            registry,
            me: cluster_id.to_string(),
            root: root_domain.to_string(),
            secret,
            timeout,
            registered: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// A client of `peer` at `at`: over TLS for an `https://` address, trusting the CA the peer
    /// published (else the public web PKI) and checking the certificate against
    /// `foghorn.{peer}.{root}`, whatever address is dialed.
    fn client(
        &self,
        peer: &str,
        at: &PeerEndpoint,
    ) -> Result<FederationClient<Channel>, LinkError> {
        let addr = at.grpc_addr.as_str();
        // Keyed by what is dialed and what is trusted: a peer publishing a new CA gets a new
        // channel, and the old one is dropped.
        let key = format!(
            "{addr} {}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                at.tls_ca_pem.as_bytes()
            ))
        );
        let mut clients = self.clients.lock();
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        clients.retain(|k, _| k.split(' ').next() != Some(addr));
        let mut endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| LinkError::Refused(format!("bad peer address {addr:?}: {e}")))?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
        if addr.starts_with("https://") {
            let tls =
                ClientTlsConfig::new().domain_name(Zone::new(peer, &self.root).foghorn_host());
            let tls = if at.tls_ca_pem.is_empty() {
                tls.with_webpki_roots()
            } else {
                tls.ca_certificate(Certificate::from_pem(&at.tls_ca_pem))
            };
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| LinkError::Refused(format!("TLS settings for peer {peer:?}: {e}")))?;
        }
        let client = FederationClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Dials `peer`'s gRPC address from the registry.
    async fn client_for(&self, peer: &str) -> Result<FederationClient<Channel>, LinkError> {
        let at = self
            .registry
            .peer_endpoint(peer)
            .await
            .map_err(|e| LinkError::Unavailable(e.to_string()))?
            .ok_or_else(|| {
                LinkError::NotFound(format!("cluster {peer:?} is not in the registry"))
            })?;
        if at.grpc_addr.is_empty() {
            return Err(LinkError::Refused(format!(
                "cluster {peer:?} has no Foghorn gRPC address in the registry"
            )));
        }
        self.client(peer, &at)
    }

    /// `message` with this cluster's id and its credential towards `peer` in the metadata.
    async fn authed<T>(&self, peer: &str, message: T) -> Result<Request<T>, LinkError> {
        let metadata = self.metadata(peer).await?;
        let mut req = Request::new(message);
        *req.metadata_mut() = metadata;
        Ok(req)
    }

    /// This cluster's id and its credential towards `peer`, as call metadata; the credential is
    /// registered first (once a day per peer and process).
    async fn metadata(&self, peer: &str) -> Result<MetadataMap, LinkError> {
        let credential = crate::secret::peer_credential_for(&self.secret, peer);
        let fresh = self
            .registered
            .lock()
            .get(peer)
            .is_some_and(|at| at.elapsed() < REREGISTER);
        if !fresh {
            self.registry
                .register_peer_credential(&self.me, peer, &credential)
                .await
                .map_err(|e| LinkError::Unavailable(e.to_string()))?;
            self.registered
                .lock()
                .insert(peer.to_string(), Instant::now());
        }
        let mut md = MetadataMap::new();
        let (Ok(cluster), Ok(callee), Ok(bearer)) = (
            self.me.parse(),
            peer.parse(),
            format!("Bearer {credential}").parse(),
        ) else {
            return Err(LinkError::Refused(
                "credential is not valid metadata".into(),
            ));
        };
        md.insert(CLUSTER_HEADER, cluster);
        md.insert(CALLEE_HEADER, callee);
        md.insert("authorization", bearer);
        Ok(md)
    }
}

impl GrpcPeerLink {
    async fn open(&self, peer: &str, outbound: Outbound) -> Result<Inbound, LinkError> {
        let mut client = self.client_for(peer).await?;
        let root = self.root.clone();
        let metadata = self.metadata(peer).await?;
        let messages = outbound
            .stream()
            .map(move |frame| wire::frame_to_proto(&frame, &root));
        let mut request = Request::new(messages);
        *request.metadata_mut() = metadata;
        let response = client.peer_channel(request).await.map_err(link_error)?;
        Ok(inbound(
            response.into_inner(),
            peer.to_string(),
            self.root.clone(),
        ))
    }
}

impl PeerLink for GrpcPeerLink {
    fn open_channel<'a>(
        &'a self,
        peer: &'a str,
        outbound: Outbound,
    ) -> BoxFuture<'a, Result<Inbound, LinkError>> {
        Box::pin(self.open(peer, outbound))
    }

    fn query_stream<'a>(
        &'a self,
        peer: &'a str,
        query: StreamQuery,
    ) -> BoxFuture<'a, Result<QueryAnswer, LinkError>> {
        Box::pin(async move {
            let mut client = self.client_for(peer).await?;
            let request = self.authed(peer, wire::query_to_proto(query)).await?;
            let answer = client.query_stream(request).await.map_err(link_error)?;
            Ok(wire::answer_from_proto(answer.into_inner()))
        })
    }

    fn notify_origin_pull<'a>(
        &'a self,
        peer: &'a str,
        notice: PullNotice,
    ) -> BoxFuture<'a, Result<PullAnswer, LinkError>> {
        Box::pin(async move {
            let mut client = self.client_for(peer).await?;
            let request = self.authed(peer, wire::notice_to_proto(notice)).await?;
            let answer = client
                .notify_origin_pull(request)
                .await
                .map_err(link_error)?;
            Ok(wire::pull_from_proto(answer.into_inner()))
        })
    }

    fn arrange_origin_pull<'a>(
        &'a self,
        peer: &'a str,
        pull: RemotePull,
    ) -> BoxFuture<'a, Result<PullAnswer, LinkError>> {
        Box::pin(async move {
            let mut client = self.client_for(peer).await?;
            let request = self.authed(peer, wire::remote_pull_to_proto(pull)).await?;
            let answer = client
                .arrange_origin_pull(request)
                .await
                .map_err(link_error)?;
            Ok(wire::pull_from_proto(answer.into_inner()))
        })
    }
}

/// The edges' control streams held here, as federation's way to tell an edge to pull.
impl EdgeCommands for super::EdgeLinks {
    fn origin_pull(&self, node_id: &str, stream: &str, dtsc_url: &str) -> bool {
        super::EdgeLinks::origin_pull(self, node_id, stream, dtsc_url)
    }
}
