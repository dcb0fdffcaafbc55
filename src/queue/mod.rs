//! GMQ: the store-and-forward queue, a write-ahead log on flash.
//!
//! Producers call [`Queue::append`]; it returns only once the record is durable. Concurrent
//! producers share one write and one fdatasync per batch (group commit): the first producer
//! that finds no flush under way becomes the leader, takes the batch buffer everyone has been
//! copying into, seals it (seqs, CRCs), writes and syncs it, and wakes the others. Buffers are
//! allocated once; the enqueue path does not allocate.
//!
//! Consumers ([`Consumer`]) read in order and acknowledge; the acknowledged seq is persisted
//! with an atomic file replace; segments every consumer has passed are deleted oldest first.
//! The on-disk format and the crash argument are in `docs/queue-format.md`.

pub mod format;
mod inspect;
mod store;

use std::fmt;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::fsio;
use format::{EndKind, Item, SegmentReader, REC_HEADER_LEN, SEG_HEADER_LEN};
pub use inspect::{inspect, Inspection, Problem, ProblemKind};
use store::Store;

/// What to do when the queue holds `max_bytes` (or the disk is full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Refuse new records with [`QueueError::Full`] until consumers catch up.
    Reject,
    /// Delete the oldest segment, acknowledged or not, and count the records lost.
    DropOldest,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Cap on the bytes of all segments.
    pub max_bytes: u64,
    /// A segment is sealed once it grows past this; clamped to a quarter of `max_bytes`.
    pub segment_bytes: u64,
    /// Largest payload accepted.
    pub max_record: usize,
    /// Size of each of the two group-commit buffers: the most one write carries.
    pub batch_bytes: usize,
    pub full_policy: FullPolicy,
    /// Names of the consumers; a segment is deleted once all of them acknowledged it.
    pub consumers: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            segment_bytes: 8 << 20,
            max_record: 64 << 10,
            batch_bytes: 256 << 10,
            full_policy: FullPolicy::Reject,
            consumers: vec!["forwarder".into()],
        }
    }
}

/// Why an operation on the queue failed. Each message is meant for the operator.
#[derive(Debug)]
pub enum QueueError {
    /// The record is {len} bytes; the queue takes at most {max}.
    TooLarge { len: usize, max: usize },
    /// Records appended together take {len} bytes; one group commit takes at most {max}
    /// (`queue.batch_bytes`).
    BatchTooLarge { len: usize, max: usize },
    /// The queue holds its cap of {max} bytes and the policy is to reject.
    Full { max: u64 },
    /// The filesystem is full and nothing could be dropped.
    DiskFull,
    /// An I/O error on the queue's files.
    Io { what: String, source: io::Error },
    /// The queue directory is in use by another process.
    Locked(PathBuf),
    /// No consumer of that name is configured, or it is already open.
    Consumer(String),
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => write!(f, "record of {len} bytes is over the queue's maximum of {max}"),
            Self::BatchTooLarge { len, max } => write!(
                f,
                "the request's records take {len} bytes in the queue, over the {max} bytes one write takes \
                 (queue.batch_bytes): send fewer points per request"
            ),
            Self::Full { max } => write!(f, "queue is full ({max} bytes) and its policy is to reject new records"),
            Self::DiskFull => write!(f, "the disk holding the queue is full and nothing could be dropped"),
            Self::Io { what, source } => write!(f, "queue I/O error: {what}: {source}"),
            Self::Locked(p) => write!(f, "queue directory {} is locked by another process", p.display()),
            Self::Consumer(name) => {
                write!(f, "consumer {name:?} is not configured or already open")
            }
        }
    }
}

impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> QueueError {
    let what = what.into();
    move |source| QueueError::Io { what, source }
}

/// How a batch failed; copied to every producer of the batch.
#[derive(Debug, Clone, Copy)]
enum FlushFail {
    DiskFull,
    Io(io::ErrorKind, Option<i32>),
}

impl From<FlushFail> for QueueError {
    fn from(f: FlushFail) -> Self {
        match f {
            FlushFail::DiskFull => QueueError::DiskFull,
            FlushFail::Io(kind, errno) => QueueError::Io {
                what: "writing a batch".into(),
                source: errno.map_or_else(|| io::Error::from(kind), io::Error::from_raw_os_error),
            },
        }
    }
}

/// Result slot of one batch generation. A ring of them lets producers of older batches
/// collect their result after newer batches were flushed.
#[derive(Clone, Copy)]
struct Slot {
    gen: u64,
    waiters: u32,
    done: bool,
    result: Result<u64, FlushFail>,
}

const RING: usize = 64;

/// The ring slot of group commit `gen`.
#[allow(clippy::cast_possible_truncation, reason = "a remainder of RING (64) fits any usize")]
#[inline]
fn ring_slot(gen: u64) -> usize {
    (gen % RING as u64) as usize
}

struct State {
    pending: Vec<u8>,
    pending_count: u64,
    pending_gen: u64,
    spare: Vec<u8>,
    flushing: bool,
    inflight: u64,
    slots: [Slot; RING],
    slot_wanted: bool,
    /// Seq the next flushed record gets; every record below it is durable.
    next_seq: u64,
    first_seq: u64,
    disk_bytes: u64,
    acks: Vec<u64>,
    open_consumers: Vec<bool>,
    counters: Counters,
    /// Batches written since open (each one write and one fdatasync).
    flushes: u64,
}

/// Events worth an operator's attention, persisted in `counters`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Records deleted unacknowledged by the drop-oldest policy or moved aside as corrupt.
    pub lost_records: u64,
    /// Segments moved aside into `corrupt/`.
    pub corrupt_segments: u64,
    /// Bytes of torn tails cut off at recovery.
    pub torn_bytes: u64,
}

impl Counters {
    fn encode(&self) -> String {
        format!(
            "lost_records {}\ncorrupt_segments {}\ntorn_bytes {}\n",
            self.lost_records, self.corrupt_segments, self.torn_bytes
        )
    }

    fn decode(text: &str) -> Self {
        let mut c = Self::default();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(k), Some(Ok(v))) = (it.next(), it.next().map(str::parse)) else {
                continue;
            };
            match k {
                "lost_records" => c.lost_records = v,
                "corrupt_segments" => c.corrupt_segments = v,
                "torn_bytes" => c.torn_bytes = v,
                _ => {}
            }
        }
        c
    }
}

struct Inner {
    dir: PathBuf,
    opts: Options,
    state: Mutex<State>,
    /// Producers: a batch finished or buffer room appeared.
    flushed: Condvar,
    /// Consumers: new durable records.
    data: Condvar,
    // Lock order: `store` before `state`; nobody holds `state` while taking `store`.
    store: Mutex<Store>,
    stream: u64,
    _lock: File,
}

/// A handle to an open queue; cheap to clone and share between producer threads.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a queue lock aborts (panic = "abort"); in tests, keep going.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Snapshot of the queue's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub first_seq: u64,
    pub next_seq: u64,
    pub segments: usize,
    pub disk_bytes: u64,
    pub max_bytes: u64,
    pub consumers: Vec<(String, u64)>,
    pub counters: Counters,
    /// Batches written since open; records / flushes is the group-commit factor.
    pub flushes: u64,
}

impl Stats {
    /// Records not yet acknowledged by the slowest consumer.
    pub fn backlog(&self) -> u64 {
        let slowest = self.consumers.iter().map(|c| c.1).min().unwrap_or(self.next_seq - 1);
        (self.next_seq - 1).saturating_sub(slowest.max(self.first_seq.saturating_sub(1)))
    }
}

fn valid_consumer_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn ack_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("ack-{name}"))
}

/// The stream id in `dir/stream`, made when missing (a new queue, or one whose id was lost:
/// either way seqs may repeat, so the hub must see a new stream).
fn stream_id(dir: &Path) -> io::Result<u64> {
    let path = dir.join("stream");
    if let Some(id) = std::fs::read_to_string(&path).ok().and_then(|t| u64::from_str_radix(t.trim(), 16).ok()) {
        return Ok(id);
    }
    let mut raw = [0u8; 8];
    getrandom::getrandom(&mut raw).map_err(|e| io::Error::other(e.to_string()))?;
    let id = u64::from_le_bytes(raw) >> 1;
    fsio::write_atomic(&path, format!("{id:016x}\n").as_bytes())?;
    Ok(id)
}

fn read_ack(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Queue {
    /// Opens (or creates) the queue in `dir`, recovering from whatever a crash left.
    /// Corruption never stops it: bad segments are moved aside and counted.
    pub fn open(dir: &Path, mut opts: Options) -> Result<Self, QueueError> {
        opts.max_record = opts.max_record.min(format::MAX_RECORD_CEILING);
        opts.segment_bytes = opts.segment_bytes.min(opts.max_bytes / 4).max(64 << 10);
        opts.batch_bytes = opts.batch_bytes.max(opts.max_record + REC_HEADER_LEN);
        for c in &opts.consumers {
            if !valid_consumer_name(c) {
                return Err(QueueError::Consumer(c.clone()));
            }
        }
        let d = dir.display().to_string();
        fsio::create_dir_all_durable(dir).map_err(io_err(format!("creating {d}")))?;
        let lock_file = lock_dir(dir)?;
        fsio::clean_temp(dir).map_err(io_err(format!("cleaning {d}")))?;
        let stream = stream_id(dir).map_err(io_err(format!("the stream id in {d}")))?;
        let counters_path = dir.join("counters");
        let mut counters = std::fs::read_to_string(&counters_path).map(|t| Counters::decode(&t)).unwrap_or_default();
        let (mut store, rec) = Store::open(dir, opts.segment_bytes, opts.max_record, opts.batch_bytes as u64)
            .map_err(io_err(format!("recovering segments in {d}")))?;
        if rec.torn_bytes > 0 {
            log::warn!("queue {d}: cut a torn tail of {} bytes left by a crash", rec.torn_bytes);
        }
        for (base, why) in &rec.quarantined {
            log::error!("queue {d}: segment at seq {base} is corrupt ({why}); moved to corrupt/");
        }
        let acks: Vec<u64> =
            opts.consumers.iter().map(|c| read_ack(&ack_file(dir, c)).unwrap_or(0).min(rec.next_seq - 1)).collect();
        let min_ack = acks.iter().copied().min().unwrap_or(0);
        store.delete_acked(min_ack).map_err(io_err(format!("deleting acknowledged segments in {d}")))?;
        if rec.torn_bytes > 0 || !rec.quarantined.is_empty() {
            counters.torn_bytes += rec.torn_bytes;
            counters.corrupt_segments += rec.quarantined.len() as u64;
            fsio::write_atomic(&counters_path, counters.encode().as_bytes())
                .map_err(io_err(format!("writing {}", counters_path.display())))?;
        }
        let empty = Slot { gen: u64::MAX, waiters: 0, done: false, result: Ok(0) };
        let n_consumers = opts.consumers.len();
        let state = State {
            pending: Vec::with_capacity(opts.batch_bytes),
            pending_count: 0,
            pending_gen: 0,
            spare: Vec::with_capacity(opts.batch_bytes),
            flushing: false,
            inflight: 0,
            slots: [empty; RING],
            slot_wanted: false,
            next_seq: rec.next_seq,
            first_seq: store.first_seq(),
            disk_bytes: store.disk_bytes(),
            acks,
            open_consumers: vec![false; n_consumers],
            counters,
            flushes: 0,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                opts,
                state: Mutex::new(state),
                flushed: Condvar::new(),
                data: Condvar::new(),
                store: Mutex::new(store),
                stream,
                _lock: lock_file,
            }),
        })
    }

    /// This queue's identity (random, made with the queue): seqs are unique within it, so
    /// the hub deduplicates by (stream, seq).
    pub fn stream_id(&self) -> u64 {
        self.inner.stream
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    /// The seq of the newest durable record (0: none yet).
    pub fn last_seq(&self) -> u64 {
        lock(&self.inner.state).next_seq - 1
    }

    /// Appends one record; returns its seq once it is durable.
    pub fn append(&self, payload: &[u8]) -> Result<u64, QueueError> {
        self.append_with(payload.len(), |buf| buf.copy_from_slice(payload))
    }

    /// Appends one record of `len` bytes that `fill` writes in place (no intermediate copy);
    /// returns its seq once it is durable.
    pub fn append_with(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<u64, QueueError> {
        let mut fill = Some(fill);
        self.append_many(
            1,
            |_| len,
            |_, buf| {
                if let Some(f) = fill.take() {
                    f(buf);
                }
            },
        )
    }

    /// Appends `n` data points (`gwe_wire::point`, the records apps and telemetry write)
    /// together, as `append_many`: `point(i)` is the i-th (unix seconds, alias, value), its
    /// alias 1 to `MAX_ALIAS` bytes (callers check). The one place a point is encoded into
    /// the queue.
    pub fn append_points<'a>(
        &self,
        n: usize,
        point: impl Fn(usize) -> (i64, &'a str, &'a [u8]),
    ) -> Result<u64, QueueError> {
        self.append_many(
            n,
            |i| {
                let (_, alias, value) = point(i);
                gwe_wire::point::encoded_len(alias, value)
            },
            |i, buf| {
                let (ts, alias, value) = point(i);
                // The buffer is exactly encoded_len bytes; the alias was checked by the caller.
                let _ = gwe_wire::point::encode(ts, alias, value, buf);
            },
        )
    }

    /// Appends `n` records together: record `i` is `len(i)` bytes written in place by
    /// `fill(i, buf)`. They land in one batch, so they become durable (and are acknowledged)
    /// all together or not at all. Returns the seq of the first; the others follow it.
    pub fn append_many(
        &self,
        n: usize,
        len: impl Fn(usize) -> usize,
        fill: impl FnMut(usize, &mut [u8]),
    ) -> Result<u64, QueueError> {
        let inner = &*self.inner;
        let max = inner.opts.max_record;
        let mut total = 0;
        for i in 0..n {
            let l = len(i);
            if l > max {
                return Err(QueueError::TooLarge { len: l, max });
            }
            total += REC_HEADER_LEN + l;
        }
        if n == 0 || total > inner.opts.batch_bytes {
            return Err(QueueError::BatchTooLarge { len: total, max: inner.opts.batch_bytes });
        }
        let st = lock(&inner.state);
        let (st, gen, idx) = inner.reserve(st, n, total, len, fill)?;
        inner.collect(st, gen, idx)
    }

    /// Appends one record without waiting for it to become durable. The [`Ticket`] tells the
    /// seq once it is; a pipelining producer keeps many tickets in flight, so its records share
    /// one write and one fdatasync. Nothing is acknowledged until a ticket is waited on.
    pub fn append_async(&self, payload: &[u8]) -> Result<Ticket, QueueError> {
        let inner = &*self.inner;
        let max = inner.opts.max_record;
        if payload.len() > max {
            return Err(QueueError::TooLarge { len: payload.len(), max });
        }
        let st = lock(&inner.state);
        let (st, gen, idx) = inner.reserve(
            st,
            1,
            REC_HEADER_LEN + payload.len(),
            |_| payload.len(),
            |_, buf| buf.copy_from_slice(payload),
        )?;
        drop(st);
        Ok(Ticket { inner: self.inner.clone(), gen, idx, collected: false })
    }

    /// Opens the consumer `name` (one of `Options::consumers`), positioned after its last
    /// acknowledged record.
    pub fn consumer(&self, name: &str) -> Result<Consumer, QueueError> {
        let inner = &self.inner;
        let idx =
            inner.opts.consumers.iter().position(|c| c == name).ok_or_else(|| QueueError::Consumer(name.into()))?;
        let mut st = lock(&inner.state);
        if st.open_consumers[idx] {
            return Err(QueueError::Consumer(name.into()));
        }
        st.open_consumers[idx] = true;
        let acked = st.acks[idx];
        Ok(Consumer {
            q: self.clone(),
            idx,
            acked,
            cursor: acked + 1,
            passed: acked,
            reader: None,
            buf: Vec::new(),
            marks: Vec::new(),
        })
    }

    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let segments = lock(&inner.store).segs.len();
        let st = lock(&inner.state);
        Stats {
            first_seq: st.first_seq,
            next_seq: st.next_seq,
            segments,
            disk_bytes: st.disk_bytes,
            max_bytes: inner.opts.max_bytes,
            consumers: inner.opts.consumers.iter().cloned().zip(st.acks.iter().copied()).collect(),
            counters: st.counters,
            flushes: st.flushes,
        }
    }
}

fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(PoisonError::into_inner)
}

fn lock_dir(dir: &Path) -> Result<File, QueueError> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(QueueError::Locked(dir.to_path_buf()));
    }
    Ok(f)
}

fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

impl Inner {
    /// Copies `n` records (`total` bytes framed) into the pending batch and registers the
    /// caller as a waiter of that batch. Returns the batch generation and the index of the
    /// first record in it.
    fn reserve<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        n: usize,
        total: usize,
        len: impl Fn(usize) -> usize,
        mut fill: impl FnMut(usize, &mut [u8]),
    ) -> Result<(MutexGuard<'a, State>, u64, u64), QueueError> {
        loop {
            if self.opts.full_policy == FullPolicy::Reject
                && st.disk_bytes + st.inflight + (st.pending.len() + total) as u64 > self.opts.max_bytes
            {
                return Err(QueueError::Full { max: self.opts.max_bytes });
            }
            if st.pending.len() + total > st.pending.capacity() {
                st = if st.flushing { wait(&self.flushed, st) } else { self.flush(st) };
                continue;
            }
            let gen = st.pending_gen;
            let slot = &mut st.slots[ring_slot(gen)];
            if slot.gen != gen {
                if slot.waiters > 0 {
                    // A producer of the batch RING generations ago has not collected yet.
                    st.slot_wanted = true;
                    st = wait(&self.flushed, st);
                    continue;
                }
                *slot = Slot { gen, waiters: 0, done: false, result: Ok(0) };
            }
            break;
        }
        let gen = st.pending_gen;
        let idx = st.pending_count;
        for i in 0..n {
            let l = len(i);
            let start = st.pending.len();
            // Within capacity (checked above): no allocation.
            st.pending.resize(start + REC_HEADER_LEN + l, 0);
            // l <= max_record <= MAX_RECORD_CEILING, which fits a u32.
            #[allow(clippy::cast_possible_truncation, reason = "at most MAX_RECORD_CEILING (16 MiB)")]
            format::put_record_header(&mut st.pending[start..], l as u32);
            fill(i, &mut st.pending[start + REC_HEADER_LEN..]);
        }
        st.pending_count += n as u64;
        st.slots[ring_slot(gen)].waiters += 1;
        Ok((st, gen, idx))
    }

    /// Waits until batch `gen` is written, flushing it as leader if nobody is; returns the
    /// seq of record `idx` of that batch.
    fn collect<'a>(&'a self, mut st: MutexGuard<'a, State>, gen: u64, idx: u64) -> Result<u64, QueueError> {
        let si = ring_slot(gen);
        loop {
            let slot = &mut st.slots[si];
            if slot.done {
                let result = slot.result;
                slot.waiters -= 1;
                if slot.waiters == 0 && st.slot_wanted {
                    st.slot_wanted = false;
                    self.flushed.notify_all();
                }
                return result.map(|first| first + idx).map_err(QueueError::from);
            }
            st = if !st.flushing && st.pending_gen == gen { self.flush(st) } else { wait(&self.flushed, st) };
        }
    }

    /// Flushes the pending batch as leader. Called and returns with `state` locked.
    fn flush<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        if st.pending_count == 0 {
            return st;
        }
        st.flushing = true;
        let gen = st.pending_gen;
        let count = st.pending_count;
        let mut batch = std::mem::take(&mut st.spare);
        std::mem::swap(&mut batch, &mut st.pending);
        st.pending_count = 0;
        st.pending_gen += 1;
        st.inflight = batch.len() as u64;
        let first = st.next_seq;
        drop(st);

        let mut off = 0;
        let mut seq = first;
        while off < batch.len() {
            off += format::seal_record(&mut batch[off..], seq);
            seq += 1;
        }
        let outcome = self.write_batch(&batch, first);
        batch.clear();

        let mut st = lock(&self.state);
        st.spare = batch;
        st.inflight = 0;
        st.flushing = false;
        let slot = &mut st.slots[ring_slot(gen)];
        slot.done = true;
        match outcome {
            Ok(w) => {
                slot.result = Ok(first);
                st.next_seq = first + count;
                st.flushes += 1;
                st.disk_bytes = w.disk_bytes;
                st.first_seq = w.first_seq;
                if w.lost > 0 {
                    st.counters.lost_records += w.lost;
                    self.save_counters(&st.counters);
                }
                self.data.notify_all();
            }
            Err(f) => slot.result = Err(f),
        }
        self.flushed.notify_all();
        st
    }

    fn write_batch(&self, batch: &[u8], first: u64) -> Result<Written, FlushFail> {
        let mut store = lock(&self.store);
        let mut lost = 0;
        let drop_oldest = self.opts.full_policy == FullPolicy::DropOldest;
        loop {
            let over = store.disk_bytes() + batch.len() as u64 > self.opts.max_bytes;
            let res = if drop_oldest && over {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            } else {
                store.append(batch, first)
            };
            match res {
                Ok(()) => {
                    crate::health::ok("queue");
                    return Ok(Written { disk_bytes: store.disk_bytes(), first_seq: store.first_seq(), lost });
                }
                Err(e) if is_disk_full(&e) && drop_oldest && store.disk_bytes() > SEG_HEADER_LEN as u64 => {
                    let min_ack = lock(&self.state).acks.iter().copied().min().unwrap_or(0);
                    match store.drop_oldest(first) {
                        Ok((base, next)) => {
                            let unacked = next.saturating_sub(base.max(min_ack + 1));
                            lost += unacked;
                            log::warn!(
                                "queue {}: full; dropped segment {base}..{next} ({unacked} unacknowledged records)",
                                self.dir.display()
                            );
                        }
                        Err(e) => return Err(fail(&e)),
                    }
                }
                Err(e) => {
                    log::error!("queue {}: writing a batch failed: {e}", self.dir.display());
                    crate::health::failed("queue", &e);
                    return Err(fail(&e));
                }
            }
        }
    }

    fn save_counters(&self, c: &Counters) {
        let path = self.dir.join("counters");
        if let Err(e) = fsio::write_atomic(&path, c.encode().as_bytes()) {
            log::error!("queue: cannot write {}: {e}", path.display());
        }
    }
}

fn fail(e: &io::Error) -> FlushFail {
    if is_disk_full(e) {
        FlushFail::DiskFull
    } else {
        FlushFail::Io(e.kind(), e.raw_os_error())
    }
}

struct Written {
    disk_bytes: u64,
    first_seq: u64,
    lost: u64,
}

/// A record appended with [`Queue::append_async`], not yet known to be durable.
#[must_use = "a record is acknowledged only by waiting on its ticket"]
pub struct Ticket {
    inner: Arc<Inner>,
    gen: u64,
    idx: u64,
    collected: bool,
}

impl Ticket {
    /// Waits until the record is durable (flushing its batch if nobody is); returns its seq.
    pub fn wait(mut self) -> Result<u64, QueueError> {
        self.collected = true;
        self.inner.collect(lock(&self.inner.state), self.gen, self.idx)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.collected {
            // Keep the batch's waiter count right; the outcome is nobody's to hear.
            let _ = self.inner.collect(lock(&self.inner.state), self.gen, self.idx);
        }
    }
}

/// Reads a queue in order for one named consumer. Delivery is at-least-once: after a crash
/// or [`Consumer::rewind`], records after the last acknowledged one come again.
pub struct Consumer {
    q: Queue,
    idx: usize,
    acked: u64,
    /// Next seq to deliver.
    cursor: u64,
    /// The highest seq delivered or skipped by `seek`: the most `ack` takes.
    passed: u64,
    reader: Option<(u64, SegmentReader<File>)>,
    buf: Vec<u8>,
    /// Where reads left off before a `seek` moved away: (seq, segment base, offset), so a
    /// seek back resumes there instead of scanning the segment from its start.
    marks: Vec<(u64, u64, u64)>,
}

/// Read positions a consumer remembers across seeks (one per reader it serves).
const MARKS: usize = 8;

impl Drop for Consumer {
    fn drop(&mut self) {
        lock(&self.q.inner.state).open_consumers[self.idx] = false;
    }
}

impl Consumer {
    /// Last acknowledged seq (0: none).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Next seq `poll` would deliver.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Delivers up to `max` records in order to `f`, waiting up to `wait` for the first one.
    /// Returns how many were delivered.
    pub fn poll(&mut self, max: usize, wait: Duration, mut f: impl FnMut(u64, &[u8])) -> Result<usize, QueueError> {
        let q = self.q.clone();
        let inner = &*q.inner;
        let deadline = Instant::now() + wait;
        let durable_next = {
            let mut st = lock(&inner.state);
            while st.next_seq <= self.cursor.max(st.first_seq) {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(0);
                }
                st = inner.data.wait_timeout(st, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
            }
            if self.cursor < st.first_seq {
                self.cursor = st.first_seq;
                self.reader = None;
            }
            st.next_seq
        };
        let mut n = 0;
        while n < max && self.cursor < durable_next {
            let reader = match &mut self.reader {
                Some(r) => r,
                None => {
                    let r = self.open_reader()?;
                    self.reader.insert(r)
                }
            };
            let base = reader.0;
            let item = reader.1.next_item().map_err(io_err("reading a segment"))?;
            match item {
                Item::Record { seq, payload } => {
                    if seq >= self.cursor {
                        f(seq, payload);
                        self.cursor = seq + 1;
                        self.passed = self.passed.max(seq);
                        n += 1;
                    }
                }
                Item::End { end, .. } => {
                    let next = lock(&inner.store).next_base(base);
                    match (end, next) {
                        (EndKind::Corrupt(c), _) => self.quarantine(base, &c.to_string())?,
                        (_, Some(next)) => {
                            if next > self.cursor {
                                self.count_lost(next - self.cursor, base);
                            }
                            self.cursor = self.cursor.max(next);
                            if let Some((_, r)) = self.reader.take() {
                                self.buf = r.into_buffer();
                            }
                        }
                        // The live end of the active segment; nothing more is durable yet.
                        (_, None) => break,
                    }
                }
            }
        }
        // Forget bytes buffered past the last delivered record: beyond the durable end they
        // may be reserved zeros, or a failed batch that is cut off and rewritten. Within one
        // poll only records below `durable_next` (fixed at its start) are parsed, and those
        // were whole before it began.
        if let Some((_, r)) = self.reader.as_mut() {
            r.discard_buffered().map_err(io_err("seeking a segment"))?;
        }
        Ok(n)
    }

    fn open_reader(&mut self) -> Result<(u64, SegmentReader<File>), QueueError> {
        let inner = &*self.q.inner;
        let (seg, path) = {
            let store = lock(&inner.store);
            let seg = store.segment_for(self.cursor);
            (seg, store.segment_path(seg.base))
        };
        let mut file = File::open(&path).map_err(io_err(format!("opening {}", path.display())))?;
        self.cursor = self.cursor.max(seg.base);
        // The closest remembered position at or before the cursor in this segment, else its
        // first record.
        let (seq, offset) = self
            .marks
            .iter()
            .filter(|m| m.1 == seg.base && m.0 <= self.cursor)
            .map(|m| (m.0, m.2))
            .max()
            .unwrap_or((seg.base, SEG_HEADER_LEN as u64));
        file.seek(SeekFrom::Start(offset)).map_err(io_err("seeking a segment"))?;
        let buf = std::mem::take(&mut self.buf);
        Ok((seg.base, SegmentReader::with_buffer(file, offset, seq, inner.opts.max_record, buf)))
    }

    fn quarantine(&mut self, base: u64, why: &str) -> Result<(), QueueError> {
        let inner = &*self.q.inner;
        if let Some((_, r)) = self.reader.take() {
            self.buf = r.into_buffer();
        }
        let mut store = lock(&inner.store);
        let next_seq = lock(&inner.state).next_seq;
        let next = store.quarantine(base, next_seq).map_err(io_err("moving a corrupt segment aside"))?;
        let disk_bytes = store.disk_bytes();
        let first_seq = store.first_seq();
        drop(store);
        let lost = next.saturating_sub(self.cursor);
        log::error!(
            "queue {}: segment at seq {base} is corrupt ({why}); moved to corrupt/, {lost} records lost",
            inner.dir.display()
        );
        let mut st = lock(&inner.state);
        st.counters.corrupt_segments += 1;
        st.counters.lost_records += lost;
        st.disk_bytes = disk_bytes;
        st.first_seq = first_seq;
        inner.save_counters(&st.counters);
        self.cursor = self.cursor.max(next);
        Ok(())
    }

    fn count_lost(&self, lost: u64, base: u64) {
        let inner = &*self.q.inner;
        log::error!("queue {}: segment at seq {base} ends {lost} records short", inner.dir.display());
        let mut st = lock(&inner.state);
        st.counters.lost_records += lost;
        inner.save_counters(&st.counters);
    }

    /// Moves the read position to `seq`: back to any unacknowledged record, or forward past
    /// records not read (they count as passed for `ack`), at most to the newest durable
    /// record + 1. Answers the position taken. Positions left are remembered, so readers
    /// taking turns on one consumer do not rescan segments.
    pub fn seek(&mut self, seq: u64) -> u64 {
        let next = lock(&self.q.inner.state).next_seq;
        let seq = seq.clamp(self.acked + 1, next);
        if seq == self.cursor {
            return seq;
        }
        if let Some((base, r)) = self.reader.take() {
            let mark = (r.next_seq(), base, r.offset());
            if !self.marks.contains(&mark) {
                if self.marks.len() == MARKS {
                    self.marks.remove(0);
                }
                self.marks.push(mark);
            }
            self.buf = r.into_buffer();
        }
        self.cursor = seq;
        self.passed = self.passed.max(seq - 1);
        seq
    }

    /// Goes back to the first unacknowledged record (after a failed send).
    pub fn rewind(&mut self) {
        self.cursor = self.acked + 1;
        if let Some((_, r)) = self.reader.take() {
            self.buf = r.into_buffer();
        }
    }

    /// Acknowledges every record up to `seq` (clamped to what was delivered), persists that,
    /// and deletes segments that every consumer has acknowledged.
    pub fn ack(&mut self, seq: u64) -> Result<(), QueueError> {
        let seq = seq.min(self.passed.max(self.cursor - 1));
        if seq <= self.acked {
            return Ok(());
        }
        let inner = &*self.q.inner;
        let name = &inner.opts.consumers[self.idx];
        let path = ack_file(&inner.dir, name);
        fsio::write_atomic(&path, format!("{seq}\n").as_bytes())
            .map_err(io_err(format!("writing {}", path.display())))?;
        self.acked = seq;
        self.marks.retain(|m| m.0 > seq);
        let min_ack = {
            let mut st = lock(&inner.state);
            st.acks[self.idx] = seq;
            st.acks.iter().copied().min().unwrap_or(seq)
        };
        let mut store = lock(&inner.store);
        if store.delete_acked(min_ack).map_err(io_err("deleting acknowledged segments"))? > 0 {
            let (disk_bytes, first_seq) = (store.disk_bytes(), store.first_seq());
            drop(store);
            let mut st = lock(&inner.state);
            st.disk_bytes = disk_bytes;
            st.first_seq = first_seq;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seek_back_resumes_where_the_reader_left_that_segment() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options { consumers: vec!["c".into()], ..Options::default() };
        let q = Queue::open(dir.path(), opts).unwrap();
        for i in 0..1000u32 {
            q.append(&i.to_le_bytes()).unwrap();
        }
        let mut c = q.consumer("c").unwrap();
        c.seek(700);
        c.poll(100, Duration::ZERO, |_, _| {}).unwrap();
        let left_at = c.reader.as_ref().map(|r| r.1.offset()).unwrap();
        c.seek(5);
        c.poll(10, Duration::ZERO, |_, _| {}).unwrap();
        let second = c.reader.as_ref().map(|r| r.1.offset()).unwrap();
        // Back to where the first read stopped: no scan from the segment's start.
        c.seek(800);
        let r = c.open_reader().unwrap();
        assert_eq!((r.1.offset(), r.1.next_seq()), (left_at, 800));
        // Between the marks: from the closest one before.
        c.seek(300);
        let r = c.open_reader().unwrap();
        assert_eq!((r.1.offset(), r.1.next_seq()), (second, 15));
        // After an ack past every mark: from the segment's start.
        c.ack(400).unwrap();
        c.seek(401);
        let r = c.open_reader().unwrap();
        assert_eq!((r.1.offset(), r.1.next_seq()), (SEG_HEADER_LEN as u64, 1));
        let mut got = Vec::new();
        c.poll(2, Duration::ZERO, |s, p| got.push((s, p.to_vec()))).unwrap();
        assert_eq!(got, [(401, 400u32.to_le_bytes().to_vec()), (402, 401u32.to_le_bytes().to_vec())]);
    }
}
