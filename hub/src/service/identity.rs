//! Gateways' own keys and the certificates the hub issues for them (`docs/identity.md`).
//!
//! A gateway makes its key pair (ECDSA P-256) at first boot and never lets the private key
//! out. It enrolls with `POST /gwe/v1/enroll`: its vendor, model, serial, public key and a
//! signature over those with that key (proof that it holds the key, and a check that the
//! key is a real P-256 point). The hub issues a certificate (common name: the serial) when
//! the key is the one pre-authorised for that serial (imported in bulk) or one offered with
//! a batch credential and approved by an operator. Renewal is the same request: the key is
//! known, a new certificate comes back. A revoked device gets nothing, and its certificates
//! are refused on every hub of the database (`IdentityStore::revoke_device`).

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::store::{DeviceKey, EnrolledKey, IdentityStore, KeyState, Offered, StoreError};

/// What a gateway signs to enroll: this, then vendor, model and serial each after a newline.
pub const POSSESSION_CONTEXT: &str = "gwe enroll v1";
/// Batch credentials start with this, so that secret scanners can find a leaked one.
pub const BATCH_PREFIX: &str = "gweb_";
/// At most this many keys in one import (the request body limit bounds it too).
pub const MAX_IMPORT: usize = 100_000;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";

/// Why an enrollment request or an import line is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Not base64, not a SubjectPublicKeyInfo, or not an EC P-256 key.
    Malformed(String),
    /// The signature does not verify with the key.
    NotPossessed,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(m) => write!(f, "public key: {m}"),
            Self::NotPossessed => f.write_str("the signature does not verify with the public key"),
        }
    }
}

/// A public key from base64 of its DER SubjectPublicKeyInfo: EC P-256 only.
pub fn parse_key(b64: &str) -> Result<Vec<u8>, KeyError> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| KeyError::Malformed(format!("not base64: {e}")))?;
    point(&der)?;
    Ok(der)
}

/// The uncompressed point of a P-256 SubjectPublicKeyInfo.
fn point(spki: &[u8]) -> Result<Vec<u8>, KeyError> {
    let (rest, info) = SubjectPublicKeyInfo::from_der(spki)
        .map_err(|e| KeyError::Malformed(format!("not a DER SubjectPublicKeyInfo: {e}")))?;
    if !rest.is_empty() {
        return Err(KeyError::Malformed(format!("{} bytes after the SubjectPublicKeyInfo", rest.len())));
    }
    let curve = info.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
    if info.algorithm.algorithm.to_id_string() != OID_EC_PUBLIC_KEY || curve.as_deref() != Some(OID_P256) {
        return Err(KeyError::Malformed(format!(
            "algorithm {} ({}) is not EC P-256",
            info.algorithm.algorithm.to_id_string(),
            curve.unwrap_or_else(|| "no curve".into())
        )));
    }
    let p = &info.subject_public_key.data;
    if p.len() != 65 || p[0] != 4 {
        return Err(KeyError::Malformed("the point is not an uncompressed P-256 point".into()));
    }
    Ok(p.to_vec())
}

/// The message a gateway signs to enroll.
pub fn possession_message(key: &DeviceKey) -> String {
    format!("{POSSESSION_CONTEXT}\n{}\n{}\n{}", key.vendor, key.model, key.sn)
}

/// Checks that `sig` (base64 of an ASN.1 ECDSA signature) is `key`'s signature over the
/// possession message: the gateway holds the private key and the point is on the curve.
pub fn check_possession(spki: &[u8], key: &DeviceKey, sig_b64: &str) -> Result<(), KeyError> {
    let sig = base64::engine::general_purpose::STANDARD.decode(sig_b64.trim()).map_err(|_| KeyError::NotPossessed)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point(spki)?.as_slice())
        .verify(possession_message(key).as_bytes(), &sig)
        .map_err(|_| KeyError::NotPossessed)
}

/// SHA-256 of a key, hex, short: how logs and the audit log name a key.
pub fn fingerprint(spki: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(spki)[..8])
}

/// The device CA this hub issues gateways' certificates with (`--device-ca` and
/// `--device-ca-key`), and for how long.
pub struct DeviceIssuer {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
    pub validity: Duration,
}

impl DeviceIssuer {
    pub fn load(ca: &Path, key: &Path, validity: Duration) -> Result<Self, String> {
        let ca_pem = std::fs::read_to_string(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let key_pem = std::fs::read_to_string(key).map_err(|e| format!("{}: {e}", key.display()))?;
        let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, key).map_err(|e| format!("{}: {e}", ca.display()))?;
        Ok(Self { issuer, ca_pem, validity })
    }

    /// A client certificate for `sn`'s key, valid from 5 minutes ago (gateways' clocks
    /// drift) for `validity`; PEM with a `not-after: MS` line before it, and its expiry.
    pub fn issue(&self, sn: &str, spki: &[u8], now_ms: i64) -> Result<(String, i64), String> {
        let public = rcgen::SubjectPublicKeyInfo::from_der(spki).map_err(|e| format!("public key: {e}"))?;
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, sn);
        let at = |ms: i64| time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).map_err(|e| e.to_string());
        let validity_ms = i64::try_from(self.validity.as_millis()).unwrap_or(i64::MAX / 2);
        let not_after_ms = now_ms.saturating_add(validity_ms);
        p.not_before = at(now_ms - 300_000)?;
        p.not_after = at(not_after_ms)?;
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).map_err(|e| e.to_string())?;
        serial[0] &= 0x7f;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&public, &self.issuer).map_err(|e| format!("signing: {e}"))?;
        let not_after_ms = not_after_ms.div_euclid(1000) * 1000;
        Ok((format!("not-after: {not_after_ms}\n{}", cert.pem()), not_after_ms))
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

/// What an enrollment comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Enrollment {
    /// The key is approved: issue a certificate for device `0`.
    Approved(i64),
    /// Recorded; an operator must approve it first. True when this request recorded it.
    Pending(i64, bool),
    /// Refused, with the HTTP status and the reason.
    Refused(u16, String),
}

/// Decides an enrollment of `spki` for `key` (whose possession was checked), with the
/// batch credential's name if one was given and is valid.
pub async fn enroll(
    store: &dyn IdentityStore,
    key: &DeviceKey,
    spki: &[u8],
    batch: Option<&str>,
    now_ms: i64,
) -> Result<Enrollment, StoreError> {
    let sn = &key.sn;
    let known = store.enrolled_key(key).await?;
    let decide = |dev: i64, k: &EnrolledKey| match k.state {
        KeyState::Revoked => Enrollment::Refused(403, format!("device {sn} is revoked")),
        _ if k.spki != spki => Enrollment::Refused(
            403,
            format!(
                "the public key {} is not the one {} for {sn} ({})",
                fingerprint(spki),
                if k.state == KeyState::Pending { "offered" } else { "enrolled" },
                fingerprint(&k.spki)
            ),
        ),
        KeyState::Pending => Enrollment::Pending(dev, false),
        KeyState::Approved => Enrollment::Approved(dev),
    };
    if let Some((dev, Some(k))) = &known {
        return Ok(decide(*dev, k));
    }
    let Some(batch) = batch else {
        return Ok(match known {
            Some(_) => Enrollment::Refused(
                403,
                format!("no public key is pre-authorised for {sn}: import it, or enroll with a batch credential"),
            ),
            None => {
                Enrollment::Refused(404, format!("device {}/{}/{sn} is not known to this hub", key.vendor, key.model))
            }
        });
    };
    Ok(match store.offer_key(key, spki, &format!("batch:{batch}"), now_ms).await? {
        Offered::Recorded(k) if k.state == KeyState::Pending => Enrollment::Pending(k.device_id, true),
        Offered::Recorded(k) | Offered::Refused(k) => decide(k.device_id, &k),
    })
}

/// One line of an import: `vendor,model,serial,public key` (base64 DER
/// SubjectPublicKeyInfo, as `gwe identity` prints it). Blank lines and `#` comments are
/// skipped; a header line starting `vendor,` too.
pub fn parse_import(text: &str) -> Result<Vec<(DeviceKey, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("vendor,") {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [vendor, model, sn, key] = f[..] else {
            return Err(format!("line {n}: {} fields; want vendor,model,serial,public key", f.len()));
        };
        for (name, v) in [("vendor", vendor), ("model", model), ("serial", sn)] {
            if v.is_empty() || v.len() > 128 {
                return Err(format!("line {n}: the {name} must be 1 to 128 bytes"));
            }
        }
        let spki = parse_key(key).map_err(|e| format!("line {n} ({sn}): {e}"))?;
        let dk = DeviceKey { vendor: vendor.into(), model: model.into(), sn: sn.into() };
        if !seen.insert(dk.clone()) {
            return Err(format!("line {n}: {vendor}/{model}/{sn} is listed twice"));
        }
        if out.len() == MAX_IMPORT {
            return Err(format!("line {n}: more than {MAX_IMPORT} keys in one import"));
        }
        out.push((dk, spki));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spki_b64(k: &rcgen::KeyPair) -> String {
        base64::engine::general_purpose::STANDARD.encode(rcgen::PublicKeyData::subject_public_key_info(k))
    }

    #[test]
    fn a_key_must_be_p256_and_possessed() {
        let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = parse_key(&spki_b64(&k)).unwrap();
        let dev = DeviceKey { vendor: "v".into(), model: "m".into(), sn: "S1".into() };
        let sig = rcgen::SigningKey::sign(&k, possession_message(&dev).as_bytes()).unwrap();
        let sig = base64::engine::general_purpose::STANDARD.encode(sig);
        assert_eq!(check_possession(&spki, &dev, &sig), Ok(()));
        let other = DeviceKey { sn: "S2".into(), ..dev.clone() };
        assert_eq!(check_possession(&spki, &other, &sig), Err(KeyError::NotPossessed), "signed for another serial");
        assert_eq!(check_possession(&spki, &dev, "AAAA"), Err(KeyError::NotPossessed));

        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let e = parse_key(&spki_b64(&p384)).unwrap_err().to_string();
        assert!(e.contains("is not EC P-256"), "{e}");
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(parse_key(&spki_b64(&ed)).unwrap_err().to_string().contains("is not EC P-256"));
        assert!(parse_key("%%%").unwrap_err().to_string().contains("not base64"));
        assert!(parse_key("AAAA").unwrap_err().to_string().contains("not a DER SubjectPublicKeyInfo"));
        let mut long = spki.clone();
        long.push(0);
        let b = base64::engine::general_purpose::STANDARD.encode(&long);
        assert!(parse_key(&b).unwrap_err().to_string().contains("1 bytes after"));
        // A point off the curve parses but cannot have signed anything.
        let mut off = spki.clone();
        let last = off.len() - 1;
        off[last] ^= 1;
        assert_eq!(check_possession(&off, &dev, &sig), Err(KeyError::NotPossessed));
    }

    #[test]
    fn an_import_names_the_line_at_fault() {
        let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let b = spki_b64(&k);
        let ok = format!("vendor,model,serial,key\n# factory line 3\n\nacme,gw1,S1,{b}\nacme,gw1,S2,{b}\n");
        assert_eq!(parse_import(&ok).unwrap().len(), 2);
        assert_eq!(
            parse_import(&format!("acme,gw1,S1,{b}\nacme,gw1,S1,{b}")).unwrap_err(),
            "line 2: acme/gw1/S1 is listed twice"
        );
        assert_eq!(parse_import("acme,gw1,S1").unwrap_err(), "line 1: 3 fields; want vendor,model,serial,public key");
        assert!(parse_import("acme,gw1,S1,AAAA").unwrap_err().starts_with("line 1 (S1): public key: not a DER"));
        assert_eq!(parse_import(&format!("acme,,S1,{b}")).unwrap_err(), "line 1: the model must be 1 to 128 bytes");
    }
}
