//! The live run page at `GET /` (docs/server.md, "The live run page"): its HTML and
//! files with their content types and security headers, next to the protocol's routes,
//! and the `page = false` switch.

use crate::common::{Producer, config, http_client, start};

/// GET `path`; status, content type, CSP header and body.
async fn get(base: &str, path: &str) -> (u16, String, Option<String>, String) {
    let r = http_client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("request");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii header").to_owned())
    };
    let content_type = header("content-type").unwrap_or_default();
    let csp = header("content-security-policy");
    (
        r.status().as_u16(),
        content_type,
        csp,
        r.text().await.expect("body"),
    )
}

/// The `/_page/…` paths the HTML refers to in `src="…"` and `href="…"`.
fn referenced_assets(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            let value = &rest[..rest.find('"').expect("closing quote")];
            if value.starts_with("/_page/") {
                out.push(value.to_owned());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_their_types() {
    let server = start(config()).await;
    let base = server.http_url();
    let (status, ctype, csp, html) = get(&base, "/").await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(ctype, "text/html; charset=utf-8");
    let csp = csp.expect("the page carries a Content-Security-Policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(html.contains("<div id=\"root\">"), "{html}");
    let assets = referenced_assets(&html);
    assert_eq!(assets, ["/_page/page.css", "/_page/page.js"], "{html}");

    let (status, ctype, _, js) = get(&base, "/_page/page.js").await;
    assert_eq!(status, 200);
    assert_eq!(ctype, "text/javascript; charset=utf-8");
    // The bundle connects to this server's own stream endpoint.
    assert!(
        js.contains("/v1/stream"),
        "the script names the stream path"
    );
    let (status, ctype, _, css) = get(&base, "/_page/page.css").await;
    assert_eq!(status, 200);
    assert_eq!(ctype, "text/css; charset=utf-8");
    assert!(css.contains(".layout"), "{}", &css[..css.len().min(200)]);

    // HEAD is answered too; other methods and other paths under /_page/ are not.
    let head = http_client()
        .head(format!("{base}/"))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status().as_u16(), 200);
    let post = http_client()
        .post(format!("{base}/"))
        .send()
        .await
        .expect("POST");
    assert_eq!(post.status().as_u16(), 405);
    let (status, ctype, _, _) = get(&base, "/_page/other.js").await;
    assert_eq!((status, ctype.as_str()), (404, "application/json"));
    server.shutdown().await;
}

#[tokio::test]
async fn the_page_leaves_the_protocol_routes_alone() {
    let server = start(config()).await;
    let base = server.http_url();
    let p = Producer::new(&server);
    p.ok(
        "page-run",
        serde_json::json!([{ "type": "run.phase", "data": { "phase": "build" } }]),
    )
    .await;
    let (status, body) = p.get("/v1/runs/page-run").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["phase"], "build", "{body}");
    assert_eq!(get(&base, "/healthz").await.0, 200);
    assert_eq!(get(&base, "/metrics").await.0, 200);
    let (status, _, csp, _) = get(&base, "/v1/no-such-endpoint").await;
    assert_eq!(status, 404);
    assert_eq!(csp, None, "only the page carries the page's CSP");
    server.shutdown().await;
}

#[tokio::test]
async fn page_false_turns_the_page_off() {
    let mut c = config();
    c.set("page", "false").expect("page is a setting");
    let server = start(c).await;
    let base = server.http_url();
    for path in ["/", "/_page/page.js", "/_page/page.css"] {
        let (status, ctype, _, body) = get(&base, path).await;
        assert_eq!(
            (status, ctype.as_str()),
            (404, "application/json"),
            "{path}: {body}"
        );
    }
    assert_eq!(get(&base, "/healthz").await.0, 200);
    server.shutdown().await;
}
