//! HTTP/1.1 spoken by hand over TCP, for what an HTTP client library would hide: malformed or
//! slow requests, exact response heads, connections the server closes, its accept queue.

use std::time::Duration;

/// One HTTP/1.1 response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the whole response when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {:?} {}",
                self.status,
                self.headers,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts Foghorn's JSON error (`{"error":{"code","message"}}`) with `status`; returns the code.
    pub fn expect_json_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "not labelled JSON: {self:?}"
        );
        let body = self.json();
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {body}"));
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "no error.message in {body}"
        );
        code.to_string()
    }
}

/// Reads one response from `stream` (head, then a `Content-Length` body, else up to EOF),
/// bounded so a server that never answers fails the test instead of hanging it.
pub async fn read_response(stream: &mut tokio::net::TcpStream) -> RawResponse {
    tokio::time::timeout(Duration::from_secs(10), read_response_unbounded(stream))
        .await
        .expect("a response within 10 s")
}

async fn read_response_unbounded(stream: &mut tokio::net::TcpStream) -> RawResponse {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let (status, headers) = parse_head(&buf[..head_end]);
    let mut body = buf[head_end..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>().expect("numeric content-length"));
    match length {
        Some(length) => {
            while body.len() < length {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "connection closed inside the body");
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(length);
        }
        None => {
            stream.read_to_end(&mut body).await.expect("read body");
        }
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

/// The status and headers (names lowercased, in order) of a response head.
pub fn parse_head(head: &[u8]) -> (u16, Vec<(String, String)>) {
    let head = std::str::from_utf8(head).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (status, headers)
}

/// Sends `request` as is on a new connection to `addr` and reads the answer.
pub async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> RawResponse {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send request");
    read_response(&mut stream).await
}

/// Waits (at most 10 s) until the server closes `stream`, discarding what it sends; returns
/// what it sent.
pub async fn until_closed(stream: &mut tokio::net::TcpStream, what: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .is_err()
    {
        panic!("{what}: the server did not close the connection within 10 s");
    }
    seen
}

/// How many connections wait in the accept queue of the IPv4 listener on `port` (Linux: the
/// `rx_queue` of a LISTEN socket in /proc/net/tcp). Zero once the server took every connection
/// made to it.
pub fn accept_queue(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = fields.get(3) == Some(&"0A");
            (listening && fields.get(1).is_some_and(|a| a.ends_with(&local))).then(|| {
                let queues = fields.get(4).expect("tx_queue:rx_queue");
                let rx = queues.split(':').nth(1).expect("rx_queue");
                usize::from_str_radix(rx, 16).expect("hex queue length")
            })
        })
        .sum()
}
