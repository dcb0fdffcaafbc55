//! The segment files of one queue directory. Only the flush leader and acknowledging
//! consumers touch them, always under the store's mutex.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{self, EndKind, Item, SegmentReader, SEG_HEADER_LEN};
use crate::fsio;

#[derive(Debug, Clone, Copy)]
pub struct Seg {
    pub base: u64,
    pub bytes: u64,
}

pub struct Store {
    pub dir: PathBuf,
    pub segs: VecDeque<Seg>,
    active: File,
    seg_bytes: u64,
}

/// What recovery found, for the log and the counters.
#[derive(Debug, Default)]
pub struct Recovery {
    pub next_seq: u64,
    pub torn_bytes: u64,
    pub quarantined: Vec<(u64, String)>,
}

impl Store {
    /// Opens the segments in `dir`, repairing what a crash left: a torn tail of the active
    /// segment is cut off, a segment that is corrupt beyond a torn tail is moved aside.
    /// Only the last segment is scanned; sealed segments were whole when sealed.
    pub fn open(dir: &Path, seg_bytes: u64, max_record: usize, max_torn: u64) -> io::Result<(Self, Recovery)> {
        let mut rec = Recovery::default();
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(base) = entry.file_name().to_str().and_then(format::parse_segment_file_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut segs = VecDeque::with_capacity(bases.len() + 1);
        let last = bases.last().copied();
        for base in bases {
            let path = dir.join(format::segment_file_name(base));
            let len = fs::metadata(&path)?.len();
            let mut head = [0u8; SEG_HEADER_LEN];
            let head_ok = len >= SEG_HEADER_LEN as u64
                && File::open(&path)?.read_exact(&mut head).is_ok()
                && format::parse_segment_header(&head) == Ok(base);
            if head_ok {
                segs.push_back(Seg { base, bytes: len });
            } else if Some(base) == last && len <= SEG_HEADER_LEN as u64 {
                // Cut while being created: it never held a record.
                fs::remove_file(&path)?;
                fsio::sync_dir(dir)?;
            } else {
                quarantine_file(dir, base)?;
                rec.quarantined.push((base, "bad segment header".into()));
            }
        }
        let mut next_seq = segs.back().map_or(1, |s| s.base);
        let mut fresh_active = segs.is_empty();
        if let Some(active) = segs.back_mut() {
            let path = dir.join(format::segment_file_name(active.base));
            let mut file = File::open(&path)?;
            file.seek(SeekFrom::Start(SEG_HEADER_LEN as u64))?;
            let mut r = SegmentReader::new(file, SEG_HEADER_LEN as u64, active.base, max_record);
            let (offset, end) = loop {
                match r.next_item()? {
                    Item::Record { .. } => {}
                    Item::End { offset, end } => break (offset, end),
                }
            };
            next_seq = r.next_seq();
            // Bytes after the last valid record that are not preallocated zeros.
            let rest = nonzero_end(&path, offset)?.saturating_sub(offset);
            if rest > 0 {
                if rest <= max_torn {
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(offset)?;
                    f.sync_all()?;
                    rec.torn_bytes = rest;
                } else {
                    // More bad bytes than one cut-short batch can leave: real corruption.
                    // Keep the evidence and continue past every seq the bytes could hold.
                    let why = match end {
                        EndKind::Corrupt(c) => c.to_string(),
                        _ => "unreadable records".into(),
                    };
                    quarantine_file(dir, active.base)?;
                    rec.quarantined.push((active.base, format!("{why} at offset {offset}")));
                    next_seq += rest / format::REC_HEADER_LEN as u64 + 1;
                    segs.pop_back();
                    fresh_active = true;
                }
            }
            if let Some(active) = segs.back_mut().filter(|_| !fresh_active) {
                active.bytes = offset;
            }
        }
        let active = match segs.back() {
            Some(s) if !fresh_active => {
                let f = OpenOptions::new().read(true).write(true).open(dir.join(format::segment_file_name(s.base)))?;
                reserve(&f, seg_bytes);
                f
            }
            _ => {
                let (f, seg) = create_segment(dir, next_seq, seg_bytes)?;
                segs.push_back(seg);
                f
            }
        };
        rec.next_seq = next_seq;
        Ok((Self { dir: dir.to_path_buf(), segs, active, seg_bytes }, rec))
    }

    pub fn disk_bytes(&self) -> u64 {
        self.segs.iter().map(|s| s.bytes).sum()
    }

    pub fn first_seq(&self) -> u64 {
        self.segs.front().map_or(0, |s| s.base)
    }

    fn active_mut(&mut self) -> &mut Seg {
        // INVARIANT: there is always an active segment; only sealed ones are removed.
        let n = self.segs.len();
        &mut self.segs[n - 1]
    }

    /// Appends a sealed batch whose first record has `first_seq` and makes it durable.
    /// On failure the active segment is cut back to its last durable length.
    pub fn append(&mut self, batch: &[u8], first_seq: u64) -> io::Result<()> {
        let cur = *self.active_mut();
        if cur.bytes > SEG_HEADER_LEN as u64 && cur.bytes + batch.len() as u64 > self.seg_bytes {
            self.roll(first_seq)?;
        }
        let off = self.active_mut().bytes;
        let res = self.active.write_all_at(batch, off).and_then(|()| sync_append(&self.active));
        match res {
            Ok(()) => {
                self.active_mut().bytes += batch.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Undo what part of the batch landed (its producers hear of the failure), and
                // reserve the space again if there is room.
                let _ = self.active.set_len(off);
                reserve(&self.active, self.seg_bytes);
                let _ = self.active.sync_data();
                Err(e)
            }
        }
    }

    /// Seals the active segment and starts a new one at `base`.
    pub fn roll(&mut self, base: u64) -> io::Result<()> {
        // Give back the sealed segment's unused reserved space first: a sealed segment ends
        // at its last record.
        let len = self.active_mut().bytes;
        self.active.set_len(len)?;
        self.active.sync_all()?;
        let (f, seg) = create_segment(&self.dir, base, self.seg_bytes)?;
        self.active = f;
        self.segs.push_back(seg);
        Ok(())
    }

    /// Deletes the oldest segment, rolling first if it is the active one. Returns its
    /// base and the base of the segment after it.
    pub fn drop_oldest(&mut self, next_seq: u64) -> io::Result<(u64, u64)> {
        if self.segs.len() == 1 {
            self.roll(next_seq)?;
        }
        let old = self.segs[0];
        fs::remove_file(self.dir.join(format::segment_file_name(old.base)))?;
        // Each drop is made durable before the next, so segments vanish oldest first.
        fsio::sync_dir(&self.dir)?;
        self.segs.pop_front();
        Ok((old.base, self.segs[0].base))
    }

    /// Deletes sealed segments whose records are all at or below `acked`.
    pub fn delete_acked(&mut self, acked: u64) -> io::Result<usize> {
        let mut n = 0;
        while self.segs.len() >= 2 && self.segs[1].base <= acked.saturating_add(1) {
            fs::remove_file(self.dir.join(format::segment_file_name(self.segs[0].base)))?;
            self.segs.pop_front();
            n += 1;
        }
        if n > 0 {
            fsio::sync_dir(&self.dir)?;
        }
        Ok(n)
    }

    /// Moves a sealed segment aside into `corrupt/`. Returns the base of the next segment.
    pub fn quarantine(&mut self, base: u64, next_seq: u64) -> io::Result<u64> {
        let Some(i) = self.segs.iter().position(|s| s.base == base) else {
            return Ok(self.first_seq());
        };
        if i + 1 == self.segs.len() {
            self.roll(next_seq)?;
        }
        quarantine_file(&self.dir, base)?;
        self.segs.remove(i);
        Ok(self.segs[i].base)
    }

    /// The segment holding `seq` (the last one whose base is at most `seq`), or the first.
    pub fn segment_for(&self, seq: u64) -> Seg {
        let i = self.segs.partition_point(|s| s.base <= seq);
        self.segs[i.saturating_sub(1)]
    }

    /// The base of the segment after the one starting at `base`, if any.
    pub fn next_base(&self, base: u64) -> Option<u64> {
        self.segs.iter().find(|s| s.base > base).map(|s| s.base)
    }

    pub fn segment_path(&self, base: u64) -> PathBuf {
        self.dir.join(format::segment_file_name(base))
    }
}

/// Reserves a segment's full size ahead of the writes (see `fsio::preallocate`); without
/// room or support the segment simply grows as it is written.
fn reserve(f: &File, seg_bytes: u64) {
    if f.metadata().is_ok_and(|m| m.len() < seg_bytes) {
        if let Err(e) = fsio::preallocate(f, seg_bytes) {
            log::debug!("queue: segment not preallocated: {e}");
        }
    }
}

/// End of the last non-zero byte at or after `from` (or `from`): what lies beyond the last
/// valid record that is not reserved, never-written space.
fn nonzero_end(path: &Path, from: u64) -> io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0u8; 64 << 10];
    let (mut pos, mut end) = (from, from);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(end);
        }
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            end = pos + i as u64 + 1;
        }
        pos += n as u64;
    }
}

fn create_segment(dir: &Path, base: u64, seg_bytes: u64) -> io::Result<(File, Seg)> {
    let path = dir.join(format::segment_file_name(base));
    let res = (|| {
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        f.write_all_at(&format::segment_header(base), 0)?;
        reserve(&f, seg_bytes);
        f.sync_all()?;
        fsio::sync_dir(dir)?;
        Ok(f)
    })();
    match res {
        Ok(f) => Ok((f, Seg { base, bytes: SEG_HEADER_LEN as u64 })),
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

fn quarantine_file(dir: &Path, base: u64) -> io::Result<()> {
    let cdir = dir.join("corrupt");
    fsio::create_dir_all_durable(&cdir)?;
    let name = format::segment_file_name(base);
    fs::rename(dir.join(&name), cdir.join(&name))?;
    fsio::sync_dir(&cdir)?;
    fsio::sync_dir(dir)
}

/// Makes an appended batch durable before its producers are told it is stored.
fn sync_append(f: &File) -> io::Result<()> {
    if cfg!(feature = "test-skip-queue-fsync") {
        return Ok(());
    }
    f.sync_data()
}
