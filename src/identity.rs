//! Who this gateway is (vendor, model, serial), the local token apps use with GMQ, and the
//! gateway's own key pair (`docs/identity.md`).

use std::io;
use std::path::Path;

use crate::config::Device;
use crate::fsio;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub vendor: String,
    pub model: String,
    pub serial: String,
}

impl Identity {
    /// Resolves the serial from the config: `serial`, else the first line of `serial_file`,
    /// else the MAC address of `iface` (upper case, colon separated) as the original did.
    pub fn resolve(dev: &Device, sys_class_net: &Path) -> io::Result<Self> {
        let serial = if let Some(s) = &dev.serial {
            s.clone()
        } else if let Some(f) = &dev.serial_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| io::Error::new(e.kind(), format!("serial file {}: {e}", f.display())))?;
            text.lines().next().unwrap_or("").trim().to_string()
        } else {
            let p = sys_class_net.join(&dev.iface).join("address");
            let mac = std::fs::read_to_string(&p)
                .map_err(|e| io::Error::new(e.kind(), format!("MAC of {} ({}): {e}", dev.iface, p.display())))?;
            mac.trim().to_ascii_uppercase()
        };
        if serial.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the device serial is empty"));
        }
        Ok(Self { vendor: dev.vendor.clone(), model: dev.model.clone(), serial })
    }
}

/// A 40-hex-digit token, the shape of an Exosite CIK.
pub fn is_token(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The token local apps present to GMQ, made once at first start and kept in
/// `dir/local_token` (root only).
pub fn local_token(dir: &Path) -> io::Result<String> {
    let path = dir.join("local_token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim();
        if is_token(t) {
            return Ok(t.to_string());
        }
        log::warn!("{} is not a token; making a new one", path.display());
    }
    let mut raw = [0u8; 20];
    getrandom::getrandom(&mut raw).map_err(|e| io::Error::other(e.to_string()))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    fsio::create_dir_all_durable(dir)?;
    fsio::write_atomic_mode(&path, token.as_bytes(), 0o600)?;
    Ok(token)
}

/// DER SubjectPublicKeyInfo of an EC P-256 key, up to the point that follows it.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// What a gateway signs to enroll (the hub's `POSSESSION_CONTEXT`, then vendor, model and
/// serial each after a newline).
pub fn enroll_message(id: &Identity) -> String {
    format!("gwe enroll v1\n{}\n{}\n{}", id.vendor, id.model, id.serial)
}

/// The gateway's own key pair (ECDSA P-256), made on the gateway at its first start with
/// `identity = "certificate"` and kept in `dir/device_key` (PKCS#8, root only, replaced
/// atomically). The private key never leaves the gateway: the hub gets the public key.
pub struct OwnKey {
    pkcs8: Vec<u8>,
    spki: Vec<u8>,
    /// The TPM the private key is in; None: in `device_key`.
    tpm: Option<crate::tpm::Tpm>,
}

impl OwnKey {
    /// The gateway's key as `[cloud] tpm` says: in that TPM, else in `dir/device_key`.
    pub fn configured(tpm: &str, dir: &Path) -> io::Result<Self> {
        if tpm.is_empty() {
            Self::load_or_make(dir)
        } else {
            Self::in_tpm(crate::tpm::Tpm { path: tpm.to_string() })
        }
    }

    /// The TPM's primary signing key (the same key at every call until the TPM is cleared).
    pub fn in_tpm(tpm: crate::tpm::Tpm) -> io::Result<Self> {
        let (point, _) = tpm.key(None)?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&point);
        Ok(Self { pkcs8: crate::tpm::KEY_MARKER.to_vec(), spki, tpm: Some(tpm) })
    }

    /// The public key, DER SubjectPublicKeyInfo.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// The TPM holding the key, if one does.
    pub fn tpm(&self) -> Option<&crate::tpm::Tpm> {
        self.tpm.as_ref()
    }

    pub fn load_or_make(dir: &Path) -> io::Result<Self> {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
        let path = dir.join("device_key");
        let rng = ring::rand::SystemRandom::new();
        match std::fs::read(&path) {
            Ok(der) => match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der, &rng) {
                Ok(k) => return Ok(Self::of(der, &k)),
                // Written atomically, so not torn; a flash fault, then. Kept for a look.
                Err(e) => {
                    log::error!(
                        "{} is not a P-256 key ({e}); kept as device_key.bad, making a new one",
                        path.display()
                    );
                    std::fs::rename(&path, dir.join("device_key.bad"))?;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| io::Error::other("making a key pair: no randomness"))?;
        let der = doc.as_ref().to_vec();
        let k = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der, &rng)
            .map_err(|e| io::Error::other(format!("the key just made: {e}")))?;
        fsio::create_dir_all_durable(dir)?;
        fsio::write_atomic_mode(&path, &der, 0o600)?;
        log::info!("made this gateway's key pair ({})", path.display());
        Ok(Self::of(der, &k))
    }

    fn of(pkcs8: Vec<u8>, k: &ring::signature::EcdsaKeyPair) -> Self {
        use ring::signature::KeyPair;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(k.public_key().as_ref());
        Self { pkcs8, spki, tpm: None }
    }

    /// The private key, PKCS#8 DER, for TLS (with a TPM: [`crate::tpm::KEY_MARKER`]).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as the hub takes it: base64 of its DER SubjectPublicKeyInfo.
    pub fn public_b64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&self.spki)
    }

    /// Base64 of an ASN.1 ECDSA signature over `msg`.
    pub fn sign_b64(&self, msg: &[u8]) -> io::Result<String> {
        use base64::Engine;
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
        if let Some(tpm) = &self.tpm {
            return Ok(base64::engine::general_purpose::STANDARD.encode(tpm.sign(msg)?));
        }
        let rng = ring::rand::SystemRandom::new();
        let k = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &self.pkcs8, &rng)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let sig = k.sign(&rng, msg).map_err(|_| io::Error::other("signing failed"))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(sig.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_sources_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net/eth0")).unwrap();
        std::fs::write(dir.path().join("net/eth0/address"), "02:ab:cd:00:11:22\n").unwrap();
        let mut dev = Device::default();
        assert_eq!(Identity::resolve(&dev, &dir.path().join("net")).unwrap().serial, "02:AB:CD:00:11:22");
        std::fs::write(dir.path().join("serial"), "SN-42\nrest").unwrap();
        dev.serial_file = Some(dir.path().join("serial"));
        assert_eq!(Identity::resolve(&dev, &dir.path().join("net")).unwrap().serial, "SN-42");
        dev.serial = Some("fixed".into());
        assert_eq!(Identity::resolve(&dev, &dir.path().join("net")).unwrap().serial, "fixed");
        dev.serial = None;
        dev.serial_file = Some(dir.path().join("missing"));
        let e = Identity::resolve(&dev, &dir.path().join("net")).unwrap_err();
        assert!(e.to_string().contains("serial file"), "{e}");
    }

    #[test]
    fn local_token_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let t = local_token(dir.path()).unwrap();
        assert!(is_token(&t));
        assert_eq!(local_token(dir.path()).unwrap(), t);
    }

    #[test]
    fn the_own_key_is_made_once_and_signs() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let k = OwnKey::load_or_make(dir.path()).unwrap();
        let again = OwnKey::load_or_make(dir.path()).unwrap();
        assert_eq!(k.public_b64(), again.public_b64(), "kept, not made again");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("device_key")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let spki = base64::engine::general_purpose::STANDARD.decode(k.public_b64()).unwrap();
        assert_eq!(spki.len(), 91);
        let sig = base64::engine::general_purpose::STANDARD.decode(k.sign_b64(b"hello").unwrap()).unwrap();
        let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &spki[26..]);
        assert!(public.verify(b"hello", &sig).is_ok());
        assert!(public.verify(b"hellO", &sig).is_err());
        // A damaged key file is set aside, not used.
        std::fs::write(dir.path().join("device_key"), b"not a key").unwrap();
        let new = OwnKey::load_or_make(dir.path()).unwrap();
        assert_ne!(new.public_b64(), k.public_b64());
        assert_eq!(std::fs::read(dir.path().join("device_key.bad")).unwrap(), b"not a key");
    }
}
