//! Service discovery (Arrowhead 4.x service registry and orchestrator) and the edge
//! services: `batch` (edges push batches of data points, stored once per batch id),
//! `ctrlpoll` (an edge takes its latest command), `ctrlupdate` (an edge reports its state and
//! parameters) and `cmd` (an operator issues a command and reads it back with the state).
//!
//! The orchestrator answers an authenticated device with an authorization token per
//! provider: `v1.EXPIRY.SERVICE.HEX(SYSTEM).HMAC`, an HMAC-SHA256 under the secret the hubs of
//! one deployment share (`--edge-secret-file`). A provider checks it without a database
//! lookup, so hubs with separate databases can serve the same edges.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use gwe_wire::arrowhead::{
    Interface, OrchestrationRequest, OrchestrationResponse, OrchestrationResult, QueryResponse, RegisterRequest,
    RegistryEntry, ServiceDefinition, ServiceQuery, System, INTERFACE_HTTPS_JSON, INTERFACE_HTTP_JSON,
};
use gwe_wire::edge::{self, Batch, BatchAck, CtrlUpdate};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use crate::operator::{check_operator, json_body};
use crate::store::ServiceRow;
use crate::{err, now_ms, ApiError, Hub};

/// How this hub shows itself in the service registry, and the shared token secret.
#[derive(Clone)]
pub struct EdgeSettings {
    pub system_name: String,
    /// Address and port edges use to reach this hub.
    pub address: String,
    pub port: u16,
    pub tls: bool,
    /// `group` metadata of this hub's `batch` service, if any.
    pub group: Option<String>,
    pub secret: Vec<u8>,
    /// Lifetime of the orchestrator's authorization tokens.
    pub token_secs: i64,
}

impl EdgeSettings {
    /// A hub alone: a random secret (its tokens are good only on itself).
    pub fn standalone(system_name: &str, address: &str, port: u16) -> Self {
        let mut secret = vec![0u8; 32];
        getrandom::getrandom(&mut secret).expect("the OS random source failed");
        Self {
            system_name: system_name.into(),
            address: address.into(),
            port,
            tls: false,
            group: None,
            secret,
            token_secs: 3600,
        }
    }

    /// The registry entries of this hub's services.
    pub fn services(&self) -> Vec<RegisterRequest> {
        let iface = if self.tls { INTERFACE_HTTPS_JSON } else { INTERFACE_HTTP_JSON };
        [
            (edge::SERVICE_BATCH, "/edge/batch", "TOKEN"),
            (edge::SERVICE_CTRLPOLL, "/edge/ctrlpoll", "TOKEN"),
            (edge::SERVICE_CTRLUPDATE, "/edge/ctrlupdate", "TOKEN"),
            (edge::SERVICE_CMD, "/edge/cmd", "CERTIFICATE"),
        ]
        .into_iter()
        .map(|(def, uri, secure)| {
            let mut metadata = BTreeMap::new();
            if let (Some(g), true) = (&self.group, def == edge::SERVICE_BATCH) {
                metadata.insert("group".to_string(), g.clone());
            }
            RegisterRequest {
                service_definition: def.into(),
                provider_system: System {
                    id: None,
                    system_name: self.system_name.clone(),
                    address: self.address.clone(),
                    port: self.port,
                    authentication_info: None,
                },
                service_uri: uri.into(),
                end_of_validity: None,
                secure: secure.into(),
                metadata,
                version: 1,
                interfaces: vec![iface.into()],
            }
        })
        .collect()
    }

    fn mac(&self, body: &str) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        m.update(body.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    /// A token letting `system` use `service` until now + `token_secs`.
    pub fn token(&self, system: &str, service: &str, now_ms: i64) -> String {
        let body = format!("v1.{}.{service}.{}", now_ms / 1000 + self.token_secs, hex::encode(system));
        let mac = self.mac(&body);
        format!("{body}.{mac}")
    }

    /// The system a token was given to, if it is genuine, for `service` and not expired.
    pub fn check(&self, token: &str, service: &str, now_ms: i64) -> Result<String, String> {
        let (body, mac) = token.rsplit_once('.').ok_or("malformed token")?;
        let want = self.mac(body);
        if !crate::operator::same(want.as_bytes(), mac.as_bytes()) {
            return Err("token not issued by this deployment's orchestrator".into());
        }
        let mut parts = body.split('.');
        let (Some("v1"), Some(exp), Some(svc), Some(sys), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed token".into());
        };
        if svc != service {
            return Err(format!("token is for service {svc}, not {service}"));
        }
        let exp: i64 = exp.parse().map_err(|_| "malformed token")?;
        if exp < now_ms / 1000 {
            return Err("token expired; orchestrate again".into());
        }
        let sys = hex::decode(sys).ok().and_then(|b| String::from_utf8(b).ok()).ok_or("malformed token")?;
        Ok(sys)
    }
}

pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/serviceregistry/register", post(register))
        .route("/serviceregistry/query", post(query))
        .route("/serviceregistry/unregister", delete(unregister))
        .route("/orchestrator/orchestration", post(orchestration))
        .route("/edge/batch", post(batch))
        .route("/edge/ctrlpoll", get(ctrlpoll))
        .route("/edge/ctrlupdate", post(ctrlupdate))
        .route("/edge/cmd/{system}", get(cmd_read).post(cmd_issue))
        .route("/api/v1/edge/{system}/points", get(points))
        .route("/api/v1/edge/{system}/batches", get(batches))
}

type ApiResult = Result<Response, ApiError>;

fn entry(s: &ServiceRow) -> RegistryEntry {
    RegistryEntry {
        id: s.id,
        service_definition: ServiceDefinition { id: 0, service_definition: s.definition.clone() },
        provider: System {
            id: None,
            system_name: s.system_name.clone(),
            address: s.address.clone(),
            port: s.port as u16,
            authentication_info: None,
        },
        service_uri: s.service_uri.clone(),
        end_of_validity: s.end_of_validity.clone(),
        secure: s.secure.clone(),
        metadata: s.metadata.clone(),
        version: s.version,
        interfaces: s
            .interfaces
            .iter()
            .enumerate()
            .map(|(i, n)| Interface { id: i as i64 + 1, interface_name: n.clone() })
            .collect(),
    }
}

fn checked_name(what: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > 255 || v.chars().any(|c| c.is_control()) {
        return Err(err(StatusCode::BAD_REQUEST, format!("{what} must be 1 to 255 printable characters")));
    }
    Ok(())
}

/// Adds this hub's own services to the registry it keeps.
pub async fn register_own(hub: &Hub) -> Result<(), String> {
    for r in hub.edge.services() {
        hub.store.register_service(&row_of(&r)).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub fn row_of(r: &RegisterRequest) -> ServiceRow {
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
    }
}

async fn register(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    check_operator(&hub, &headers)?;
    let r: RegisterRequest = json_body(&body)?;
    checked_name("serviceDefinition", &r.service_definition)?;
    checked_name("providerSystem.systemName", &r.provider_system.system_name)?;
    checked_name("providerSystem.address", &r.provider_system.address)?;
    if r.provider_system.port == 0 {
        return Err(err(StatusCode::BAD_REQUEST, "providerSystem.port must be 1 to 65535"));
    }
    if !r.service_uri.starts_with('/') {
        return Err(err(StatusCode::BAD_REQUEST, "serviceUri must start with /"));
    }
    if r.interfaces.is_empty() {
        return Err(err(StatusCode::BAD_REQUEST, "interfaces must name at least one interface"));
    }
    if !["NOT_SECURE", "CERTIFICATE", "TOKEN"].contains(&r.secure.as_str()) {
        return Err(err(StatusCode::BAD_REQUEST, "secure must be NOT_SECURE, CERTIFICATE or TOKEN"));
    }
    let mut row = row_of(&r);
    row.id = hub.store.register_service(&row).await?;
    Ok((StatusCode::CREATED, Json(entry(&row))).into_response())
}

/// The registered providers matching a query (and flags), in registration order.
async fn matching(hub: &Hub, q: &ServiceQuery, metadata_search: bool) -> Result<(Vec<ServiceRow>, usize), ApiError> {
    checked_name("serviceDefinitionRequirement", &q.service_definition_requirement)?;
    let all = hub.store.services(&q.service_definition_requirement.to_lowercase()).await?;
    let hits = all.len();
    let found = all
        .into_iter()
        .filter(|s| {
            q.interface_requirements.is_empty()
                || q.interface_requirements.iter().any(|i| s.interfaces.contains(&i.to_uppercase()))
        })
        .filter(|s| q.security_requirements.is_empty() || q.security_requirements.contains(&s.secure))
        .filter(|s| q.version_requirement.is_none_or(|v| v == s.version))
        .filter(|s| !metadata_search || q.metadata_requirements.iter().all(|(k, v)| s.metadata.get(k) == Some(v)))
        .collect();
    Ok((found, hits))
}

async fn query(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    if check_operator(&hub, &headers).is_err() {
        hub.device_of(&headers).await?;
    }
    let q: ServiceQuery = json_body(&body)?;
    let (found, hits) = matching(&hub, &q, true).await?;
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

async fn unregister(State(hub): State<Arc<Hub>>, headers: HeaderMap, Query(u): Query<Unregister>) -> ApiResult {
    check_operator(&hub, &headers)?;
    let def = u.service_definition.to_lowercase();
    if hub.store.unregister_service(&def, &u.system_name, &u.address, u.port).await? {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(err(StatusCode::NOT_FOUND, format!("no {def} service of {} at {}:{}", u.system_name, u.address, u.port)))
    }
}

/// Orchestration for a device: its `requesterSystem.systemName` must be its serial number.
async fn orchestration(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let dev = hub.device_of(&headers).await?;
    let rq: OrchestrationRequest = json_body(&body)?;
    let sn = hub.store.device(dev).await?.map(|d| d.sn).unwrap_or_default();
    if rq.requester_system.system_name != sn {
        return Err(err(
            StatusCode::FORBIDDEN,
            format!(
                "requesterSystem.systemName {:?} is not this device's serial number",
                rq.requester_system.system_name
            ),
        ));
    }
    let flags = &rq.orchestration_flags;
    let (mut found, _) = matching(&hub, &rq.requested_service, flags.metadata_search).await?;
    let preferred = |s: &ServiceRow| {
        rq.preferred_providers.iter().any(|p| {
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
    let mut warnings = Vec::new();
    if flags.ping_providers || rq.requested_service.ping_providers {
        warnings.push("pingProviders is not supported; providers were not pinged".to_string());
    }
    let now = now_ms();
    let response = found
        .iter()
        .map(|s| {
            let e = entry(s);
            let tokens = if s.secure == "TOKEN" {
                s.interfaces.iter().map(|i| (i.clone(), hub.edge.token(&sn, &s.definition, now))).collect()
            } else {
                BTreeMap::new()
            };
            OrchestrationResult {
                provider: e.provider,
                service: e.service_definition,
                service_uri: e.service_uri,
                secure: e.secure,
                metadata: e.metadata,
                interfaces: e.interfaces,
                version: e.version,
                authorization_tokens: tokens,
                warnings: warnings.clone(),
            }
        })
        .collect();
    Ok(Json(OrchestrationResponse { response }).into_response())
}

/// The edge system a request's authorization token was issued to, for `service`.
fn edge_of(hub: &Hub, headers: &HeaderMap, service: &str) -> Result<String, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| err(StatusCode::UNAUTHORIZED, "missing Authorization: Bearer <orchestrator token>"))?;
    hub.edge.check(token.trim(), service, now_ms()).map_err(|e| err(StatusCode::UNAUTHORIZED, e))
}

async fn batch(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let system = edge_of(&hub, &headers, edge::SERVICE_BATCH)?;
    let raw = crate::device::inflate_body(&hub, &headers, &body)?;
    let b: Batch = json_body(&raw)?;
    if b.system != system {
        return Err(err(
            StatusCode::FORBIDDEN,
            format!("batch of system {:?} sent with a token of {system:?}", b.system),
        ));
    }
    checked_name("batch_id", &b.batch_id)?;
    if let Some(p) = b.points.iter().find(|p| p.n.is_empty() || p.n.len() > 255) {
        return Err(err(StatusCode::BAD_REQUEST, format!("point name {:?} must be 1 to 255 bytes", p.n)));
    }
    let fresh = hub.store.edge_batch(&system, &hub.edge.system_name, &b.batch_id, &b.points, now_ms()).await?;
    let stored = if fresh { b.points.len() as u64 } else { 0 };
    Ok(Json(BatchAck { batch_id: b.batch_id, stored, duplicate: !fresh }).into_response())
}

async fn ctrlpoll(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> ApiResult {
    let system = edge_of(&hub, &headers, edge::SERVICE_CTRLPOLL)?;
    match hub.store.take_command(&system).await? {
        Some(cmd) => Ok(([(header::CONTENT_TYPE, "application/json")], cmd).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn ctrlupdate(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let system = edge_of(&hub, &headers, edge::SERVICE_CTRLUPDATE)?;
    let u: CtrlUpdate = json_body(&body)?;
    if u.system != system {
        return Err(err(
            StatusCode::FORBIDDEN,
            format!("report of system {:?} sent with a token of {system:?}", u.system),
        ));
    }
    if u.state.is_none() && u.parameters.is_none() {
        return Err(err(StatusCode::BAD_REQUEST, "the report holds neither state nor parameters"));
    }
    let state = u.state.as_ref().map(|s| serde_json::to_string(s).unwrap_or_default());
    let params = u.parameters.as_ref().map(|p| p.to_string());
    hub.store.edge_report(&system, state.as_deref(), params.as_deref(), now_ms()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Issues a command for an edge: a JSON object with a string `id`. Its schema is the edge's
/// to check (an edge may run another version); the edge reports a rejection in its state.
async fn cmd_issue(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(system): Path<String>,
    body: Bytes,
) -> ApiResult {
    check_operator(&hub, &headers)?;
    checked_name("system", &system)?;
    if body.len() > edge::MAX_CONFIG_BYTES + 4096 {
        return Err(err(StatusCode::PAYLOAD_TOO_LARGE, "command is over 68 KiB"));
    }
    let v: serde_json::Value = json_body(&body)?;
    let id = command_id(&v)?;
    hub.store.issue_command(&system, &v.to_string(), now_ms()).await?;
    Ok((StatusCode::CREATED, Json(json!({"system": system, "id": id}))).into_response())
}

/// An edge command's id: it must be a JSON object with a string `id`.
pub fn command_id(v: &serde_json::Value) -> Result<String, ApiError> {
    v.get("id")
        .and_then(|i| i.as_str())
        .map(str::to_string)
        .ok_or_else(|| err(StatusCode::BAD_REQUEST, "command must be a JSON object with a string id"))
}

#[derive(Deserialize)]
struct CmdQuery {
    #[serde(default)]
    last: bool,
}

fn parsed(s: &Option<String>) -> serde_json::Value {
    s.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or(serde_json::Value::Null)
}

/// The pending command and the edge's last reported state; with `last=true` also the last
/// command issued, even once fetched.
async fn cmd_read(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(system): Path<String>,
    Query(q): Query<CmdQuery>,
) -> ApiResult {
    check_operator(&hub, &headers)?;
    let c = hub.store.edge_control(&system).await?.unwrap_or_default();
    let mut out = json!({
        "system": system,
        "pending": parsed(&c.pending),
        "state": parsed(&c.state),
        "stateMs": c.state_ms,
        "parameters": parsed(&c.parameters),
        "parametersMs": c.parameters_ms,
    });
    if q.last {
        out["lastCommand"] = parsed(&c.last_command);
        out["issuedMs"] = json!(c.issued_ms);
    }
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
struct PointsQuery {
    #[serde(default = "default_limit")]
    limit: i64,
    provider: Option<String>,
}

fn default_limit() -> i64 {
    1000
}

async fn points(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(system): Path<String>,
    Query(q): Query<PointsQuery>,
) -> ApiResult {
    check_operator(&hub, &headers)?;
    let points = hub.store.edge_points(&system, q.provider.as_deref(), q.limit.clamp(0, 10_000_000)).await?;
    Ok(Json(json!({"system": system, "points": points})).into_response())
}

/// The edge's batches as stored (id, receiving provider, time, point count).
async fn batches(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(system): Path<String>,
    Query(q): Query<PointsQuery>,
) -> ApiResult {
    check_operator(&hub, &headers)?;
    let batches = hub.store.edge_batches(&system, q.provider.as_deref()).await?;
    Ok(Json(json!({"system": system, "batches": batches})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_system_service_secret_and_time() {
        let a = EdgeSettings::standalone("hub-a", "127.0.0.1", 1);
        let now = 1_700_000_000_000;
        let t = a.token("GW.1", "batch", now);
        assert_eq!(a.check(&t, "batch", now).unwrap(), "GW.1");
        assert!(a.check(&t, "ctrlpoll", now).unwrap_err().contains("not ctrlpoll"));
        assert!(a.check(&t, "batch", now + 3_601_000).unwrap_err().contains("expired"));
        let b = EdgeSettings::standalone("hub-b", "127.0.0.1", 2);
        assert!(b.check(&t, "batch", now).unwrap_err().contains("not issued"));
        let forged = t.replace(&hex::encode("GW.1"), &hex::encode("GW.2"));
        assert!(a.check(&forged, "batch", now).is_err());
    }
}
