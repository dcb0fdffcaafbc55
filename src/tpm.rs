//! The gateway's key held in a TPM 2.0 (`[cloud] tpm`, `docs/identity.md`): the private key
//! is made inside the TPM and never leaves it. Four commands in the TPM's own wire format
//! (TCG TPM 2.0 Part 3), sent to the kernel's resource manager (`/dev/tpmrm0`) or to
//! `swtpm`'s socket (`tcp:HOST:PORT`, for emulated boards and tests):
//! - `TPM2_CreatePrimary` of an ECDSA P-256 signing key under the owner hierarchy. A primary
//!   key is derived from the hierarchy's seed and its template, so the same key comes back
//!   at every call until the TPM is cleared: nothing is stored outside the TPM.
//! - `TPM2_Sign` of a SHA-256 digest with it (enrollment, and every TLS handshake through
//!   [`TpmKeyProvider`]).
//! - `TPM2_FlushContext`, so the TPM's few transient slots stay free.

use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::PrivateKeyDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

const ST_NO_SESSIONS: u16 = 0x8001;
const ST_SESSIONS: u16 = 0x8002;
const ST_HASHCHECK: u16 = 0x8024;
const CC_CREATE_PRIMARY: u32 = 0x0131;
const CC_SIGN: u32 = 0x015D;
const CC_FLUSH_CONTEXT: u32 = 0x0165;
const RH_OWNER: u32 = 0x4000_0001;
const RH_NULL: u32 = 0x4000_0007;
const RS_PW: u32 = 0x4000_0009;
const ALG_ECC: u16 = 0x0023;
const ALG_SHA256: u16 = 0x000B;
const ALG_NULL: u16 = 0x0010;
const ALG_ECDSA: u16 = 0x0018;
const ECC_NIST_P256: u16 = 0x0003;
/// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | noDA | sign: a key that
/// cannot leave this TPM, made by it, signing anything it is given (not restricted).
const KEY_ATTRIBUTES: u32 = 0x0000_0002 | 0x0000_0010 | 0x0000_0020 | 0x0000_0040 | 0x0000_0400 | 0x0004_0000;
/// Largest answer taken from a TPM (theirs are at most a few KiB).
const MAX_RESPONSE: usize = 8192;

/// What a TPM answered that is not what was asked for.
fn bad(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TPM: {what}"))
}

/// A TPM: `/dev/tpmrm0` (or another device file) or `tcp:HOST:PORT` (swtpm's socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tpm {
    pub path: String,
}

enum Link {
    Dev(std::fs::File),
    Tcp(std::net::TcpStream),
}

impl Tpm {
    fn open(&self) -> io::Result<Link> {
        let err = |e: io::Error| io::Error::new(e.kind(), format!("TPM {}: {e}", self.path));
        Ok(match self.path.strip_prefix("tcp:") {
            Some(addr) => {
                let s = std::net::TcpStream::connect(addr).map_err(err)?;
                s.set_read_timeout(Some(std::time::Duration::from_secs(30))).map_err(err)?;
                Link::Tcp(s)
            }
            None => Link::Dev(std::fs::OpenOptions::new().read(true).write(true).open(&self.path).map_err(err)?),
        })
    }

    /// Makes (or makes again: the same key) the primary signing key, signs `digest` with it
    /// if given, and flushes it. Answers the key's uncompressed point and the signature
    /// (ASN.1 DER, as TLS and the hub take it).
    pub fn key(&self, digest: Option<&[u8; 32]>) -> io::Result<([u8; 65], Option<Vec<u8>>)> {
        let mut link = self.open()?;
        let (handle, point) = create_primary(&mut link)?;
        let sig = digest.map(|d| sign(&mut link, handle, d));
        let flushed = transact(&mut link, &command(ST_NO_SESSIONS, CC_FLUSH_CONTEXT, &handle.to_be_bytes()));
        let sig = sig.transpose()?;
        flushed?;
        Ok((point, sig))
    }
}

impl Tpm {
    /// The key's ASN.1 DER ECDSA signature over SHA-256 of `msg`.
    pub fn sign(&self, msg: &[u8]) -> io::Result<Vec<u8>> {
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, msg)
            .as_ref()
            .try_into()
            .map_err(|_| bad("SHA-256 is not 32 bytes"))?;
        self.key(Some(&digest))?.1.ok_or_else(|| bad("no signature"))
    }
}

/// One command, one answer: the answer's body after its 10-byte header, or the TPM's
/// response code as an error.
fn transact(link: &mut Link, cmd: &[u8]) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; MAX_RESPONSE];
    let n = match link {
        Link::Dev(f) => {
            f.write_all(cmd)?;
            // The kernel hands over a whole answer in one read.
            f.read(&mut buf)?
        }
        Link::Tcp(s) => {
            s.write_all(cmd)?;
            s.read_exact(&mut buf[..10])?;
            let size = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
            if !(10..=MAX_RESPONSE).contains(&size) {
                return Err(bad(format!("an answer of {size} bytes")));
            }
            s.read_exact(&mut buf[10..size])?;
            size
        }
    };
    if n < 10 {
        return Err(bad(format!("an answer of {n} bytes")));
    }
    let rc = u32::from_be_bytes([buf[6], buf[7], buf[8], buf[9]]);
    if rc != 0 {
        return Err(bad(format!(
            "command {:#x} failed with response code {rc:#x}",
            u32::from_be_bytes([cmd[6], cmd[7], cmd[8], cmd[9]])
        )));
    }
    buf.truncate(n);
    Ok(buf.split_off(10))
}

/// A command: tag, size, code, then `body`.
fn command(tag: u16, code: u32, body: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(10 + body.len());
    c.extend_from_slice(&tag.to_be_bytes());
    c.extend_from_slice(&u32::try_from(10 + body.len()).unwrap_or(u32::MAX).to_be_bytes());
    c.extend_from_slice(&code.to_be_bytes());
    c.extend_from_slice(body);
    c
}

/// The authorization area of one password session with an empty password.
fn empty_password(b: &mut Vec<u8>) {
    b.extend_from_slice(&9u32.to_be_bytes());
    b.extend_from_slice(&RS_PW.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0]); // nonce (empty), attributes, hmac (empty)
}

fn u16s(b: &mut Vec<u8>, v: &[u16]) {
    for x in v {
        b.extend_from_slice(&x.to_be_bytes());
    }
}

/// Reads big-endian fields off an answer.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("a short answer"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self) -> io::Result<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> io::Result<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A TPM2B: a 16-bit size, then that many bytes.
    fn sized(&mut self) -> io::Result<&'a [u8]> {
        let n = self.u16()?;
        self.take(n.into())
    }
}

fn create_primary(link: &mut Link) -> io::Result<(u32, [u8; 65])> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&RH_OWNER.to_be_bytes());
    empty_password(&mut b);
    b.extend_from_slice(&[0, 4, 0, 0, 0, 0]); // inSensitive: no auth value, no data
    let mut public = Vec::with_capacity(32);
    u16s(&mut public, &[ALG_ECC, ALG_SHA256]);
    public.extend_from_slice(&KEY_ATTRIBUTES.to_be_bytes());
    // No policy; no symmetric; ECDSA with SHA-256; P-256; no KDF; empty unique x and y.
    u16s(&mut public, &[0, ALG_NULL, ALG_ECDSA, ALG_SHA256, ECC_NIST_P256, ALG_NULL, 0, 0]);
    b.extend_from_slice(&u16::try_from(public.len()).unwrap_or(0).to_be_bytes());
    b.extend_from_slice(&public);
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // outsideInfo (empty), creationPCR (none)
    let answer = transact(link, &command(ST_SESSIONS, CC_CREATE_PRIMARY, &b))?;
    let mut r = Reader(&answer);
    let handle = r.u32()?;
    r.u32()?; // parameterSize
    let mut p = Reader(r.sized()?);
    let (alg, _name_alg, _attributes) = (p.u16()?, p.u16()?, p.u32()?);
    p.sized()?; // authPolicy
    let params = [p.u16()?, p.u16()?, p.u16()?, p.u16()?, p.u16()?];
    if alg != ALG_ECC || params[3] != ECC_NIST_P256 {
        return Err(bad(format!("the key made is not EC P-256 (algorithm {alg:#x}, curve {:#x})", params[3])));
    }
    let (x, y) = (p.sized()?, p.sized()?);
    if x.len() > 32 || y.len() > 32 {
        return Err(bad("a P-256 point with coordinates over 32 bytes"));
    }
    let mut point = [0u8; 65];
    point[0] = 4;
    point[33 - x.len()..33].copy_from_slice(x);
    point[65 - y.len()..].copy_from_slice(y);
    Ok((handle, point))
}

fn sign(link: &mut Link, handle: u32, digest: &[u8; 32]) -> io::Result<Vec<u8>> {
    let mut b = Vec::with_capacity(80);
    b.extend_from_slice(&handle.to_be_bytes());
    empty_password(&mut b);
    b.extend_from_slice(&32u16.to_be_bytes());
    b.extend_from_slice(digest);
    u16s(&mut b, &[ALG_ECDSA, ALG_SHA256, ST_HASHCHECK]);
    b.extend_from_slice(&RH_NULL.to_be_bytes());
    b.extend_from_slice(&[0, 0]); // an empty ticket: the digest was made outside the TPM
    let answer = transact(link, &command(ST_SESSIONS, CC_SIGN, &b))?;
    let mut r = Reader(&answer);
    r.u32()?; // parameterSize
    let (alg, hash) = (r.u16()?, r.u16()?);
    if alg != ALG_ECDSA || hash != ALG_SHA256 {
        return Err(bad(format!("a signature of algorithm {alg:#x}/{hash:#x}")));
    }
    let (sr, ss) = (r.sized()?, r.sized()?);
    Ok(der_signature(sr, ss))
}

/// `SEQUENCE { INTEGER r, INTEGER s }` from the two big-endian numbers.
fn der_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn int(out: &mut Vec<u8>, v: &[u8]) {
        let v = &v[v.iter().position(|&b| b != 0).unwrap_or(v.len().saturating_sub(1))..];
        let pad = v.first().is_some_and(|&b| b & 0x80 != 0);
        out.push(0x02);
        out.push(u8::try_from(v.len() + usize::from(pad)).unwrap_or(0));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
    }
    let mut body = Vec::with_capacity(72);
    int(&mut body, r);
    int(&mut body, s);
    let mut out = vec![0x30, u8::try_from(body.len()).unwrap_or(0)];
    out.extend_from_slice(&body);
    out
}

/// What stands for the TPM's key where rustls wants a private key: PKCS#8 in name only.
/// [`TpmKeyProvider`] knows it; no real key is ever these bytes.
pub const KEY_MARKER: &[u8] = b"gwe: the private key is in the TPM";

/// The TPM and its key's SubjectPublicKeyInfo (for rustls's check that a certificate is of
/// this key).
static TPM: OnceLock<(Tpm, Vec<u8>)> = OnceLock::new();

/// rustls's key provider with the TPM's key: the marker becomes a key that signs in the
/// TPM; any other key goes to ring's provider.
#[derive(Debug)]
pub struct TpmKeyProvider;

/// A rustls crypto provider (ring) whose client key is the TPM's (`tpm`, its public key
/// `spki`).
pub fn provider(tpm: &Tpm, spki: &[u8]) -> rustls::crypto::CryptoProvider {
    let _ = TPM.set((tpm.clone(), spki.to_vec()));
    rustls::crypto::CryptoProvider { key_provider: &TpmKeyProvider, ..rustls::crypto::ring::default_provider() }
}

impl rustls::crypto::KeyProvider for TpmKeyProvider {
    fn load_private_key(&self, key: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        match (key.secret_der() == KEY_MARKER, TPM.get()) {
            (true, Some((t, spki))) => Ok(Arc::new(TpmKey(t.clone(), spki.clone()))),
            (true, None) => Err(rustls::Error::General("no TPM configured".into())),
            (false, _) => rustls::crypto::ring::default_provider().key_provider.load_private_key(key),
        }
    }
}

#[derive(Debug)]
struct TpmKey(Tpm, Vec<u8>);

impl SigningKey for TpmKey {
    fn public_key(&self) -> Option<rustls::pki_types::SubjectPublicKeyInfoDer<'_>> {
        Some(rustls::pki_types::SubjectPublicKeyInfoDer::from(self.1.as_slice()))
    }

    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(TpmSigner(self.0.clone())) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct TpmSigner(Tpm);

impl Signer for TpmSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0.sign(message).map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_der_integers() {
        // Leading zeros go; a high bit gets a zero byte in front.
        assert_eq!(der_signature(&[0, 0, 1], &[0x80, 2]), vec![0x30, 8, 2, 1, 1, 2, 3, 0, 0x80, 2]);
        let full = [0xffu8; 32];
        let d = der_signature(&full, &full);
        assert_eq!((d[1], d[3], d.len()), (70, 33, 72));
    }

    /// swtpm (Debian's, installed by scripts/setup.sh) on a free port of 127.0.0.1, its
    /// state in `dir`; killed on drop.
    pub(crate) struct Swtpm(std::process::Child, pub Tpm);

    impl Drop for Swtpm {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    pub(crate) fn swtpm(dir: &std::path::Path) -> Swtpm {
        let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (server, ctrl) = (port(), port());
        let child = std::process::Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.display()))
            .args(["--server", &format!("type=tcp,port={server},bindaddr=127.0.0.1")])
            .args(["--ctrl", &format!("type=tcp,port={ctrl},bindaddr=127.0.0.1")])
            .spawn()
            .expect("swtpm (Debian's package swtpm; scripts/setup.sh installs it)");
        let tpm = Tpm { path: format!("tcp:127.0.0.1:{server}") };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", server)).is_err() {
            assert!(std::time::Instant::now() < until, "swtpm did not come up");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Swtpm(child, tpm)
    }

    #[test]
    fn a_tpm_key_is_the_same_at_every_call_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let sw = swtpm(dir.path());
        let (point, none) = sw.1.key(None).unwrap();
        assert!(none.is_none());
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, b"hello").as_ref().try_into().unwrap();
        // Many more calls than the TPM has transient slots: each flushes its key.
        for _ in 0..5 {
            let (again, sig) = sw.1.key(Some(&digest)).unwrap();
            assert_eq!(again, point, "the primary key is derived again, the same");
            let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &point);
            assert!(public.verify(b"hello", &sig.unwrap()).is_ok());
        }
        // Another TPM (another seed): another key.
        let dir2 = tempfile::tempdir().unwrap();
        let other = swtpm(dir2.path());
        assert_ne!(other.1.key(None).unwrap().0, point);
        // No TPM there: a clear error.
        drop(other);
        let e = Tpm { path: "/nonexistent/tpmrm0".into() }.key(None).unwrap_err();
        assert!(e.to_string().contains("TPM /nonexistent/tpmrm0"), "{e}");
    }

    #[test]
    fn commands_are_framed() {
        let c = command(ST_NO_SESSIONS, CC_FLUSH_CONTEXT, &0x8000_0000u32.to_be_bytes());
        assert_eq!(c, [0x80, 0x01, 0, 0, 0, 14, 0, 0, 1, 0x65, 0x80, 0, 0, 0]);
    }
}
