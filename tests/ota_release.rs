//! Signed release metadata against the attacks docs/ota-format.md names, with the real
//! installer and real app processes: an attacker holding one properly signed package (and
//! its metadata) tries to install it under another name or version, over a newer version,
//! on another model, with its bytes changed, after its key was revoked, with stale
//! metadata, or with garbage. Each is refused with a reason, and the running version keeps
//! running, untouched.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test timestamps are small and positive"
)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use gwe::ota::extract::Limits;
use gwe::ota::install::{InstallError, Installer, Policy, Setup};
use gwe::ota::package::{self, SigningKey};
use gwe::ota::release::{self, ClockPolicy, Keys, Target, Trust};
use gwe::ota::store::AppStore;
use gwe::supervisor::{Options, State, Supervisor};

/// One supervisor per process at a time (it reaps with waitpid(-1)).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Rig {
    dir: tempfile::TempDir,
    root: SigningKey,
    release: SigningKey,
    inst: Installer,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.inst.supervisor().shutdown();
    }
}

fn rig_with(clock: ClockPolicy, legacy: Option<&SigningKey>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let root = package::generate_key().unwrap();
    let release_key = package::generate_key().unwrap();
    std::fs::create_dir_all(dir.path().join("programs.d")).unwrap();
    // The firmware ships the first keys document.
    let keys = keys_doc(&root, 1, &[&release_key], &[], 365);
    std::fs::write(dir.path().join("keys.json"), keys).unwrap();
    let trust = Trust {
        roots: vec![root.public_key()],
        builtin_keys: Some(dir.path().join("keys.json")),
        state: dir.path().join("state/ota"),
        vendor: "acme".into(),
        model: "gw1".into(),
        compatible: Some("acme-gw1".into()),
        clock,
    };
    let (sup, _) =
        Supervisor::start(Vec::new(), Options { state_file: dir.path().join("pids"), watchdog: None }).unwrap();
    let inst = Installer::new(Setup {
        store: AppStore::open(&dir.path().join("apps")).unwrap(),
        sup,
        programs_dir: dir.path().join("programs.d"),
        log_dir: dir.path().join("log"),
        policy: Policy {
            release: Some(trust),
            legacy: legacy.map(|k| vec![k.public_key()]).unwrap_or_default(),
            allow_legacy: legacy.is_some(),
            allow_unsigned: false,
        },
        limits: Limits::default(),
        install_timeout: Duration::from_secs(10),
    });
    Rig { dir, root, release: release_key, inst }
}

fn rig() -> Rig {
    rig_with(ClockPolicy::System, None)
}

fn keys_doc(root: &SigningKey, version: u64, keys: &[&SigningKey], revoked: &[&SigningKey], days: i64) -> String {
    let now = release::unix_now();
    let doc = Keys {
        version,
        issued: now,
        expires: (now as i64 + days * 86_400) as u64,
        keys: keys.iter().map(|k| hex::encode(k.public_key().0)).collect(),
        revoked: revoked.iter().map(|k| hex::encode(k.public_key().0)).collect(),
    };
    release::sign_keys(&doc, root)
}

fn target(model: &str) -> Target {
    Target { vendor: "acme".into(), model: model.into(), arch: "*".into(), compatible: None }
}

/// sensor.vVERSION.tar.gz in `dir/incoming`, signed with release metadata by `key`.
fn package_in(rig: &Rig, sub: &str, version: &str, key: &SigningKey, downgrade: bool) -> PathBuf {
    let run = format!("#!/bin/sh\necho running {version}\nexec sleep 300\n");
    let conf = "[supervisord]\ncommand=./run.sh\nstartsecs=1\nstartretries=1\n";
    let files =
        [("install.sh", 0o755, "#!/bin/sh\n"), ("run.sh", 0o755, run.as_str()), ("supervisor.conf", 0o644, conf)];
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, content.as_bytes()).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
    let out = rig.dir.path().join(sub);
    std::fs::create_dir_all(&out).unwrap();
    let p = out.join(format!("sensor.v{version}.tar.gz"));
    std::fs::write(&p, gz.finish().unwrap()).unwrap();
    let meta = release::sign_release(&p, key, target("gw1"), 86_400, downgrade).unwrap();
    std::fs::write(release::meta_path(&p), meta).unwrap();
    p
}

fn signed(rig: &Rig, version: &str) -> PathBuf {
    package_in(rig, "incoming", version, &rig.release, false)
}

/// Copies a package and its metadata to `dir/attack/FILE` (a rename by the attacker).
fn renamed(rig: &Rig, from: &Path, to: &str) -> PathBuf {
    let dir = rig.dir.path().join("attack");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(to);
    std::fs::copy(from, &p).unwrap();
    std::fs::copy(release::meta_path(from), release::meta_path(&p)).unwrap();
    p
}

fn running(rig: &Rig) -> (String, i32) {
    let a = rig.inst.supervisor().status().into_iter().find(|a| a.name == "sensor").expect("sensor is known");
    assert_eq!(a.state, State::Running, "{a:?}");
    (rig.inst.app("sensor").current.unwrap(), a.pid.unwrap())
}

/// Installing `pkg` is refused with a message containing `why`, and sensor `before` keeps
/// running in the same process.
fn refused(rig: &Rig, pkg: &Path, why: &str, before: &(String, i32)) -> String {
    let e = rig.inst.install(pkg).unwrap_err();
    let text = e.to_string();
    assert!(text.contains(why), "{}: expected {why:?} in {text:?}", pkg.display());
    assert_eq!(&running(rig), before, "the running version was touched by {}", pkg.display());
    text
}

#[test]
fn mix_and_match_arbitrary_package_and_wrong_target_are_refused() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let rig = rig();
    let v1 = signed(&rig, "1.0");
    rig.inst.install(&v1).unwrap();
    let before = running(&rig);
    assert_eq!(before.0, "1.0");

    // Mix-and-match: the signed 1.0 renamed as version 9, or as another app, with its metadata.
    let e =
        refused(&rig, &renamed(&rig, &v1, "sensor.v9.tar.gz"), "signed for sensor 1.0, offered as sensor 9", &before);
    assert!(e.starts_with("sensor.v9.tar.gz: "), "the refusal names the file: {e}");
    refused(&rig, &renamed(&rig, &v1, "other.v1.0.tar.gz"), "signed for sensor 1.0, offered as other 1.0", &before);
    assert!(rig.inst.app("other").current.is_none());

    // Arbitrary package: other bytes under a signed release's name and metadata.
    let v2 = signed(&rig, "2.0");
    let evil = renamed(&rig, &v2, "sensor.v2.0.tar.gz");
    let mut bytes = std::fs::read(&evil).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0xff;
    std::fs::write(&evil, &bytes).unwrap();
    refused(&rig, &evil, "SHA-256 is not the signed one", &before);
    // Endless data: more bytes than were signed.
    bytes[n - 20] ^= 0xff;
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&evil, &bytes).unwrap();
    refused(&rig, &evil, &format!("the file is {} bytes; {n} were signed", n + 4096), &before);

    // Another model's release, properly signed.
    let other = rig.dir.path().join("other-model");
    std::fs::create_dir_all(&other).unwrap();
    let p = other.join("sensor.v3.0.tar.gz");
    std::fs::copy(&v2, &p).unwrap();
    std::fs::write(
        release::meta_path(&p),
        release::sign_release(&p, &rig.release, target("gw2"), 86_400, false).unwrap(),
    )
    .unwrap();
    refused(&rig, &p, "signed for acme/gw2 on *, and this gateway is acme/gw1", &before);
    // An OS bundle's compatible string that is not this gateway's image.
    let mut t = target("gw1");
    t.compatible = Some("acme-gw1-rev2".into());
    std::fs::write(release::meta_path(&p), release::sign_release(&p, &rig.release, t, 86_400, false).unwrap()).unwrap();
    refused(&rig, &p, "signed for images compatible with \"acme-gw1-rev2\"; this gateway's is \"acme-gw1\"", &before);

    // Garbage, a stranger's signature, no metadata at all, metadata too large to read.
    std::fs::write(release::meta_path(&p), "{\"payloadType\": 1}").unwrap();
    refused(&rig, &p, "malformed metadata", &before);
    let stranger = package::generate_key().unwrap();
    std::fs::write(release::meta_path(&p), release::sign_release(&p, &stranger, target("gw1"), 86_400, false).unwrap())
        .unwrap();
    refused(&rig, &p, "not signed by a release key of keys document version 1", &before);
    std::fs::write(release::meta_path(&p), vec![b' '; 70_000]).unwrap();
    refused(&rig, &p, "over the limit of 65536", &before);
    std::fs::remove_file(release::meta_path(&p)).unwrap();
    package::sign(&p, &rig.release).unwrap(); // an old-style .sig: not accepted here
    refused(&rig, &p, "no release metadata", &before);

    // The real 2.0 still installs.
    rig.inst.install(&v2).unwrap();
    assert_eq!(running(&rig).0, "2.0");
}

#[test]
fn a_downgrade_needs_a_signed_permission() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let rig = rig();
    let old = signed(&rig, "1.9");
    rig.inst.install(&signed(&rig, "1.10")).unwrap();
    let before = running(&rig);
    // 1.9 < 1.10: versions compare by number, not as text.
    refused(&rig, &old, "version 1.9 is older than the running 1.10", &before);
    // An operator signs the rollback explicitly.
    let allowed = package_in(&rig, "rollback", "1.9", &rig.release, true);
    rig.inst.install(&allowed).unwrap();
    assert_eq!(running(&rig).0, "1.9");
}

#[test]
fn revoked_and_rotated_keys_and_a_replayed_keys_document() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let rig = rig();
    let new_key = package::generate_key().unwrap();
    rig.inst.install(&signed(&rig, "1.0")).unwrap();
    let before = running(&rig);
    let by_old = signed(&rig, "2.0");

    // A release key the firmware does not know yet: refused until the keys document has it.
    let by_new = package_in(&rig, "rotated", "2.1", &new_key, false);
    refused(&rig, &by_new, "not signed by a release key of keys document version 1", &before);
    // Rotation, without re-flashing: version 2 adds the new key and revokes the old one. It
    // arrives beside a package (as from a USB stick, or the hub).
    let v1_doc = std::fs::read(rig.dir.path().join("keys.json")).unwrap();
    std::fs::write(by_new.with_file_name("keys.json"), keys_doc(&rig.root, 2, &[&new_key], &[&rig.release], 365))
        .unwrap();
    rig.inst.install(&by_new).unwrap();
    let before = running(&rig);
    assert_eq!(before.0, "2.1");
    // The old key's packages are refused from then on, even one signed before.
    let e = refused(&rig, &renamed(&rig, &by_old, "sensor.v3.0.tar.gz"), "which the keys document revokes", &before);
    assert!(e.contains(&hex::encode(rig.release.public_key().0)), "{e}");
    let late = package_in(&rig, "late", "3.0", &rig.release, false);
    refused(&rig, &late, "which the keys document revokes", &before);
    // Replaying the old keys document (which trusted the revoked key) is refused.
    std::fs::write(late.with_file_name("keys.json"), &v1_doc).unwrap();
    refused(&rig, &late, "keys document version 1 is older than the one this gateway has (2)", &before);
    // A keys document not signed by the root key (a release key signed it).
    std::fs::write(late.with_file_name("keys.json"), keys_doc(&new_key, 3, &[&new_key, &rig.release], &[], 365))
        .unwrap();
    refused(&rig, &late, "not signed by a root key", &before);
}

#[test]
fn freeze_stale_metadata_is_refused_and_a_gateway_without_a_clock_still_updates() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let rig = rig();
    rig.inst.install(&signed(&rig, "1.0")).unwrap();
    let before = running(&rig);
    // Release metadata that expired (signed valid for 0 s, a second ago).
    let p = signed(&rig, "2.0");
    let target = target("gw1");
    std::fs::write(release::meta_path(&p), release::sign_release(&p, &rig.release, target, 0, false).unwrap()).unwrap();
    // A second later, by the agent's clock (set for this thread, not slept through).
    gwe::clock::set_for_this_thread(Some(gwe::clock::unix_ms().unsigned_abs() + 1_100));
    refused(&rig, &p, "the release metadata expired at", &before);
    gwe::clock::set_for_this_thread(None);
    // An expired keys document is refused when offered.
    std::fs::write(p.with_file_name("keys.json"), keys_doc(&rig.root, 2, &[&rig.release], &[], -1)).unwrap();
    refused(&rig, &p, "the keys document expired at", &before);
    drop(rig);

    // A gateway whose clock is not to be trusted (clock = "metadata"): it checks expiry
    // against the newest signing time it has verified, so metadata signed "in the past"
    // by a wrong-clocked signer still installs, while what expired before something it
    // already saw is still refused.
    let rig = rig_with(ClockPolicy::Metadata, None);
    let p = signed(&rig, "1.0");
    let now = release::unix_now();
    let mut r: serde_json::Value = serde_json::json!({
        "name": "sensor", "version": "1.0", "sha256": hex::encode(package::digest(&p).unwrap()),
        "size": std::fs::metadata(&p).unwrap().len(),
        "target": {"vendor": "acme", "model": "gw1", "arch": "*"},
        "issued": now - 400 * 86_400, "expires": now - 300 * 86_400,
    });
    let seal = |r: &serde_json::Value| release::seal(release::RELEASE_TYPE, r.to_string().as_bytes(), &rig.release);
    std::fs::write(release::meta_path(&p), seal(&r)).unwrap();
    // Nothing verified yet: this gateway knows no time, and metadata signed by a signer
    // whose clock was far behind still installs.
    assert_eq!(rig.inst.policy().release.as_ref().unwrap().now(), 0, "nothing seen yet");
    rig.inst.install(&p).unwrap();
    let before = running(&rig);
    let p2 = signed(&rig, "2.0"); // signed now: the gateway learns the time from it
    rig.inst.install(&p2).unwrap();
    assert!(rig.inst.policy().release.as_ref().unwrap().now() >= now);
    assert_ne!(running(&rig), before);
    let before = running(&rig);
    let p3 = package_in(&rig, "stale", "3.0", &rig.release, false);
    r["version"] = "3.0".into();
    r["sha256"] = hex::encode(package::digest(&p3).unwrap()).into();
    r["size"] = std::fs::metadata(&p3).unwrap().len().into();
    std::fs::write(release::meta_path(&p3), seal(&r)).unwrap();
    refused(&rig, &p3, "the release metadata expired at", &before);
}

#[test]
fn old_style_signatures_only_where_the_config_allows_them() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let legacy = package::generate_key().unwrap();
    let rig = rig_with(ClockPolicy::System, Some(&legacy));
    let p = signed(&rig, "1.0");
    std::fs::remove_file(release::meta_path(&p)).unwrap();
    package::sign(&p, &legacy).unwrap();
    rig.inst.install(&p).unwrap();
    assert_eq!(running(&rig).0, "1.0");
    // A .sig by another key is still refused.
    let q = signed(&rig, "2.0");
    std::fs::remove_file(release::meta_path(&q)).unwrap();
    package::sign(&q, &rig.release).unwrap();
    let e = rig.inst.install(&q).unwrap_err();
    assert!(matches!(e, InstallError::Package(_)), "{e}");
}
