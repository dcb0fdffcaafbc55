//! The gateways' keys and the batch credentials in PostgreSQL. A revocation sends
//! `NOTIFY gwe_revoked` in its transaction: every hub listening forgets the device's
//! credentials the moment it commits.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{db, PgStore};
use crate::store::{unknown_state, DeviceKey, EnrolledKey, IdentityStore, KeyState, Offered, Result, StoreError};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS device_keys(
    device_id BIGINT PRIMARY KEY, spki BYTEA NOT NULL, state TEXT NOT NULL, source TEXT NOT NULL,
    not_after_ms BIGINT, updated_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS batch_credentials(
    name TEXT PRIMARY KEY, secret_hash BYTEA NOT NULL UNIQUE, created_ms BIGINT NOT NULL);
";

const KEY_COLS: &str = "device_id, spki, state, source, not_after_ms, updated_ms";

fn key_row(r: &Row) -> Result<EnrolledKey> {
    let state: &str = r.get(2);
    Ok(EnrolledKey {
        device_id: r.get(0),
        spki: r.get(1),
        state: KeyState::parse(state).ok_or_else(|| unknown_state("key", state))?,
        source: r.get(3),
        not_after_ms: r.get(4),
        updated_ms: r.get(5),
    })
}

async fn key_of(c: &impl deadpool_postgres::GenericClient, dev: i64) -> Result<Option<EnrolledKey>> {
    let row =
        c.query_opt(&format!("SELECT {KEY_COLS} FROM device_keys WHERE device_id = $1"), &[&dev]).await.map_err(db)?;
    row.map(|r| key_row(&r)).transpose()
}

#[async_trait]
impl IdentityStore for PgStore {
    async fn import_keys(&self, rows: &[(DeviceKey, Vec<u8>)], now_ms: i64) -> Result<i64> {
        let vendors: Vec<&str> = rows.iter().map(|(k, _)| k.vendor.as_str()).collect();
        let models: Vec<&str> = rows.iter().map(|(k, _)| k.model.as_str()).collect();
        let sns: Vec<&str> = rows.iter().map(|(k, _)| k.sn.as_str()).collect();
        let keys: Vec<&[u8]> = rows.iter().map(|(_, s)| s.as_slice()).collect();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO devices(vendor, model, sn, status, created_ms)
             SELECT v, m, s, 'enabled', $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS x(v, m, s)
             ON CONFLICT DO NOTHING",
            &[&vendors, &models, &sns, &now_ms],
        )
        .await
        .map_err(db)?;
        let n = tx
            .execute(
                "INSERT INTO device_keys(device_id, spki, state, source, updated_ms)
                 SELECT d.id, x.k, 'approved', 'import', $5
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS x(v, m, s, k)
                 JOIN devices d ON d.vendor = x.v AND d.model = x.m AND d.sn = x.s
                 ON CONFLICT(device_id) DO UPDATE SET spki = excluded.spki, state = 'approved',
                     source = 'import', not_after_ms = NULL, updated_ms = excluded.updated_ms
                 WHERE device_keys.state != 'revoked'
                     AND (device_keys.spki != excluded.spki OR device_keys.state != 'approved')",
                &[&vendors, &models, &sns, &keys, &now_ms],
            )
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(i64::try_from(n).unwrap_or(i64::MAX))
    }

    async fn enrolled_key(&self, key: &DeviceKey) -> Result<Option<(i64, Option<EnrolledKey>)>> {
        let c = self.client().await?;
        let dev = c
            .query_opt(
                "SELECT id FROM devices WHERE vendor = $1 AND model = $2 AND sn = $3",
                &[&key.vendor, &key.model, &key.sn],
            )
            .await
            .map_err(db)?;
        match dev {
            Some(r) => {
                let dev: i64 = r.get(0);
                Ok(Some((dev, key_of(&c, dev).await?)))
            }
            None => Ok(None),
        }
    }

    async fn enrolled_key_by_id(&self, dev: i64) -> Result<Option<EnrolledKey>> {
        let c = self.client().await?;
        key_of(&c, dev).await
    }

    async fn offer_key(&self, key: &DeviceKey, spki: &[u8], source: &str, now_ms: i64) -> Result<Offered> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO devices(vendor, model, sn, status, created_ms) VALUES ($1, $2, $3, 'enabled', $4)
             ON CONFLICT DO NOTHING",
            &[&key.vendor, &key.model, &key.sn, &now_ms],
        )
        .await
        .map_err(db)?;
        let dev: i64 = tx
            .query_one(
                "SELECT id FROM devices WHERE vendor = $1 AND model = $2 AND sn = $3",
                &[&key.vendor, &key.model, &key.sn],
            )
            .await
            .map_err(db)?
            .get(0);
        // Two offers at once: the second finds the first's row.
        tx.execute(
            "INSERT INTO device_keys(device_id, spki, state, source, updated_ms) VALUES ($1, $2, 'pending', $3, $4)
             ON CONFLICT DO NOTHING",
            &[&dev, &spki, &source, &now_ms],
        )
        .await
        .map_err(db)?;
        let k = key_of(&tx, dev).await?.ok_or_else(|| StoreError::Db("the key just recorded is gone".into()))?;
        tx.commit().await.map_err(db)?;
        Ok(if k.state == KeyState::Revoked || k.spki != spki { Offered::Refused(k) } else { Offered::Recorded(k) })
    }

    async fn approve_key(&self, dev: i64, now_ms: i64) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE device_keys SET state = 'approved', updated_ms = $2 WHERE device_id = $1 AND state = 'pending'",
                &[&dev, &now_ms],
            )
            .await
            .map_err(db)?;
        Ok(n == 1)
    }

    async fn revoke_device(&self, dev: i64, now_ms: i64) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let n = tx
            .execute(
                "UPDATE devices SET status = 'revoked', token_hash = NULL, token_hint = NULL,
                     token_revoked_ms = (extract(epoch FROM now()) * 1000)::bigint WHERE id = $1",
                &[&dev],
            )
            .await
            .map_err(db)?;
        if n == 0 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO device_keys(device_id, spki, state, source, updated_ms) VALUES ($1, '', 'revoked', 'revoke', $2)
             ON CONFLICT(device_id) DO UPDATE SET state = 'revoked', updated_ms = excluded.updated_ms",
            &[&dev, &now_ms],
        )
        .await
        .map_err(db)?;
        tx.execute("SELECT pg_notify('gwe_revoked', $1)", &[&dev.to_string()]).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.notifier.revoked(dev);
        Ok(true)
    }

    async fn key_certified(&self, dev: i64, not_after_ms: i64, now_ms: i64) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute(
            "UPDATE device_keys SET not_after_ms = $2, updated_ms = $3 WHERE device_id = $1",
            &[&dev, &not_after_ms, &now_ms],
        )
        .await
        .map_err(db)?;
        tx.execute("UPDATE devices SET status = 'activated' WHERE id = $1", &[&dev]).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn enrolled_keys(&self) -> Result<Vec<EnrolledKey>> {
        let c = self.client().await?;
        let rows = c.query(&format!("SELECT {KEY_COLS} FROM device_keys ORDER BY device_id"), &[]).await.map_err(db)?;
        rows.iter().map(key_row).collect()
    }

    async fn add_batch(&self, name: &str, secret_hash: &[u8; 32], now_ms: i64) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO batch_credentials(name, secret_hash, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&name, &&secret_hash[..], &now_ms],
            )
            .await
            .map_err(db)?;
        Ok(n == 1)
    }

    async fn batch_of(&self, secret_hash: &[u8; 32]) -> Result<Option<String>> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT name FROM batch_credentials WHERE secret_hash = $1", &[&&secret_hash[..]])
            .await
            .map_err(db)?;
        Ok(row.map(|r| r.get(0)))
    }
}
