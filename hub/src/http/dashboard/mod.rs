//! The fleet dashboard, served by the hub under `/ui`: operators sign in with a name and a
//! password (Argon2id hashes in the store, `gwe-hub operator add`), and get a session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` behind TLS). Every state-changing request must
//! carry the session's CSRF token in `X-CSRF-Token` and, when the browser sends one, an
//! `Origin` of this host. Pages are static HTML and JavaScript (`hub/ui/`) that read the
//! JSON under `/ui/api/`; a device's token is never shown, only its first four characters.
//!
//! `mod.rs` holds sign-in (throttled: `service::auth::lockout`), sessions, the pages and the
//! audit log's view; `fleet.rs` the fleet, a gateway, tags,
//! saved filters and bulk actions; `rollouts.rs` the staged rollouts.

mod fleet;
mod rollouts;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::ClientAddr;
use crate::service::audit;
use crate::service::auth::{allows, lockout, same, verify_password, DUMMY_HASH, SIGNIN_WINDOW_MS};
use crate::store::{Role, Session, StoreError, SESSION_MAX_MS};
use crate::{err, new_token, now_ms, token_hash, ApiError, Hub};

pub use crate::service::fleet::{matches, ONLINE_MS};

const COOKIE: &str = "gwe_session";
/// Password checks at once: Argon2 is slow on purpose; a flood of sign-ins must not take
/// the CPU the devices need.
static VERIFY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

const LOGIN_HTML: &str = include_str!("../../../ui/login.html");
const APP_HTML: &str = include_str!("../../../ui/app.html");
const APP_JS: &str = include_str!("../../../ui/app.js");
const APP_CSS: &str = include_str!("../../../ui/app.css");
const FAVICON: &str = include_str!("../../../ui/favicon.svg");

pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/fleet") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/fleet") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/fleet", get(page))
        .route("/ui/devices/{id}", get(page))
        .route("/ui/static/{file}", get(asset))
        .route("/ui/rollouts", get(page))
        .route("/ui/rollouts/{id}", get(page))
        .route("/ui/audit", get(page))
        .route("/ui/api/audit", get(audit_log))
        .merge(fleet::routes())
        .merge(rollouts::routes())
}

/// A dashboard API error: a status and a message, or a form field's problem, which the page
/// shows beside that field (`{"error", "field"}`, 400).
#[derive(Debug)]
pub enum UiError {
    Api(ApiError),
    Field(&'static str, String),
    /// The field names something that exists already (409).
    Taken(&'static str, String),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<StoreError> for UiError {
    fn from(e: StoreError) -> Self {
        Self::Api(e.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => e.into_response(),
            Self::Field(field, error) => {
                (StatusCode::BAD_REQUEST, Json(json!({"error": error, "field": field}))).into_response()
            }
            Self::Taken(field, error) => {
                (StatusCode::CONFLICT, Json(json!({"error": error, "field": field}))).into_response()
            }
        }
    }
}

/// `field`'s value is refused: `msg` says why.
fn bad(field: &'static str, msg: impl Into<String>) -> UiError {
    UiError::Field(field, msg.into())
}

type UiResult = Result<Response, UiError>;

/// A JSON body, or an error naming what is wrong with it.
fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, UiError> {
    crate::http::json_body(body).map_err(UiError::Api)
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

/// The operator making a change, and from where: what the audit log records.
pub struct Changer {
    pub operator: String,
    pub role: Role,
    addr: String,
}

/// A state-changing request: signed in, same origin, the session's CSRF token, and a role
/// that allows `need` (a refusal is logged and recorded in the audit log as `denied`).
async fn changing(hub: &Hub, headers: &HeaderMap, addr: ClientAddr, need: Role) -> Result<Changer, ApiError> {
    let s = signed_in(hub, headers).await?;
    same_origin(headers)?;
    let got = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !same(got.as_bytes(), s.csrf.as_bytes()) {
        return Err(err(StatusCode::FORBIDDEN, "missing or wrong X-CSRF-Token"));
    }
    let c = Changer { operator: s.operator, role: s.role, addr: addr.0 };
    c.may(hub, need).await?;
    Ok(c)
}

impl Changer {
    /// Records the change in the audit log (`service::audit`).
    async fn audit(&self, hub: &Hub, action: &str, targets: &str, detail: &str) {
        audit::record(hub, &format!("operator:{}", self.operator), action, targets, detail, &self.addr).await;
    }

    /// Refuses (403, recorded as `denied`) what the operator's role does not allow.
    async fn may(&self, hub: &Hub, need: Role) -> Result<(), ApiError> {
        if allows(self.role, need) {
            return Ok(());
        }
        let why = format!("{} is {}: this needs the {need} role", self.operator, self.role);
        log::warn!("dashboard: refused: {why}");
        self.audit(hub, "denied", "", &why).await;
        Err(err(StatusCode::FORBIDDEN, why))
    }
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

/// The sign-in page; after a failed try the name stays filled in and the password gets the
/// focus.
fn login_html(status: StatusCode, message: &str, name: &str) -> Response {
    let (name_focus, password_focus) = if name.is_empty() { (" autofocus", "") } else { ("", " autofocus") };
    html(
        status,
        LOGIN_HTML
            .replace("{{MESSAGE}}", &escape(message))
            .replace("{{NAME}}", &escape(name))
            .replace("{{NAME_FOCUS}}", name_focus)
            .replace("{{PASSWORD_FOCUS}}", password_focus),
    )
}

async fn login_page() -> Response {
    login_html(StatusCode::OK, "", "")
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

/// Signs an operator in. Failed sign-ins are counted in the audit log: after too many for
/// one account or from one address (`service::auth::lockout`) the form says so and no
/// password is checked until the window has passed.
async fn login(
    State(hub): State<Arc<Hub>>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> UiResult {
    same_origin(&headers)?;
    let actor = format!("operator:{}", form.name);
    let (as_account, from_addr) = hub.store.failed_signins(&actor, &addr, now_ms() - SIGNIN_WINDOW_MS).await?;
    if let Some(why) = lockout(as_account, from_addr) {
        log::warn!("dashboard: sign-in as {:?} from {addr} refused: {why}", form.name);
        audit::record(&hub, &actor, "signin.locked", "", &why, &addr).await;
        return Ok(login_html(StatusCode::TOO_MANY_REQUESTS, &why, &form.name));
    }
    let op = hub.store.operator(&form.name).await?;
    // Unknown names cost a hash check too: the answer's time does not tell them apart.
    let stored = op.as_ref().map(|o| o.password_hash.clone()).unwrap_or_else(|| DUMMY_HASH.to_string());
    let permit = VERIFY.acquire().await.map_err(|_| err(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    let password = form.password;
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &stored)).await.unwrap_or(false);
    drop(permit);
    let Some(op) = op.filter(|_| ok) else {
        audit::record(&hub, &actor, "signin.failed", "", "wrong name or password", &addr).await;
        return Ok(login_html(StatusCode::UNAUTHORIZED, "Wrong name or password.", &form.name));
    };
    if op.disabled {
        audit::record(&hub, &actor, "signin.disabled", "", "the operator is disabled", &addr).await;
        return Ok(login_html(StatusCode::FORBIDDEN, "This account is disabled.", &form.name));
    }
    let (token, csrf) = (new_token(), new_token());
    hub.store.add_session(&token_hash(&token), op.id, &csrf, now_ms() + SESSION_MAX_MS).await?;
    audit::record(&hub, &actor, "signin", "", "", &addr).await;
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

async fn logout(State(hub): State<Arc<Hub>>, addr: ClientAddr, headers: HeaderMap) -> UiResult {
    let c = changing(&hub, &headers, addr, Role::Viewer).await?;
    if let Some(t) = cookie_token(&headers) {
        hub.store.drop_session(&token_hash(&t)).await?;
    }
    c.audit(&hub, "signout", "", "").await;
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
        APP_HTML
            .replace("{{CSRF}}", &escape(&s.csrf))
            .replace("{{OPERATOR}}", &escape(&s.operator))
            .replace("{{ROLE}}", s.role.as_str()),
    ))
}

/// The audit log for any signed-in operator (the same answer as `/api/v1/audit`); read only.
async fn audit_log(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<crate::http::operator::AuditQuery>,
) -> UiResult {
    signed_in(&hub, &headers).await?;
    Ok(crate::http::operator::audit_answer(&hub, &q).await?)
}

async fn asset(Path(file): Path<String>) -> UiResult {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "favicon.svg" => (FAVICON, "image/svg+xml"),
        _ => return Err(err(StatusCode::NOT_FOUND, format!("no asset {file}")).into()),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
