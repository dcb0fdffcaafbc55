//! The fleet as the dashboard reads it: every gateway with its inventory, apps and tags
//! (the cells from `crate::service::fleet`); one gateway's telemetry; tags, saved filters
//! and bulk actions over a selection.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bad, changing, json_body, json_bytes, json_response, signed_in, UiError, UiResult};
use crate::http::ClientAddr;
use crate::service::audit;
use crate::service::fleet::{cells, matches, online, FleetCells, FLEET_COLUMNS, ONLINE_MS};
use crate::store::{Device, DeviceKey, Role, SavedFilter};
use crate::{err, now_ms, Hub};

/// The most gateways one bulk action touches.
const MAX_BULK: usize = 50_000;

pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/ui/api/fleet", get(fleet))
        .route("/ui/api/devices", post(whitelist))
        .route("/ui/api/devices/{id}", get(device))
        .route("/ui/api/devices/{id}/enable", post(enable))
        .route("/ui/api/devices/{id}/command", post(command))
        .route("/ui/api/bulk", post(bulk))
        .route("/ui/api/packages", get(packages))
        .route("/ui/api/filters", get(filters).post(save_filter))
        .route("/ui/api/filters/{name}/delete", post(drop_filter))
}

async fn fleet(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> UiResult {
    signed_in(&hub, &headers).await?;
    let rows = hub.store.fleet().await?;
    let now = now_ms();
    #[derive(serde::Serialize)]
    struct Fleet<'a> {
        now_ms: i64,
        online_ms: i64,
        columns: [&'static str; 19],
        rows: Vec<FleetCells<'a>>,
    }
    let rows = rows.iter().map(|r| cells(r, now)).collect();
    let body = serde_json::to_vec(&Fleet { now_ms: now, online_ms: ONLINE_MS, columns: FLEET_COLUMNS, rows });
    Ok(json_bytes(&headers, body.unwrap_or_default()))
}

/// Telemetry over time is read from these dataports' history.
const SERIES: [&str; 3] = ["device_info", "usage_report", "engine_report"];
const SERIES_POINTS: i64 = 240;

async fn device(State(hub): State<Arc<Hub>>, Path(id): Path<i64>, headers: HeaderMap) -> UiResult {
    signed_in(&hub, &headers).await?;
    let d = hub.store.device(id).await?.ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no device {id}")))?;
    let latest: serde_json::Map<String, Value> = hub
        .store
        .latest(id)
        .await?
        .into_iter()
        .map(|(alias, v)| (alias, json!({"value": v.value, "ts": v.ts, "modified_ms": v.modified_ms})))
        .collect();
    let mut series = serde_json::Map::new();
    for alias in SERIES {
        let h = hub.store.history(id, alias, SERIES_POINTS).await?;
        series.insert(alias.into(), json!(h.iter().rev().map(|p| json!([p.ts, p.value])).collect::<Vec<_>>()));
    }
    let fetch = hub.store.history(id, "fetch_status", 10).await?;
    let control = hub.store.edge_control(&d.sn).await?.unwrap_or_default();
    let content = hub.store.list_content((&d.vendor, &d.model)).await?;
    let tags = hub.store.tags(id).await?;
    let now = now_ms();
    Ok(json_response(
        &headers,
        &json!({
            "now_ms": now, "device": d, "online": online(&d, now), "latest": latest, "series": series,
            "fetch_status": fetch.iter().map(|p| json!([p.ts, p.value])).collect::<Vec<_>>(),
            "control": control, "tags": tags,
            "packages": content.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        }),
    ))
}

/// A vendor, model or serial: 1 to 128 printable characters.
fn check_name(field: &'static str, what: &str, v: &str) -> Result<(), UiError> {
    if v.trim().is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
        return Err(bad(field, format!("the {what} must be 1 to 128 printable characters")));
    }
    Ok(())
}

async fn whitelist(State(hub): State<Arc<Hub>>, addr: ClientAddr, headers: HeaderMap, body: Bytes) -> UiResult {
    let s = changing(&hub, &headers, addr, Role::Admin).await?;
    let key: DeviceKey = json_body(&body)?;
    check_name("vendor", "vendor", &key.vendor)?;
    check_name("model", "model", &key.model)?;
    check_name("sn", "serial", &key.sn)?;
    let d = match hub.store.add_device(&key, now_ms()).await {
        Ok(d) => d,
        Err(crate::store::StoreError::Exists(_)) => {
            return Err(UiError::Taken("sn", format!("{}/{}/{} is whitelisted already", key.vendor, key.model, key.sn)))
        }
        Err(e) => return Err(e.into()),
    };
    s.audit(&hub, "device.add", &key.sn, &format!("{}/{}/{}", key.vendor, key.model, key.sn)).await;
    Ok((StatusCode::CREATED, Json(d)).into_response())
}

async fn enable(State(hub): State<Arc<Hub>>, Path(id): Path<i64>, addr: ClientAddr, headers: HeaderMap) -> UiResult {
    let s = changing(&hub, &headers, addr, Role::Admin).await?;
    let d = hub.store.device(id).await?.ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no device {id}")))?;
    if !hub.store.enable_device(id).await? {
        return Err(err(StatusCode::NOT_FOUND, format!("no device {id}")).into());
    }
    hub.forget_tokens(id);
    s.audit(&hub, "device.enable", &d.sn, "its token revoked; it may activate again").await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What an operator can ask of a gateway from its page.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    /// Install (or roll back to) a package the hub hosts: `engine_fetch`.
    Install { package: String },
    /// Remove an app: `engine_fetch`.
    Remove { app: String },
    /// An edge control command (`/edge/cmd`): a JSON object with a string `id`.
    Edge { command: Value },
}

/// Sends one gateway a command; says what was sent.
async fn send(hub: &Hub, d: &Device, cmd: &Command, now: i64) -> Result<String, UiError> {
    match cmd {
        Command::Install { package } => {
            if package.is_empty() {
                return Err(bad("package", "choose a package"));
            }
            if hub.store.content_info((&d.vendor, &d.model), package).await?.is_none() {
                return Err(bad("package", format!("the hub has no package {package:?} for {}/{}", d.vendor, d.model)));
            }
            let v = json!({"install": [{"name": package}]}).to_string();
            hub.store.write(d.id, &[("engine_fetch".into(), v)], now / 1000, now).await?;
            Ok(format!("install {package}"))
        }
        Command::Remove { app } => {
            if app.is_empty() || app.contains('/') || app.len() > 128 || app.chars().any(char::is_control) {
                return Err(bad("app", format!("app name {app:?}: 1 to 128 characters, no '/'")));
            }
            let v = json!({"remove": [{"name": app}]}).to_string();
            hub.store.write(d.id, &[("engine_fetch".into(), v)], now / 1000, now).await?;
            Ok(format!("remove {app}"))
        }
        Command::Edge { command } => {
            let text = command.to_string();
            if text.len() > gwe_wire::edge::MAX_CONFIG_BYTES + 4096 {
                return Err(bad("command", "the command is over 68 KiB"));
            }
            // The edge's own schema, checked here: what it would refuse is refused now.
            let cid = crate::http::edge::issue_command(hub, &d.sn, text.as_bytes()).await.map_err(|e| {
                if e.0 == StatusCode::BAD_REQUEST {
                    bad("command", e.1)
                } else {
                    e.into()
                }
            })?;
            Ok(format!("edge command {cid}"))
        }
    }
}

async fn command(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<i64>,
    addr: ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> UiResult {
    let s = changing(&hub, &headers, addr, Role::Operator).await?;
    let d = hub.store.device(id).await?.ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no device {id}")))?;
    let cmd: Command = json_body(&body)?;
    let what = send(&hub, &d, &cmd, now_ms()).await?;
    s.audit(&hub, "device.command", &d.sn, &what).await;
    Ok((StatusCode::ACCEPTED, Json(json!({"sent": what}))).into_response())
}

/// A tag: 1 to 32 letters, digits, '.', '_' or '-' (no spaces: the filter splits on them).
pub fn check_tag(t: &str) -> Result<(), UiError> {
    if t.is_empty() || t.len() > 32 || !t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(bad("tags", format!("tag {t:?}: 1 to 32 letters, digits, '.', '_' or '-'")));
    }
    Ok(())
}

/// A bulk action over selected gateways.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum BulkAction {
    Install {
        package: String,
    },
    Remove {
        app: String,
    },
    Tag {
        #[serde(default)]
        add: Vec<String>,
        #[serde(default)]
        remove: Vec<String>,
    },
    Enable,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bulk {
    ids: Vec<i64>,
    action: BulkAction,
}

/// One action on many gateways: `{"done": n, "refused": [{"id", "sn", "reason"}, ...]}`. A
/// gateway that refuses (no such package for its model) does not stop the others.
async fn bulk(State(hub): State<Arc<Hub>>, addr: ClientAddr, headers: HeaderMap, body: Bytes) -> UiResult {
    let s = changing(&hub, &headers, addr, Role::Operator).await?;
    let b: Bulk = json_body(&body)?;
    let ids: BTreeSet<i64> = b.ids.iter().copied().collect();
    if ids.is_empty() {
        return Err(bad("ids", "select at least one gateway"));
    }
    if ids.len() > MAX_BULK {
        return Err(bad("ids", format!("at most {MAX_BULK} gateways at once")));
    }
    let devices: Vec<Device> = hub.store.devices().await?.into_iter().filter(|d| ids.contains(&d.id)).collect();
    if devices.len() != ids.len() {
        return Err(bad("ids", format!("{} of the selected gateways do not exist", ids.len() - devices.len())));
    }
    let now = now_ms();
    let mut refused = Vec::new();
    let what = match b.action {
        BulkAction::Tag { add, remove } => {
            if add.is_empty() && remove.is_empty() {
                return Err(bad("tags", "name a tag to add or remove"));
            }
            for t in add.iter().chain(&remove) {
                check_tag(t)?;
            }
            let ids: Vec<i64> = ids.into_iter().collect();
            hub.store.set_tags(&ids, &add, &remove).await?;
            format!("tags +{add:?} -{remove:?}")
        }
        BulkAction::Enable => {
            s.may(&hub, Role::Admin).await?;
            for d in &devices {
                hub.store.enable_device(d.id).await?;
                hub.forget_tokens(d.id);
            }
            "re-enable".to_string()
        }
        BulkAction::Install { package } => {
            send_each(&hub, &devices, &Command::Install { package }, now, &mut refused).await?
        }
        BulkAction::Remove { app } => send_each(&hub, &devices, &Command::Remove { app }, now, &mut refused).await?,
    };
    let done = devices.len() - refused.len();
    let refused_sns: BTreeSet<&str> = refused.iter().filter_map(|r| r["sn"].as_str()).collect();
    let targets = audit::targets(
        devices.iter().map(|d| d.sn.as_str()).filter(|sn| !refused_sns.contains(sn)).collect::<Vec<_>>().into_iter(),
    );
    s.audit(&hub, "bulk", &targets, &format!("{what} ({done} gateways, {} refused)", refused.len())).await;
    refused.truncate(50);
    Ok(Json(json!({"done": done, "refused": refused})).into_response())
}

/// Sends `cmd` to each gateway by the checks one gateway gets; a gateway that refuses (no
/// such package for its model) goes in `refused` and the others go on. What every
/// gateway refuses alike (an empty or malformed name) is the form's error.
async fn send_each(
    hub: &Hub,
    devices: &[Device],
    cmd: &Command,
    now: i64,
    refused: &mut Vec<Value>,
) -> Result<String, UiError> {
    let mut what = String::new();
    for d in devices {
        match send(hub, d, cmd, now).await {
            Ok(w) => what = w,
            Err(UiError::Field(f, m)) if devices.len() == 1 || f != "package" => return Err(UiError::Field(f, m)),
            Err(UiError::Field(_, m)) => refused.push(json!({"id": d.id, "sn": d.sn, "reason": m})),
            Err(e) => return Err(e),
        }
    }
    if what.is_empty() {
        let why = refused.first().map_or_else(String::new, |r| r["reason"].to_string());
        return Err(bad("package", format!("no selected gateway can take it: {why}")));
    }
    Ok(what)
}

/// Every package and OS bundle the hub hosts, for every vendor and model it has gateways
/// of; `kind` says which (`package` or `os`).
async fn packages(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> UiResult {
    signed_in(&hub, &headers).await?;
    let models: BTreeSet<(String, String)> =
        hub.store.devices().await?.into_iter().map(|d| (d.vendor, d.model)).collect();
    let mut out = Vec::new();
    for (vendor, model) in models {
        for c in hub.store.list_content((&vendor, &model)).await? {
            let kind = if crate::service::rollouts::package_parts(&c.id).is_some() { "package" } else { "os" };
            if let Some((name, version)) = crate::service::rollouts::content_parts(&c.id) {
                out.push(json!({"vendor": vendor, "model": model, "id": c.id, "name": name, "version": version,
                                "kind": kind, "size": c.size, "updated": c.updated}));
            }
        }
    }
    Ok(json_response(&headers, &json!(out)))
}

async fn filters(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> UiResult {
    signed_in(&hub, &headers).await?;
    Ok(json_response(&headers, &json!(hub.store.saved_filters().await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFilter {
    name: String,
    query: String,
}

/// A saved filter's query: at most 200 characters, its tag terms valid tags.
pub fn check_query(field: &'static str, q: &str) -> Result<(), UiError> {
    if q.len() > 200 || q.chars().any(char::is_control) {
        return Err(bad(field, "a filter is at most 200 printable characters"));
    }
    for t in q.split_whitespace().filter_map(|t| t.strip_prefix("tag:")) {
        check_tag(t).map_err(|_| bad(field, format!("tag:{t}: a tag is 1 to 32 letters, digits, '.', '_' or '-'")))?;
    }
    Ok(())
}

async fn save_filter(State(hub): State<Arc<Hub>>, addr: ClientAddr, headers: HeaderMap, body: Bytes) -> UiResult {
    let s = changing(&hub, &headers, addr, Role::Operator).await?;
    let f: NewFilter = json_body(&body)?;
    let name = f.name.trim();
    if name.is_empty() || name.len() > 40 || name.chars().any(char::is_control) || name.contains('/') {
        return Err(bad("name", "a filter's name is 1 to 40 characters, no '/'"));
    }
    if f.query.trim().is_empty() {
        return Err(bad("query", "type a filter first"));
    }
    check_query("query", &f.query)?;
    let saved = SavedFilter {
        name: name.into(),
        query: f.query.trim().into(),
        operator: s.operator.clone(),
        created_ms: now_ms(),
    };
    hub.store.put_saved_filter(&saved).await?;
    s.audit(&hub, "filter.save", &saved.name, &saved.query).await;
    Ok((StatusCode::CREATED, Json(saved)).into_response())
}

async fn drop_filter(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    addr: ClientAddr,
    headers: HeaderMap,
) -> UiResult {
    let s = changing(&hub, &headers, addr, Role::Operator).await?;
    if !hub.store.drop_saved_filter(&name).await? {
        return Err(err(StatusCode::NOT_FOUND, format!("no saved filter {name:?}")).into());
    }
    s.audit(&hub, "filter.delete", &name, "").await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The gateways of `vendor`/`model` that are activated and pass `query`, in id order.
pub async fn group(hub: &Hub, vendor: &str, model: &str, query: &str) -> Result<Vec<Device>, UiError> {
    let now = now_ms();
    Ok(hub
        .store
        .fleet()
        .await?
        .into_iter()
        .filter(|r| {
            r.device.vendor == vendor
                && r.device.model == model
                && r.device.status == crate::store::DeviceStatus::Activated
        })
        .filter(|r| query.trim().is_empty() || matches(cells(r, now).search_text(), query))
        .map(|r| r.device)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_saved_queries_are_checked() {
        assert!(check_tag("eu-west.2_b").is_ok());
        assert!(check_tag("a b").is_err() && check_tag("").is_err() && check_tag("<script>").is_err());
        assert!(check_query("q", "tag:north online").is_ok());
        assert!(check_query("q", "tag:<b>").is_err());
    }
}
