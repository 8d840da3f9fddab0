//! Listing runs over HTTP (`features/server/listing.feature`, spec §4.7).
//!
//! The listing is optional (`RW-INGEST-25`, SHOULD): a target that answers
//! `GET /v1/runs` with 404 fails only the scenario of that SHOULD (a warning), and the
//! scenarios of what a listing must hold (`RW-INGEST-26` to `RW-INGEST-28`, which bind
//! only servers that serve it) are graded not implemented.

use serde_json::Value;

use super::{Registry, ServerWorld};
use crate::{
    runner::{StepFail, StepResultT},
    server::conn::clip,
};

/// What the limited token may read (`the server gives the limited token only runs
/// named "rwc-allowed-*"`).
const LIMITED_PREFIX: &str = "rwc-allowed-";

pub(super) fn register(r: &mut Registry) {
    r.step(
        "the producer lists runs with {s} with the limited token",
        lists_with_limited_token,
    );
    r.step("the producer lists runs with {s}", lists);
    r.step("the server serves the run listing", serves_listing);
    r.step("the listing holds no runs", holds_none);
    r.step("the listing holds the runs {rest}", holds);
    r.step(
        "the listing holds only runs the limited token allows",
        holds_only_allowed,
    );
}

/// `GET /v1/runs?QUERY`, `${…}` substituted (`${prefix}` is the prefix of this
/// scenario's run ids); a 404 is "not implemented".
async fn list(w: &mut ServerWorld, query: &str, token: Option<String>) -> StepResultT {
    let query = w.subst(query);
    let path = if query.is_empty() {
        "/v1/runs".to_owned()
    } else {
        format!("/v1/runs?{query}")
    };
    let a = w.http("GET", &path, token, None).await?;
    if a.status == 404 {
        return Err(StepFail::not_implemented(format!(
            "GET /v1/runs answered 404: the server does not serve the run listing (RW-INGEST-25, a SHOULD), so what a listing holds does not apply: {}",
            clip(&String::from_utf8_lossy(&a.body))
        )));
    }
    Ok(())
}

/// `the producer lists runs with {s}`
async fn lists(w: &mut ServerWorld, query: String) -> StepResultT {
    let t = w.token();
    list(w, &query, t).await
}

/// `the producer lists runs with {s} with the limited token`
async fn lists_with_limited_token(w: &mut ServerWorld, query: String) -> StepResultT {
    let t = w.target.limited_token.clone();
    list(w, &query, t).await
}

/// `the server serves the run listing`: the listing of this scenario's runs was
/// answered 200 with a `RunList` (`RW-INGEST-25`).
async fn serves_listing(w: &mut ServerWorld) -> StepResultT {
    let prefix = w.subst("${prefix}");
    let t = w.token();
    let a = w
        .http("GET", &format!("/v1/runs?prefix={prefix}"), t, None)
        .await?;
    if a.status != 200 {
        return Err(StepFail::req(
            "RW-INGEST-25",
            format!(
                "GET /v1/runs?prefix={prefix} answered {} {}, not 200 with a run list",
                a.status,
                clip(&String::from_utf8_lossy(&a.body))
            ),
        ));
    }
    listed(w).map(drop)
}

/// The run ids and the whole body of the last answer, a 200 `RunList`.
fn listed(w: &ServerWorld) -> Result<(Vec<String>, Value), StepFail> {
    let a = w
        .last
        .clone()
        .ok_or_else(|| StepFail::msg("step error: no HTTP answer yet"))?;
    let body = a.json();
    let shown = clip(&String::from_utf8_lossy(&a.body));
    if a.status != 200 {
        return Err(StepFail::req(
            "RW-INGEST-26",
            format!("expected 200 with a run list, got {} {shown}", a.status),
        ));
    }
    let list: runwire_protocol::http::RunList =
        serde_json::from_value(body.clone()).map_err(|e| {
            StepFail::req(
                "RW-INGEST-26",
                format!("the answer is not a run list ({e}): {shown}"),
            )
        })?;
    Ok((
        list.runs
            .into_iter()
            .map(|r| r.run_id.as_str().to_owned())
            .collect(),
        body,
    ))
}

/// `the listing holds no runs`
async fn holds_none(w: &mut ServerWorld) -> StepResultT {
    let (ids, body) = listed(w)?;
    if !ids.is_empty() {
        return Err(StepFail::req(
            "RW-INGEST-26",
            format!(
                "expected no runs, got {ids:?} in {}",
                clip(&body.to_string())
            ),
        ));
    }
    Ok(())
}

/// `the listing holds the runs "A", "B"`: exactly these runs, in this order.
async fn holds(w: &mut ServerWorld, rest: String) -> StepResultT {
    let want: Vec<String> = rest
        .split(',')
        .map(|a| a.trim().trim_matches('"').to_owned())
        .filter(|a| !a.is_empty())
        .map(|a| w.run_id(&a))
        .collect();
    let (ids, body) = listed(w)?;
    if ids != want {
        return Err(StepFail::req(
            "RW-INGEST-26",
            format!(
                "expected the runs {want:?} in this order, got {ids:?} in {}",
                clip(&body.to_string())
            ),
        ));
    }
    Ok(())
}

/// `the listing holds only runs the limited token allows`
async fn holds_only_allowed(w: &mut ServerWorld) -> StepResultT {
    let (ids, _) = listed(w)?;
    if let Some(bad) = ids.iter().find(|id| !id.starts_with(LIMITED_PREFIX)) {
        return Err(StepFail::req(
            "RW-INGEST-28",
            format!(
                "the listing for the limited token (runs {LIMITED_PREFIX}* only) shows run {bad}"
            ),
        ));
    }
    Ok(())
}
