//! The gateways' keys and the batch credentials in SQLite.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{db, SqliteStore};
use crate::store::{DeviceKey, EnrolledKey, IdentityStore, KeyState, Offered, Result, StoreError};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS device_keys(
    device_id INTEGER PRIMARY KEY, spki BLOB NOT NULL, state TEXT NOT NULL, source TEXT NOT NULL,
    not_after_ms INTEGER, updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batch_credentials(
    name TEXT PRIMARY KEY, secret_hash BLOB NOT NULL UNIQUE, created_ms INTEGER NOT NULL);
";

const KEY_COLS: &str = "device_id, spki, state, source, not_after_ms, updated_ms";

fn key_row(r: &rusqlite::Row) -> rusqlite::Result<EnrolledKey> {
    let state: String = r.get(2)?;
    Ok(EnrolledKey {
        device_id: r.get(0)?,
        spki: r.get(1)?,
        state: KeyState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                format!("unknown key state {state:?}").into(),
            )
        })?,
        source: r.get(3)?,
        not_after_ms: r.get(4)?,
        updated_ms: r.get(5)?,
    })
}

fn key_of(c: &Connection, dev: i64) -> Result<Option<EnrolledKey>> {
    c.prepare_cached(&format!("SELECT {KEY_COLS} FROM device_keys WHERE device_id = ?1"))
        .and_then(|mut st| st.query_row([dev], key_row).optional())
        .map_err(db)
}

/// The device's id, whitelisting it first if it is new.
fn device_id(c: &Connection, key: &DeviceKey, now_ms: i64) -> rusqlite::Result<i64> {
    c.prepare_cached(
        "INSERT INTO devices(vendor, model, sn, status, created_ms) VALUES (?1, ?2, ?3, 'enabled', ?4)
         ON CONFLICT DO NOTHING",
    )?
    .execute(params![key.vendor, key.model, key.sn, now_ms])?;
    c.prepare_cached("SELECT id FROM devices WHERE vendor = ?1 AND model = ?2 AND sn = ?3")?
        .query_row(params![key.vendor, key.model, key.sn], |r| r.get(0))
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn import_keys(&self, rows: &[(DeviceKey, Vec<u8>)], now_ms: i64) -> Result<i64> {
        let rows = rows.to_vec();
        self.write(move |c| {
            let mut changed = 0;
            for (key, spki) in &rows {
                let dev = device_id(c, key, now_ms).map_err(db)?;
                changed += c
                    .prepare_cached(
                        "INSERT INTO device_keys(device_id, spki, state, source, updated_ms)
                         VALUES (?1, ?2, 'approved', 'import', ?3)
                         ON CONFLICT(device_id) DO UPDATE SET spki = excluded.spki, state = 'approved',
                             source = 'import', not_after_ms = NULL, updated_ms = excluded.updated_ms
                         WHERE device_keys.state != 'revoked'
                             AND (device_keys.spki != excluded.spki OR device_keys.state != 'approved')",
                    )
                    .and_then(|mut st| st.execute(params![dev, spki, now_ms]))
                    .map_err(db)?;
            }
            Ok(super::super::count(changed))
        })
        .await
    }

    async fn enrolled_key(&self, key: &DeviceKey) -> Result<Option<(i64, Option<EnrolledKey>)>> {
        let key = key.clone();
        self.read(move |c| {
            let dev: Option<i64> = c
                .prepare_cached("SELECT id FROM devices WHERE vendor = ?1 AND model = ?2 AND sn = ?3")
                .and_then(|mut st| st.query_row(params![key.vendor, key.model, key.sn], |r| r.get(0)).optional())
                .map_err(db)?;
            match dev {
                Some(dev) => Ok(Some((dev, key_of(c, dev)?))),
                None => Ok(None),
            }
        })
        .await
    }

    async fn enrolled_key_by_id(&self, dev: i64) -> Result<Option<EnrolledKey>> {
        self.read(move |c| key_of(c, dev)).await
    }

    async fn offer_key(&self, key: &DeviceKey, spki: &[u8], source: &str, now_ms: i64) -> Result<Offered> {
        let (key, spki, source) = (key.clone(), spki.to_vec(), source.to_string());
        self.write(move |c| {
            let dev = device_id(c, &key, now_ms).map_err(db)?;
            if let Some(k) = key_of(c, dev)? {
                return Ok(if k.state == KeyState::Revoked || k.spki != spki {
                    Offered::Refused(k)
                } else {
                    Offered::Recorded(k)
                });
            }
            c.execute(
                "INSERT INTO device_keys(device_id, spki, state, source, updated_ms) VALUES (?1, ?2, 'pending', ?3, ?4)",
                params![dev, spki, source, now_ms],
            )
            .map_err(db)?;
            key_of(c, dev)?.map(Offered::Recorded).ok_or_else(|| StoreError::Db("the key just recorded is gone".into()))
        })
        .await
    }

    async fn approve_key(&self, dev: i64, now_ms: i64) -> Result<bool> {
        self.write(move |c| {
            c.execute(
                "UPDATE device_keys SET state = 'approved', updated_ms = ?2 WHERE device_id = ?1 AND state = 'pending'",
                params![dev, now_ms],
            )
            .map(|n| n == 1)
            .map_err(db)
        })
        .await
    }

    async fn revoke_device(&self, dev: i64, now_ms: i64) -> Result<bool> {
        let notifier = self.notifier.clone();
        let found = self
            .write(move |c| {
                let n = c
                    .execute(
                        "UPDATE devices SET status = 'revoked', token_hash = NULL, token_hint = NULL,
                             token_revoked_ms = ?2 WHERE id = ?1",
                        params![dev, now_ms],
                    )
                    .map_err(db)?;
                if n == 0 {
                    return Ok(false);
                }
                c.execute(
                    "INSERT INTO device_keys(device_id, spki, state, source, updated_ms) VALUES (?1, x'', 'revoked', 'revoke', ?2)
                     ON CONFLICT(device_id) DO UPDATE SET state = 'revoked', updated_ms = excluded.updated_ms",
                    params![dev, now_ms],
                )
                .map_err(db)?;
                Ok(true)
            })
            .await?;
        if found {
            notifier.revoked(dev);
        }
        Ok(found)
    }

    async fn key_certified(&self, dev: i64, not_after_ms: i64, now_ms: i64) -> Result<()> {
        self.write(move |c| {
            c.execute(
                "UPDATE device_keys SET not_after_ms = ?2, updated_ms = ?3 WHERE device_id = ?1",
                params![dev, not_after_ms, now_ms],
            )
            .map_err(db)?;
            c.execute("UPDATE devices SET status = 'activated' WHERE id = ?1", [dev]).map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn enrolled_keys(&self) -> Result<Vec<EnrolledKey>> {
        self.read(|c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {KEY_COLS} FROM device_keys ORDER BY device_id")).map_err(db)?;
            let rows = st.query_map([], key_row).map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn add_batch(&self, name: &str, secret_hash: &[u8; 32], now_ms: i64) -> Result<bool> {
        let (name, hash) = (name.to_string(), *secret_hash);
        self.write(move |c| {
            c.execute(
                "INSERT INTO batch_credentials(name, secret_hash, created_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![name, &hash[..], now_ms],
            )
            .map(|n| n == 1)
            .map_err(db)
        })
        .await
    }

    async fn batch_of(&self, secret_hash: &[u8; 32]) -> Result<Option<String>> {
        let hash = *secret_hash;
        self.read(move |c| {
            c.prepare_cached("SELECT name FROM batch_credentials WHERE secret_hash = ?1")
                .and_then(|mut st| st.query_row([&hash[..]], |r| r.get(0)).optional())
                .map_err(db)
        })
        .await
    }
}
