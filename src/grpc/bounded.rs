//! The request bodies of gRPC calls that send one message (unary and server-streaming), bounded
//! like HTTP bodies (the HTTP adapter's `body` module): the message must arrive within
//! `server.body_timeout` (else `DEADLINE_EXCEEDED`), and one still arriving when shutdown begins
//! is cut (`UNAVAILABLE`). tonic would wait for such a body as long as the client keeps the
//! connection alive, and hyper's graceful shutdown waits for the call: a client that stalled a
//! `PreRegisterEdge` held every shutdown up for the whole grace period.
//!
//! Calls whose request is a stream (`Connect`, `PeerChannel`, reflection) are long-lived by design;
//! the edge sessions and peer channels end themselves when shutdown begins.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use axum::http::Request;
use hyper::body::{Frame, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::Status;

/// The methods whose request is a single message.
const SINGLE_MESSAGE: &[&str] = &[
    "/foghorn.v1.EdgeProvisioning/PreRegisterEdge",
    "/foghorn.v1.Federation/QueryStream",
    "/foghorn.v1.Federation/NotifyOriginPull",
    "/foghorn.v1.Federation/ArrangeOriginPull",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// `request` with its body bounded when its method sends one message; others pass untouched.
pub fn bound(
    request: Request<tonic::body::Body>,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Request<tonic::body::Body> {
    if !SINGLE_MESSAGE.contains(&request.uri().path()) {
        return request;
    }
    let stop = shutdown.clone().cancelled_owned();
    request.map(|inner| {
        tonic::body::Body::new(Bounded {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            stop: Box::pin(stop),
            timeout,
        })
    })
}

/// A request body that fails when it is late or when shutdown begins.
struct Bounded {
    inner: tonic::body::Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    timeout: Duration,
}

impl HttpBody for Bounded {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "the request message did not arrive within {}",
                humantime::format_duration(self.timeout)
            )))));
        }
        if self.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Status::unavailable(
                "this server is shutting down; call again",
            ))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
