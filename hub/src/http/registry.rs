//! Service discovery as the Arrowhead 4.x core systems do it: the service registry
//! (`/serviceregistry/register`, `query`, `unregister`) and the orchestrator
//! (`/orchestrator/orchestration`), with the core systems' DTOs (`gwe_wire::arrowhead`) and
//! their JSON errors, so Arrowhead's own clients work against the hub unmodified
//! (`tests/arrowhead_client.rs`).
//!
//! - A provider is its system name, address and port together (as Arrowhead's registry
//!   keys it): two providers of one name do not shadow each other.
//! - Entries carry stable ids (derived from the names, so every hub of a deployment gives
//!   the same ones), `createdAt`/`updatedAt`, and the provider's `authenticationInfo`.
//! - A provider whose `endOfValidity` has passed is left out of queries and
//!   orchestrations; with `pingProviders`, so is one that does not accept a TCP connection
//!   within a second.
//! - Who may register and orchestrate: with `--arrowhead-insecure`, anyone (Arrowhead's
//!   insecure mode: a system is who it says it is); with `--arrowhead-ca` (its certificate
//!   mode), a system whose client certificate names it, for itself; otherwise registering
//!   needs the operator token and orchestrating a device token (or device certificate)
//!   whose serial is the requester's name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use gwe_wire::arrowhead::{
    ErrorMessage, Interface, OrchestrationRequest, OrchestrationResponse, OrchestrationResult, QueryResponse,
    RegisterRequest, RegistryEntry, ServiceDefinition, ServiceQuery, System,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::http::json_body;
use crate::http::operator::check_operator;
use crate::server::{Peer, PeerKind};
use crate::store::ServiceRow;
use crate::{err, now_ms, ApiError, Hub};

pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/serviceregistry/register", post(register))
        .route("/serviceregistry/query", post(query))
        .route("/serviceregistry/unregister", delete(unregister))
        .route("/orchestrator/orchestration", post(orchestration))
        .route("/authorization/publickey", get(public_key))
        .layer(axum::middleware::from_fn(arrowhead_errors))
}

type ApiResult = Result<Response, ApiError>;

/// Errors as Arrowhead's core systems give them: `ErrorMessageDTO` JSON.
async fn arrowhead_errors(rq: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let origin = rq.uri().path().to_string();
    let r = next.run(rq).await;
    let status = r.status();
    if !status.is_client_error() && !status.is_server_error() {
        return r;
    }
    let body = axum::body::to_bytes(r.into_body(), 64 << 10).await.unwrap_or_default();
    let exception_type = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "AUTH",
        StatusCode::NOT_FOUND => "DATA_NOT_FOUND",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        s if s.is_client_error() => "INVALID_PARAMETER",
        _ => "ARROWHEAD",
    };
    let e = ErrorMessage {
        error_message: String::from_utf8_lossy(&body).trim().to_string(),
        error_code: status.as_u16(),
        exception_type: exception_type.into(),
        origin,
    };
    (status, Json(e)).into_response()
}

/// A stable id for a name: the same on every hub, positive, fits Arrowhead's `long`.
fn id_of(kind: &str, name: &str) -> i64 {
    let d = Sha256::digest(format!("{kind}\0{name}").as_bytes());
    i64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]]) & 0x7fff_ffff)
}

/// Arrowhead's date format (`yyyy-MM-dd HH:mm:ss`, UTC).
fn date(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0).unsigned_abs());
    let s = httpdate::fmt_http_date(t); // "Sun, 06 Dec 2026 01:12:54 GMT"
    let p: Vec<&str> = s.split(' ').collect();
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| *m == p[2])
        .unwrap_or(0)
        + 1;
    format!("{}-{month:02}-{} {}", p[3], p[1], p[4])
}

/// `endOfValidity` as unix ms: Arrowhead's `yyyy-MM-dd HH:mm:ss` (UTC) or RFC 3339.
pub fn parse_date(v: &str) -> Option<i64> {
    let v = v.trim();
    let (d, t) = v.split_once([' ', 'T'])?;
    let mut dp = d.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (dp.next()??, dp.next()??, dp.next()??);
    let t = t.trim_end_matches('Z');
    let t = t.split(['+']).next()?;
    let mut tp = t.split(':');
    let (h, mi) = (tp.next()?.parse::<i64>().ok()?, tp.next()?.parse::<i64>().ok()?);
    #[allow(clippy::cast_possible_truncation, reason = "whole seconds of a time of day; `as` saturates")]
    let se = tp.next().map_or(Some(0.0), |x| x.parse::<f64>().ok())? as i64;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400) + h * 3600 + mi * 60 + se) * 1000)
}

fn entry(s: &ServiceRow) -> RegistryEntry {
    let (created, updated) = (Some(date(s.created_ms)), Some(date(s.updated_ms)));
    RegistryEntry {
        id: s.id,
        service_definition: ServiceDefinition {
            id: id_of("service", &s.definition),
            service_definition: s.definition.clone(),
            created_at: created.clone(),
            updated_at: updated.clone(),
        },
        provider: System {
            id: Some(id_of("system", &format!("{}\0{}\0{}", s.system_name, s.address, s.port))),
            system_name: s.system_name.clone(),
            address: s.address.clone(),
            port: u16::try_from(s.port).unwrap_or(0),
            // Arrowhead's own client requires the field; empty when the provider gave none.
            authentication_info: Some(s.authentication_info.clone().unwrap_or_default()),
            created_at: created.clone(),
            updated_at: updated.clone(),
        },
        service_uri: s.service_uri.clone(),
        end_of_validity: s.end_of_validity.clone(),
        secure: s.secure.clone(),
        metadata: s.metadata.clone(),
        version: s.version,
        interfaces: s
            .interfaces
            .iter()
            .map(|n| Interface {
                id: id_of("interface", n),
                interface_name: n.clone(),
                created_at: created.clone(),
                updated_at: updated.clone(),
            })
            .collect(),
        created_at: created,
        updated_at: updated,
    }
}

pub fn checked_name(what: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > 255 || v.chars().any(|c| c.is_control()) {
        return Err(err(StatusCode::BAD_REQUEST, format!("{what} must be 1 to 255 printable characters")));
    }
    Ok(())
}

/// Arrowhead's interface names: `PROTOCOL-SECURE-FORMAT` or `PROTOCOL-INSECURE-FORMAT`.
fn interface_ok(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    let word = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    parts.len() == 3 && word(parts[0]) && (parts[1] == "SECURE" || parts[1] == "INSECURE") && word(parts[2])
}

/// Adds this hub's own services to the registry it keeps.
pub async fn register_own(hub: &Hub) -> Result<(), String> {
    let now = now_ms();
    for r in hub.edge.services() {
        hub.store.register_service(&row_of(&r, now)).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub fn row_of(r: &RegisterRequest, now: i64) -> ServiceRow {
    ServiceRow {
        id: 0,
        definition: r.service_definition.to_lowercase(),
        system_name: r.provider_system.system_name.clone(),
        address: r.provider_system.address.clone(),
        port: i64::from(r.provider_system.port),
        service_uri: r.service_uri.clone(),
        secure: r.secure.clone(),
        interfaces: r.interfaces.iter().map(|i| i.to_uppercase()).collect(),
        version: r.version,
        metadata: r.metadata.clone(),
        end_of_validity: r.end_of_validity.clone(),
        authentication_info: r.provider_system.authentication_info.clone().filter(|a| !a.is_empty()),
        created_ms: now,
        updated_ms: now,
    }
}

/// The Arrowhead system a request's client certificate names, in certificate mode.
pub fn cert_system(hub: &Hub, peer: Option<&Peer>) -> Option<String> {
    peer.filter(|p| hub.edge.certificates && p.kind == PeerKind::Arrowhead).map(|p| p.system().to_string())
}

/// Who may change `system`'s entries: anyone in insecure mode, the operator, and in
/// certificate mode the system itself.
fn may_register(hub: &Hub, headers: &HeaderMap, peer: Option<&Peer>, system: &str) -> Result<(), ApiError> {
    if hub.edge.open_registry || check_operator(hub, headers).is_ok() {
        return Ok(());
    }
    match cert_system(hub, peer) {
        Some(s) if s.eq_ignore_ascii_case(system) => Ok(()),
        Some(s) => Err(err(
            StatusCode::UNAUTHORIZED,
            format!("the client certificate is system {s:?}'s: it cannot change the entries of {system:?}"),
        )),
        None => check_operator(hub, headers),
    }
}

/// The authorization system's public key (Arrowhead's `authorization/publickey`): this
/// hub's, as a JSON string of the base64 DER key, which is what secure Arrowhead providers
/// fetch before they start.
async fn public_key(State(hub): State<Arc<Hub>>) -> ApiResult {
    match &hub.edge.public_key {
        Some(k) => Ok(([(header::CONTENT_TYPE, "text/plain")], format!("\"{k}\"")).into_response()),
        None => Err(err(StatusCode::NOT_FOUND, "this hub serves no TLS certificate, so it has no public key")),
    }
}

async fn register(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    body: Bytes,
) -> ApiResult {
    let r: RegisterRequest = json_body(&body)?;
    may_register(&hub, &headers, peer.as_deref(), &r.provider_system.system_name)?;
    checked_name("serviceDefinition", &r.service_definition)?;
    checked_name("providerSystem.systemName", &r.provider_system.system_name)?;
    checked_name("providerSystem.address", &r.provider_system.address)?;
    if r.provider_system.port == 0 {
        return Err(err(StatusCode::BAD_REQUEST, "providerSystem.port must be 1 to 65535"));
    }
    if r.service_uri.len() > 255 || r.service_uri.chars().any(char::is_control) {
        return Err(err(StatusCode::BAD_REQUEST, "serviceUri must be at most 255 printable characters"));
    }
    if r.interfaces.is_empty() {
        return Err(err(StatusCode::BAD_REQUEST, "interfaces must name at least one interface"));
    }
    if let Some(bad) = r.interfaces.iter().find(|i| !interface_ok(&i.to_uppercase())) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("interface {bad:?} is not PROTOCOL-SECURE-FORMAT or PROTOCOL-INSECURE-FORMAT"),
        ));
    }
    if !["NOT_SECURE", "CERTIFICATE", "TOKEN"].contains(&r.secure.as_str()) {
        return Err(err(StatusCode::BAD_REQUEST, "secure must be NOT_SECURE, CERTIFICATE or TOKEN"));
    }
    let now = now_ms();
    if let Some(eov) = &r.end_of_validity {
        match parse_date(eov) {
            None => {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    format!("endOfValidity {eov:?} is not a date (yyyy-MM-dd HH:mm:ss, UTC)"),
                ))
            }
            Some(t) if t <= now => {
                return Err(err(StatusCode::BAD_REQUEST, format!("endOfValidity {eov:?} is in the past")))
            }
            Some(_) => {}
        }
    }
    let mut row = row_of(&r, now);
    row.id = hub.store.register_service(&row).await?;
    // The stored entry: a provider registered again keeps its first registration time.
    let stored = hub.store.services(&row.definition).await?.into_iter().find(|s| s.id == row.id).unwrap_or(row);
    Ok((StatusCode::CREATED, Json(entry(&stored))).into_response())
}

/// Is something listening at the provider's address and port?
async fn alive(s: &ServiceRow) -> bool {
    let addr = format!("{}:{}", s.address, s.port);
    matches!(tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await, Ok(Ok(_)))
}

/// The registered providers matching a query (and flags), in registration order, and how
/// many entries the service definition has in all.
async fn matching(
    hub: &Hub,
    q: &ServiceQuery,
    metadata_search: bool,
    ping: bool,
) -> Result<(Vec<ServiceRow>, usize), ApiError> {
    checked_name("serviceDefinitionRequirement", &q.service_definition_requirement)?;
    let all = hub.store.services(&q.service_definition_requirement.to_lowercase()).await?;
    let hits = all.len();
    let now = now_ms();
    let interfaces: Vec<String> = q.interface_requirements.iter().map(|i| i.to_uppercase()).collect();
    let mut found: Vec<ServiceRow> = all
        .into_iter()
        .filter(|s| interfaces.is_empty() || interfaces.iter().any(|i| s.interfaces.contains(i)))
        .filter(|s| q.security_requirements.is_empty() || q.security_requirements.contains(&s.secure))
        .filter(|s| q.version_requirement.is_none_or(|v| v == s.version))
        .filter(|s| q.min_version_requirement.is_none_or(|v| s.version >= v))
        .filter(|s| q.max_version_requirement.is_none_or(|v| s.version <= v))
        .filter(|s| !metadata_search || q.metadata_requirements.iter().all(|(k, v)| s.metadata.get(k) == Some(v)))
        .filter(|s| s.end_of_validity.as_deref().and_then(parse_date).is_none_or(|t| t > now))
        .collect();
    if ping {
        let checks = futures_alive(hub, &found).await;
        let mut it = checks.into_iter();
        found.retain(|_| it.next().unwrap_or(false));
    }
    Ok((found, hits))
}

/// Pings every provider at once. This hub's own services are alive (it is answering), and
/// are not pinged: the address it advertises is the edges' view of it, which it may not
/// reach itself (behind NAT, or QEMU's 10.0.2.2).
async fn futures_alive(hub: &Hub, rows: &[ServiceRow]) -> Vec<bool> {
    let mut set = tokio::task::JoinSet::new();
    let mut out = vec![false; rows.len()];
    for (i, s) in rows.iter().enumerate() {
        let own = s.system_name == hub.edge.system_name
            && s.address == hub.edge.address
            && s.port == i64::from(hub.edge.port);
        if own {
            out[i] = true;
            continue;
        }
        let s = s.clone();
        set.spawn(async move { (i, alive(&s).await) });
    }
    while let Some(Ok((i, ok))) = set.join_next().await {
        out[i] = ok;
    }
    out
}

async fn query(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    body: Bytes,
) -> ApiResult {
    let peer = peer.as_deref();
    if !hub.edge.open_registry && cert_system(&hub, peer).is_none() && check_operator(&hub, &headers).is_err() {
        hub.device_of(&headers, peer).await?;
    }
    let q: ServiceQuery = json_body(&body)?;
    let (found, hits) = matching(&hub, &q, true, q.ping_providers).await?;
    Ok(Json(QueryResponse { service_query_data: found.iter().map(entry).collect(), unfiltered_hits: hits })
        .into_response())
}

#[derive(Deserialize)]
struct Unregister {
    service_definition: String,
    system_name: String,
    address: String,
    port: i64,
}

async fn unregister(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    Query(u): Query<Unregister>,
) -> ApiResult {
    may_register(&hub, &headers, peer.as_deref(), &u.system_name)?;
    let def = u.service_definition.to_lowercase();
    if hub.store.unregister_service(&def, &u.system_name, &u.address, u.port).await? {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(err(StatusCode::NOT_FOUND, format!("no {def} service of {} at {}:{}", u.system_name, u.address, u.port)))
    }
}

/// The requester's name, as the hub can vouch for it: the system its client certificate
/// names (certificate mode); in insecure mode the name it gives; otherwise a device whose
/// serial number it must be.
async fn requester(
    hub: &Hub,
    headers: &HeaderMap,
    peer: Option<&Peer>,
    rq: &OrchestrationRequest,
) -> Result<String, ApiError> {
    let name = rq.requester_system.system_name.clone();
    checked_name("requesterSystem.systemName", &name)?;
    if let Some(s) = cert_system(hub, peer) {
        if !s.eq_ignore_ascii_case(&name) {
            return Err(err(
                StatusCode::UNAUTHORIZED,
                format!("requesterSystem.systemName {name:?} is not the client certificate's system {s:?}"),
            ));
        }
        return Ok(name);
    }
    if hub.edge.open_registry && !headers.contains_key("x-exosite-cik") {
        return Ok(name);
    }
    let dev = hub.device_of(headers, peer).await?;
    let sn = hub.store.device(dev).await?.map(|d| d.sn).unwrap_or_default();
    if name != sn {
        return Err(err(
            StatusCode::FORBIDDEN,
            format!("requesterSystem.systemName {name:?} is not this device's serial number"),
        ));
    }
    Ok(sn)
}

async fn orchestration(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    body: Bytes,
) -> ApiResult {
    let rq: OrchestrationRequest = json_body(&body)?;
    let name = requester(&hub, &headers, peer.as_deref(), &rq).await?;
    let flags = &rq.orchestration_flags;
    let ping = flags.ping_providers || rq.requested_service.ping_providers;
    let (mut found, _) = matching(&hub, &rq.requested_service, flags.metadata_search, ping).await?;
    let preferred = |s: &ServiceRow| {
        rq.preferred_providers.iter().map(|p| p.system()).any(|p| {
            p.system_name == s.system_name
                && (p.address.is_empty() || p.address == s.address)
                && (p.port == 0 || i64::from(p.port) == s.port)
        })
    };
    if flags.only_preferred {
        found.retain(preferred);
    } else {
        // Preferred providers first, the rest after.
        found.sort_by_key(|s| !preferred(s));
    }
    if flags.matchmaking {
        found.truncate(1);
    }
    let now = now_ms();
    let response = found
        .iter()
        .map(|s| {
            let e = entry(s);
            let tokens = if s.secure == "TOKEN" {
                s.interfaces.iter().map(|i| (i.clone(), hub.edge.token(&name, &s.definition, now))).collect()
            } else {
                BTreeMap::new()
            };
            let mut warnings = Vec::new();
            if s.end_of_validity.as_deref().and_then(parse_date).is_some_and(|t| t - now < 60_000) {
                warnings.push("TTL_EXPIRING".to_string());
            }
            OrchestrationResult {
                provider: e.provider,
                service: e.service_definition,
                service_uri: e.service_uri,
                secure: e.secure,
                metadata: e.metadata,
                interfaces: e.interfaces,
                version: e.version,
                authorization_tokens: tokens,
                warnings,
            }
        })
        .collect::<Vec<_>>();
    let mut r = Json(OrchestrationResponse { response }).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_arrowheads_format_and_back() {
        assert_eq!(date(0), "1970-01-01 00:00:00");
        assert_eq!(date(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(parse_date("2023-11-14 22:13:20"), Some(1_700_000_000_000));
        assert_eq!(parse_date("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(parse_date("1970-01-01 00:00:00"), Some(0));
        for bad in ["yesterday", "2023-13-01 00:00:00", "2023-11-14", "2023-11-14 25:00:00"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn interface_names_and_ids() {
        assert!(
            interface_ok("HTTP-SECURE-JSON") && interface_ok("HTTP-INSECURE-JSON") && interface_ok("COAP-SECURE-CBOR")
        );
        assert!(!interface_ok("HTTP-JSON") && !interface_ok("http secure json") && !interface_ok("HTTP-MAYBE-JSON"));
        assert_eq!(id_of("service", "batch"), id_of("service", "batch"));
        assert_ne!(id_of("service", "batch"), id_of("service", "cmd"));
        assert!(id_of("system", "x") > 0);
    }
}
