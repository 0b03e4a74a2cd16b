//! The viewer lane: the requests that carry the whole viewer load, `GET|HEAD
//! /play/{playback_id}/{proto}/...` over HTTP/1.1 keep-alive, answered without hyper.
//!
//! Every connection of the viewer/API listener starts here. The lane reads request heads
//! (`httparse`, the parser hyper itself uses), answers the redirects and, at the first request it
//! does not take, hands the connection and every byte it has read to hyper, which serves the rest
//! of the connection as it always did. The lane takes only requests whose meaning
//! is plain: HTTP/1.1, `GET` or `HEAD`, an origin-form target of url-safe characters on the
//! redirect path, no body, no `Connection`, `Expect`, `Upgrade` or `Transfer-Encoding` header.
//! Anything else (another path or method, HTTP/1.0, a body, an HTTP/2 preface, a head it cannot
//! parse, more than [`MAX_HEADERS`] headers, a head over `server.max_header_bytes`) goes to hyper
//! with nothing answered yet, so every error hyper makes stays hyper's (and Foghorn's JSON).
//!
//! What it saves per request is hyper's request and response objects (`http::Request`,
//! `HeaderMap`s, the boxed service future, header encoding) and the header-read timer armed per
//! request: the lane keeps one deadline per connection, moved on lazily.
//!
//! The answer is the one [`super::play::redirect_to`] gives the hyper path for the same request:
//! the 307 with `location` and `cache-control: no-store`, or the JSON error with its headers; and
//! the CORS headers of [`super::cors::Grant`], as hyper's answers get them.

use std::future::Future as _;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::IntoResponse;
use futures_util::FutureExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cors::Grant;
use super::viewer::Headers;
use super::ApiError;
use crate::cell::Cell;

/// Most headers a request of the lane may have; one with more goes to hyper, which applies
/// `server.max_headers`.
pub const MAX_HEADERS: usize = 32;
/// A connection that has not sent a whole request head this long after it opened or after its
/// last answer is closed (hyper's header read timeout, which the requests hyper serves keep).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How a connection left the lane.
pub enum Outcome<T> {
    /// It ended: closed by the client, silent past [`HEAD_TIMEOUT`], shut down between requests,
    /// or an I/O error.
    Closed,
    /// Hyper serves the rest: the connection, and what the lane read of it and did not answer
    /// (hyper reads it first, [`super::wire::JsonAnswers`]).
    Handoff(T, Vec<u8>),
}

/// One request head in the buffer.
enum Head<'b, 'h> {
    /// Not all of it has arrived.
    Partial,
    /// Not the lane's: hyper takes the connection from this request on.
    Other,
    /// A redirect the lane answers; `len` bytes of the buffer.
    Redirect {
        len: usize,
        head_only: bool,
        path: &'b str,
        query: Option<&'b str>,
        headers: &'h mut [httparse::Header<'b>],
    },
}

/// Characters the lane accepts in a request target: unreserved, sub-delims, `%`, `/`, `?`, `:`,
/// `@`. Anything else (`#`, quotes, brackets, non-ASCII...) goes to hyper.
const fn target_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'/'
                | b'?'
                | b'='
                | b'&'
                | b'%'
                | b'+'
                | b','
                | b';'
                | b':'
                | b'@'
                | b'!'
                | b'$'
                | b'\''
                | b'('
                | b')'
                | b'*'
        )
}

/// [`target_byte`] for every byte value.
const TARGET_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = target_byte(b as u8);
        b += 1;
    }
    table
};

/// Reads the head at the start of `buf`; `headers` receives its headers.
fn head<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Head<'b, 'h> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Other,
    };
    let head_only = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Head::Other,
    };
    let Some(target) = req.path else {
        return Head::Other;
    };
    // A table look-up per byte, without early exit: every redirect's target goes through here.
    let plain_target = target
        .bytes()
        .fold(true, |ok, b| ok & TARGET_BYTES[b as usize]);
    if req.version != Some(1) || !plain_target {
        return Head::Other;
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if !super::play::is_redirect_path(path) {
        return Head::Other;
    }
    let plain = req.headers.iter().all(|h| {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            h.value == b"0"
        } else {
            !(name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("connection")
                || name.eq_ignore_ascii_case("expect")
                || name.eq_ignore_ascii_case("upgrade"))
        }
    });
    if !plain {
        return Head::Other;
    }
    Head::Redirect {
        len,
        head_only,
        path,
        query,
        headers: std::mem::take(&mut req.headers),
    }
}

/// The server's shutdown as the lane's connections wait on it between requests: a flag, and a
/// token cancelled only after the flag is set.
///
/// A connection reads the flag when it wakes and polls the token's future only when its waker
/// is new (once per connection, in practice): a cancellation token's own check takes a lock, and
/// its future another, which polled at every wait cost about 3 % of a redirect's instructions.
/// Any wake by the token finds the flag already set.
#[derive(Clone)]
pub struct Stop {
    stopping: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Stop {
    /// Follows `shutdown`: the flag is set, then the token cancelled, when it is cancelled.
    pub fn following(shutdown: CancellationToken) -> Stop {
        let stop = Stop {
            stopping: Arc::new(AtomicBool::new(false)),
            token: CancellationToken::new(),
        };
        tokio::spawn({
            let stop = stop.clone();
            async move {
                shutdown.cancelled().await;
                stop.stopping.store(true, Ordering::Release);
                stop.token.cancel();
            }
        });
        stop
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// What ended a wait between requests.
enum Woken {
    Read(std::io::Result<usize>),
    Stopped,
    Deadline,
}

/// Serves `conn`'s redirects until it ends or sends a request that is not the lane's.
/// `asked` is set once a whole request head has arrived (see `http::serve`'s shutdown).
pub async fn serve<T: AsyncRead + AsyncWrite + Unpin>(
    mut conn: T,
    cell: &Cell,
    peer: SocketAddr,
    asked: &AtomicBool,
    stop: &Stop,
) -> Outcome<T> {
    let max_head = cell.home().config.server.max_header_bytes;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut out: Vec<u8> = Vec::with_capacity(512);
    let mut location: Vec<u8> = Vec::with_capacity(256);
    let mut answered_at = Instant::now();
    let mut deadline = pin!(tokio::time::sleep_until(answered_at + HEAD_TIMEOUT));
    let mut stopped = pin!(stop.token.cancelled());
    // The waker `deadline` and `stopped` were last polled with: while the task's waker stays
    // the same, a wait polls them again only when the timer has fired (`is_elapsed`, one load).
    let mut armed: Option<Waker> = None;
    loop {
        // Answer every whole head in the buffer (pipelined requests in order), then write. The
        // clock is read once for all of them.
        let mut used = 0;
        let mut now = None;
        loop {
            let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let (len, head_only, answer) = match head(&buf[used..], &mut headers) {
                Head::Partial => break,
                Head::Other => {
                    if !out.is_empty() && conn.write_all(&out).await.is_err() {
                        return Outcome::Closed;
                    }
                    buf.drain(..used);
                    return Outcome::Handoff(conn, buf);
                }
                Head::Redirect {
                    len,
                    head_only,
                    path,
                    query,
                    headers,
                } => {
                    asked.store(true, Ordering::Relaxed);
                    let state = cell.for_host(|| Headers::first(&*headers, "host"));
                    let at = *now.get_or_insert_with(Instant::now);
                    let cors = Grant::of(&state.config, path, || {
                        Headers::first(&*headers, "origin").map(str::as_bytes)
                    });
                    let answer = super::play::redirect_to(
                        &state,
                        peer,
                        path,
                        query,
                        &*headers,
                        at,
                        &mut location,
                    )
                    .await
                    .map(|()| location.as_slice());
                    (len, head_only, (answer, cors))
                }
            };
            write_answer(
                &mut out,
                answer,
                head_only,
                now.unwrap_or_else(Instant::now),
            );
            used += len;
        }
        buf.drain(..used);
        if !out.is_empty() {
            if conn.write_all(&out).await.is_err() {
                return Outcome::Closed;
            }
            out.clear();
            answered_at = now.unwrap_or_else(Instant::now);
        }
        if buf.len() >= max_head {
            // hyper answers the oversized head (431, as JSON).
            return Outcome::Handoff(conn, buf);
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(4096);
        }
        if stop.stopping() {
            return Outcome::Closed;
        }
        // The read first: when the next request is there, nothing else is polled.
        let woken = std::future::poll_fn(|cx| {
            if let Poll::Ready(read) = pin!(conn.read_buf(&mut buf)).poll(cx) {
                return Poll::Ready(Woken::Read(read));
            }
            if stop.stopping() {
                return Poll::Ready(Woken::Stopped);
            }
            let fresh = !armed.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
            if (fresh || deadline.is_elapsed()) && deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woken::Deadline);
            }
            if fresh {
                if stopped.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woken::Stopped);
                }
                armed = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
        match woken {
            Woken::Read(Ok(0) | Err(_)) | Woken::Stopped => return Outcome::Closed,
            Woken::Read(Ok(_)) => {}
            Woken::Deadline => {
                // One timer per connection, moved on only when it fires; polled again (with
                // the waker) after the move.
                let due = answered_at + HEAD_TIMEOUT;
                if due <= Instant::now() {
                    return Outcome::Closed;
                }
                deadline.as_mut().reset(due);
                armed = None;
            }
        }
    }
}

/// The HTTP date at `now`, formatted once per second per thread: the wall clock is read only
/// when `now` passes the end of the second formatted last.
fn date(now: Instant) -> [u8; 29] {
    thread_local! {
        static CACHED: std::cell::Cell<Option<(Instant, [u8; 29])>> = const { std::cell::Cell::new(None) };
    }
    CACHED.with(|c| {
        if let Some((until, text)) = c.get() {
            if now < until {
                return text;
            }
        }
        let wall = SystemTime::now();
        let into_second = wall.duration_since(UNIX_EPOCH).map_or(Duration::ZERO, |d| {
            Duration::from_nanos(u64::from(d.subsec_nanos()))
        });
        let mut text = [0u8; 29];
        let formatted = httpdate::fmt_http_date(wall);
        let n = formatted.len().min(29);
        text[..n].copy_from_slice(&formatted.as_bytes()[..n]);
        // `now` may be a little older than `wall`: the second ends no later than it says.
        c.set(Some((now + (Duration::from_secs(1) - into_second), text)));
        text
    })
}

/// Appends the answer to `out`: the 307, or the error as the hyper path sends it (status,
/// headers, JSON body; a `HEAD` gets the head alone).
fn write_answer(
    out: &mut Vec<u8>,
    (answer, cors): (Result<&[u8], ApiError>, Grant),
    head_only: bool,
    now: Instant,
) {
    match answer {
        Ok(location) => {
            out.extend_from_slice(b"HTTP/1.1 307 Temporary Redirect\r\nlocation: ");
            out.extend_from_slice(location);
            out.extend_from_slice(b"\r\ncache-control: no-store\r\n");
            cors.write(out);
            // As hyper: an empty body's length goes out except in the answer to a HEAD.
            out.extend_from_slice(if head_only {
                b"date: ".as_slice()
            } else {
                b"content-length: 0\r\ndate: ".as_slice()
            });
            out.extend_from_slice(&date(now));
            out.extend_from_slice(b"\r\n\r\n");
        }
        Err(error) => {
            let (parts, body) = error.into_response().into_parts();
            // An error's body is JSON in memory: one poll reads it.
            let body = axum::body::to_bytes(body, usize::MAX)
                .now_or_never()
                .and_then(Result::ok)
                .unwrap_or_default();
            let status = parts.status;
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 {} {}\r\n",
                    status.as_str(),
                    status.canonical_reason().unwrap_or("")
                )
                .as_bytes(),
            );
            for (name, value) in &parts.headers {
                if name != axum::http::header::CONTENT_LENGTH {
                    out.extend_from_slice(name.as_str().as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
            }
            cors.write(out);
            out.extend_from_slice(format!("content-length: {}\r\ndate: ", body.len()).as_bytes());
            out.extend_from_slice(&date(now));
            out.extend_from_slice(b"\r\n\r\n");
            if !head_only {
                out.extend_from_slice(&body);
            }
        }
    }
}
