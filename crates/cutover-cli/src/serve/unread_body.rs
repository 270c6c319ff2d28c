//! `Connection: close` on answers given before the request's body was read.
//!
//! Many answers do not need the body: a call to an unknown plugin (404,
//! checked before the body is read, so that no lease is held while it
//! arrives), a refused credential (401, 403), an unknown route, a reload
//! (which takes none). hyper cannot reuse a connection whose request body
//! was not read to its end, and closes it after the answer; but it says
//! nothing, so a client that pools connections (most do) may send its next
//! request on the closed one and fail ("peer disconnected") although the
//! server is fine. Whether the body had arrived when the answer was sent is
//! a matter of timing (a body written after the headers, a loaded host), so
//! the failure is rare and random. This layer makes it deterministic and
//! honest: an answer to a request that declared a body the handler did not
//! read to its end carries `Connection: close` (RFC 9112, section 9.6), and
//! the client opens a new connection for its next request.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use axum::{
    body::{Body, Bytes},
    extract::Request,
    http::{header, HeaderValue},
    middleware::Next,
    response::Response,
};
use http_body::{Body as HttpBody, Frame, SizeHint};

/// The middleware (`axum::middleware::from_fn`).
pub async fn close_if_unread(request: Request, next: Next) -> Response {
    // hyper's framing (`Content-Length`, chunked) says whether a body is
    // coming: a request without one is at its end already.
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    let body = Body::new(Tracked { inner: body, read: Arc::clone(&read) });
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if !read.load(Ordering::Acquire) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that records when it has been read to its end.
struct Tracked {
    inner: Body,
    read: Arc<AtomicBool>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
