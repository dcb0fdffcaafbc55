//! GMQ queue vs SQLite (WAL, synchronous=FULL, through rusqlite), in one process on one disk.
//!
//! SQLite (a): one transaction per message, as the original GMQ did.
//! SQLite (b): the same group commit as ours (concurrent messages share one transaction).
//! Producers either wait for each acknowledgement ("sync") or keep a window of messages in
//! flight ("pipelined", like an app posting many values per request).
//!
//!   cargo bench --bench queue_vs_sqlite -- [--messages N] [--reopen-mb M] [--dir PATH]
//!
//! N messages per synchronous run, 20 N per pipelined run.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "message counters are small"
)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use gwe::queue::{Options, Queue};
use rusqlite::Connection;

const MSG: usize = 100;
const WINDOW: usize = 1024;

fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("write_bytes: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Sync,
    Pipelined,
}

struct Outcome {
    name: String,
    producers: usize,
    mode: Mode,
    msgs_per_s: f64,
    p99_us: f64,
    bytes_per_payload: f64,
}

/// A producer-side handle: append now, learn durability later.
trait Sink: Send + Sync {
    type T: Send;
    fn append(&self, payload: &[u8]) -> Self::T;
    fn wait(&self, t: Self::T);
    /// Work the store still owes the disk for what was written (SQLite's checkpoint).
    fn settle(&self) {}
}

struct Gmq(Queue);

impl Sink for Gmq {
    type T = gwe::queue::Ticket;
    fn append(&self, p: &[u8]) -> Self::T {
        self.0.append_async(p).unwrap()
    }
    fn wait(&self, t: Self::T) {
        t.wait().unwrap();
    }
}

fn sqlite_open(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "FULL").unwrap();
    c.busy_timeout(Duration::from_secs(60)).unwrap();
    c.execute_batch("CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL)")
        .unwrap();
    c
}

/// (a): every message is its own transaction on the producer's own connection.
struct SqlitePerMessage {
    path: PathBuf,
    conns: Vec<Mutex<Connection>>,
}

thread_local!(static PRODUCER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });

impl Sink for SqlitePerMessage {
    type T = ();
    fn append(&self, p: &[u8]) {
        let c = self.conns[PRODUCER.with(|x| x.get())].lock().unwrap();
        c.execute("INSERT INTO q (payload) VALUES (?1)", [p]).unwrap();
    }
    fn wait(&self, _: ()) {}
    fn settle(&self) {
        let c = sqlite_open(&self.path);
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
}

/// (b): leader-based group commit, as in our queue: one transaction per batch.
struct SqliteGroup {
    path: PathBuf,
    state: Mutex<GroupState>,
    cv: Condvar,
    conn: Mutex<Connection>,
}

struct GroupState {
    pending: Vec<Vec<u8>>,
    gen: u64,
    done: u64,
    flushing: bool,
}

impl Sink for SqliteGroup {
    type T = u64;
    fn append(&self, p: &[u8]) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.pending.push(p.to_vec());
        s.gen
    }
    fn wait(&self, gen: u64) {
        let mut s = self.state.lock().unwrap();
        loop {
            if s.done > gen {
                return;
            }
            if !s.flushing && s.gen == gen {
                s.flushing = true;
                let batch = std::mem::take(&mut s.pending);
                s.gen += 1;
                drop(s);
                let mut c = self.conn.lock().unwrap();
                let tx = c.transaction().unwrap();
                {
                    let mut st = tx.prepare_cached("INSERT INTO q (payload) VALUES (?1)").unwrap();
                    for p in &batch {
                        st.execute([p]).unwrap();
                    }
                }
                tx.commit().unwrap();
                drop(c);
                s = self.state.lock().unwrap();
                s.done = gen + 1;
                s.flushing = false;
                self.cv.notify_all();
            } else {
                s = self.cv.wait(s).unwrap();
            }
        }
    }
    fn settle(&self) {
        let c = self.conn.lock().unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
}

fn run<S: Sink + 'static>(name: &str, sink: Arc<S>, producers: usize, mode: Mode, messages: usize) -> Outcome {
    let per = messages / producers;
    let barrier = Arc::new(Barrier::new(producers + 1));
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let (sink, barrier) = (sink.clone(), barrier.clone());
            std::thread::spawn(move || {
                PRODUCER.with(|x| x.set(p));
                let mut lat = Vec::with_capacity(per);
                let mut window: VecDeque<(Instant, S::T)> = VecDeque::with_capacity(WINDOW);
                let mut payload = [0u8; MSG];
                barrier.wait();
                for i in 0..per {
                    payload[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    payload[8] = p as u8;
                    let t0 = Instant::now();
                    let t = sink.append(&payload);
                    match mode {
                        Mode::Sync => {
                            sink.wait(t);
                            lat.push(t0.elapsed());
                        }
                        Mode::Pipelined => {
                            window.push_back((t0, t));
                            if window.len() == WINDOW {
                                let (t0, t) = window.pop_front().unwrap();
                                sink.wait(t);
                                lat.push(t0.elapsed());
                            }
                        }
                    }
                }
                for (t0, t) in window {
                    sink.wait(t);
                    lat.push(t0.elapsed());
                }
                barrier.wait();
                lat
            })
        })
        .collect();
    let w0 = write_bytes();
    barrier.wait();
    let t0 = Instant::now();
    barrier.wait();
    let secs = t0.elapsed().as_secs_f64();
    let mut lat: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    sink.settle();
    let written = write_bytes() - w0;
    lat.sort_unstable();
    let n = lat.len();
    let p99 = lat[(n * 99 / 100).min(n - 1)].as_secs_f64() * 1e6;
    Outcome {
        name: name.into(),
        producers,
        mode,
        msgs_per_s: n as f64 / secs,
        p99_us: p99,
        bytes_per_payload: written as f64 / (n * MSG) as f64,
    }
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn queue_opts() -> Options {
    Options { max_bytes: 1 << 40, consumers: vec!["bench".into()], ..Options::default() }
}

fn reopen_time(base: &Path, mb: u64) -> (Duration, Option<Duration>, u64) {
    let dir = fresh(base, "reopen");
    {
        let q = Queue::open(&dir, queue_opts()).unwrap();
        let payload = [7u8; MSG];
        let target = mb << 20;
        let mut window = VecDeque::with_capacity(4096);
        while q.stats().disk_bytes < target {
            for _ in 0..20_000 {
                window.push_back(q.append_async(&payload).unwrap());
                if window.len() == 4096 {
                    window.pop_front().unwrap().wait().unwrap();
                }
            }
        }
        for t in window {
            t.wait().unwrap();
        }
    }
    let t0 = Instant::now();
    let q = Queue::open(&dir, queue_opts()).unwrap();
    let warm = t0.elapsed();
    let records = q.stats().next_seq - 1;
    drop(q);
    // Cold: drop the page cache (root only), as after a reboot.
    let cold = std::process::Command::new("sh")
        .args(["-c", "sync && echo 3 > /proc/sys/vm/drop_caches"])
        .status()
        .ok()
        .filter(|s| s.success())
        .map(|_| {
            let t0 = Instant::now();
            let q = Queue::open(&dir, queue_opts()).unwrap();
            let d = t0.elapsed();
            drop(q);
            d
        });
    let _ = std::fs::remove_dir_all(&dir);
    (warm, cold, records)
}

fn main() {
    let mut messages = 20_000usize;
    let mut reopen_mb = 256u64;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => messages = args.next().and_then(|v| v.parse().ok()).expect("--messages N"),
            "--reopen-mb" => reopen_mb = args.next().and_then(|v| v.parse().ok()).expect("--reopen-mb M"),
            "--dir" => dir = args.next().map(PathBuf::from),
            "--bench" => {}
            _ => {}
        }
    }
    let tmp = tempfile::tempdir_in(dir.unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))).unwrap();
    let base = tmp.path();
    println!("queue vs SQLite: {messages} messages of {MSG} bytes per run, dir {}", base.display());
    let mut out = Vec::new();
    for &p in &[1usize, 4] {
        for &mode in &[Mode::Sync, Mode::Pipelined] {
            // Pipelined runs are ~100x faster; give them enough messages to measure.
            let messages = if mode == Mode::Pipelined { messages * 20 } else { messages };
            let d = fresh(base, "gmq");
            let q = Arc::new(Gmq(Queue::open(&d, queue_opts()).unwrap()));
            out.push(run("gwe", q, p, mode, messages));
            let d = fresh(base, "sqlite-b");
            let path = d.join("q.db");
            let conn = Mutex::new(sqlite_open(&path));
            let g = Arc::new(SqliteGroup {
                path: path.clone(),
                state: Mutex::new(GroupState { pending: Vec::new(), gen: 0, done: 0, flushing: false }),
                cv: Condvar::new(),
                conn,
            });
            let _ = &g.path;
            out.push(run("sqlite (b) group commit", g, p, mode, messages));
        }
        // (a) commits every message by itself: pipelining changes nothing, so it runs once.
        let d = fresh(base, "sqlite-a");
        let path = d.join("q.db");
        let conns = (0..p).map(|_| Mutex::new(sqlite_open(&path))).collect();
        let a = Arc::new(SqlitePerMessage { path, conns });
        out.push(run("sqlite (a) txn/message", a, p, Mode::Sync, messages.min(20_000)));
    }
    println!("\n{:<26} {:>3} {:>10} {:>12} {:>10} {:>16}", "store", "P", "mode", "msgs/s", "p99 us", "written/payload");
    for o in &out {
        println!(
            "{:<26} {:>3} {:>10} {:>12.0} {:>10.0} {:>16.2}",
            o.name,
            o.producers,
            format!("{:?}", o.mode).to_lowercase(),
            o.msgs_per_s,
            o.p99_us,
            o.bytes_per_payload
        );
    }
    let find = |name: &str, p: usize, m: Mode| {
        out.iter().find(|o| o.name.starts_with(name) && o.producers == p && o.mode == m)
    };
    println!("\nratios (gwe / SQLite, messages/s):");
    for &p in &[1usize, 4] {
        for &m in &[Mode::Sync, Mode::Pipelined] {
            let ours = find("gwe", p, m).unwrap();
            let a = find("sqlite (a)", p, Mode::Sync).unwrap();
            let b = find("sqlite (b)", p, m).unwrap();
            println!(
                "  P={p} {:<9}  vs (a): {:6.1}x (target 20x)   vs (b): {:5.1}x (target 2x)   written/payload {:.2} vs (a) {:.2}, (b) {:.2} (target <= 1.3)",
                format!("{m:?}").to_lowercase(),
                ours.msgs_per_s / a.msgs_per_s,
                ours.msgs_per_s / b.msgs_per_s,
                ours.bytes_per_payload,
                a.bytes_per_payload,
                b.bytes_per_payload
            );
        }
    }
    let (warm, cold, records) = reopen_time(base, reopen_mb);
    println!(
        "\nreopen of a {reopen_mb} MB queue ({records} records): {:.1} ms warm, {} (target < 100 ms)",
        warm.as_secs_f64() * 1e3,
        cold.map_or("cold: not measured (dropping caches needs root)".into(), |c| format!(
            "{:.1} ms cold",
            c.as_secs_f64() * 1e3
        ))
    );
}
