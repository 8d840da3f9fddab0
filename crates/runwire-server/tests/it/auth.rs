//! Authentication and authorization (spec §7).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use runwire_protocol::ServerMessage;
use runwire_server::{Role, ServerConfig, StaticToken};
use serde_json::json;

use crate::common::*;

const SECRET: &str = "test-secret-please-change";

fn auth_config() -> ServerConfig {
    let mut c = config();
    c.auth.tokens = vec![
        StaticToken {
            token: "prod-token".into(),
            roles: vec![Role::Producer],
            runs: vec![],
            name: Some("producer".into()),
        },
        StaticToken {
            token: "team-a-reader".into(),
            roles: vec![Role::Consumer],
            runs: vec!["team-a:*".into()],
            name: None,
        },
    ];
    c.auth.jwt_secret = Some(SECRET.into());
    c
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn jwt(claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("jwt")
}

#[tokio::test]
async fn rw_auth_4_missing_and_wrong_tokens_close_4003() {
    let s = start(auth_config()).await;
    let mut c = Client::connect(&s).await;
    c.send(json!({"type": "hello", "versions": ["1.0"]})).await;
    let e = c.expect_error_close("unauthorized", 4003).await;
    assert!(!e.retryable);
    let mut c = Client::connect(&s).await;
    c.send(json!({"type": "hello", "versions": ["1.0"], "token": "nope"}))
        .await;
    c.expect_error_close("unauthorized", 4003).await;
    // A JWT signed with another key.
    let bad = encode(
        &Header::default(),
        &json!({"exp": now() + 600, "role": "consumer"}),
        &EncodingKey::from_secret(b"other"),
    )
    .expect("jwt");
    let mut c = Client::connect(&s).await;
    c.send(json!({"type": "hello", "versions": ["1.0"], "token": bad}))
        .await;
    c.expect_error_close("unauthorized", 4003).await;
    // A producer-only token cannot open the stream.
    let mut c = Client::connect(&s).await;
    c.send(json!({"type": "hello", "versions": ["1.0"], "token": "prod-token"}))
        .await;
    c.expect_error_close("unauthorized", 4003).await;
}

#[tokio::test]
async fn rw_auth_6_forbidden_run_fails_alone() {
    let s = start(auth_config()).await;
    let p = Producer::new(&s).with_token("prod-token");
    let mut c = Client::connect(&s).await;
    c.send(
        json!({"type": "hello", "versions": ["1.0"], "token": "team-a-reader",
        "subscriptions": [{"run_id": "team-b:1"}, {"run_id": "team-a:1"}]}),
    )
    .await;
    assert!(matches!(c.msg().await, ServerMessage::Welcome(_)));
    let e = c.expect_error("forbidden").await;
    assert_eq!(
        e.run_id.map(|r| r.into_string()).as_deref(),
        Some("team-b:1")
    );
    assert!(!e.retryable);
    assert!(
        matches!(c.msg().await, ServerMessage::Subscribed(s) if s.run_id.as_str() == "team-a:1")
    );
    p.progress("team-b:1", 1).await;
    p.progress("team-a:1", 1).await;
    c.events_until(&run("team-a:1"), 0, 1).await;
}

#[tokio::test]
async fn rw_auth_3_header_token_and_hello_token_precedence() {
    let s = start(auth_config()).await;
    // Header only.
    let mut c = Client::connect_opts(&s, Some("team-a-reader"), None).await;
    c.send(json!({"type": "hello", "versions": ["1.0"]})).await;
    assert!(matches!(c.msg().await, ServerMessage::Welcome(_)));
    // Both: hello.token wins (it is wrong here, so the connection is refused).
    let mut c = Client::connect_opts(&s, Some("team-a-reader"), None).await;
    c.send(json!({"type": "hello", "versions": ["1.0"], "token": "wrong"}))
        .await;
    c.expect_error_close("unauthorized", 4003).await;
}

#[tokio::test]
async fn rw_auth_jwt_claims_role_and_run_patterns() {
    let s = start(auth_config()).await;
    let p = Producer::new(&s).with_token(&jwt(
        json!({"exp": now() + 600, "role": "producer", "runs": ["jobs:*"]}),
    ));
    assert_eq!(p.progress_status("jobs:1").await, 200);
    assert_eq!(p.progress_status("other").await, 403);
    let token =
        jwt(json!({"exp": now() + 600, "roles": ["consumer"], "runs": ["jobs:*"], "sub": "u-1"}));
    let mut c = Client::connect(&s).await;
    assert!(matches!(
        c.hello_token(&token).await,
        ServerMessage::Welcome(_)
    ));
    c.send(
        json!({"type": "subscribe", "subscriptions": [{"run_id": "jobs:1"}, {"run_id": "other"}]}),
    )
    .await;
    assert!(matches!(c.msg().await, ServerMessage::Subscribed(_)));
    c.expect_error("forbidden").await;
    c.events_until(&run("jobs:1"), 0, 1).await;
}

#[tokio::test]
async fn rw_auth_5_expired_token_at_hello_is_token_expired_4103() {
    let s = start(auth_config()).await;
    let token = jwt(json!({"exp": now() - 120, "role": "consumer"}));
    let mut c = Client::connect(&s).await;
    c.send(json!({"type": "hello", "versions": ["1.0"], "token": token}))
        .await;
    let e = c.expect_error_close("token_expired", 4103).await;
    assert!(e.retryable);
}

#[tokio::test]
async fn rw_auth_8_token_expiring_mid_stream_closes_4103() {
    let s = start(auth_config()).await;
    let p = Producer::new(&s).with_token("prod-token");
    let token = jwt(json!({"exp": now() + 2, "role": "consumer"}));
    let mut c = Client::connect(&s).await;
    c.send(json!({"type": "hello", "versions": ["1.0"], "token": token, "subscriptions": [{"run_id": "x"}]}))
        .await;
    assert!(matches!(c.msg().await, ServerMessage::Welcome(_)));
    assert!(matches!(c.msg().await, ServerMessage::Subscribed(_)));
    p.progress("x", 1).await;
    c.expect_error_close("token_expired", 4103).await;
}

#[tokio::test]
async fn rw_auth_11_http_requires_tokens_and_roles() {
    let s = start(auth_config()).await;
    assert_eq!(Producer::new(&s).progress_status("r").await, 401);
    assert_eq!(
        Producer::new(&s)
            .with_token("bogus")
            .progress_status("r")
            .await,
        401
    );
    // A consumer token may read but not append.
    assert_eq!(
        Producer::new(&s)
            .with_token("team-a-reader")
            .progress_status("team-a:1")
            .await,
        403
    );
    let p = Producer::new(&s).with_token("prod-token");
    assert_eq!(p.progress_status("team-a:1").await, 200);
    let (st, _) = Producer::new(&s)
        .with_token("team-a-reader")
        .get("/v1/runs/team-a:1")
        .await;
    assert_eq!(st, 200);
    let (st, body) = Producer::new(&s)
        .with_token("team-a-reader")
        .get("/v1/runs/team-a:1/events")
        .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = Producer::new(&s).get("/v1/runs/team-a:1").await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    // healthz needs no token (RW-INGEST-22).
    let (st, body) = Producer::new(&s).get("/healthz").await;
    assert_eq!((st, body), (200, json!({"status": "ok"})));
    assert!(
        s.metrics()
            .auth_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 4
    );
}

#[tokio::test]
async fn no_auth_refuses_public_bind_and_allows_loopback() {
    let mut c = config();
    c.listen = "0.0.0.0:0".parse().expect("addr");
    let err =
        runwire_server::Server::bind(c, std::sync::Arc::new(runwire_server::MemoryStore::new()))
            .await
            .expect_err("public bind without auth is refused");
    assert!(err.to_string().contains("without authentication"), "{err}");
    let mut c = auth_config();
    c.listen = "0.0.0.0:0".parse().expect("addr");
    let s = start(c).await;
    s.shutdown().await;
}

/// A config whose JWT leeway is `leeway_s`.
fn auth_config_leeway(leeway_s: u64) -> ServerConfig {
    let mut c = auth_config();
    c.auth.jwt_leeway_s = leeway_s;
    c
}

#[tokio::test]
async fn rw_auth_14_not_yet_valid_tokens_are_unauthorized() {
    let s = start(auth_config()).await;
    // Valid only from an hour ahead (`nbf`), or issued an hour ahead (`iat`).
    for claims in [
        json!({"exp": now() + 7200, "nbf": now() + 3600, "role": ["consumer", "producer"]}),
        json!({"exp": now() + 7200, "iat": now() + 3600, "role": ["consumer", "producer"]}),
    ] {
        let token = jwt(claims.clone());
        let mut c = Client::connect(&s).await;
        c.send(json!({"type": "hello", "versions": ["1.0"], "token": token}))
            .await;
        let e = c.expect_error_close("unauthorized", 4003).await;
        assert!(!e.retryable, "{claims}");
        assert!(e.message.contains("not valid yet"), "{}", e.message);
        let (st, body) = Producer::new(&s).with_token(&token).get("/v1/runs/r").await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{claims}"
        );
        assert_eq!(
            Producer::new(&s)
                .with_token(&token)
                .progress_status("r")
                .await,
            401
        );
    }
    // Within the default clock skew (60 s): accepted.
    let token = jwt(
        json!({"exp": now() + 600, "nbf": now() + 20, "iat": now() + 20, "role": ["consumer", "producer"]}),
    );
    let mut c = Client::connect(&s).await;
    assert!(matches!(
        c.hello_token(&token).await,
        ServerMessage::Welcome(_)
    ));
    assert_eq!(
        Producer::new(&s)
            .with_token(&token)
            .progress_status("r")
            .await,
        200
    );
    // A past nbf and iat are fine.
    let token = jwt(
        json!({"exp": now() + 600, "nbf": now() - 600, "iat": now() - 600, "role": "consumer"}),
    );
    let mut c = Client::connect(&s).await;
    assert!(matches!(
        c.hello_token(&token).await,
        ServerMessage::Welcome(_)
    ));
}

#[tokio::test]
async fn rw_auth_14_leeway_is_configurable() {
    let s = start(auth_config_leeway(0)).await;
    let token = jwt(json!({"exp": now() + 600, "nbf": now() + 20, "role": "consumer"}));
    let mut c = Client::connect(&s).await;
    c.send(json!({"type": "hello", "versions": ["1.0"], "token": token}))
        .await;
    c.expect_error_close("unauthorized", 4003).await;
    let s = start(auth_config_leeway(120)).await;
    let token = jwt(json!({"exp": now() + 600, "nbf": now() + 90, "role": "consumer"}));
    let mut c = Client::connect(&s).await;
    assert!(matches!(
        c.hello_token(&token).await,
        ServerMessage::Welcome(_)
    ));
}

#[tokio::test]
async fn rw_auth_15_expired_token_over_http_is_401_token_expired_retryable() {
    let s = start(auth_config()).await;
    let token = jwt(json!({"exp": now() - 120, "role": ["consumer", "producer"]}));
    let (st, body) = Producer::new(&s)
        .with_token(&token)
        .append(
            "r",
            json!([{"type": "run.status", "data": {"status": "running"}}]),
        )
        .await;
    assert_eq!(
        (
            st,
            body["error"]["code"].as_str(),
            body["error"]["retryable"].as_bool()
        ),
        (401, Some("token_expired"), Some(true)),
        "{body}"
    );
    let (st, body) = Producer::new(&s).with_token(&token).get("/v1/runs/r").await;
    assert_eq!(
        (
            st,
            body["error"]["code"].as_str(),
            body["error"]["retryable"].as_bool()
        ),
        (401, Some("token_expired"), Some(true)),
        "{body}"
    );
}

#[test]
fn rw_auth_14_leeway_defaults_to_60_s_and_is_set_in_toml() {
    assert_eq!(
        ServerConfig::default().auth.jwt_leeway_s,
        runwire_protocol::defaults::TOKEN_CLOCK_SKEW_S
    );
    assert_eq!(runwire_protocol::defaults::TOKEN_CLOCK_SKEW_S, 60);
    let c =
        ServerConfig::from_toml("[auth]\njwt_secret = \"s\"\njwt_leeway_s = 5\n").expect("toml");
    assert_eq!(c.auth.jwt_leeway_s, 5);
    // Only the leeway given: the other auth keys keep their defaults.
    let c = ServerConfig::from_toml("[auth]\njwt_leeway_s = 7\n").expect("toml");
    assert_eq!(c.auth.jwt_leeway_s, 7);
    assert!(!c.auth.enabled());
    let mut c = ServerConfig::default();
    c.set("auth.jwt_leeway_s", "9").expect("set");
    assert_eq!(c.auth.jwt_leeway_s, 9);
}

#[tokio::test]
async fn rw_sec_18_a_hello_over_the_identity_limit_is_refused_and_the_others_stay() {
    let mut c = auth_config();
    c.max_connections_per_identity = 2;
    let server = start(c).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut a = Client::connect(&server).await;
        assert!(matches!(
            a.hello_token("team-a-reader").await,
            ServerMessage::Welcome(_)
        ));
        held.push(a);
    }
    // Another identity has its own count.
    let mut other = Client::connect(&server).await;
    let token = jwt(json!({"sub": "someone-else", "exp": now() + 600, "roles": ["consumer"]}));
    assert!(matches!(
        other.hello_token(&token).await,
        ServerMessage::Welcome(_)
    ));
    let mut third = Client::connect(&server).await;
    third
        .send(json!({"type": "hello", "versions": ["1.0"], "token": "team-a-reader"}))
        .await;
    let e = third.expect_error_close("server_overloaded", 4104).await;
    assert!(e.retry_after_ms.is_some(), "{e:?}");
    assert!(e.retryable, "{e:?}");
    assert_eq!(
        server
            .metrics()
            .refused_identity_limit
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The identity's connections are untouched, and a closed one frees its place.
    held[0]
        .send(json!({"type": "subscribe", "subscriptions": [{"run_id": "team-a:1"}]}))
        .await;
    assert!(matches!(held[0].msg().await, ServerMessage::Subscribed(_)));
    held.pop();
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = Client::connect(&server).await;
        match again.hello_token("team-a-reader").await {
            ServerMessage::Welcome(_) => break,
            // The server notices the close asynchronously.
            ServerMessage::Error(e) if e.code.as_str() == "server_overloaded" => {
                assert!(
                    tokio::time::Instant::now() < until,
                    "the place was not freed"
                );
                tokio::task::yield_now().await;
            }
            other => panic!("{other:?}"),
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn without_auth_connections_are_not_counted_per_identity() {
    let mut c = config();
    c.max_connections_per_identity = 1;
    let server = start(c).await;
    let mut a = Client::connect(&server).await;
    a.hello(json!([])).await;
    let mut b = Client::connect(&server).await;
    b.hello(json!([])).await;
    server.shutdown().await;
}

#[tokio::test]
async fn rw_ingest_28_a_listing_shows_only_the_runs_the_token_may_read() {
    let server = start(auth_config()).await;
    let prod = Producer::new(&server).with_token("prod-token");
    for run in ["team-a:1", "team-a:2", "team-b:1", "team-b:2", "team-c:1"] {
        prod.progress(run, 1).await;
    }
    let (st, v) = Producer::new(&server).get("/v1/runs").await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (401, json!("unauthorized"))
    );
    let (st, v) = prod.get("/v1/runs?prefix=team-").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["runs"].as_array().expect("runs").len(), 5, "{v}");
    // The scoped reader sees only its runs, paged as if the others did not exist.
    let reader = Producer::new(&server).with_token("team-a-reader");
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| r["run_id"].as_str().expect("id").to_owned())
            .collect()
    };
    let (st, v) = reader.get("/v1/runs?prefix=team-").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(ids(&v), ["team-a:1", "team-a:2"]);
    assert_eq!(v["has_more"], json!(false), "{v}");
    let (_, v) = reader.get("/v1/runs?limit=1").await;
    assert_eq!(
        (ids(&v), v["has_more"].clone()),
        (vec!["team-a:1".to_owned()], json!(true))
    );
    let (_, v) = reader.get("/v1/runs?limit=1&after=team-a:1").await;
    assert_eq!(
        (ids(&v), v["has_more"].clone()),
        (vec!["team-a:2".to_owned()], json!(false))
    );
    let (st, v) = reader.get("/v1/runs?prefix=team-b").await;
    assert_eq!((st, ids(&v)), (200, Vec::<String>::new()), "not 403: {v}");
    server.shutdown().await;
}
