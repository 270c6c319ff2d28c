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

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, RwLock,
    },
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
    running: RwLock<HashMap<String, Arc<AtomicUsize>>>,
}

/// One running call of a plugin; frees its slot when dropped.
#[derive(Debug)]
pub struct CallSlot(Arc<AtomicUsize>);

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CallSlots {
    /// A slot for a call of `plugin`, or `None` if `max` calls of it run.
    pub fn try_acquire(&self, plugin: &str, max: usize) -> Option<CallSlot> {
        let counter = {
            let running = self.running.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            running.get(plugin).cloned()
        };
        let counter = counter.unwrap_or_else(|| {
            let mut running = self.running.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(running.entry(plugin.to_owned()).or_default())
        });
        let previous = counter.fetch_add(1, Ordering::AcqRel);
        let slot = CallSlot(counter);
        (previous < max).then_some(slot)
    }

    /// Forget the counters of plugins not in `alive` that run nothing.
    pub fn retain(&self, alive: impl Fn(&str) -> bool) {
        let mut running = self.running.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        running.retain(|id, n| alive(id) || n.load(Ordering::Acquire) > 0);
    }
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
