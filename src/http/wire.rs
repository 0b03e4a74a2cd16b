//! hyper's own answers, in Foghorn's JSON.
//!
//! When hyper 1 cannot parse a request head (a bad request line or header, a head over
//! `max_buf_size`, more than `max_headers` headers, a URI over 64 KiB) it answers by itself before
//! any service runs: `Conn::on_parse_error` writes a bare head (`400`, `431` or `414`,
//! `content-length: 0`) and closes the connection. No builder option or hook changes that answer,
//! and by the time `serve_connection` returns the error the bytes are sent and the socket is gone.
//!
//! [`JsonAnswers`] sits between hyper and the connection and recognises that head as it is
//! written: a `4xx` status line among 400/414/431 whose head has no `content-type` and declares an
//! empty body. Foghorn's own error answers always carry `content-type: application/json` and a
//! body, so they never match; the automatic head is written instead as the JSON error of
//! DESIGN §6 with the same status. Every other write pays one byte comparison (the first digit of
//! the status, `3` for the viewer redirects).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ApiError;

/// The JSON answers written in place of hyper's automatic ones, made once per listener.
#[derive(Debug)]
pub struct Answers {
    bad_request: Vec<u8>,
    uri_too_long: Vec<u8>,
    head_too_large: Vec<u8>,
}

/// Which automatic answer hyper wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Automatic {
    BadRequest,
    UriTooLong,
    HeadTooLarge,
}

impl Answers {
    /// The answers for a listener whose heads are limited to `max_header_bytes` and `max_headers`.
    pub fn new(max_header_bytes: usize, max_headers: usize) -> Answers {
        Answers {
            bad_request: encode(&ApiError::BadRequest(
                "the request could not be parsed as HTTP".into(),
            )),
            uri_too_long: encode(&ApiError::UriTooLong("the request URI is too long".into())),
            head_too_large: encode(&ApiError::HeadersTooLarge(format!(
                "the request line and headers must fit in {max_header_bytes} bytes and \
                 {max_headers} headers"
            ))),
        }
    }

    fn get(&self, which: Automatic) -> &[u8] {
        match which {
            Automatic::BadRequest => &self.bad_request,
            Automatic::UriTooLong => &self.uri_too_long,
            Automatic::HeadTooLarge => &self.head_too_large,
        }
    }
}

/// A whole HTTP/1.1 response carrying `error`'s JSON body; the connection closes after it, as
/// it does after hyper's own answer.
fn encode(error: &ApiError) -> Vec<u8> {
    let status = error.status();
    let body = error.body().to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// Whether `written` is hyper's automatic error head, and which.
fn automatic(written: &[u8]) -> Option<Automatic> {
    // "HTTP/1.1 4": everything else (the 307s of the hot path first) stops at this test.
    if written.len() < 16 || written[9] != b'4' {
        return None;
    }
    if !(written.starts_with(b"HTTP/1.1 ") || written.starts_with(b"HTTP/1.0 ")) {
        return None;
    }
    let which = match &written[9..13] {
        b"400 " => Automatic::BadRequest,
        b"414 " => Automatic::UriTooLong,
        b"431 " => Automatic::HeadTooLarge,
        _ => return None,
    };
    // The whole write is one head and nothing after it.
    let end = written.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != written.len() {
        return None;
    }
    let head = &written[..end + 2];
    let has = |line: &[u8]| {
        head.windows(line.len())
            .any(|w| w.eq_ignore_ascii_case(line))
    };
    (has(b"\r\ncontent-length: 0\r\n") && !has(b"\r\ncontent-type:")).then_some(which)
}

/// A connection as hyper sees it: first the bytes the viewer lane read and did not answer
/// ([`super::lane`]), then the connection's own; hyper's automatic error answers are written as
/// JSON (see the module docs).
pub struct JsonAnswers<T> {
    inner: T,
    /// Bytes read before hyper took the connection, and how many of them hyper has had.
    read: Vec<u8>,
    given: usize,
    answers: Arc<Answers>,
    /// The JSON answer being written in place of hyper's head, and how much of it is out.
    replacing: Option<(Automatic, usize)>,
}

impl<T> JsonAnswers<T> {
    pub fn new(inner: T, read: Vec<u8>, answers: Arc<Answers>) -> JsonAnswers<T> {
        JsonAnswers {
            inner,
            read,
            given: 0,
            answers,
            replacing: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonAnswers<T> {
    /// Whether `written` is (still) to be replaced: hyper's automatic answer, or the same head
    /// written again after the replacement was interrupted by `Pending`.
    fn replaces(&mut self, written: &[u8]) -> bool {
        if self.replacing.is_none() {
            self.replacing = automatic(written).map(|which| (which, 0));
        }
        self.replacing.is_some()
    }

    /// Writes the rest of the JSON answer; `Ready(Ok(replaced))` once all of it is out, so
    /// hyper counts its own head as written.
    fn poll_replace(&mut self, cx: &mut Context<'_>, replaced: usize) -> Poll<io::Result<usize>> {
        while let Some((which, sent)) = self.replacing {
            let answer = self.answers.get(which);
            if sent == answer.len() {
                self.replacing = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.replacing = Some((which, sent + n));
        }
        Poll::Ready(Ok(replaced))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonAnswers<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.given < this.read.len() {
            let n = (this.read.len() - this.given).min(buf.remaining());
            buf.put_slice(&this.read[this.given..this.given + n]);
            this.given += n;
            if this.given == this.read.len() {
                this.read = Vec::new();
                this.given = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonAnswers<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replaces(buf) {
            return this.poll_replace(cx, buf.len());
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // hyper queues a head in a buffer of its own, first; an automatic answer is that head
        // alone. Any other write stops at its first slice's status digit.
        let mut written = bufs.iter().filter(|b| !b.is_empty());
        if let Some(first) = written.next() {
            let maybe = this.replacing.is_some() || first.get(9) == Some(&b'4');
            if maybe && written.next().is_none() && this.replaces(first) {
                return this.poll_replace(cx, first.len());
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    /// The head hyper 1.12 writes for a request it cannot parse.
    fn head(status: StatusCode) -> Vec<u8> {
        format!(
            "HTTP/1.1 {} {}\r\nconnection: close\r\ncontent-length: 0\r\n\
             date: Wed, 02 Dec 2026 00:59:03 GMT\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .into_bytes()
    }

    #[test]
    fn recognises_only_hyper_s_automatic_heads() {
        let answers = Answers::new(16384, 100);
        for status in [
            StatusCode::BAD_REQUEST,
            StatusCode::URI_TOO_LONG,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ] {
            let which = automatic(&head(status)).expect("automatic head");
            let text = String::from_utf8_lossy(answers.get(which)).to_string();
            assert!(text.starts_with(&format!("HTTP/1.1 {} ", status.as_u16())));
            assert!(text.contains("content-type: application/json\r\n"));
            let body = text.split("\r\n\r\n").nth(1).expect("body");
            let json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
            assert!(json["error"]["code"].is_string());
        }
        // Statuses hyper never answers by itself, our JSON errors, a body after the head, a
        // JSON head without a body (HEAD), a redirect: untouched.
        assert_eq!(automatic(&head(StatusCode::NOT_FOUND)), None);
        assert_eq!(automatic(&encode(&ApiError::BadRequest("x".into()))), None);
        let mut with_body = head(StatusCode::BAD_REQUEST);
        with_body.extend_from_slice(b"x");
        assert_eq!(automatic(&with_body), None);
        let json_head = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
                          content-length: 0\r\n\r\n";
        assert_eq!(automatic(json_head), None);
        let redirect =
            b"HTTP/1.1 307 Temporary Redirect\r\nlocation: x\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic(redirect), None);
    }

    #[tokio::test]
    async fn writes_the_json_answer_in_place_of_the_head() {
        use tokio::io::AsyncWriteExt as _;
        let answers = Arc::new(Answers::new(16384, 100));
        let automatic_head = head(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let expected = answers.get(Automatic::HeadTooLarge).to_vec();

        let mut conn = JsonAnswers::new(Vec::new(), Vec::new(), answers.clone());
        conn.write_all(&automatic_head).await.expect("write");
        assert_eq!(conn.inner, expected);

        let mut conn = JsonAnswers::new(Vec::new(), Vec::new(), answers.clone());
        let n = conn
            .write_vectored(&[IoSlice::new(b""), IoSlice::new(&automatic_head)])
            .await
            .expect("write");
        assert_eq!(n, automatic_head.len(), "hyper counts its head as written");
        assert_eq!(conn.inner, expected);

        // A head followed by a body in the same write is someone else's answer.
        let mut conn = JsonAnswers::new(Vec::new(), Vec::new(), answers);
        let slices = [IoSlice::new(&automatic_head), IoSlice::new(b"{}")];
        let n = conn.write_vectored(&slices).await.expect("write");
        assert_eq!(conn.inner[..n], [&automatic_head[..], b"{}"].concat()[..n]);
    }
}
