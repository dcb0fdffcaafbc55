//! A forwarder batch: queue records (encoded points) with their sequence numbers, as the
//! agent sends them to the hub (`POST /gwe/v1/batch`, deflated; `docs/cloud-protocol.md`).
//!
//! ```text
//! magic   4 bytes  "GWB1"
//! stream  8 bytes  u64 little endian: the queue's identity (seqs restart with a new queue)
//! then per record, in increasing seq order:
//!   varint  seq - previous seq (the first record: its seq)
//!   varint  payload length
//!   bytes   payload (a point, see `point`)
//! ```
//! The hub stores a record only if its seq is above the highest it stored for the stream,
//! so a batch sent twice (the answer was lost) stores nothing twice.

use std::fmt;

use crate::point::{self, PointError, PointRef};

pub const MAGIC: &[u8; 4] = b"GWB1";
pub const HEADER_LEN: usize = 12;

/// Why a batch could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    BadMagic,
    Truncated,
    /// Seqs must increase.
    SeqNotIncreasing {
        seq: u64,
    },
    BadPoint {
        seq: u64,
        err: PointError,
    },
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => write!(f, "batch does not start with GWB1"),
            Self::Truncated => write!(f, "batch is truncated"),
            Self::SeqNotIncreasing { seq } => write!(f, "record seq {seq} does not increase"),
            Self::BadPoint { seq, err } => write!(f, "record {seq}: {err}"),
        }
    }
}

impl std::error::Error for BatchError {}

/// Builds a batch in a reusable buffer.
#[derive(Debug, Default)]
pub struct BatchWriter {
    buf: Vec<u8>,
    prev: u64,
    count: usize,
    first: u64,
}

#[allow(clippy::cast_possible_truncation, reason = "a varint takes the low 7 bits of each byte, by design")]
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl BatchWriter {
    /// Starts a new batch for `stream`, keeping the buffer's capacity.
    pub fn reset(&mut self, stream: u64) {
        self.buf.clear();
        self.buf.extend_from_slice(MAGIC);
        self.buf.extend_from_slice(&stream.to_le_bytes());
        self.prev = 0;
        self.count = 0;
        self.first = 0;
    }

    /// Adds one record; seqs must increase (queue order).
    pub fn push(&mut self, seq: u64, payload: &[u8]) {
        debug_assert!(seq > self.prev, "seqs must increase");
        if self.count == 0 {
            self.first = seq;
        }
        put_varint(&mut self.buf, seq - self.prev);
        put_varint(&mut self.buf, payload.len() as u64);
        self.buf.extend_from_slice(payload);
        self.prev = seq;
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Seq of the first and last record (0, 0 when empty).
    pub fn seqs(&self) -> (u64, u64) {
        (self.first, self.prev)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Reads a batch: its stream and an iterator over `(seq, point)`.
pub fn read(buf: &[u8]) -> Result<(u64, Records<'_>), BatchError> {
    if buf.len() < HEADER_LEN {
        return Err(BatchError::Truncated);
    }
    if &buf[..4] != MAGIC {
        return Err(BatchError::BadMagic);
    }
    let mut stream = [0u8; 8];
    stream.copy_from_slice(&buf[4..12]);
    Ok((u64::from_le_bytes(stream), Records { buf, pos: HEADER_LEN, prev: 0 }))
}

/// The records of a batch, in order.
pub struct Records<'a> {
    buf: &'a [u8],
    pos: usize,
    prev: u64,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<(u64, PointRef<'a>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let mut rec = || {
            let delta = get_varint(self.buf, &mut self.pos).ok_or(BatchError::Truncated)?;
            let seq = self.prev.checked_add(delta).ok_or(BatchError::SeqNotIncreasing { seq: u64::MAX })?;
            if delta == 0 {
                return Err(BatchError::SeqNotIncreasing { seq });
            }
            let len = get_varint(self.buf, &mut self.pos).ok_or(BatchError::Truncated)?;
            let end = usize::try_from(len).ok().and_then(|l| self.pos.checked_add(l)).ok_or(BatchError::Truncated)?;
            let payload = self.buf.get(self.pos..end).ok_or(BatchError::Truncated)?;
            self.pos = end;
            self.prev = seq;
            let p = point::decode(payload).map_err(|err| BatchError::BadPoint { seq, err })?;
            Ok((seq, p))
        };
        let r = rec();
        if r.is_err() {
            self.pos = self.buf.len();
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ts: i64, alias: &str, v: &[u8]) -> Vec<u8> {
        let mut b = vec![0; point::encoded_len(alias, v)];
        point::encode(ts, alias, v, &mut b).unwrap();
        b
    }

    #[test]
    fn round_trip() {
        let mut w = BatchWriter::default();
        w.reset(77);
        w.push(5, &point(1, "a", b"1"));
        w.push(6, &point(2, "b", b""));
        w.push(300, &point(3, "c", b"x&y"));
        assert_eq!(w.seqs(), (5, 300));
        let (stream, recs) = read(w.bytes()).unwrap();
        assert_eq!(stream, 77);
        let got: Vec<_> = recs.map(|r| r.unwrap()).map(|(s, p)| (s, p.alias.to_string(), p.value.to_vec())).collect();
        assert_eq!(
            got,
            vec![(5, "a".into(), b"1".to_vec()), (6, "b".into(), vec![]), (300, "c".into(), b"x&y".to_vec())]
        );
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(read(b"GWB").err(), Some(BatchError::Truncated));
        assert_eq!(read(b"XXXX00000000").err(), Some(BatchError::BadMagic));
        let mut w = BatchWriter::default();
        w.reset(1);
        w.push(1, &point(1, "a", b"1"));
        let b = w.bytes();
        let (_, mut recs) = read(&b[..b.len() - 5]).unwrap();
        assert_eq!(recs.next(), Some(Err(BatchError::Truncated)));
        assert_eq!(recs.next(), None);
        let mut zero = b"GWB1\0\0\0\0\0\0\0\0".to_vec();
        zero.extend_from_slice(&[0, 0]);
        let (_, mut recs) = read(&zero).unwrap();
        assert_eq!(recs.next(), Some(Err(BatchError::SeqNotIncreasing { seq: 0 })));
    }
}
