//! The GMQ segment format (see `docs/queue-format.md`). Pure framing: no queue state.
//!
//! ```text
//! segment file  seg-<base seq, 20 digits>.gmq
//!   0   8   magic  "GMQSEG\0\x01" (last byte = format version)
//!   8   8   base seq, u64 LE (= the seq in the file name)
//!   16  ..  records, back to back
//! record
//!   0   4   payload length L, u32 LE
//!   4   8   seq, u64 LE (strictly increasing within a queue, contiguous when healthy)
//!   12  4   CRC32C over bytes 0..12 of this header, then the payload
//!   16  L   payload
//! ```

use std::io::{self, Read, Seek, SeekFrom};

pub const SEG_MAGIC: [u8; 8] = *b"GMQSEG\x00\x01";
const SEG_BASE_OFF: usize = SEG_MAGIC.len();
pub const SEG_HEADER_LEN: usize = SEG_BASE_OFF + 8;

const REC_LEN_OFF: usize = 0;
const REC_SEQ_OFF: usize = REC_LEN_OFF + 4;
const REC_CRC_OFF: usize = REC_SEQ_OFF + 8;
pub const REC_HEADER_LEN: usize = REC_CRC_OFF + 4;

/// Hard ceiling on a record's payload; the configured limit is lower.
pub const MAX_RECORD_CEILING: usize = 16 << 20;

/// The segment header for `base`.
pub fn segment_header(base: u64) -> [u8; SEG_HEADER_LEN] {
    let mut h = [0u8; SEG_HEADER_LEN];
    h[..SEG_BASE_OFF].copy_from_slice(&SEG_MAGIC);
    h[SEG_BASE_OFF..].copy_from_slice(&base.to_le_bytes());
    h
}

/// Checks a segment header; returns its base seq.
pub fn parse_segment_header(h: &[u8]) -> Result<u64, Corruption> {
    if h.len() < SEG_HEADER_LEN {
        return Err(Corruption::ShortHeader);
    }
    if h[..SEG_BASE_OFF] != SEG_MAGIC {
        return Err(Corruption::BadMagic);
    }
    Ok(read_u64(&h[SEG_BASE_OFF..SEG_HEADER_LEN]))
}

/// File name of the segment starting at `base`.
pub fn segment_file_name(base: u64) -> String {
    format!("seg-{base:020}.gmq")
}

/// Base seq of a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".gmq")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Writes a record header with a placeholder seq and CRC; `seal_record` fills them in.
pub fn put_record_header(out: &mut [u8], payload_len: u32) {
    out[REC_LEN_OFF..REC_SEQ_OFF].copy_from_slice(&payload_len.to_le_bytes());
    out[REC_SEQ_OFF..REC_HEADER_LEN].fill(0);
}

/// Sets the seq of the record framed at the start of `rec` and computes its CRC.
/// Returns the record's total length.
pub fn seal_record(rec: &mut [u8], seq: u64) -> usize {
    let len = read_u32(&rec[REC_LEN_OFF..REC_SEQ_OFF]) as usize;
    rec[REC_SEQ_OFF..REC_CRC_OFF].copy_from_slice(&seq.to_le_bytes());
    let total = REC_HEADER_LEN + len;
    let crc = record_crc(&rec[..REC_CRC_OFF], &rec[REC_HEADER_LEN..total]);
    rec[REC_CRC_OFF..REC_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    total
}

/// Encodes one complete record into `out` (tests, tools); returns its length.
pub fn encode_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.resize(start + REC_HEADER_LEN, 0);
    // Callers never pass payloads over MAX_RECORD_CEILING (16 MiB), which fits a u32.
    #[allow(clippy::cast_possible_truncation, reason = "at most MAX_RECORD_CEILING (16 MiB)")]
    put_record_header(&mut out[start..], payload.len() as u32);
    out.extend_from_slice(payload);
    seal_record(&mut out[start..], seq)
}

fn record_crc(head: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(head), payload)
}

fn read_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// What is wrong with bytes that should hold a record or a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    ShortHeader,
    BadMagic,
    /// The length field is over the configured maximum.
    TooLong(u32),
    /// The seq is not the one that follows the previous record's (or the segment's base).
    SeqMismatch {
        seq: u64,
        expected: u64,
    },
    BadCrc,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ShortHeader => write!(f, "segment header is short"),
            Self::BadMagic => write!(f, "segment header has a wrong magic"),
            Self::TooLong(n) => write!(f, "record length {n} is over the maximum"),
            Self::SeqMismatch { seq, expected } => {
                write!(f, "record seq {seq} where {expected} was expected")
            }
            Self::BadCrc => write!(f, "record CRC32C does not match"),
        }
    }
}

/// What `SegmentReader::next` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    Record {
        seq: u64,
        payload: &'a [u8],
    },
    /// End of the readable data at `offset` (file offset of the first byte not used).
    End {
        offset: u64,
        end: EndKind,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    /// The input ends exactly after a record.
    Clean,
    /// The input ends inside a record: a write cut short.
    Incomplete,
    /// A whole record's worth of bytes that is not a valid record.
    Corrupt(Corruption),
    /// Zeros where the next record header would be: preallocated space never written.
    /// (No valid header is all zeros: seqs start at 1.)
    Unwritten,
}

/// Reads records from a segment's bytes in order through one reusable buffer.
pub struct SegmentReader<R> {
    src: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[start]`.
    offset: u64,
    next_seq: u64,
    max_record: usize,
    eof: bool,
}

impl<R: Read + Seek> SegmentReader<R> {
    /// Drops buffered bytes past the current record and rereads them from the source later.
    pub fn discard_buffered(&mut self) -> io::Result<()> {
        self.src.seek(SeekFrom::Start(self.offset))?;
        self.start = 0;
        self.end = 0;
        self.eof = false;
        Ok(())
    }
}

impl<R: Read> SegmentReader<R> {
    /// `src` is positioned at file offset `offset`, the start of a record whose seq must be
    /// `next_seq` (a segment's base at its first record).
    pub fn new(src: R, offset: u64, next_seq: u64, max_record: usize) -> Self {
        Self::with_buffer(src, offset, next_seq, max_record, Vec::new())
    }

    /// Like `new`, reusing `buf`'s allocation.
    pub fn with_buffer(src: R, offset: u64, next_seq: u64, max_record: usize, mut buf: Vec<u8>) -> Self {
        let cap = (64 << 10).max(buf.capacity());
        buf.clear();
        buf.resize(cap, 0);
        Self {
            src,
            buf,
            start: 0,
            end: 0,
            offset,
            next_seq,
            max_record: max_record.min(MAX_RECORD_CEILING),
            eof: false,
        }
    }

    /// Gives the buffer back for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// The file offset of the next unread record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The seq the next record must have.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Ensures `n` bytes are buffered unless the input ends first; returns what is buffered.
    fn fill(&mut self, n: usize) -> io::Result<usize> {
        if self.end - self.start >= n {
            return Ok(self.end - self.start);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        while self.end < n && !self.eof {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end)
    }

    /// The next record, or where and why the readable data ends. After an `End` the
    /// reader stays there (a later call may find more data once the file grew).
    pub fn next_item(&mut self) -> io::Result<Item<'_>> {
        let have = self.fill(REC_HEADER_LEN)?;
        if have > 0 && self.buf[self.start..self.start + have.min(REC_HEADER_LEN)].iter().all(|&b| b == 0) {
            self.eof = false;
            return Ok(Item::End { offset: self.offset, end: EndKind::Unwritten });
        }
        if have < REC_HEADER_LEN {
            // More bytes may arrive later (a live segment); try the source again next time.
            self.eof = false;
            let end = if have == 0 { EndKind::Clean } else { EndKind::Incomplete };
            return Ok(Item::End { offset: self.offset, end });
        }
        let h = &self.buf[self.start..self.start + REC_HEADER_LEN];
        let len = read_u32(&h[REC_LEN_OFF..]);
        let seq = read_u64(&h[REC_SEQ_OFF..]);
        let crc = read_u32(&h[REC_CRC_OFF..]);
        if len as usize > self.max_record {
            return Ok(self.corrupt(Corruption::TooLong(len)));
        }
        let total = REC_HEADER_LEN + len as usize;
        if self.fill(total)? < total {
            self.eof = false;
            return Ok(Item::End { offset: self.offset, end: EndKind::Incomplete });
        }
        let rec = &self.buf[self.start..self.start + total];
        if record_crc(&rec[..REC_CRC_OFF], &rec[REC_HEADER_LEN..]) != crc {
            return Ok(self.corrupt(Corruption::BadCrc));
        }
        if seq != self.next_seq {
            return Ok(self.corrupt(Corruption::SeqMismatch { seq, expected: self.next_seq }));
        }
        let payload_start = self.start + REC_HEADER_LEN;
        self.start += total;
        self.offset += total as u64;
        self.next_seq = seq + 1;
        Ok(Item::Record { seq, payload: &self.buf[payload_start..payload_start + len as usize] })
    }

    fn corrupt(&self, c: Corruption) -> Item<'static> {
        Item::End { offset: self.offset, end: EndKind::Corrupt(c) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn records(n: u64) -> Vec<u8> {
        let mut v = Vec::new();
        for s in 10..10 + n {
            encode_record(s, format!("payload-{s}").as_bytes(), &mut v);
        }
        v
    }

    #[test]
    fn reads_back_in_order() {
        let bytes = records(100);
        let mut r = SegmentReader::new(Cursor::new(&bytes), 16, 10, 1024);
        for s in 10..110u64 {
            match r.next_item().unwrap() {
                Item::Record { seq, payload } => {
                    assert_eq!(seq, s);
                    assert_eq!(payload, format!("payload-{s}").as_bytes());
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(r.next_item().unwrap(), Item::End { offset: 16 + bytes.len() as u64, end: EndKind::Clean });
    }

    #[test]
    fn every_cut_of_the_last_record_is_incomplete() {
        let bytes = records(3);
        let last_start = {
            let mut v = Vec::new();
            encode_record(10, b"payload-10", &mut v);
            encode_record(11, b"payload-11", &mut v);
            v.len()
        };
        for cut in last_start + 1..bytes.len() {
            let mut r = SegmentReader::new(Cursor::new(&bytes[..cut]), 0, 10, 1024);
            assert!(matches!(r.next_item().unwrap(), Item::Record { seq: 10, .. }));
            assert!(matches!(r.next_item().unwrap(), Item::Record { seq: 11, .. }));
            assert_eq!(r.next_item().unwrap(), Item::End { offset: last_start as u64, end: EndKind::Incomplete });
        }
    }

    #[test]
    fn flipped_bit_is_corrupt() {
        let mut bytes = records(2);
        bytes[20] ^= 0x40;
        let mut r = SegmentReader::new(Cursor::new(&bytes), 0, 10, 1024);
        assert_eq!(r.next_item().unwrap(), Item::End { offset: 0, end: EndKind::Corrupt(Corruption::BadCrc) });
    }

    #[test]
    fn zeroes_are_unwritten_space_not_records() {
        let mut bytes = records(2);
        let end = bytes.len() as u64;
        bytes.resize(bytes.len() + 100, 0);
        let mut r = SegmentReader::new(Cursor::new(&bytes), 0, 10, 1024);
        r.next_item().unwrap();
        r.next_item().unwrap();
        assert_eq!(r.next_item().unwrap(), Item::End { offset: end, end: EndKind::Unwritten });
        // Even a few zero bytes at the very end are unwritten space, not a torn record.
        let mut short = records(1);
        short.extend_from_slice(&[0; 5]);
        let mut r = SegmentReader::new(Cursor::new(&short), 0, 10, 1024);
        r.next_item().unwrap();
        assert!(matches!(r.next_item().unwrap(), Item::End { end: EndKind::Unwritten, .. }));
    }

    #[test]
    fn names_and_headers() {
        assert_eq!(segment_file_name(42), "seg-00000000000000000042.gmq");
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_file_name("seg-12.gmq"), None);
        assert_eq!(parse_segment_header(&segment_header(7)), Ok(7));
        assert_eq!(parse_segment_header(&[0; 16]), Err(Corruption::BadMagic));
    }
}
