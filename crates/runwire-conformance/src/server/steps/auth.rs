//! Authentication and authorization (`features/server/auth.feature`): what the
//! server requires, tokens in every place a client or producer may put one, limited,
//! expiring and not-yet-valid tokens.

use std::time::Duration;

use runwire_mock::TimingMiss;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{ANSWER_WAIT_MS, Doc, R, Registry, ServerWorld, progress_event};
use crate::{
    runner::{StepFail, StepResultT},
    server::conn::{ConnectOptions, clip},
};

/// The step whose expired token is minted before the scenario's first step
/// (`ServerWorld::needs_expired_token`).
pub(super) const HELLO_EXPIRED: &str = "client {s} sends hello with an expired token";

pub(super) fn register(r: &mut Registry) {
    r.step(
        "client {s} is connected with a token that expires in {n} ms",
        connected_with_expiring_token,
    );
    r.step(HELLO_EXPIRED, hello_with_expired_token);
    r.step(
        "client {s} receives token_expired no later than 1000 ms after its token expired",
        token_expired_in_time,
    );
    r.step(
        "the producer posts to run {s} without a token:",
        posts_without_token,
    );
    r.step(
        "the producer appends {n} events to run {s} with an expired token",
        appends_with_expired_token,
    );
    r.step(
        "the producer sends GET {rest} with a token that is valid only from an hour ahead",
        get_with_token_not_yet_valid,
    );
    r.step(
        "client {s} connects and sends hello with a token that is valid only from an hour ahead",
        hello_with_token_not_yet_valid,
    );
    r.step(
        "the server requires authentication",
        requires_authentication,
    );
    r.step(
        "the server gives the limited token only runs named \"rwc-allowed-*\"",
        gives_the_limited_token_allowed_runs,
    );
    r.step(
        "the producer appends {n} events to run {s} with the limited token",
        appends_with_limited_token,
    );
    r.step(
        "the producer sends GET {rest} without a token",
        get_without_token,
    );
    r.step(
        "the producer sends GET {rest} with the limited token",
        get_with_limited_token,
    );
    r.step(
        "client {s} connects with an Authorization header",
        connects_with_authorization_header,
    );
    r.step(
        "client {s} connects with the token in the query string",
        connects_with_token_in_query,
    );
    r.step("client {s} sends hello with token {s}", hello_with_token);
    r.step(
        "client {s} sends hello without a token",
        hello_without_token,
    );
    r.step(
        "client {s} is connected with the limited token",
        connected_with_limited_token,
    );
    r.step(
        "nothing client {s} received contains the token {s}",
        token_not_echoed,
    );
}

/// A token for client `name` that expires `ttl` ms from now, whose expiry the world
/// notes; with `preminted`, the expired one minted before the scenario's first step.
async fn expiring_token(w: &mut ServerWorld, name: &str, ttl: u64, preminted: bool) -> R<String> {
    let Some(m) = w.target.token_minter.clone() else {
        return Err(StepFail::not_implemented(
            "no --expiring-token-cmd given: token-expiry scenarios need a way to mint expiring tokens",
        ));
    };
    // An already expired token was minted before the scenario opened its socket
    // (minting runs a command, whose run time must not count against the server's
    // hello deadline).
    let premint = if preminted {
        w.expired_token.take()
    } else {
        None
    };
    let tok = match premint {
        Some(t) => t,
        None => m
            .mint(ttl)
            .await
            .map_err(|e| StepFail::msg(format!("minting a token failed: {e}")))?,
    };
    // The token's own expiry (JWT `exp`, whole seconds) when readable.
    let exp = jwt_exp(&tok)
        .unwrap_or_else(|| std::time::SystemTime::now() + std::time::Duration::from_millis(ttl));
    w.expires.insert(name.to_owned(), exp);
    Ok(tok)
}

/// `client {s} is connected with a token that expires in {n} ms`
async fn connected_with_expiring_token(
    w: &mut ServerWorld,
    client: String,
    ttl: u64,
) -> StepResultT {
    let tok = expiring_token(w, &client, ttl, false).await?;
    w.connect(&client, ConnectOptions::default(), None).await?;
    w.hello(&client, vec!["1.0".into()], Some(tok), vec![])
        .await?;
    w.expect_welcome(&client).await?;
    Ok(())
}

/// `client {s} sends hello with an expired token`
async fn hello_with_expired_token(w: &mut ServerWorld, client: String) -> StepResultT {
    let tok = expiring_token(w, &client, 0, true).await?;
    w.hello(&client, vec!["1.0".into()], Some(tok), vec![])
        .await?;
    Ok(())
}

/// `client {s} receives token_expired no later than 1000 ms after its token expired`
async fn token_expired_in_time(w: &mut ServerWorld, client: String) -> StepResultT {
    let exp = *w
        .expires
        .get(&client)
        .ok_or_else(|| StepFail::msg("step error: no expiring token"))?;
    let left = exp
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let expired = Instant::now() + left;
    let due = expired + w.ms(1000);
    let end = due + w.ms(2000);
    let c = w.client(&client)?;
    let v = loop {
        match c.next_control(end).await {
            Ok(v) if v.get("type").and_then(Value::as_str) == Some("pong") => {}
            Ok(v) => break v,
            Err(e) => {
                let msg = format!(
                    "no token_expired error within 1000 ms after the token expired, nor {} ms later; {e}",
                    (end - due).as_millis()
                );
                return Err(if c.ended || c.closed.is_some() {
                    StepFail::req("RW-AUTH-8", msg)
                } else {
                    StepFail::timing(
                        "RW-AUTH-8",
                        msg,
                        TimingMiss::new(end - due, expired, Instant::now()),
                    )
                });
            }
        }
    };
    let now = Instant::now();
    if now > due {
        return Err(StepFail::timing(
            "RW-AUTH-8",
            format!(
                "the token_expired error came {} ms after the token expired (allowed: 1000 ms)",
                now.saturating_duration_since(expired).as_millis()
            ),
            TimingMiss::new(now - due, expired, now),
        ));
    }
    if v.get("code").and_then(Value::as_str) != Some("token_expired")
        || v.get("close_code").and_then(Value::as_u64) != Some(4103)
    {
        return Err(StepFail::req(
            "RW-AUTH-8",
            format!("expected token_expired with close_code 4103, got {v}"),
        ));
    }
    w.last_error.insert(client.clone(), v);
    let dl = w.dl(ANSWER_WAIT_MS);
    let c = w.client(&client)?;
    if !c.wait_end(dl).await || c.closed.as_ref().and_then(|x| x.0) != Some(4103) {
        return Err(StepFail::req(
            "RW-AUTH-8",
            format!("expected a close with 4103; {}", c.nothing_msg()),
        ));
    }
    Ok(())
}

/// `the producer posts to run {s} without a token:`
async fn posts_without_token(w: &mut ServerWorld, run: String, doc: Doc) -> StepResultT {
    w.post_doc(&run, &doc.0, None, &[]).await?;
    Ok(())
}

/// `the producer appends {n} events to run {s} with an expired token`
async fn appends_with_expired_token(w: &mut ServerWorld, n: u64, run: String) -> StepResultT {
    let m = w.target.token_minter.clone().ok_or_else(|| {
        StepFail::not_implemented(
            "no --expiring-token-cmd given: token-expiry scenarios need a way to mint expiring tokens",
        )
    })?;
    let tok = m
        .mint(0)
        .await
        .map_err(|e| StepFail::msg(format!("minting a token failed: {e}")))?;
    let evs = (1..=n).map(|i| progress_event(i, 0)).collect::<Vec<_>>();
    let id = w.run_id(&run);
    let body = serde_json::to_vec(&json!({ "events": evs })).unwrap_or_default();
    w.http(
        "POST",
        &format!("/v1/runs/{id}/events"),
        Some(tok),
        Some(body),
    )
    .await?;
    Ok(())
}

/// A token that becomes valid only an hour from now, minted before any socket opens
/// (minting never counts against the server's hello deadline).
async fn token_not_yet_valid(w: &mut ServerWorld) -> R<String> {
    let m = w.target.token_minter.clone().ok_or_else(|| {
        StepFail::not_implemented(
            "no token minter: not-yet-valid token scenarios need a way to mint tokens",
        )
    })?;
    m.mint_not_yet_valid(3_600_000)
        .await
        .map_err(|e| StepFail::msg(format!("minting a token failed: {e}")))?
        .ok_or_else(|| {
            StepFail::not_implemented("the token minter cannot mint a token that is not valid yet")
        })
}

/// `the producer sends GET {rest} with a token that is valid only from an hour ahead`
async fn get_with_token_not_yet_valid(w: &mut ServerWorld, path: String) -> StepResultT {
    let tok = token_not_yet_valid(w).await?;
    w.get(&path, Some(tok)).await
}

/// `client {s} connects and sends hello with a token that is valid only from an hour ahead`
async fn hello_with_token_not_yet_valid(w: &mut ServerWorld, client: String) -> StepResultT {
    let tok = token_not_yet_valid(w).await?;
    w.connect(&client, ConnectOptions::default(), None).await?;
    w.hello(&client, vec!["1.0".into()], Some(tok), vec![])
        .await
}

/// `the server requires authentication`
async fn requires_authentication(w: &mut ServerWorld) -> StepResultT {
    if w.target.token.is_none() {
        return Err(StepFail::not_implemented(
            "no --token given: authentication scenarios need a token the server accepts",
        ));
    }
    Ok(())
}

/// `the server gives the limited token only runs named "rwc-allowed-*"`
async fn gives_the_limited_token_allowed_runs(w: &mut ServerWorld) -> StepResultT {
    if w.target.limited_token.is_none() {
        return Err(StepFail::not_implemented(
            "no --limited-token given: per-run authorization scenarios need a token limited to runs named rwc-allowed-*",
        ));
    }
    Ok(())
}

/// `the producer appends {n} events to run {s} with the limited token`
async fn appends_with_limited_token(w: &mut ServerWorld, n: u64, run: String) -> StepResultT {
    let evs = (1..=n).map(|i| progress_event(i, 0)).collect::<Vec<_>>();
    let id = w.run_id(&run);
    let body = serde_json::to_vec(&json!({ "events": evs })).unwrap_or_default();
    let t = w.target.limited_token.clone();
    w.http("POST", &format!("/v1/runs/{id}/events"), t, Some(body))
        .await?;
    Ok(())
}

/// `the producer sends GET {rest} without a token`
async fn get_without_token(w: &mut ServerWorld, path: String) -> StepResultT {
    w.get(&path, None).await
}

/// `the producer sends GET {rest} with the limited token`
async fn get_with_limited_token(w: &mut ServerWorld, path: String) -> StepResultT {
    let tok = w.target.limited_token.clone();
    w.get(&path, tok).await
}

/// `client {s} connects with an Authorization header`
async fn connects_with_authorization_header(w: &mut ServerWorld, client: String) -> StepResultT {
    let t = w.token().unwrap_or_default();
    w.connect(
        &client,
        ConnectOptions {
            authorization: Some(format!("Bearer {t}")),
        },
        None,
    )
    .await
}

/// `client {s} connects with the token in the query string`
async fn connects_with_token_in_query(w: &mut ServerWorld, client: String) -> StepResultT {
    let t = w.token().unwrap_or_default();
    let url = format!("{}?token={t}&access_token={t}", w.target.ws_url);
    w.connect(&client, ConnectOptions::default(), Some(url))
        .await
}

/// `client {s} sends hello with token {s}`
async fn hello_with_token(w: &mut ServerWorld, client: String, token: String) -> StepResultT {
    let t = w.subst(&token);
    w.hello(&client, vec!["1.0".into()], Some(t), vec![]).await
}

/// `client {s} sends hello without a token`
async fn hello_without_token(w: &mut ServerWorld, client: String) -> StepResultT {
    w.hello(&client, vec!["1.0".into()], None, vec![]).await
}

/// `client {s} is connected with the limited token`
async fn connected_with_limited_token(w: &mut ServerWorld, client: String) -> StepResultT {
    let t = w.target.limited_token.clone();
    w.connected(&client, t).await
}

/// `nothing client {s} received contains the token {s}`
async fn token_not_echoed(w: &mut ServerWorld, client: String, token: String) -> StepResultT {
    let token = w.subst(&token);
    for e in w.rec.take() {
        if e.actor == client && e.dir == "in" && e.text.contains(&token) {
            return Err(StepFail::req(
                "RW-SEC-1",
                format!("the server echoed the token in {}", clip(&e.text)),
            ));
        }
    }
    Ok(())
}

/// The `exp` claim of a JWT, without verifying it.
fn jwt_exp(token: &str) -> Option<std::time::SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = b64url(payload)?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = v.get("exp")?.as_u64()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(exp))
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
