//! The requirement IDs (`spec/protocol.md`) that built-in checks name when a fixture
//! does not name one itself.

/// `RW-CONN-4`: the first client message is `hello`, sent at once.
pub const HELLO_FIRST: &str = "RW-CONN-4";
/// `RW-VERSION-1`: `hello.versions` lists every version the client implements.
pub const HELLO_VERSIONS: &str = "RW-VERSION-1";
/// `RW-AUTH-1`: tokens travel in `hello.token` or a header, never in the URL.
pub const TOKEN: &str = "RW-AUTH-1";
/// `RW-AUTH-9`: a client with a token provider asks it before every connection
/// attempt, so a reconnect presents a fresh token.
pub const TOKEN_FRESH: &str = "RW-AUTH-9";
/// `RW-ERROR-8`: an error frame announcing a terminal close is reported once.
pub const ERROR_ONCE: &str = "RW-ERROR-8";
/// `RW-CONV-3`: no JSON object with two members of the same name.
pub const DUPLICATE_MEMBERS: &str = "RW-CONV-3";
/// `RW-RECONNECT-8`: every (re)connection subscribes every wanted run with its cursor.
pub const SUBSCRIBE: &str = "RW-RECONNECT-8";
/// `RW-RESUME-10`: the resume cursor is the last delivered seq of the epoch.
pub const CURSOR: &str = "RW-RESUME-10";
/// `RW-RESUME-11`: a cursor with `after_seq > 0` carries its epoch.
pub const CURSOR_EPOCH: &str = "RW-RESUME-11";
/// `RW-ORDER-4`: events at or below the last delivered seq are dropped.
pub const DEDUP: &str = "RW-ORDER-4";
/// `RW-ORDER-6`: only the next seq is ever delivered.
pub const ORDER: &str = "RW-ORDER-6";
/// `RW-ORDER-5`: a gap is buffered, then the client resubscribes from its cursor;
/// a gap is never skipped.
pub const GAP: &str = "RW-ORDER-5";
/// Nothing is skipped: every expected event is delivered (`RW-ORDER-5`).
pub const COMPLETE: &str = "RW-ORDER-5";
/// `RW-RESUME-9`: a `reset` hands the snapshot over and restarts from `as_of_seq`.
pub const RESET: &str = "RW-RESUME-9";
/// `RW-HEART-4`: every `ping` is answered with a `pong` carrying its id.
pub const PONG: &str = "RW-HEART-4";
/// `RW-HEART-5`: a silent connection is declared dead after interval + grace.
pub const LIVENESS: &str = "RW-HEART-5";
/// `RW-RECONNECT-1`: reconnect delays follow full-jitter exponential backoff.
pub const BACKOFF: &str = "RW-RECONNECT-1";
/// `RW-RECONNECT-2`: `retry_after_ms` is honored.
pub const RETRY_AFTER: &str = "RW-RECONNECT-2";
/// `RW-RECONNECT-3`: the client gives up after the maximum number of attempts.
pub const MAX_ATTEMPTS: &str = "RW-RECONNECT-3";
/// `RW-RECONNECT-5`: no reconnect after a terminal close.
pub const TERMINAL: &str = "RW-RECONNECT-5";
/// `RW-RECONNECT-9`: at most one connection or attempt open at a time.
pub const ONE_CONNECTION: &str = "RW-RECONNECT-9";
/// `RW-CLOSE-2`: the client acts on a close code by its class.
pub const CLOSE_CLASS: &str = "RW-CLOSE-2";
/// `RW-CLOSE-4`: 1004–1006, 1015 and codes outside the valid ranges never go on the
/// wire.
pub const CLOSE_SENDABLE: &str = "RW-CLOSE-4";
/// `RW-CONN-11`: a client ending a connection on purpose closes with 1000.
pub const CLIENT_CLOSE: &str = "RW-CONN-11";
/// `RW-CONV-1`: every message is one JSON object in one text frame.
pub const CLIENT_INPUT: &str = "RW-CONV-1";
/// `RW-COMPAT-5`: what a peer sends is valid under the writer schema.
pub const CLIENT_SCHEMA: &str = "RW-COMPAT-5";
/// `RW-VERSION-4`: unknown event types are delivered (or skipped), never an error.
pub const UNKNOWN_IGNORED: &str = "RW-VERSION-4";
/// `RW-LIMIT-5`: the client stays within the limits announced in `welcome`.
pub const CLIENT_LIMITS: &str = "RW-LIMIT-5";
/// Not a spec requirement: the adapter contract (`docs/client-adapter.md`), which the
/// kit enforces so verdicts stay uniform.
pub const ADAPTER: &str = "KIT-ADAPTER";

/// Every spec requirement a built-in check may name.
pub const ALL: &[&str] = &[
    CLIENT_LIMITS,
    TOKEN_FRESH,
    DUPLICATE_MEMBERS,
    ERROR_ONCE,
    HELLO_FIRST,
    HELLO_VERSIONS,
    TOKEN,
    SUBSCRIBE,
    CURSOR,
    CURSOR_EPOCH,
    DEDUP,
    ORDER,
    GAP,
    COMPLETE,
    RESET,
    PONG,
    LIVENESS,
    BACKOFF,
    RETRY_AFTER,
    MAX_ATTEMPTS,
    TERMINAL,
    ONE_CONNECTION,
    CLOSE_CLASS,
    CLOSE_SENDABLE,
    CLIENT_CLOSE,
    CLIENT_INPUT,
    CLIENT_SCHEMA,
    UNKNOWN_IGNORED,
];
