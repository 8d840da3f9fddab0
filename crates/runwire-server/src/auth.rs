//! Bearer-token authentication and per-run authorization (spec §7).
//!
//! Two kinds of tokens, both configured in [`AuthConfig`]:
//! - static tokens, each with roles and run-id patterns;
//! - HMAC-signed JWTs (HS256/384/512) with claims `exp` (required), `role` or `roles`
//!   (`producer`, `consumer`), `runs` (run-id patterns, absent = every run) and
//!   optionally `sub`, `iss`, `aud`, `nbf` and `iat`.
//!
//! `exp` is checked against the server's clock without leeway: the connection is closed
//! at the expiry time the token states (`RW-AUTH-8`). `nbf` and `iat` are checked with
//! the configured clock skew ([`AuthConfig::jwt_leeway_s`]): a token that is not valid
//! yet, or that claims to be issued in the future, is refused as not valid
//! (`RW-AUTH-14`).
//!
//! A pattern is a run id in which `*` matches any run of characters, e.g. `team-a:*`.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use runwire_protocol::RunId;
use serde::Deserialize;

use crate::config::{AuthConfig, Role};

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was presented.
    #[error("a bearer token is required")]
    Missing,
    /// The token is not valid.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// The token is not valid yet: its `nbf` (not before) or `iat` (issued at) is
    /// later than the server's clock plus the allowed clock skew (`RW-AUTH-14`).
    #[error("the token is not valid yet: {0}")]
    NotYetValid(String),
}

/// Who is making a request, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// A name for logs.
    pub name: String,
    /// Granted roles.
    pub roles: Vec<Role>,
    /// Allowed run-id patterns; empty means every run.
    pub runs: Vec<String>,
    /// When the token expires (seconds since the Unix epoch).
    pub expires_at: Option<u64>,
}

impl Principal {
    /// The principal used when auth is off: every role, every run.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            roles: vec![Role::Producer, Role::Consumer],
            runs: Vec::new(),
            expires_at: None,
        }
    }

    /// Whether the principal has `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the principal may access `run_id` (`RW-AUTH-*`).
    pub fn allows_run(&self, run_id: &RunId) -> bool {
        self.runs.is_empty() || self.runs.iter().any(|p| glob(p, run_id.as_str()))
    }

    /// Milliseconds until the token expires (0 if already expired).
    pub fn ms_until_expiry(&self) -> Option<u64> {
        let exp = self.expires_at?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Some(u64::try_from((u128::from(exp) * 1000).saturating_sub(now)).unwrap_or(u64::MAX))
    }
}

/// Matches `text` against `pattern`, where `*` matches any (possibly empty) run.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RoleClaim {
    One(Role),
    Many(Vec<Role>),
}

#[derive(Deserialize)]
struct Claims {
    exp: u64,
    /// Not before (seconds since the epoch; a NumericDate may have a fraction).
    #[serde(default)]
    nbf: Option<f64>,
    /// Issued at.
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    role: Option<RoleClaim>,
    #[serde(default)]
    roles: Option<RoleClaim>,
    #[serde(default)]
    runs: Option<Vec<String>>,
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks tokens against the configuration.
pub struct Authenticator {
    config: AuthConfig,
    key: Option<(DecodingKey, Validation)>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("static_tokens", &self.config.tokens.len())
            .field("jwt", &self.key.is_some())
            .finish()
    }
}

impl Authenticator {
    /// Builds an authenticator.
    pub fn new(config: &AuthConfig) -> Self {
        let key = config.jwt_secret.as_ref().map(|s| {
            let mut v = Validation::new(Algorithm::HS256);
            v.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
            // `exp` without leeway (`RW-AUTH-8`); `nbf` and `iat` are checked below
            // with the configured clock skew (`RW-AUTH-14`).
            v.leeway = 0;
            v.validate_nbf = false;
            v.set_required_spec_claims(&["exp"]);
            if let Some(iss) = &config.jwt_issuer {
                v.set_issuer(&[iss]);
                v.required_spec_claims.insert("iss".into());
            }
            match &config.jwt_audience {
                Some(aud) => {
                    v.set_audience(&[aud]);
                    v.required_spec_claims.insert("aud".into());
                }
                None => v.validate_aud = false,
            }
            (DecodingKey::from_secret(s.as_bytes()), v)
        });
        Self {
            config: config.clone(),
            key,
        }
    }

    /// Whether auth is on.
    pub fn enabled(&self) -> bool {
        self.config.enabled()
    }

    /// Authenticates a token. With auth off, everyone is [`Principal::anonymous`].
    pub fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        if !self.enabled() {
            return Ok(Principal::anonymous());
        }
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        for t in &self.config.tokens {
            if ct_eq(t.token.as_bytes(), token.as_bytes()) {
                return Ok(Principal {
                    name: t.name.clone().unwrap_or_else(|| "static-token".into()),
                    roles: t.roles.clone(),
                    runs: t.runs.clone(),
                    expires_at: None,
                });
            }
        }
        let Some((key, validation)) = &self.key else {
            return Err(AuthError::Invalid("unknown token".into()));
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ if self.config.tokens.is_empty() => AuthError::Invalid(e.to_string()),
                _ => AuthError::Invalid("unknown token".into()),
            })?;
        let c = data.claims;
        self.check_not_before(&c)?;
        let mut roles = Vec::new();
        for rc in [c.role, c.roles].into_iter().flatten() {
            match rc {
                RoleClaim::One(r) => roles.push(r),
                RoleClaim::Many(rs) => roles.extend(rs),
            }
        }
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            return Err(AuthError::Invalid(
                "the token grants no role (claim `role` or `roles`)".into(),
            ));
        }
        Ok(Principal {
            name: c.sub.unwrap_or_else(|| "jwt".into()),
            roles,
            runs: c.runs.unwrap_or_default(),
            expires_at: Some(c.exp),
        })
    }

    /// Refuses a token whose `nbf` or `iat` is later than now plus the allowed clock
    /// skew (`RW-AUTH-14`).
    fn check_not_before(&self, c: &Claims) -> Result<(), AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let latest = now + self.config.jwt_leeway_s as f64;
        for (claim, value) in [("nbf", c.nbf), ("iat", c.iat)] {
            let Some(t) = value else { continue };
            if !t.is_finite() {
                return Err(AuthError::Invalid(format!(
                    "claim `{claim}` is not a number"
                )));
            }
            if t > latest {
                return Err(AuthError::NotYetValid(format!(
                    "claim `{claim}` is {:.0} s ahead of the server's clock (allowed skew {} s)",
                    t - now,
                    self.config.jwt_leeway_s
                )));
            }
        }
        Ok(())
    }

    /// Extracts the token of an `Authorization: Bearer` header value.
    pub fn bearer(header: Option<&str>) -> Option<&str> {
        let h = header?.trim();
        let (scheme, rest) = h.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim())
            .filter(|t| !t.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globbing() {
        assert!(glob("*", "anything"));
        assert!(glob("team-a:*", "team-a:run-1"));
        assert!(!glob("team-a:*", "team-b:run-1"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c*e", "abcd"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exact2"));
    }

    #[test]
    fn bearer_header() {
        assert_eq!(Authenticator::bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(Authenticator::bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(Authenticator::bearer(Some("Basic abc")), None);
        assert_eq!(Authenticator::bearer(None), None);
    }
}
