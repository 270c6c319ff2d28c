//! The accept loop and the connection drivers: HTTP/1.1 over hyper, with
//! the limits and timeouts axum's `serve` does not have.
//!
//! # Guarantees
//!
//! * **At most `max_connections` connections.** At the limit, an idle
//!   keep-alive connection (one that served a request and has received
//!   nothing since) is closed to make room, oldest first, a different one
//!   for each new connection (one asked to close is no longer counted); if
//!   there is none, the new connection gets `503` `{"error": ...}` with
//!   `Retry-After` and is closed.
//! * **At most `max_requests` requests in handling** at once; more get
//!   `503` with `Retry-After` at once, before their body is read. Scrapes
//!   (`GET /metrics`) are not counted, so the metrics stay readable during
//!   the overload they show; the count is the
//!   `cutover_http_requests_in_progress` gauge.
//! * **Timeouts.** A connection is closed when a request head is not
//!   complete `header_timeout` after its first byte (or after the
//!   connection was accepted, for the first request); when it stays idle
//!   between requests for `keep_alive_timeout`; and when a response cannot
//!   be written for `idle_timeout` because the client stopped reading.
//! * **Graceful shutdown.** When `shutdown` resolves, the listener is
//!   closed, idle connections and connections half-way through sending a
//!   request head are closed at once, and the others finish their current
//!   response and close. [`Server::run`] returns when every connection is
//!   closed or `grace` has passed; then `on_grace_end` runs (it interrupts
//!   the calls still running, whose handlers answer 503) and the
//!   connections get up to [`INTERRUPT_GRACE`] more to write those answers.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, Router};
use bytes::Bytes;
use http_body::Frame;
use hyper::{body::Incoming, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::{io::AsyncWriteExt as _, net::TcpListener, sync::watch};
use tower_service::Service as _;

use super::{
    conn::{ConnIo, ConnState},
    metrics::Metrics,
};

/// How long interrupted calls get to write their answers after the grace.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

/// Connection limits and timeouts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most open connections.
    pub max_connections: usize,
    /// Most requests in handling at once (scrapes of `/metrics` are not
    /// counted).
    pub max_requests: usize,
    /// Longest request URI, in bytes (longer: 414).
    pub max_uri_bytes: usize,
    /// Largest request head (request line and headers), in bytes (larger: 431).
    pub max_header_bytes: usize,
    /// Time to receive a complete request head.
    pub header_timeout: Duration,
    /// Time an idle connection is kept between requests (zero: no keep-alive).
    pub keep_alive_timeout: Duration,
    /// Time a response may stay blocked by a client that does not read.
    pub idle_timeout: Duration,
}

/// The server: a listener, a router, limits.
pub struct Server {
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
}

/// Connections alive, for reclaiming idle ones and for shutdown.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Arc<ConnState>>>,
}

impl Registry {
    /// Whether a new connection may be opened with at most `max` counted:
    /// yes if fewer are open, or if the keep-alive connection that has been
    /// idle longest (it served a request and nothing of the next one
    /// arrived) can be asked to close. A connection asked to close is no
    /// longer counted, and never asked twice, so each connection admitted
    /// at the limit closes a different idle one, even when several arrive
    /// before the first closed one is gone.
    fn make_room(&self, max: usize) -> bool {
        let live = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if live.len() < max || live.values().filter(|c| !c.reclaimed.load(Ordering::Relaxed)).count() < max {
            return true;
        }
        // Idle longest first; the clock counts milliseconds, so ties go to
        // the connection accepted first.
        let oldest = live
            .iter()
            .filter(|(_, c)| {
                !c.reclaimed.load(Ordering::Relaxed) && c.is_idle() && c.served.load(Ordering::Relaxed) > 0
            })
            .min_by_key(|(id, c)| (c.instant(c.idle_since.load(Ordering::Relaxed)), **id));
        match oldest {
            Some((_, conn)) => {
                conn.reclaimed.store(true, Ordering::Relaxed);
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// One request in handling: counted on its connection until its response
/// body is done or dropped, and also against `max_requests` unless it is a
/// scrape of `/metrics`.
struct RequestGuard {
    conn: Arc<ConnState>,
    /// The metrics whose request count this request holds one of.
    counted: Option<Arc<Metrics>>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if let Some(metrics) = &self.counted {
            metrics.requests_in_progress().fetch_sub(1, Ordering::AcqRel);
        }
        self.conn.end_request();
    }
}

/// A response body that holds its request's [`RequestGuard`].
struct GuardedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A JSON error response with `Retry-After: 1`.
pub fn unavailable(message: &str) -> Response<Body> {
    let mut response = super::http::error(http::StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    response
}

impl Server {
    /// A server over a bound `listener`.
    pub fn new(listener: TcpListener, router: Router, limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self { listener, router, limits, metrics }
    }

    /// Serve until `shutdown` resolves, then shut down gracefully (see the
    /// module docs).
    pub async fn run(self, shutdown: impl Future<Output = ()>, grace: Duration, on_grace_end: impl FnOnce()) {
        let registry = Arc::new(Registry::default());
        let shared = Arc::new(Shared {
            router: self.router.clone(),
            limits: self.limits.clone(),
            metrics: Arc::clone(&self.metrics),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.keep_alive(!self.limits.keep_alive_timeout.is_zero())
            .max_buf_size((self.limits.max_header_bytes + self.limits.max_uri_bytes + 4096).max(8192))
            .header_read_timeout(None);
        let overflow = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            if !registry.make_room(self.limits.max_connections) {
                self.metrics.rejected("connections");
                if let Ok(permit) = Arc::clone(&overflow).try_acquire_owned() {
                    tokio::spawn(refuse(stream, permit));
                }
                continue;
            }
            let state = Arc::new(ConnState::new());
            let id = registry.next.fetch_add(1, Ordering::Relaxed);
            registry.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, Arc::clone(&state));
            let conn = Connection { state, registry: Arc::clone(&registry), id, shared: Arc::clone(&shared) };
            tasks.spawn(conn.drive(TokioIo::new(stream), http.clone(), stop_rx.clone(), peer));
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        tracing::info!(connections = tasks.len(), "shutting down: no new connections; waiting for calls in flight");
        let all_closed = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all_closed).await.is_err() {
            tracing::warn!(
                timeout_s = grace.as_secs_f64(),
                "calls still in flight after the shutdown timeout; interrupting them"
            );
            on_grace_end();
            let all_closed = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(INTERRUPT_GRACE, all_closed).await.is_err() {
                tracing::warn!(connections = tasks.len(), "closing connections whose calls did not end");
            }
        }
    }
}

/// Answer a connection over the limit with 503 and close it, reading what
/// the client sent for a moment so that the close does not reset the
/// answer away.
async fn refuse(mut stream: tokio::net::TcpStream, _permit: tokio::sync::OwnedSemaphorePermit) {
    const BODY: &str = r#"{"error":"too many connections; try again later"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let work = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < 64 << 10 {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? {
                0 => break,
                n => total += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), work).await;
}

/// What every connection's requests share.
struct Shared {
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
}

struct Connection {
    state: Arc<ConnState>,
    registry: Arc<Registry>,
    id: u64,
    shared: Arc<Shared>,
}

impl Connection {
    async fn drive(
        self,
        io: TokioIo<tokio::net::TcpStream>,
        http: hyper::server::conn::http1::Builder,
        mut stop: watch::Receiver<bool>,
        peer: SocketAddr,
    ) {
        self.shared.metrics.connections(1);
        let state = Arc::clone(&self.state);
        let io = TokioIo::new(ConnIo::new(io.into_inner(), Arc::clone(&state)));
        let service = {
            let (shared, state) = (Arc::clone(&self.shared), Arc::clone(&state));
            hyper::service::service_fn(move |request: Request<Incoming>| {
                handle(request, Arc::clone(&shared), Arc::clone(&state))
            })
        };
        let conn = http.serve_connection(io, service);
        tokio::pin!(conn);
        let mut draining = false;
        let mut stopping = *stop.borrow();
        loop {
            let wake = self.next_check();
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                () = tokio::time::sleep_until(wake.into()), if !draining => {
                    if let Some(why) = self.expired() {
                        tracing::debug!(%peer, why, "closing the connection");
                        break;
                    }
                }
                () = state.close.notified() => {
                    if state.is_idle() {
                        tracing::debug!(%peer, "closing an idle connection to make room for a new one");
                        break;
                    }
                    // A request began since it was picked: it is served,
                    // and the connection is counted again.
                    state.reclaimed.store(false, Ordering::Relaxed);
                }
                changed = stop.changed(), if !stopping => {
                    stopping = changed.is_err() || *stop.borrow();
                }
            }
            if stopping && !draining {
                if state.is_between_requests() {
                    break; // idle, or a half-sent head: nothing to finish
                }
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
        self.registry.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.id);
        self.shared.metrics.connections(-1);
    }

    /// When to look at the timeouts next.
    fn next_check(&self) -> std::time::Instant {
        let s = &self.state;
        let l = &self.shared.limits;
        let now = s.now();
        let at = if !s.is_between_requests() {
            match s.write_blocked_since.load(Ordering::Acquire) {
                0 => now + ms(l.idle_timeout),
                since => since + ms(l.idle_timeout),
            }
        } else {
            match s.head_since.load(Ordering::Acquire) {
                0 => s.idle_since.load(Ordering::Acquire) + ms(self.idle_limit()),
                since => since + ms(l.header_timeout),
            }
        };
        s.instant(at.max(now))
    }

    /// How long this connection may wait for the first byte of a request.
    fn idle_limit(&self) -> Duration {
        if self.state.served.load(Ordering::Relaxed) == 0 {
            self.shared.limits.header_timeout
        } else {
            self.shared.limits.keep_alive_timeout
        }
    }

    /// Which timeout has passed, if one has.
    fn expired(&self) -> Option<&'static str> {
        let s = &self.state;
        let l = &self.shared.limits;
        let now = s.now();
        if !s.is_between_requests() {
            let blocked = s.write_blocked_since.load(Ordering::Acquire);
            return (blocked != 0 && now >= blocked + ms(l.idle_timeout))
                .then_some("idle timeout (client not reading)");
        }
        match s.head_since.load(Ordering::Acquire) {
            0 => (now >= s.idle_since.load(Ordering::Acquire) + ms(self.idle_limit())).then_some(
                if s.served.load(Ordering::Relaxed) == 0 {
                    "header timeout (nothing sent)"
                } else {
                    "keep-alive timeout"
                },
            ),
            since => (now >= since + ms(l.header_timeout)).then_some("header timeout"),
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4).min(u64::MAX / 4)
}

/// Per-request checks that need no route (limits on the head and on
/// requests in handling), then the router.
async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
) -> Result<Response<GuardedBody>, Infallible> {
    conn.begin_request();
    let (limits, metrics) = (&shared.limits, &shared.metrics);
    // Scrapes are not counted, so monitoring stays available during the
    // overload it is there to show (the connection limit still bounds them).
    let scrape = request.method() == http::Method::GET && request.uri().path() == "/metrics";
    let counted = (!scrape).then(|| Arc::clone(metrics));
    let previous = counted.as_ref().map(|m| m.requests_in_progress().fetch_add(1, Ordering::AcqRel));
    let guard = RequestGuard { conn, counted };
    let early = if previous.is_some_and(|previous| previous >= limits.max_requests) {
        metrics.rejected("requests");
        Some(unavailable("too many requests in progress; try again later"))
    } else if uri_len(request.uri()) > limits.max_uri_bytes {
        metrics.rejected("head_too_large");
        Some(super::http::error(
            http::StatusCode::URI_TOO_LONG,
            format!("the request URI is longer than {} bytes", limits.max_uri_bytes),
        ))
    } else if head_bytes(&request) > limits.max_header_bytes {
        metrics.rejected("head_too_large");
        Some(super::http::error(
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request headers are larger than {} bytes", limits.max_header_bytes),
        ))
    } else {
        None
    };
    let response = match early {
        Some(response) => response,
        None => match shared.router.clone().call(request.map(Body::new)).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
    };
    Ok(response.map(|inner| GuardedBody { inner, _guard: guard }))
}

/// The length of a request target as sent (origin form: path and query).
fn uri_len(uri: &http::Uri) -> usize {
    uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3)
}

/// The size of a request's headers as sent (names, values, separators).
fn head_bytes<B>(request: &Request<B>) -> usize {
    request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum()
}
