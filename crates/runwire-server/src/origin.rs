//! Origins: which web pages may use the server from a browser (spec §17, `RW-SEC-2`,
//! `RW-SEC-17`).
//!
//! A browser attaches an `Origin` header to every WebSocket upgrade and to every
//! cross-origin HTTP request, and it lets any page open a WebSocket to any server or
//! send a "simple" POST (`text/plain`, form bodies) without asking first. So a server
//! that checked nothing would stream runs to, and accept events from, any page a user
//! of the network happens to open. The policy:
//!
//! - A request without `Origin` is not from a browser page (or is same-origin
//!   navigation) and is not judged here: tokens decide (§7).
//! - An `Origin` is allowed when `allowed_origins` lists it, when it lists `*`, or when
//!   it is the server's own origin (its authority equals the request's `Host`), which
//!   is the whole default list. Anything else, `null` included, is refused with 403
//!   `forbidden` before the upgrade or the request has any effect.
//! - Preflights (`OPTIONS` with `Access-Control-Request-Method`) from allowed origins
//!   are answered by tower-http's CORS layer with the methods and headers of §4;
//!   answers to allowed origins carry `Access-Control-Allow-Origin`. Tokens travel in
//!   `Authorization`, never in cookies, so credentials are not allowed.
//!
//! Appends must be declared `application/json` (`RW-INGEST-24`, checked in the
//! handler), which no page can send cross-origin without a preflight.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use runwire_protocol::ErrorCode;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{http::ApiError, state::AppState};

/// The origins allowed to use the server, from `allowed_origins`.
#[derive(Debug, Clone, Default)]
pub(crate) struct OriginPolicy {
    any: bool,
    allowed: BTreeSet<String>,
}

impl OriginPolicy {
    /// The policy of a configured list (entries already validated by
    /// [`normalize`]; `*` allows every origin).
    pub(crate) fn new(list: &[String]) -> Self {
        Self {
            any: list.iter().any(|o| o == "*"),
            allowed: list.iter().filter_map(|o| normalize(o)).collect(),
        }
    }

    /// Whether a request from `origin` with `Host: host` may go on.
    pub(crate) fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        let Some(o) = normalize(origin) else {
            return false;
        };
        if self.allowed.contains(&o) {
            return true;
        }
        // The server's own origin: the origin's authority is the Host the browser
        // sent (the default port written or not).
        let (Some((scheme, authority)), Some(host)) = (o.split_once("://"), host) else {
            return false;
        };
        let own = strip_default_port(scheme, &host.to_ascii_lowercase());
        authority == own
    }
}

/// `scheme://host[:port]` in lower case without a default port (`:80` for http,
/// `:443` for https), or `null`; `None` for anything else (a path, a query,
/// credentials, an empty host).
pub(crate) fn normalize(origin: &str) -> Option<String> {
    let o = origin.trim().to_ascii_lowercase();
    if o == "null" {
        return Some(o);
    }
    let (scheme, authority) = o.split_once("://")?;
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let authority_ok = !authority.is_empty()
        && !authority.contains(['/', '?', '#', '@', ' '])
        && !authority.starts_with(':');
    if !scheme_ok || !authority_ok {
        return None;
    }
    Some(format!(
        "{scheme}://{}",
        strip_default_port(scheme, authority)
    ))
}

fn strip_default_port(scheme: &str, authority: &str) -> String {
    let default = match scheme {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => return authority.to_owned(),
    };
    authority
        .strip_suffix(default)
        .unwrap_or(authority)
        .to_owned()
}

fn host(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get(header::HOST).and_then(|h| h.to_str().ok())
}

/// Refuses a request whose `Origin` is not allowed (`RW-SEC-2` for the upgrade,
/// `RW-SEC-17` for the HTTP API). Installed as a route layer, so requests for no
/// endpoint, or with a method the endpoint does not take, are answered 404/405 first
/// (`RW-INGEST-23`).
pub(crate) async fn enforce(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let text = origin.to_str().unwrap_or("");
        if !state.origins.allows(text, host(req.headers())) {
            crate::metrics::Metrics::inc(&state.metrics.origin_refusals);
            let shown: String = text.chars().take(200).collect();
            return ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                format!(
                    "requests from origin {shown:?} are not allowed here (RW-SEC-2); the server's \
                     operator lists the origins of its web pages in allowed_origins"
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// CORS for allowed origins: preflights answered with the methods and headers of the
/// HTTP API (§4), `Access-Control-Allow-Origin` on answers, `Retry-After` readable.
pub(crate) fn cors(policy: OriginPolicy) -> CorsLayer {
    let policy = Arc::new(policy);
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(
            move |origin: &HeaderValue, parts: &Parts| {
                origin
                    .to_str()
                    .is_ok_and(|o| policy.allows(o, host(&parts.headers)))
            },
        ))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_compared_normalized() {
        assert_eq!(
            normalize("HTTPS://App.Example:443").as_deref(),
            Some("https://app.example")
        );
        assert_eq!(
            normalize("http://a.example:8080").as_deref(),
            Some("http://a.example:8080")
        );
        assert_eq!(normalize("null").as_deref(), Some("null"));
        for bad in [
            "a.example",
            "https://",
            "https://a.example/path",
            "https://u@a.example",
            "1http://a",
            "https://:80",
        ] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_default_allows_only_the_servers_own_origin() {
        let p = OriginPolicy::new(&[]);
        assert!(p.allows("http://127.0.0.1:7070", Some("127.0.0.1:7070")));
        assert!(p.allows("https://runs.example", Some("runs.example:443")));
        assert!(p.allows("https://runs.example:443", Some("runs.example")));
        assert!(!p.allows("http://evil.example", Some("127.0.0.1:7070")));
        assert!(!p.allows("http://127.0.0.1:7071", Some("127.0.0.1:7070")));
        assert!(!p.allows("null", Some("127.0.0.1:7070")));
        assert!(!p.allows("http://127.0.0.1:7070", None));
    }

    #[test]
    fn listed_origins_and_the_wildcard() {
        let p = OriginPolicy::new(&["https://app.example".into()]);
        assert!(p.allows("https://APP.example", Some("api.example")));
        assert!(!p.allows("https://app.example.evil", Some("api.example")));
        assert!(!p.allows("http://app.example", Some("api.example")));
        let any = OriginPolicy::new(&["*".into()]);
        assert!(any.allows("http://anything.example", None));
        assert!(any.allows("null", None));
    }
}
