//! The fleet as the dashboard reads it: every gateway with its inventory, apps and tags; one
//! gateway's telemetry; tags, saved filters and bulk actions over a selection.
//!
//! The filter language is one rule, used by the fleet page (in the browser, over the search
//! text each row carries) and by rollouts (here): whitespace-separated terms that must all
//! match; `tag:NAME` matches a tag exactly, any other term is a case-insensitive part of the
//! row's search text.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
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
use crate::store::{Device, DeviceKey, FleetRow, SavedFilter};
use crate::{err, now_ms, Hub};

/// A device is online when the hub heard from it this recently.
pub const ONLINE_MS: i64 = 5 * 60 * 1000;
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

/// What the fleet page reads of an `engine_report` (borrowed from its text; the rest of
/// the report is skipped, not built).
#[derive(Deserialize, Default)]
struct Report<'a> {
    #[serde(borrow, default)]
    engine_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    apps: Vec<BTreeMap<Cow<'a, str>, AppReport<'a>>>,
    #[serde(default)]
    queue: Option<QueueReport>,
    #[serde(default)]
    faults: Vec<serde::de::IgnoredAny>,
    #[serde(borrow, default)]
    os: Option<OsReport<'a>>,
}

/// The operating system's slots, from agents with OS updates (`docs/os-updates.md`).
#[derive(Deserialize)]
struct OsReport<'a> {
    #[serde(borrow, default)]
    slot: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    update: Option<OsUpdate<'a>>,
    /// The slot not booted: what it holds and the bootloader's word on it.
    #[serde(borrow, default)]
    other: Option<OtherSlot<'a>>,
}

#[derive(Deserialize)]
struct OtherSlot<'a> {
    #[serde(borrow, default)]
    version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    boot_status: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct OsUpdate<'a> {
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    phase: Cow<'a, str>,
}

/// The OS image column: the version the gateway runs and its slot, and an update under way
/// or one that came back (`2 (slot B)`, `2 (slot B), 3 rebooting`, `2 (slot A), 3 rolled-back`).
fn os_cell(os: Option<OsReport<'_>>) -> Option<OsCell> {
    use std::fmt::Write;
    let os = os?;
    if os.slot.is_none() && os.version.is_none() {
        return None;
    }
    let version = os.version.as_deref().unwrap_or("?");
    // `os:2`, `slot:b` and an update's version and phase (`rolled-back`) are what a filter names.
    let (mut image, mut words) = (version.to_string(), format!("os:{version}"));
    if let Some(slot) = &os.slot {
        let _ = write!(image, " (slot {slot})");
        let _ = write!(words, " slot:{slot}");
    }
    if let Some(u) = os.update.filter(|u| u.phase != "good") {
        let _ = write!(image, ", {} {}", u.version, u.phase);
        let _ = write!(words, " {} {}", u.version, u.phase);
    }
    // What the gateway would fall back to: `fallback:1`, and `fallback:bad` for a gateway
    // whose other slot the bootloader would not take (no way back should this one fail).
    if let Some(o) = os.other {
        if let Some(v) = &o.version {
            let _ = write!(words, " fallback:{v}");
        }
        if let Some(b) = &o.boot_status {
            let _ = write!(words, " fallback:{b}");
        }
    }
    Some(OsCell { image, words })
}

/// The OS image column's text, and the words the fleet filter finds it by.
struct OsCell {
    image: String,
    words: String,
}

#[derive(Deserialize)]
struct AppReport<'a> {
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    version: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct QueueReport {
    backlog: Option<u64>,
}

/// An app on the fleet page: name, version, state.
type AppCell<'a> = (Cow<'a, str>, Option<Cow<'a, str>>, Option<Cow<'a, str>>);

/// What the fleet page shows of an `engine_report`: agent version, apps, queue backlog,
/// faults standing, OS image. Anything unreadable shows as unknown.
struct Summary<'a> {
    version: Option<Cow<'a, str>>,
    apps: Vec<AppCell<'a>>,
    backlog: Option<u64>,
    faults: usize,
    os_image: Option<OsCell>,
}

fn report_summary(report: Option<&str>) -> Summary<'_> {
    let r: Report = report.and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default();
    Summary {
        version: r.engine_version,
        apps: r.apps.into_iter().flatten().map(|(name, a)| (name, a.version, a.status)).collect(),
        backlog: r.queue.and_then(|q| q.backlog),
        faults: r.faults.len(),
        os_image: os_cell(r.os),
    }
}

/// What the inventory columns read of a `device_info`.
#[derive(Deserialize, Default)]
struct Info<'a> {
    #[serde(borrow, default)]
    os: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uname: Option<Uname<'a>>,
    #[serde(borrow, default)]
    ipaddrs: BTreeMap<Cow<'a, str>, Vec<Cow<'a, str>>>,
}

#[derive(Deserialize, Default)]
struct Uname<'a> {
    #[serde(borrow, default)]
    sysname: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    release: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    machine: Option<Cow<'a, str>>,
}

/// The inventory: OS (its name and version, or the kernel's name from older agents),
/// kernel release, architecture, and the addresses of every interface but loopback.
fn info_summary(info: Option<&str>) -> [Option<String>; 4] {
    let i: Info = info.and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default();
    let u = i.uname.unwrap_or_default();
    let addrs: Vec<&str> = i
        .ipaddrs
        .iter()
        .filter(|(iface, _)| iface.as_ref() != "lo")
        .flat_map(|(_, a)| a.iter().map(AsRef::as_ref))
        .filter(|a| !a.starts_with("fe80:"))
        .collect();
    [
        i.os.or(u.sysname).map(Cow::into_owned),
        u.release.map(Cow::into_owned),
        u.machine.map(Cow::into_owned),
        (!addrs.is_empty()).then(|| addrs.join(" ")),
    ]
}

/// The fleet page's columns, in the order of each row's array. `q` is the row's search
/// text (lower case), which the page's filter reads.
const FLEET_COLUMNS: [&str; 19] = [
    "id",
    "vendor",
    "model",
    "sn",
    "status",
    "token_hint",
    "last_seen_ms",
    "online",
    "engine_version",
    "apps",
    "backlog",
    "faults",
    "tags",
    "os",
    "kernel",
    "arch",
    "addresses",
    "os_image",
    "q",
];

#[derive(serde::Serialize)]
struct FleetCells<'a>(
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<i64>,
    bool,
    Option<Cow<'a, str>>,
    Vec<AppCell<'a>>,
    Option<u64>,
    usize,
    &'a [String],
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

fn online(d: &Device, now: i64) -> bool {
    d.last_seen_ms.is_some_and(|t| now - t < ONLINE_MS)
}

fn cells(r: &FleetRow, now: i64) -> FleetCells<'_> {
    let d = &r.device;
    let Summary { version, apps, backlog, faults, os_image } = report_summary(r.engine_report.as_deref());
    let [os, kernel, arch, addresses] = info_summary(r.device_info.as_deref());
    let on = online(d, now);
    let mut q = String::with_capacity(160);
    for part in [&d.sn, &d.model, &d.vendor, &d.status] {
        q.push_str(part);
        q.push(' ');
    }
    q.push_str(if on { "online " } else { "offline " });
    if faults > 0 {
        q.push_str("faults ");
    }
    for part in [version.as_deref(), os.as_deref(), kernel.as_deref(), arch.as_deref(), addresses.as_deref()]
        .into_iter()
        .flatten()
    {
        q.push_str(part);
        q.push(' ');
    }
    if let Some(os) = &os_image {
        q.push_str(&os.words);
        q.push(' ');
    }
    for (name, version, state) in &apps {
        q.push_str(name);
        if let Some(v) = version {
            q.push('@');
            q.push_str(v);
        }
        q.push(' ');
        q.push_str(state.as_deref().unwrap_or("?"));
        q.push(' ');
    }
    for t in &r.tags {
        q.push_str("tag:");
        q.push_str(t);
        q.push(' ');
    }
    let q = q.trim_end().to_lowercase();
    FleetCells(
        d.id,
        &d.vendor,
        &d.model,
        &d.sn,
        &d.status,
        d.token_hint.as_deref(),
        d.last_seen_ms,
        on,
        version,
        apps,
        backlog,
        faults,
        &r.tags,
        os,
        kernel,
        arch,
        addresses,
        os_image.map(|o| o.image),
        q,
    )
}

/// Whether a row's search text (`q` of the fleet API, lower case) passes a filter.
pub fn matches(text: &str, query: &str) -> bool {
    query.split_whitespace().all(|term| {
        let term = term.to_lowercase();
        if term.starts_with("tag:") {
            text.split(' ').any(|w| w == term)
        } else {
            text.contains(&term)
        }
    })
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

async fn whitelist(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> UiResult {
    let s = changing(&hub, &headers).await?;
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
    log::info!("dashboard: {} whitelisted {}/{}/{}", s.operator, key.vendor, key.model, key.sn);
    Ok((StatusCode::CREATED, Json(d)).into_response())
}

async fn enable(State(hub): State<Arc<Hub>>, Path(id): Path<i64>, headers: HeaderMap) -> UiResult {
    let s = changing(&hub, &headers).await?;
    if !hub.store.enable_device(id).await? {
        return Err(err(StatusCode::NOT_FOUND, format!("no device {id}")).into());
    }
    hub.forget_tokens(id);
    log::info!("dashboard: {} re-enabled device {id}", s.operator);
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
            let cid = crate::edge::issue_command(hub, &d.sn, text.as_bytes()).await.map_err(|e| {
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

async fn command(State(hub): State<Arc<Hub>>, Path(id): Path<i64>, headers: HeaderMap, body: Bytes) -> UiResult {
    let s = changing(&hub, &headers).await?;
    let d = hub.store.device(id).await?.ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no device {id}")))?;
    let cmd: Command = json_body(&body)?;
    let what = send(&hub, &d, &cmd, now_ms()).await?;
    log::info!("dashboard: {} sent {what} to device {id}", s.operator);
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
async fn bulk(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> UiResult {
    let s = changing(&hub, &headers).await?;
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
    log::info!("dashboard: {} sent {what} to {done} gateways ({} refused)", s.operator, refused.len());
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
            let kind = if crate::rollout::package_parts(&c.id).is_some() { "package" } else { "os" };
            if let Some((name, version)) = crate::rollout::content_parts(&c.id) {
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

async fn save_filter(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> UiResult {
    let s = changing(&hub, &headers).await?;
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
    log::info!("dashboard: {} saved the filter {:?}: {:?}", s.operator, saved.name, saved.query);
    Ok((StatusCode::CREATED, Json(saved)).into_response())
}

async fn drop_filter(State(hub): State<Arc<Hub>>, Path(name): Path<String>, headers: HeaderMap) -> UiResult {
    let s = changing(&hub, &headers).await?;
    if !hub.store.drop_saved_filter(&name).await? {
        return Err(err(StatusCode::NOT_FOUND, format!("no saved filter {name:?}")).into());
    }
    log::info!("dashboard: {} deleted the filter {name:?}", s.operator);
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
        .filter(|r| r.device.vendor == vendor && r.device.model == model && r.device.status == "activated")
        .filter(|r| query.trim().is_empty() || matches(&cells(r, now).18, query))
        .map(|r| r.device)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inventory_reads_what_it_can_of_device_info() {
        let i = r#"{"os":"Debian GNU/Linux 12 (bookworm)","uname":{"sysname":"Linux","release":"6.1.0-47-arm64",
                    "machine":"aarch64"},"ipaddrs":{"lo":["127.0.0.1","::1"],"eth0":["10.0.2.15","fe80::1"]}}"#;
        let [os, kernel, arch, addrs] = info_summary(Some(i));
        assert_eq!(os.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!((kernel.as_deref(), arch.as_deref()), (Some("6.1.0-47-arm64"), Some("aarch64")));
        assert_eq!(addrs.as_deref(), Some("10.0.2.15"), "no loopback, no link-local");
        // An older agent: no os field, the kernel's name stands in.
        let [os, ..] = info_summary(Some(r#"{"uname":{"sysname":"Linux"}}"#));
        assert_eq!(os.as_deref(), Some("Linux"));
        assert_eq!(info_summary(Some("[broken")), [None, None, None, None]);
    }

    #[test]
    fn the_filter_matches_parts_and_whole_tags() {
        let text = "sn001 gw1 acme activated online 0.3.0 sensor@2.1 running tag:north tag:eu-west";
        assert!(matches(text, "SN001 online"));
        assert!(matches(text, "tag:north"));
        assert!(matches(text, "TAG:EU-WEST sensor@2"));
        assert!(!matches(text, "tag:eu"), "a tag matches whole");
        assert!(!matches(text, "offline"));
        assert!(matches(text, "  "));
        assert!(check_tag("eu-west.2_b").is_ok());
        assert!(check_tag("a b").is_err() && check_tag("").is_err() && check_tag("<script>").is_err());
        assert!(check_query("q", "tag:north online").is_ok());
        assert!(check_query("q", "tag:<b>").is_err());
    }

    #[test]
    fn the_fleet_row_reads_what_it_can_of_a_report() {
        let r = r#"{"apps":[{"w1":{"status":"RUNNING","version":"1.2"}},{"x":{"status":"FATAL","version":null}}],
                   "engine_version":"0.1.0","queue":{"backlog":42},"faults":[{"part":"queue"}]}"#;
        let s = report_summary(Some(r));
        assert_eq!(s.version.as_deref(), Some("0.1.0"));
        assert_eq!(json!(s.apps), json!([["w1", "1.2", "RUNNING"], ["x", null, "FATAL"]]));
        assert_eq!((s.backlog, s.faults, s.os_image.is_none()), (Some(42), 1, true));
        let s = report_summary(Some("not json"));
        assert_eq!((s.version, s.apps.len(), s.backlog, s.faults), (None, 0, None, 0));
        assert_eq!(report_summary(None).version, None);
        // Escaped strings are unescaped (owned), plain ones borrowed.
        let v = report_summary(Some(r#"{"engine_version":"0.1\u0041"}"#)).version;
        assert_eq!(v.as_deref(), Some("0.1A"));
    }

    #[test]
    fn the_os_image_column_says_version_slot_and_an_update_not_yet_good() {
        let os = |j: &str| report_summary(Some(format!(r#"{{"os":{j}}}"#).leak())).os_image.map(|o| o.image);
        assert_eq!(os(r#"{"slot":"B","image":"gwe","version":"2","update":null}"#).as_deref(), Some("2 (slot B)"));
        assert_eq!(
            os(r#"{"slot":"B","version":"2","update":{"version":"2","phase":"good","from":"A","to":"B"}}"#).as_deref(),
            Some("2 (slot B)")
        );
        assert_eq!(
            os(r#"{"slot":"A","version":"1","update":{"version":"2","phase":"rebooting"}}"#).as_deref(),
            Some("1 (slot A), 2 rebooting")
        );
        assert_eq!(
            os(r#"{"slot":"B","version":"2","update":{"version":"3","phase":"rolled-back"}}"#).as_deref(),
            Some("2 (slot B), 3 rolled-back")
        );
        assert_eq!(os(r#"{"slot":null,"version":null,"update":null}"#), None, "a system without slots");
        let words = report_summary(Some(
            r#"{"os":{"slot":"B","version":"2","other":{"slot":"A","version":"1","boot_status":"bad"}}}"#,
        ))
        .os_image
        .map(|o| o.words);
        assert_eq!(words.as_deref(), Some("os:2 slot:B fallback:1 fallback:bad"));
        assert_eq!(os("7"), None, "unreadable");
    }
}
