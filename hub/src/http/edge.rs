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
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gwe_wire::arrowhead::{RegisterRequest, System, INTERFACE_HTTPS_JSON, INTERFACE_HTTP_JSON};
use gwe_wire::edge::{self, Batch, BatchAck, CtrlUpdate};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use crate::http::operator::check_operator;
use crate::http::registry::{cert_system, checked_name};
use crate::http::{json_body, ClientAddr};
use crate::server::{Peer, PeerKind};
use crate::service::audit;
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
    /// Arrowhead's insecure mode (`--arrowhead-insecure`): anyone may register, and a
    /// requester is who it says it is (`registry.rs`).
    pub open_registry: bool,
    /// Arrowhead's certificate mode (`--arrowhead-ca`): a client certificate of the local
    /// cloud is its holder's identity (`registry.rs`).
    pub certificates: bool,
    /// This hub's public key (base64 DER), given out as the authorization system's.
    pub public_key: Option<String>,
}

impl EdgeSettings {
    /// A hub alone: a random secret (its tokens are good only on itself).
    pub fn standalone(system_name: &str, address: &str, port: u16) -> Self {
        let mut secret = vec![0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random source failed");
        Self {
            system_name: system_name.into(),
            address: address.into(),
            port,
            tls: false,
            group: None,
            secret,
            token_secs: 3600,
            open_registry: false,
            certificates: false,
            public_key: None,
        }
    }

    /// The registry entries of this hub's services.
    pub fn services(&self) -> Vec<RegisterRequest> {
        let iface = if self.tls { INTERFACE_HTTPS_JSON } else { INTERFACE_HTTP_JSON };
        [
            // Without a leading '/': Arrowhead's clients join `address:port/` and the URI.
            (edge::SERVICE_BATCH, "edge/batch", "TOKEN"),
            (edge::SERVICE_CTRLPOLL, "edge/ctrlpoll", "TOKEN"),
            (edge::SERVICE_CTRLUPDATE, "edge/ctrlupdate", "TOKEN"),
            (edge::SERVICE_CMD, "edge/cmd", "CERTIFICATE"),
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
                    system_name: self.system_name.clone(),
                    address: self.address.clone(),
                    port: self.port,
                    ..System::default()
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
        if !crate::service::auth::same(want.as_bytes(), mac.as_bytes()) {
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
        .route("/edge/batch", post(batch))
        .route("/edge/ctrlpoll", get(ctrlpoll))
        .route("/edge/ctrlupdate", post(ctrlupdate))
        .route("/edge/cmd/{system}", get(cmd_read).post(cmd_issue))
        .route("/api/v1/edge/{system}/points", get(points))
        .route("/api/v1/edge/{system}/batches", get(batches))
}

type ApiResult = Result<Response, ApiError>;

/// The edge system a request's authorization token was issued to, for `service`. A
/// client certificate, when there is one, must be that system's (as Arrowhead's TOKEN
/// providers check the consumer's certificate against the token).
fn edge_of(hub: &Hub, headers: &HeaderMap, peer: Option<&Extension<Peer>>, service: &str) -> Result<String, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| err(StatusCode::UNAUTHORIZED, "missing Authorization: Bearer <orchestrator token>"))?;
    let system = hub.edge.check(token.trim(), service, now_ms()).map_err(|e| err(StatusCode::UNAUTHORIZED, e))?;
    let peer = peer.map(|p| &p.0);
    let holder = match peer {
        Some(p) if p.kind == PeerKind::Device => Some(p.cn.clone()),
        _ => cert_system(hub, peer),
    };
    match holder {
        Some(h) if !h.eq_ignore_ascii_case(&system) => Err(err(
            StatusCode::FORBIDDEN,
            format!("the token was given to {system:?}, the client certificate is {h:?}'s"),
        )),
        _ => Ok(system),
    }
}

async fn batch(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    body: Bytes,
) -> ApiResult {
    let system = edge_of(&hub, &headers, peer.as_ref(), edge::SERVICE_BATCH)?;
    let raw = crate::http::device::inflate_body(&hub, &headers, &body)?;
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

async fn ctrlpoll(State(hub): State<Arc<Hub>>, headers: HeaderMap, peer: Option<Extension<Peer>>) -> ApiResult {
    let system = edge_of(&hub, &headers, peer.as_ref(), edge::SERVICE_CTRLPOLL)?;
    match hub.store.take_command(&system).await? {
        Some(cmd) => Ok(([(header::CONTENT_TYPE, "application/json")], cmd).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn ctrlupdate(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    body: Bytes,
) -> ApiResult {
    let system = edge_of(&hub, &headers, peer.as_ref(), edge::SERVICE_CTRLUPDATE)?;
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

/// Issues a command for an edge. It is checked here by the schema the edge checks it by
/// (`gwe_wire::edge::Command`), so a command the edge would refuse is refused at once, as
/// is one for a serial number the hub knows of no gateway by (neither a device nor an edge
/// that reported to it). A known gateway that has not connected yet keeps its command for
/// its first poll.
async fn cmd_issue(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    ClientAddr(addr): ClientAddr,
    Path(system): Path<String>,
    body: Bytes,
) -> ApiResult {
    operator_or_open(&hub, &headers, peer.as_deref())?;
    checked_name("system", &system)?;
    if body.len() > edge::MAX_CONFIG_BYTES + 4096 {
        return Err(err(StatusCode::PAYLOAD_TOO_LARGE, "command is over 68 KiB"));
    }
    let id = issue_command(&hub, &system, &body).await?;
    // Who: a system by its certificate, the operator token, or anyone (insecure mode).
    let actor = match cert_system(&hub, peer.as_deref()) {
        Some(s) => format!("system:{s}"),
        None if check_operator(&hub, &headers).is_ok() => "token".into(),
        None => "anyone".into(),
    };
    audit::record(&hub, &actor, "edge.command", &system, &format!("command {id}"), &addr).await;
    Ok((StatusCode::CREATED, Json(json!({"system": system, "id": id}))).into_response())
}

/// Checks a command for `system` and makes it the pending one; returns its id.
pub async fn issue_command(hub: &Hub, system: &str, body: &[u8]) -> Result<String, ApiError> {
    let cmd = edge::Command::parse(body).map_err(|e| err(StatusCode::BAD_REQUEST, e))?;
    if !hub.store.serial_known(system).await? {
        return Err(err(StatusCode::NOT_FOUND, format!("no gateway has the serial number {system:?}")));
    }
    let text = serde_json::to_string(&cmd).map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    hub.store.issue_command(system, &text, now_ms()).await?;
    Ok(cmd.id)
}

/// The `cmd` service's caller: the operator, anyone in Arrowhead's insecure mode, and in
/// its certificate mode any system of the local cloud (the `CERTIFICATE` access policy).
fn operator_or_open(hub: &Hub, headers: &HeaderMap, peer: Option<&Peer>) -> Result<(), ApiError> {
    if hub.edge.open_registry || cert_system(hub, peer).is_some() {
        return Ok(());
    }
    check_operator(hub, headers)
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
    peer: Option<Extension<Peer>>,
    Path(system): Path<String>,
    Query(q): Query<CmdQuery>,
) -> ApiResult {
    operator_or_open(&hub, &headers, peer.as_deref())?;
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
        let last = parsed(&c.last_command);
        // The edge's outcome of that very command, found by its id among the results it
        // reports (null until the edge has reported it).
        let id = last.get("id").cloned().unwrap_or_default();
        let state = &out["state"];
        let result = state["results"]
            .as_array()
            .and_then(|r| r.iter().rev().find(|x| x["id"] == id).cloned())
            .or_else(|| (state["last_command"]["id"] == id).then(|| state["last_command"].clone()))
            .unwrap_or_default();
        out["lastCommand"] = last;
        out["lastCommandResult"] = result;
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
