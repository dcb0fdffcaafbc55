//! The link to the hub: blocking HTTP(S) with ureq and rustls (ring), Exosite device API
//! forms plus the forwarder's batch (`docs/cloud-protocol.md`).
//!
//! The device token is made by activation and kept in `state/cloud_token` (0600, replaced
//! atomically). A 401 drops it, activates again and retries the request once.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ureq::http::Response;
use ureq::Body;

use crate::config::CloudConfig;
use crate::identity::{self, Identity};
use crate::{fsio, usage};

/// Why a request to the hub failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudError {
    /// The hub could not be reached or answered 5xx; worth retrying later.
    Unreachable(String),
    /// The hub refused the request (4xx other than 401), with its message.
    Refused(u16, String),
    /// Activation failed: not whitelisted (404) or already activated (409).
    NotActivated(u16, String),
}

/// Why the cloud link cannot be set up from the configuration.
#[derive(Debug)]
pub enum SetupError {
    /// `[cloud] ca_file` cannot be read.
    CaFile(PathBuf, std::io::Error),
    /// `[cloud] ca_file` holds no PEM certificate.
    NoCertificate(PathBuf),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CaFile(p, e) => write!(f, "CA bundle {}: {e}", p.display()),
            Self::NoCertificate(p) => write!(f, "CA bundle {}: no certificate in it", p.display()),
        }
    }
}

impl std::error::Error for SetupError {}

impl CloudError {
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::NotActivated(..))
    }
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(m) => write!(f, "hub unreachable: {m}"),
            Self::Refused(s, m) => write!(f, "hub refused ({s}): {m}"),
            Self::NotActivated(404, m) => write!(f, "activation refused, device not whitelisted: {m}"),
            Self::NotActivated(s, m) => write!(f, "activation refused ({s}): {m}"),
        }
    }
}

impl std::error::Error for CloudError {}

/// A long-poll answer: the value and its exact modification time (for the next poll).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Polled {
    pub value: String,
    pub modified: Option<String>,
}

pub struct Cloud {
    agent: ureq::Agent,
    base: String,
    identity: Identity,
    token_path: PathBuf,
    token: Mutex<Option<String>>,
    /// Held while activating: threads that find no token at the same moment must not each
    /// activate (the hub answers the second with 409).
    activating: Mutex<()>,
    timeout: Duration,
    pub usage: Arc<usage::Usage>,
    /// Some request got an answer from the hub (not a 5xx): the link works.
    reached: std::sync::atomic::AtomicBool,
}

const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

fn tls_config(ca_file: &Path) -> Result<ureq::tls::TlsConfig, SetupError> {
    let pem = std::fs::read(ca_file).map_err(|e| SetupError::CaFile(ca_file.to_path_buf(), e))?;
    let mut roots = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
            roots.push(c);
        }
    }
    if roots.is_empty() {
        return Err(SetupError::NoCertificate(ca_file.to_path_buf()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
        .unversioned_rustls_crypto_provider(provider)
        .build())
}

/// Approximate bytes of a header block on the wire.
fn header_bytes(h: &ureq::http::HeaderMap) -> u64 {
    h.iter().map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64).sum::<u64>() + 17
}

impl Cloud {
    pub fn new(
        cfg: &CloudConfig,
        identity: Identity,
        state_dir: &Path,
        usage: Arc<usage::Usage>,
    ) -> Result<Self, SetupError> {
        let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        let mut b = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_global(Some(timeout))
            .user_agent(concat!("gwe/", env!("CARGO_PKG_VERSION")))
            .max_redirects(0)
            // ureq zero-fills 128 KiB each way per connection by default, and the forwarder,
            // telemetry and the long-poll each hold one: 1.5 MiB of RSS for bodies that are
            // streamed anyway. The hub's answers have small headers.
            .input_buffer_size(16 << 10)
            .output_buffer_size(16 << 10)
            .max_response_header_size(16 << 10)
            .max_idle_connections(4);
        if cfg.url.starts_with("https://") {
            b = b.tls_config(tls_config(&cfg.ca_file)?);
        }
        let token_path = state_dir.join("cloud_token");
        let token =
            std::fs::read_to_string(&token_path).ok().map(|t| t.trim().to_string()).filter(|t| identity::is_token(t));
        Ok(Self {
            agent: b.build().into(),
            base: cfg.url.trim_end_matches('/').to_string(),
            identity,
            token_path,
            token: Mutex::new(token),
            activating: Mutex::new(()),
            timeout,
            usage,
            reached: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether the hub has answered a request of this agent.
    pub fn reached(&self) -> bool {
        self.reached.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The device token, activating first when there is none.
    pub fn token(&self) -> Result<String, CloudError> {
        if let Some(t) = self.token.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(t);
        }
        let _one = self.activating.lock().unwrap_or_else(|e| e.into_inner());
        // Another thread may have activated while this one waited.
        if let Some(t) = self.token.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(t);
        }
        self.activate()
    }

    fn activate(&self) -> Result<String, CloudError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("vendor", &self.identity.vendor)
            .append_pair("model", &self.identity.model)
            .append_pair("sn", &self.identity.serial)
            .finish();
        let rq = self.agent.post(self.url("/provision/activate")).header("Content-Type", FORM);
        let (status, text) = self.finish("activate", body.len(), rq.send(body.as_bytes()))?;
        match status {
            200 if identity::is_token(text.trim()) => {
                let t = text.trim().to_string();
                fsio::write_atomic_mode(&self.token_path, t.as_bytes(), 0o600)
                    .map_err(|e| CloudError::Unreachable(format!("saving the token: {e}")))?;
                log::info!(
                    "activated with the hub as {}/{}/{}",
                    self.identity.vendor,
                    self.identity.model,
                    self.identity.serial
                );
                *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(t.clone());
                Ok(t)
            }
            200 => Err(CloudError::Refused(200, "activation answered something that is not a token".into())),
            404 | 409 => Err(CloudError::NotActivated(status, text.trim().to_string())),
            _ => Err(CloudError::Refused(status, text.trim().to_string())),
        }
    }

    /// Forgets a token the hub refused; the next request activates again.
    fn drop_token(&self, used: &str) {
        let mut t = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if t.as_deref() == Some(used) {
            log::warn!("the hub refused our token; activating again");
            *t = None;
        }
    }

    /// Reads a response, counting bytes for usage_report; 5xx and transport errors are
    /// `Unreachable`.
    fn finish(
        &self,
        method: &'static str,
        sent: usize,
        r: Result<Response<Body>, ureq::Error>,
    ) -> Result<(u16, String), CloudError> {
        let (status, body, _) = self.finish_bytes(method, sent, r, 1 << 20)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    fn finish_bytes(
        &self,
        method: &'static str,
        sent: usize,
        r: Result<Response<Body>, ureq::Error>,
        limit: u64,
    ) -> Result<(u16, Vec<u8>, ureq::http::HeaderMap), CloudError> {
        let tx = sent as u64 + 200;
        let mut resp = match r {
            Ok(r) => r,
            Err(e) => {
                self.usage.api(method, tx, 0);
                return Err(CloudError::Unreachable(e.to_string()));
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.body_mut().with_config().limit(limit).read_to_vec();
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                self.usage.api(method, tx, header_bytes(&headers));
                return Err(CloudError::Unreachable(format!("reading the answer: {e}")));
            }
        };
        self.usage.api(method, tx, header_bytes(&headers) + body.len() as u64);
        if status >= 500 {
            return Err(CloudError::Unreachable(format!("{status}: {}", String::from_utf8_lossy(&body).trim())));
        }
        if status != 401 {
            self.reached.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok((status, body, headers))
    }

    /// Sends an authenticated request; on 401 activates again and retries once.
    fn authed(
        &self,
        method: &'static str,
        sent: usize,
        limit: u64,
        send: impl Fn(&str) -> Result<Response<Body>, ureq::Error>,
    ) -> Result<(u16, Vec<u8>, ureq::http::HeaderMap), CloudError> {
        for _ in 0..2 {
            let token = self.token()?;
            let (status, body, headers) = self.finish_bytes(method, sent, send(&token), limit)?;
            if status == 401 {
                self.drop_token(&token);
                continue;
            }
            return Ok((status, body, headers));
        }
        Err(CloudError::Refused(401, "the hub refused a fresh token".into()))
    }

    fn refused(status: u16, body: &[u8]) -> CloudError {
        CloudError::Refused(status, String::from_utf8_lossy(body).trim().to_string())
    }

    /// Writes dataports now (`POST /onep:v1/stack/alias`).
    pub fn write(&self, pairs: &[(&str, &str)]) -> Result<(), CloudError> {
        let mut f = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            f.append_pair(k, v);
        }
        let body = f.finish();
        let (status, resp, _) = self.authed("write", body.len(), 64 << 10, |t| {
            self.agent
                .post(self.url("/onep:v1/stack/alias"))
                .header("X-Exosite-CIK", t)
                .header("Content-Type", FORM)
                .send(body.as_bytes())
        })?;
        match status {
            204 | 200 => Ok(()),
            s => Err(Self::refused(s, &resp)),
        }
    }

    /// Reads dataports; missing ones are left out.
    pub fn read(&self, aliases: &[&str]) -> Result<Vec<(String, String)>, CloudError> {
        let q = aliases
            .iter()
            .map(|a| form_urlencoded::byte_serialize(a.as_bytes()).collect::<String>())
            .collect::<Vec<_>>();
        let url = self.url(&format!("/onep:v1/stack/alias?{}", q.join("&")));
        let (status, resp, _) =
            self.authed("read", 0, 1 << 20, |t| self.agent.get(&url).header("X-Exosite-CIK", t).call())?;
        match status {
            200 => Ok(form_urlencoded::parse(&resp).into_owned().collect()),
            204 => Ok(Vec::new()),
            s => Err(Self::refused(s, &resp)),
        }
    }

    /// Waits up to `wait` for `alias` to change after `since` (the `modified` of the last
    /// answer; None: after now). None when it did not change.
    pub fn long_poll(&self, alias: &str, since: Option<&str>, wait: Duration) -> Result<Option<Polled>, CloudError> {
        let url = self.url(&format!("/onep:v1/stack/alias?{alias}"));
        let ms = wait.as_millis().min(300_000).to_string();
        let (status, resp, headers) = self.authed("longpoll", 0, 1 << 20, |t| {
            let mut rq = self
                .agent
                .get(&url)
                .header("X-Exosite-CIK", t)
                .header("Request-Timeout", &ms)
                .config()
                .timeout_global(Some(self.timeout + wait))
                .build();
            if let Some(s) = since {
                rq = rq.header("If-Modified-Since", s);
            }
            rq.call()
        })?;
        match status {
            200 => {
                let value = form_urlencoded::parse(&resp).find(|(k, _)| k == alias).map(|(_, v)| v.into_owned());
                let modified = headers.get("x-gwe-modified").and_then(|v| v.to_str().ok()).map(str::to_string);
                Ok(Some(Polled { value: value.unwrap_or_default(), modified }))
            }
            304 => Ok(None),
            s => Err(Self::refused(s, &resp)),
        }
    }

    /// Sends a deflated forwarder batch; returns the highest seq the hub has stored.
    pub fn send_batch(&self, deflated: &[u8]) -> Result<u64, CloudError> {
        let (status, resp, _) = self.authed("batch", deflated.len(), 4096, |t| {
            self.agent
                .post(self.url("/gwe/v1/batch"))
                .header("X-Exosite-CIK", t)
                .header("Content-Type", "application/x-gwe-batch")
                .header("Content-Encoding", "deflate")
                .send(deflated)
        })?;
        if status != 200 {
            return Err(Self::refused(status, &resp));
        }
        let text = String::from_utf8_lossy(&resp);
        text.trim()
            .strip_prefix("acked=")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| CloudError::Refused(200, format!("batch answer {text:?} is not acked=<seq>")))
    }

    /// The hub's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Asks an orchestrator (`base`, e.g. the hub) for the providers of a service; the body
    /// is an Arrowhead orchestration request, authenticated with the device token.
    pub fn orchestrate(&self, base: &str, body: &[u8]) -> Result<Vec<u8>, CloudError> {
        let url = format!("{}/orchestrator/orchestration", base.trim_end_matches('/'));
        let (status, resp, _) = self.authed("orchestration", body.len(), 1 << 20, |t| {
            self.agent.post(&url).header("X-Exosite-CIK", t).header("Content-Type", "application/json").send(body)
        })?;
        if status != 200 {
            return Err(Self::refused(status, &resp));
        }
        Ok(resp)
    }

    /// A request to an edge service provider with the orchestrator's token. `body`:
    /// JSON, deflated when `deflated`. Answers the status and body (5xx is `Unreachable`).
    pub fn provider_call(
        &self,
        method: &'static str,
        url: &str,
        token: &str,
        body: Option<(&[u8], bool)>,
    ) -> Result<(u16, Vec<u8>), CloudError> {
        // A provider of a NOT_SECURE service gets no token from the orchestrator: no header.
        let auth = (!token.is_empty()).then(|| format!("Bearer {token}"));
        let r = match body {
            None => {
                let rq = self.agent.get(url);
                match &auth {
                    Some(a) => rq.header("Authorization", a).call(),
                    None => rq.call(),
                }
            }
            Some((b, deflated)) => {
                let rq = self.agent.post(url).header("Content-Type", "application/json");
                let rq = match &auth {
                    Some(a) => rq.header("Authorization", a),
                    None => rq,
                };
                let rq = if deflated { rq.header("Content-Encoding", "deflate") } else { rq };
                rq.send(b)
            }
        };
        let sent = body.map_or(0, |(b, _)| b.len());
        let (status, resp, _) = self.finish_bytes(method, sent, r, 1 << 20)?;
        Ok((status, resp))
    }

    fn content_url(&self, id: &str, info: bool) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("vendor", &self.identity.vendor).append_pair("model", &self.identity.model).append_pair("id", id);
        if info {
            q.append_pair("info", "true");
        }
        self.url(&format!("/provision/download?{}", q.finish()))
    }

    /// The size of content `id` (`info=true`: `content-type,size,updated,meta`).
    pub fn content_size(&self, id: &str) -> Result<u64, CloudError> {
        let url = self.content_url(id, true);
        let (status, resp, _) =
            self.authed("download", 0, 64 << 10, |t| self.agent.get(&url).header("X-Exosite-CIK", t).call())?;
        if status != 200 {
            return Err(Self::refused(status, &resp));
        }
        let text = String::from_utf8_lossy(&resp);
        text.split(',')
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| CloudError::Refused(200, format!("content info {text:?} has no size")))
    }

    /// Downloads content `id` of this device's vendor/model into `dest`, resuming from
    /// what `dest` already holds (Range). Returns the total size.
    pub fn download(&self, id: &str, dest: &Path, max_bytes: u64) -> Result<u64, CloudError> {
        use std::io::Write;
        let url = self.content_url(id, false);
        let have = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        let token = self.token()?;
        let mut rq = self.agent.get(&url).header("X-Exosite-CIK", &token).config().timeout_global(None).build();
        if have > 0 {
            rq = rq.header("Range", &format!("bytes={have}-"));
        }
        let mut resp = match rq.call() {
            Ok(r) => r,
            Err(e) => return Err(CloudError::Unreachable(e.to_string())),
        };
        let status = resp.status().as_u16();
        let append = match status {
            206 => true,
            200 => false,
            401 => {
                self.drop_token(&token);
                return Err(CloudError::Unreachable("token refused; activating again".into()));
            }
            416 if have > 0 => return Ok(have),
            s if s >= 500 => return Err(CloudError::Unreachable(format!("download answered {s}"))),
            s => {
                let body = resp.body_mut().read_to_string().unwrap_or_default();
                return Err(CloudError::Refused(s, body.trim().to_string()));
            }
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(dest)
            .map_err(|e| CloudError::Refused(0, format!("{}: {e}", dest.display())))?;
        let mut reader = resp.body_mut().with_config().limit(max_bytes).reader();
        let mut buf = vec![0u8; 32 << 10];
        let mut got = 0u64;
        let result = loop {
            match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    got += n as u64;
                    if let Err(e) = f.write_all(&buf[..n]) {
                        break Err(CloudError::Refused(0, format!("{}: {e}", dest.display())));
                    }
                }
                Err(e) => break Err(CloudError::Unreachable(format!("download cut after {got} bytes: {e}"))),
            }
        };
        self.usage.api("download", 300, got + 200);
        f.sync_all().map_err(|e| CloudError::Refused(0, format!("{}: {e}", dest.display())))?;
        result?;
        Ok(if append { have + got } else { got })
    }
}
