//! Accepts connections, plain or TLS (rustls), and serves the router over HTTP/1.1.
//!
//! With client CAs (`--arrowhead-ca`, `--device-ca`) the TLS server asks every client for
//! a certificate but does not require one (token clients go on as before). A certificate
//! the handshake verified, issued directly by one of those CAs, becomes the request's
//! [`Peer`]: the system or device it names, for the handlers to check.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::TlsAcceptor;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Which CA vouched for a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    /// The Arrowhead local cloud's CA: the common name is `SYSTEM.CLOUD.OPERATOR...`.
    Arrowhead,
    /// The device CA: the common name is the gateway's serial number.
    Device,
}

/// The holder of a client certificate the TLS handshake verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub kind: PeerKind,
    /// The certificate's subject common name.
    pub cn: String,
    /// The certificate's DER SubjectPublicKeyInfo: a gateway's enrolled key must be it.
    pub spki: Vec<u8>,
}

impl Peer {
    /// The Arrowhead system name: the common name's first label (Arrowhead's rule).
    pub fn system(&self) -> &str {
        self.cn.split('.').next().unwrap_or_default()
    }
}

/// The TLS side of the server: the acceptor, the client CAs by subject, and this hub's
/// public key (what Arrowhead's `authorization/publickey` gives out).
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    client_cas: Arc<Vec<(Vec<u8>, PeerKind)>>,
    /// Base64 of the DER SubjectPublicKeyInfo of this hub's certificate.
    pub public_key: String,
}

fn read_certs(p: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &bytes[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", p.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", p.display()));
    }
    Ok(certs)
}

fn parse<'a>(p: &Path, der: &'a [u8]) -> Result<X509Certificate<'a>, String> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| format!("{}: not an X.509 certificate: {e}", p.display()))
}

/// A TLS server from PEM files: the certificate chain, its private key, and the CAs whose
/// client certificates identify their holders.
pub fn tls(cert: &Path, key: &Path, client_cas: &[(PathBuf, PeerKind)]) -> Result<Tls, String> {
    let certs = read_certs(cert)?;
    let public_key = base64::engine::general_purpose::STANDARD.encode(parse(cert, &certs[0])?.public_key().raw);
    let key_bytes = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let key_der = rustls_pemfile::private_key(&mut &key_bytes[..])
        .map_err(|e| format!("{}: {e}", key.display()))?
        .ok_or_else(|| format!("{}: no private key in the file", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut subjects = Vec::new();
    let builder = if client_cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for (path, kind) in client_cas {
            for ca in read_certs(path)? {
                subjects.push((parse(path, &ca)?.subject().as_raw().to_vec(), *kind));
                roots.add(ca).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client CAs: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    };
    let cfg = builder.with_single_cert(certs, key_der).map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(cfg)), client_cas: Arc::new(subjects), public_key })
}

impl Tls {
    /// The peer a verified client certificate names, if its issuer is one of the client CAs.
    fn peer(&self, chain: Option<&[CertificateDer<'_>]>) -> Option<Peer> {
        let c = X509Certificate::from_der(chain?.first()?).ok()?.1;
        let kind = self.client_cas.iter().find(|(s, _)| s == c.issuer().as_raw())?.1;
        let cn = c.subject().iter_common_name().next()?.as_str().ok()?.to_string();
        Some(Peer { kind, cn, spki: c.public_key().raw.to_vec() })
    }
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Tls>,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    log::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(t) => match tokio::time::timeout(Duration::from_secs(30), t.acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let peer = t.peer(s.get_ref().1.peer_certificates());
                        conn(TokioIo::new(s), router, addr, peer).await
                    }
                    // A client certificate refused (malformed, expired, of another CA) is
                    // worth an operator's look; other failed handshakes (scanners, clients
                    // that gave up) are not.
                    Ok(Err(e)) if refused_certificate(&e) => log::warn!("TLS handshake with {addr}: {e}"),
                    Ok(Err(e)) => log::debug!("TLS handshake with {addr}: {e}"),
                    Err(_) => log::debug!("TLS handshake with {addr} timed out"),
                },
                None => conn(TokioIo::new(stream), router, addr, None).await,
            }
        });
    }
}

/// Whether a failed handshake refused the client's certificate.
fn refused_certificate(e: &io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
    )
}

async fn conn<I>(io: I, router: axum::Router, addr: SocketAddr, peer: Option<Peer>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut rq: hyper::Request<hyper::body::Incoming>| {
        rq.extensions_mut().insert(axum::extract::ConnectInfo(addr));
        if let Some(p) = &peer {
            rq.extensions_mut().insert(p.clone());
        }
        let mut r = router.clone();
        async move { tower_service::Service::call(&mut r, rq).await }
    });
    let r = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true)
        .serve_connection(io, svc)
        .await;
    if let Err(e) = r {
        log::debug!("connection from {addr}: {e}");
    }
}
