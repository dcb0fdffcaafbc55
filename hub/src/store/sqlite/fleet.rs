//! The dashboard's tables in SQLite: operators and their sessions; the fleet query.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::{db, device_row, SqliteStore, DEVICE_COLS};
use crate::store::{FleetRow, FleetStore, Operator, Result, Session, StoreError};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS operators(
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(
    token_hash BLOB PRIMARY KEY, operator_id INTEGER NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL, expires_ms INTEGER NOT NULL);
";

#[async_trait]
impl FleetStore for SqliteStore {
    async fn put_operator(&self, name: &str, password_hash: &str, replace: bool, now_ms: i64) -> Result<()> {
        let (name, hash) = (name.to_string(), password_hash.to_string());
        self.write(move |c| {
            let n = if replace {
                c.execute(
                    "INSERT INTO operators(name, password_hash, created_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash",
                    params![name, hash, now_ms],
                )
            } else {
                c.execute(
                    "INSERT INTO operators(name, password_hash, created_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![name, hash, now_ms],
                )
            }
            .map_err(db)?;
            if n == 0 {
                return Err(StoreError::Exists(format!("operator {name}")));
            }
            if replace {
                // A new password signs the operator out everywhere.
                c.execute(
                    "DELETE FROM sessions WHERE operator_id = (SELECT id FROM operators WHERE name = ?1)",
                    params![name],
                )
                .map_err(db)?;
            }
            Ok(())
        })
        .await
    }

    async fn operator(&self, name: &str) -> Result<Option<Operator>> {
        let name = name.to_string();
        self.read(move |c| {
            c.query_row("SELECT id, name, password_hash FROM operators WHERE name = ?1", params![name], |r| {
                Ok(Operator { id: r.get(0)?, name: r.get(1)?, password_hash: r.get(2)? })
            })
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn add_session(&self, token_hash: &[u8; 32], operator_id: i64, csrf: &str, expires_ms: i64) -> Result<()> {
        let (hash, csrf) = (*token_hash, csrf.to_string());
        self.write(move |c| {
            c.execute(
                "INSERT INTO sessions(token_hash, operator_id, csrf, expires_ms) VALUES (?1, ?2, ?3, ?4)",
                params![&hash[..], operator_id, csrf, expires_ms],
            )
            .map_err(db)?;
            // Expired sessions go as new ones come.
            c.execute("DELETE FROM sessions WHERE expires_ms < ?1", params![expires_ms - crate::store::SESSION_MAX_MS])
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn session(&self, token_hash: &[u8; 32], now_ms: i64) -> Result<Option<Session>> {
        let hash = *token_hash;
        self.read(move |c| {
            c.query_row(
                "SELECT o.name, s.csrf, s.expires_ms FROM sessions s JOIN operators o ON o.id = s.operator_id
                 WHERE s.token_hash = ?1 AND s.expires_ms > ?2",
                params![&hash[..], now_ms],
                |r| Ok(Session { operator: r.get(0)?, csrf: r.get(1)?, expires_ms: r.get(2)? }),
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn drop_session(&self, token_hash: &[u8; 32]) -> Result<()> {
        let hash = *token_hash;
        self.write(move |c| {
            c.execute("DELETE FROM sessions WHERE token_hash = ?1", params![&hash[..]]).map(drop).map_err(db)
        })
        .await
    }

    async fn fleet(&self) -> Result<Vec<FleetRow>> {
        self.read(|c| {
            let cols = DEVICE_COLS.split(", ").map(|x| format!("d.{x}")).collect::<Vec<_>>().join(", ");
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {cols}, p.value, p.modified_ms FROM devices d
                     LEFT JOIN dataports p ON p.device_id = d.id AND p.alias = 'engine_report' ORDER BY d.id"
                ))
                .map_err(db)?;
            let rows = st
                .query_map([], |r| {
                    Ok(FleetRow { device: device_row(r)?, engine_report: r.get(8)?, report_ms: r.get(9)? })
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }
}
