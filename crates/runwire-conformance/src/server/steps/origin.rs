//! Origins and content types (`features/server/origin.feature`): appends and upgrades
//! a browser on another site could send.

use super::{ANSWER_WAIT_MS, Doc, R, Registry, ServerWorld};
use crate::{
    http::HttpAnswer,
    runner::{StepFail, StepResultT},
    server::conn::clip,
};

pub(super) fn register(r: &mut Registry) {
    r.step(
        "the producer posts to run {s} with Origin {s}:",
        posts_with_origin,
    );
    r.step(
        "the producer posts to run {s} with content type {s}:",
        posts_with_content_type,
    );
    r.step(
        "a connection upgrades with Origin {s}",
        upgrades_with_origin,
    );
}

impl ServerWorld {
    /// A WebSocket upgrade of the stream endpoint with `Origin: origin`: the answer
    /// (status 101 with no body when the server upgraded; the socket is then closed).
    async fn upgrade_from(&mut self, origin: &str) -> R<HttpAnswer> {
        use tokio_tungstenite::tungstenite::{Error as WsError, client::IntoClientRequest};
        let mut req = self
            .target
            .ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| StepFail::msg(format!("step error: {e}")))?;
        let value = origin
            .parse()
            .map_err(|e| StepFail::msg(format!("step error: Origin {origin:?}: {e}")))?;
        req.headers_mut().insert("origin", value);
        self.rec.out(
            "producer",
            &format!("GET {} (upgrade) [Origin: {origin}]", self.target.ws_url),
        );
        let dl = self.dl(ANSWER_WAIT_MS);
        let upgrade = tokio_tungstenite::connect_async_tls_with_config(
            req,
            None,
            true,
            Some(crate::net::connector()),
        );
        let a = match tokio::time::timeout_at(dl, upgrade).await {
            Err(_) => {
                return Err(StepFail::msg(format!(
                    "no answer to the upgrade within {ANSWER_WAIT_MS} ms"
                )));
            }
            Ok(Ok((mut ws, resp))) => {
                let _ = ws.close(None).await;
                HttpAnswer {
                    status: resp.status().as_u16(),
                    headers: Vec::new(),
                    body: Vec::new(),
                }
            }
            Ok(Err(WsError::Http(resp))) => HttpAnswer {
                status: resp.status().as_u16(),
                headers: resp
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_ascii_lowercase(),
                            v.to_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect(),
                body: resp.body().clone().unwrap_or_default(),
            },
            Ok(Err(e)) => return Err(StepFail::msg(format!("the upgrade failed: {e}"))),
        };
        self.rec.inn(
            "producer",
            &format!("{} {}", a.status, clip(&String::from_utf8_lossy(&a.body))),
        );
        Ok(a)
    }
}

/// `the producer posts to run {s} with Origin {s}:`
async fn posts_with_origin(
    w: &mut ServerWorld,
    run: String,
    origin: String,
    doc: Doc,
) -> StepResultT {
    let token = w.token();
    w.post_doc(&run, &doc.0, token, &[("Origin".to_owned(), origin)])
        .await?;
    Ok(())
}

/// `the producer posts to run {s} with content type {s}:`
async fn posts_with_content_type(
    w: &mut ServerWorld,
    run: String,
    content_type: String,
    doc: Doc,
) -> StepResultT {
    let token = w.token();
    w.post_doc(
        &run,
        &doc.0,
        token,
        &[("Content-Type".to_owned(), content_type)],
    )
    .await?;
    Ok(())
}

/// `a connection upgrades with Origin {s}`
async fn upgrades_with_origin(w: &mut ServerWorld, origin: String) -> StepResultT {
    let a = w.upgrade_from(&origin).await?;
    w.last = Some(a);
    Ok(())
}
