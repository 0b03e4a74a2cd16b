//! The viewer lane (`src/http/lane.rs`) against hyper on a real server: the lane answers plain
//! HTTP/1.1 `GET`/`HEAD` redirects itself and hands hyper every other request with the bytes it
//! has read. The same request gets the same answer whichever of the two serves it, pipelined
//! requests are answered in order across the handoff, and heads that arrive in pieces, carry a
//! body or outgrow the head limit are served as before.

mod common;

use std::time::Duration;

use common::{enroll, stats_frame, Db, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response of a connection: status, lowercased headers in order, body.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// What must not differ between the lane and hyper: status, headers but `date` (and the
    /// session id, new per redirect, at the end of `location`), body.
    fn comparable(&self) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(n, _)| n != "date")
            .map(|(n, v)| {
                let v = match (n.as_str(), v.rsplit_once("fh_sid=")) {
                    ("location", Some((url, _))) => format!("{url}fh_sid=…"),
                    _ => v.clone(),
                };
                (n.clone(), v)
            })
            .collect();
        headers.sort();
        (self.status, headers, self.body.clone())
    }
}

/// A connection that reads responses one after the other, keeping what arrived beyond one.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(server: &TestServer) -> Conn {
        let stream = TcpStream::connect(server.server().http_addr)
            .await
            .expect("connect");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(
            n > 0,
            "connection closed, unanswered: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// The next response; `head_only` for the answer to a HEAD (no body whatever its length).
    async fn answer(&mut self, head_only: bool) -> Answer {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await;
        };
        let (status, headers) = common::parse_head(&self.buf[..end]);
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().expect("content-length"));
        let length = if head_only { 0 } else { length };
        while self.buf.len() < end + length {
            self.fill().await;
        }
        let body = self.buf[end..end + length].to_vec();
        self.buf.drain(..end + length);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Whether the server closed the connection (within 10 s) with nothing more to read.
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// A server with one routable edge and a stream; its playback id.
async fn server() -> (TestServer, String) {
    let server = TestServer::start(Db::Sqlite).await;
    let (tenant, _) = server.operator().await;
    let (stream, _) = server.stream(&tenant).await;
    let (edge, _, _) = enroll(&server, &tenant).await;
    edge.send(stats_frame(Vec::new())).await;
    let play = format!("/play/{}/hls/index.m3u8", stream.playback_id);
    let addr = server.server().http_addr;
    common::eventually(Duration::from_secs(10), "the edge takes viewers", || {
        let request = get("GET", &play, "Connection: close\r\n");
        async move { common::raw_request(addr, &request).await.status == 307 }
    })
    .await;
    // The edge's control stream stays open for the test's life.
    std::mem::forget(edge);
    (server, stream.playback_id)
}

fn get(method: &str, target: &str, extra: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: foghorn.test\r\n{extra}\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lane_and_hyper_answer_alike() {
    let (server, id) = server().await;
    let targets = [
        format!("/play/{id}/hls/index.m3u8"),
        format!("/play/{id}/hls"),
        format!("/play/{id}/dash/"),
        format!("/play/{id}/webrtc"),
        format!("/play/{id}/mp4?fh_sid=abcdef0123"),
        format!("/play/{id}/hls/index.m3u8?lat=48.85&lon=2.35"),
        format!("/play/{id}/hls/index.m3u8?lat=48.85"),
        format!("/play/{id}/hls/index.m3u8?lat=north&lon=2"),
        format!("/play/{id}/hls/index.m3u8?lat=91&lon=2"),
        format!("/play/{id}/rtsp/x"),
        format!("/play/{id}/hls/../../etc/passwd"),
        format!("/play/{id}/hls/a?{}", "x=1&".repeat(600)),
        "/play/unknownid000/hls/index.m3u8".to_string(),
        "/play/bad!id/hls/index.m3u8".to_string(),
    ];
    for target in &targets {
        for method in ["GET", "HEAD"] {
            let head_only = method == "HEAD";
            // Plain: the lane's. With a Connection header: handed to hyper.
            let mut lane = Conn::open(&server).await;
            lane.send(&get(method, target, "")).await;
            let by_lane = lane.answer(head_only).await;
            let mut hyper = Conn::open(&server).await;
            hyper
                .send(&get(method, target, "Connection: keep-alive\r\n"))
                .await;
            let by_hyper = hyper.answer(head_only).await;
            assert_eq!(
                by_lane.comparable(),
                by_hyper.comparable(),
                "{method} {target}: the lane answered {by_lane:?}, hyper {by_hyper:?}"
            );
            assert!(by_lane.header("date").is_some(), "{by_lane:?}");
            // Both connections stay open for the next request.
            for conn in [&mut lane, &mut hyper] {
                conn.send(&get("GET", &targets[0], "")).await;
                assert_eq!(conn.answer(false).await.status, 307);
            }
        }
    }
    // The redirect itself: the edge's HLS URL with a session id.
    let mut conn = Conn::open(&server).await;
    conn.send(&get("GET", &targets[0], "")).await;
    let answer = conn.answer(false).await;
    assert_eq!(answer.status, 307);
    let location = answer.header("location").expect("location");
    assert!(
        location.contains("/hls/") && location.contains("/index.m3u8?fh_sid="),
        "{location}"
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(answer.header("content-length"), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_across_the_handoff() {
    let (server, id) = server().await;
    let play = format!("/play/{id}/hls/index.m3u8");
    let mut conn = Conn::open(&server).await;
    // Two redirects for the lane, a health check that hands the connection to hyper, then a
    // redirect hyper answers, a request with a body, and a last redirect: one write.
    let mut batch = Vec::new();
    batch.extend(get("GET", &play, ""));
    batch.extend(get("HEAD", &format!("{play}?fh_sid=returning01"), ""));
    batch.extend(get("GET", "/health", ""));
    batch.extend(get("GET", &play, ""));
    batch.extend(get("POST", &play, "Content-Length: 3\r\n"));
    batch.extend(b"abc");
    batch.extend(get("GET", "/play/unknownid000/hls", ""));
    conn.send(&batch).await;
    let first = conn.answer(false).await;
    assert_eq!(first.status, 307);
    let second = conn.answer(true).await;
    assert_eq!(second.status, 307);
    assert!(
        second
            .header("location")
            .is_some_and(|l| l.ends_with("?fh_sid=returning01")),
        "a returning viewer keeps its session: {second:?}"
    );
    assert_eq!(conn.answer(false).await.status, 200);
    assert_eq!(conn.answer(false).await.status, 307);
    assert_eq!(conn.answer(false).await.status, 307);
    let last = conn.answer(false).await;
    assert_eq!(last.status, 404);
    assert_eq!(last.header("content-type"), Some("application/json"));

    // A redirect with a body on a fresh connection: hyper reads the body, then the lane's
    // requests after it are answered too.
    let mut conn = Conn::open(&server).await;
    let mut batch = get("GET", &play, "Content-Length: 5\r\n");
    batch.extend(b"hello");
    batch.extend(get("GET", &play, ""));
    conn.send(&batch).await;
    assert_eq!(conn.answer(false).await.status, 307);
    assert_eq!(conn.answer(false).await.status, 307);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_in_pieces_http_1_0_and_oversized_heads() {
    let (server, id) = server().await;
    let play = format!("/play/{id}/hls/index.m3u8");

    // A head sent a few bytes at a time, twice on one connection.
    let mut conn = Conn::open(&server).await;
    for _ in 0..2 {
        for piece in get("GET", &play, "X-Trace: 1\r\n").chunks(7) {
            conn.send(piece).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(conn.answer(false).await.status, 307);
    }

    // HTTP/1.0 is hyper's: answered, then closed (no keep-alive asked for).
    let mut conn = Conn::open(&server).await;
    conn.send(format!("GET {play} HTTP/1.0\r\n\r\n").as_bytes())
        .await;
    assert_eq!(conn.answer(false).await.status, 307);
    assert!(conn.closed().await, "HTTP/1.0 without keep-alive is closed");

    // Connection: close after a lane answer: hyper answers and closes.
    let mut conn = Conn::open(&server).await;
    conn.send(&get("GET", &play, "")).await;
    assert_eq!(conn.answer(false).await.status, 307);
    conn.send(&get("GET", &play, "Connection: close\r\n")).await;
    assert_eq!(conn.answer(false).await.status, 307);
    assert!(conn.closed().await, "Connection: close is honoured");

    // A head over server.max_header_bytes (16 KiB): the JSON 431, after a lane answer too.
    let mut conn = Conn::open(&server).await;
    conn.send(&get("GET", &play, "")).await;
    assert_eq!(conn.answer(false).await.status, 307);
    let big = format!("X-Big: {}\r\n", "b".repeat(20 * 1024));
    conn.send(&get("GET", &play, &big)).await;
    let refused = conn.answer(false).await;
    assert_eq!(refused.status, 431, "{refused:?}");
    assert_eq!(refused.header("content-type"), Some("application/json"));

    // Garbage instead of a head: hyper's 400, as JSON.
    let mut conn = Conn::open(&server).await;
    conn.send(b"GET /play/x/hls\x01 HTTP/1.1\r\n\r\n").await;
    let refused = conn.answer(false).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.header("content-type"), Some("application/json"));

    // Other methods on the redirect path: hyper's 405 with Allow.
    let mut conn = Conn::open(&server).await;
    conn.send(&get("DELETE", &play, "")).await;
    let refused = conn.answer(false).await;
    assert_eq!(refused.status, 405, "{refused:?}");
    assert_eq!(refused.header("allow"), Some("GET, HEAD, POST"));
}
