//! One data point: `alias`, unix timestamp in seconds, value bytes.
//!
//! ```text
//! offset  size  field
//! 0       1     version (= 1)
//! 1       8     timestamp, i64 little endian, unix seconds
//! 9       2     alias length A, u16 little endian (1..=255)
//! 11      A     alias, UTF-8
//! 11+A    rest  value, raw bytes (already percent-decoded)
//! ```
//! Encoding writes into a caller's buffer and decoding borrows from the input, so
//! neither allocates.

use std::fmt;

const VERSION: u8 = 1;
const TS_OFF: usize = 1;
const ALIAS_LEN_OFF: usize = TS_OFF + 8;
/// Bytes before the alias.
pub const HEADER_LEN: usize = ALIAS_LEN_OFF + 2;
/// Longest alias accepted (Exosite aliases are short identifiers).
pub const MAX_ALIAS: usize = 255;

/// A decoded point borrowing from the encoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointRef<'a> {
    pub ts: i64,
    pub alias: &'a str,
    pub value: &'a [u8],
}

/// Why a point could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointError {
    /// The alias is empty or longer than 255 bytes.
    BadAlias,
    /// The output buffer is too small for the point.
    BufferTooSmall { need: usize },
    /// The input is shorter than its header says.
    Truncated,
    /// The input starts with an unknown version byte.
    UnknownVersion(u8),
    /// The alias is not UTF-8.
    AliasNotUtf8,
}

impl fmt::Display for PointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadAlias => write!(f, "alias must be 1 to {MAX_ALIAS} bytes"),
            Self::BufferTooSmall { need } => write!(f, "point needs {need} bytes of buffer"),
            Self::Truncated => write!(f, "point is truncated"),
            Self::UnknownVersion(v) => write!(f, "unknown point version {v}"),
            Self::AliasNotUtf8 => write!(f, "alias is not UTF-8"),
        }
    }
}

impl std::error::Error for PointError {}

/// Encoded size of a point.
pub fn encoded_len(alias: &str, value: &[u8]) -> usize {
    HEADER_LEN + alias.len() + value.len()
}

/// Encodes a point into `out`, returning the number of bytes written.
#[allow(clippy::cast_possible_truncation, reason = "the alias length is at most 255, checked first")]
pub fn encode(ts: i64, alias: &str, value: &[u8], out: &mut [u8]) -> Result<usize, PointError> {
    if alias.is_empty() || alias.len() > MAX_ALIAS {
        return Err(PointError::BadAlias);
    }
    let need = encoded_len(alias, value);
    if out.len() < need {
        return Err(PointError::BufferTooSmall { need });
    }
    out[0] = VERSION;
    out[TS_OFF..ALIAS_LEN_OFF].copy_from_slice(&ts.to_le_bytes());
    // The alias length is at most 255, checked above.
    out[ALIAS_LEN_OFF..HEADER_LEN].copy_from_slice(&(alias.len() as u16).to_le_bytes());
    let alias_end = HEADER_LEN + alias.len();
    out[HEADER_LEN..alias_end].copy_from_slice(alias.as_bytes());
    out[alias_end..need].copy_from_slice(value);
    Ok(need)
}

/// Decodes a point, borrowing alias and value from `buf`.
pub fn decode(buf: &[u8]) -> Result<PointRef<'_>, PointError> {
    if buf.len() < HEADER_LEN {
        return Err(PointError::Truncated);
    }
    if buf[0] != VERSION {
        return Err(PointError::UnknownVersion(buf[0]));
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&buf[TS_OFF..ALIAS_LEN_OFF]);
    let alias_len = usize::from(u16::from_le_bytes([buf[ALIAS_LEN_OFF], buf[ALIAS_LEN_OFF + 1]]));
    if alias_len == 0 || alias_len > MAX_ALIAS {
        return Err(PointError::BadAlias);
    }
    let alias_end = HEADER_LEN + alias_len;
    if buf.len() < alias_end {
        return Err(PointError::Truncated);
    }
    let alias = std::str::from_utf8(&buf[HEADER_LEN..alias_end]).map_err(|_| PointError::AliasNotUtf8)?;
    Ok(PointRef { ts: i64::from_le_bytes(ts), alias, value: &buf[alias_end..] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = [0u8; 64];
        let n = encode(-5, "temp", b"21.5&x=1", &mut buf).unwrap();
        assert_eq!(n, encoded_len("temp", b"21.5&x=1"));
        let p = decode(&buf[..n]).unwrap();
        assert_eq!(p, PointRef { ts: -5, alias: "temp", value: b"21.5&x=1" });
    }

    #[test]
    fn refuses_bad_input() {
        let mut buf = [0u8; 8];
        assert_eq!(encode(0, "", b"", &mut buf), Err(PointError::BadAlias));
        assert_eq!(encode(0, "abc", b"", &mut buf), Err(PointError::BufferTooSmall { need: 14 }));
        assert_eq!(decode(&[1, 0, 0]), Err(PointError::Truncated));
        assert_eq!(decode(&[9; 20]), Err(PointError::UnknownVersion(9)));
        let mut ok = [0u8; 32];
        let n = encode(1, "abc", b"v", &mut ok).unwrap();
        assert_eq!(decode(&ok[..n - 3]), Err(PointError::Truncated));
    }
}
