//! Serde helpers that enforce the numeric bounds of the spec (§1.3: every integer on
//! the wire is at most 2^53 − 1; percentages are 0–100).

use serde::{Deserialize, Deserializer, de::Error};

use crate::MAX_SAFE_INTEGER;

/// `u64` at most 2^53 − 1.
pub(crate) fn safe_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v > MAX_SAFE_INTEGER {
        return Err(D::Error::custom(format!(
            "{v} is larger than 2^53 - 1 ({MAX_SAFE_INTEGER}), the largest integer JavaScript represents exactly"
        )));
    }
    Ok(v)
}

/// Optional `u64` at most 2^53 − 1.
pub(crate) fn opt_safe_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        Some(v) if v > MAX_SAFE_INTEGER => Err(D::Error::custom(format!(
            "{v} is larger than 2^53 - 1 ({MAX_SAFE_INTEGER}), the largest integer JavaScript represents exactly"
        ))),
        v => Ok(v),
    }
}

/// `u64` between 1 and 2^53 − 1 (a sequence number).
pub(crate) fn seq<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = safe_u64(d)?;
    if v == 0 {
        return Err(D::Error::custom(
            "seq starts at 1; 0 is not a valid sequence number",
        ));
    }
    Ok(v)
}

/// Optional percentage in 0–100.
pub(crate) fn opt_percent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<f64>::deserialize(d)? {
        Some(v) if !(0.0..=100.0).contains(&v) => {
            Err(D::Error::custom(format!("percent {v} is outside 0 to 100")))
        }
        v => Ok(v),
    }
}

/// A string of 1 to `N` bytes.
pub(crate) fn bounded_string<'de, D: Deserializer<'de>, const N: usize>(
    d: D,
) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() || s.len() > N {
        return Err(D::Error::custom(format!(
            "string must be 1 to {N} bytes long, got {}",
            s.len()
        )));
    }
    Ok(s)
}
