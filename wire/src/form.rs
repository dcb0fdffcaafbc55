//! The Exosite device API's form bodies and headers, read by one set of rules on both sides
//! (the hub's device API and the agent's local GMQ API), so a request is refused or
//! stored alike wherever it lands (`docs/cloud-protocol.md`, "Bad input").
//!
//! - A body is `key=value` pairs joined by `&`; empty pieces (`a=1&&b=2`) are skipped.
//! - A piece without `=` is refused: `broken` is not `broken=""`.
//! - `+` is a space; `%XX` is the byte XX; a `%` not followed by two hex digits is refused
//!   (`%ZZ` is not stored as typed).
//! - A decoded key or value that is not UTF-8 is refused (nothing becomes U+FFFD).
//! - Timestamps are unix seconds, whole or with a fraction (`1700000000.25`, as Exosite's
//!   client sends them); the fraction is dropped, since points are kept to the second.
//! - `Content-Type`, when sent, must be `application/x-www-form-urlencoded`.
//! - `Request-Timeout` is whole milliseconds from 0 to [`MAX_REQUEST_TIMEOUT_MS`].

use std::borrow::Cow;
use std::fmt;

/// The longest long-poll the API allows (Exosite's limit), in milliseconds.
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 300_000;
/// The media type of a form body.
pub const FORM_TYPE: &str = "application/x-www-form-urlencoded";

/// What is wrong with a form body or header. Pairs are counted from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// Pair N has no `=`.
    NoEquals { pair: usize, shown: String },
    /// Pair N has a `%` not followed by two hex digits, at byte `at` of the pair.
    BadEscape { pair: usize, at: usize },
    /// Pair N does not decode to UTF-8 text.
    NotUtf8 { pair: usize },
    /// A timestamp that is not unix seconds.
    BadTimestamp(String),
    /// A `Content-Type` other than a form's.
    ContentType(String),
    /// A `Request-Timeout` that is not whole milliseconds up to the limit.
    RequestTimeout(String),
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoEquals { pair, shown } => write!(f, "pair {pair} ({shown:?}) has no '='"),
            Self::BadEscape { pair, at } => {
                write!(f, "pair {pair} has a bad percent escape at byte {at} (want %XX, two hex digits)")
            }
            Self::NotUtf8 { pair } => write!(f, "pair {pair} is not UTF-8 text once decoded"),
            Self::BadTimestamp(t) => {
                write!(f, "timestamp {t:?} is not unix seconds (a whole number, or one with a fraction)")
            }
            Self::ContentType(ct) => write!(f, "Content-Type {ct} is not {FORM_TYPE}"),
            Self::RequestTimeout(v) => {
                write!(f, "Request-Timeout {v:?} is not whole milliseconds from 0 to {MAX_REQUEST_TIMEOUT_MS}")
            }
        }
    }
}

impl std::error::Error for FormError {}

impl FormError {
    /// The HTTP status that answers it: 415 for a wrong content type, else 400.
    pub fn status(&self) -> u16 {
        if matches!(self, Self::ContentType(_)) {
            415
        } else {
            400
        }
    }
}

/// A decoded pair, borrowed from the body where nothing needed decoding.
pub type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The pairs of a form body, in order, each decoded or refused.
pub fn pairs(body: &[u8]) -> impl Iterator<Item = Result<Pair<'_>, FormError>> {
    body.split(|&b| b == b'&').filter(|p| !p.is_empty()).enumerate().map(|(i, piece)| {
        let pair = i + 1;
        let Some(eq) = piece.iter().position(|&b| b == b'=') else {
            let shown = String::from_utf8_lossy(&piece[..piece.len().min(40)]).into_owned();
            return Err(FormError::NoEquals { pair, shown });
        };
        let (k, v) = (&piece[..eq], &piece[eq + 1..]);
        let k = decode(k).map_err(|e| e.at(pair, 0))?;
        let v = decode(v).map_err(|e| e.at(pair, eq + 1))?;
        Ok((k, v))
    })
}

/// The names of a read's query (`?a&b`, values ignored), each decoded by the same rules.
pub fn query_names(query: &str) -> Result<Vec<Cow<'_, str>>, FormError> {
    query
        .as_bytes()
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .enumerate()
        .map(|(i, piece)| {
            let name = piece.split(|&b| b == b'=').next().unwrap_or(piece);
            decode(name).map_err(|e| e.at(i + 1, 0))
        })
        .collect()
}

/// Every pair of a body, or the first problem.
pub fn all_pairs(body: &[u8]) -> Result<Vec<Pair<'_>>, FormError> {
    pairs(body).collect()
}

enum Decode {
    Escape(usize),
    Utf8,
}

impl Decode {
    fn at(self, pair: usize, offset: usize) -> FormError {
        match self {
            Self::Escape(i) => FormError::BadEscape { pair, at: offset + i },
            Self::Utf8 => FormError::NotUtf8 { pair },
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One key or value: `+` and `%XX` decoded, UTF-8 checked.
fn decode(raw: &[u8]) -> Result<Cow<'_, str>, Decode> {
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return std::str::from_utf8(raw).map(Cow::Borrowed).map_err(|_| Decode::Utf8);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let (Some(h), Some(l)) = (raw.get(i + 1).copied().and_then(hex), raw.get(i + 2).copied().and_then(hex))
                else {
                    return Err(Decode::Escape(i));
                };
                out.push(h << 4 | l);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map(Cow::Owned).map_err(|_| Decode::Utf8)
}

/// Unix seconds from `1700000000` or `1700000000.25` (the fraction dropped).
pub fn timestamp(s: &str) -> Result<i64, FormError> {
    let bad = || FormError::BadTimestamp(s.chars().take(40).collect());
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || whole.len() > 12 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 || (s.contains('.') && frac.is_empty()) {
        return Err(bad());
    }
    whole.parse().map_err(|_| bad())
}

/// Checks a request's `Content-Type` header (absent is accepted: a form is assumed).
pub fn content_type(ct: Option<&str>) -> Result<(), FormError> {
    match ct {
        Some(ct) if !ct.trim_start().to_ascii_lowercase().starts_with(FORM_TYPE) => {
            Err(FormError::ContentType(ct.chars().take(80).collect()))
        }
        _ => Ok(()),
    }
}

/// A `Request-Timeout` header's milliseconds.
pub fn request_timeout(v: &str) -> Result<u64, FormError> {
    let bad = || FormError::RequestTimeout(v.chars().take(40).collect());
    let ms: u64 = v.trim().parse().map_err(|_| bad())?;
    if ms > MAX_REQUEST_TIMEOUT_MS {
        return Err(bad());
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(b: &str) -> Result<Vec<(String, String)>, FormError> {
        pairs(b.as_bytes()).map(|p| p.map(|(k, v)| (k.into_owned(), v.into_owned()))).collect()
    }

    #[test]
    fn pairs_decode_or_say_what_is_wrong() {
        assert_eq!(
            all("a=1&b=x+y&&c=%26%3D").unwrap(),
            [("a", "1"), ("b", "x y"), ("c", "&=")].map(|(k, v)| (k.into(), v.into()))
        );
        assert_eq!(all("a=").unwrap(), [("a".into(), String::new())]);
        assert!(matches!(all("a=1&broken"), Err(FormError::NoEquals { pair: 2, .. })));
        assert_eq!(all("a=%ZZ").unwrap_err(), FormError::BadEscape { pair: 1, at: 2 });
        assert_eq!(all("a=1&b=x%4").unwrap_err(), FormError::BadEscape { pair: 2, at: 3 });
        assert_eq!(all("a=%FF%FE").unwrap_err(), FormError::NotUtf8 { pair: 1 });
        assert_eq!(pairs(b"a=\xff").next().unwrap().unwrap_err(), FormError::NotUtf8 { pair: 1 });
        assert_eq!(all("caf%C3%A9=%E2%82%AC").unwrap(), [("café".into(), "€".into())]);
        // Nothing to decode: borrowed from the body.
        let (k, v) = pairs(b"temp=21.5").next().unwrap().unwrap();
        assert!(matches!((k, v), (Cow::Borrowed("temp"), Cow::Borrowed("21.5"))));
        assert!(FormError::NoEquals { pair: 1, shown: "x".into() }.to_string().contains("has no '='"));
    }

    #[test]
    fn query_names_decode_alike() {
        assert_eq!(query_names("a&b%20c&d=ignored").unwrap(), ["a", "b c", "d"]);
        assert_eq!(query_names("a&%ZZ").unwrap_err(), FormError::BadEscape { pair: 2, at: 0 });
        assert!(query_names("").unwrap().is_empty());
    }

    #[test]
    fn timestamps_are_unix_seconds_whole_or_with_a_fraction() {
        assert_eq!(timestamp("1700000000"), Ok(1_700_000_000));
        assert_eq!(timestamp("1700000000.75"), Ok(1_700_000_000));
        assert_eq!(timestamp("0"), Ok(0));
        for bad in ["", "-1", "1e9", "1.", ".5", "12a", "1.2.3", "99999999999999", " 1"] {
            assert!(timestamp(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers_have_ranges() {
        assert!(content_type(None).is_ok());
        assert!(content_type(Some("application/x-www-form-urlencoded; charset=utf-8")).is_ok());
        assert_eq!(content_type(Some("application/json")).unwrap_err().status(), 415);
        assert_eq!(request_timeout("300000"), Ok(300_000));
        assert!(request_timeout("300001").is_err() && request_timeout("-1").is_err() && request_timeout("x").is_err());
    }
}
