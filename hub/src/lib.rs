//! The Gateway Engine hub: the cloud side gateways talk to. Device API (Exosite forms),
//! provisioning, the forwarder's batch ingest, content for OTA packages, and a JSON
//! operator API. Storage is SQLite or PostgreSQL behind [`store::Store`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

pub mod clock;
pub mod http;
pub mod notify;
pub mod server;
pub mod service;
pub mod store;

pub use clock::now_ms;
pub use http::{err, ApiError};
pub use service::auth::{new_token, token_hash};

use notify::Notifier;
use store::Store;

/// Settings the request handlers need.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest device API request body.
    pub max_body: usize,
    /// Largest batch after inflating it.
    pub max_batch: usize,
    /// Largest content upload.
    pub max_content: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body: 1 << 20, max_batch: 16 << 20, max_content: 256 << 20 }
    }
}

/// How long a token lookup is remembered unless renewed. [`Hub::check_tokens`] renews
/// every [`TOKEN_SWEEP`] what was not revoked since, so an operator's re-enable on another
/// hub takes effect here within a sweep (within `TOKEN_TTL` if the database cannot be
/// read). With 50,000 gateways, a lookup per gateway every 30 s cost the hubs and the
/// database more CPU than one query; and one query for every device's token, in six hubs
/// at once, stalled every write for 100-300 ms every 15 s. A sweep reads only the devices
/// revoked within [`REVOKED_WITHIN`].
const TOKEN_TTL: Duration = Duration::from_secs(30);
const TOKEN_SWEEP: Duration = Duration::from_secs(15);
/// Longer than a token's life and a late sweep: a revocation that committed while a lookup
/// of that token was under way is still in the next sweep's answer.
const REVOKED_WITHIN: Duration = Duration::from_secs(120);

pub struct Hub {
    pub store: Arc<dyn Store>,
    pub notifier: Arc<Notifier>,
    pub limits: Limits,
    /// `Authorization: Bearer` token for the operator API; None disables that API.
    pub operator_token: Option<String>,
    /// This hub's place in service discovery and the edge services' token secret.
    pub edge: http::edge::EdgeSettings,
    tokens: Mutex<HashMap<[u8; 32], (i64, Instant)>>,
    /// The device CA this hub issues gateways' certificates with; None: it issues none.
    pub issuer: Option<Arc<service::identity::DeviceIssuer>>,
}

/// Sets the calling thread's nice value. A lower value than the current one needs root,
/// `CAP_SYS_NICE` or an `RLIMIT_NICE`.
pub fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority on the calling thread (who 0); no memory is passed.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Hub {
    pub fn new(store: Arc<dyn Store>, notifier: Arc<Notifier>, limits: Limits, operator_token: Option<String>) -> Self {
        let edge = http::edge::EdgeSettings::standalone("gwe-hub", "127.0.0.1", 0);
        Self { store, notifier, limits, operator_token, edge, tokens: Mutex::new(HashMap::new()), issuer: None }
    }

    /// Lets this hub issue gateways' certificates.
    pub fn with_issuer(mut self, issuer: service::identity::DeviceIssuer) -> Self {
        self.issuer = Some(Arc::new(issuer));
        self
    }

    /// Sets how this hub appears in service discovery.
    pub fn with_edge(mut self, edge: http::edge::EdgeSettings) -> Self {
        self.edge = edge;
        self
    }

    /// The device a request comes from: its `X-Exosite-CIK`, or else a client certificate
    /// of the device CA (`--device-ca`) whose common name is a whitelisted serial number;
    /// or 401.
    pub async fn device_of(&self, headers: &HeaderMap, peer: Option<&server::Peer>) -> Result<i64, ApiError> {
        let cik = headers.get("x-exosite-cik").and_then(|v| v.to_str().ok());
        let hash = match (cik, peer) {
            (Some(cik), _) => token_hash(cik.trim()),
            (None, Some(p)) if p.kind == server::PeerKind::Device => {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                h.update(b"cert\0");
                h.update(p.cn.as_bytes());
                h.update(b"\0");
                h.update(&p.spki);
                h.finalize().into()
            }
            (None, _) => return Err(err(StatusCode::UNAUTHORIZED, "missing X-Exosite-CIK header")),
        };
        if let Some((dev, at)) = self.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(&hash) {
            if at.elapsed() < TOKEN_TTL {
                return Ok(*dev);
            }
        }
        let dev = match (cik, peer) {
            (Some(_), _) => self.store.device_for_token(&hash).await?,
            (None, Some(p)) => match self.store.devices_by_sn(&p.cn).await?[..] {
                [dev] => {
                    if let Err(e) = certified(self.store.enrolled_key_by_id(dev).await?.as_ref(), p) {
                        log::warn!("refused the client certificate of {}: {}", p.cn, e.1);
                        return Err(e);
                    }
                    Some(dev)
                }
                [] => {
                    return Err(err(
                        StatusCode::UNAUTHORIZED,
                        format!("no device has the client certificate's serial number {:?}", p.cn),
                    ))
                }
                _ => {
                    return Err(err(
                        StatusCode::UNAUTHORIZED,
                        format!(
                            "several devices have the serial number {:?}: a certificate cannot tell them apart",
                            p.cn
                        ),
                    ))
                }
            },
            (None, None) => None,
        };
        match dev {
            Some(dev) => {
                self.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(hash, (dev, Instant::now()));
                Ok(dev)
            }
            None => Err(err(StatusCode::UNAUTHORIZED, "unknown or revoked device token")),
        }
    }

    /// Every [`TOKEN_SWEEP`] and whenever a device is revoked (here, or on another hub of a
    /// PostgreSQL database), forgets the remembered tokens of devices revoked lately and
    /// renews the others. If the database cannot be read, entries age out as before.
    pub async fn check_tokens(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TOKEN_SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.notifier.revocations() => {
                    for dev in self.notifier.take_revoked() {
                        self.forget_tokens(dev);
                    }
                    continue;
                }
            }
            if self.tokens.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                continue;
            }
            let started = Instant::now();
            match self.store.revoked_devices(i64::try_from(REVOKED_WITHIN.as_millis()).unwrap_or(i64::MAX)).await {
                Ok(revoked) => {
                    let revoked: std::collections::HashSet<i64> = revoked.into_iter().collect();
                    self.tokens.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, (dev, at)| {
                        if revoked.contains(dev) {
                            false
                        } else {
                            // Valid when the sweep began; a revocation since is caught next time.
                            *at = (*at).max(started);
                            true
                        }
                    });
                }
                Err(e) => log::warn!("checking device tokens: {e}"),
            }
        }
    }

    /// Forgets cached tokens of `dev` (after an operator re-enabled it).
    pub fn forget_tokens(&self, dev: i64) {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, (d, _)| *d != dev);
    }
}

/// Whether a device certificate may stand for its device: a device that enrolled a key
/// must present a certificate of that key, approved and not revoked. A device without an
/// enrolled key has a certificate of the factory's own PKI (`--device-ca`) and no more
/// checks (`revoke_device` records a revoked key for every device it revokes).
fn certified(key: Option<&store::EnrolledKey>, p: &server::Peer) -> Result<(), ApiError> {
    use store::KeyState;
    match key {
        None => Ok(()),
        Some(k) if k.state == KeyState::Revoked => {
            Err(err(StatusCode::UNAUTHORIZED, format!("device {} is revoked", p.cn)))
        }
        Some(k) if k.spki != p.spki => Err(err(
            StatusCode::UNAUTHORIZED,
            format!(
                "the client certificate's key {} is not the key enrolled for {} ({})",
                service::identity::fingerprint(&p.spki),
                p.cn,
                service::identity::fingerprint(&k.spki)
            ),
        )),
        Some(k) if k.state == KeyState::Pending => {
            Err(err(StatusCode::UNAUTHORIZED, format!("the key of {} waits for an operator's approval", p.cn)))
        }
        Some(_) => Ok(()),
    }
}

/// The whole HTTP API.
pub fn router(hub: Arc<Hub>) -> axum::Router {
    use axum::extract::DefaultBodyLimit;
    use axum::middleware::from_fn;
    let (body, content) = (hub.limits.max_body, hub.limits.max_content);
    let device = http::device::routes()
        .layer(DefaultBodyLimit::max(body))
        .layer(from_fn(move |rq, next| refuse_declared_over(body, rq, next)));
    let operator = http::operator::routes()
        .layer(DefaultBodyLimit::max(content))
        .layer(from_fn(move |rq, next| refuse_declared_over(content, rq, next)));
    let edge = http::edge::routes()
        .merge(http::registry::routes())
        .layer(DefaultBodyLimit::max(body))
        .layer(from_fn(move |rq, next| refuse_declared_over(body, rq, next)));
    let ui = http::dashboard::routes()
        .layer(DefaultBodyLimit::max(body))
        .layer(from_fn(move |rq, next| refuse_declared_over(body, rq, next)));
    device.merge(operator).merge(edge).merge(ui).with_state(hub)
}

/// 413 at once for a body whose Content-Length is over the limit, before it is sent
/// (bodies without a length are cut at the limit while they are read).
async fn refuse_declared_over(limit: usize, rq: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = rq.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => {
            err(StatusCode::PAYLOAD_TOO_LARGE, format!("body of {n} bytes is over the limit of {limit}"))
                .into_response()
        }
        _ => next.run(rq).await,
    }
}
