//! The dashboard's tables in SQLite: operators and their sessions; the fleet query.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::{db, device_row, SqliteStore, DEVICE_COLS};
use crate::store::{
    ApiToken, ApiTokenHolder, AuditEntry, FleetRow, FleetStore, Operator, Result, Role, Rollout, RolloutDevice,
    RolloutState, SavedFilter, Scope, Session, StoreError, TargetState,
};

/// A state column read back: a name this hub does not know is an error of the row.
fn state<T>(r: &rusqlite::Row, i: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, format!("unknown state {s:?}").into())
    })
}

const ROLLOUT_COLS: &str = "id, name, package, vendor, model, filter, stages, max_failure_pct, state, stage, \
accepted_stage, reason, created_ms, updated_ms, start_ms, reboot, stream";

fn rollout_row(r: &rusqlite::Row) -> rusqlite::Result<Rollout> {
    let stages: String = r.get(6)?;
    Ok(Rollout {
        id: r.get(0)?,
        name: r.get(1)?,
        package: r.get(2)?,
        vendor: r.get(3)?,
        model: r.get(4)?,
        filter: r.get(5)?,
        stages: serde_json::from_str(&stages).unwrap_or_default(),
        max_failure_pct: r.get(7)?,
        state: state(r, 8, RolloutState::parse)?,
        stage: r.get(9)?,
        accepted_stage: r.get(10)?,
        reason: r.get(11)?,
        created_ms: r.get(12)?,
        updated_ms: r.get(13)?,
        start_ms: r.get(14)?,
        reboot: r.get(15)?,
        stream: r.get(16)?,
    })
}

const API_TOKEN_COLS: &str = "t.id, o.name, t.label, t.scope, t.created_ms, t.expires_ms, t.revoked";

fn api_token_row(r: &rusqlite::Row) -> rusqlite::Result<ApiToken> {
    Ok(ApiToken {
        id: r.get(0)?,
        operator: r.get(1)?,
        label: r.get(2)?,
        scope: state(r, 3, Scope::parse)?,
        created_ms: r.get(4)?,
        expires_ms: r.get(5)?,
        revoked: r.get(6)?,
    })
}

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS operators(
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, created_ms INTEGER NOT NULL,
    role TEXT NOT NULL DEFAULT 'admin', disabled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS rollouts(
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, package TEXT NOT NULL, vendor TEXT NOT NULL, model TEXT NOT NULL,
    filter TEXT NOT NULL, stages TEXT NOT NULL, max_failure_pct INTEGER NOT NULL, state TEXT NOT NULL,
    stage INTEGER NOT NULL, accepted_stage INTEGER NOT NULL, reason TEXT NOT NULL, created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_devices(
    rollout_id INTEGER NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE, device_id INTEGER NOT NULL,
    stage INTEGER NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL, updated_ms INTEGER NOT NULL,
    PRIMARY KEY(rollout_id, device_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions(
    token_hash BLOB PRIMARY KEY, operator_id INTEGER NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL, expires_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS device_tags(
    device_id INTEGER NOT NULL, tag TEXT NOT NULL, PRIMARY KEY(device_id, tag)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS saved_filters(
    name TEXT PRIMARY KEY, query TEXT NOT NULL, operator TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS api_tokens(
    id INTEGER PRIMARY KEY, operator_id INTEGER NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    token_hash BLOB NOT NULL UNIQUE, label TEXT NOT NULL, scope TEXT NOT NULL, created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS audit(
    id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    targets TEXT NOT NULL, detail TEXT NOT NULL, addr TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_by_action ON audit(action, at_ms);
";

/// Columns added since the first schema. Rollouts made before schedules have no `start_ms`:
/// they started when they were made; those made before OS bundles have no `reboot`: `now`;
/// those made before streaming download (`stream` false).
pub fn migrate(c: &rusqlite::Connection) -> rusqlite::Result<()> {
    // Operators made before roles could do everything: they are admins.
    let has_role: i64 =
        c.query_row("SELECT count(*) FROM pragma_table_info('operators') WHERE name = 'role'", [], |r| r.get(0))?;
    if has_role == 0 {
        c.execute_batch("ALTER TABLE operators ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'")?;
    }
    let has_disabled: i64 =
        c.query_row("SELECT count(*) FROM pragma_table_info('operators') WHERE name = 'disabled'", [], |r| r.get(0))?;
    if has_disabled == 0 {
        c.execute_batch("ALTER TABLE operators ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0")?;
    }
    let has = |col: &str| -> rusqlite::Result<bool> {
        c.query_row("SELECT count(*) FROM pragma_table_info('rollouts') WHERE name = ?1", [col], |r| r.get(0))
            .map(|n: i64| n > 0)
    };
    if !has("start_ms")? {
        c.execute_batch(
            "ALTER TABLE rollouts ADD COLUMN start_ms INTEGER NOT NULL DEFAULT 0;
             UPDATE rollouts SET start_ms = created_ms;",
        )?;
    }
    if !has("reboot")? {
        c.execute_batch("ALTER TABLE rollouts ADD COLUMN reboot TEXT NOT NULL DEFAULT 'now';")?;
    }
    if !has("stream")? {
        c.execute_batch("ALTER TABLE rollouts ADD COLUMN stream INTEGER NOT NULL DEFAULT 0;")?;
    }
    Ok(())
}

#[async_trait]
impl FleetStore for SqliteStore {
    async fn put_operator(
        &self,
        name: &str,
        password_hash: &str,
        role: Role,
        replace: bool,
        now_ms: i64,
    ) -> Result<()> {
        let (name, hash) = (name.to_string(), password_hash.to_string());
        self.write(move |c| {
            let n = if replace {
                c.execute(
                    "INSERT INTO operators(name, password_hash, created_ms, role) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash",
                    params![name, hash, now_ms, role.as_str()],
                )
            } else {
                c.execute(
                    "INSERT INTO operators(name, password_hash, created_ms, role) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                    params![name, hash, now_ms, role.as_str()],
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

    async fn set_role(&self, name: &str, role: Role) -> Result<bool> {
        let name = name.to_string();
        self.write(move |c| {
            let n = c
                .execute("UPDATE operators SET role = ?2 WHERE name = ?1", params![name, role.as_str()])
                .map_err(db)?;
            c.execute(
                "DELETE FROM sessions WHERE operator_id = (SELECT id FROM operators WHERE name = ?1)",
                params![name],
            )
            .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    async fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        let name = name.to_string();
        self.write(move |c| {
            let n =
                c.execute("UPDATE operators SET disabled = ?2 WHERE name = ?1", params![name, disabled]).map_err(db)?;
            c.execute(
                "DELETE FROM sessions WHERE operator_id = (SELECT id FROM operators WHERE name = ?1)",
                params![name],
            )
            .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    async fn operator(&self, name: &str) -> Result<Option<Operator>> {
        let name = name.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT id, name, password_hash, role, disabled FROM operators WHERE name = ?1",
                params![name],
                |r| {
                    Ok(Operator {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        password_hash: r.get(2)?,
                        role: state(r, 3, Role::parse)?,
                        disabled: r.get(4)?,
                    })
                },
            )
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
                "SELECT o.name, s.csrf, s.expires_ms, o.role FROM sessions s JOIN operators o ON o.id = s.operator_id
                 WHERE s.token_hash = ?1 AND s.expires_ms > ?2 AND o.disabled = 0",
                params![&hash[..], now_ms],
                |r| {
                    Ok(Session {
                        operator: r.get(0)?,
                        role: state(r, 3, Role::parse)?,
                        csrf: r.get(1)?,
                        expires_ms: r.get(2)?,
                    })
                },
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

    async fn add_api_token(&self, t: &ApiToken, token_hash: &[u8; 32]) -> Result<Option<i64>> {
        let (t, hash) = (t.clone(), *token_hash);
        self.write(move |c| {
            let n = c
                .execute(
                    "INSERT INTO api_tokens(operator_id, token_hash, label, scope, created_ms, expires_ms)
                     SELECT id, ?2, ?3, ?4, ?5, ?6 FROM operators WHERE name = ?1",
                    params![t.operator, &hash[..], t.label, t.scope.as_str(), t.created_ms, t.expires_ms],
                )
                .map_err(db)?;
            Ok((n > 0).then(|| c.last_insert_rowid()))
        })
        .await
    }

    async fn api_token(&self, token_hash: &[u8; 32]) -> Result<Option<ApiTokenHolder>> {
        let hash = *token_hash;
        self.read(move |c| {
            c.query_row(
                &format!(
                    "SELECT {API_TOKEN_COLS}, o.role, o.disabled FROM api_tokens t JOIN operators o ON o.id = t.operator_id
                     WHERE t.token_hash = ?1"
                ),
                params![&hash[..]],
                |r| {
                    Ok(ApiTokenHolder {
                        token: api_token_row(r)?,
                        role: state(r, 7, Role::parse)?,
                        disabled: r.get(8)?,
                    })
                },
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn api_tokens(&self) -> Result<Vec<ApiToken>> {
        self.read(|c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {API_TOKEN_COLS} FROM api_tokens t JOIN operators o ON o.id = t.operator_id ORDER BY t.id"
                ))
                .map_err(db)?;
            let rows = st.query_map([], api_token_row).map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn revoke_api_token(&self, id: i64) -> Result<bool> {
        self.write(move |c| {
            c.execute("UPDATE api_tokens SET revoked = 1 WHERE id = ?1", params![id]).map(|n| n > 0).map_err(db)
        })
        .await
    }

    async fn audit_add(&self, e: &AuditEntry) -> Result<()> {
        let e = e.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO audit(at_ms, actor, action, targets, detail, addr) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![e.at_ms, e.actor, e.action, e.targets, e.detail, e.addr],
            )
            .map(drop)
            .map_err(db)
        })
        .await
    }

    async fn audit(&self, before_id: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, at_ms, actor, action, targets, detail, addr FROM audit WHERE id < ?1
                     ORDER BY id DESC LIMIT ?2",
                )
                .map_err(db)?;
            let rows = st
                .query_map(params![before_id, limit], |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at_ms: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        targets: r.get(4)?,
                        detail: r.get(5)?,
                        addr: r.get(6)?,
                    })
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn failed_signins(&self, actor: &str, addr: &str, since_ms: i64) -> Result<(i64, i64)> {
        let (actor, addr) = (actor.to_string(), addr.to_string());
        self.read(move |c| {
            c.query_row(
                "SELECT coalesce(sum(actor = ?1), 0), coalesce(sum(addr = ?2), 0) FROM audit
                 WHERE action = 'signin.failed' AND at_ms >= ?3",
                params![actor, addr, since_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db)
        })
        .await
    }

    async fn fleet(&self) -> Result<Vec<FleetRow>> {
        self.read(|c| {
            let cols = DEVICE_COLS.split(", ").map(|x| format!("d.{x}")).collect::<Vec<_>>().join(", ");
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {cols}, p.value, coalesce(p.modified_ms, p.ts * 1000), i.value,
                         (SELECT group_concat(tag, ' ') FROM (SELECT tag FROM device_tags WHERE device_id = d.id
                             ORDER BY tag))
                     FROM devices d
                     LEFT JOIN points p ON p.rowid = (SELECT rowid FROM points
                         WHERE device_id = d.id AND alias = 'engine_report' ORDER BY ts DESC, rowid DESC LIMIT 1)
                     LEFT JOIN points i ON i.rowid = (SELECT rowid FROM points
                         WHERE device_id = d.id AND alias = 'device_info' ORDER BY ts DESC, rowid DESC LIMIT 1)
                     ORDER BY d.id"
                ))
                .map_err(db)?;
            let rows = st
                .query_map([], |r| {
                    let tags: Option<String> = r.get(11)?;
                    Ok(FleetRow {
                        device: device_row(r)?,
                        engine_report: r.get(8)?,
                        report_ms: r.get(9)?,
                        device_info: r.get(10)?,
                        tags: tags.map(|t| t.split(' ').map(String::from).collect()).unwrap_or_default(),
                    })
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn set_tags(&self, ids: &[i64], add: &[String], remove: &[String]) -> Result<()> {
        let (ids, add, remove) = (ids.to_vec(), add.to_vec(), remove.to_vec());
        self.write(move |c| {
            let mut ins = c
                .prepare_cached(
                    "INSERT INTO device_tags(device_id, tag) SELECT id, ?2 FROM devices WHERE id = ?1
                     ON CONFLICT DO NOTHING",
                )
                .map_err(db)?;
            let mut del = c.prepare_cached("DELETE FROM device_tags WHERE device_id = ?1 AND tag = ?2").map_err(db)?;
            for id in &ids {
                for t in &add {
                    ins.execute(params![id, t]).map_err(db)?;
                }
                for t in &remove {
                    del.execute(params![id, t]).map_err(db)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn tags(&self, id: i64) -> Result<Vec<String>> {
        self.read(move |c| {
            let mut st =
                c.prepare_cached("SELECT tag FROM device_tags WHERE device_id = ?1 ORDER BY tag").map_err(db)?;
            let rows = st.query_map(params![id], |r| r.get(0)).map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn saved_filters(&self) -> Result<Vec<SavedFilter>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached("SELECT name, query, operator, created_ms FROM saved_filters ORDER BY name")
                .map_err(db)?;
            let rows = st
                .query_map([], |r| {
                    Ok(SavedFilter { name: r.get(0)?, query: r.get(1)?, operator: r.get(2)?, created_ms: r.get(3)? })
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn put_saved_filter(&self, f: &SavedFilter) -> Result<()> {
        let f = f.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO saved_filters(name, query, operator, created_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET query = excluded.query, operator = excluded.operator,
                     created_ms = excluded.created_ms",
                params![f.name, f.query, f.operator, f.created_ms],
            )
            .map(drop)
            .map_err(db)
        })
        .await
    }

    async fn drop_saved_filter(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |c| {
            c.execute("DELETE FROM saved_filters WHERE name = ?1", params![name]).map(|n| n > 0).map_err(db)
        })
        .await
    }

    async fn create_rollout(&self, r: &Rollout, devices: &[(i64, i64)]) -> Result<i64> {
        let (r, devices) = (r.clone(), devices.to_vec());
        self.write(move |c| {
            let stages = serde_json::to_string(&r.stages).unwrap_or_default();
            c.execute(
                "INSERT INTO rollouts(name, package, vendor, model, filter, stages, max_failure_pct, state, stage,
                     accepted_stage, reason, created_ms, updated_ms, start_ms, reboot, stream)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, -1, '', ?9, ?9, ?10, ?11, ?12)",
                params![
                    r.name,
                    r.package,
                    r.vendor,
                    r.model,
                    r.filter,
                    stages,
                    r.max_failure_pct,
                    r.state.as_str(),
                    r.created_ms,
                    r.start_ms,
                    r.reboot,
                    r.stream
                ],
            )
            .map_err(db)?;
            let id = c.last_insert_rowid();
            let mut st = c
                .prepare_cached(
                    "INSERT INTO rollout_devices(rollout_id, device_id, stage, state, detail, updated_ms)
                     VALUES (?1, ?2, ?3, 'pending', '', ?4)",
                )
                .map_err(db)?;
            for (dev, stage) in devices {
                st.execute(params![id, dev, stage, r.created_ms]).map_err(db)?;
            }
            Ok(id)
        })
        .await
    }

    async fn rollouts(&self) -> Result<Vec<Rollout>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!("SELECT {ROLLOUT_COLS} FROM rollouts ORDER BY id")).map_err(db)?;
            let rows = st.query_map([], rollout_row).map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn rollout(&self, id: i64) -> Result<Option<(Rollout, Vec<RolloutDevice>)>> {
        self.read(move |c| {
            let Some(r) = c
                .query_row(&format!("SELECT {ROLLOUT_COLS} FROM rollouts WHERE id = ?1"), params![id], rollout_row)
                .optional()
                .map_err(db)?
            else {
                return Ok(None);
            };
            let mut st = c
                .prepare_cached(
                    "SELECT r.device_id, d.sn, r.stage, r.state, r.detail, r.updated_ms FROM rollout_devices r
                     JOIN devices d ON d.id = r.device_id WHERE r.rollout_id = ?1 ORDER BY r.stage, r.device_id",
                )
                .map_err(db)?;
            let devs = st
                .query_map(params![id], |x| {
                    Ok(RolloutDevice {
                        device_id: x.get(0)?,
                        sn: x.get(1)?,
                        stage: x.get(2)?,
                        state: state(x, 3, TargetState::parse)?,
                        detail: x.get(4)?,
                        updated_ms: x.get(5)?,
                    })
                })
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
            Ok(Some((r, devs)))
        })
        .await
    }

    async fn update_rollout(&self, r: &Rollout, from: &[RolloutState], stage: i64, now_ms: i64) -> Result<bool> {
        let r = r.clone();
        let from = serde_json::to_string(from).unwrap_or_default();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE rollouts SET state = ?2, stage = ?3, accepted_stage = ?4, reason = ?5, updated_ms = ?6
                     WHERE id = ?1 AND state IN (SELECT value FROM json_each(?7)) AND stage = ?8",
                    params![r.id, r.state.as_str(), r.stage, r.accepted_stage, r.reason, now_ms, from, stage],
                )
                .map_err(db)?;
            if n > 0 && r.state == RolloutState::Aborted {
                c.execute(
                    "UPDATE rollout_devices SET state = 'skipped', updated_ms = ?2 WHERE rollout_id = ?1 AND state = 'pending'",
                    params![r.id, now_ms],
                )
                .map_err(db)?;
            }
            Ok(n > 0)
        })
        .await
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
        let (from, to, detail) = (from.as_str(), to.as_str(), detail.to_string());
        self.write(move |c| {
            c.execute(
                "UPDATE rollout_devices SET state = ?4, detail = ?5, updated_ms = ?6
                 WHERE rollout_id = ?1 AND device_id = ?2 AND state = ?3",
                params![id, dev, from, to, detail, now_ms],
            )
            .map(|n| n > 0)
            .map_err(db)
        })
        .await
    }
}
