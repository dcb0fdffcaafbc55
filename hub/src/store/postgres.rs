//! PostgreSQL storage, for fleets that outgrow one machine: several hub processes share the
//! database. Writes that change dataports send `NOTIFY gwe_dataports` with the device ids
//! and aliases (many devices a notification); every hub LISTENs, so a long-poll on one hub
//! wakes for a write that landed on another. Dataport writes are group-committed: one task per hub puts the writes waiting at
//! that moment in one transaction, so a commit (its WAL flush, and NOTIFY's global commit
//! lock) serves many gateways.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::{
    db_seq, from_db_seq, unknown_state, Activation, ContentInfo, Device, DeviceKey, DeviceStatus, Point, Result,
    SeenTimes, Store, StoreError, Value, SEEN_EVERY_MS,
};
use crate::notify::Notifier;

mod edge;
mod fleet;
mod identity;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices(
    id BIGSERIAL PRIMARY KEY, vendor TEXT NOT NULL, model TEXT NOT NULL, sn TEXT NOT NULL,
    status TEXT NOT NULL, token_hash BYTEA UNIQUE, token_hint TEXT,
    created_ms BIGINT NOT NULL, last_seen_ms BIGINT, UNIQUE(vendor, model, sn));
DO $$ BEGIN
    -- Not ALTER ... IF NOT EXISTS alone: it locks the table even when the column is there.
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'devices' AND column_name = 'token_revoked_ms') THEN
        ALTER TABLE devices ADD COLUMN token_revoked_ms BIGINT;
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS devices_by_revoked ON devices(token_revoked_ms) WHERE token_revoked_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS dataports(
    device_id BIGINT NOT NULL, alias TEXT NOT NULL, value TEXT NOT NULL, ts BIGINT NOT NULL,
    modified_ms BIGINT NOT NULL, PRIMARY KEY(device_id, alias));
CREATE TABLE IF NOT EXISTS points(
    id BIGSERIAL PRIMARY KEY, device_id BIGINT NOT NULL, alias TEXT NOT NULL, ts BIGINT NOT NULL, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS points_by_alias ON points(device_id, alias, ts);
CREATE TABLE IF NOT EXISTS streams(
    device_id BIGINT NOT NULL, stream BIGINT NOT NULL, last_seq BIGINT NOT NULL, PRIMARY KEY(device_id, stream));
CREATE TABLE IF NOT EXISTS content(
    vendor TEXT NOT NULL, model TEXT NOT NULL, id TEXT NOT NULL, content_type TEXT NOT NULL,
    meta TEXT NOT NULL, updated BIGINT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY(vendor, model, id));
";

/// Any number for the advisory lock that serializes schema creation between hubs.
const SCHEMA_LOCK: i64 = 0x6777_6568_7562;

pub struct PgStore {
    pool: Pool,
    notifier: Arc<Notifier>,
    records: tokio::sync::mpsc::UnboundedSender<RecordJob>,
}

/// A dataport write waiting for the group-commit task.
struct RecordJob {
    dev: i64,
    points: Vec<Point>,
    now_ms: i64,
    done: tokio::sync::oneshot::Sender<Result<()>>,
}

/// Most writes in one group commit.
const GROUP_MAX: usize = 512;

/// Commits the waiting writes together, in turn.
async fn group_commit(pool: Pool, mut rx: tokio::sync::mpsc::UnboundedReceiver<RecordJob>) {
    let mut jobs = Vec::with_capacity(GROUP_MAX);
    let mut last = tokio::time::Instant::now() - super::COMMIT_GAP;
    let mut seen_times = SeenTimes::default();
    while let Some(first) = rx.recv().await {
        tokio::time::sleep_until(last + super::COMMIT_GAP).await;
        last = tokio::time::Instant::now();
        jobs.push(first);
        while jobs.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let together = commit_records(&pool, &jobs, &mut seen_times).await;
        for job in jobs.drain(..) {
            let r = match &together {
                Ok(()) => Ok(()),
                // One bad write must not fail the others: each goes alone.
                Err(_) => commit_records(&pool, std::slice::from_ref(&job), &mut seen_times).await,
            };
            let _ = job.done.send(r);
        }
    }
}

async fn commit_records(pool: &Pool, jobs: &[RecordJob], seen_times: &mut SeenTimes) -> Result<()> {
    let mut c = pool.get().await.map_err(db)?;
    let tx = c.transaction().await.map_err(db)?;
    let refs: Vec<Vec<&Point>> = jobs.iter().map(|j| j.points.iter().collect()).collect();
    let writes: Vec<(i64, &[&Point], i64)> =
        jobs.iter().zip(&refs).map(|(j, r)| (j.dev, r.as_slice(), j.now_ms)).collect();
    let (ids, times) = store_points(&tx, &writes, seen_times).await?;
    tx.commit().await.map_err(db)?;
    for (dev, t) in ids.into_iter().zip(times) {
        seen_times.wrote(dev, t);
    }
    Ok(())
}

fn db(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

impl PgStore {
    pub async fn connect(url: &str, notifier: Arc<Notifier>) -> std::result::Result<Self, String> {
        let pg: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
        let mgr = Manager::from_config(pg.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(mgr).max_size(16).build().map_err(|e| e.to_string())?;
        {
            let c = pool.get().await.map_err(|e| e.to_string())?;
            c.execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK]).await.map_err(|e| e.to_string())?;
            let made = match c.batch_execute(SCHEMA).await {
                Ok(()) => match c.batch_execute(edge::SCHEMA).await {
                    Ok(()) => match c.batch_execute(fleet::SCHEMA).await {
                        Ok(()) => c.batch_execute(identity::SCHEMA).await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            c.execute("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK]).await.map_err(|e| e.to_string())?;
            made.map_err(|e| e.to_string())?;
        }
        tokio::spawn(listen(pg, notifier.clone()));
        let (records, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(group_commit(pool.clone(), rx));
        Ok(Self { pool, notifier, records })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(db)
    }
}

/// Forwards `gwe_dataports` notifications to the local long-polls and `gwe_revoked` ones to
/// the hub's remembered credentials, reconnecting forever (a revocation missed while
/// reconnecting is caught by the hub's next sweep).
async fn listen(cfg: tokio_postgres::Config, notifier: Arc<Notifier>) {
    loop {
        match cfg.connect(NoTls).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    loop {
                        match futures_util::future::poll_fn(|cx| conn.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                if tx.send((n.channel() == "gwe_revoked", n.payload().to_string())).is_err() {
                                    return;
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                log::warn!("PostgreSQL listener: {e}");
                                return;
                            }
                            None => return,
                        }
                    }
                });
                if let Err(e) = client.batch_execute("LISTEN gwe_dataports; LISTEN gwe_revoked").await {
                    log::warn!("PostgreSQL LISTEN: {e}");
                } else {
                    while let Some((revoked, p)) = rx.recv().await {
                        if revoked {
                            if let Ok(dev) = p.parse() {
                                notifier.revoked(dev);
                            }
                        } else {
                            crate::notify::apply_many(&notifier, &p);
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => log::warn!("PostgreSQL listener connection: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn device_row(r: &Row) -> Result<Device> {
    let status: &str = r.get(4);
    Ok(Device {
        id: r.get(0),
        vendor: r.get(1),
        model: r.get(2),
        sn: r.get(3),
        status: DeviceStatus::parse(status).ok_or_else(|| unknown_state("device", status))?,
        token_hint: r.get(5),
        created_ms: r.get(6),
        last_seen_ms: r.get(7),
    })
}

const DEVICE_COLS: &str = "id, vendor, model, sn, status, token_hint, created_ms, last_seen_ms";

fn content_row(r: &Row) -> ContentInfo {
    ContentInfo { id: r.get(0), content_type: r.get(1), size: r.get(2), updated: r.get(3), meta: r.get(4) }
}

/// Appends points and moves each alias's latest value forward, in `tx`, for any number of
/// writes (`(device, points, now_ms)`): four statements whatever their number. A group
/// commit of a few hundred writes used to make four round trips for each. Returns the
/// devices whose `last_seen_ms` it set (those `seen_times` says are due) and the times.
async fn store_points(
    tx: &deadpool_postgres::Transaction<'_>,
    writes: &[(i64, &[&Point], i64)],
    seen_times: &SeenTimes,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let n: usize = writes.iter().map(|(_, p, _)| p.len()).sum();
    if n == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let (mut devs, mut aliases, mut ts, mut values) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    // One row per (device, alias): an upsert may not touch the same row twice. The newest
    // point wins; of equal timestamps, the later one (as one upsert after another did).
    let mut newest: HashMap<(i64, &str), (&Point, i64)> = HashMap::new();
    let mut seen: HashMap<i64, i64> = HashMap::new();
    for &(dev, points, now_ms) in writes {
        for &p in points {
            devs.push(dev);
            aliases.push(p.alias.as_str());
            ts.push(p.ts);
            values.push(p.value.as_str());
            let e = newest.entry((dev, p.alias.as_str())).or_insert((p, now_ms));
            if p.ts >= e.0.ts {
                *e = (p, now_ms);
            }
        }
        if !points.is_empty() && seen_times.due(dev, now_ms) {
            let t = seen.entry(dev).or_insert(now_ms);
            *t = (*t).max(now_ms);
        }
    }
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO points(device_id, alias, ts, value)
             SELECT d, a, t, v FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[]) AS x(d, a, t, v)",
        )
        .await
        .map_err(db)?,
        &[&devs, &aliases, &ts, &values],
    )
    .await
    .map_err(db)?;
    let (mut devs, mut aliases, mut ts, mut values, mut modified) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((dev, alias), (p, now_ms)) in &newest {
        devs.push(*dev);
        aliases.push(*alias);
        ts.push(p.ts);
        values.push(p.value.as_str());
        modified.push(*now_ms);
    }
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO dataports(device_id, alias, value, ts, modified_ms)
             SELECT d, a, v, t, m FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
                 AS x(d, a, v, t, m)
             ON CONFLICT(device_id, alias) DO UPDATE SET value = excluded.value, ts = excluded.ts,
                 modified_ms = excluded.modified_ms
             WHERE excluded.ts >= dataports.ts",
        )
        .await
        .map_err(db)?,
        &[&devs, &aliases, &values, &ts, &modified],
    )
    .await
    .map_err(db)?;
    // Kept to within SEEN_EVERY_MS: most writes then make no new device row version.
    let (ids, times): (Vec<i64>, Vec<i64>) = seen.into_iter().unzip();
    if !ids.is_empty() {
        tx.execute(
            &tx.prepare_cached(
                "UPDATE devices SET last_seen_ms = x.t FROM unnest($1::bigint[], $2::bigint[]) AS x(id, t)
                 WHERE devices.id = x.id AND (devices.last_seen_ms IS NULL OR devices.last_seen_ms <= x.t - $3)",
            )
            .await
            .map_err(db)?,
            &[&ids, &times, &SEEN_EVERY_MS],
        )
        .await
        .map_err(db)?;
    }
    let mut by_dev: HashMap<i64, Vec<&str>> = HashMap::new();
    for (dev, alias) in newest.keys() {
        by_dev.entry(*dev).or_default().push(alias);
    }
    let payloads = crate::notify::payloads(by_dev.iter().map(|(d, a)| (*d, a.iter().copied())));
    tx.execute(
        &tx.prepare_cached("SELECT pg_notify('gwe_dataports', p) FROM unnest($1::text[]) AS x(p)").await.map_err(db)?,
        &[&payloads],
    )
    .await
    .map_err(db)?;
    Ok((ids, times))
}

impl PgStore {
    async fn activate_where(
        &self,
        cond: &str,
        args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        hash: &[u8; 32],
        hint: &str,
    ) -> Result<Activation> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let rows = tx
            .query(&format!("SELECT id, status FROM devices WHERE {cond} LIMIT 2 FOR UPDATE"), args)
            .await
            .map_err(db)?;
        let out = match rows.as_slice() {
            [] => Activation::Unknown,
            [r] if r.get::<_, &str>(1) == DeviceStatus::Enabled.as_str() => {
                let id: i64 = r.get(0);
                tx.execute(
                    "UPDATE devices SET status = 'activated', token_hash = $2, token_hint = $3 WHERE id = $1",
                    &[&id, &&hash[..], &hint],
                )
                .await
                .map_err(db)?;
                Activation::Activated(id)
            }
            _ => Activation::Conflict,
        };
        tx.commit().await.map_err(db)?;
        Ok(out)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn add_device(&self, key: &DeviceKey, now_ms: i64) -> Result<Device> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!(
                    "INSERT INTO devices(vendor, model, sn, status, created_ms) VALUES ($1, $2, $3, 'enabled', $4)
                     ON CONFLICT DO NOTHING RETURNING {DEVICE_COLS}"
                ),
                &[&key.vendor, &key.model, &key.sn, &now_ms],
            )
            .await
            .map_err(db)?;
        row.map(|r| device_row(&r))
            .ok_or_else(|| StoreError::Exists(format!("device {}/{}/{}", key.vendor, key.model, key.sn)))?
    }

    async fn enable_device(&self, id: i64) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "WITH forgotten AS (DELETE FROM device_keys WHERE device_id = $1 AND state = 'revoked')
                 UPDATE devices SET status = 'enabled', token_hash = NULL, token_hint = NULL,
                     token_revoked_ms = (extract(epoch FROM now()) * 1000)::bigint WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(db)?;
        Ok(n == 1)
    }

    async fn devices(&self) -> Result<Vec<Device>> {
        let c = self.client().await?;
        let rows = c.query(&format!("SELECT {DEVICE_COLS} FROM devices ORDER BY id"), &[]).await.map_err(db)?;
        rows.iter().map(device_row).collect()
    }

    async fn device(&self, id: i64) -> Result<Option<Device>> {
        let c = self.client().await?;
        let row = c.query_opt(&format!("SELECT {DEVICE_COLS} FROM devices WHERE id = $1"), &[&id]).await.map_err(db)?;
        row.map(|r| device_row(&r)).transpose()
    }

    async fn serial_known(&self, sn: &str) -> Result<bool> {
        let c = self.client().await?;
        let row = c.query_one("SELECT EXISTS(SELECT 1 FROM devices WHERE sn = $1) OR EXISTS(SELECT 1 FROM edge_control WHERE system = $1 AND state IS NOT NULL)", &[&sn]).await.map_err(db)?;
        Ok(row.get(0))
    }

    async fn devices_by_sn(&self, sn: &str) -> Result<Vec<i64>> {
        let c = self.client().await?;
        let rows = c.query("SELECT id FROM devices WHERE sn = $1 ORDER BY id", &[&sn]).await.map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn activate(&self, key: &DeviceKey, token_hash: &[u8; 32], hint: &str) -> Result<Activation> {
        self.activate_where(
            "vendor = $1 AND model = $2 AND sn = $3",
            &[&key.vendor, &key.model, &key.sn],
            token_hash,
            hint,
        )
        .await
    }

    async fn activate_by_sn(&self, sn: &str, token_hash: &[u8; 32], hint: &str) -> Result<Activation> {
        self.activate_where("sn = $1", &[&sn], token_hash, hint).await
    }

    async fn device_for_token(&self, token_hash: &[u8; 32]) -> Result<Option<i64>> {
        let c = self.client().await?;
        let st = c.prepare_cached("SELECT id FROM devices WHERE token_hash = $1").await.map_err(db)?;
        let row = c.query_opt(&st, &[&&token_hash[..]]).await.map_err(db)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn revoked_devices(&self, within_ms: i64) -> Result<Vec<i64>> {
        // The server's clock on both sides: the hubs sharing it may be on other machines.
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT id FROM devices WHERE token_revoked_ms IS NOT NULL
                     AND token_revoked_ms >= (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1",
            )
            .await
            .map_err(db)?;
        let rows = c.query(&st, &[&within_ms]).await.map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn write(&self, dev: i64, values: &[(String, String)], ts: i64, now_ms: i64) -> Result<()> {
        let points: Vec<Point> = values.iter().map(|(a, v)| Point { alias: a.clone(), ts, value: v.clone() }).collect();
        self.record(dev, &points, now_ms).await
    }

    async fn record(&self, dev: i64, points: &[Point], now_ms: i64) -> Result<()> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let job = RecordJob { dev, points: points.to_vec(), now_ms, done };
        self.records.send(job).map_err(|_| StoreError::Db("the group-commit task is gone".into()))?;
        wait.await.map_err(|_| StoreError::Db("the group-commit task is gone".into()))??;
        self.notifier.changed(dev, points.iter().map(|p| p.alias.as_str()));
        Ok(())
    }

    async fn ingest(&self, dev: i64, stream: u64, points: &[(u64, Point)], now_ms: i64) -> Result<u64> {
        // Checked before anything is written: a seq the database cannot keep refuses the batch.
        db_seq(points.iter().map(|(s, _)| *s).max().unwrap_or(0))?;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let stream = db_seq(stream)?;
        tx.execute(
            "INSERT INTO streams(device_id, stream, last_seq) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
            &[&dev, &stream],
        )
        .await
        .map_err(db)?;
        // The row lock makes a batch retried on another hub wait for the first one.
        let prev: i64 = tx
            .query_one("SELECT last_seq FROM streams WHERE device_id = $1 AND stream = $2 FOR UPDATE", &[&dev, &stream])
            .await
            .map_err(db)?
            .get(0);
        let prev = from_db_seq(prev);
        let fresh: Vec<&Point> = points.iter().filter(|(s, _)| *s > prev).map(|(_, p)| p).collect();
        let last = points.iter().map(|(s, _)| *s).max().unwrap_or(0).max(prev);
        // Every batch sets last_seen (within SEEN_EVERY_MS): batches come seconds apart.
        store_points(&tx, &[(dev, fresh.as_slice(), now_ms)], &SeenTimes::default()).await?;
        if last > prev {
            tx.execute(
                "UPDATE streams SET last_seq = $3 WHERE device_id = $1 AND stream = $2",
                &[&dev, &stream, &db_seq(last)?],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        self.notifier.changed(dev, fresh.iter().map(|p| p.alias.as_str()));
        Ok(last)
    }

    async fn read(&self, dev: i64, aliases: &[String]) -> Result<Vec<Option<Value>>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT alias, value, ts, modified_ms FROM dataports WHERE device_id = $1 AND alias = ANY($2)",
            )
            .await
            .map_err(db)?;
        let rows = c.query(&st, &[&dev, &aliases]).await.map_err(db)?;
        let mut found: HashMap<String, Value> =
            rows.iter().map(|r| (r.get(0), Value { value: r.get(1), ts: r.get(2), modified_ms: r.get(3) })).collect();
        Ok(aliases.iter().map(|a| found.remove(a)).collect())
    }

    async fn latest(&self, dev: i64) -> Result<Vec<(String, Value)>> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT alias, value, ts, modified_ms FROM dataports WHERE device_id = $1 ORDER BY alias", &[&dev])
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| (r.get(0), Value { value: r.get(1), ts: r.get(2), modified_ms: r.get(3) })).collect())
    }

    async fn history(&self, dev: i64, alias: &str, limit: i64) -> Result<Vec<Point>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT alias, ts, value FROM points WHERE device_id = $1 AND alias = $2 ORDER BY ts DESC, id DESC LIMIT $3",
                &[&dev, &alias, &limit],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| Point { alias: r.get(0), ts: r.get(1), value: r.get(2) }).collect())
    }

    async fn point_count(&self, dev: i64) -> Result<i64> {
        let c = self.client().await?;
        let r = c.query_one("SELECT count(*) FROM points WHERE device_id = $1", &[&dev]).await.map_err(db)?;
        Ok(r.get(0))
    }

    async fn put_content(&self, key: (&str, &str), info: &ContentInfo, data: &[u8]) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO content(vendor, model, id, content_type, meta, updated, data) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT(vendor, model, id) DO UPDATE SET content_type = excluded.content_type,
                 meta = excluded.meta, updated = excluded.updated, data = excluded.data",
            &[&key.0, &key.1, &info.id, &info.content_type, &info.meta, &info.updated, &data],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn list_content(&self, key: (&str, &str)) -> Result<Vec<ContentInfo>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, content_type, length(data)::bigint, updated, meta FROM content
                 WHERE vendor = $1 AND model = $2 ORDER BY id",
                &[&key.0, &key.1],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(content_row).collect())
    }

    async fn content_info(&self, key: (&str, &str), id: &str) -> Result<Option<ContentInfo>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT id, content_type, length(data)::bigint, updated, meta FROM content
                 WHERE vendor = $1 AND model = $2 AND id = $3",
                &[&key.0, &key.1, &id],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| content_row(&r)))
    }

    async fn read_content(&self, key: (&str, &str), id: &str, offset: i64, len: i64) -> Result<Option<Vec<u8>>> {
        let c = self.client().await?;
        let (from, len) = (i32::try_from(offset + 1).map_err(db)?, i32::try_from(len).map_err(db)?);
        let row = c
            .query_opt(
                "SELECT substring(data FROM $4 FOR $5) FROM content WHERE vendor = $1 AND model = $2 AND id = $3",
                &[&key.0, &key.1, &id, &from, &len],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| r.get(0)))
    }
}
