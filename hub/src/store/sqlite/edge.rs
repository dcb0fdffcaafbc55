//! The edge services' tables in SQLite.

use std::collections::BTreeMap;

use async_trait::async_trait;
use gwe_wire::edge::EdgePoint;
use rusqlite::{params, OptionalExtension};

use super::{db, SqliteStore};
use crate::store::{EdgeBatchRow, EdgeControl, EdgePointRow, EdgeStore, Result, ServiceRow};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS services(
    id INTEGER PRIMARY KEY, definition TEXT NOT NULL, system_name TEXT NOT NULL, address TEXT NOT NULL,
    port INTEGER NOT NULL, service_uri TEXT NOT NULL, secure TEXT NOT NULL, interfaces TEXT NOT NULL,
    version INTEGER NOT NULL, metadata TEXT NOT NULL, end_of_validity TEXT,
    UNIQUE(definition, system_name, address, port));
CREATE TABLE IF NOT EXISTS edge_control(
    system TEXT PRIMARY KEY, pending TEXT, last_command TEXT, issued_ms INTEGER,
    state TEXT, state_ms INTEGER, parameters TEXT, parameters_ms INTEGER);
CREATE TABLE IF NOT EXISTS edge_batches(
    system TEXT NOT NULL, batch_id TEXT NOT NULL, provider TEXT NOT NULL, received_ms INTEGER NOT NULL, points INTEGER NOT NULL,
    PRIMARY KEY(system, batch_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS edge_points(
    system TEXT NOT NULL, name TEXT NOT NULL, ts INTEGER NOT NULL, value TEXT NOT NULL, batch_id TEXT NOT NULL,
    provider TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS edge_points_by_system ON edge_points(system, name, ts);
";

pub fn service_row(r: &rusqlite::Row) -> rusqlite::Result<ServiceRow> {
    let interfaces: String = r.get(7)?;
    let metadata: String = r.get(9)?;
    Ok(ServiceRow {
        id: r.get(0)?,
        definition: r.get(1)?,
        system_name: r.get(2)?,
        address: r.get(3)?,
        port: r.get(4)?,
        service_uri: r.get(5)?,
        secure: r.get(6)?,
        interfaces: serde_json::from_str(&interfaces).unwrap_or_default(),
        version: r.get(8)?,
        metadata: serde_json::from_str::<BTreeMap<String, String>>(&metadata).unwrap_or_default(),
        end_of_validity: r.get(10)?,
        authentication_info: r.get(11)?,
        created_ms: r.get(12)?,
        updated_ms: r.get(13)?,
    })
}

/// Registry entries made before they had times and authentication info gain the columns.
pub fn migrate(c: &rusqlite::Connection) -> rusqlite::Result<()> {
    for (col, ty) in [
        ("authentication_info", "TEXT"),
        ("created_ms", "INTEGER NOT NULL DEFAULT 0"),
        ("updated_ms", "INTEGER NOT NULL DEFAULT 0"),
    ] {
        let n: i64 =
            c.query_row("SELECT count(*) FROM pragma_table_info('services') WHERE name = ?1", [col], |r| r.get(0))?;
        if n == 0 {
            c.execute_batch(&format!("ALTER TABLE services ADD COLUMN {col} {ty}"))?;
        }
    }
    Ok(())
}

pub const SERVICE_COLUMNS: &str = "id, definition, system_name, address, port, service_uri, secure, interfaces, \
version, metadata, end_of_validity, authentication_info, created_ms, updated_ms";

#[async_trait]
impl EdgeStore for SqliteStore {
    async fn register_service(&self, s: &ServiceRow) -> Result<i64> {
        let s = s.clone();
        self.write(move |c| {
            let interfaces = serde_json::to_string(&s.interfaces).unwrap_or_default();
            let metadata = serde_json::to_string(&s.metadata).unwrap_or_default();
            c.query_row(
                "INSERT INTO services(definition, system_name, address, port, service_uri, secure, interfaces,
                     version, metadata, end_of_validity, authentication_info, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)
                 ON CONFLICT(definition, system_name, address, port) DO UPDATE SET service_uri = excluded.service_uri,
                     secure = excluded.secure, interfaces = excluded.interfaces, version = excluded.version,
                     metadata = excluded.metadata, end_of_validity = excluded.end_of_validity,
                     authentication_info = excluded.authentication_info, updated_ms = excluded.updated_ms
                 RETURNING id",
                params![
                    s.definition,
                    s.system_name,
                    s.address,
                    s.port,
                    s.service_uri,
                    s.secure,
                    interfaces,
                    s.version,
                    metadata,
                    s.end_of_validity,
                    s.authentication_info,
                    s.updated_ms
                ],
                |r| r.get(0),
            )
            .map_err(db)
        })
        .await
    }

    async fn unregister_service(&self, definition: &str, system: &str, address: &str, port: i64) -> Result<bool> {
        let (d, s, a) = (definition.to_string(), system.to_string(), address.to_string());
        self.write(move |c| {
            c.execute(
                "DELETE FROM services WHERE definition = ?1 AND system_name = ?2 AND address = ?3 AND port = ?4",
                params![d, s, a, port],
            )
            .map(|n| n > 0)
            .map_err(db)
        })
        .await
    }

    async fn services(&self, definition: &str) -> Result<Vec<ServiceRow>> {
        let d = definition.to_string();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!("SELECT {SERVICE_COLUMNS} FROM services WHERE definition = ?1 ORDER BY id"))
                .map_err(db)?;
            let rows = st.query_map([d], service_row).map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn issue_command(&self, system: &str, command: &str, now_ms: i64) -> Result<()> {
        let (s, cmd) = (system.to_string(), command.to_string());
        self.write(move |c| {
            c.execute(
                "INSERT INTO edge_control(system, pending, last_command, issued_ms) VALUES (?1, ?2, ?2, ?3)
                 ON CONFLICT(system) DO UPDATE SET pending = excluded.pending,
                     last_command = excluded.last_command, issued_ms = excluded.issued_ms",
                params![s, cmd, now_ms],
            )
            .map(drop)
            .map_err(db)
        })
        .await
    }

    async fn take_command(&self, system: &str) -> Result<Option<String>> {
        let s = system.to_string();
        // A write: the one writer takes it, so two fetches cannot both get it.
        self.write(move |c| {
            let cmd: Option<String> = c
                .query_row("SELECT pending FROM edge_control WHERE system = ?1", [&s], |r| r.get(0))
                .optional()
                .map_err(db)?
                .flatten();
            if cmd.is_some() {
                c.execute("UPDATE edge_control SET pending = NULL WHERE system = ?1", [&s]).map_err(db)?;
            }
            Ok(cmd)
        })
        .await
    }

    async fn edge_report(
        &self,
        system: &str,
        state: Option<&str>,
        parameters: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let (s, state, parameters) = (system.to_string(), state.map(String::from), parameters.map(String::from));
        self.write(move |c| {
            c.execute("INSERT INTO edge_control(system) VALUES (?1) ON CONFLICT DO NOTHING", [&s]).map_err(db)?;
            if let Some(st) = state {
                c.execute(
                    "UPDATE edge_control SET state = ?2, state_ms = ?3 WHERE system = ?1",
                    params![s, st, now_ms],
                )
                .map_err(db)?;
            }
            if let Some(p) = parameters {
                c.execute(
                    "UPDATE edge_control SET parameters = ?2, parameters_ms = ?3 WHERE system = ?1",
                    params![s, p, now_ms],
                )
                .map_err(db)?;
            }
            Ok(())
        })
        .await
    }

    async fn edge_control(&self, system: &str) -> Result<Option<EdgeControl>> {
        let s = system.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT pending, last_command, issued_ms, state, state_ms, parameters, parameters_ms
                 FROM edge_control WHERE system = ?1",
                [s],
                |r| {
                    Ok(EdgeControl {
                        pending: r.get(0)?,
                        last_command: r.get(1)?,
                        issued_ms: r.get(2)?,
                        state: r.get(3)?,
                        state_ms: r.get(4)?,
                        parameters: r.get(5)?,
                        parameters_ms: r.get(6)?,
                    })
                },
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn edge_batch(
        &self,
        system: &str,
        provider: &str,
        batch_id: &str,
        points: &[EdgePoint],
        now_ms: i64,
    ) -> Result<bool> {
        let (s, pr, id, points) = (system.to_string(), provider.to_string(), batch_id.to_string(), points.to_vec());
        self.write(move |c| {
            let fresh = c
                .execute(
                    "INSERT INTO edge_batches(system, batch_id, provider, received_ms, points) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT DO NOTHING",
                    params![s, id, pr, now_ms, crate::store::count(points.len())],
                )
                .map_err(db)?
                == 1;
            if fresh {
                let mut st = c
                    .prepare_cached(
                        "INSERT INTO edge_points(system, name, ts, value, batch_id, provider) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(db)?;
                for p in &points {
                    st.execute(params![s, p.n, p.t, p.v, id, pr]).map_err(db)?;
                }
            }
            Ok(fresh)
        })
        .await
    }

    async fn edge_points(&self, system: &str, provider: Option<&str>, limit: i64) -> Result<Vec<EdgePointRow>> {
        let (s, pr) = (system.to_string(), provider.map(String::from));
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT batch_id, provider, name, ts, value FROM edge_points
                     WHERE system = ?1 AND (?2 IS NULL OR provider = ?2) ORDER BY rowid LIMIT ?3",
                )
                .map_err(db)?;
            let rows = st
                .query_map(params![s, pr, limit], |r| {
                    Ok(EdgePointRow {
                        batch_id: r.get(0)?,
                        provider: r.get(1)?,
                        name: r.get(2)?,
                        ts: r.get(3)?,
                        value: r.get(4)?,
                    })
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn edge_batches(&self, system: &str, provider: Option<&str>) -> Result<Vec<EdgeBatchRow>> {
        let (s, pr) = (system.to_string(), provider.map(String::from));
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT batch_id, provider, received_ms, points FROM edge_batches
                     WHERE system = ?1 AND (?2 IS NULL OR provider = ?2) ORDER BY received_ms, batch_id",
                )
                .map_err(db)?;
            let rows = st
                .query_map(params![s, pr], |r| {
                    Ok(EdgeBatchRow {
                        batch_id: r.get(0)?,
                        provider: r.get(1)?,
                        received_ms: r.get(2)?,
                        points: r.get(3)?,
                    })
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }
}
