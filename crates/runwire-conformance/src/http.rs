//! A deliberately small HTTP/1.1 client for the producer API: one request per
//! connection (`Connection: close`), `Content-Length` or chunked bodies. The runner
//! must judge any server's raw answers, so it parses nothing beyond HTTP itself.
//!
//! Why not hyper's client: scenarios dictate requests byte for byte, including ones
//! a well-behaved client never sends (a request line with a path as the scenario
//! writes it, a body that is not JSON, a body without any `Content-Type`, header
//! lines as given), and the server's answer must be judged exactly as it came, one
//! fresh connection per request so no pooling hides per-connection behaviour.
//! hyper's client builds requests from typed `Uri` and `HeaderValue`s that validate
//! and normalise, pools connections, and needs its `client` feature and a connection
//! driver; these ~100 lines of writing bytes and reading them back serve better.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP answer.
#[derive(Debug, Clone)]
pub(crate) struct HttpAnswer {
    /// The status code.
    pub(crate) status: u16,
    /// Header names (lower-case) and values.
    pub(crate) headers: Vec<(String, String)>,
    /// The body.
    pub(crate) body: Vec<u8>,
}

impl HttpAnswer {
    /// The body as JSON (`Null` when it is not JSON).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `http://host:port/base` (or `https://`) into `(host:port, base path without
/// trailing /)`.
pub(crate) fn split_base(url: &str) -> Result<(String, String), String> {
    let ep = endpoint(url)?;
    Ok((ep.authority, ep.path.trim_end_matches('/').to_owned()))
}

fn endpoint(url: &str) -> Result<crate::net::Endpoint, String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "{url:?}: only http:// and https:// ingest URLs are supported"
        ));
    }
    crate::net::Endpoint::parse(url)
}

/// Sends one request and reads the whole answer, within `limit`.
pub(crate) async fn request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    limit: Duration,
) -> Result<HttpAnswer, String> {
    request_with(base, method, path, token, body, &[], limit).await
}

/// [`request`] with extra header lines (`Origin`, …). A `Content-Type` among them
/// replaces the default `application/json` of a request with a body; one with an
/// empty value sends the body without any.
pub(crate) async fn request_with(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    headers: &[(String, String)],
    limit: Duration,
) -> Result<HttpAnswer, String> {
    let ep = endpoint(base)?;
    let (host, prefix) = (&ep.authority, ep.path.trim_end_matches('/'));
    let fut = async {
        let mut s = crate::net::connect(&ep)
            .await
            .map_err(|e| format!("cannot connect to {host}: {e}"))?;
        let mut head = format!(
            "{method} {prefix}{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n"
        );
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let own_type = headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        for (n, v) in headers {
            if !v.is_empty() {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
        }
        if let Some(b) = body {
            if !own_type {
                head.push_str("Content-Type: application/json\r\n");
            }
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        if let Some(b) = body {
            s.write_all(b).await.map_err(|e| format!("write: {e}"))?;
        }
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf).await {
            Ok(_) => {}
            // A TLS server that closes without `close_notify` after a whole answer
            // truncated nothing: `parse` judges what arrived.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        parse(&buf)
    };
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| format!("no HTTP answer within {} ms", limit.as_millis()))?
}

fn parse(buf: &[u8]) -> Result<HttpAnswer, String> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no complete HTTP head")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked { dechunk(raw)? } else { raw.to_vec() };
    Ok(HttpAnswer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let nl = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunked body")?;
        let size_str = String::from_utf8_lossy(&raw[..nl]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_str:?}"))?;
        raw = &raw[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let a = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.body, b"{}");
        let c = parse(b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n3\r\na\":\r\n2\r\n1}\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(c.status, 409);
        assert_eq!(c.body, b"{\"a\":1}");
        assert!(parse(b"garbage").is_err());
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            split_base("http://127.0.0.1:8080/").unwrap(),
            ("127.0.0.1:8080".into(), String::new())
        );
        assert_eq!(
            split_base("http://h/api").unwrap(),
            ("h:80".into(), "/api".into())
        );
        assert_eq!(
            split_base("https://h/").unwrap(),
            ("h:443".into(), String::new())
        );
        assert!(split_base("ws://h").is_err());
    }
}
