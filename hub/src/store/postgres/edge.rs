//! The edge services' tables in PostgreSQL. Several hubs may share them: a command is taken
//! by one `UPDATE ... RETURNING` (row lock), a batch id is stored once (primary key).

use std::collections::BTreeMap;

use async_trait::async_trait;
use gwe_wire::edge::EdgePoint;
use tokio_postgres::Row;

use super::{db, PgStore};
use crate::store::{EdgeBatchRow, EdgeControl, EdgePointRow, EdgeStore, Result, ServiceRow};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS services(
    id BIGSERIAL PRIMARY KEY, definition TEXT NOT NULL, system_name TEXT NOT NULL, address TEXT NOT NULL,
    port BIGINT NOT NULL, service_uri TEXT NOT NULL, secure TEXT NOT NULL, interfaces TEXT NOT NULL,
    version BIGINT NOT NULL, metadata TEXT NOT NULL, end_of_validity TEXT,
    UNIQUE(definition, system_name, address, port));
DO $$ BEGIN
    -- Registry entries made before they had times and authentication info.
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'services' AND column_name = 'updated_ms') THEN
        ALTER TABLE services ADD COLUMN authentication_info TEXT;
        ALTER TABLE services ADD COLUMN created_ms BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE services ADD COLUMN updated_ms BIGINT NOT NULL DEFAULT 0;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS edge_control(
    system TEXT PRIMARY KEY, pending TEXT, last_command TEXT, issued_ms BIGINT,
    state TEXT, state_ms BIGINT, parameters TEXT, parameters_ms BIGINT);
CREATE TABLE IF NOT EXISTS edge_batches(
    system TEXT NOT NULL, batch_id TEXT NOT NULL, provider TEXT NOT NULL, received_ms BIGINT NOT NULL, points BIGINT NOT NULL,
    PRIMARY KEY(system, batch_id));
CREATE TABLE IF NOT EXISTS edge_points(
    id BIGSERIAL PRIMARY KEY, system TEXT NOT NULL, name TEXT NOT NULL, ts BIGINT NOT NULL, value TEXT NOT NULL,
    batch_id TEXT NOT NULL, provider TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS edge_points_by_system ON edge_points(system, name, ts);
";

fn service_row(r: &Row) -> ServiceRow {
    let interfaces: String = r.get(7);
    let metadata: String = r.get(9);
    ServiceRow {
        id: r.get(0),
        definition: r.get(1),
        system_name: r.get(2),
        address: r.get(3),
        port: r.get(4),
        service_uri: r.get(5),
        secure: r.get(6),
        interfaces: serde_json::from_str(&interfaces).unwrap_or_default(),
        version: r.get(8),
        metadata: serde_json::from_str::<BTreeMap<String, String>>(&metadata).unwrap_or_default(),
        end_of_validity: r.get(10),
        authentication_info: r.get(11),
        created_ms: r.get(12),
        updated_ms: r.get(13),
    }
}

#[async_trait]
impl EdgeStore for PgStore {
    async fn register_service(&self, s: &ServiceRow) -> Result<i64> {
        let c = self.client().await?;
        let interfaces = serde_json::to_string(&s.interfaces).unwrap_or_default();
        let metadata = serde_json::to_string(&s.metadata).unwrap_or_default();
        let row = c
            .query_one(
                "INSERT INTO services(definition, system_name, address, port, service_uri, secure, interfaces,
                     version, metadata, end_of_validity, authentication_info, created_ms, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
                 ON CONFLICT(definition, system_name, address, port) DO UPDATE SET service_uri = excluded.service_uri,
                     secure = excluded.secure, interfaces = excluded.interfaces, version = excluded.version,
                     metadata = excluded.metadata, end_of_validity = excluded.end_of_validity,
                     authentication_info = excluded.authentication_info, updated_ms = excluded.updated_ms
                 RETURNING id",
                &[
                    &s.definition,
                    &s.system_name,
                    &s.address,
                    &s.port,
                    &s.service_uri,
                    &s.secure,
                    &interfaces,
                    &s.version,
                    &metadata,
                    &s.end_of_validity,
                    &s.authentication_info,
                    &s.updated_ms,
                ],
            )
            .await
            .map_err(db)?;
        Ok(row.get(0))
    }

    async fn unregister_service(&self, definition: &str, system: &str, address: &str, port: i64) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM services WHERE definition = $1 AND system_name = $2 AND address = $3 AND port = $4",
                &[&definition, &system, &address, &port],
            )
            .await
            .map_err(db)?;
        Ok(n > 0)
    }

    async fn services(&self, definition: &str) -> Result<Vec<ServiceRow>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, definition, system_name, address, port, service_uri, secure, interfaces, version,
                     metadata, end_of_validity, authentication_info, created_ms, updated_ms FROM services WHERE definition = $1 ORDER BY id",
                &[&definition],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(service_row).collect())
    }

    async fn issue_command(&self, system: &str, command: &str, now_ms: i64) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO edge_control(system, pending, last_command, issued_ms) VALUES ($1, $2, $2, $3)
             ON CONFLICT(system) DO UPDATE SET pending = excluded.pending,
                 last_command = excluded.last_command, issued_ms = excluded.issued_ms",
            &[&system, &command, &now_ms],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn take_command(&self, system: &str) -> Result<Option<String>> {
        let c = self.client().await?;
        // The old value comes from the locked row, so only one taker sees it.
        let row = c
            .query_opt(
                "UPDATE edge_control e SET pending = NULL FROM
                     (SELECT system, pending FROM edge_control WHERE system = $1 AND pending IS NOT NULL FOR UPDATE) old
                 WHERE e.system = old.system RETURNING old.pending",
                &[&system],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn edge_report(
        &self,
        system: &str,
        state: Option<&str>,
        parameters: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO edge_control(system, state, state_ms, parameters, parameters_ms)
                 VALUES ($1, $2, CASE WHEN $2::text IS NULL THEN NULL ELSE $4::bigint END,
                         $3, CASE WHEN $3::text IS NULL THEN NULL ELSE $4::bigint END)
             ON CONFLICT(system) DO UPDATE SET
                 state = COALESCE(excluded.state, edge_control.state),
                 state_ms = COALESCE(excluded.state_ms, edge_control.state_ms),
                 parameters = COALESCE(excluded.parameters, edge_control.parameters),
                 parameters_ms = COALESCE(excluded.parameters_ms, edge_control.parameters_ms)",
            &[&system, &state, &parameters, &now_ms],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn edge_control(&self, system: &str) -> Result<Option<EdgeControl>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT pending, last_command, issued_ms, state, state_ms, parameters, parameters_ms
                 FROM edge_control WHERE system = $1",
                &[&system],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| EdgeControl {
            pending: r.get(0),
            last_command: r.get(1),
            issued_ms: r.get(2),
            state: r.get(3),
            state_ms: r.get(4),
            parameters: r.get(5),
            parameters_ms: r.get(6),
        }))
    }

    async fn edge_batch(
        &self,
        system: &str,
        provider: &str,
        batch_id: &str,
        points: &[EdgePoint],
        now_ms: i64,
    ) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let n = crate::store::count(points.len());
        let fresh = tx
            .execute(
                "INSERT INTO edge_batches(system, batch_id, provider, received_ms, points) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING",
                &[&system, &batch_id, &provider, &now_ms, &n],
            )
            .await
            .map_err(db)?
            == 1;
        if fresh {
            let names: Vec<&str> = points.iter().map(|p| p.n.as_str()).collect();
            let ts: Vec<i64> = points.iter().map(|p| p.t).collect();
            let values: Vec<&str> = points.iter().map(|p| p.v.as_str()).collect();
            tx.execute(
                "INSERT INTO edge_points(system, name, ts, value, batch_id, provider)
                 SELECT $1, n, t, v, $5, $6 FROM unnest($2::text[], $3::bigint[], $4::text[]) WITH ORDINALITY AS x(n, t, v, i)
                 ORDER BY i",
                &[&system, &names, &ts, &values, &batch_id, &provider],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(fresh)
    }

    async fn edge_points(&self, system: &str, provider: Option<&str>, limit: i64) -> Result<Vec<EdgePointRow>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT batch_id, provider, name, ts, value FROM edge_points
                 WHERE system = $1 AND ($2::text IS NULL OR provider = $2) ORDER BY id LIMIT $3",
                &[&system, &provider, &limit],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| EdgePointRow {
                batch_id: r.get(0),
                provider: r.get(1),
                name: r.get(2),
                ts: r.get(3),
                value: r.get(4),
            })
            .collect())
    }

    async fn edge_batches(&self, system: &str, provider: Option<&str>) -> Result<Vec<EdgeBatchRow>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT batch_id, provider, received_ms, points FROM edge_batches
                 WHERE system = $1 AND ($2::text IS NULL OR provider = $2) ORDER BY received_ms, batch_id",
                &[&system, &provider],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| EdgeBatchRow { batch_id: r.get(0), provider: r.get(1), received_ms: r.get(2), points: r.get(3) })
            .collect())
    }
}
