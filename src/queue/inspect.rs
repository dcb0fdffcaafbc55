//! Read-only look at a queue directory (for `gwe queue stats|dump`), safe while the agent
//! runs: it opens files for reading only and changes nothing.

use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom};
use std::path::Path;

use super::format::{self, EndKind, Item, SegmentReader, SEG_HEADER_LEN};
use super::{read_ack, Counters};

/// What a read-only look found.
#[derive(Debug, Default)]
pub struct Inspection {
    pub segments: Vec<(u64, u64)>,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub acks: Vec<(String, u64)>,
    pub counters: Counters,
    /// Problems seen (torn tails, corrupt records), in segment order.
    pub problems: Vec<Problem>,
}

/// Something wrong in one segment: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The segment's base seq.
    pub segment: u64,
    pub kind: ProblemKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// The segment's header is not ours or names another base.
    BadHeader,
    /// The segment ends inside a record at this offset: a write cut short.
    Torn { offset: u64 },
    /// Not a valid record at this offset.
    Corrupt { offset: u64, what: format::Corruption },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let base = self.segment;
        match &self.kind {
            ProblemKind::BadHeader => write!(f, "segment {base}: bad header"),
            ProblemKind::Torn { offset } => write!(f, "segment {base}: torn record at offset {offset}"),
            ProblemKind::Corrupt { offset, what } => write!(f, "segment {base}: {what} at offset {offset}"),
        }
    }
}

/// Reads every segment in `dir`, calling `each` for each valid record.
pub fn inspect(dir: &Path, max_record: usize, mut each: impl FnMut(u64, &[u8])) -> io::Result<Inspection> {
    let mut out = Inspection::default();
    let mut bases = Vec::new();
    let mut ack_names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(b) = format::parse_segment_file_name(name) {
            bases.push(b);
        } else if let Some(c) = name.strip_prefix("ack-") {
            if !c.ends_with(crate::fsio::TEMP_SUFFIX) {
                ack_names.push(c.to_string());
            }
        }
    }
    bases.sort_unstable();
    ack_names.sort();
    for c in ack_names {
        let v = read_ack(&dir.join(format!("ack-{c}"))).unwrap_or(0);
        out.acks.push((c, v));
    }
    out.counters = fs::read_to_string(dir.join("counters")).map(|t| Counters::decode(&t)).unwrap_or_default();
    let mut buf = Vec::new();
    for base in bases {
        let path = dir.join(format::segment_file_name(base));
        let len = fs::metadata(&path)?.len();
        out.segments.push((base, len));
        let mut f = File::open(&path)?;
        let mut head = [0u8; SEG_HEADER_LEN];
        if io::Read::read_exact(&mut f, &mut head).is_err() || format::parse_segment_header(&head) != Ok(base) {
            out.problems.push(Problem { segment: base, kind: ProblemKind::BadHeader });
            continue;
        }
        f.seek(SeekFrom::Start(SEG_HEADER_LEN as u64))?;
        let mut r = SegmentReader::with_buffer(f, SEG_HEADER_LEN as u64, base, max_record, std::mem::take(&mut buf));
        loop {
            match r.next_item()? {
                Item::Record { seq, payload } => {
                    out.records += 1;
                    out.first_seq.get_or_insert(seq);
                    out.last_seq = Some(seq);
                    each(seq, payload);
                }
                Item::End { offset, end } => {
                    match end {
                        EndKind::Clean | EndKind::Unwritten => {}
                        EndKind::Incomplete => {
                            out.problems.push(Problem { segment: base, kind: ProblemKind::Torn { offset } })
                        }
                        EndKind::Corrupt(what) => {
                            out.problems.push(Problem { segment: base, kind: ProblemKind::Corrupt { offset, what } })
                        }
                    }
                    break;
                }
            }
        }
        buf = r.into_buffer();
    }
    Ok(out)
}
