//! The edge store: one SQLite file (`edge.db`, WAL, synchronous=FULL) holding the data
//! points apps wrote, the batch configurations, each provider's cursor and its batch in
//! flight, and the control state (generic configuration, last command). Each thread opens
//! its own connection; every change is one transaction.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use gwe_wire::edge::{BatchConfig, Command, CommandResult, EdgePoint, EdgeState};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS points(id INTEGER PRIMARY KEY, name TEXT NOT NULL, ts INTEGER NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batch_config(key TEXT PRIMARY KEY, interval_ms INTEGER NOT NULL, filter TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursors(provider TEXT PRIMARY KEY, last_id INTEGER NOT NULL, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending(
    provider TEXT PRIMARY KEY, batch_id TEXT NOT NULL, from_id INTEGER NOT NULL, to_id INTEGER NOT NULL,
    filter TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS control(k TEXT PRIMARY KEY, v TEXT NOT NULL);
";

pub type Result<T> = rusqlite::Result<T>;

// Every transaction that may write begins IMMEDIATE: a deferred one that read first and
// then writes fails at once with "database is locked" (no busy wait) when another thread
// committed in between.

pub struct EdgeDb {
    c: Connection,
}

/// A batch to send (or to send again): its id, the point range it covers, its points.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub batch_id: String,
    pub to_id: i64,
    pub points: Vec<EdgePoint>,
}

/// SQL for "name matches one of the patterns" (SQLite GLOB: `*`, `?`, `[...]`).
fn glob_clause(n: usize, first: usize) -> String {
    if n == 0 {
        return "0".into();
    }
    let parts: Vec<String> = (0..n).map(|i| format!("name GLOB ?{}", first + i)).collect();
    format!("({})", parts.join(" OR "))
}

impl EdgeDb {
    pub fn open(path: &Path) -> Result<Self> {
        let c = Connection::open(path)?;
        c.busy_timeout(Duration::from_secs(10))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        // An acknowledged record leaves the queue once its point is here: commits must be
        // on flash when they return.
        c.pragma_update(None, "synchronous", "FULL")?;
        // Three connections on a gateway with a few MB to spare: 256 KiB of page cache each.
        c.pragma_update(None, "cache_size", -256)?;
        c.execute_batch(SCHEMA)?;
        let db = Self { c };
        if db.get("store_id")?.is_none() {
            let mut b = [0u8; 6];
            getrandom::getrandom(&mut b)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::other(e.to_string()))))?;
            db.c.execute("INSERT OR IGNORE INTO control(k, v) VALUES ('store_id', ?1)", [hex::encode(b)])?;
        }
        Ok(db)
    }

    fn get(&self, k: &str) -> Result<Option<String>> {
        self.c.query_row("SELECT v FROM control WHERE k = ?1", [k], |r| r.get(0)).optional()
    }

    fn set(tx: &Transaction, k: &str, v: &str) -> Result<()> {
        tx.execute("INSERT INTO control(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v", [k, v])
            .map(drop)
    }

    /// Stores points in one transaction, then drops the oldest beyond `max_points`.
    #[cfg(test)]
    pub fn insert_points<'a>(
        &mut self,
        points: impl Iterator<Item = (&'a str, i64, &'a str)>,
        max_points: u64,
    ) -> Result<usize> {
        let tx = self.c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        {
            let mut st = tx.prepare_cached("INSERT INTO points(name, ts, value) VALUES (?1, ?2, ?3)")?;
            for (name, ts, value) in points {
                st.execute(params![name, ts, value])?;
                n += 1;
            }
        }
        tx.execute(
            "DELETE FROM points WHERE id <= (SELECT max(id) FROM points) - ?1",
            [i64::try_from(max_points).unwrap_or(i64::MAX)],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// The queue seq of the last record stored here: records up to it are skipped when the
    /// queue delivers them again (their acknowledgement was lost to a crash).
    pub fn fed_seq(&self) -> Result<u64> {
        Ok(self.get("fed_seq")?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Runs `f` with an insert statement inside one transaction; `f` answers how many
    /// records it took and the seq of the last. Commits them with that seq (and applies
    /// retention).
    pub fn with_insert(
        &mut self,
        max_points: u64,
        f: impl FnOnce(&mut rusqlite::CachedStatement<'_>) -> Result<(usize, u64)>,
    ) -> Result<usize> {
        let tx = self.c.transaction()?;
        // Deferred on purpose: `f` waits for queue records, and the write lock is taken only
        // by the first insert, once records are there.
        let (n, last) = {
            let mut st = tx.prepare_cached("INSERT INTO points(name, ts, value) VALUES (?1, ?2, ?3)")?;
            f(&mut st)?
        };
        if n == 0 {
            return Ok(0);
        }
        tx.execute(
            "DELETE FROM points WHERE id <= (SELECT max(id) FROM points) - ?1",
            [i64::try_from(max_points).unwrap_or(i64::MAX)],
        )?;
        Self::set(&tx, "fed_seq", &last.to_string())?;
        tx.commit()?;
        Ok(n)
    }

    pub fn point_count(&self) -> Result<i64> {
        self.c.query_row("SELECT count(*) FROM points", [], |r| r.get(0))
    }

    /// The batch configurations by key (provider name or `group:NAME`).
    pub fn batch_configs(&self) -> Result<BTreeMap<String, BatchConfig>> {
        let mut st = self.c.prepare_cached("SELECT key, interval_ms, filter FROM batch_config ORDER BY key")?;
        let rows = st.query_map([], |r| {
            let filter: String = r.get(2)?;
            Ok((
                r.get::<_, String>(0)?,
                BatchConfig {
                    interval_ms: r.get::<_, i64>(1)? as u64,
                    filter: serde_json::from_str(&filter).unwrap_or_default(),
                },
            ))
        })?;
        rows.collect()
    }

    /// The batch in flight for `provider`, rebuilt from the points it covers; else a new
    /// one of the points after its cursor that `cfg` selects (saved before it is returned).
    /// `None`: nothing to send. A provider seen for the first time starts after the newest
    /// point: it receives what is stored from then on.
    pub fn next_batch(
        &mut self,
        system: &str,
        provider: &str,
        cfg: &BatchConfig,
        max: usize,
    ) -> Result<Option<Pending>> {
        let tx = self.c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pending: Option<(String, i64, i64, String)> = tx
            .query_row("SELECT batch_id, from_id, to_id, filter FROM pending WHERE provider = ?1", [provider], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        if let Some((batch_id, from, to, filter)) = pending {
            let filter: Vec<String> = serde_json::from_str(&filter).unwrap_or_default();
            let points = select(&tx, &filter, from, to, usize::MAX)?;
            return Ok(Some(Pending { batch_id, to_id: to, points: points.into_iter().map(|(_, p)| p).collect() }));
        }
        let newest: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM points", [], |r| r.get(0))?;
        let cursor: Option<(i64, i64)> = tx
            .query_row("SELECT last_id, next_seq FROM cursors WHERE provider = ?1", [provider], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((last, seq)) = cursor else {
            tx.execute(
                "INSERT INTO cursors(provider, last_id, next_seq) VALUES (?1, ?2, 1)",
                params![provider, newest],
            )?;
            tx.commit()?;
            return Ok(None);
        };
        if newest <= last {
            return Ok(None);
        }
        let points = select(&tx, &cfg.filter, last + 1, newest, max)?;
        // A full batch ends at its last point; otherwise it covers everything up to the
        // newest point (points the filter skips need no second look).
        let to = if points.len() >= max { points.last().map_or(newest, |(id, _)| *id) } else { newest };
        if points.is_empty() {
            tx.execute("UPDATE cursors SET last_id = ?2 WHERE provider = ?1", params![provider, to])?;
            tx.commit()?;
            return Ok(None);
        }
        let store_id: String = tx.query_row("SELECT v FROM control WHERE k = 'store_id'", [], |r| r.get(0))?;
        let batch_id = format!("{system}.{store_id}.{provider}.{seq}");
        tx.execute(
            "INSERT INTO pending(provider, batch_id, from_id, to_id, filter) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![provider, batch_id, last + 1, to, serde_json::to_string(&cfg.filter).unwrap_or_default()],
        )?;
        tx.commit()?;
        Ok(Some(Pending { batch_id, to_id: to, points: points.into_iter().map(|(_, p)| p).collect() }))
    }

    /// The provider confirmed `batch_id`: the cursor moves past it.
    pub fn batch_done(&mut self, provider: &str, batch_id: &str) -> Result<()> {
        let tx = self.c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let to: Option<i64> = tx
            .query_row("SELECT to_id FROM pending WHERE provider = ?1 AND batch_id = ?2", [provider, batch_id], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(to) = to {
            tx.execute("DELETE FROM pending WHERE provider = ?1", [provider])?;
            tx.execute(
                "UPDATE cursors SET last_id = ?2, next_seq = next_seq + 1 WHERE provider = ?1",
                params![provider, to],
            )?;
        }
        tx.commit()
    }

    /// Keeps a fetched command until it is applied, so a power cut between the two does not
    /// lose it (the hub has already erased it).
    pub fn save_inbox(&mut self, raw: &str) -> Result<()> {
        let tx = self.c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::set(&tx, "inbox", raw)?;
        tx.commit()
    }

    pub fn inbox(&self) -> Result<Option<String>> {
        self.get("inbox")
    }

    /// parseSet: applies a valid command in one transaction (batch configurations, generic
    /// configuration, the result), or records only its rejection. Clears the inbox. Answers
    /// whether the generic configuration changed.
    pub fn apply(&mut self, cmd: std::result::Result<Command, (String, String)>, now_ms: i64) -> Result<bool> {
        let tx = self.c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut config_changed = false;
        let result = match cmd {
            Ok(c) => {
                for (key, cfg) in &c.batch {
                    match cfg {
                        Some(cfg) => tx.execute(
                            "INSERT INTO batch_config(key, interval_ms, filter) VALUES (?1, ?2, ?3)
                             ON CONFLICT(key) DO UPDATE SET interval_ms = excluded.interval_ms, filter = excluded.filter",
                            params![key, cfg.interval_ms as i64, serde_json::to_string(&cfg.filter).unwrap_or_default()],
                        )?,
                        None => tx.execute("DELETE FROM batch_config WHERE key = ?1", [key])?,
                    };
                }
                if let Some(config) = &c.config {
                    let text = config.to_string();
                    let old: Option<String> =
                        tx.query_row("SELECT v FROM control WHERE k = 'config'", [], |r| r.get(0)).optional()?;
                    if old.as_deref() != Some(text.as_str()) {
                        let version: i64 = tx
                            .query_row("SELECT v FROM control WHERE k = 'config_version'", [], |r| {
                                r.get::<_, String>(0)
                            })
                            .optional()?
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        Self::set(&tx, "config", &text)?;
                        Self::set(&tx, "config_version", &(version + 1).to_string())?;
                        config_changed = true;
                    }
                }
                CommandResult { id: c.id, result: "applied".into(), reason: None, at_ms: now_ms }
            }
            Err((id, reason)) => CommandResult { id, result: "rejected".into(), reason: Some(reason), at_ms: now_ms },
        };
        Self::set(&tx, "last_command", &serde_json::to_string(&result).unwrap_or_default())?;
        tx.execute("DELETE FROM control WHERE k = 'inbox'", [])?;
        tx.commit()?;
        Ok(config_changed)
    }

    /// The generic configuration (an empty object before the first).
    pub fn config(&self) -> Result<serde_json::Value> {
        Ok(self
            .get("config")?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| serde_json::Value::Object(Default::default())))
    }

    /// parseGet: the state as the store holds it.
    pub fn state(&self, system: &str) -> Result<EdgeState> {
        Ok(EdgeState {
            system: system.into(),
            batch: self.batch_configs()?,
            config: self.config()?,
            config_version: self.get("config_version")?.and_then(|v| v.parse().ok()).unwrap_or(0),
            last_command: self.get("last_command")?.and_then(|t| serde_json::from_str(&t).ok()),
        })
    }
}

/// Points with ids in `from..=to` whose name matches `filter`, at most `max`, in id order.
fn select(tx: &Transaction, filter: &[String], from: i64, to: i64, max: usize) -> Result<Vec<(i64, EdgePoint)>> {
    let sql = format!(
        "SELECT id, name, ts, value FROM points WHERE id >= ?1 AND id <= ?2 AND {} ORDER BY id LIMIT ?3",
        glob_clause(filter.len(), 4)
    );
    let mut st = tx.prepare_cached(&sql)?;
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let mut args: Vec<&dyn rusqlite::ToSql> = vec![&from, &to, &limit];
    for f in filter {
        args.push(f);
    }
    let rows =
        st.query_map(&args[..], |r| Ok((r.get::<_, i64>(0)?, EdgePoint { n: r.get(1)?, t: r.get(2)?, v: r.get(3)? })))?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(filter: &[&str]) -> BatchConfig {
        BatchConfig { interval_ms: 1000, filter: filter.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn batches_follow_the_filter_and_resume_the_same_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.db");
        let mut db = EdgeDb::open(&path).unwrap();
        db.insert_points([("temp", 1, "old")].into_iter(), 1000).unwrap();
        // First sight of the provider: it starts after what is stored.
        assert_eq!(db.next_batch("gw", "hub-a", &cfg(&["temp*"]), 10).unwrap(), None);
        db.insert_points([("temp1", 2, "a"), ("hum", 2, "b"), ("temp2", 3, "c")].into_iter(), 1000).unwrap();
        let b = db.next_batch("gw", "hub-a", &cfg(&["temp*"]), 10).unwrap().unwrap();
        assert_eq!(b.points.iter().map(|p| p.v.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        // Not confirmed: a reopened store gives the same batch again, even with a new filter.
        drop(db);
        let mut db = EdgeDb::open(&path).unwrap();
        let again = db.next_batch("gw", "hub-a", &cfg(&["hum"]), 10).unwrap().unwrap();
        assert_eq!(again, b);
        db.batch_done("hub-a", &b.batch_id).unwrap();
        db.insert_points([("temp1", 4, "d"), ("hum", 4, "e")].into_iter(), 1000).unwrap();
        let next = db.next_batch("gw", "hub-a", &cfg(&["hum"]), 10).unwrap().unwrap();
        assert_ne!(next.batch_id, b.batch_id);
        assert_eq!(next.points.iter().map(|p| p.v.as_str()).collect::<Vec<_>>(), ["e"]);
    }

    #[test]
    fn a_full_batch_ends_at_its_last_point_and_retention_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = EdgeDb::open(&dir.path().join("edge.db")).unwrap();
        assert_eq!(db.next_batch("gw", "p", &cfg(&["*"]), 2).unwrap(), None);
        let pts: Vec<(String, i64, String)> = (0..5).map(|i| (format!("x{i}"), i, i.to_string())).collect();
        db.insert_points(pts.iter().map(|(n, t, v)| (n.as_str(), *t, v.as_str())), 1000).unwrap();
        let mut got = Vec::new();
        while let Some(b) = db.next_batch("gw", "p", &cfg(&["*"]), 2).unwrap() {
            assert!(b.points.len() <= 2);
            got.extend(b.points.iter().map(|p| p.v.clone()));
            db.batch_done("p", &b.batch_id).unwrap();
        }
        assert_eq!(got, ["0", "1", "2", "3", "4"]);
        db.insert_points(pts.iter().map(|(n, t, v)| (n.as_str(), *t, v.as_str())), 3).unwrap();
        assert_eq!(db.point_count().unwrap(), 3);
    }

    #[test]
    fn a_rejected_command_changes_nothing_but_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = EdgeDb::open(&dir.path().join("edge.db")).unwrap();
        let good =
            Command::parse(br#"{"id":"1","batch":{"hub-a":{"interval_ms":500,"filter":["t*"]}},"config":{"a":1}}"#)
                .unwrap();
        assert!(db.apply(Ok(good), 1).unwrap());
        let before = db.state("gw").unwrap();
        assert_eq!(before.config_version, 1);
        assert!(!db.apply(Err(("2".into(), "interval_ms 5 is outside".into())), 2).unwrap());
        let after = db.state("gw").unwrap();
        assert_eq!(after.batch, before.batch);
        assert_eq!(after.config, before.config);
        let r = after.last_command.unwrap();
        assert_eq!((r.id.as_str(), r.result.as_str()), ("2", "rejected"));
        assert!(r.reason.unwrap().contains("interval_ms"));
    }
}
