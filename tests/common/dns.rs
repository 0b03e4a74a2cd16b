//! DNS by hand for the tests: questions over UDP and TCP with hickory's message codec, and a
//! real BIND 9 primary a test starts.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::eventually;

const WAIT: Duration = Duration::from_secs(10);

/// A question to `server` over UDP (or TCP), with an EDNS buffer size or none.
pub async fn ask_with(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
    tcp: bool,
) -> Message {
    let mut query = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    query.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        query.set_edns(e);
    }
    let bytes = query.to_vec().expect("encode");
    let answer = if tcp {
        exchange_tcp(server, &bytes).await
    } else {
        exchange_udp(server, &bytes).await
    };
    let message = Message::from_vec(&answer.expect("an answer")).expect("a DNS message");
    assert_eq!(message.metadata.id, query.metadata.id);
    message
}

/// The response code of the answer to `message` over UDP.
pub async fn code_of(server: SocketAddr, message: &Message) -> ResponseCode {
    let answer = exchange_udp(server, &message.to_vec().expect("encode"))
        .await
        .expect("an answer");
    Message::from_vec(&answer)
        .expect("a DNS message")
        .metadata
        .response_code
}

pub async fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    ask_with(server, name, qtype, Some(1232), false).await
}

/// The raw answer to `bytes` over UDP, or `None` within a second.
pub async fn exchange_udp(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    socket.send_to(bytes, server).await.expect("send");
    let mut buf = vec![0; 65_535];
    let n = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf))
        .await
        .ok()?
        .expect("recv");
    buf.truncate(n);
    Some(buf)
}

/// The raw answer to `bytes` over TCP (length-prefixed), or `None` when the server closed.
pub async fn exchange_tcp(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(server)
        .await
        .expect("connect");
    let len = u16::try_from(bytes.len()).expect("short");
    stream.write_all(&len.to_be_bytes()).await.expect("write");
    stream.write_all(bytes).await.expect("write");
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut len))
        .await
        .expect("answered in time")
        .ok()?;
    let mut buf = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.expect("read");
    Some(buf)
}

/// A BIND 9 primary for the zone `test.example.net`, on a free loopback port, accepting updates
/// and transfers signed with one TSIG key. Stopped when dropped.
pub struct Bind {
    child: std::process::Child,
    pub addr: SocketAddr,
    pub secret: String,
    _dir: tempfile::TempDir,
}

impl Bind {
    pub async fn start() -> Bind {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = super::ports::free_port();
        let secret = data_encoding::BASE64.encode(&rand::random::<[u8; 32]>());
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("named.conf"),
            format!(
                "options {{ directory \"{d}\"; listen-on port {port} {{ 127.0.0.1; }}; \
                 listen-on-v6 {{ none; }}; pid-file \"{d}/named.pid\"; \
                 session-keyfile \"{d}/session.key\"; recursion no; dnssec-validation no; \
                 notify no; }};\n\
                 controls {{ }};\n\
                 key \"foghorn\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n\
                 zone \"test.example.net\" {{ type primary; file \"{d}/test.zone\"; \
                 allow-update {{ key \"foghorn\"; }}; allow-transfer {{ key \"foghorn\"; }}; }};\n"
            ),
        )
        .expect("named.conf");
        std::fs::write(
            dir.path().join("test.zone"),
            "$TTL 60\n@ IN SOA ns1.example.net. hostmaster.example.net. 1 60 30 86400 60\n\
             @ IN NS ns1.example.net.\n",
        )
        .expect("zone");
        let child = std::process::Command::new("/usr/sbin/named")
            .args(["-g", "-u", "root", "-c"])
            .arg(dir.path().join("named.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("named.log")).expect("log"))
            .spawn()
            .expect("named (bind9) is installed");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let bind = Bind {
            child,
            addr,
            secret,
            _dir: dir,
        };
        eventually(WAIT, "BIND answers over UDP and TCP", || async {
            exchange_udp(addr, &{
                let mut q = Message::new(1, MessageType::Query, OpCode::Query);
                q.add_query(Query::query(
                    Name::from_ascii("test.example.net.").expect("name"),
                    RecordType::SOA,
                ));
                q.to_vec().expect("encode")
            })
            .await
            .is_some()
                && tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        bind
    }

    /// The zone's SOA serial.
    pub async fn serial(&self) -> u32 {
        let soa = ask(self.addr, "test.example.net.", RecordType::SOA).await;
        match soa.answers.first().map(|r| &r.data) {
            Some(RData::SOA(soa)) => soa.serial,
            other => panic!("an SOA, not {other:?}"),
        }
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
