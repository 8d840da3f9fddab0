//! Step patterns: literal text with placeholders, in the spirit of Cucumber
//! expressions. `{s}` a double-quoted string (the value is the inside), `{n}` an
//! unsigned integer, `{w}` one word, `{rest}` everything up to the next literal (or
//! the end).

/// Matches `text` against `pattern`; returns the placeholder values.
pub(crate) fn matches(pattern: &str, text: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    if go(pattern, text.trim(), &mut out) {
        Some(out)
    } else {
        None
    }
}

fn go(pattern: &str, text: &str, out: &mut Vec<String>) -> bool {
    let Some(open) = pattern.find('{') else {
        return pattern == text;
    };
    let lit = &pattern[..open];
    let Some(text) = text.strip_prefix(lit) else {
        return false;
    };
    let Some(close) = pattern[open..].find('}') else {
        return false;
    };
    let kind = &pattern[open + 1..open + close];
    let rest_pat = &pattern[open + close + 1..];
    match kind {
        "s" => {
            let Some(inner) = text.strip_prefix('"') else {
                return false;
            };
            let Some(end) = inner.find('"') else {
                return false;
            };
            out.push(inner[..end].to_owned());
            go(rest_pat, &inner[end + 1..], out)
        }
        "n" => {
            let end = text
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len());
            if end == 0 {
                return false;
            }
            out.push(text[..end].to_owned());
            go(rest_pat, &text[end..], out)
        }
        "w" => {
            let end = text.find(char::is_whitespace).unwrap_or(text.len());
            if end == 0 {
                return false;
            }
            out.push(text[..end].to_owned());
            go(rest_pat, &text[end..], out)
        }
        "rest" => {
            let next_lit = rest_pat.split('{').next().unwrap_or("");
            if next_lit.is_empty() {
                out.push(text.to_owned());
                return rest_pat.is_empty();
            }
            let Some(i) = text.rfind(next_lit) else {
                return false;
            };
            out.push(text[..i].to_owned());
            go(rest_pat, &text[i..], out)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn placeholders() {
        assert_eq!(
            matches(
                "client {s} subscribes to run {s} after seq {n}",
                "client \"a\" subscribes to run \"A\" after seq 3"
            ),
            Some(vec!["a".into(), "A".into(), "3".into()])
        );
        assert_eq!(
            matches("client {s} sends {rest}", "client \"a\" sends {\"x\":1}"),
            Some(vec!["a".into(), "{\"x\":1}".into()])
        );
        assert_eq!(matches("x {n}", "x y"), None);
        assert_eq!(matches("a {w} c", "a b c"), Some(vec!["b".into()]));
        assert_eq!(matches("exact", "exact"), Some(vec![]));
        assert_eq!(matches("exact", "exactly"), None);
    }
}
