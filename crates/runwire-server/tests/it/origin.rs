//! Origins and browsers (spec §17): `RW-SEC-2` (the upgrade), `RW-SEC-17` (the HTTP
//! API and CORS), `RW-INGEST-24` (appends declared JSON).

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::StatusCode};

use crate::common::{Producer, config, start};

const FOREIGN: &str = "https://foreign.example";

/// Upgrades with `Origin: origin`; the HTTP status of the answer (101 when accepted)
/// and its body.
async fn upgrade_from(server: &runwire_server::RunningServer, origin: &str) -> (u16, String) {
    let mut req = server.ws_url().into_client_request().expect("request");
    req.headers_mut()
        .insert("origin", origin.parse().expect("header"));
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, resp)) => (resp.status().as_u16(), String::new()),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("upgrade: {e}"),
    }
}

#[tokio::test]
async fn rw_sec_2_a_foreign_origin_is_refused_before_the_upgrade() {
    let server = start(config()).await;
    let (status, body) = upgrade_from(&server, FOREIGN).await;
    assert_eq!(status, 403, "{body}");
    let v: Value = serde_json::from_str(&body).expect("an HttpError body");
    assert_eq!(v["error"]["code"], "forbidden", "{v}");
    // The server's own origin, and no Origin at all (not a browser), are accepted.
    let own = server.http_url();
    assert_eq!(upgrade_from(&server, &own).await.0, 101);
    assert!(
        tokio_tungstenite::connect_async(server.ws_url())
            .await
            .is_ok()
    );
    let metrics = Producer::new(&server).get_text("/metrics").await;
    assert!(
        metrics.contains("runwire_origin_refusals_total 1"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn rw_sec_2_listed_origins_and_the_wildcard_are_accepted() {
    let mut c = config();
    c.allowed_origins = vec![FOREIGN.into()];
    let server = start(c).await;
    assert_eq!(upgrade_from(&server, FOREIGN).await.0, 101);
    assert_eq!(upgrade_from(&server, "https://other.example").await.0, 403);
    server.shutdown().await;
    let mut c = config();
    c.allowed_origins = vec!["*".into()];
    let server = start(c).await;
    assert_eq!(upgrade_from(&server, "https://other.example").await.0, 101);
    server.shutdown().await;
}

#[tokio::test]
async fn rw_sec_17_a_foreign_origin_appends_and_reads_nothing() {
    let server = start(config()).await;
    let p = Producer::new(&server);
    p.progress("r", 1).await;
    let http = crate::common::http_client();
    let r = http
        .post(format!("{}/v1/runs/r/events", server.http_url()))
        .header("origin", FOREIGN)
        .header("content-type", "application/json")
        .body(
            json!({"events": [{"type": "log.line", "data": {"level": "info", "message": "x"}}]})
                .to_string(),
        )
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "forbidden");
    assert_eq!(v["error"]["retryable"], false);
    let r = http
        .get(format!("{}/v1/runs/r", server.http_url()))
        .header("origin", FOREIGN)
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // Nothing was appended.
    let (s, h) = p.get("/v1/runs/r/events").await;
    assert_eq!(s, 200);
    assert_eq!(h["events"].as_array().map(Vec::len), Some(1), "{h}");
    // 404 and 405 come before the origin (RW-INGEST-23).
    let r = http
        .get(format!("{}/v1/nothing", server.http_url()))
        .header("origin", FOREIGN)
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = http
        .delete(format!("{}/v1/runs/r", server.http_url()))
        .header("origin", FOREIGN)
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    server.shutdown().await;
}

#[tokio::test]
async fn rw_sec_17_allowed_origins_get_cors_answers_and_preflights() {
    let mut c = config();
    c.allowed_origins = vec![FOREIGN.into()];
    let server = start(c).await;
    let http = crate::common::http_client();
    let url = format!("{}/v1/runs/r/events", server.http_url());
    let pre = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", FOREIGN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("http");
    assert!(pre.status().is_success(), "{}", pre.status());
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], FOREIGN);
    let methods = h["access-control-allow-methods"].to_str().expect("text");
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let headers = h["access-control-allow-headers"]
        .to_str()
        .expect("text")
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert!(h.get("access-control-allow-credentials").is_none());
    let r = http
        .post(&url)
        .header("origin", FOREIGN)
        .header("content-type", "application/json")
        .body(
            json!({"events": [{"type": "log.line", "data": {"level": "info", "message": "x"}}]})
                .to_string(),
        )
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["access-control-allow-origin"], FOREIGN);
    // A preflight from another origin gets no permission.
    let pre = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://other.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("http");
    assert!(pre.headers().get("access-control-allow-origin").is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn rw_ingest_24_an_append_not_declared_json_is_refused() {
    let server = start(config()).await;
    let p = Producer::new(&server);
    p.progress("r", 1).await;
    let http = crate::common::http_client();
    let body = json!({"events": [{"type": "log.line", "data": {"level": "info", "message": "x"}}]})
        .to_string();
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut r = http
            .post(format!("{}/v1/runs/r/events", server.http_url()))
            .body(body.clone());
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        let r = r.send().await.expect("http");
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"]["code"], "invalid_request", "{v}");
        assert_eq!(v["error"]["retryable"], false);
    }
    // Parameters and case do not matter.
    let r = http
        .post(format!("{}/v1/runs/r/events", server.http_url()))
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), StatusCode::OK);
    let (_, h) = p.get("/v1/runs/r/events").await;
    assert_eq!(h["events"].as_array().map(Vec::len), Some(2), "{h}");
    server.shutdown().await;
}

#[test]
fn allowed_origins_are_validated_and_set_comma_separated() {
    let mut c = runwire_server::config::ServerConfig::default();
    c.set(
        "allowed_origins",
        "https://a.example, http://b.example:8080",
    )
    .expect("set");
    assert_eq!(
        c.allowed_origins,
        vec!["https://a.example", "http://b.example:8080"]
    );
    let err = c
        .set("allowed_origins", "https://a.example/app")
        .expect_err("a path is not an origin");
    assert!(err.to_string().contains("allowed_origins"), "{err}");
    c.apply_env([("RUNWIRE_ALLOWED_ORIGINS".to_owned(), "*".to_owned())])
        .expect("env");
    assert_eq!(c.allowed_origins, vec!["*"]);
}
