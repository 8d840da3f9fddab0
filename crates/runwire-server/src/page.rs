//! The live run page at `GET /` (docs/server.md, "The live run page"): a small web
//! application, built from `clients/typescript/page/` with the TypeScript client and its
//! React binding, that follows one run over this server's own `/v1/stream`. It is not
//! part of the protocol; `page = false` turns it off.
//!
//! The built files are committed under `assets/page/` and embedded here, so that building
//! the server needs no Node; `npm run page:check` (in `clients/typescript`) fails when
//! they differ from a fresh build.

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

/// Where the page's script is served.
pub(crate) const SCRIPT_PATH: &str = "/_page/page.js";
/// Where the page's style sheet is served.
pub(crate) const STYLE_PATH: &str = "/_page/page.css";

const INDEX_HTML: &str = include_str!("../assets/page/index.html");
const PAGE_JS: &str = include_str!("../assets/page/page.js");
const PAGE_CSS: &str = include_str!("../assets/page/page.css");

/// What the page may load and connect to: its own script and style sheet, and its own
/// origin (the stream, `ws:`/`wss:` included); no inline script, no frames, no plugins.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The file names carry no hash: browsers revalidate, so a new server's page is
    // never mixed with an old one's script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `GET /`: the page.
pub(crate) async fn index() -> Response {
    let mut r = asset("text/html; charset=utf-8", INDEX_HTML);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    r.headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// `GET /_page/page.js`: the page's script (an ES module).
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

/// `GET /_page/page.css`: the page's style sheet.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", PAGE_CSS)
}
