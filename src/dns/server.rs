//! The built-in authoritative server (hickory-server), UDP and TCP, answering for the zone of
//! every cluster the cell serves from that cluster's [`Zone`](super::Zone): any replica answers
//! alike, from the edge state the replicas share.
//!
//! Refused: names outside the served zones, classes other than IN, transfers from networks not
//! in `dns.allow_transfer` (and over UDP), updates and other opcodes. Answers over UDP are cut at
//! 1232 bytes (or 512 without EDNS) with the TC bit, so the server amplifies nothing; `ANY` gets
//! one RRset (RFC 8482). Malformed packets: FORMERR when the header can be read, else nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio_util::sync::CancellationToken;

use super::zone::Lookup;
use super::Zones;

/// Largest UDP answer: the EDNS buffer size of DNS Flag Day 2020, below any path's MTU.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// How long a TCP connection may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Answers for the served zones.
pub struct Handler {
    zones: Arc<dyn Zones>,
    root: LowerName,
    transfer: Vec<ipnet::IpNet>,
}

impl Handler {
    /// Answers for the zones `{cluster}.{root_domain}` of `zones`; `transfer` may AXFR.
    pub fn new(zones: Arc<dyn Zones>, root_domain: &str, transfer: Vec<ipnet::IpNet>) -> Handler {
        let root = Name::from_ascii(format!("{root_domain}.")).unwrap_or_else(|_| Name::root());
        Handler {
            root: LowerName::new(&root),
            transfer,
            zones,
        }
    }

    /// The cluster whose zone holds `name`: the label just left of the root domain.
    fn cluster_of<'n>(&self, name: &'n LowerName) -> Option<&'n str> {
        let below =
            usize::from(name.num_labels()).checked_sub(usize::from(self.root.num_labels()))?;
        if below == 0 || !self.root.zone_of(name) {
            return None;
        }
        let label = name.iter().nth(below - 1)?;
        std::str::from_utf8(label).ok()
    }

    fn may_transfer(&self, src: IpAddr, protocol: Protocol) -> bool {
        protocol == Protocol::Tcp && self.transfer.iter().any(|net| net.contains(&src))
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().min(MAX_UDP_PAYLOAD));
            edns
        });
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let refuse = |metadata: &mut Metadata, code: ResponseCode| {
            metadata.authoritative = false;
            metadata.response_code = code;
        };
        let query = match request.queries.queries() {
            [query] if request.metadata.op_code == OpCode::Query => Some(query),
            _ if request.metadata.op_code == OpCode::Query => {
                refuse(&mut metadata, ResponseCode::FormErr);
                None
            }
            _ if request.metadata.op_code == OpCode::Update => {
                refuse(&mut metadata, ResponseCode::Refused);
                None
            }
            _ => {
                refuse(&mut metadata, ResponseCode::NotImp);
                None
            }
        };
        let zone = query.and_then(|query| {
            let zone = self.zones.zone(self.cluster_of(query.name())?)?;
            (query.query_class() == DNSClass::IN).then(|| zone.data())
        });
        let (Some(query), Some(zone)) = (query, zone) else {
            if metadata.response_code == ResponseCode::NoError {
                refuse(&mut metadata, ResponseCode::Refused);
            }
            return send(&mut response, builder.build_no_records(metadata), metadata).await;
        };
        let none: &[Record] = &[];
        let (answers, authority, soa, additionals): (&[Record], &[Record], &[Record], &[Record]) =
            match query.query_type() {
                RecordType::AXFR | RecordType::IXFR => {
                    if !self.may_transfer(request.src().ip(), request.protocol())
                        || query.name().num_labels() != zone.apex.num_labels()
                    {
                        refuse(&mut metadata, ResponseCode::Refused);
                        return send(&mut response, builder.build_no_records(metadata), metadata)
                            .await;
                    }
                    let records: Vec<&Record> = zone.records().chain(zone.soa()).collect();
                    return send(
                        &mut response,
                        builder.build(metadata, records, none, none, none),
                        metadata,
                    )
                    .await;
                }
                qtype => match zone.lookup(query.name(), qtype) {
                    Lookup::Answer(records) => {
                        let glue = if qtype == RecordType::NS {
                            zone.glue()
                        } else {
                            none
                        };
                        (records, none, none, glue)
                    }
                    Lookup::NoData => (none, none, zone.soa(), none),
                    Lookup::NxDomain => {
                        metadata.response_code = ResponseCode::NXDomain;
                        (none, none, zone.soa(), none)
                    }
                },
            };
        send(
            &mut response,
            builder.build(metadata, answers, authority, soa, additionals),
            metadata,
        )
        .await
    }
}

/// Sends `message`; what to report when that fails.
async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    message: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    metadata: Metadata,
) -> ResponseInfo {
    match response.send_response(message).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "could not send a DNS answer");
            let mut metadata = metadata;
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

/// The built-in server's sockets, bound before the server starts (so a taken port fails the
/// start, and port 0 is resolved).
pub struct Listeners {
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
}

impl Listeners {
    /// UDP and TCP on `addr`; with port 0, one free port for both.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Listeners> {
        let mut last = None;
        // Port 0: the UDP port the kernel picks may be taken for TCP; try a few.
        for _ in 0..16 {
            let udp = tokio::net::UdpSocket::bind(addr).await?;
            let port = udp.local_addr()?.port();
            match tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
                Ok(tcp) => return Ok(Listeners { udp, tcp }),
                Err(e) if addr.port() == 0 => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free port for UDP and TCP")))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// Answers on `listeners` with `handler` until `stop`.
pub async fn serve(handler: Handler, listeners: Listeners, stop: CancellationToken) {
    let mut server = hickory_server::Server::new(handler);
    server.register_socket(listeners.udp);
    server.register_listener(listeners.tcp, TCP_IDLE, 64 * 1024);
    stop.cancelled().await;
    if let Err(e) = server.shutdown_gracefully().await {
        tracing::warn!(error = %e, "the DNS server ended with an error");
    }
}
