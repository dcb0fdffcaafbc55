//! The edge store, without a database: the points stay where apps wrote them, in the
//! queue, and each provider reads them from there through the `edge` consumer. Besides the
//! queue, two small JSON files in `STATE/edge/`, each only ever replaced atomically
//! (`fsio::write_atomic`: temp file, fsync, rename, fsync of the directory):
//! - `control.json`, the control thread's: batch configurations, the generic configuration
//!   and its version, the last command's result, and the inbox (a command fetched from a
//!   provider and not yet applied);
//! - `cursors.json`, the batcher's: the store id, and for each provider its cursor (the
//!   last queue seq it has been sent past), the number of its next batch, and its batch in
//!   flight (id, seq range, filter).
//!
//! The `edge` consumer's acknowledgement is the oldest seq a provider still needs, but at
//! most `max_points` records behind the newest, and at most half the queue's `max_bytes`:
//! a provider that stays away never fills the queue the apps write to.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gwe_wire::edge::{BatchConfig, Command, CommandResult, EdgePoint, EdgeState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fsio;
use crate::queue::format::REC_HEADER_LEN;
use crate::queue::{Consumer, Queue, QueueError};

pub const CONTROL_FILE: &str = "control.json";
pub const CURSORS_FILE: &str = "cursors.json";

/// Whether `name` matches the SQLite GLOB `pattern`: `*` any run, `?` one character,
/// `[...]` one of a set (`^` first inverts it, `a-z` ranges, `]` first is literal),
/// everything else itself, case-sensitive.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    glob(pattern, name) == Glob::Match
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Glob {
    Match,
    No,
    /// No match, and none for the `*` before either: stops the search (as SQLite does).
    NoWild,
}

fn glob(pattern: &str, name: &str) -> Glob {
    let mut p = pattern.chars();
    let mut s = name.chars();
    while let Some(c) = p.next() {
        match c {
            '*' => {
                let rest = loop {
                    let rest = p.as_str();
                    match p.next() {
                        Some('*') => {}
                        Some('?') => {
                            if s.next().is_none() {
                                return Glob::NoWild;
                            }
                        }
                        Some(_) => break rest,
                        None => return Glob::Match,
                    }
                };
                loop {
                    let r = glob(rest, s.as_str());
                    if r != Glob::No {
                        return r;
                    }
                    if s.next().is_none() {
                        return Glob::NoWild;
                    }
                }
            }
            '[' => {
                let Some(c2) = s.next() else { return Glob::No };
                let (mut seen, mut prior) = (false, None::<char>);
                let mut c = p.next();
                let invert = c == Some('^');
                if invert {
                    c = p.next();
                }
                if c == Some(']') {
                    seen = c2 == ']';
                    c = p.next();
                }
                while let Some(ch) = c.filter(|&ch| ch != ']') {
                    let range_to = p.as_str().chars().next().filter(|&n| n != ']');
                    match (ch, prior, range_to) {
                        ('-', Some(lo), Some(hi)) => {
                            p.next();
                            seen |= (lo..=hi).contains(&c2);
                            prior = None;
                        }
                        _ => {
                            seen |= ch == c2;
                            prior = Some(ch);
                        }
                    }
                    c = p.next();
                }
                if c.is_none() || seen == invert {
                    return Glob::No;
                }
            }
            '?' => {
                if s.next().is_none() {
                    return Glob::No;
                }
            }
            _ => {
                if s.next() != Some(c) {
                    return Glob::No;
                }
            }
        }
    }
    if s.as_str().is_empty() {
        Glob::Match
    } else {
        Glob::No
    }
}

/// Why the edge store could not be opened or kept; each message written here once.
#[derive(Debug)]
pub enum EdgeStoreError {
    /// A file or directory could not be made, read or written (`doing`: "reading", ...).
    Io { doing: &'static str, path: PathBuf, err: io::Error },
    /// A damaged state file (`why`) could not be moved aside.
    SetAside { path: PathBuf, why: String, err: io::Error },
    /// The system's random source failed (the store's id).
    Random(String),
    /// The queue the points are read from failed.
    Queue(QueueError),
}

impl std::fmt::Display for EdgeStoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io { doing, path, err } => write!(f, "{doing} {}: {err}", path.display()),
            Self::SetAside { path, why, err } => {
                write!(f, "{} is damaged ({why}) and cannot be moved aside: {err}", path.display())
            }
            Self::Random(e) => write!(f, "making the edge store's id: {e}"),
            Self::Queue(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for EdgeStoreError {}

fn writing(path: &Path) -> impl FnOnce(io::Error) -> EdgeStoreError + '_ {
    move |err| EdgeStoreError::Io { doing: "writing", path: path.to_path_buf(), err }
}

/// Reads the state file `dir/name` (creating `dir`); a missing one is the default. A
/// damaged one (bit rot, a hand edit) is moved aside to `NAME.bad`, logged and reported as
/// a fault, and the edge starts from the default rather than not at all. Only a file or
/// directory that cannot be read or set aside is an error.
fn load<T: DeserializeOwned + Default>(dir: &Path, name: &str) -> Result<(PathBuf, T), EdgeStoreError> {
    fsio::create_dir_all_durable(dir).map_err(|err| EdgeStoreError::Io {
        doing: "creating",
        path: dir.to_path_buf(),
        err,
    })?;
    let path = dir.join(name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((path, T::default())),
        Err(err) => return Err(EdgeStoreError::Io { doing: "reading", path, err }),
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok((path, v)),
        Err(e) => {
            let bad = path.with_extension("json.bad");
            std::fs::rename(&path, &bad).map_err(|err| EdgeStoreError::SetAside {
                path: path.clone(),
                why: e.to_string(),
                err,
            })?;
            let msg = format!("{} is damaged ({e}); moved to {} and started afresh", path.display(), bad.display());
            log::error!("edge: {msg}");
            crate::health::failed("edge store", &msg);
            Ok((path, T::default()))
        }
    }
}

fn save<T: Serialize>(path: &Path, v: &T) -> io::Result<()> {
    let text = serde_json::to_vec(v).map_err(io::Error::other)?;
    fsio::write_atomic(path, &text)
}

/// Command outcomes kept in the state.
pub const RECENT_RESULTS: usize = 16;

/// What `control.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlState {
    pub batch: BTreeMap<String, BatchConfig>,
    /// The generic configuration; `None` before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    pub config_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_command: Option<CommandResult>,
    /// The outcomes of the last [`RECENT_RESULTS`] commands, oldest first: each hub finds
    /// its own command's by id, whatever came after it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<CommandResult>,
    /// A command fetched and not yet applied: the provider has already erased it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbox: Option<String>,
}

/// The control thread's part of the store.
pub struct ControlStore {
    path: PathBuf,
    state: ControlState,
}

impl ControlStore {
    /// Opens `dir/control.json` (see `load` for a damaged one).
    pub fn open(dir: &Path) -> Result<Self, EdgeStoreError> {
        let (path, state) = load(dir, CONTROL_FILE)?;
        Ok(Self { path, state })
    }

    pub fn state(&self) -> &ControlState {
        &self.state
    }

    fn replace(&mut self, next: ControlState) -> io::Result<()> {
        save(&self.path, &next)?;
        self.state = next;
        Ok(())
    }

    /// Keeps a fetched command until it is applied, so a power cut between the two does not
    /// lose it.
    pub fn save_inbox(&mut self, raw: &str) -> io::Result<()> {
        let mut next = self.state.clone();
        next.inbox = Some(raw.to_string());
        self.replace(next)
    }

    /// parseSet: applies a valid command in one replacement of the file (batch
    /// configurations, generic configuration, the result), or records only its rejection.
    /// Clears the inbox. Answers whether the generic configuration changed.
    pub fn apply(&mut self, cmd: Result<Command, (String, String)>, now_ms: i64) -> io::Result<bool> {
        let mut next = self.state.clone();
        let mut config_changed = false;
        let result = match cmd {
            Ok(c) => {
                for (key, cfg) in c.batch {
                    match cfg {
                        Some(cfg) => next.batch.insert(key, cfg),
                        None => next.batch.remove(&key),
                    };
                }
                if let Some(config) = c.config {
                    if next.config.as_ref() != Some(&config) {
                        next.config = Some(config);
                        next.config_version += 1;
                        config_changed = true;
                    }
                }
                CommandResult { id: c.id, result: "applied".into(), reason: None, at_ms: now_ms }
            }
            Err((id, reason)) => CommandResult { id, result: "rejected".into(), reason: Some(reason), at_ms: now_ms },
        };
        next.recent.push(result.clone());
        let extra = next.recent.len().saturating_sub(RECENT_RESULTS);
        next.recent.drain(..extra);
        next.last_command = Some(result);
        next.inbox = None;
        self.replace(next)?;
        Ok(config_changed)
    }

    /// Takes the generic configuration of an agent that kept it elsewhere (the apps' file),
    /// when this store has none.
    pub fn adopt_config(&mut self, config: Value) -> io::Result<()> {
        if self.state.config.is_some() {
            return Ok(());
        }
        let mut next = self.state.clone();
        next.config = Some(config);
        next.config_version = 1;
        self.replace(next)
    }

    /// The generic configuration (an empty object before the first).
    pub fn config(&self) -> Value {
        self.state.config.clone().unwrap_or_else(|| Value::Object(Default::default()))
    }

    /// parseGet: the state as the store holds it.
    pub fn edge_state(&self, system: &str) -> EdgeState {
        EdgeState {
            system: system.into(),
            batch: self.state.batch.clone(),
            config: self.config(),
            config_version: self.state.config_version,
            last_command: self.state.last_command.clone(),
            results: self.state.recent.clone(),
        }
    }
}

/// A provider's batch that was saved and not yet confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub batch_id: String,
    /// The queue seqs it covers, both included.
    pub from: u64,
    pub to: u64,
    pub filter: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The provider has been sent everything its filter selects up to this seq.
    pub last: u64,
    /// The number in the next batch's id.
    pub next_batch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<InFlight>,
}

impl Cursor {
    /// The newest seq this provider no longer needs.
    fn done_through(&self) -> u64 {
        self.pending.as_ref().map_or(self.last, |p| p.from.saturating_sub(1).min(self.last))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct Cursors {
    store_id: String,
    providers: BTreeMap<String, Cursor>,
}

/// A batch to send (or to send again): its id, the last seq it covers, its points.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub batch_id: String,
    pub to: u64,
    pub points: Vec<EdgePoint>,
}

/// The batcher's part of the store: the provider cursors and the queue they point into.
pub struct PointLog {
    queue: Queue,
    consumer: Consumer,
    path: PathBuf,
    cursors: Cursors,
    max_points: u64,
    /// Bytes a record takes in the queue, on average (header included), as last read; 0
    /// before the first read.
    record_bytes: u64,
}

/// What `read` found: the points, the seq of the last, and the records and bytes it read.
struct Read {
    points: Vec<EdgePoint>,
    last: u64,
    records: u64,
    bytes: u64,
}

/// Reads the points with seqs in `from..=to` whose name one of `filter` matches, at most
/// `max`.
fn read(consumer: &mut Consumer, from: u64, to: u64, filter: &[String], max: usize) -> Result<Read, QueueError> {
    let mut points = Vec::new();
    let (mut last, mut records, mut bytes) = (0, 0, 0);
    consumer.seek(from);
    while points.len() < max && consumer.cursor() <= to {
        let want = usize::try_from(to + 1 - consumer.cursor()).unwrap_or(usize::MAX).min(512);
        let n = consumer.poll(want, Duration::ZERO, |seq, payload| {
            records += 1;
            bytes += (REC_HEADER_LEN + payload.len()) as u64;
            if points.len() >= max {
                return;
            }
            // Records that are not data points (none today) are skipped.
            let Ok(p) = gwe_wire::point::decode(payload) else { return };
            if filter.iter().any(|f| glob_match(f, p.alias)) {
                let v = String::from_utf8_lossy(p.value).into_owned();
                points.push(EdgePoint { n: p.alias.to_string(), t: p.ts, v });
                last = seq;
            }
        })?;
        if n == 0 {
            break;
        }
    }
    Ok(Read { points, last, records, bytes })
}

impl PointLog {
    /// Opens `dir/cursors.json` over the `edge` consumer of `queue`.
    pub fn open(dir: &Path, queue: Queue, consumer: Consumer, max_points: u64) -> Result<Self, EdgeStoreError> {
        let (path, mut cursors): (_, Cursors) = load(dir, CURSORS_FILE)?;
        if cursors.store_id.is_empty() {
            let mut b = [0u8; 6];
            getrandom::getrandom(&mut b).map_err(|e| EdgeStoreError::Random(e.to_string()))?;
            cursors.store_id = hex::encode(b);
            save(&path, &cursors).map_err(writing(&path))?;
        }
        Ok(Self { queue, consumer, path, cursors, max_points, record_bytes: 0 })
    }

    fn save(&self) -> Result<(), EdgeStoreError> {
        save(&self.path, &self.cursors).map_err(writing(&self.path))
    }

    /// The batch in flight for the provider `key` (`NAME@ADDRESS:PORT`, its identity, as in
    /// Arrowhead's registry), read again from the range and filter it was saved with; else
    /// a new one of the points after its cursor that `cfg` selects (saved before it is
    /// returned). `None`: nothing to send.
    ///
    /// A provider seen for the first time starts where the furthest-behind provider of the
    /// same `name` stands (one that took over from a dead one misses nothing of what it was
    /// not sent; a cursor an earlier agent kept by name alone is taken over and dropped);
    /// with none of its name, after the newest point: it receives what apps write from then
    /// on.
    pub fn next_batch(
        &mut self,
        system: &str,
        name: &str,
        key: &str,
        cfg: &BatchConfig,
        max: usize,
    ) -> Result<Option<Pending>, EdgeStoreError> {
        let newest = self.queue.last_seq();
        let Some(c) = self.cursors.providers.get_mut(key) else {
            let sibling = format!("{name}@");
            let start = self
                .cursors
                .providers
                .iter()
                .filter(|(k, _)| k.as_str() == name || k.starts_with(&sibling))
                .map(|(_, c)| c.done_through())
                .min()
                .unwrap_or(newest);
            self.cursors.providers.remove(name);
            self.cursors.providers.insert(key.into(), Cursor { last: start, next_batch: 1, pending: None });
            self.save()?;
            return Ok(None);
        };
        if let Some(p) = &c.pending {
            let r = read(&mut self.consumer, p.from, p.to, &p.filter, usize::MAX).map_err(EdgeStoreError::Queue)?;
            return Ok(Some(Pending { batch_id: p.batch_id.clone(), to: p.to, points: r.points }));
        }
        if newest <= c.last {
            return Ok(None);
        }
        let from = c.last + 1;
        let Read { points, last, records, bytes } =
            read(&mut self.consumer, from, newest, &cfg.filter, max).map_err(EdgeStoreError::Queue)?;
        if let Some(seen) = bytes.checked_div(records) {
            self.record_bytes = if self.record_bytes == 0 { seen } else { (self.record_bytes * 3 + seen) / 4 };
        }
        // A full batch ends at its last point; otherwise it covers everything up to the
        // newest record (records the filter skips need no second look).
        let to = if points.len() >= max { last } else { newest };
        if points.is_empty() {
            // Kept in memory only: after a restart these records are looked at once more.
            c.last = to;
            return Ok(None);
        }
        let batch_id = format!("{system}.{}.{key}.{}", self.cursors.store_id, c.next_batch);
        c.pending = Some(InFlight { batch_id: batch_id.clone(), from, to, filter: cfg.filter.clone() });
        self.save()?;
        Ok(Some(Pending { batch_id, to, points }))
    }

    /// The provider confirmed `batch_id`: its cursor moves past it.
    pub fn batch_done(&mut self, provider: &str, batch_id: &str) -> Result<(), EdgeStoreError> {
        let Some(c) = self.cursors.providers.get_mut(provider) else { return Ok(()) };
        let Some(p) = c.pending.take_if(|p| p.batch_id == batch_id) else { return Ok(()) };
        c.last = p.to;
        c.next_batch += 1;
        self.save()
    }

    /// Acknowledges in the queue what no provider needs any more, and anything more than
    /// `max_points` records or half the queue's bytes behind the newest, so the queue may
    /// delete those segments.
    pub fn release(&mut self) -> Result<(), QueueError> {
        let newest = self.queue.last_seq();
        let needed = self.cursors.providers.values().map(Cursor::done_through).min().unwrap_or(newest);
        let per_record = if self.record_bytes == 0 { 64 } else { self.record_bytes.max(17) };
        let keep = self.max_points.min(self.queue.options().max_bytes / 2 / per_record);
        let upto = needed.max(newest.saturating_sub(keep)).min(newest);
        if upto <= self.consumer.acked() {
            return Ok(());
        }
        if self.consumer.cursor() <= upto {
            self.consumer.seek(upto + 1);
        }
        self.consumer.ack(upto)
    }

    #[cfg(test)]
    fn acked(&self) -> u64 {
        self.consumer.acked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Options;

    fn cfg(filter: &[&str]) -> BatchConfig {
        BatchConfig { interval_ms: 1000, filter: filter.iter().map(|s| s.to_string()).collect() }
    }

    fn put(q: &Queue, points: &[(&str, &str)]) {
        for (n, v) in points {
            let mut rec = vec![0; gwe_wire::point::encoded_len(n, v.as_bytes())];
            gwe_wire::point::encode(1, n, v.as_bytes(), &mut rec).unwrap();
            q.append(&rec).unwrap();
        }
    }

    fn open(dir: &Path, max_points: u64) -> (Queue, PointLog) {
        let opts = Options { consumers: vec!["edge".into()], ..Options::default() };
        let q = Queue::open(&dir.join("queue"), opts).unwrap();
        let c = q.consumer("edge").unwrap();
        let log = PointLog::open(&dir.join("edge"), q.clone(), c, max_points).unwrap();
        (q, log)
    }

    fn values(p: &Pending) -> Vec<&str> {
        p.points.iter().map(|p| p.v.as_str()).collect()
    }

    #[test]
    fn batches_follow_the_filter_and_resume_the_same_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (q, mut log) = open(dir.path(), 1000);
        put(&q, &[("temp", "old")]);
        // First sight of the provider: it starts after what is stored.
        assert_eq!(log.next_batch("gw", "hub-a", "hub-a", &cfg(&["temp*"]), 10).unwrap(), None);
        put(&q, &[("temp1", "a"), ("hum", "b"), ("temp2", "c")]);
        let b = log.next_batch("gw", "hub-a", "hub-a", &cfg(&["temp*"]), 10).unwrap().unwrap();
        assert_eq!(values(&b), ["a", "c"]);
        // Not confirmed: a reopened store gives the same batch again, even with a new filter.
        drop((q, log));
        let (q, mut log) = open(dir.path(), 1000);
        let again = log.next_batch("gw", "hub-a", "hub-a", &cfg(&["hum"]), 10).unwrap().unwrap();
        assert_eq!(again, b);
        log.batch_done("hub-a", &b.batch_id).unwrap();
        put(&q, &[("temp1", "d"), ("hum", "e")]);
        let next = log.next_batch("gw", "hub-a", "hub-a", &cfg(&["hum"]), 10).unwrap().unwrap();
        assert_ne!(next.batch_id, b.batch_id);
        assert_eq!(values(&next), ["e"]);
    }

    #[test]
    fn two_providers_read_at_their_own_pace_and_hold_the_queue_for_the_slower() {
        let dir = tempfile::tempdir().unwrap();
        let (q, mut log) = open(dir.path(), 1000);
        assert_eq!(log.next_batch("gw", "a", "a", &cfg(&["*"]), 2).unwrap(), None);
        assert_eq!(log.next_batch("gw", "b", "b", &cfg(&["x*"]), 100).unwrap(), None);
        let pts: Vec<(String, String)> = (0..5).map(|i| (format!("x{i}"), i.to_string())).collect();
        put(&q, &pts.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect::<Vec<_>>());
        let mut got = Vec::new();
        while let Some(b) = log.next_batch("gw", "a", "a", &cfg(&["*"]), 2).unwrap() {
            assert!(b.points.len() <= 2);
            got.extend(values(&b).into_iter().map(String::from));
            log.batch_done("a", &b.batch_id).unwrap();
            // b's batch stays unconfirmed while a goes on: the queue keeps it for b.
            let pending_b = log.next_batch("gw", "b", "b", &cfg(&["x*"]), 100).unwrap().unwrap();
            assert_eq!(values(&pending_b), ["0", "1", "2", "3", "4"]);
            log.release().unwrap();
            assert_eq!(log.acked(), 0);
        }
        assert_eq!(got, ["0", "1", "2", "3", "4"]);
        let b = log.next_batch("gw", "b", "b", &cfg(&["x*"]), 100).unwrap().unwrap();
        log.batch_done("b", &b.batch_id).unwrap();
        log.release().unwrap();
        assert_eq!(log.acked(), 5);
    }

    #[test]
    fn two_providers_of_one_name_each_get_everything_and_a_newcomer_misses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (q, mut log) = open(dir.path(), 1000);
        // A cursor an earlier agent kept by the name alone.
        assert_eq!(log.next_batch("gw", "hub", "hub", &cfg(&["*"]), 100).unwrap(), None);
        put(&q, &[("a", "1"), ("a", "2")]);
        // The same hub seen with its address: it takes the old cursor over (nothing lost)
        // and the name-only cursor goes.
        assert_eq!(log.next_batch("gw", "hub", "hub@10.0.0.1:80", &cfg(&["*"]), 100).unwrap(), None);
        let b1 = log.next_batch("gw", "hub", "hub@10.0.0.1:80", &cfg(&["*"]), 100).unwrap().unwrap();
        assert_eq!(values(&b1), ["1", "2"]);
        assert!(b1.batch_id.contains(".hub@10.0.0.1:80."), "{}", b1.batch_id);
        log.batch_done("hub@10.0.0.1:80", &b1.batch_id).unwrap();
        // A second provider of that name elsewhere starts where the first stands, and from
        // then on each is sent every point: neither shadows the other.
        assert_eq!(log.next_batch("gw", "hub", "hub@10.0.0.2:80", &cfg(&["*"]), 100).unwrap(), None);
        put(&q, &[("a", "3")]);
        for key in ["hub@10.0.0.1:80", "hub@10.0.0.2:80"] {
            let b = log.next_batch("gw", "hub", key, &cfg(&["*"]), 100).unwrap().unwrap();
            assert_eq!(values(&b), ["3"], "{key}");
            log.batch_done(key, &b.batch_id).unwrap();
        }
        // The first dies before it confirms anything more; a third takes over from it.
        put(&q, &[("a", "4")]);
        let _ = log.next_batch("gw", "hub", "hub@10.0.0.1:80", &cfg(&["*"]), 100).unwrap().unwrap();
        assert_eq!(log.next_batch("gw", "hub", "hub@10.0.0.3:80", &cfg(&["*"]), 100).unwrap(), None);
        let b3 = log.next_batch("gw", "hub", "hub@10.0.0.3:80", &cfg(&["*"]), 100).unwrap().unwrap();
        assert_eq!(values(&b3), ["4"]);
    }

    #[test]
    fn retention_bounds_what_a_silent_provider_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (q, mut log) = open(dir.path(), 3);
        assert_eq!(log.next_batch("gw", "p", "p", &cfg(&["*"]), 100).unwrap(), None);
        put(&q, &[("a", "1"), ("a", "2"), ("a", "3"), ("a", "4"), ("a", "5")]);
        log.release().unwrap();
        assert_eq!(log.acked(), 2);
        // The oldest two are given up: the provider gets the three kept.
        let b = log.next_batch("gw", "p", "p", &cfg(&["*"]), 100).unwrap().unwrap();
        assert_eq!(values(&b), ["3", "4", "5"]);
    }

    #[test]
    fn a_silent_provider_holds_at_most_half_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options { max_bytes: 256 << 10, consumers: vec!["edge".into()], ..Options::default() };
        let q = Queue::open(&dir.path().join("queue"), opts).unwrap();
        let mut log =
            PointLog::open(&dir.path().join("edge"), q.clone(), q.consumer("edge").unwrap(), 100_000).unwrap();
        assert_eq!(log.next_batch("gw", "p", "p", &cfg(&["*"]), 10).unwrap(), None);
        let v = "x".repeat(100);
        for _ in 0..2000 {
            put(&q, &[("a", v.as_str())]);
        }
        // One read teaches the edge the records' size (about 128 bytes).
        let b = log.next_batch("gw", "p", "p", &cfg(&["*"]), 10).unwrap().unwrap();
        assert_eq!(b.points.len(), 10);
        log.release().unwrap();
        let held = q.last_seq() - log.acked();
        assert!(held * 128 <= 128 << 10 && held * 128 > 64 << 10, "{held} records held");
    }

    #[test]
    fn without_providers_the_edge_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (q, mut log) = open(dir.path(), 1000);
        put(&q, &[("a", "1"), ("a", "2")]);
        log.release().unwrap();
        assert_eq!(log.acked(), 2);
    }

    #[test]
    fn a_rejected_command_changes_nothing_but_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = ControlStore::open(dir.path()).unwrap();
        let good =
            Command::parse(br#"{"id":"1","batch":{"hub-a":{"interval_ms":500,"filter":["t*"]}},"config":{"a":1}}"#)
                .unwrap();
        db.save_inbox("raw").unwrap();
        assert!(db.apply(Ok(good), 1).unwrap());
        assert_eq!(db.state().inbox, None);
        let before = db.edge_state("gw");
        assert_eq!(before.config_version, 1);
        assert!(!db.apply(Err(("2".into(), "interval_ms 5 is outside".into())), 2).unwrap());
        let after = ControlStore::open(dir.path()).unwrap().edge_state("gw");
        assert_eq!(after.batch, before.batch);
        assert_eq!(after.config, before.config);
        let r = after.last_command.unwrap();
        assert_eq!((r.id.as_str(), r.result.as_str()), ("2", "rejected"));
        assert!(r.reason.unwrap().contains("interval_ms"));
    }

    #[test]
    fn a_damaged_state_file_is_moved_aside_and_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONTROL_FILE), b"{\"batch\":").unwrap();
        let db = ControlStore::open(dir.path()).unwrap();
        assert_eq!(db.state(), &ControlState::default());
        assert!(dir.path().join("control.json.bad").exists());
    }

    #[test]
    fn glob_matches_like_sqlite() {
        let cases = [
            ("temp*", "temp1", true),
            ("temp*", "tem", false),
            ("t?mp", "temp", true),
            ("t?mp", "tmp", false),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[]]", "]", true),
            ("[a-]", "-", true),
            ("*[0-9]", "ab7", true),
            ("*a*b", "xaxxb", true),
            ("*a*b", "xaxxbc", false),
            ("a[", "a[", false),
            ("", "", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(glob_match(p, n), want, "{p:?} {n:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn glob_agrees_with_sqlite(p in "[ab*?^\\[\\]-]{0,7}", n in "[ab\\]^-]{0,6}") {
            let c = rusqlite::Connection::open_in_memory().unwrap();
            let want: bool = c.query_row("SELECT ?1 GLOB ?2", [&n, &p], |r| r.get(0)).unwrap();
            proptest::prop_assert_eq!(glob_match(&p, &n), want, "pattern {:?} name {:?}", p, n);
        }
    }
}
