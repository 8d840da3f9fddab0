//! The options of a Redis store, read from the query of its URL.

use super::StoreError;

/// Options of a [`RedisStore`](super::RedisStore), given as query parameters of the store URL
/// (`redis://HOST:PORT/DB?retain_events=200000&ttl_secs=86400`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Key prefix (`prefix=`), default `rw`.
    pub prefix: String,
    /// Events a run's stream keeps at least (`retain_events=`); 0 keeps every event.
    /// Never below the replay window (plus a margin), so that a cursor the server
    /// replays is always retained.
    pub retain_events: u64,
    /// Seconds a run's keys live after its last append (`ttl_secs=`); 0 = forever.
    pub ttl_secs: u64,
    /// Upper bound for one Redis command, in ms (`timeout_ms=`).
    pub timeout_ms: u64,
    /// Upper bound for connecting, in ms (`connect_timeout_ms=`).
    pub connect_timeout_ms: u64,
    /// Replicas that must confirm an append before it is acknowledged
    /// (`wait_replicas=`), 0 = none.
    pub wait_replicas: u32,
    /// How long `WAIT` waits for them, in ms (`wait_timeout_ms=`).
    pub wait_timeout_ms: u64,
    /// Store the folded snapshot back every this many events (`snapshot_every=`).
    pub snapshot_every: u64,
    /// How long one `XREAD BLOCK` waits, in ms (`block_ms=`).
    pub block_ms: u64,
}

impl RedisOptions {
    /// The defaults for a server whose replay window is `replay_window_events`.
    pub fn for_replay_window(replay_window_events: u64) -> Self {
        Self {
            prefix: "rw".into(),
            retain_events: min_retain(replay_window_events),
            ttl_secs: 7 * 24 * 3600,
            timeout_ms: 5_000,
            connect_timeout_ms: 2_000,
            wait_replicas: 0,
            wait_timeout_ms: 1_000,
            snapshot_every: 1_000,
            block_ms: 5_000,
        }
    }
}

/// The least retention that keeps every replayable cursor replayable: the window
/// plus 10 % (at least 1000 events) for events appended while a replay runs.
pub(super) fn min_retain(window: u64) -> u64 {
    window.saturating_add((window / 10).max(1_000))
}

/// Splits `redis://…?opt=v&…` into the URL for the Redis client and the options.
pub(super) fn parse_url(
    url: &str,
    replay_window_events: u64,
) -> Result<(String, RedisOptions), StoreError> {
    let mut opts = RedisOptions::for_replay_window(replay_window_events);
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut rest = Vec::new();
    let bad = |k: &str, v: &str| {
        StoreError::Unavailable(format!(
            "redis store option {k}={v:?} is not valid: expected a non-negative integer"
        ))
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let num = || v.parse::<u64>().map_err(|_| bad(k, v));
        match k {
            "prefix" => {
                if v.is_empty() || v.contains(['{', '}', ' ']) {
                    return Err(StoreError::Unavailable(format!(
                        "redis store option prefix={v:?} must be non-empty without braces or spaces"
                    )));
                }
                opts.prefix = v.to_owned();
            }
            "retain_events" => opts.retain_events = num()?,
            "ttl_secs" => opts.ttl_secs = num()?,
            "timeout_ms" => opts.timeout_ms = num()?.max(1),
            "connect_timeout_ms" => opts.connect_timeout_ms = num()?.max(1),
            "wait_replicas" => {
                opts.wait_replicas = u32::try_from(num()?).map_err(|_| bad(k, v))?;
            }
            "wait_timeout_ms" => opts.wait_timeout_ms = num()?,
            "snapshot_every" => opts.snapshot_every = num()?.max(1),
            "block_ms" => opts.block_ms = num()?.max(1),
            _ => rest.push(pair),
        }
    }
    if opts.retain_events != 0 && opts.retain_events < min_retain(replay_window_events) {
        let least = min_retain(replay_window_events);
        tracing::warn!(
            requested = opts.retain_events,
            using = least,
            "retain_events is below the replay window plus margin; raised so that every replayable cursor stays retained"
        );
        opts.retain_events = least;
    }
    let base = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((base, opts))
}

/// The seed nodes of a Redis Cluster URL, each as a `redis://` URL, or `None` for
/// any other URL: `redis-cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…][/][?…]`
/// (the credentials and the client's query parameters apply to every node; a cluster
/// has one database, so no `/DB`).
pub(super) fn cluster_nodes(base: &str) -> Result<Option<Vec<String>>, StoreError> {
    let Some(rest) = base.strip_prefix("redis-cluster://") else {
        return Ok(None);
    };
    let bad = |why: &str| {
        StoreError::Unavailable(format!(
            "redis cluster URL {} is not valid: {why} (expected redis-cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…])",
            redact(base)
        ))
    };
    let (hosts, query) = match rest.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (rest, String::new()),
    };
    let (auth, hosts) = match hosts.rsplit_once('@') {
        Some((a, h)) => (format!("{a}@"), h),
        None => (String::new(), hosts),
    };
    let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
    if hosts.contains('/') {
        return Err(bad("a cluster has no database number"));
    }
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{auth}{h}/{query}"))
        .collect();
    if nodes.is_empty() {
        return Err(bad("no node given"));
    }
    Ok(Some(nodes))
}

/// The URL without its password, for messages.
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_options_are_parsed_and_stripped() {
        let (base, o) = parse_url(
            "redis://127.0.0.1:6379/2?retain_events=500000&ttl_secs=60&prefix=t1&protocol=resp2",
            100_000,
        )
        .expect("valid");
        assert_eq!(base, "redis://127.0.0.1:6379/2?protocol=resp2");
        assert_eq!(
            (o.retain_events, o.ttl_secs, o.prefix.as_str()),
            (500_000, 60, "t1")
        );
        let (_, o) = parse_url("redis://h?retain_events=10", 100_000).expect("valid");
        assert_eq!(
            o.retain_events, 110_000,
            "raised to the replay window + margin"
        );
        let (_, o) = parse_url("redis://h?retain_events=0", 100_000).expect("valid");
        assert_eq!(o.retain_events, 0, "0 keeps everything");
        assert!(parse_url("redis://h?ttl_secs=soon", 10).is_err());
        assert!(parse_url("redis://h?prefix={x}", 10).is_err());
    }

    #[test]
    fn cluster_urls_name_every_seed_node() {
        assert_eq!(cluster_nodes("redis://h:1").expect("ok"), None);
        assert_eq!(
            cluster_nodes("redis-cluster://:pw@a:1,b:2/?protocol=resp3").expect("ok"),
            Some(vec![
                "redis://:pw@a:1/?protocol=resp3".to_owned(),
                "redis://:pw@b:2/?protocol=resp3".to_owned()
            ])
        );
        assert!(cluster_nodes("redis-cluster://a:1/2").is_err());
        assert!(cluster_nodes("redis-cluster://").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
