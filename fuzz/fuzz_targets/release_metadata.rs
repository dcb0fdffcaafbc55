//! Arbitrary bytes as release metadata and as a keys document (what a hub or a USB stick
//! hands the agent beside a package): refused with a reason, never a crash; never accepted,
//! since only the fixed keys below could sign, and they sign nothing here.
#![no_main]

use std::sync::OnceLock;

use gwe::ota::package::SigningKey;
use gwe::ota::release::{self, ClockPolicy, Keys, Trust};
use libfuzzer_sys::fuzz_target;

fn trust() -> &'static Trust {
    static T: OnceLock<Trust> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let root = SigningKey::from_seed([1; 32]).unwrap();
        let rel = SigningKey::from_seed([2; 32]).unwrap();
        let keys = Keys {
            version: 1,
            issued: 0,
            expires: u64::MAX,
            keys: vec![hex::encode(rel.public_key().0)],
            revoked: Vec::new(),
        };
        std::fs::write(dir.join("keys.json"), release::sign_keys(&keys, &root)).unwrap();
        Trust {
            roots: vec![root.public_key()],
            builtin_keys: Some(dir.join("keys.json")),
            state: dir.join("ota"),
            vendor: "acme".into(),
            model: "gw1".into(),
            compatible: None,
            clock: ClockPolicy::Metadata,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let t = trust();
    let e = t.check_release(data, "sensor", "1.0", Some("0.9")).expect_err("forged release metadata accepted");
    assert!(!e.to_string().is_empty());
    let e = t.offer_keys(data).expect_err("a forged keys document adopted");
    assert!(!e.to_string().is_empty());
});
