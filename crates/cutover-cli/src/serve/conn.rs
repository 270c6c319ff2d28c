//! One HTTP/1.1 connection: the socket wrapper that watches its traffic,
//! and the state the connection's timeouts are decided from.
//!
//! [`ConnIo`] wraps the accepted socket. It records when bytes were read
//! (so the driver in [`super::server`] can tell an idle keep-alive
//! connection from one that is half-way through sending a request head) and
//! when a write is blocked (a client that stopped reading). It also
//! replaces the empty-bodied answers hyper writes by itself for requests it
//! cannot parse (400, 414 and 431) with the same statuses carrying a JSON
//! `{"error": "..."}` body, so that every error the server sends is JSON,
//! and closes such connections lingering (see [`linger`]), so that the
//! client reads the answer even if it was still sending.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Instant,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// What a connection's timeouts are decided from. Times are milliseconds
/// since the connection was accepted, plus one (0 means "never").
#[derive(Debug)]
pub struct ConnState {
    start: Instant,
    /// Requests whose handling has started and whose response is not done.
    pub(super) active: AtomicU32,
    /// Requests served on this connection.
    pub(super) served: AtomicU32,
    /// When the connection became idle (accepted, or its last response done).
    pub(super) idle_since: AtomicU64,
    /// When the first byte of the next request head arrived, if it did.
    pub(super) head_since: AtomicU64,
    /// When a write started being blocked by a client that does not read.
    pub(super) write_blocked_since: AtomicU64,
    /// Whether the request head being received has ended its request line
    /// (so a head too large for hyper is a URI problem only if not).
    pub(super) line_ended: AtomicBool,
    /// Asks the driver to close the connection (reclaimed or shutting down).
    pub(super) close: tokio::sync::Notify,
    /// Asked to close to make room for a new connection: no longer counted
    /// against the connection limit, and not picked again.
    pub(super) reclaimed: AtomicBool,
}

impl ConnState {
    pub(super) fn new() -> Self {
        Self {
            start: Instant::now(),
            active: AtomicU32::new(0),
            served: AtomicU32::new(0),
            idle_since: AtomicU64::new(1),
            head_since: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
            line_ended: AtomicBool::new(false),
            close: tokio::sync::Notify::new(),
            reclaimed: AtomicBool::new(false),
        }
    }

    /// Now, in this connection's clock (always ≥ 1).
    pub(super) fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// The instant of a time of this connection's clock.
    pub(super) fn instant(&self, at: u64) -> Instant {
        self.start + std::time::Duration::from_millis(at.saturating_sub(1))
    }

    /// A request's handling starts (its head was parsed).
    pub(super) fn begin_request(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        self.line_ended.store(false, Ordering::Relaxed);
    }

    /// A request's response is done (or abandoned).
    pub(super) fn end_request(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.idle_since.store(self.now(), Ordering::Release);
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// No request is being handled and no byte of a next one has arrived:
    /// closing loses nothing.
    pub(super) fn is_idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0 && self.head_since.load(Ordering::Acquire) == 0
    }

    /// No request is being handled (a head may be half-sent).
    pub(super) fn is_between_requests(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }
}

/// The accepted socket, watched (see the module docs).
pub struct ConnIo {
    /// The socket; taken only by `Drop`.
    inner: Option<TcpStream>,
    state: Arc<ConnState>,
    /// A replacement answer being written instead of hyper's, with how much
    /// of it is written and the length of the write it stands for.
    replacing: Option<(Vec<u8>, usize, usize)>,
    /// An error answer was sent: close "lingering" (see [`linger`]).
    linger: bool,
}

impl ConnIo {
    pub(super) fn new(inner: TcpStream, state: Arc<ConnState>) -> Self {
        Self { inner: Some(inner), state, replacing: None, linger: false }
    }

    fn io(&mut self) -> Pin<&mut TcpStream> {
        // `inner` is taken only in `Drop`, after the last poll.
        Pin::new(self.inner.as_mut().expect("the socket is present until the connection is dropped"))
    }
}

/// Lingering closes in progress (bounded).
static LINGERING: AtomicUsize = AtomicUsize::new(0);
/// Most lingering closes at once; beyond, sockets are closed at once.
const MAX_LINGERING: usize = 64;

/// Close a socket after an error answer without resetting the answer away:
/// closing with unread input makes the kernel send a reset, which can
/// destroy the answer before the client reads it. So shut down the write
/// side, then read and discard the client's input (at most 1 s and
/// 256 KiB), then close.
async fn linger(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let work = async {
        stream.shutdown().await?;
        let mut sink = [0u8; 8192];
        let mut total = 0;
        while total < 256 << 10 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => total += n,
            }
        }
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), work).await;
    LINGERING.fetch_sub(1, Ordering::AcqRel);
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if !self.linger {
            return;
        }
        let Some(stream) = self.inner.take() else { return };
        if LINGERING.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
            LINGERING.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn(linger(stream))),
            Err(_) => {
                LINGERING.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// hyper's own answer to a request it could not parse, as JSON (`None` if
/// `buf` is not one). A head too large whose request line never ended is
/// answered 414 (the URI is what is too long).
fn json_replacement(buf: &[u8], line_ended: bool) -> Option<Vec<u8>> {
    const EMPTY: &[u8] = b"content-length: 0\r\n";
    let (status, message) = match buf.get(..12)? {
        b"HTTP/1.1 400" => ("400 Bad Request", "the request could not be parsed (request line, URI or header)"),
        b"HTTP/1.1 414" => ("414 URI Too Long", "the request URI is too long"),
        b"HTTP/1.1 431" if !line_ended => ("414 URI Too Long", "the request URI is too long"),
        b"HTTP/1.1 431" => {
            ("431 Request Header Fields Too Large", "the request head (request line and headers) is too large")
        }
        _ => return None,
    };
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if head_end != buf.len() || !buf.windows(EMPTY.len()).any(|w| w.eq_ignore_ascii_case(EMPTY)) {
        return None; // our own responses always have a body
    }
    let body = format!("{{\"error\":\"{message}\"}}");
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl AsyncRead for ConnIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = self.io().poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before && self.state.is_between_requests() {
            let _ = self.state.head_since.compare_exchange(0, self.state.now(), Ordering::AcqRel, Ordering::Relaxed);
            if !self.state.line_ended.load(Ordering::Relaxed) && buf.filled()[before..].contains(&b'\n') {
                self.state.line_ended.store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

impl ConnIo {
    fn note_write<R>(&self, result: &Poll<io::Result<R>>) {
        match result {
            Poll::Pending => {
                let _ = self.state.write_blocked_since.compare_exchange(
                    0,
                    self.state.now(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(_) => {
                if self.state.write_blocked_since.load(Ordering::Relaxed) != 0 {
                    self.state.write_blocked_since.store(0, Ordering::Release);
                }
            }
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            if let Some(bytes) = json_replacement(buf, this.state.line_ended.load(Ordering::Relaxed)) {
                this.replacing = Some((bytes, 0, buf.len()));
                this.linger = true;
            }
        }
        let Some((bytes, written, stands_for)) = this.replacing.as_mut() else {
            let result = this.io().poll_write(cx, buf);
            this.note_write(&result);
            return result;
        };
        let mut stream = Pin::new(this.inner.as_mut().expect("the socket is present until the connection is dropped"));
        while *written < bytes.len() {
            let result = stream.as_mut().poll_write(cx, &bytes[*written..]);
            match result {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = *stands_for;
        this.replacing = None;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = self.io().poll_flush(cx);
        self.note_write(&result);
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        // hyper then writes each response head as one buffer, which is what
        // `json_replacement` looks at.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_hypers_empty_error_answers() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(json_replacement(hyper_431, true).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(out.ends_with("{\"error\":\"the request head (request line and headers) is too large\"}"), "{out}");
        let out = String::from_utf8(json_replacement(hyper_431, false).unwrap()).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 414 ") && out.ends_with("{\"error\":\"the request URI is too long\"}"),
            "{out}"
        );
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n";
        assert!(json_replacement(ours, true).is_none());
        assert!(json_replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", true).is_none());
    }
}
