//! The dashboard's tables in PostgreSQL: operators and their sessions; the fleet query.

use async_trait::async_trait;

use super::{db, device_row, PgStore, DEVICE_COLS};
use crate::store::{
    unknown_state, ApiToken, ApiTokenHolder, AuditEntry, FleetRow, FleetStore, Operator, Result, Role, Rollout,
    RolloutDevice, RolloutState, SavedFilter, Scope, Session, StoreError, TargetState,
};

const ROLLOUT_COLS: &str = "id, name, package, vendor, model, filter, stages, max_failure_pct, state, stage, \
accepted_stage, reason, created_ms, updated_ms, start_ms, reboot, stream";

fn rollout_row(r: &tokio_postgres::Row) -> Result<Rollout> {
    let stages: String = r.get(6);
    let state: &str = r.get(8);
    Ok(Rollout {
        id: r.get(0),
        name: r.get(1),
        package: r.get(2),
        vendor: r.get(3),
        model: r.get(4),
        filter: r.get(5),
        stages: serde_json::from_str(&stages).unwrap_or_default(),
        max_failure_pct: r.get(7),
        state: RolloutState::parse(state).ok_or_else(|| unknown_state("rollout", state))?,
        stage: r.get(9),
        accepted_stage: r.get(10),
        reason: r.get(11),
        created_ms: r.get(12),
        updated_ms: r.get(13),
        start_ms: r.get(14),
        reboot: r.get(15),
        stream: r.get(16),
    })
}

const API_TOKEN_COLS: &str = "t.id, o.name, t.label, t.scope, t.created_ms, t.expires_ms, t.revoked";

fn api_token_row(r: &tokio_postgres::Row) -> Result<ApiToken> {
    let scope: &str = r.get(3);
    Ok(ApiToken {
        id: r.get(0),
        operator: r.get(1),
        label: r.get(2),
        scope: Scope::parse(scope).ok_or_else(|| unknown_state("token scope", scope))?,
        created_ms: r.get(4),
        expires_ms: r.get(5),
        revoked: r.get(6),
    })
}

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS operators(
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, created_ms BIGINT NOT NULL);
-- Operators made before roles could do everything: they are admins.
ALTER TABLE operators ADD COLUMN IF NOT EXISTS role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE operators ADD COLUMN IF NOT EXISTS disabled BOOLEAN NOT NULL DEFAULT FALSE;
CREATE TABLE IF NOT EXISTS rollouts(
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, package TEXT NOT NULL, vendor TEXT NOT NULL, model TEXT NOT NULL,
    filter TEXT NOT NULL, stages TEXT NOT NULL, max_failure_pct BIGINT NOT NULL, state TEXT NOT NULL,
    stage BIGINT NOT NULL, accepted_stage BIGINT NOT NULL, reason TEXT NOT NULL, created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_devices(
    rollout_id BIGINT NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE, device_id BIGINT NOT NULL,
    stage BIGINT NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL, updated_ms BIGINT NOT NULL,
    PRIMARY KEY(rollout_id, device_id));
CREATE TABLE IF NOT EXISTS sessions(
    token_hash BYTEA PRIMARY KEY, operator_id BIGINT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL, expires_ms BIGINT NOT NULL);
DO $$ BEGIN
    -- Rollouts made before schedules started when they were made.
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'rollouts' AND column_name = 'start_ms') THEN
        ALTER TABLE rollouts ADD COLUMN start_ms BIGINT NOT NULL DEFAULT 0;
        UPDATE rollouts SET start_ms = created_ms;
    END IF;
    -- Rollouts made before OS bundles reboot at once.
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'rollouts' AND column_name = 'reboot') THEN
        ALTER TABLE rollouts ADD COLUMN reboot TEXT NOT NULL DEFAULT 'now';
    END IF;
    -- Rollouts made before streaming download their bundles.
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'rollouts' AND column_name = 'stream') THEN
        ALTER TABLE rollouts ADD COLUMN stream BOOLEAN NOT NULL DEFAULT FALSE;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS device_tags(
    device_id BIGINT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY(device_id, tag));
CREATE TABLE IF NOT EXISTS saved_filters(
    name TEXT PRIMARY KEY, query TEXT NOT NULL, operator TEXT NOT NULL, created_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS api_tokens(
    id BIGSERIAL PRIMARY KEY, operator_id BIGINT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    token_hash BYTEA NOT NULL UNIQUE, label TEXT NOT NULL, scope TEXT NOT NULL, created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL, revoked BOOLEAN NOT NULL DEFAULT FALSE);
CREATE TABLE IF NOT EXISTS audit(
    id BIGSERIAL PRIMARY KEY, at_ms BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    targets TEXT NOT NULL, detail TEXT NOT NULL, addr TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_by_action ON audit(action, at_ms);
";

#[async_trait]
impl FleetStore for PgStore {
    async fn put_operator(
        &self,
        name: &str,
        password_hash: &str,
        role: Role,
        replace: bool,
        now_ms: i64,
    ) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let role = role.as_str();
        let n = if replace {
            tx.execute(
                "INSERT INTO operators(name, password_hash, created_ms, role) VALUES ($1, $2, $3, $4)
                 ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash",
                &[&name, &password_hash, &now_ms, &role],
            )
            .await
        } else {
            tx.execute(
                "INSERT INTO operators(name, password_hash, created_ms, role) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&name, &password_hash, &now_ms, &role],
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

    async fn set_role(&self, name: &str, role: Role) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let n =
            tx.execute("UPDATE operators SET role = $2 WHERE name = $1", &[&name, &role.as_str()]).await.map_err(db)?;
        tx.execute("DELETE FROM sessions WHERE operator_id = (SELECT id FROM operators WHERE name = $1)", &[&name])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(n > 0)
    }

    async fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let n =
            tx.execute("UPDATE operators SET disabled = $2 WHERE name = $1", &[&name, &disabled]).await.map_err(db)?;
        tx.execute("DELETE FROM sessions WHERE operator_id = (SELECT id FROM operators WHERE name = $1)", &[&name])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(n > 0)
    }

    async fn operator(&self, name: &str) -> Result<Option<Operator>> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT id, name, password_hash, role, disabled FROM operators WHERE name = $1", &[&name])
            .await
            .map_err(db)?;
        row.map(|r| {
            let role: &str = r.get(3);
            Ok(Operator {
                id: r.get(0),
                name: r.get(1),
                password_hash: r.get(2),
                role: Role::parse(role).ok_or_else(|| unknown_state("operator role", role))?,
                disabled: r.get(4),
            })
        })
        .transpose()
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
                "SELECT o.name, s.csrf, s.expires_ms, o.role FROM sessions s JOIN operators o ON o.id = s.operator_id
                 WHERE s.token_hash = $1 AND s.expires_ms > $2 AND NOT o.disabled",
                &[&hash, &now_ms],
            )
            .await
            .map_err(db)?;
        row.map(|r| {
            let role: &str = r.get(3);
            Ok(Session {
                operator: r.get(0),
                role: Role::parse(role).ok_or_else(|| unknown_state("operator role", role))?,
                csrf: r.get(1),
                expires_ms: r.get(2),
            })
        })
        .transpose()
    }

    async fn drop_session(&self, token_hash: &[u8; 32]) -> Result<()> {
        let c = self.client().await?;
        let hash = &token_hash[..];
        c.execute("DELETE FROM sessions WHERE token_hash = $1", &[&hash]).await.map_err(db)?;
        Ok(())
    }

    async fn add_api_token(&self, t: &ApiToken, token_hash: &[u8; 32]) -> Result<Option<i64>> {
        let c = self.client().await?;
        let hash = &token_hash[..];
        let row = c
            .query_opt(
                "INSERT INTO api_tokens(operator_id, token_hash, label, scope, created_ms, expires_ms)
                 SELECT id, $2, $3, $4, $5, $6 FROM operators WHERE name = $1 RETURNING id",
                &[&t.operator, &hash, &t.label, &t.scope.as_str(), &t.created_ms, &t.expires_ms],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn api_token(&self, token_hash: &[u8; 32]) -> Result<Option<ApiTokenHolder>> {
        let c = self.client().await?;
        let hash = &token_hash[..];
        let row = c
            .query_opt(
                &format!(
                    "SELECT {API_TOKEN_COLS}, o.role, o.disabled FROM api_tokens t JOIN operators o ON o.id = t.operator_id
                     WHERE t.token_hash = $1"
                ),
                &[&hash],
            )
            .await
            .map_err(db)?;
        row.map(|r| {
            let role: &str = r.get(7);
            Ok(ApiTokenHolder {
                token: api_token_row(&r)?,
                role: Role::parse(role).ok_or_else(|| unknown_state("operator role", role))?,
                disabled: r.get(8),
            })
        })
        .transpose()
    }

    async fn api_tokens(&self) -> Result<Vec<ApiToken>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {API_TOKEN_COLS} FROM api_tokens t JOIN operators o ON o.id = t.operator_id ORDER BY t.id"
                ),
                &[],
            )
            .await
            .map_err(db)?;
        rows.iter().map(api_token_row).collect()
    }

    async fn revoke_api_token(&self, id: i64) -> Result<bool> {
        let c = self.client().await?;
        Ok(c.execute("UPDATE api_tokens SET revoked = TRUE WHERE id = $1", &[&id]).await.map_err(db)? > 0)
    }

    async fn audit_add(&self, e: &AuditEntry) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO audit(at_ms, actor, action, targets, detail, addr) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&e.at_ms, &e.actor, &e.action, &e.targets, &e.detail, &e.addr],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn audit(&self, before_id: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, at_ms, actor, action, targets, detail, addr FROM audit WHERE id < $1
                 ORDER BY id DESC LIMIT $2",
                &[&before_id, &limit],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get(0),
                at_ms: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                targets: r.get(4),
                detail: r.get(5),
                addr: r.get(6),
            })
            .collect())
    }

    async fn failed_signins(&self, actor: &str, addr: &str, since_ms: i64) -> Result<(i64, i64)> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "SELECT count(*) FILTER (WHERE actor = $1), count(*) FILTER (WHERE addr = $2) FROM audit
                 WHERE action = 'signin.failed' AND at_ms >= $3",
                &[&actor, &addr, &since_ms],
            )
            .await
            .map_err(db)?;
        Ok((r.get(0), r.get(1)))
    }

    async fn fleet(&self) -> Result<Vec<FleetRow>> {
        let c = self.client().await?;
        let cols = DEVICE_COLS.split(", ").map(|x| format!("d.{x}")).collect::<Vec<_>>().join(", ");
        let rows = c
            .query(
                &format!(
                    "SELECT {cols}, p.value, p.modified_ms, i.value,
                         (SELECT string_agg(tag, ' ' ORDER BY tag) FROM device_tags WHERE device_id = d.id)
                     FROM devices d
                     LEFT JOIN dataports p ON p.device_id = d.id AND p.alias = 'engine_report'
                     LEFT JOIN dataports i ON i.device_id = d.id AND i.alias = 'device_info'
                     ORDER BY d.id"
                ),
                &[],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let tags: Option<String> = r.get(11);
                Ok(FleetRow {
                    device: device_row(r)?,
                    engine_report: r.get(8),
                    report_ms: r.get(9),
                    device_info: r.get(10),
                    tags: tags.map(|t| t.split(' ').map(String::from).collect()).unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn set_tags(&self, ids: &[i64], add: &[String], remove: &[String]) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO device_tags(device_id, tag) SELECT d.id, t FROM devices d, unnest($2::text[]) t
             WHERE d.id = ANY($1) ON CONFLICT DO NOTHING",
            &[&ids, &add],
        )
        .await
        .map_err(db)?;
        tx.execute("DELETE FROM device_tags WHERE device_id = ANY($1) AND tag = ANY($2)", &[&ids, &remove])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn tags(&self, id: i64) -> Result<Vec<String>> {
        let c = self.client().await?;
        let rows =
            c.query("SELECT tag FROM device_tags WHERE device_id = $1 ORDER BY tag", &[&id]).await.map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn saved_filters(&self) -> Result<Vec<SavedFilter>> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT name, query, operator, created_ms FROM saved_filters ORDER BY name", &[])
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| SavedFilter { name: r.get(0), query: r.get(1), operator: r.get(2), created_ms: r.get(3) })
            .collect())
    }

    async fn put_saved_filter(&self, f: &SavedFilter) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO saved_filters(name, query, operator, created_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT(name) DO UPDATE SET query = excluded.query, operator = excluded.operator,
                 created_ms = excluded.created_ms",
            &[&f.name, &f.query, &f.operator, &f.created_ms],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn drop_saved_filter(&self, name: &str) -> Result<bool> {
        let c = self.client().await?;
        Ok(c.execute("DELETE FROM saved_filters WHERE name = $1", &[&name]).await.map_err(db)? > 0)
    }

    async fn create_rollout(&self, r: &Rollout, devices: &[(i64, i64)]) -> Result<i64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let stages = serde_json::to_string(&r.stages).unwrap_or_default();
        let row = tx
            .query_one(
                "INSERT INTO rollouts(name, package, vendor, model, filter, stages, max_failure_pct, state, stage,
                     accepted_stage, reason, created_ms, updated_ms, start_ms, reboot, stream)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, -1, '', $9, $9, $10, $11, $12) RETURNING id",
                &[
                    &r.name,
                    &r.package,
                    &r.vendor,
                    &r.model,
                    &r.filter,
                    &stages,
                    &r.max_failure_pct,
                    &r.state.as_str(),
                    &r.created_ms,
                    &r.start_ms,
                    &r.reboot,
                    &r.stream,
                ],
            )
            .await
            .map_err(db)?;
        let id: i64 = row.get(0);
        let st = tx
            .prepare(
                "INSERT INTO rollout_devices(rollout_id, device_id, stage, state, detail, updated_ms)
                 VALUES ($1, $2, $3, 'pending', '', $4)",
            )
            .await
            .map_err(db)?;
        for (dev, stage) in devices {
            tx.execute(&st, &[&id, dev, stage, &r.created_ms]).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(id)
    }

    async fn rollouts(&self) -> Result<Vec<Rollout>> {
        let c = self.client().await?;
        let rows = c.query(&format!("SELECT {ROLLOUT_COLS} FROM rollouts ORDER BY id"), &[]).await.map_err(db)?;
        rows.iter().map(rollout_row).collect()
    }

    async fn rollout(&self, id: i64) -> Result<Option<(Rollout, Vec<RolloutDevice>)>> {
        let c = self.client().await?;
        let Some(r) =
            c.query_opt(&format!("SELECT {ROLLOUT_COLS} FROM rollouts WHERE id = $1"), &[&id]).await.map_err(db)?
        else {
            return Ok(None);
        };
        let rows = c
            .query(
                "SELECT r.device_id, d.sn, r.stage, r.state, r.detail, r.updated_ms FROM rollout_devices r
                 JOIN devices d ON d.id = r.device_id WHERE r.rollout_id = $1 ORDER BY r.stage, r.device_id",
                &[&id],
            )
            .await
            .map_err(db)?;
        let devs = rows
            .iter()
            .map(|x| {
                let state: &str = x.get(3);
                Ok(RolloutDevice {
                    device_id: x.get(0),
                    sn: x.get(1),
                    stage: x.get(2),
                    state: TargetState::parse(state).ok_or_else(|| unknown_state("rollout gateway", state))?,
                    detail: x.get(4),
                    updated_ms: x.get(5),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Some((rollout_row(&r)?, devs)))
    }

    async fn update_rollout(&self, r: &Rollout, from: &[RolloutState], stage: i64, now_ms: i64) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let n = tx
            .execute(
                "UPDATE rollouts SET state = $2, stage = $3, accepted_stage = $4, reason = $5, updated_ms = $6
                 WHERE id = $1 AND state = ANY($7) AND stage = $8",
                &[&r.id, &r.state.as_str(), &r.stage, &r.accepted_stage, &r.reason, &now_ms, &from, &stage],
            )
            .await
            .map_err(db)?;
        if n > 0 && r.state == RolloutState::Aborted {
            tx.execute(
                "UPDATE rollout_devices SET state = 'skipped', updated_ms = $2 WHERE rollout_id = $1 AND state = 'pending'",
                &[&r.id, &now_ms],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(n > 0)
    }

    async fn move_rollout_device(
        &self,
        id: i64,
        dev: i64,
        from: TargetState,
        to: TargetState,
        detail: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let c = self.client().await?;
        let (from, to) = (from.as_str(), to.as_str());
        let n = c
            .execute(
                "UPDATE rollout_devices SET state = $4, detail = $5, updated_ms = $6
                 WHERE rollout_id = $1 AND device_id = $2 AND state = $3",
                &[&id, &dev, &from, &to, &detail, &now_ms],
            )
            .await
            .map_err(db)?;
        Ok(n > 0)
    }
}
