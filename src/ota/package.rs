//! Package files: `NAME.vVERSION.tar.gz`, signed by a detached ed25519 signature over the
//! SHA-256 digest of the file, in `NAME.vVERSION.tar.gz.sig` (hex, one line).

use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

/// An ed25519 public key packages are checked against (32 bytes; 64 hex digits in config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

/// An ed25519 signing key, kept as its 32-byte seed (64 hex digits in the key file).
/// ring does the arithmetic: the agent carries one crypto library, the one rustls uses.
pub struct SigningKey {
    seed: [u8; 32],
    pair: Ed25519KeyPair,
}

impl SigningKey {
    pub fn from_seed(seed: [u8; 32]) -> Option<Self> {
        Ed25519KeyPair::from_seed_unchecked(&seed).ok().map(|pair| Self { seed, pair })
    }

    pub fn seed(&self) -> [u8; 32] {
        self.seed
    }

    pub fn public_key(&self) -> PublicKey {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(k)
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut s = [0u8; 64];
        s.copy_from_slice(self.pair.sign(message).as_ref());
        s
    }
}

/// What a package file name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageName {
    pub name: String,
    pub version: String,
}

impl PackageName {
    /// Parses `NAME.vVERSION.tar.gz` ("." allowed in VERSION; NAME is an app name).
    pub fn parse(file_name: &str) -> Result<Self, PackageError> {
        let bad = || PackageError::BadName(file_name.to_string());
        let stem = file_name.strip_suffix(".tar.gz").ok_or_else(bad)?;
        let (name, version) = stem.split_once(".v").ok_or_else(bad)?;
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        let version_ok = !version.is_empty()
            && version.len() <= 64
            && version.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.+~".contains(&b))
            && !version.contains("..")
            && !version.starts_with('.');
        if !name_ok || !version_ok {
            return Err(bad());
        }
        Ok(Self { name: name.to_string(), version: version.to_string() })
    }

    pub fn file_name(&self) -> String {
        format!("{}.v{}.tar.gz", self.name, self.version)
    }
}

/// Why a package is refused. Each message names the problem for the operator.
#[derive(Debug)]
pub enum PackageError {
    BadName(String),
    /// No signature file and unsigned packages are not allowed.
    Unsigned(String),
    /// The signature file is not 128 hex digits.
    BadSignatureFile(String),
    /// No trusted key verifies the signature.
    BadSignature(String),
    Io(String, io::Error),
}

impl fmt::Display for PackageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadName(n) => write!(f, "{n:?} is not a package name of the form NAME.vVERSION.tar.gz"),
            Self::Unsigned(n) => {
                write!(f, "{n} is not signed and unsigned packages are not allowed")
            }
            Self::BadSignatureFile(n) => write!(f, "{n}: the signature file is not 128 hex digits"),
            Self::BadSignature(n) => write!(f, "{n}: the signature does not match any trusted key"),
            Self::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for PackageError {}

/// SHA-256 of a file, streamed.
pub fn digest(path: &Path) -> io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            let mut d = [0u8; 32];
            d.copy_from_slice(h.finish().as_ref());
            return Ok(d);
        }
        h.update(&buf[..n]);
    }
}

/// Path of the detached signature of `package`.
pub fn signature_path(package: &Path) -> std::path::PathBuf {
    let mut s = package.as_os_str().to_owned();
    s.push(".sig");
    s.into()
}

/// Parses a hex public key (64 hex digits).
pub fn parse_public_key(hex_key: &str) -> Option<PublicKey> {
    hex::decode(hex_key.trim()).ok()?.try_into().ok().map(PublicKey)
}

/// Signs `package` with `key`, writing `package.sig`.
pub fn sign(package: &Path, key: &SigningKey) -> io::Result<()> {
    let sig = key.sign(&digest(package)?);
    crate::fsio::write_atomic(&signature_path(package), format!("{}\n", hex::encode(sig)).as_bytes())
}

/// Checks `package` before anything is unpacked: its signature against `trusted`, or that
/// unsigned packages are allowed. Returns the digest.
pub fn verify(package: &Path, trusted: &[PublicKey], allow_unsigned: bool) -> Result<[u8; 32], PackageError> {
    let shown = package.file_name().map_or_else(|| package.display().to_string(), |n| n.to_string_lossy().into_owned());
    let d = digest(package).map_err(|e| PackageError::Io(format!("reading {shown}"), e))?;
    let sig_text = match std::fs::read_to_string(signature_path(package)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return if allow_unsigned { Ok(d) } else { Err(PackageError::Unsigned(shown)) };
        }
        Err(e) => return Err(PackageError::Io(format!("reading the signature of {shown}"), e)),
    };
    let bytes: [u8; 64] = hex::decode(sig_text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| PackageError::BadSignatureFile(shown.clone()))?;
    if trusted.iter().any(|k| UnparsedPublicKey::new(&ED25519, &k.0).verify(&d, &bytes).is_ok()) {
        Ok(d)
    } else {
        Err(PackageError::BadSignature(shown))
    }
}

/// A new signing key from the system's random source.
pub fn generate_key() -> io::Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| io::Error::other(e.to_string()))?;
    SigningKey::from_seed(seed).ok_or_else(|| io::Error::other("ring refused a random ed25519 seed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let p = PackageName::parse("modbus-bridge.v1.2.3.tar.gz").unwrap();
        assert_eq!((p.name.as_str(), p.version.as_str()), ("modbus-bridge", "1.2.3"));
        assert_eq!(p.file_name(), "modbus-bridge.v1.2.3.tar.gz");
        assert_eq!(PackageName::parse("gwe.v0.2.0-rc1.tar.gz").unwrap().version, "0.2.0-rc1");
        for bad in [
            "app.tar.gz",
            "app.v.tar.gz",
            ".v1.tar.gz",
            "a/b.v1.tar.gz",
            "app.v1/../x.tar.gz",
            "app.v1.zip",
            "app.v..tar.gz",
        ] {
            assert!(PackageName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signatures() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("app.v1.tar.gz");
        std::fs::write(&pkg, b"package bytes").unwrap();
        let key = generate_key().unwrap();
        let other = generate_key().unwrap().public_key();
        let trusted = [other, key.public_key()];
        assert!(matches!(verify(&pkg, &trusted, false), Err(PackageError::Unsigned(_))));
        assert!(verify(&pkg, &trusted, true).is_ok());
        sign(&pkg, &key).unwrap();
        assert_eq!(verify(&pkg, &trusted, false).unwrap(), digest(&pkg).unwrap());
        assert!(matches!(verify(&pkg, &[other], false), Err(PackageError::BadSignature(_))));
        std::fs::write(&pkg, b"package bytes, tampered").unwrap();
        let e = verify(&pkg, &trusted, true).unwrap_err();
        assert!(e.to_string().contains("does not match any trusted key"), "{e}");
        std::fs::write(signature_path(&pkg), "zz").unwrap();
        assert!(matches!(verify(&pkg, &trusted, false), Err(PackageError::BadSignatureFile(_))));
        assert_eq!(parse_public_key(&hex::encode(key.public_key().0)), Some(key.public_key()));
    }

    #[test]
    fn signatures_are_standard_ed25519() {
        // RFC 8032, 7.1, test 1: keys and signatures made by any ed25519 tool (and by
        // earlier versions of `gwe pkg`) stay valid.
        let seed: [u8; 32] = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap()
            .try_into()
            .unwrap();
        let key = SigningKey::from_seed(seed).unwrap();
        assert_eq!(hex::encode(key.public_key().0), "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        assert_eq!(
            hex::encode(key.sign(b"")),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }
}
