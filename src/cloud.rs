//! The link to the hub: blocking HTTP(S) with ureq and rustls (ring), Exosite device API
//! forms plus the forwarder's batch (`docs/cloud-protocol.md`).
//!
//! The device token is made by activation and kept in `state/cloud_token` (0600, replaced
//! atomically). A 401 drops it, activates again and retries the request once.
//!
//! With `identity = "certificate"` there is no token: the gateway's own key
//! (`identity::OwnKey`) and the certificate the hub issued for it (`state/device_cert.pem`)
//! are its identity on every TLS connection. It enrolls when it has no certificate and
//! renews `renew_days` before it expires (`docs/identity.md`).

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
    /// The gateway has no certificate: the hub refused its key (403, 404), an operator has
    /// not approved it yet (202), or it asked too recently (0).
    NotEnrolled(u16, String),
}

/// Why the cloud link cannot be set up from the configuration.
#[derive(Debug)]
pub enum SetupError {
    /// `[cloud] ca_file` cannot be read.
    CaFile(PathBuf, std::io::Error),
    /// `[cloud] ca_file` holds no PEM certificate.
    NoCertificate(PathBuf),
    /// The gateway's own key cannot be read or made, or `batch_file` cannot be read.
    OwnKey(std::io::Error),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CaFile(p, e) => write!(f, "CA bundle {}: {e}", p.display()),
            Self::NoCertificate(p) => write!(f, "CA bundle {}: no certificate in it", p.display()),
            Self::OwnKey(e) => write!(f, "the gateway's own key: {e}"),
        }
    }
}

/// Sets `X-Exosite-CIK` unless the token is empty (a certificate identifies the gateway).
trait Cik {
    fn cik(self, token: &str) -> Self;
}

impl<B> Cik for ureq::RequestBuilder<B> {
    fn cik(self, token: &str) -> Self {
        if token.is_empty() {
            self
        } else {
            self.header("X-Exosite-CIK", token)
        }
    }
}

/// The gateway's own key and the certificate the hub issued for it.
struct OwnCert {
    key: identity::OwnKey,
    path: PathBuf,
    batch: Option<String>,
    renew_before_ms: i64,
    /// The certificate's expiry (unix ms); None: no usable certificate.
    not_after_ms: Mutex<Option<i64>>,
    /// The last enrollment request, and how long to wait before the next one.
    last_try: Mutex<Option<std::time::Instant>>,
    every: Duration,
}

impl OwnCert {
    /// The private key for TLS. ureq 3.2 offers PKCS#8 DER to rustls only through PEM.
    fn private_key(&self) -> Result<ureq::tls::PrivateKey<'static>, CloudError> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.key.pkcs8());
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
        ureq::tls::PrivateKey::from_pem(pem.as_bytes()).map_err(|e| CloudError::Refused(0, format!("own key: {e}")))
    }
}

/// A saved certificate: its expiry (from the `not-after: MS` line the hub puts before it)
/// and its chain; None if it has neither.
fn read_cert(pem: &[u8]) -> Option<(i64, Vec<ureq::tls::Certificate<'static>>)> {
    let text = std::str::from_utf8(pem).ok()?;
    let not_after = text.lines().next()?.strip_prefix("not-after: ")?.trim().parse().ok()?;
    let chain: Vec<_> = ureq::tls::parse_pem(pem)
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    (!chain.is_empty()).then_some((not_after, chain))
}

/// The chain with the gateway's key, if rustls takes them together: ureq panics building
/// its TLS config on a certificate that does not parse or is of another key, so what the
/// hub sent (or a saved file) is checked here first, as rustls will check it.
fn client_cert(
    chain: Vec<ureq::tls::Certificate<'static>>,
    key: ureq::tls::PrivateKey<'static>,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<ureq::tls::ClientCert, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ders = chain.iter().map(|c| CertificateDer::from(c.der().to_vec())).collect();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.der().to_vec()));
    rustls::sign::CertifiedKey::from_der(ders, key_der, provider).map_err(|e| e.to_string())?;
    Ok(ureq::tls::ClientCert::new_with_certs(&chain, key))
}

impl std::error::Error for SetupError {}

impl CloudError {
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::NotActivated(..) | Self::NotEnrolled(..))
    }
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(m) => write!(f, "hub unreachable: {m}"),
            Self::Refused(s, m) => write!(f, "hub refused ({s}): {m}"),
            Self::NotActivated(404, m) => write!(f, "activation refused, device not whitelisted: {m}"),
            Self::NotActivated(s, m) => write!(f, "activation refused ({s}): {m}"),
            Self::NotEnrolled(0, m) => write!(f, "not enrolled: {m}"),
            Self::NotEnrolled(202, m) => write!(f, "not enrolled yet: {m}"),
            Self::NotEnrolled(s, m) => write!(f, "enrollment refused ({s}): {m}"),
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
    /// Replaced when the gateway's certificate is renewed.
    agent: Mutex<ureq::Agent>,
    /// Without a client certificate: enrollment works when the certificate has expired.
    plain: ureq::Agent,
    cfg: CloudConfig,
    tls: Tls,
    own: Option<OwnCert>,
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

fn roots(ca_file: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, SetupError> {
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
    Ok(roots)
}

/// How the hub's connections are made: the CAs trusted, rustls's crypto (ring; its key
/// provider knows a key in the TPM).
struct Tls {
    roots: Vec<ureq::tls::Certificate<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// An HTTP agent for the hub: trusting `tls.roots` (https), showing `client` if given.
fn build_agent(cfg: &CloudConfig, tls: &Tls, client: Option<ureq::tls::ClientCert>) -> ureq::Agent {
    let mut b = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_global(Some(Duration::from_secs(cfg.timeout_secs.max(1))))
        .user_agent(concat!("gwe/", env!("CARGO_PKG_VERSION")))
        .max_redirects(0)
        // ureq zero-fills 128 KiB each way per connection by default, and the forwarder,
        // telemetry and the long-poll each hold one: 1.5 MiB of RSS for bodies that are
        // streamed anyway. The hub's answers have small headers.
        .input_buffer_size(16 << 10)
        .output_buffer_size(16 << 10)
        .max_response_header_size(16 << 10)
        .max_idle_connections(4);
    if !tls.roots.is_empty() {
        b = b.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&tls.roots))
                .client_cert(client)
                .unversioned_rustls_crypto_provider(tls.provider.clone())
                .build(),
        );
    }
    b.build().into()
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
        let roots = if cfg.url.starts_with("https://") { roots(&cfg.ca_file)? } else { Vec::new() };
        let own = if cfg.identity == crate::config::CloudIdentity::Certificate {
            let key = identity::OwnKey::configured(&cfg.tpm, state_dir).map_err(SetupError::OwnKey)?;
            let batch = if cfg.batch_file.as_os_str().is_empty() {
                None
            } else {
                let t = std::fs::read_to_string(&cfg.batch_file).map_err(|e| {
                    SetupError::OwnKey(std::io::Error::new(e.kind(), format!("{}: {e}", cfg.batch_file.display())))
                })?;
                Some(t.trim().to_string())
            };
            let renew = i64::try_from(cfg.renew_days).unwrap_or(365) * 86_400_000;
            Some(OwnCert {
                key,
                path: state_dir.join("device_cert.pem"),
                batch,
                renew_before_ms: renew,
                not_after_ms: Mutex::new(None),
                last_try: Mutex::new(None),
                // A gateway waiting for approval asks once a minute (sooner with a shorter
                // retry cap).
                every: Duration::from_secs(cfg.retry_max_secs.clamp(1, 60)),
            })
        } else {
            None
        };
        let provider = match own.as_ref().and_then(|o| o.key.tpm().map(|t| (t, o.key.spki()))) {
            Some((tpm, spki)) => crate::tpm::provider(tpm, spki),
            None => rustls::crypto::ring::default_provider(),
        };
        let tls = Tls { roots, provider: Arc::new(provider) };
        let mut client = None;
        if let Some(o) = &own {
            if let Some((not_after, chain)) = std::fs::read(&o.path).ok().as_deref().and_then(read_cert) {
                let key = o.private_key().map_err(|e| SetupError::OwnKey(std::io::Error::other(e.to_string())))?;
                match client_cert(chain, key, &tls.provider) {
                    Ok(c) => {
                        *o.not_after_ms.lock().unwrap_or_else(|e| e.into_inner()) = Some(not_after);
                        client = Some(c);
                    }
                    Err(e) => log::warn!("{}: {e}; enrolling again", o.path.display()),
                }
            }
        }
        let token_path = state_dir.join("cloud_token");
        let token =
            std::fs::read_to_string(&token_path).ok().map(|t| t.trim().to_string()).filter(|t| identity::is_token(t));
        Ok(Self {
            agent: Mutex::new(build_agent(cfg, &tls, client)),
            plain: build_agent(cfg, &tls, None),
            cfg: cfg.clone(),
            tls,
            own,
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

    /// The agent to send with (it shows the gateway's certificate, if it has one).
    fn agent(&self) -> ureq::Agent {
        self.agent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The device token, activating first when there is none. With a certificate for an
    /// identity: empty, after enrolling or renewing when it is due.
    pub fn token(&self) -> Result<String, CloudError> {
        if let Some(own) = &self.own {
            self.certificate(own)?;
            return Ok(String::new());
        }
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
        let rq = self.plain.post(self.url("/provision/activate")).header("Content-Type", FORM);
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

    /// Makes sure the gateway has a certificate: enrolls when it has none, renews when it
    /// has fewer than `renew_days` left (a failed renewal keeps the current one).
    fn certificate(&self, own: &OwnCert) -> Result<(), CloudError> {
        let have = *own.not_after_ms.lock().unwrap_or_else(|e| e.into_inner());
        if have.is_some_and(|t| t - crate::clock::unix_ms() > own.renew_before_ms) {
            return Ok(());
        }
        let _one = self.activating.lock().unwrap_or_else(|e| e.into_inner());
        // Another thread may have enrolled while this one waited.
        let have = *own.not_after_ms.lock().unwrap_or_else(|e| e.into_inner());
        if have.is_some_and(|t| t - crate::clock::unix_ms() > own.renew_before_ms) {
            return Ok(());
        }
        {
            let mut last = own.last_try.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < own.every) {
                return match have {
                    Some(t) if t > crate::clock::unix_ms() => Ok(()),
                    _ => Err(CloudError::NotEnrolled(0, "no certificate yet; asking the hub again soon".into())),
                };
            }
            *last = Some(std::time::Instant::now());
        }
        match self.enroll(own) {
            Ok(()) => Ok(()),
            Err(e) if have.is_some_and(|t| t > crate::clock::unix_ms()) => {
                log::warn!("renewing the certificate: {e}; the current one holds for now");
                Ok(())
            }
            Err(e) => {
                // At most once a minute: what an operator looks for on a gateway that
                // waits for approval or was revoked.
                log::warn!("enrolling with the hub: {e}");
                Err(e)
            }
        }
    }

    /// `POST /gwe/v1/enroll` with the gateway's public key, signed with it; on 200 the
    /// certificate is saved (replaced atomically) and every new connection shows it.
    fn enroll(&self, own: &OwnCert) -> Result<(), CloudError> {
        let sig = own
            .key
            .sign_b64(identity::enroll_message(&self.identity).as_bytes())
            .map_err(|e| CloudError::Refused(0, format!("signing: {e}")))?;
        let public = own.key.public_b64();
        let mut f = form_urlencoded::Serializer::new(String::new());
        f.append_pair("vendor", &self.identity.vendor)
            .append_pair("model", &self.identity.model)
            .append_pair("sn", &self.identity.serial)
            .append_pair("key", &public)
            .append_pair("sig", &sig);
        if let Some(b) = &own.batch {
            f.append_pair("batch", b);
        }
        let body = f.finish();
        let rq = self.plain.post(self.url("/gwe/v1/enroll")).header("Content-Type", FORM);
        let (status, text) = self.finish("enroll", body.len(), rq.send(body.as_bytes()))?;
        if status != 200 {
            return Err(CloudError::NotEnrolled(status, text.trim().to_string()));
        }
        let Some((not_after, chain)) = read_cert(text.as_bytes()) else {
            return Err(CloudError::Refused(200, "the enrollment answer is not a certificate".into()));
        };
        let client = client_cert(chain, own.private_key()?, &self.tls.provider)
            .map_err(|e| CloudError::Refused(200, format!("the certificate the hub issued: {e}")))?;
        fsio::write_atomic_mode(&own.path, text.as_bytes(), 0o644)
            .map_err(|e| CloudError::Unreachable(format!("saving the certificate: {e}")))?;
        *self.agent.lock().unwrap_or_else(|e| e.into_inner()) = build_agent(&self.cfg, &self.tls, Some(client));
        *own.not_after_ms.lock().unwrap_or_else(|e| e.into_inner()) = Some(not_after);
        log::info!("the hub issued this gateway's certificate, valid until {not_after} (unix ms)");
        Ok(())
    }

    /// Forgets a token the hub refused; the next request activates again.
    fn drop_token(&self, used: &str) {
        if let Some(own) = &self.own {
            // The hub refused the certificate (revoked, or the device has another key):
            // enroll again, which says why.
            log::warn!("the hub refused our certificate; enrolling again");
            *own.not_after_ms.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return;
        }
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
            self.agent()
                .post(self.url("/onep:v1/stack/alias"))
                .cik(t)
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
        let (status, resp, _) = self.authed("read", 0, 1 << 20, |t| self.agent().get(&url).cik(t).call())?;
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
                .agent()
                .get(&url)
                .cik(t)
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
            self.agent()
                .post(self.url("/gwe/v1/batch"))
                .cik(t)
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
            self.agent().post(&url).cik(t).header("Content-Type", "application/json").send(body)
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
                let rq = self.agent().get(url);
                match &auth {
                    Some(a) => rq.header("Authorization", a).call(),
                    None => rq.call(),
                }
            }
            Some((b, deflated)) => {
                let rq = self.agent().post(url).header("Content-Type", "application/json");
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
        let (status, resp, _) = self.authed("download", 0, 64 << 10, |t| self.agent().get(&url).cik(t).call())?;
        if status != 200 {
            return Err(Self::refused(status, &resp));
        }
        let text = String::from_utf8_lossy(&resp);
        text.split(',')
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| CloudError::Refused(200, format!("content info {text:?} has no size")))
    }

    /// Bytes `start..=end` of content `id`, as the hub sends them (206): its total size and
    /// a reader of at most `end - start + 1` bytes. For RAUC's streaming (`ota::stream`).
    pub fn content_range(
        &self,
        id: &str,
        start: u64,
        end: u64,
    ) -> Result<(u64, ureq::BodyReader<'static>), CloudError> {
        let url = self.content_url(id, false);
        for _ in 0..2 {
            let token = self.token()?;
            let rq = self.agent().get(&url).cik(&token).header("Range", &format!("bytes={start}-{end}"));
            let resp = rq.call().map_err(|e| CloudError::Unreachable(e.to_string()))?;
            match resp.status().as_u16() {
                206 => {
                    let total = resp
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.rsplit_once('/'))
                        .and_then(|(_, t)| t.parse().ok())
                        .ok_or_else(|| CloudError::Refused(206, "a range without Content-Range".into()))?;
                    self.usage.api("stream", 300, end - start + 1 + 300);
                    let body = resp.into_body().into_with_config().limit(end - start + 1).reader();
                    return Ok((total, body));
                }
                401 => self.drop_token(&token),
                s if s >= 500 => return Err(CloudError::Unreachable(format!("a range request answered {s}"))),
                s => {
                    let mut resp = resp;
                    let body = resp.body_mut().read_to_string().unwrap_or_default();
                    return Err(CloudError::Refused(s, body.trim().to_string()));
                }
            }
        }
        Err(CloudError::Refused(401, "the hub refused a fresh token".into()))
    }

    /// Downloads content `id` of this device's vendor/model into `dest`, resuming from
    /// what `dest` already holds (Range). Returns the total size.
    pub fn download(&self, id: &str, dest: &Path, max_bytes: u64) -> Result<u64, CloudError> {
        use std::io::Write;
        let url = self.content_url(id, false);
        let have = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        let token = self.token()?;
        let mut rq = self.agent().get(&url).cik(&token).config().timeout_global(None).build();
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
