//! The operator API (JSON, `Authorization: Bearer <token>`: the shared operator token, or an
//! operator's own token, within its scope and its operator's role): whitelist and
//! re-enable devices, read dataport values and history, write a dataport (a command such
//! as `engine_fetch`), upload content (OTA packages); pre-authorise gateways' keys in bulk,
//! approve keys offered with a batch credential, revoke devices; read the audit log (`/api/v1/audit`,
//! JSON or `?format=csv`). Every change is recorded in the audit log as made by `token` (the
//! shared one) or `operator:NAME (token ID)`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::http::{json_body, ClientAddr};
use crate::service::auth::{allows, same};
use crate::service::{audit, identity};
use crate::store::{ApiTokenHolder, ContentInfo, DeviceKey, Role, Scope};
use crate::{err, now_ms, token_hash, ApiError, Hub};

pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/api/v1/devices", get(devices).post(add_device))
        .route("/api/v1/devices/{id}", get(device))
        .route("/api/v1/devices/{id}/enable", post(enable))
        .route("/api/v1/devices/{id}/approve", post(approve))
        .route("/api/v1/devices/{id}/revoke", post(revoke))
        .route("/api/v1/keys", get(keys).post(import_keys))
        .route("/api/v1/devices/{id}/dataports", get(dataports))
        .route("/api/v1/devices/{id}/dataports/{alias}", get(dataport).put(set_dataport))
        .route("/api/v1/devices/{id}/dataports/{alias}/history", get(history))
        .route("/api/v1/content/{vendor}/{model}", get(list_content))
        .route("/api/v1/content/{vendor}/{model}/{id}", put(put_content))
        .route("/api/v1/audit", get(audit_log))
}

/// Operator tokens start with this, so that secret scanners can find a leaked one.
pub const TOKEN_PREFIX: &str = "gweo_";

/// Who calls the operator API, as the audit log names it.
pub struct Caller {
    pub actor: String,
}

/// The caller of an operator API request, if it may do what needs `scope` and `role`: the
/// shared operator token (every right; recorded as `token`), or an operator's own token
/// (`gwe-hub operator token`), within its scope and its operator's role, until it expires
/// or is revoked. A refused operator token is logged and recorded as `denied`.
async fn caller(hub: &Hub, headers: &HeaderMap, addr: &str, scope: Scope, role: Role) -> Result<Caller, ApiError> {
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| err(StatusCode::UNAUTHORIZED, "missing Authorization: Bearer <operator token>"))?;
    if hub.operator_token.as_ref().is_some_and(|want| same(got.as_bytes(), want.as_bytes())) {
        return Ok(Caller { actor: "token".into() });
    }
    let holder = if got.starts_with(TOKEN_PREFIX) { hub.store.api_token(&token_hash(got)).await? } else { None };
    let Some(h) = holder else {
        return Err(err(StatusCode::UNAUTHORIZED, "wrong operator token"));
    };
    let actor = format!("operator:{} (token {})", h.token.operator, h.token.id);
    if let Some((status, why)) = refusal(&h, scope, role, now_ms()) {
        log::warn!("operator API: refused: {why}");
        audit::record(hub, &actor, "denied", "", &why, addr).await;
        return Err(err(status, why));
    }
    Ok(Caller { actor })
}

/// Why an operator's token may not do what needs `scope` and `role` at `now`; None: it may.
fn refusal(h: &ApiTokenHolder, scope: Scope, role: Role, now: i64) -> Option<(StatusCode, String)> {
    let t = &h.token;
    if h.disabled {
        Some((StatusCode::UNAUTHORIZED, format!("{} is disabled (token {})", t.operator, t.id)))
    } else if t.revoked {
        Some((StatusCode::UNAUTHORIZED, format!("token {} of {} was revoked", t.id, t.operator)))
    } else if t.expires_ms <= now {
        Some((StatusCode::UNAUTHORIZED, format!("token {} of {} expired", t.id, t.operator)))
    } else if scope == Scope::Write && t.scope == Scope::Read {
        Some((StatusCode::FORBIDDEN, format!("token {} of {} may only read", t.id, t.operator)))
    } else if !allows(h.role, role) {
        Some((StatusCode::FORBIDDEN, format!("{} is {}: this needs the {role} role", t.operator, h.role)))
    } else {
        None
    }
}

type ApiResult = Result<Response, ApiError>;

pub fn check_operator(hub: &Hub, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(want) = &hub.operator_token else {
        return Err(err(StatusCode::FORBIDDEN, "the operator API is disabled (no operator token configured)"));
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| err(StatusCode::UNAUTHORIZED, "missing Authorization: Bearer <operator token>"))?;
    if !same(got.trim().as_bytes(), want.as_bytes()) {
        return Err(err(StatusCode::UNAUTHORIZED, "wrong operator token"));
    }
    Ok(())
}

async fn devices(State(hub): State<Arc<Hub>>, ClientAddr(addr): ClientAddr, headers: HeaderMap) -> ApiResult {
    let _who = caller(&hub, &headers, &addr, Scope::Read, Role::Viewer).await?;
    Ok(Json(hub.store.devices().await?).into_response())
}

async fn add_device(
    State(hub): State<Arc<Hub>>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let who = caller(&hub, &headers, &addr, Scope::Write, Role::Admin).await?;
    let key: DeviceKey = json_body(&body)?;
    for (name, v) in [("vendor", &key.vendor), ("model", &key.model), ("sn", &key.sn)] {
        if v.is_empty() || v.len() > 128 {
            return Err(err(StatusCode::BAD_REQUEST, format!("{name} must be 1 to 128 bytes")));
        }
    }
    let d = hub.store.add_device(&key, now_ms()).await?;
    audit::record(&hub, &who.actor, "device.add", &d.sn, &format!("{}/{}/{}", d.vendor, d.model, d.sn), &addr).await;
    Ok((StatusCode::CREATED, Json(d)).into_response())
}

async fn device(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<i64>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> ApiResult {
    let _who = caller(&hub, &headers, &addr, Scope::Read, Role::Viewer).await?;
    let d = hub.store.device(id).await?.ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no device {id}")))?;
    Ok(Json(d).into_response())
}

/// What an admin does to one device through the operator API.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DeviceChange {
    /// Lets it activate (or enroll) again; its token stops working.
    Enable,
    /// Approves a key it offered with a batch credential.
    Approve,
    /// Its token, key and certificates refused from now on, on every hub.
    Revoke,
}

async fn enable(State(hub): State<Arc<Hub>>, Path(id): Path<i64>, addr: ClientAddr, headers: HeaderMap) -> ApiResult {
    change_device(&hub, id, &addr.0, &headers, DeviceChange::Enable).await
}

async fn approve(State(hub): State<Arc<Hub>>, Path(id): Path<i64>, addr: ClientAddr, headers: HeaderMap) -> ApiResult {
    change_device(&hub, id, &addr.0, &headers, DeviceChange::Approve).await
}

async fn revoke(State(hub): State<Arc<Hub>>, Path(id): Path<i64>, addr: ClientAddr, headers: HeaderMap) -> ApiResult {
    change_device(&hub, id, &addr.0, &headers, DeviceChange::Revoke).await
}

async fn change_device(hub: &Hub, id: i64, addr: &str, headers: &HeaderMap, change: DeviceChange) -> ApiResult {
    let who = caller(hub, headers, addr, Scope::Write, Role::Admin).await?;
    let sn = known(hub, id).await?;
    let now = now_ms();
    let (done, action, detail) = match change {
        DeviceChange::Enable => {
            (hub.store.enable_device(id).await?, "device.enable", "its token revoked; it may activate again")
        }
        DeviceChange::Approve => {
            (hub.store.approve_key(id, now).await?, "device.approve", "its key may have a certificate")
        }
        DeviceChange::Revoke => {
            (hub.store.revoke_device(id, now).await?, "device.revoke", "token, key and certificates refused")
        }
    };
    if !done {
        return Err(match change {
            DeviceChange::Approve => {
                err(StatusCode::CONFLICT, format!("device {id} ({sn}) has no key waiting for approval"))
            }
            _ => err(StatusCode::NOT_FOUND, format!("no device {id}")),
        });
    }
    if change != DeviceChange::Approve {
        hub.forget_tokens(id);
    }
    audit::record(hub, &who.actor, action, &sn, detail, addr).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Every enrolled key: device, state, source, fingerprint, certificate expiry.
async fn keys(State(hub): State<Arc<Hub>>, ClientAddr(addr): ClientAddr, headers: HeaderMap) -> ApiResult {
    let _who = caller(&hub, &headers, &addr, Scope::Read, Role::Viewer).await?;
    let keys: Vec<serde_json::Value> = hub
        .store
        .enrolled_keys()
        .await?
        .into_iter()
        .map(|k| {
            let fingerprint = (!k.spki.is_empty()).then(|| identity::fingerprint(&k.spki));
            let mut v = serde_json::to_value(&k).unwrap_or_default();
            v["fingerprint"] = json!(fingerprint);
            v
        })
        .collect();
    Ok(Json(keys).into_response())
}

/// Pre-authorises gateways in bulk: a CSV body of `vendor,model,serial,public key` lines
/// (what `gwe identity` prints on each gateway). All or nothing: a bad line refuses the
/// whole import, naming the line.
async fn import_keys(
    State(hub): State<Arc<Hub>>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let who = caller(&hub, &headers, &addr, Scope::Write, Role::Admin).await?;
    let text = std::str::from_utf8(&body).map_err(|_| err(StatusCode::BAD_REQUEST, "the import is not UTF-8 text"))?;
    let rows = identity::parse_import(text).map_err(|e| err(StatusCode::BAD_REQUEST, e))?;
    let changed = hub.store.import_keys(&rows, now_ms()).await?;
    let targets = audit::targets(rows.iter().map(|(k, _)| k.sn.as_str()));
    let detail = format!("{} keys pre-authorised, {changed} new or changed", rows.len());
    audit::record(&hub, &who.actor, "device.import", &targets, &detail, &addr).await;
    Ok(Json(json!({ "keys": rows.len(), "changed": changed })).into_response())
}

/// The device's serial number, or 404.
async fn known(hub: &Hub, id: i64) -> Result<String, ApiError> {
    hub.store.device(id).await?.map(|d| d.sn).ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no device {id}")))
}

async fn dataports(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<i64>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> ApiResult {
    let _who = caller(&hub, &headers, &addr, Scope::Read, Role::Viewer).await?;
    known(&hub, id).await?;
    let values: serde_json::Map<String, serde_json::Value> = hub
        .store
        .latest(id)
        .await?
        .into_iter()
        .map(|(a, v)| (a, serde_json::to_value(v).unwrap_or_default()))
        .collect();
    Ok(Json(values).into_response())
}

async fn dataport(
    State(hub): State<Arc<Hub>>,
    Path((id, alias)): Path<(i64, String)>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> ApiResult {
    let _who = caller(&hub, &headers, &addr, Scope::Read, Role::Viewer).await?;
    known(&hub, id).await?;
    let v = hub.store.read(id, std::slice::from_ref(&alias)).await?.pop().flatten();
    let v = v.ok_or_else(|| err(StatusCode::NOT_FOUND, format!("device {id} has no value for {alias}")))?;
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
struct SetValue {
    value: String,
}

async fn set_dataport(
    State(hub): State<Arc<Hub>>,
    Path((id, alias)): Path<(i64, String)>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let who = caller(&hub, &headers, &addr, Scope::Write, Role::Operator).await?;
    let sn = known(&hub, id).await?;
    if alias.is_empty() || alias.len() > 255 {
        return Err(err(StatusCode::BAD_REQUEST, "alias must be 1 to 255 bytes"));
    }
    let v: SetValue = json_body(&body)?;
    let now = now_ms();
    let detail = format!("{alias} = {}", v.value);
    hub.store.write(id, &[(alias, v.value)], now / 1000, now).await?;
    audit::record(&hub, &who.actor, "dataport.write", &sn, &detail, &addr).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<i64>,
}

async fn history(
    State(hub): State<Arc<Hub>>,
    Path((id, alias)): Path<(i64, String)>,
    Query(q): Query<HistoryQuery>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> ApiResult {
    let _who = caller(&hub, &headers, &addr, Scope::Read, Role::Viewer).await?;
    known(&hub, id).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 100_000);
    Ok(Json(hub.store.history(id, &alias, limit).await?).into_response())
}

async fn list_content(
    State(hub): State<Arc<Hub>>,
    Path((vendor, model)): Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> ApiResult {
    let _who = caller(&hub, &headers, &addr, Scope::Read, Role::Viewer).await?;
    Ok(Json(hub.store.list_content((&vendor, &model)).await?).into_response())
}

async fn put_content(
    State(hub): State<Arc<Hub>>,
    Path((vendor, model, id)): Path<(String, String, String)>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let who = caller(&hub, &headers, &addr, Scope::Write, Role::Operator).await?;
    if id.is_empty() || id.len() > 255 || id.contains(['/', ',', '\n']) {
        return Err(err(StatusCode::BAD_REQUEST, "content id must be 1 to 255 bytes without '/', ',' or newlines"));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let meta = headers.get("x-gwe-meta").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let info = ContentInfo {
        id: id.clone(),
        content_type,
        size: i64::try_from(body.len()).unwrap_or(i64::MAX),
        updated: now_ms() / 1000,
        meta,
    };
    hub.store.put_content((&vendor, &model), &info, &body).await?;
    let detail = format!("{} bytes", body.len());
    audit::record(&hub, &who.actor, "content.put", &format!("{vendor}/{model}/{id}"), &detail, &addr).await;
    Ok((StatusCode::CREATED, Json(json!({"id": id, "size": body.len()}))).into_response())
}

/// `?before=ID&limit=N&format=json|csv`: a page of the audit log (this API's and the
/// dashboard's).
#[derive(Deserialize)]
pub struct AuditQuery {
    before: Option<i64>,
    limit: Option<i64>,
    format: Option<String>,
}

/// The audit log, newest first: `?before=ID&limit=N` pages back through it (at most
/// 100,000 entries an answer), `format=csv` exports it. There is no way to write it here.
async fn audit_log(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<AuditQuery>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> ApiResult {
    let _who = caller(&hub, &headers, &addr, Scope::Read, Role::Viewer).await?;
    audit_answer(&hub, &q).await
}

/// The audit log's answer, for this API and the dashboard's.
pub async fn audit_answer(hub: &Hub, q: &AuditQuery) -> ApiResult {
    let entries = hub.store.audit(q.before.unwrap_or(i64::MAX), q.limit.unwrap_or(1000).clamp(1, 100_000)).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(entries).into_response()),
        Some("csv") => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"gwe-audit.csv\""),
            ],
            audit::csv(&entries),
        )
            .into_response()),
        Some(f) => Err(err(StatusCode::BAD_REQUEST, format!("format={f}: json or csv"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ApiToken;

    #[test]
    fn an_operator_token_is_refused_when_revoked_expired_out_of_scope_or_beyond_its_role() {
        let token = |scope, expires_ms, revoked| ApiToken {
            id: 7,
            operator: "olga".into(),
            label: String::new(),
            scope,
            created_ms: 0,
            expires_ms,
            revoked,
        };
        let h = |t, role| ApiTokenHolder { token: t, role, disabled: false };
        let ok = h(token(Scope::Write, 1_000, false), Role::Operator);
        assert_eq!(refusal(&ok, Scope::Write, Role::Operator, 999), None);
        let why = |h: &ApiTokenHolder, scope, role, now| refusal(h, scope, role, now).map(|(s, w)| (s.as_u16(), w));
        assert_eq!(why(&ok, Scope::Read, Role::Viewer, 1_000), Some((401, "token 7 of olga expired".into())));
        let revoked = h(token(Scope::Write, 1_000, true), Role::Admin);
        assert_eq!(why(&revoked, Scope::Read, Role::Viewer, 0), Some((401, "token 7 of olga was revoked".into())));
        let read = h(token(Scope::Read, 1_000, false), Role::Admin);
        assert_eq!(why(&read, Scope::Read, Role::Admin, 0), None);
        assert_eq!(why(&read, Scope::Write, Role::Viewer, 0), Some((403, "token 7 of olga may only read".into())));
        let off = ApiTokenHolder { disabled: true, ..ok.clone() };
        assert_eq!(why(&off, Scope::Read, Role::Viewer, 0), Some((401, "olga is disabled (token 7)".into())));
        assert_eq!(
            why(&ok, Scope::Write, Role::Admin, 0),
            Some((403, "olga is operator: this needs the admin role".into()))
        );
    }
}
