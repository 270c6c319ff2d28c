//! Who may use which route, and how many calls a plugin may run.
//!
//! * [`control`]: the middleware of the control routes (`/v1/plugins`,
//!   reload, `/metrics`). With an admin token configured, a request needs
//!   `Authorization: Bearer <token>` (401 otherwise; compared in constant
//!   time). A request from a browser page (an `Origin` header, or
//!   `Sec-Fetch-Site` other than `none`) is refused with 403 unless its
//!   origin was allowed with `--allow-origin`; allowed origins get CORS
//!   headers. When the server listens on loopback only, a `Host` that is not
//!   a loopback name is refused too (DNS rebinding).
//! * [`CallSlots`]: a per-plugin count of calls running; a call over the
//!   limit is refused at once (the caller answers 503), never queued.
//! * [`InlineCalls`]: which calls may run on the async worker that received
//!   them instead of a blocking-pool thread (a thread hand-off each way costs
//!   more than a short call): calls of few values, of a function whose last 8
//!   calls of this generation took at most 200 µs of CPU each, and never on
//!   every worker at once. A slow call sends the function's next calls to
//!   the blocking pool until 8 in a row are fast again; after 3 calls that
//!   ran inline and took over 10 ms (a stuck call, not a cold instance),
//!   the function's calls never run inline again in this generation. So a
//!   function can hold an async worker past 10 ms at most 3 times per
//!   generation (each time for at most its call's time budget),
//!   and never the last free worker. (Tasks that tokio had already queued on
//!   that worker, its LIFO slot among them, wait for the call: the accept
//!   loop can be one of them, so new connections can stall that long; the
//!   end-to-end tests saw this when a spinning call ran inline, before the
//!   first-calls-on-the-pool rule.)

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{http::error, AppState};

/// Access settings of the control routes.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The admin token, if any.
    pub token: Option<String>,
    /// Browser origins allowed (`https://ops.example.com`; `*` for any).
    pub allow_origins: Vec<String>,
    /// The server listens on loopback only: check `Host` against DNS rebinding.
    pub loopback_only: bool,
}

impl Access {
    fn origin_allowed(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|o| o == "*" || o == origin)
    }

    // The error is the refusal to send: built only when refusing.
    #[allow(clippy::result_large_err)]
    /// `Err(response)` if `headers` come from a browser page that may not
    /// use the control routes, else the allowed origin to echo (if any).
    fn check_browser(&self, headers: &HeaderMap) -> Result<Option<HeaderValue>, Response> {
        if self.loopback_only {
            if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
                if !is_loopback_host(host) {
                    return Err(error(
                        StatusCode::FORBIDDEN,
                        format!("Host `{host}` is not a loopback name; the control routes answer only to localhost"),
                    ));
                }
            }
        }
        match headers.get(header::ORIGIN) {
            Some(origin) => {
                let text = origin.to_str().unwrap_or("");
                if self.origin_allowed(text) {
                    Ok(Some(origin.clone()))
                } else {
                    Err(error(
                        StatusCode::FORBIDDEN,
                        format!(
                            "requests from browser origin `{}` may not use the control routes \
                             (allow it with --allow-origin)",
                            text.chars().take(200).collect::<String>()
                        ),
                    ))
                }
            }
            None => match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
                Some(site) if site != "none" => Err(error(
                    StatusCode::FORBIDDEN,
                    "requests from browser pages may not use the control routes (allow an origin with --allow-origin)",
                )),
                _ => Ok(None),
            },
        }
    }

    #[allow(clippy::result_large_err)] // the error is the refusal to send
    fn check_token(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(token) = &self.token else { return Ok(()) };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        if given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), token.as_bytes())) {
            return Ok(());
        }
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            if given.is_some() {
                "the admin token is wrong"
            } else {
                "this route needs the admin token: send `Authorization: Bearer <token>`"
            },
        );
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(response)
    }
}

/// `localhost`, `*.localhost`, `127.0.0.0/8` or `[::1]`, with any port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':')
            .map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host })
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware of the control routes (see the module docs).
pub async fn control(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let access = &state.config.access;
    let origin = match access.check_browser(request.headers()) {
        Ok(origin) => origin,
        Err(response) => return response,
    };
    if request.method() != Method::OPTIONS {
        if let Err(response) = access.check_token(request.headers()) {
            return with_cors(response, origin);
        }
    }
    with_cors(next.run(request).await, origin)
}

fn with_cors(mut response: Response, origin: Option<HeaderValue>) -> Response {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// A CORS preflight of a control route (reached only from an allowed
/// origin, or without one).
pub async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST"),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, "authorization, content-type"),
            (header::ACCESS_CONTROL_MAX_AGE, "600"),
        ],
    )
        .into_response()
}

/// Calls running per plugin.
#[derive(Debug, Default)]
pub struct CallSlots {
    running: RwLock<HashMap<String, Arc<PluginCalls>>>,
}

/// What the server tracks of one plugin's calls.
#[derive(Debug, Default)]
struct PluginCalls {
    /// Calls running.
    running: AtomicUsize,
    /// How long the functions of the plugin's newest generation took.
    speeds: RwLock<Speeds>,
}

/// How the functions of one generation's calls went.
#[derive(Debug, Default)]
struct Speeds {
    generation: u64,
    functions: HashMap<String, Speed>,
}

/// How one function's calls went.
#[derive(Debug, Default, Clone, Copy)]
struct Speed {
    /// Calls in a row that took at most the inline budget (up to
    /// [`FAST_STREAK`]).
    streak: u32,
    /// Calls that ran inline and took longer than the strike threshold.
    strikes: u32,
}

/// Calls in a row within the budget before a function's calls run inline.
const FAST_STREAK: u32 = 8;
/// Inline calls over the strike threshold after which a function's calls
/// never run inline again in this generation.
const MAX_STRIKES: u32 = 3;

impl Speed {
    fn inline(self) -> bool {
        self.streak >= FAST_STREAK && self.strikes < MAX_STRIKES
    }
}

/// One running call of a plugin; frees its slot when dropped.
#[derive(Debug)]
pub struct CallSlot(Arc<PluginCalls>);

impl CallSlot {
    /// Whether calls of `function` of `generation` may run inline: its last
    /// calls, [`FAST_STREAK`] in a row, took at most the inline budget, and
    /// fewer than [`MAX_STRIKES`] of its inline calls took longer.
    pub fn known_fast(&self, generation: u64, function: &str) -> bool {
        let speeds = self.0.speeds.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        speeds.generation == generation && speeds.functions.get(function).is_some_and(|s| s.inline())
    }

    /// Record that a call of `function` of `generation` over `values` values
    /// (run inline or not) cost `cost`; `true` if that was the strike after
    /// which its calls never run inline again in this generation. Calls of
    /// more values than may run inline say nothing (a large call may be
    /// slow where a small one is not).
    pub fn took(
        &self,
        generation: u64,
        function: &str,
        values: usize,
        cost: Duration,
        ran_inline: bool,
        inline: &InlineCalls,
    ) -> bool {
        if values > inline.max_values {
            return false;
        }
        let fast = cost <= inline.budget;
        {
            let speeds = self.0.speeds.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let known = (speeds.generation == generation).then(|| speeds.functions.get(function).copied()).flatten();
            let settled = known.is_some_and(|s| (fast && s.streak >= FAST_STREAK) || s.strikes >= MAX_STRIKES);
            if generation < speeds.generation || settled {
                return false;
            }
        }
        let mut speeds = self.0.speeds.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if generation > speeds.generation {
            *speeds = Speeds { generation, functions: HashMap::new() };
        }
        if generation != speeds.generation {
            return false;
        }
        let speed = speeds.functions.entry(function.to_owned()).or_default();
        if fast {
            speed.streak = (speed.streak + 1).min(FAST_STREAK);
            false
        } else {
            speed.streak = 0;
            let strike = ran_inline && cost > inline.strike;
            speed.strikes += u32::from(strike);
            strike && speed.strikes == MAX_STRIKES
        }
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CallSlots {
    /// A slot for a call of `plugin`, or `None` if `max` calls of it run.
    pub fn try_acquire(&self, plugin: &str, max: usize) -> Option<CallSlot> {
        let calls = {
            let running = self.running.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            running.get(plugin).cloned()
        };
        let calls = calls.unwrap_or_else(|| {
            let mut running = self.running.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(running.entry(plugin.to_owned()).or_default())
        });
        let previous = calls.running.fetch_add(1, Ordering::AcqRel);
        let slot = CallSlot(calls);
        (previous < max).then_some(slot)
    }

    /// Forget the counters of plugins not in `alive` that run nothing.
    pub fn retain(&self, alive: impl Fn(&str) -> bool) {
        let mut running = self.running.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        running.retain(|id, calls| alive(id) || calls.running.load(Ordering::Acquire) > 0);
    }
}

/// Which calls run on the async worker that received them (see the module
/// docs): at most `max` at once, of at most `max_values` values, of
/// functions known to be fast ([`CallSlot::known_fast`]).
#[derive(Debug)]
pub struct InlineCalls {
    running: AtomicUsize,
    max: usize,
    max_values: usize,
    /// A call over this is slow: its function's next calls go to the pool.
    budget: Duration,
    /// An inline call over this held its worker: a strike.
    strike: Duration,
}

/// A call running inline; frees its place when dropped.
#[derive(Debug)]
pub struct InlineCall<'a>(&'a AtomicUsize);

impl Drop for InlineCall<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InlineCalls {
    /// The policy for a runtime of `workers` async workers: inline calls on
    /// all workers but one (none with a single worker), of up to 4,096
    /// values, of functions whose calls took at most 200 µs; an inline call
    /// over 10 ms (not a cold instance: a stuck call) is a strike.
    pub fn for_workers(workers: usize) -> Self {
        Self::new(workers.saturating_sub(1), 4096, Duration::from_micros(200), Duration::from_millis(10))
    }

    /// A policy with explicit limits.
    pub fn new(max: usize, max_values: usize, budget: Duration, strike: Duration) -> Self {
        InlineCalls { running: AtomicUsize::new(0), max, max_values, budget, strike }
    }

    /// A place to run a call of `function` of `generation` over `values`
    /// values inline, or `None`: run it on the blocking pool.
    pub fn try_enter(&self, slot: &CallSlot, generation: u64, function: &str, values: usize) -> Option<InlineCall<'_>> {
        if self.max == 0 || values > self.max_values || !slot.known_fast(generation, function) {
            return None;
        }
        let previous = self.running.fetch_add(1, Ordering::AcqRel);
        let call = InlineCall(&self.running);
        (previous < self.max).then_some(call)
    }
}

/// Measures what a call cost: the CPU time of the calling thread where the
/// platform tells it (Linux), so a call that waited for a core (a busy
/// machine) is not taken for a slow one; elsewhere the wall time.
#[derive(Debug)]
pub struct CallTimer {
    wall: Instant,
    cpu: Option<Duration>,
}

impl CallTimer {
    /// Start measuring on this thread.
    pub fn start() -> Self {
        CallTimer { wall: Instant::now(), cpu: thread_cpu_time() }
    }

    /// What the call cost so far (call on the thread that started).
    pub fn elapsed(&self) -> Duration {
        match (self.cpu, thread_cpu_time()) {
            (Some(start), Some(now)) => now.saturating_sub(start),
            _ => self.wall.elapsed(),
        }
    }
}

/// The CPU time this thread has used.
#[cfg(target_os = "linux")]
fn thread_cpu_time() -> Option<Duration> {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable `timespec` for the duration of the
    // call, and `clock_gettime` writes nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    (rc == 0).then(|| Duration::new(u64::try_from(now.tv_sec).unwrap_or(0), u32::try_from(now.tv_nsec).unwrap_or(0)))
}

/// The CPU time this thread has used: not known here.
#[cfg(not(target_os = "linux"))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "localhost:8080", "127.0.0.1:1", "127.9.9.9", "[::1]:80", "[::1]", "a.localhost:3"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["evil.com", "evil.com:8080", "10.0.0.1:80", "localhost.evil.com", "[::2]:1"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn inline_calls_are_bounded_small_and_of_functions_known_fast() {
        let slots = CallSlots::default();
        let inline = InlineCalls::new(1, 100, Duration::from_micros(200), Duration::from_millis(10));
        let (fast, slow, stuck) = (Duration::from_micros(10), Duration::from_millis(1), Duration::from_millis(50));
        let slot = slots.try_acquire("p", 8).unwrap();
        let warm_up = |generation| {
            for _ in 0..FAST_STREAK {
                assert!(inline.try_enter(&slot, generation, "p.f", 1).is_none(), "not known fast yet");
                assert!(!slot.took(generation, "p.f", 1, fast, false, &inline));
            }
        };
        warm_up(1);
        let first = inline.try_enter(&slot, 1, "p.f", 100).expect("a fast function's small call runs inline");
        assert!(inline.try_enter(&slot, 1, "p.f", 1).is_none(), "at most `max` inline calls at once");
        drop(first);
        assert!(inline.try_enter(&slot, 1, "p.f", 101).is_none(), "a call of too many values goes to the pool");
        assert!(inline.try_enter(&slot, 1, "p.g", 1).is_none(), "other functions are not known yet");
        assert!(inline.try_enter(&slot, 2, "p.f", 1).is_none(), "nor the next generation");

        slot.took(1, "p.f", 500, slow, false, &inline);
        assert!(inline.try_enter(&slot, 1, "p.f", 1).is_some(), "a slow call of many values says nothing");
        slot.took(1, "p.f", 1, slow, true, &inline);
        assert!(inline.try_enter(&slot, 1, "p.f", 1).is_none(), "a slow call sends the next ones to the pool");
        warm_up(1);
        for strike in 1..=MAX_STRIKES {
            assert_eq!(slot.took(1, "p.f", 1, stuck, true, &inline), strike == MAX_STRIKES);
            assert!(inline.try_enter(&slot, 1, "p.f", 1).is_none(), "a slow call sends the next ones to the pool");
            warm_up(1);
        }
        assert!(inline.try_enter(&slot, 1, "p.f", 1).is_none(), "after {MAX_STRIKES} slow inline calls: never again");
        slot.took(1, "p.f", 1, slow, false, &inline);

        warm_up(2);
        assert!(inline.try_enter(&slot, 2, "p.f", 1).is_some(), "a new generation starts anew");
        slot.took(1, "p.f", 1, stuck, true, &inline);
        assert!(inline.try_enter(&slot, 2, "p.f", 1).is_some(), "an old generation's call changes nothing");
        assert!(InlineCalls::for_workers(1).try_enter(&slot, 2, "p.f", 1).is_none(), "never inline with one worker");
    }

    #[test]
    fn a_call_timer_counts_work_not_waiting() {
        let timer = CallTimer::start();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let worked = timer.elapsed();
        assert!(worked > Duration::ZERO, "{x}");
        if cfg!(target_os = "linux") {
            let timer = CallTimer::start();
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let sender = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let _ = tx.send(());
            });
            rx.recv().unwrap();
            sender.join().unwrap();
            assert!(timer.elapsed() < Duration::from_millis(50), "waiting is not CPU time");
        }
    }

    #[test]
    fn slots_refuse_over_the_limit_and_free_on_drop() {
        let slots = CallSlots::default();
        let a = slots.try_acquire("p", 2).unwrap();
        let _b = slots.try_acquire("p", 2).unwrap();
        assert!(slots.try_acquire("p", 2).is_none());
        assert!(slots.try_acquire("q", 2).is_some());
        drop(a);
        assert!(slots.try_acquire("p", 2).is_some());
    }
}
