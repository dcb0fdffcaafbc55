//! SQLite storage. One writer thread owns the write connection and commits whatever
//! writes are waiting in one transaction (group commit: one fsync for many requests), each
//! request inside its own savepoint so one failing request does not undo the others.
//! Reads go to a few reader threads with their own connections (WAL lets them run beside
//! the writer).

use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::{
    db_seq, from_db_seq, Activation, ContentInfo, Device, DeviceKey, DeviceStatus, Point, Result, SeenTimes, Store,
    StoreError, Value, SEEN_EVERY_MS,
};
use crate::notify::Notifier;

mod edge;
mod fleet;
mod identity;

/// A dataport's value is its newest point (latest `ts`, then the last stored): there is no
/// table of latest values beside `points`. A write then dirties one random page (of
/// `points_by_alias`) where an upsert of a latest-values table dirtied a second one, and
/// the pages written are what a write costs the hub (fsync, WAL, checkpoint).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices(
    id INTEGER PRIMARY KEY, vendor TEXT NOT NULL, model TEXT NOT NULL, sn TEXT NOT NULL,
    status TEXT NOT NULL, token_hash BLOB UNIQUE, token_hint TEXT,
    created_ms INTEGER NOT NULL, last_seen_ms INTEGER, token_revoked_ms INTEGER, UNIQUE(vendor, model, sn));
CREATE TABLE IF NOT EXISTS points(
    device_id INTEGER NOT NULL, alias TEXT NOT NULL, ts INTEGER NOT NULL, value TEXT NOT NULL, modified_ms INTEGER);
CREATE INDEX IF NOT EXISTS points_by_alias ON points(device_id, alias, ts);
CREATE TABLE IF NOT EXISTS streams(
    device_id INTEGER NOT NULL, stream INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    PRIMARY KEY(device_id, stream)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS content(
    vendor TEXT NOT NULL, model TEXT NOT NULL, id TEXT NOT NULL, content_type TEXT NOT NULL,
    meta TEXT NOT NULL, updated INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(vendor, model, id));
";

const READERS: usize = 4;

type Done = Box<dyn FnOnce(std::result::Result<(), StoreError>) + Send>;
/// A write: runs inside a savepoint; says whether it succeeded and what to do after commit.
/// `None`: no transaction could be begun; the job answers an error.
type WriteJob = Box<dyn FnOnce(Option<&Connection>) -> (bool, Done) + Send>;
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

pub struct SqliteStore {
    writer: Mutex<Sender<WriteJob>>,
    readers: Mutex<Sender<ReadJob>>,
    notifier: Arc<Notifier>,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Another hub process holds the write lock (several hubs may share one file): try again
/// every millisecond, for up to 10 s. SQLite's own busy_timeout sleeps up to 100 ms between
/// tries, which shows as tail latency when hub processes take turns committing.
fn busy(tries: i32) -> bool {
    if tries >= 10_000 {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_millis(1));
    true
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_handler(Some(busy))?;
    // WAL with synchronous=FULL: a commit is on disk when it returns (an agent deletes what
    // the hub acknowledged, so the hub must not lose it).
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    Ok(c)
}

impl SqliteStore {
    pub fn open(path: &Path, notifier: Arc<Notifier>) -> rusqlite::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(14), Some(format!("{}: {e}", dir.display())))
            })?;
        }
        let wconn = connect(path)?;
        wconn.execute_batch(SCHEMA)?;
        migrate(&wconn)?;
        wconn.execute_batch(edge::SCHEMA)?;
        edge::migrate(&wconn)?;
        wconn.execute_batch(fleet::SCHEMA)?;
        fleet::migrate(&wconn)?;
        wconn.execute_batch(identity::SCHEMA)?;
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push("-writer.lock");
        let lock =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| {
                rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(14), Some(format!("{lock_path:?}: {e}")))
            })?;
        let (wtx, wrx) = mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || writer(wconn, WriterLock(lock), wrx))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let (rtx, rrx) = mpsc::channel::<ReadJob>();
        let rrx = Arc::new(Mutex::new(rrx));
        for i in 0..READERS {
            let conn = connect(path)?;
            let rrx = rrx.clone();
            std::thread::Builder::new()
                .name(format!("db-reader-{i}"))
                .spawn(move || loop {
                    let job = match rrx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(j) => j,
                        Err(_) => return,
                    };
                    job(&conn);
                })
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        }
        Ok(Self { writer: Mutex::new(wtx), readers: Mutex::new(rtx), notifier })
    }

    async fn write<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |c| {
            let r = match c {
                Some(c) => f(c),
                None => Err(StoreError::Db("cannot begin a transaction".into())),
            };
            let ok = r.is_ok();
            let done: Done = Box::new(move |committed| {
                let _ = tx.send(committed.and(r));
            });
            (ok, done)
        });
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| StoreError::Db("writer thread is gone".into()))?;
        rx.await.map_err(|_| StoreError::Db("writer thread is gone".into()))?
    }

    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| StoreError::Db("reader threads are gone".into()))?;
        rx.await.map_err(|_| StoreError::Db("reader threads are gone".into()))?
    }
}

/// An advisory lock (`flock`) on `<db>-writer.lock` that the hub processes sharing one
/// database take around each write transaction. SQLite's own write lock cannot be waited
/// on, only polled (every 1 ms here): a process that just committed took it again before
/// the pollers woke, and with six hubs on one file the write p99 was 1.0 to 2.0 s; with
/// this lock, 0.5 s, before the other changes of that run. A blocked `flock` wakes the
/// moment the lock is free. (A strict first-come-first-served ticket lock did worse: the
/// turn waited for a writer thread that was not yet running.) If the lock cannot be taken,
/// SQLite's lock and the busy handler still keep the transactions apart.
struct WriterLock(std::fs::File);

/// This process's turn; it ends when dropped.
struct Turn<'a>(&'a WriterLock);

impl WriterLock {
    /// None when the lock cannot be taken (SQLite's lock still applies).
    fn lock(&self) -> Option<Turn<'_>> {
        self.flock(libc::LOCK_EX).then_some(Turn(self))
    }

    fn flock(&self, op: libc::c_int) -> bool {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: flock on a file descriptor this struct owns.
            if unsafe { libc::flock(self.0.as_raw_fd(), op) } == 0 {
                return true;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                log::warn!("database: writer lock: {e}");
                return false;
            }
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.flock(libc::LOCK_UN);
    }
}

/// The writer's nice value. Its turn holds the lock that every hub process sharing the
/// file waits for, so a writer the scheduler preempts mid-turn for request handling stalls
/// all of them. The request threads already run at nice 5 (`main.rs`). At 50,000 gateways
/// over six hubs on two cores (2026-12-02, eight alternating pairs), the writer at nice -10
/// had a lower write p99 in every pair: 229–2,036 ms (median 858) against 1,835–4,840 ms
/// (median 2,470) at nice 0, and the SQL of the turns took 11 s a run instead of 19–25 s.
/// Without root, `CAP_SYS_NICE` or an `RLIMIT_NICE` (systemd: `LimitNICE=`) the writer
/// keeps nice 0.
const WRITER_NICE: i32 = -10;

fn writer(conn: Connection, lock: WriterLock, rx: Receiver<WriteJob>) {
    if let Err(e) = crate::set_thread_nice(WRITER_NICE) {
        log::debug!("database: writer keeps the default priority: {e}");
    }
    let drain = |jobs: &mut Vec<WriteJob>| {
        while jobs.len() < 4096 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
    };
    let mut last = std::time::Instant::now() - super::COMMIT_GAP;
    while let Ok(first) = rx.recv() {
        if let Some(wait) = (last + super::COMMIT_GAP).checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut jobs = vec![first];
        drain(&mut jobs);
        let turn = lock.lock();
        // Writes that arrived while this hub waited for its turn go in the same commit.
        drain(&mut jobs);
        let mut dones = Vec::with_capacity(jobs.len());
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            drop(turn);
            log::error!("database: cannot begin a transaction: {e}");
            for job in jobs {
                let (_, done) = job(None);
                done(Ok(()));
            }
            continue;
        }
        for job in jobs {
            // Cached statements: not parsed again for every write.
            let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut st| st.execute([])).map(drop);
            let sp = run("SAVEPOINT job");
            let (ok, done) = job(Some(&conn));
            if sp.is_ok() {
                let end =
                    if ok { run("RELEASE job") } else { run("ROLLBACK TO job").and_then(|()| run("RELEASE job")) };
                if let Err(e) = end {
                    log::error!("database: ending a savepoint: {e}");
                }
            }
            dones.push(done);
        }
        let committed = conn.execute_batch("COMMIT").map_err(db);
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
            SEEN.with(|s| s.borrow_mut().forget());
        }
        drop(turn);
        last = std::time::Instant::now();
        for done in dones {
            done(committed.clone());
        }
    }
}

const DEVICE_COLS: &str = "id, vendor, model, sn, status, token_hint, created_ms, last_seen_ms";

fn device_row(r: &rusqlite::Row) -> rusqlite::Result<Device> {
    Ok(Device {
        id: r.get(0)?,
        vendor: r.get(1)?,
        model: r.get(2)?,
        sn: r.get(3)?,
        status: {
            let s: String = r.get(4)?;
            DeviceStatus::parse(&s).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    4,
                    rusqlite::types::Type::Text,
                    format!("unknown device status {s:?}").into(),
                )
            })?
        },
        token_hint: r.get(5)?,
        created_ms: r.get(6)?,
        last_seen_ms: r.get(7)?,
    })
}

/// Databases made before the latest values were read from `points` (`SCHEMA`) kept them in
/// a table `dataports`: their times of change move to the newest points, and it goes. One
/// transaction, so a hub stopped midway finds the old layout whole.
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let count = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0));
    c.execute_batch("BEGIN IMMEDIATE")?;
    let r = (|| {
        if count("SELECT count(*) FROM pragma_table_info('points') WHERE name = 'modified_ms'")? == 0 {
            c.execute_batch("ALTER TABLE points ADD COLUMN modified_ms INTEGER")?;
        }
        if count("SELECT count(*) FROM pragma_table_info('devices') WHERE name = 'token_revoked_ms'")? == 0 {
            c.execute_batch("ALTER TABLE devices ADD COLUMN token_revoked_ms INTEGER")?;
        }
        c.execute_batch(
            "CREATE INDEX IF NOT EXISTS devices_by_revoked ON devices(token_revoked_ms)
                 WHERE token_revoked_ms IS NOT NULL",
        )?;
        if count("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'dataports'")? > 0 {
            c.execute_batch(
                "UPDATE points SET modified_ms = (SELECT d.modified_ms FROM dataports d
                     WHERE d.device_id = points.device_id AND d.alias = points.alias)
                 WHERE rowid IN (SELECT (SELECT p.rowid FROM points p WHERE p.device_id = d.device_id
                     AND p.alias = d.alias ORDER BY p.ts DESC, p.rowid DESC LIMIT 1) FROM dataports d);
                 DROP TABLE dataports;",
            )?;
            log::info!("database: latest values are now read from the points (table dataports dropped)");
        }
        Ok(())
    })();
    match r {
        Ok(()) => c.execute_batch("COMMIT"),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// The rowid of a dataport's newest point (`?1` device, `?2` alias): one index seek.
const NEWEST: &str =
    "SELECT rowid FROM points WHERE device_id = ?1 AND alias = ?2 ORDER BY ts DESC, rowid DESC LIMIT 1";

fn insert_point(c: &Connection, dev: i64, alias: &str, ts: i64, value: &str, now_ms: i64) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO points(device_id, alias, ts, value, modified_ms) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![dev, alias, ts, value, now_ms])?;
    Ok(())
}

thread_local! {
    /// The writer thread's: the jobs run there.
    static SEEN: std::cell::RefCell<SeenTimes> = std::cell::RefCell::default();
}

/// A write's `last_seen_ms`, kept to within [`SEEN_EVERY_MS`]: most writes run no statement.
/// The last statement of a job, so a job that ran it is not rolled back after.
fn seen(c: &Connection, dev: i64, now_ms: i64) -> rusqlite::Result<()> {
    if !SEEN.with(|s| s.borrow().due(dev, now_ms)) {
        return Ok(());
    }
    c.prepare_cached(
        "UPDATE devices SET last_seen_ms = ?2 WHERE id = ?1 AND (last_seen_ms IS NULL OR last_seen_ms <= ?3)",
    )?
    .execute(params![dev, now_ms, now_ms - SEEN_EVERY_MS])?;
    SEEN.with(|s| s.borrow_mut().wrote(dev, now_ms));
    Ok(())
}

fn activate_row(c: &Connection, row: Option<(i64, String)>, hash: &[u8; 32], hint: &str) -> Result<Activation> {
    match row {
        None => Ok(Activation::Unknown),
        Some((_, status)) if status != DeviceStatus::Enabled.as_str() => Ok(Activation::Conflict),
        Some((id, _)) => {
            c.execute(
                "UPDATE devices SET status = 'activated', token_hash = ?2, token_hint = ?3 WHERE id = ?1",
                params![id, &hash[..], hint],
            )
            .map_err(db)?;
            Ok(Activation::Activated(id))
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn add_device(&self, key: &DeviceKey, now_ms: i64) -> Result<Device> {
        let key = key.clone();
        self.write(move |c| {
            let n = c
                .execute(
                    "INSERT INTO devices(vendor, model, sn, status, created_ms) VALUES (?1, ?2, ?3, 'enabled', ?4)
                     ON CONFLICT DO NOTHING",
                    params![key.vendor, key.model, key.sn, now_ms],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::Exists(format!("device {}/{}/{}", key.vendor, key.model, key.sn)));
            }
            c.query_row(
                &format!("SELECT {DEVICE_COLS} FROM devices WHERE id = ?1"),
                [c.last_insert_rowid()],
                device_row,
            )
            .map_err(db)
        })
        .await
    }

    async fn enable_device(&self, id: i64) -> Result<bool> {
        // The hubs sharing this file are on this machine: its clock is the database's.
        let now = crate::now_ms();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE devices SET status = 'enabled', token_hash = NULL, token_hint = NULL, token_revoked_ms = ?2
                 WHERE id = ?1",
                    params![id, now],
                )
                .map_err(db)?;
            c.execute("DELETE FROM device_keys WHERE device_id = ?1 AND state = 'revoked'", [id]).map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn devices(&self) -> Result<Vec<Device>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!("SELECT {DEVICE_COLS} FROM devices ORDER BY id")).map_err(db)?;
            let rows = st.query_map([], device_row).map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn device(&self, id: i64) -> Result<Option<Device>> {
        self.read(move |c| {
            c.query_row(&format!("SELECT {DEVICE_COLS} FROM devices WHERE id = ?1"), [id], device_row)
                .optional()
                .map_err(db)
        })
        .await
    }

    async fn serial_known(&self, sn: &str) -> Result<bool> {
        let sn = sn.to_string();
        self.read(move |c| {
            c.query_row("SELECT EXISTS(SELECT 1 FROM devices WHERE sn = ?1) OR EXISTS(SELECT 1 FROM edge_control WHERE system = ?1 AND state IS NOT NULL)", [sn], |r| r.get(0)).map_err(db)
        })
        .await
    }

    async fn devices_by_sn(&self, sn: &str) -> Result<Vec<i64>> {
        let sn = sn.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached("SELECT id FROM devices WHERE sn = ?1 ORDER BY id").map_err(db)?;
            let ids = st.query_map([sn], |r| r.get(0)).map_err(db)?;
            ids.collect::<std::result::Result<Vec<i64>, _>>().map_err(db)
        })
        .await
    }

    async fn activate(&self, key: &DeviceKey, token_hash: &[u8; 32], hint: &str) -> Result<Activation> {
        let (key, hash, hint) = (key.clone(), *token_hash, hint.to_string());
        self.write(move |c| {
            let row = c
                .query_row(
                    "SELECT id, status FROM devices WHERE vendor = ?1 AND model = ?2 AND sn = ?3",
                    params![key.vendor, key.model, key.sn],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            activate_row(c, row, &hash, &hint)
        })
        .await
    }

    async fn activate_by_sn(&self, sn: &str, token_hash: &[u8; 32], hint: &str) -> Result<Activation> {
        let (sn, hash, hint) = (sn.to_string(), *token_hash, hint.to_string());
        self.write(move |c| {
            let mut st = c.prepare("SELECT id, status FROM devices WHERE sn = ?1 LIMIT 2").map_err(db)?;
            let rows: Vec<(i64, String)> = st
                .query_map([&sn], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db)?
                .collect::<rusqlite::Result<_>>()
                .map_err(db)?;
            if rows.len() > 1 {
                return Ok(Activation::Conflict);
            }
            activate_row(c, rows.into_iter().next(), &hash, &hint)
        })
        .await
    }

    async fn device_for_token(&self, token_hash: &[u8; 32]) -> Result<Option<i64>> {
        let hash = *token_hash;
        self.read(move |c| {
            c.prepare_cached("SELECT id FROM devices WHERE token_hash = ?1")
                .and_then(|mut st| st.query_row([&hash[..]], |r| r.get(0)).optional())
                .map_err(db)
        })
        .await
    }

    async fn revoked_devices(&self, within_ms: i64) -> Result<Vec<i64>> {
        let since = crate::now_ms() - within_ms;
        self.read(move |c| {
            let mut st = c
                .prepare_cached("SELECT id FROM devices WHERE token_revoked_ms IS NOT NULL AND token_revoked_ms >= ?1")
                .map_err(db)?;
            let rows = st.query_map([since], |r| r.get(0)).map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<i64>>>().map_err(db)
        })
        .await
    }

    async fn write(&self, dev: i64, values: &[(String, String)], ts: i64, now_ms: i64) -> Result<()> {
        let owned = values.to_vec();
        self.write(move |c| {
            for (alias, value) in &owned {
                insert_point(c, dev, alias, ts, value, now_ms).map_err(db)?;
            }
            seen(c, dev, now_ms).map_err(db)
        })
        .await?;
        self.notifier.changed(dev, values.iter().map(|(a, _)| a.as_str()));
        Ok(())
    }

    async fn record(&self, dev: i64, points: &[Point], now_ms: i64) -> Result<()> {
        let owned = points.to_vec();
        self.write(move |c| {
            for p in &owned {
                insert_point(c, dev, &p.alias, p.ts, &p.value, now_ms).map_err(db)?;
            }
            seen(c, dev, now_ms).map_err(db)
        })
        .await?;
        self.notifier.changed(dev, points.iter().map(|p| p.alias.as_str()));
        Ok(())
    }

    async fn ingest(&self, dev: i64, stream: u64, points: &[(u64, Point)], now_ms: i64) -> Result<u64> {
        // Checked before anything is written (the write may share a transaction with others):
        // a seq or stream the database cannot keep refuses the batch.
        let stream = db_seq(stream)?;
        db_seq(points.iter().map(|(s, _)| *s).max().unwrap_or(0))?;
        let aliases: std::collections::BTreeSet<String> = points.iter().map(|(_, p)| p.alias.clone()).collect();
        let points = points.to_vec();
        let last = self
            .write(move |c| {
                let prev = from_db_seq(
                    c.prepare_cached("SELECT last_seq FROM streams WHERE device_id = ?1 AND stream = ?2")
                        .and_then(|mut st| st.query_row(params![dev, stream], |r| r.get::<_, i64>(0)).optional())
                        .map_err(db)?
                        .unwrap_or(0),
                );
                let mut last = prev;
                for (seq, p) in points.iter().filter(|(s, _)| *s > prev) {
                    insert_point(c, dev, &p.alias, p.ts, &p.value, now_ms).map_err(db)?;
                    last = last.max(*seq);
                }
                if last > prev {
                    let last = db_seq(last)?;
                    c.prepare_cached(
                        "INSERT INTO streams(device_id, stream, last_seq) VALUES (?1, ?2, ?3)
                         ON CONFLICT(device_id, stream) DO UPDATE SET last_seq = excluded.last_seq",
                    )
                    .and_then(|mut st| st.execute(params![dev, stream, last]))
                    .map_err(db)?;
                }
                seen(c, dev, now_ms).map_err(db)?;
                Ok(last)
            })
            .await?;
        self.notifier.changed(dev, aliases.iter().map(String::as_str));
        Ok(last)
    }

    async fn read(&self, dev: i64, aliases: &[String]) -> Result<Vec<Option<Value>>> {
        let aliases = aliases.to_vec();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT value, ts, coalesce(modified_ms, ts * 1000) FROM points WHERE rowid = ({NEWEST})"
                ))
                .map_err(db)?;
            aliases
                .iter()
                .map(|a| {
                    st.query_row(params![dev, a], |r| {
                        Ok(Value { value: r.get(0)?, ts: r.get(1)?, modified_ms: r.get(2)? })
                    })
                    .optional()
                    .map_err(db)
                })
                .collect()
        })
        .await
    }

    async fn latest(&self, dev: i64) -> Result<Vec<(String, Value)>> {
        self.read(move |c| {
            let mut st = c
                // The device's aliases by one index seek each, not a scan of its history.
                .prepare_cached(
                    "WITH RECURSIVE a(alias) AS (
                         SELECT (SELECT min(alias) FROM points WHERE device_id = ?1)
                         UNION ALL
                         SELECT (SELECT min(alias) FROM points WHERE device_id = ?1 AND alias > a.alias)
                         FROM a WHERE a.alias IS NOT NULL)
                     SELECT p.alias, p.value, p.ts, coalesce(p.modified_ms, p.ts * 1000) FROM a
                     JOIN points p ON p.rowid = (SELECT rowid FROM points WHERE device_id = ?1 AND alias = a.alias
                         ORDER BY ts DESC, rowid DESC LIMIT 1)
                     ORDER BY p.alias",
                )
                .map_err(db)?;
            let rows = st
                .query_map([dev], |r| {
                    Ok((r.get(0)?, Value { value: r.get(1)?, ts: r.get(2)?, modified_ms: r.get(3)? }))
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn history(&self, dev: i64, alias: &str, limit: i64) -> Result<Vec<Point>> {
        let alias = alias.to_string();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT alias, ts, value FROM points WHERE device_id = ?1 AND alias = ?2
                     ORDER BY ts DESC, rowid DESC LIMIT ?3",
                )
                .map_err(db)?;
            let rows = st
                .query_map(params![dev, alias, limit], |r| {
                    Ok(Point { alias: r.get(0)?, ts: r.get(1)?, value: r.get(2)? })
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn point_count(&self, dev: i64) -> Result<i64> {
        self.read(move |c| {
            c.query_row("SELECT count(*) FROM points WHERE device_id = ?1", [dev], |r| r.get(0)).map_err(db)
        })
        .await
    }

    async fn put_content(&self, key: (&str, &str), info: &ContentInfo, data: &[u8]) -> Result<()> {
        let (vendor, model, info, data) = (key.0.to_string(), key.1.to_string(), info.clone(), data.to_vec());
        self.write(move |c| {
            c.execute(
                "INSERT INTO content(vendor, model, id, content_type, meta, updated, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(vendor, model, id) DO UPDATE SET content_type = excluded.content_type,
                     meta = excluded.meta, updated = excluded.updated, data = excluded.data",
                params![vendor, model, info.id, info.content_type, info.meta, info.updated, data],
            )
            .map(drop)
            .map_err(db)
        })
        .await
    }

    async fn list_content(&self, key: (&str, &str)) -> Result<Vec<ContentInfo>> {
        let (vendor, model) = (key.0.to_string(), key.1.to_string());
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, content_type, length(data), updated, meta FROM content
                     WHERE vendor = ?1 AND model = ?2 ORDER BY id",
                )
                .map_err(db)?;
            let rows = st.query_map(params![vendor, model], content_row).map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn content_info(&self, key: (&str, &str), id: &str) -> Result<Option<ContentInfo>> {
        let (vendor, model, id) = (key.0.to_string(), key.1.to_string(), id.to_string());
        self.read(move |c| {
            c.query_row(
                "SELECT id, content_type, length(data), updated, meta FROM content
                 WHERE vendor = ?1 AND model = ?2 AND id = ?3",
                params![vendor, model, id],
                content_row,
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn read_content(&self, key: (&str, &str), id: &str, offset: i64, len: i64) -> Result<Option<Vec<u8>>> {
        let (vendor, model, id) = (key.0.to_string(), key.1.to_string(), id.to_string());
        self.read(move |c| {
            c.query_row(
                "SELECT substr(data, ?4 + 1, ?5) FROM content WHERE vendor = ?1 AND model = ?2 AND id = ?3",
                params![vendor, model, id, offset, len],
                |r| r.get::<_, Option<Vec<u8>>>(0),
            )
            .optional()
            .map(|o| o.map(Option::unwrap_or_default))
            .map_err(db)
        })
        .await
    }
}

fn content_row(r: &rusqlite::Row) -> rusqlite::Result<ContentInfo> {
    Ok(ContentInfo { id: r.get(0)?, content_type: r.get(1)?, size: r.get(2)?, updated: r.get(3)?, meta: r.get(4)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FleetStore;

    /// A database file made by `sql` alone, as an older hub left it.
    fn old_database(dir: &tempfile::TempDir, sql: &str) -> std::path::PathBuf {
        let path = dir.path().join("hub.db");
        Connection::open(&path).unwrap().execute_batch(sql).unwrap();
        path
    }

    /// A database of the layout with a `dataports` table opens with its values, their
    /// times of change and its history intact, and the old table gone.
    #[tokio::test]
    async fn an_old_database_keeps_its_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = old_database(
            &dir,
            "CREATE TABLE dataports(device_id INTEGER NOT NULL, alias TEXT NOT NULL, value TEXT NOT NULL,
                     ts INTEGER NOT NULL, modified_ms INTEGER NOT NULL, PRIMARY KEY(device_id, alias)) WITHOUT ROWID;
                 CREATE TABLE points(device_id INTEGER NOT NULL, alias TEXT NOT NULL, ts INTEGER NOT NULL, value TEXT NOT NULL);
                 CREATE INDEX points_by_alias ON points(device_id, alias, ts);
                 INSERT INTO points VALUES (1, 'a', 10, 'old'), (1, 'a', 20, 'first'), (1, 'a', 20, 'second'),
                     (1, 'b', 5, 'x'), (2, 'a', 7, 'other');
                 INSERT INTO dataports VALUES (1, 'a', 'second', 20, 20500), (1, 'b', 'x', 5, 5900),
                     (2, 'a', 'other', 7, 7100);",
        );
        let s = SqliteStore::open(&path, Arc::new(Notifier::default())).unwrap();
        let v = Store::read(&s, 1, &["a".into(), "b".into(), "c".into()]).await.unwrap();
        let got: Vec<_> = v.iter().map(|v| v.as_ref().map(|v| (v.value.as_str(), v.ts, v.modified_ms))).collect();
        assert_eq!(got, [Some(("second", 20, 20500)), Some(("x", 5, 5900)), None]);
        let latest: Vec<_> = s.latest(1).await.unwrap().into_iter().map(|(a, v)| (a, v.value, v.modified_ms)).collect();
        assert_eq!(latest, [("a".into(), "second".to_string(), 20500), ("b".into(), "x".into(), 5900)]);
        assert_eq!(s.history(1, "a", 10).await.unwrap().len(), 3);
        // The newest timestamp wins over the last write, and a tie goes to the last write.
        s.record(1, &[Point { alias: "a".into(), ts: 15, value: "late".into() }], 30_000).await.unwrap();
        assert_eq!(Store::read(&s, 1, &["a".into()]).await.unwrap()[0].as_ref().unwrap().value, "second");
        s.record(1, &[Point { alias: "a".into(), ts: 20, value: "third".into() }], 31_000).await.unwrap();
        let v = Store::read(&s, 1, &["a".into()]).await.unwrap().pop().flatten().unwrap();
        assert_eq!((v.value.as_str(), v.modified_ms), ("third", 31_000));
        drop(s);
        let c = Connection::open(&path).unwrap();
        let left: i64 =
            c.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'dataports'", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0);
    }

    /// A rollout made by a hub from before schedules and OS bundles opens as one that
    /// started when it was made and reboots (were it a bundle) at once.
    #[tokio::test]
    async fn an_old_rollout_gains_its_start_and_reboot() {
        let dir = tempfile::tempdir().unwrap();
        let path = old_database(
            &dir,
            "CREATE TABLE rollouts(id INTEGER PRIMARY KEY, name TEXT NOT NULL, package TEXT NOT NULL,
                     vendor TEXT NOT NULL, model TEXT NOT NULL, filter TEXT NOT NULL, stages TEXT NOT NULL,
                     max_failure_pct INTEGER NOT NULL, state TEXT NOT NULL, stage INTEGER NOT NULL,
                     accepted_stage INTEGER NOT NULL, reason TEXT NOT NULL, created_ms INTEGER NOT NULL,
                     updated_ms INTEGER NOT NULL);
                 INSERT INTO rollouts VALUES (1, 'r', 'sensor.v2.tar.gz', 'acme', 'gw1', '', '[100]', 10,
                     'done', 0, -1, '', 1000, 2000);",
        );
        let s = SqliteStore::open(&path, Arc::new(Notifier::default())).unwrap();
        let r = s.rollouts().await.unwrap().pop().unwrap();
        assert_eq!((r.start_ms, r.reboot.as_str(), r.stages), (1000, "now", vec![100]));
        drop(s);
        // Opening it again changes nothing more.
        let s = SqliteStore::open(&path, Arc::new(Notifier::default())).unwrap();
        assert_eq!(s.rollouts().await.unwrap()[0].start_ms, 1000);
    }

    /// An operator made before roles could do everything: it opens as an admin.
    #[tokio::test]
    async fn an_operator_from_before_roles_is_an_admin() {
        let dir = tempfile::tempdir().unwrap();
        let path = old_database(
            &dir,
            "CREATE TABLE operators(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                     password_hash TEXT NOT NULL, created_ms INTEGER NOT NULL);
                 INSERT INTO operators VALUES (1, 'ann', '$argon2id$x', 1000);",
        );
        let s = SqliteStore::open(&path, Arc::new(Notifier::default())).unwrap();
        assert_eq!(s.operator("ann").await.unwrap().unwrap().role, crate::store::Role::Admin);
        drop(s);
        let s = SqliteStore::open(&path, Arc::new(Notifier::default())).unwrap();
        assert_eq!(s.operator("ann").await.unwrap().unwrap().role, crate::store::Role::Admin, "opened again");
    }

    /// A `devices` table from before revocations were dated gains the column; a re-enable
    /// is then among the devices revoked lately, and only for as long as asked.
    #[tokio::test]
    async fn re_enables_are_found_without_reading_every_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = old_database(
            &dir,
            "CREATE TABLE devices(id INTEGER PRIMARY KEY, vendor TEXT NOT NULL, model TEXT NOT NULL,
                     sn TEXT NOT NULL, status TEXT NOT NULL, token_hash BLOB UNIQUE, token_hint TEXT,
                     created_ms INTEGER NOT NULL, last_seen_ms INTEGER, UNIQUE(vendor, model, sn));
                 INSERT INTO devices VALUES (1, 'acme', 'gw1', 'A', 'activated', x'01', '0000', 0, NULL),
                     (2, 'acme', 'gw1', 'B', 'activated', x'02', '0000', 0, NULL);",
        );
        let s = SqliteStore::open(&path, Arc::new(Notifier::default())).unwrap();
        assert_eq!(s.revoked_devices(60_000).await.unwrap(), Vec::<i64>::new());
        assert!(s.enable_device(2).await.unwrap());
        assert_eq!(s.revoked_devices(60_000).await.unwrap(), [2]);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(s.revoked_devices(10).await.unwrap(), Vec::<i64>::new(), "a revocation older than asked");
    }
}
