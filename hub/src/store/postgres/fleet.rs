//! The dashboard's tables in PostgreSQL: operators and their sessions; the fleet query.

use async_trait::async_trait;

use super::{db, device_row, PgStore, DEVICE_COLS};
use crate::store::{FleetRow, FleetStore, Operator, Result, Session, StoreError};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS operators(
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, created_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(
    token_hash BYTEA PRIMARY KEY, operator_id BIGINT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL, expires_ms BIGINT NOT NULL);
";

#[async_trait]
impl FleetStore for PgStore {
    async fn put_operator(&self, name: &str, password_hash: &str, replace: bool, now_ms: i64) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let n = if replace {
            tx.execute(
                "INSERT INTO operators(name, password_hash, created_ms) VALUES ($1, $2, $3)
                 ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash",
                &[&name, &password_hash, &now_ms],
            )
            .await
        } else {
            tx.execute(
                "INSERT INTO operators(name, password_hash, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&name, &password_hash, &now_ms],
            )
            .await
        }
        .map_err(db)?;
        if n == 0 {
            return Err(StoreError::Exists(format!("operator {name}")));
        }
        if replace {
            // A new password signs the operator out everywhere.
            tx.execute("DELETE FROM sessions WHERE operator_id = (SELECT id FROM operators WHERE name = $1)", &[&name])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn operator(&self, name: &str) -> Result<Option<Operator>> {
        let c = self.client().await?;
        let row =
            c.query_opt("SELECT id, name, password_hash FROM operators WHERE name = $1", &[&name]).await.map_err(db)?;
        Ok(row.map(|r| Operator { id: r.get(0), name: r.get(1), password_hash: r.get(2) }))
    }

    async fn add_session(&self, token_hash: &[u8; 32], operator_id: i64, csrf: &str, expires_ms: i64) -> Result<()> {
        let c = self.client().await?;
        let hash = &token_hash[..];
        c.execute(
            "INSERT INTO sessions(token_hash, operator_id, csrf, expires_ms) VALUES ($1, $2, $3, $4)",
            &[&hash, &operator_id, &csrf, &expires_ms],
        )
        .await
        .map_err(db)?;
        // Expired sessions go as new ones come.
        c.execute("DELETE FROM sessions WHERE expires_ms < $1", &[&(expires_ms - crate::store::SESSION_MAX_MS)])
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn session(&self, token_hash: &[u8; 32], now_ms: i64) -> Result<Option<Session>> {
        let c = self.client().await?;
        let hash = &token_hash[..];
        let row = c
            .query_opt(
                "SELECT o.name, s.csrf, s.expires_ms FROM sessions s JOIN operators o ON o.id = s.operator_id
                 WHERE s.token_hash = $1 AND s.expires_ms > $2",
                &[&hash, &now_ms],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| Session { operator: r.get(0), csrf: r.get(1), expires_ms: r.get(2) }))
    }

    async fn drop_session(&self, token_hash: &[u8; 32]) -> Result<()> {
        let c = self.client().await?;
        let hash = &token_hash[..];
        c.execute("DELETE FROM sessions WHERE token_hash = $1", &[&hash]).await.map_err(db)?;
        Ok(())
    }

    async fn fleet(&self) -> Result<Vec<FleetRow>> {
        let c = self.client().await?;
        let cols = DEVICE_COLS.split(", ").map(|x| format!("d.{x}")).collect::<Vec<_>>().join(", ");
        let rows = c
            .query(
                &format!(
                    "SELECT {cols}, p.value, p.modified_ms FROM devices d
                     LEFT JOIN dataports p ON p.device_id = d.id AND p.alias = 'engine_report' ORDER BY d.id"
                ),
                &[],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| FleetRow { device: device_row(r), engine_report: r.get(8), report_ms: r.get(9) })
            .collect())
    }
}
