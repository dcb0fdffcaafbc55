//! Who this gateway is (vendor, model, serial) and the local token apps use with GMQ.

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
}
