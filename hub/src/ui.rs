//! The fleet dashboard, served by the hub under `/ui`: operators sign in with a name and a
//! password (Argon2id hashes in the store, `gwe-hub operator add`), and get a session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` behind TLS). Every state-changing request must
//! carry the session's CSRF token in `X-CSRF-Token` and, when the browser sends one, an
//! `Origin` of this host. Pages are static HTML and JavaScript (`hub/ui/`) that read the
//! JSON under `/ui/api/`; a device's token is never shown, only its first four characters.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::operator::{json_body, same};
use crate::store::{DeviceKey, Rollout, Session, SESSION_MAX_MS};
use crate::{err, new_token, now_ms, token_hash, ApiError, Hub};

const COOKIE: &str = "gwe_session";
/// A device is online when the hub heard from it this recently.
pub const ONLINE_MS: i64 = 5 * 60 * 1000;
/// Password checks at once: Argon2 is slow on purpose; a flood of sign-ins must not take
/// the CPU the devices need.
static VERIFY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

const LOGIN_HTML: &str = include_str!("../ui/login.html");
const APP_HTML: &str = include_str!("../ui/app.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/fleet") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/fleet", get(page))
        .route("/ui/devices/{id}", get(page))
        .route("/ui/static/{file}", get(asset))
        .route("/ui/api/fleet", get(fleet))
        .route("/ui/api/devices", post(whitelist))
        .route("/ui/api/devices/{id}", get(device))
        .route("/ui/api/devices/{id}/enable", post(enable))
        .route("/ui/api/devices/{id}/command", post(command))
        .route("/ui/rollouts", get(page))
        .route("/ui/rollouts/{id}", get(page))
        .route("/ui/api/rollouts", get(rollouts).post(new_rollout))
        .route("/ui/api/rollouts/{id}", get(rollout))
        .route("/ui/api/rollouts/{id}/{action}", post(rollout_action))
}

type UiResult = Result<Response, ApiError>;

/// An Argon2id PHC string for `password`, with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Checks `password` against a stored hash (a malformed hash never matches).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Rules for a new operator's name and password.
pub fn check_new_operator(name: &str, password: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c)) {
        return Err(format!("operator name {name:?}: 1 to 64 letters, digits, '.', '_', '-' or '@'"));
    }
    if password.chars().count() < 10 {
        return Err("the password must have at least 10 characters".into());
    }
    Ok(())
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == COOKIE && !v.is_empty()).then(|| v.to_string())
    })
}

async fn session_of(hub: &Hub, headers: &HeaderMap) -> Result<Option<Session>, ApiError> {
    match cookie_token(headers) {
        Some(t) => Ok(hub.store.session(&token_hash(&t), now_ms()).await?),
        None => Ok(None),
    }
}

async fn signed_in(hub: &Hub, headers: &HeaderMap) -> Result<Session, ApiError> {
    session_of(hub, headers).await?.ok_or_else(|| err(StatusCode::UNAUTHORIZED, "sign in first (/ui/login)"))
}

/// The browser's `Origin`, when it sent one, must be this host.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let o_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
    if host.is_empty() || o_host != host {
        return Err(err(StatusCode::FORBIDDEN, format!("cross-site request refused (Origin {origin})")));
    }
    Ok(())
}

/// A state-changing request: signed in, same origin, and the session's CSRF token.
async fn changing(hub: &Hub, headers: &HeaderMap) -> Result<Session, ApiError> {
    let s = signed_in(hub, headers).await?;
    same_origin(headers)?;
    let got = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !same(got.as_bytes(), s.csrf.as_bytes()) {
        return Err(err(StatusCode::FORBIDDEN, "missing or wrong X-CSRF-Token"));
    }
    Ok(s)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// HTML with the headers every page gets: no framing, no inline script, no caching.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    r
}

fn login_html(status: StatusCode, message: &str) -> Response {
    html(status, LOGIN_HTML.replace("{{MESSAGE}}", &escape(message)))
}

async fn login_page() -> Response {
    login_html(StatusCode::OK, "")
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

async fn login(State(hub): State<Arc<Hub>>, headers: HeaderMap, Form(form): Form<LoginForm>) -> UiResult {
    same_origin(&headers)?;
    let op = hub.store.operator(&form.name).await?;
    // Unknown names cost a hash check too: the answer's time does not tell them apart.
    let stored = op.as_ref().map(|o| o.password_hash.clone()).unwrap_or_else(|| DUMMY_HASH.to_string());
    let permit = VERIFY.acquire().await.map_err(|_| err(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    let password = form.password;
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &stored)).await.unwrap_or(false);
    drop(permit);
    let Some(op) = op.filter(|_| ok) else {
        log::warn!("dashboard: failed sign-in as {:?}", form.name);
        return Ok(login_html(StatusCode::UNAUTHORIZED, "Wrong name or password."));
    };
    let (token, csrf) = (new_token(), new_token());
    hub.store.add_session(&token_hash(&token), op.id, &csrf, now_ms() + SESSION_MAX_MS).await?;
    log::info!("dashboard: {} signed in", op.name);
    let secure = if hub.edge.tls { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}", SESSION_MAX_MS / 1000);
    let mut r = Redirect::to("/ui/fleet").into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    );
    Ok(r)
}

/// A valid Argon2id hash of a random password nobody knows.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1dI4H0nq6nKpBKl1B8GqiY6QHIkAJt9pFTt8yM6cN1k";

async fn logout(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> UiResult {
    changing(&hub, &headers).await?;
    if let Some(t) = cookie_token(&headers) {
        hub.store.drop_session(&token_hash(&t)).await?;
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("gwe_session=; Path=/ui; Max-Age=0"));
    Ok(r)
}

/// The application's shell (fleet and device pages); the script reads the rest.
async fn page(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> UiResult {
    let Some(s) = session_of(&hub, &headers).await? else {
        return Ok(Redirect::to("/ui/login").into_response());
    };
    Ok(html(
        StatusCode::OK,
        APP_HTML.replace("{{CSRF}}", &escape(&s.csrf)).replace("{{OPERATOR}}", &escape(&s.operator)),
    ))
}

async fn asset(Path(file): Path<String>) -> UiResult {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return Err(err(StatusCode::NOT_FOUND, format!("no asset {file}"))),
    };
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// JSON, deflated with gzip when the browser takes it (the fleet of 10,000 is megabytes).
fn json_response(headers: &HeaderMap, v: &Value) -> Response {
    json_bytes(headers, serde_json::to_vec(v).unwrap_or_default())
}

fn json_bytes(headers: &HeaderMap, body: Vec<u8>) -> Response {
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|e| e.trim().split(';').next() == Some("gzip")));
    let mut r = if gzip && body.len() > 1024 {
        use std::io::Write;
        let mut z = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
        let _ = z.write_all(&body);
        let mut r = z.finish().unwrap_or_default().into_response();
        r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        body.into_response()
    };
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    r
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
/// faults standing. Anything unreadable shows as unknown.
fn report_summary(report: Option<&str>) -> (Option<Cow<'_, str>>, Vec<AppCell<'_>>, Option<u64>, usize) {
    let r: Report = report.and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default();
    let apps = r.apps.into_iter().flatten().map(|(name, a)| (name, a.version, a.status)).collect();
    (r.engine_version, apps, r.queue.and_then(|q| q.backlog), r.faults.len())
}

/// The fleet page's columns, in the order of each row's array.
const FLEET_COLUMNS: [&str; 12] = [
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
);

async fn fleet(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> UiResult {
    signed_in(&hub, &headers).await?;
    let rows = hub.store.fleet().await?;
    let now = now_ms();
    let cells: Vec<FleetCells> = rows
        .iter()
        .map(|r| {
            let d = &r.device;
            let (version, apps, backlog, faults) = report_summary(r.engine_report.as_deref());
            let online = d.last_seen_ms.is_some_and(|t| now - t < ONLINE_MS);
            FleetCells(
                d.id,
                &d.vendor,
                &d.model,
                &d.sn,
                &d.status,
                d.token_hint.as_deref(),
                d.last_seen_ms,
                online,
                version,
                apps,
                backlog,
                faults,
            )
        })
        .collect();
    #[derive(serde::Serialize)]
    struct Fleet<'a> {
        now_ms: i64,
        online_ms: i64,
        columns: [&'static str; 12],
        rows: Vec<FleetCells<'a>>,
    }
    let body = serde_json::to_vec(&Fleet { now_ms: now, online_ms: ONLINE_MS, columns: FLEET_COLUMNS, rows: cells });
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
    let online = d.last_seen_ms.is_some_and(|t| now_ms() - t < ONLINE_MS);
    Ok(json_response(
        &headers,
        &json!({
            "device": d, "online": online, "latest": latest, "series": series,
            "fetch_status": fetch.iter().map(|p| json!([p.ts, p.value])).collect::<Vec<_>>(),
            "control": control,
            "packages": content.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        }),
    ))
}

async fn whitelist(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> UiResult {
    let s = changing(&hub, &headers).await?;
    let key: DeviceKey = json_body(&body)?;
    for (what, v) in [("vendor", &key.vendor), ("model", &key.model), ("serial", &key.sn)] {
        if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
            return Err(err(StatusCode::BAD_REQUEST, format!("{what} must be 1 to 128 printable characters")));
        }
    }
    let d = hub.store.add_device(&key, now_ms()).await?;
    log::info!("dashboard: {} whitelisted {}/{}/{}", s.operator, key.vendor, key.model, key.sn);
    Ok((StatusCode::CREATED, Json(d)).into_response())
}

async fn enable(State(hub): State<Arc<Hub>>, Path(id): Path<i64>, headers: HeaderMap) -> UiResult {
    let s = changing(&hub, &headers).await?;
    if !hub.store.enable_device(id).await? {
        return Err(err(StatusCode::NOT_FOUND, format!("no device {id}")));
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

async fn command(State(hub): State<Arc<Hub>>, Path(id): Path<i64>, headers: HeaderMap, body: Bytes) -> UiResult {
    let s = changing(&hub, &headers).await?;
    let d = hub.store.device(id).await?.ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no device {id}")))?;
    let cmd: Command = json_body(&body)?;
    let now = now_ms();
    let what = match cmd {
        Command::Install { package } => {
            if hub.store.content_info((&d.vendor, &d.model), &package).await?.is_none() {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    format!("the hub has no package {package:?} for {}/{}", d.vendor, d.model),
                ));
            }
            let v = json!({"install": [{"name": package}]}).to_string();
            hub.store.write(id, &[("engine_fetch".into(), v)], now / 1000, now).await?;
            format!("install {package}")
        }
        Command::Remove { app } => {
            if app.is_empty() || app.contains('/') || app.len() > 128 {
                return Err(err(StatusCode::BAD_REQUEST, format!("app name {app:?}")));
            }
            let v = json!({"remove": [{"name": app}]}).to_string();
            hub.store.write(id, &[("engine_fetch".into(), v)], now / 1000, now).await?;
            format!("remove {app}")
        }
        Command::Edge { command } => {
            let cid = crate::edge::command_id(&command)?;
            let text = command.to_string();
            if text.len() > gwe_wire::edge::MAX_CONFIG_BYTES + 4096 {
                return Err(err(StatusCode::PAYLOAD_TOO_LARGE, "command is over 68 KiB"));
            }
            hub.store.issue_command(&d.sn, &text, now).await?;
            format!("edge command {cid}")
        }
    };
    log::info!("dashboard: {} sent {what} to device {id}", s.operator);
    Ok((StatusCode::ACCEPTED, Json(json!({"sent": what}))).into_response())
}

/// A rollout with how many of its gateways are in each state.
fn rollout_json(r: &Rollout, devs: &[crate::store::RolloutDevice]) -> Value {
    let mut counts = BTreeMap::new();
    for d in devs {
        *counts.entry(d.state.as_str()).or_insert(0u64) += 1;
    }
    let mut v = json!(r);
    v["counts"] = json!(counts);
    v["gateways"] = json!(devs.len());
    v
}

async fn rollouts(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> UiResult {
    signed_in(&hub, &headers).await?;
    let mut out = Vec::new();
    for r in hub.store.rollouts().await?.into_iter().rev() {
        if let Some((r, devs)) = hub.store.rollout(r.id).await? {
            out.push(rollout_json(&r, &devs));
        }
    }
    Ok(json_response(&headers, &json!(out)))
}

async fn rollout(State(hub): State<Arc<Hub>>, Path(id): Path<i64>, headers: HeaderMap) -> UiResult {
    signed_in(&hub, &headers).await?;
    let (r, devs) =
        hub.store.rollout(id).await?.ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no rollout {id}")))?;
    let mut v = rollout_json(&r, &devs);
    v["devices"] = json!(devs);
    Ok(json_response(&headers, &v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRollout {
    name: String,
    package: String,
    vendor: String,
    model: String,
    /// Gateways whose serial contains this (empty: all of the model).
    #[serde(default)]
    serial_contains: String,
    stages: Vec<i64>,
    max_failure_pct: i64,
}

async fn new_rollout(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> UiResult {
    let s = changing(&hub, &headers).await?;
    let n: NewRollout = json_body(&body)?;
    let bad = |m: String| err(StatusCode::BAD_REQUEST, m);
    if n.name.trim().is_empty() || n.name.len() > 100 {
        return Err(bad("a rollout's name is 1 to 100 characters".into()));
    }
    crate::rollout::check_stages(&n.stages).map_err(bad)?;
    if !(0..=100).contains(&n.max_failure_pct) {
        return Err(bad("max_failure_pct is 0 to 100".into()));
    }
    if crate::rollout::package_parts(&n.package).is_none() {
        return Err(bad(format!("package {:?} is not NAME.vVERSION.tar.gz", n.package)));
    }
    if hub.store.content_info((&n.vendor, &n.model), &n.package).await?.is_none() {
        return Err(bad(format!("the hub has no package {:?} for {}/{}", n.package, n.vendor, n.model)));
    }
    let mut ids: Vec<i64> = hub
        .store
        .devices()
        .await?
        .into_iter()
        .filter(|d| d.vendor == n.vendor && d.model == n.model && d.status == "activated")
        .filter(|d| d.sn.contains(&n.serial_contains))
        .map(|d| d.id)
        .collect();
    if ids.is_empty() {
        return Err(bad(format!("no activated gateway of {}/{} matches", n.vendor, n.model)));
    }
    crate::rollout::rollout_order(&n.name, &mut ids);
    let stages = crate::rollout::assign_stages(ids.len(), &n.stages);
    let devices: Vec<(i64, i64)> = ids.into_iter().zip(stages).collect();
    let filter = if n.serial_contains.is_empty() {
        format!("{}/{}", n.vendor, n.model)
    } else {
        format!("{}/{}, serial contains {:?}", n.vendor, n.model, n.serial_contains)
    };
    let now = now_ms();
    let r = Rollout {
        id: 0,
        name: n.name.trim().to_string(),
        package: n.package,
        vendor: n.vendor,
        model: n.model,
        filter,
        stages: n.stages,
        max_failure_pct: n.max_failure_pct,
        state: "running".into(),
        stage: 0,
        accepted_stage: -1,
        reason: String::new(),
        created_ms: now,
        updated_ms: now,
    };
    let id = hub.store.create_rollout(&r, &devices).await?;
    log::info!("dashboard: {} started rollout {} ({} to {} gateways)", s.operator, r.name, r.package, devices.len());
    Ok((StatusCode::CREATED, Json(json!({"id": id, "gateways": devices.len()}))).into_response())
}

async fn rollout_action(
    State(hub): State<Arc<Hub>>,
    Path((id, action)): Path<(i64, String)>,
    headers: HeaderMap,
) -> UiResult {
    let s = changing(&hub, &headers).await?;
    let (mut r, _) =
        hub.store.rollout(id).await?.ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no rollout {id}")))?;
    let from: &[&str] = match action.as_str() {
        "pause" => {
            r.state = "paused".into();
            r.reason = format!("paused by {}", s.operator);
            &["running"]
        }
        "resume" => {
            // Resuming accepts the failures of the stage it paused in.
            r.state = "running".into();
            r.accepted_stage = r.stage;
            r.reason.clear();
            &["paused"]
        }
        "abort" => {
            r.state = "aborted".into();
            r.reason = format!("aborted by {}", s.operator);
            &["running", "paused"]
        }
        _ => return Err(err(StatusCode::NOT_FOUND, format!("no rollout action {action:?} (pause, resume, abort)"))),
    };
    if !hub.store.update_rollout(&r, from, r.stage, now_ms()).await? {
        return Err(err(StatusCode::CONFLICT, format!("rollout {id} cannot {action} now")));
    }
    log::info!("dashboard: {} did {action} on rollout {}", s.operator, r.name);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_stored_as_salted_argon2id_and_checked() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$") && a != b, "salted: {a} {b}");
        assert!(!a.contains("correct"));
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("correct horse batterz", &a));
        assert!(!verify_password("x", "not a hash"));
        assert!(!verify_password("", DUMMY_HASH));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn operator_names_and_passwords_have_rules() {
        assert!(check_new_operator("ops.team-1@site", "0123456789").is_ok());
        assert!(check_new_operator("", "0123456789").is_err());
        assert!(check_new_operator("a b", "0123456789").is_err());
        assert!(check_new_operator("ops", "short").unwrap_err().contains("10 characters"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; gwe_session=abc; b=2"));
        assert_eq!(cookie_token(&h).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("gwe_session_x=1; gwe_session="));
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn a_cross_site_origin_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("hub:8080"));
        assert!(same_origin(&h).is_ok(), "no Origin: not a browser's cross-site request");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://hub:8080"));
        assert!(same_origin(&h).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert_eq!(same_origin(&h).unwrap_err().0, StatusCode::FORBIDDEN);
    }

    #[test]
    fn the_fleet_row_reads_what_it_can_of_a_report() {
        let r = r#"{"apps":[{"w1":{"status":"RUNNING","version":"1.2"}},{"x":{"status":"FATAL","version":null}}],
                   "engine_version":"0.1.0","queue":{"backlog":42},"faults":[{"part":"queue"}]}"#;
        let (v, apps, backlog, faults) = report_summary(Some(r));
        assert_eq!(v.as_deref(), Some("0.1.0"));
        assert_eq!(json!(apps), json!([["w1", "1.2", "RUNNING"], ["x", null, "FATAL"]]));
        assert_eq!((backlog, faults), (Some(42), 1));
        let (v, apps, backlog, faults) = report_summary(Some("not json"));
        assert_eq!((v, apps.len(), backlog, faults), (None, 0, None, 0));
        assert_eq!(report_summary(None).0, None);
        // Escaped strings are unescaped (owned), plain ones borrowed.
        let (v, ..) = report_summary(Some(r#"{"engine_version":"0.1\u0041"}"#));
        assert_eq!(v.as_deref(), Some("0.1A"));
    }
}
