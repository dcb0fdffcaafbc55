//! One writer for the hubs that serve one SQLite file.
//!
//! Hubs sharing a file took turns at writing (`flock`), and every turn began by reading
//! again the pages the other hubs had changed: SQLite drops a connection's page cache
//! whenever another connection has committed. At 50,000 gateways on six hubs the writers
//! spent more time in `pread`, `pwrite` and `fsync` than in SQL, all of it under one lock.
//!
//! So the hub that holds `<db>-leader.lock` (`flock`, taken by whichever `serve` gets it
//! first) listens on `<db>-writer.sock` and commits the dataport writes (`write`, `record`,
//! `ingest`) of all hubs in its own group commits; the others send theirs there. Its
//! cache stays warm, and no hub waits for a turn to write a value.
//!
//! Nothing depends on the leader being there. Every other write, and any dataport write
//! while no leader answers, goes through the hub's own writer and the `flock` turns. When
//! the leader ends, the kernel frees its lock and closes its socket. Its followers then
//! write on their own, and within a second one of them leads. A write that was sent but not
//! answered is written again locally, as the device would send it again: a value's point
//! is then twice in the history at worst; batches are idempotent by sequence.
//!
//! Wire (`docs/cloud-protocol.md`): JSON lines over the Unix socket, `{"id":N,"op":{..}}`
//! from a follower, `{"id":N,"r":{"Ok":last_seq}}` or `{"id":N,"r":{"Err":..}}` back, in
//! the order the leader commits them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{apply, write_job, WriteJob};
use crate::store::{Point, Result, StoreError};

/// How often a hub without a leader to write through tries to lead or to reach one.
const TEND_EVERY: Duration = Duration::from_secs(1);
/// How long a follower gathers requests before it sends them: the leader commits them
/// together anyway, and a `write` a request cost more CPU than the leader's warm cache saved.
const GATHER: Duration = Duration::from_millis(2);
/// A leader that has not answered a write in this long is given up on.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// A request line longer than this ends the follower's connection (a batch is at most
/// the hub's body limit, a few MB, as JSON).
const MAX_LINE: usize = 64 << 20;

/// A dataport write, as a follower sends it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Op {
    Write { dev: i64, values: Vec<(String, String)>, ts: i64, now_ms: i64 },
    Record { dev: i64, points: Vec<Point>, now_ms: i64 },
    Ingest { dev: i64, stream: u64, points: Vec<(u64, Point)>, now_ms: i64 },
}

#[derive(Serialize)]
struct Request<'a> {
    id: u64,
    op: &'a Op,
}

#[derive(Deserialize)]
struct Incoming {
    id: u64,
    op: Op,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    id: u64,
    r: Result<u64>,
}

/// This hub's part in writing a shared file: leading, following, or neither for now.
pub(super) struct Shared {
    lock_path: PathBuf,
    sock_path: PathBuf,
    /// The hub's own writer thread: where a leader puts the followers' writes.
    writer: Mutex<Sender<WriteJob>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The leader lock, held for as long as this hub leads (to the end of the process).
    leading: Option<File>,
    link: Option<Link>,
}

impl Shared {
    /// Leads, or follows the leader, or neither (then tries again every second).
    pub(super) fn start(db: &Path, writer: Sender<WriteJob>) -> Arc<Self> {
        let beside = |suffix: &str| {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        };
        let me = Arc::new(Self {
            lock_path: beside("-leader.lock"),
            sock_path: beside("-writer.sock"),
            writer: Mutex::new(writer),
            state: Mutex::new(State::default()),
        });
        if me.tend() {
            let weak = Arc::downgrade(&me);
            let spawned = std::thread::Builder::new().name("db-leader".into()).spawn(move || tend_loop(weak));
            if let Err(e) = spawned {
                log::warn!("database: no thread to find the writing hub: {e}; this hub writes on its own");
            }
        }
        me
    }

    /// One look: true while there is more to tend (not leading).
    fn tend(&self) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.leading.is_some() {
            return false;
        }
        if st.link.as_ref().is_some_and(Link::alive) {
            return true;
        }
        if st.link.take().is_some() {
            log::warn!("database: the writing hub went away; this hub writes on its own until one answers");
        }
        match self.lead() {
            Ok(Some(lock)) => {
                log::info!(
                    "database: this hub writes the values of all hubs on this file ({})",
                    self.sock_path.display()
                );
                st.leading = Some(lock);
                return false;
            }
            Ok(None) => {}
            Err(e) => log::warn!("database: cannot lead the writing: {e}"),
        }
        match Link::connect(&self.sock_path) {
            Ok(link) => {
                log::info!("database: this hub writes values through {}", self.sock_path.display());
                st.link = Some(link);
            }
            Err(e) => log::debug!("database: no writing hub at {}: {e}", self.sock_path.display()),
        }
        true
    }

    /// Takes the leader lock if it is free and serves the socket. None: another hub leads.
    fn lead(&self) -> std::io::Result<Option<File>> {
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&self.lock_path)?;
        // SAFETY: flock on a file descriptor `lock` owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
        }
        // Whoever made a socket here before no longer holds the lock: it is stale.
        match std::fs::remove_file(&self.sock_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&self.sock_path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.sock_path.display())))?;
        // Only this user's hubs may write through it, as only they may open the database.
        std::fs::set_permissions(&self.sock_path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).clone();
        std::thread::Builder::new().name("db-lead".into()).spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(conn) => {
                        let writer = writer.clone();
                        let spawned =
                            std::thread::Builder::new().name("db-follower".into()).spawn(move || serve(conn, writer));
                        if let Err(e) = spawned {
                            log::warn!("database: no thread for a hub writing through this one: {e}");
                        }
                    }
                    Err(e) => {
                        log::warn!("database: accepting a hub on the writer socket: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
        Ok(Some(lock))
    }

    /// Sends a write to the leader and waits for its answer. None: no leader took it,
    /// and the caller writes it itself.
    pub(super) async fn send(&self, op: &Op) -> Option<Result<u64>> {
        let rx = {
            let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.link.as_ref()?.send(op)?
        };
        match tokio::time::timeout(ANSWER_WAIT, rx).await {
            Ok(Ok(r)) => Some(r),
            // The connection closed before the answer came.
            Ok(Err(_)) => None,
            Err(_) => {
                if let Some(link) = self.state.lock().unwrap_or_else(|e| e.into_inner()).link.take() {
                    link.common.close();
                }
                Some(Err(StoreError::Db(format!(
                    "the hub writing for this database ({}) did not answer in {} s",
                    self.sock_path.display(),
                    ANSWER_WAIT.as_secs()
                ))))
            }
        }
    }
}

fn tend_loop(me: Weak<Shared>) {
    loop {
        std::thread::sleep(TEND_EVERY);
        match me.upgrade() {
            Some(me) if me.tend() => {}
            _ => return,
        }
    }
}

/// The leader's side of one follower: its writes into the writer thread, the answers back.
fn serve(conn: UnixStream, writer: Sender<WriteJob>) {
    let Ok(out) = conn.try_clone() else { return };
    let (atx, arx) = mpsc::channel::<Answer>();
    let answering = std::thread::Builder::new().name("db-answers".into()).spawn(move || answer(out, arx));
    if answering.is_err() {
        return;
    }
    let mut rd = BufReader::new(&conn);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        match (&mut rd).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(n) if n > MAX_LINE => {
                log::warn!("database: a writing request over {MAX_LINE} bytes; closing that hub's connection");
                break;
            }
            Ok(_) => {}
            Err(e) => {
                log::warn!("database: reading a hub's writes: {e}");
                break;
            }
        }
        let Incoming { id, op } = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("database: a malformed writing request ({e}); closing that hub's connection");
                break;
            }
        };
        let to_answer = atx.clone();
        let job = write_job(move |c| apply(c, &op), move |r| drop(to_answer.send(Answer { id, r })));
        if writer.send(job).is_err() {
            let _ = atx.send(Answer { id, r: Err(StoreError::Db("writer thread is gone".into())) });
            break;
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

/// Writes answers back, as many in one `write` as are ready.
fn answer(mut out: UnixStream, rx: Receiver<Answer>) {
    let mut buf = Vec::with_capacity(4096);
    while let Ok(first) = rx.recv() {
        buf.clear();
        for a in std::iter::once(first).chain(rx.try_iter()) {
            if serde_json::to_writer(&mut buf, &a).is_ok() {
                buf.push(b'\n');
            }
        }
        if out.write_all(&buf).is_err() {
            break;
        }
    }
    let _ = out.shutdown(std::net::Shutdown::Both);
}

type Pending = HashMap<u64, oneshot::Sender<Result<u64>>>;

/// A follower's connection to the leader.
struct Link {
    outbox: Arc<Outbox>,
    next: AtomicU64,
    common: Arc<Common>,
}

/// Requests waiting to be sent: the sending thread is woken once for a batch, not once a
/// write (a thread woken per write cost as much CPU as the warm cache saved).
#[derive(Default)]
struct Outbox {
    buf: Mutex<Vec<u8>>,
    ready: Condvar,
}

/// What the link's two threads share with it.
struct Common {
    stream: UnixStream,
    alive: AtomicBool,
    /// The writes sent and not yet answered; dropping one tells its caller to write it itself.
    pending: Mutex<Pending>,
}

impl Common {
    fn close(&self) {
        self.alive.store(false, Ordering::SeqCst);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Link {
    fn connect(sock: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(sock)?;
        let (rd, wr) = (stream.try_clone()?, stream.try_clone()?);
        let common = Arc::new(Common { stream, alive: AtomicBool::new(true), pending: Mutex::new(HashMap::new()) });
        let outbox = Arc::new(Outbox::default());
        let (c, o) = (common.clone(), outbox.clone());
        std::thread::Builder::new().name("db-send".into()).spawn(move || send_loop(wr, &o, &c))?;
        let c = common.clone();
        if let Err(e) = std::thread::Builder::new().name("db-recv".into()).spawn(move || recv_loop(rd, &c)) {
            common.close();
            outbox.ready.notify_one();
            return Err(e);
        }
        Ok(Self { outbox, next: AtomicU64::new(1), common })
    }

    fn alive(&self) -> bool {
        self.common.alive.load(Ordering::SeqCst)
    }

    fn send(&self, op: &Op) -> Option<oneshot::Receiver<Result<u64>>> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.common.pending.lock().unwrap_or_else(|e| e.into_inner());
            // Checked with the map locked: `close` empties it after marking the link dead,
            // so a write is either refused here or its sender dropped there.
            if !self.alive() {
                return None;
            }
            pending.insert(id, tx);
        }
        let mut buf = self.outbox.buf.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = buf.is_empty();
        if serde_json::to_writer(&mut *buf, &Request { id, op }).is_err() {
            drop(buf);
            self.common.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            return None;
        }
        buf.push(b'\n');
        drop(buf);
        if was_empty {
            self.outbox.ready.notify_one();
        }
        Some(rx)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.common.close();
        self.outbox.ready.notify_one();
    }
}

/// Sends the requests: woken by the first of a batch, it gathers for [`GATHER`] and sends
/// them in one `write`.
fn send_loop(mut wr: UnixStream, outbox: &Outbox, common: &Common) {
    let mut out = Vec::with_capacity(64 << 10);
    while common.alive.load(Ordering::SeqCst) {
        let mut buf = outbox.buf.lock().unwrap_or_else(|e| e.into_inner());
        while buf.is_empty() && common.alive.load(Ordering::SeqCst) {
            buf = outbox.ready.wait(buf).unwrap_or_else(|e| e.into_inner());
        }
        drop(buf);
        std::thread::sleep(GATHER);
        std::mem::swap(&mut *outbox.buf.lock().unwrap_or_else(|e| e.into_inner()), &mut out);
        if wr.write_all(&out).is_err() {
            break;
        }
        out.clear();
    }
    common.close();
}

/// Hands each answer to the write waiting for it.
fn recv_loop(rd: UnixStream, common: &Common) {
    let mut rd = BufReader::new(rd);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match rd.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Ok(Answer { id, r }) = serde_json::from_slice::<Answer>(&line) else {
            log::warn!("database: a malformed answer from the writing hub; writing on its own");
            break;
        };
        if let Some(tx) = common.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
            let _ = tx.send(r);
        }
    }
    common.close();
}
