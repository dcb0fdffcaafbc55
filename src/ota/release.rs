//! Signed release metadata (docs/ota-format.md, "Release metadata"): what is installed is
//! signed together with its name, version, size, digest and target, by a release key that
//! an offline root key vouches for in a keys document. Both are DSSE envelopes (the
//! in-toto / Sigstore signing envelope: the signature covers the payload's exact bytes and
//! its type, so no JSON canonicalization is needed).

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::signature::{UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use super::package::{PublicKey, SigningKey};

pub const RELEASE_TYPE: &str = "application/vnd.gwe.release+json";
pub const KEYS_TYPE: &str = "application/vnd.gwe.keys+json";
/// Metadata is small; anything larger is refused before it is parsed (endless data).
pub const MAX_METADATA_BYTES: u64 = 64 << 10;

/// What the signature of a release or keys document does not cover, or does not allow.
#[derive(Debug, PartialEq, Eq)]
pub enum MetaError {
    /// Not a DSSE envelope of the expected type, or its payload is not the expected JSON.
    Malformed(String),
    TooLarge(u64),
    /// No signature by a key that may sign it.
    Untrusted(String),
    /// Signed by a key the keys document revoked.
    Revoked(String),
    Expired {
        what: &'static str,
        expires: u64,
        now: u64,
    },
    /// A keys document older than the one the gateway has (a replay of a revoked key).
    KeysRollback {
        have: u64,
        got: u64,
    },
    /// The signed name, version, size, digest or target differ from what is installed.
    Mismatch(String),
    /// An older version than the one running, without a signed permission to go back.
    Downgrade {
        running: String,
        offered: String,
    },
    NoKeys,
    /// No `FILE.meta` and nothing else the config accepts.
    Missing,
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed metadata: {why}"),
            Self::TooLarge(n) => write!(f, "metadata of {n} bytes, over the limit of {MAX_METADATA_BYTES}"),
            Self::Untrusted(what) => write!(f, "{what}"),
            Self::Revoked(key) => write!(f, "signed by release key {key}, which the keys document revokes"),
            Self::Expired { what, expires, now } => {
                write!(f, "the {what} expired at {expires} (unix time); this gateway's time is {now}")
            }
            Self::KeysRollback { have, got } => {
                write!(f, "keys document version {got} is older than the one this gateway has ({have})")
            }
            Self::Mismatch(why) => write!(f, "{why}"),
            Self::Downgrade { running, offered } => write!(
                f,
                "version {offered} is older than the running {running}; a downgrade needs release metadata signed with allow_downgrade"
            ),
            Self::Missing => write!(
                f,
                "no release metadata (FILE.meta beside it): this gateway has root keys, so every package needs it"
            ),
            Self::NoKeys => write!(f, "no keys document: nothing may sign a release yet (put keys.json beside the package, on the hub, or in [ota] keys_file)"),
        }
    }
}

impl std::error::Error for MetaError {}

#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<Signature>,
}

#[derive(Serialize, Deserialize)]
struct Signature {
    keyid: String,
    sig: String,
}

/// DSSE's pre-authentication encoding: what is signed.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    m.extend_from_slice(payload);
    m
}

/// Signs `payload` as a DSSE envelope of `payload_type`.
pub fn seal(payload_type: &str, payload: &[u8], key: &SigningKey) -> String {
    let sig = key.sign(&pae(payload_type, payload));
    let env = Envelope {
        payload_type: payload_type.into(),
        payload: B64.encode(payload),
        signatures: vec![Signature { keyid: hex::encode(key.public_key().0), sig: B64.encode(sig) }],
    };
    serde_json::to_string_pretty(&env).expect("an envelope serializes") + "\n"
}

/// Opens an envelope of `payload_type`: the payload and the keys whose signatures verify.
fn open(bytes: &[u8], payload_type: &str) -> Result<(Vec<u8>, Vec<PublicKey>), MetaError> {
    if bytes.len() as u64 > MAX_METADATA_BYTES {
        return Err(MetaError::TooLarge(bytes.len() as u64));
    }
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| MetaError::Malformed(format!("not a signed envelope: {e}")))?;
    if env.payload_type != payload_type {
        return Err(MetaError::Malformed(format!("payload type {:?}, expected {payload_type}", env.payload_type)));
    }
    let payload = B64.decode(&env.payload).map_err(|_| MetaError::Malformed("payload is not base64".into()))?;
    let message = pae(payload_type, &payload);
    let mut good = Vec::new();
    for s in &env.signatures {
        let Some(key) = super::package::parse_public_key(&s.keyid) else { continue };
        let Ok(sig) = B64.decode(&s.sig) else { continue };
        if UnparsedPublicKey::new(&ED25519, &key.0).verify(&message, &sig).is_ok() {
            good.push(key);
        }
    }
    Ok((payload, good))
}

/// What a release's metadata says: the one package it is for, and where it may go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub name: String,
    pub version: String,
    /// SHA-256 of the package file, hex.
    pub sha256: String,
    /// Its size in bytes: a download stops there.
    pub size: u64,
    pub target: Target,
    /// Unix time it was signed, and until when it holds.
    pub issued: u64,
    pub expires: u64,
    /// An operator's explicit permission to install this over a newer version.
    #[serde(default)]
    pub allow_downgrade: bool,
}

/// Which gateways a release is for. "*" matches any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub vendor: String,
    pub model: String,
    /// `std::env::consts::ARCH` of the agent (aarch64, arm, x86_64), or "*" for a package
    /// without machine code (scripts).
    pub arch: String,
    /// For OS bundles: the RAUC compatible string of the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatible: Option<String>,
}

/// The release keys the offline root key vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// Grows with every new document; a gateway never goes back to a lower one.
    pub version: u64,
    pub issued: u64,
    pub expires: u64,
    /// Release keys, 64 hex digits each.
    pub keys: Vec<String>,
    /// Release keys no longer trusted: their releases are refused from now on.
    #[serde(default)]
    pub revoked: Vec<String>,
}

impl Keys {
    fn parse(payload: &[u8]) -> Result<Self, MetaError> {
        let k: Keys =
            serde_json::from_slice(payload).map_err(|e| MetaError::Malformed(format!("keys document: {e}")))?;
        if k.keys.iter().chain(&k.revoked).any(|h| super::package::parse_public_key(h).is_none()) {
            return Err(MetaError::Malformed("keys document: a key is not 64 hex digits".into()));
        }
        Ok(k)
    }

    fn trusts(&self, key: &PublicKey) -> bool {
        let h = hex::encode(key.0);
        self.keys.contains(&h) && !self.revoked.contains(&h)
    }

    fn revokes(&self, key: &PublicKey) -> bool {
        self.revoked.contains(&hex::encode(key.0))
    }
}

/// Version order (docs/ota-format.md): Debian's rule for the upstream part of a version.
/// Alternating runs of non-digits and digits; non-digits compare character by character
/// with `~` before everything (even the end) and letters before other characters; digits
/// compare as numbers. So 1.0~rc1 < 1.0 < 1.0a < 1.0+b1 < 1.0.1 < 1.1 < 1.10 < 2.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(c) => c as i32 + 256,
        }
    }
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        // Non-digit runs.
        let na = a.iter().position(u8::is_ascii_digit).unwrap_or(a.len());
        let nb = b.iter().position(u8::is_ascii_digit).unwrap_or(b.len());
        let (mut i, mut j) = (0, 0);
        while i < na || j < nb {
            let (ca, cb) = (order(a[..na].get(i).copied()), order(b[..nb].get(j).copied()));
            if ca != cb {
                return ca.cmp(&cb);
            }
            i += 1;
            j += 1;
        }
        a = &a[na..];
        b = &b[nb..];
        // Digit runs, as numbers (leading zeros do not count; any length).
        let da = a.iter().position(|c| !c.is_ascii_digit()).unwrap_or(a.len());
        let db = b.iter().position(|c| !c.is_ascii_digit()).unwrap_or(b.len());
        let (x, y) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
        let o = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
        if o != Ordering::Equal {
            return o;
        }
        a = &a[da..];
        b = &b[db..];
    }
    Ordering::Equal
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().position(|&c| c != b'0').unwrap_or(d.len());
    &d[n..]
}

/// How the gateway tells the time metadata expiry is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClockPolicy {
    /// The system clock when the kernel says it is synchronized (NTP), else `metadata`.
    #[default]
    Auto,
    /// The system clock, always.
    System,
    /// Only the newest signing time of any metadata this gateway verified: a gateway
    /// without a clock (or with a wrong one) still refuses metadata that expired before
    /// something it has already seen was signed.
    Metadata,
}

/// What a gateway trusts, and where it keeps what it learned (the newest keys document and
/// the newest signing time it saw).
pub struct Trust {
    /// The offline root keys baked into the firmware ([ota] root_keys).
    pub roots: Vec<PublicKey>,
    /// The keys document the firmware ships ([ota] keys_file), used until a newer one comes.
    pub builtin_keys: Option<PathBuf>,
    /// STATE_DIR/ota: keys.json (the newest verified keys document) and time.
    pub state: PathBuf,
    pub vendor: String,
    pub model: String,
    /// The RAUC compatible string of this gateway's image ([ota] compatible): metadata
    /// that names one installs only where it is the same.
    pub compatible: Option<String>,
    pub clock: ClockPolicy,
}

/// A release that passed: what to tell the operator.
#[derive(Debug)]
pub struct Verified {
    pub release: Release,
    pub key: String,
}

impl Trust {
    fn keys_path(&self) -> PathBuf {
        self.state.join("keys.json")
    }

    fn time_path(&self) -> PathBuf {
        self.state.join("time")
    }

    /// The time expiry is checked against (see [`ClockPolicy`]).
    pub fn now(&self) -> u64 {
        let seen = std::fs::read_to_string(self.time_path()).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        let system = crate::clock::unix_secs;
        match self.clock {
            ClockPolicy::System => system().max(seen),
            ClockPolicy::Metadata => seen,
            ClockPolicy::Auto if clock_synchronized() => system().max(seen),
            ClockPolicy::Auto => seen,
        }
    }

    fn saw(&self, issued: u64) {
        let seen = std::fs::read_to_string(self.time_path()).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0u64);
        if issued > seen {
            let stored = crate::fsio::create_dir_all_durable(&self.state)
                .and_then(|()| crate::fsio::write_atomic(&self.time_path(), format!("{issued}\n").as_bytes()));
            if let Err(e) = stored {
                log::warn!("ota: cannot keep the newest signing time: {e}");
            }
        }
    }

    /// The keys document in force: the newest verified one this gateway stored, or the
    /// firmware's. An unusable stored one is reported, not silently replaced.
    pub fn keys(&self) -> Result<Keys, MetaError> {
        if let Ok(bytes) = std::fs::read(self.keys_path()) {
            return self.open_keys(&bytes).map(|(k, _)| k);
        }
        match self.builtin_keys.as_deref().map(std::fs::read) {
            Some(Ok(bytes)) => self.open_keys(&bytes).map(|(k, _)| k),
            _ => Err(MetaError::NoKeys),
        }
    }

    fn open_keys(&self, bytes: &[u8]) -> Result<(Keys, Vec<u8>), MetaError> {
        let (payload, signers) = open(bytes, KEYS_TYPE)?;
        if !signers.iter().any(|k| self.roots.contains(k)) {
            return Err(MetaError::Untrusted("the keys document is not signed by a root key of this gateway".into()));
        }
        Ok((Keys::parse(&payload)?, payload))
    }

    /// Takes a keys document offered (by the hub, beside a package): adopted when a root
    /// key signed it, it has not expired and it is at least as new as the one in force.
    /// Returns its version and whether it was new.
    pub fn offer_keys(&self, bytes: &[u8]) -> Result<(u64, bool), MetaError> {
        let (k, _) = self.open_keys(bytes)?;
        let now = self.now();
        if k.expires < now {
            return Err(MetaError::Expired { what: "keys document", expires: k.expires, now });
        }
        let have = self.keys().ok();
        if let Some(have) = &have {
            if k.version < have.version {
                return Err(MetaError::KeysRollback { have: have.version, got: k.version });
            }
            if k.version == have.version {
                return Ok((k.version, false));
            }
        }
        crate::fsio::create_dir_all_durable(&self.state).map_err(|e| MetaError::Malformed(format!("storing: {e}")))?;
        crate::fsio::write_atomic(&self.keys_path(), bytes)
            .map_err(|e| MetaError::Malformed(format!("storing the keys document: {e}")))?;
        self.saw(k.issued);
        log::info!(
            "ota: keys document version {} adopted ({} keys, {} revoked)",
            k.version,
            k.keys.len(),
            k.revoked.len()
        );
        Ok((k.version, true))
    }

    /// Checks release metadata before the package is fetched: the signature (a release key
    /// of the keys document in force, not revoked), expiry, the name and version against
    /// the file name, the target against this gateway, and the version against the one
    /// running. The size it returns is all a download may bring.
    pub fn check_release(
        &self,
        meta: &[u8],
        name: &str,
        version: &str,
        running: Option<&str>,
    ) -> Result<Verified, MetaError> {
        self.check_release_for(meta, name, version, running, self.compatible.as_deref())
    }

    /// [`Trust::check_release`] against the image compatible string `compatible` (an OS
    /// bundle is checked against the one RAUC reports for the running system).
    pub fn check_release_for(
        &self,
        meta: &[u8],
        name: &str,
        version: &str,
        running: Option<&str>,
        compatible: Option<&str>,
    ) -> Result<Verified, MetaError> {
        let keys = self.keys()?;
        let now = self.now();
        if keys.expires < now {
            return Err(MetaError::Expired { what: "keys document", expires: keys.expires, now });
        }
        let (payload, signers) = open(meta, RELEASE_TYPE)?;
        if let Some(k) = signers.iter().find(|k| keys.revokes(k)) {
            return Err(MetaError::Revoked(hex::encode(k.0)));
        }
        let Some(key) = signers.iter().find(|k| keys.trusts(k)) else {
            return Err(MetaError::Untrusted(format!(
                "the release metadata is not signed by a release key of keys document version {}",
                keys.version
            )));
        };
        let r: Release =
            serde_json::from_slice(&payload).map_err(|e| MetaError::Malformed(format!("release metadata: {e}")))?;
        if r.expires < now {
            return Err(MetaError::Expired { what: "release metadata", expires: r.expires, now });
        }
        if r.name != name || r.version != version {
            return Err(MetaError::Mismatch(format!(
                "signed for {} {}, offered as {name} {version}",
                r.name, r.version
            )));
        }
        let arch = std::env::consts::ARCH;
        let fits = |want: &str, have: &str| want == "*" || want == have;
        if !fits(&r.target.vendor, &self.vendor) || !fits(&r.target.model, &self.model) || !fits(&r.target.arch, arch) {
            return Err(MetaError::Mismatch(format!(
                "signed for {}/{} on {}, and this gateway is {}/{} on {arch}",
                r.target.vendor, r.target.model, r.target.arch, self.vendor, self.model
            )));
        }
        if let Some(want) = &r.target.compatible {
            if compatible != Some(want.as_str()) {
                return Err(MetaError::Mismatch(format!(
                    "signed for images compatible with {want:?}; this gateway's is {:?}",
                    compatible.unwrap_or("not set ([ota] compatible)")
                )));
            }
        }
        if let Some(running) = running {
            if version_cmp(version, running) == Ordering::Less && !r.allow_downgrade {
                return Err(MetaError::Downgrade { running: running.into(), offered: version.into() });
            }
        }
        Ok(Verified { release: r, key: hex::encode(key.0) })
    }

    /// Checks the package file against release metadata [`Trust::check_release`] passed:
    /// its size and SHA-256. Then the metadata's signing time counts as seen.
    pub fn check_file(&self, v: &Verified, size: u64, sha256: &[u8; 32]) -> Result<(), MetaError> {
        if v.release.size != size {
            return Err(MetaError::Mismatch(format!("the file is {size} bytes; {} were signed", v.release.size)));
        }
        if v.release.sha256 != hex::encode(sha256) {
            return Err(MetaError::Mismatch("the file's SHA-256 is not the signed one".into()));
        }
        self.saw(v.release.issued);
        Ok(())
    }
}

/// Whether the kernel's clock is synchronized (an NTP client cleared STA_UNSYNC), as
/// `timedatectl` tells it.
fn clock_synchronized() -> bool {
    // SAFETY: timex is plain data; all zeros is a valid value (modes = 0: change nothing).
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: with modes = 0, adjtimex only reads the kernel's clock state into `tx`.
    let state = unsafe { libc::adjtimex(&mut tx) };
    state != -1 && state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0
}

/// Release metadata for the package at `path` (`NAME.vVERSION.tar.gz`), signed with `key`.
pub fn sign_release(
    path: &Path,
    key: &SigningKey,
    target: Target,
    valid_secs: u64,
    allow_downgrade: bool,
) -> Result<String, String> {
    let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = if file.ends_with(".raucb") {
        // An OS bundle: its target is the image it fits, so the compatible string is signed too.
        let (name, version) = gwe_wire::os::bundle_parts(&file)
            .ok_or_else(|| format!("{file}: an OS bundle is signed as NAME.vVERSION.raucb"))?;
        if target.compatible.is_none() {
            return Err(format!("{file}: an OS bundle's release metadata names its compatible string (--compatible)"));
        }
        super::package::PackageName { name: name.into(), version: version.into() }
    } else {
        super::package::PackageName::parse(&file).map_err(|e| e.to_string())?
    };
    let size = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    let digest = super::package::digest(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let issued = unix_now();
    let r = Release {
        name: name.name,
        version: name.version,
        sha256: hex::encode(digest),
        size,
        target,
        issued,
        expires: issued + valid_secs,
        allow_downgrade,
    };
    Ok(seal(RELEASE_TYPE, &serde_json::to_vec_pretty(&r).expect("serializes"), key))
}

/// A keys document signed by the root key.
pub fn sign_keys(keys: &Keys, root: &SigningKey) -> String {
    seal(KEYS_TYPE, &serde_json::to_vec_pretty(keys).expect("serializes"), root)
}

/// The payload of a keys document, signature unchecked (the tool reads the previous one).
pub fn read_keys_unchecked(bytes: &[u8]) -> Result<Keys, MetaError> {
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| MetaError::Malformed(e.to_string()))?;
    Keys::parse(&B64.decode(&env.payload).map_err(|_| MetaError::Malformed("payload is not base64".into()))?)
}

pub fn unix_now() -> u64 {
    crate::clock::unix_secs()
}

/// Reads a metadata file, at most [`MAX_METADATA_BYTES`] (larger: `InvalidData`).
pub fn read_metadata(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?.take(MAX_METADATA_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_METADATA_BYTES {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "over the metadata limit"));
    }
    Ok(buf)
}

/// Path of the release metadata of `package`.
pub fn meta_path(package: &Path) -> PathBuf {
    let mut s = package.as_os_str().to_owned();
    s.push(".meta");
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ota::package::generate_key;

    #[test]
    fn version_order() {
        let chain = ["0.9", "1.0~rc1", "1.0~rc2", "1.0", "1.0a", "1.0+b1", "1.0.1", "1.1", "1.2", "1.10", "2", "10"];
        for w in chain.windows(2) {
            assert_eq!(version_cmp(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
            assert_eq!(version_cmp(w[1], w[0]), Ordering::Greater, "{} > {}", w[1], w[0]);
        }
        assert_eq!(version_cmp("1.01", "1.1"), Ordering::Equal);
        assert_eq!(version_cmp("2.0-rc1", "2.0-rc2"), Ordering::Less);
        assert_eq!(version_cmp("1.2a", "1.2b"), Ordering::Less);
        assert_eq!(version_cmp("2.9", "2.9"), Ordering::Equal);
        assert_eq!(version_cmp("99999999999999999999999", "1"), Ordering::Greater);
    }

    #[test]
    fn envelopes_are_dsse() {
        // A DSSE envelope: the signature covers PAE(type, payload), nothing else.
        let key = generate_key().unwrap();
        let env = seal("t", b"hello", &key);
        let (payload, signers) = open(env.as_bytes(), "t").unwrap();
        assert_eq!((payload.as_slice(), signers), (&b"hello"[..], vec![key.public_key()]));
        assert_eq!(pae("t", b"hello"), b"DSSEv1 1 t 5 hello");
        // Another type with the same signature: no signer.
        let v: serde_json::Value = serde_json::from_str(&env).unwrap();
        let other = env.replace("\"t\"", "\"u\"");
        assert!(open(other.as_bytes(), "u").unwrap().1.is_empty(), "{v}");
        assert!(matches!(open(b"{", "t"), Err(MetaError::Malformed(_))));
        assert!(matches!(open(&vec![b' '; 70_000], "t"), Err(MetaError::TooLarge(_))));
    }
}
